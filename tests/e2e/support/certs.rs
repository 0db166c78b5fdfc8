//! Certificates made by the test: a CA, a server certificate for 127.0.0.1, and client
//! certificates with a chosen subject common name, each as PEM.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that signs the others.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its private key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// The certificate followed by its key: what a client presents (reqwest's identity).
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, common_name: &str) -> Issued {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        self.issue(names, common_name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subject common name is `common_name`.
    pub fn client(&self, common_name: &str) -> Issued {
        self.issue(Vec::new(), common_name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: Vec<String>, common_name: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signed");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}
