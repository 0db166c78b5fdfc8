//! A real S3-compatible store for the archive tests: SeaweedFS on loopback ports, from the
//! benchmark library (`sluice_benches::s3`), where the load driver's `chain-fanout` uses it too.

pub use sluice_benches::s3::*;
