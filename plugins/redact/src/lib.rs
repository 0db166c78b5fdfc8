//! `redact`: finds secrets and personal data in log lines, label values and structured metadata,
//! and redacts, masks or hashes them before anything reaches a sink.
//!
//! Detectors (secrets on by default with `redact`; personal data off until configured):
//!
//! | detector | finds | replaced |
//! |---|---|---|
//! | `private_key` | `-----BEGIN … PRIVATE KEY-----` … `-----END …-----` (also JSON-escaped) | the block |
//! | `jwt` | `eyJ….….…` (also JWE) | the token |
//! | `bearer` | `Bearer <token>`, or `bearer <token>` after an `Authorization`/`auth` key; random-looking | the token |
//! | `aws_access_key` | `AKIA…`/`ASIA…` + 16 | the id |
//! | `aws_secret_key` | the value of `aws_secret_access_key=`, `SecretAccessKey: …` | the value |
//! | `github_token` | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_` | the token |
//! | `gitlab_token` | `glpat-`, `gldt-`, `glrt-` | the token |
//! | `slack_token` | `xoxb-`, `xoxa-`, `xoxp-`, `xoxr-`, `xoxs-` | the token |
//! | `stripe_key` | `sk_live_`, `rk_live_`, `sk_test_`, `rk_test_` | the key |
//! | `url_password` | `scheme://user:password@host` | the password |
//! | `password` | values of keys ending in `password`, `passwd`, `passphrase`: always | the value |
//! | `secret` | values of keys ending in `secret`, `token`, `api_key`, `access_key`, …: when random | the value |
//! | `credit_card` | 13–19 digits, plain or grouped by spaces/dashes, issuer 2–6, Luhn-valid | the number |
//! | `email` (off) | `local@domain.tld` | the address |
//! | `ipv4` (off) | dotted quads | the address |
//! | `ipv6` (off) | IPv6 addresses | the address |
//!
//! Actions: `redact` → `[REDACTED:<kind>]`; `mask` → cards `**** **** **** 1234`, e-mails
//! `a***@example.com`, others `****` (+ the last 4 characters of values of 16+); `hash` →
//! `<kind>:<16 hex digits>` of the stage's keyed hash (`hash_key`), e-mails lower-cased and
//! cards reduced to digits first, so the same value always gives the same hash; `truncate`
//! (ipv4: last octet 0, ipv6: first 48 bits kept). Custom `rules` add regexes with a name and
//! an action (or a `replacement`). Replacements never contain quotes, backslashes or spaces, so
//! a JSON line stays JSON and a logfmt line stays logfmt.
//!
//! ```yaml
//! - plugin: redact
//!   hash_key: "${REDACT_KEY}"
//!   config:
//!     detectors: { email: hash, ipv4: truncate }   # + every secret detector: redact
//!     rules:
//!       - { name: employee_id, regex: 'EMP-\d{6}', action: hash }
//! ```
//!
//! How it stays cheap: one pass over the text, eight bytes at a time, marks the bytes where an
//! enabled detector may start (`=`, `:`, `@`, `eyJ`'s `J`, `_`, `-`, …), and every twelfth byte
//! is probed for a run long enough for a card number; each mark is verified where it is, most
//! after a comparison or two (`detect`, `numeric`). Only texts with findings are rebuilt,
//! into a reused buffer (`rewrite`), and only changed entries are touched. Label values are
//! looked at once per stream and batch, keyed hashes computed once per distinct value and batch.
//! The README has the full reference: every detector's exact rules, overlaps, metrics, cost.

mod config;
mod detect;
mod numeric;
mod rewrite;
#[cfg(test)]
mod tests;

use sluice_sdk::prelude::*;

pub use config::{Config, RuleConfig, Targets};
pub use detect::Kind;

use rewrite::Engine;

/// The redact plugin.
#[derive(Debug)]
pub struct Redact {
    engine: Engine,
    line: bool,
    labels: Targets,
    metadata: Targets,
    /// The stream whose label changes `label_edits` holds, in the current batch.
    label_stream: Option<usize>,
    label_edits: Vec<(String, String)>,
    /// Metadata changes of the current entry.
    metadata_edits: Vec<(String, String)>,
}

impl Plugin for Redact {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        let settings = config.validate().map_err(Error::msg)?;
        let engine = Engine::new(&settings);
        Ok(Self {
            engine,
            line: settings.line,
            labels: settings.labels,
            metadata: settings.metadata,
            label_stream: None,
            label_edits: Vec::new(),
            metadata_edits: Vec::new(),
        })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        if self.line && self.engine.rewrite(entry.line()) {
            entry.set_line(self.engine.output());
        }
        if !self.labels.is_none() {
            if self.label_stream != Some(entry.stream_index()) {
                self.label_stream = Some(entry.stream_index());
                self.label_edits.clear();
                for (name, value) in entry.labels() {
                    // `__tenant_id__` and other reserved labels are sluice's, not data.
                    if !name.starts_with("__") && self.labels.includes(name) && self.engine.rewrite(value) {
                        self.label_edits.push((name.to_string(), self.engine.output().to_string()));
                    }
                }
            }
            for (name, value) in &self.label_edits {
                entry.set_label(name, value)?;
            }
        }
        if !self.metadata.is_none() {
            self.metadata_edits.clear();
            for (name, value) in entry.metadata() {
                if self.metadata.includes(name) && self.engine.rewrite(value) {
                    self.metadata_edits.push((name.to_string(), self.engine.output().to_string()));
                }
            }
            for (name, value) in &self.metadata_edits {
                entry.set_metadata(name, value)?;
            }
        }
        Ok(Verdict::Keep)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        self.engine.begin_batch();
        self.label_stream = None;
        let result = batch.for_each_entry(|entry| self.process(entry));
        self.engine.flush_counts();
        result
    }
}

sluice_sdk::export!(Redact);
