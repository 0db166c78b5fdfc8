//! The harness: a faithful test Loki ([`receiver`]), the real sluice binary ([`sluice`]), push
//! helpers ([`push`]), the test plugins ([`plugins`]), and an S3 server ([`s3`]).

pub mod certs;
pub mod plugins;
pub mod push;
pub mod receiver;
pub mod s3;
pub mod sluice;

use std::time::Duration;

/// How long a test waits for deliveries that should happen within a few batch waits.
pub const DELIVERY: Duration = Duration::from_secs(10);

/// Asserts that `result` is Ok, printing the sluice logs otherwise.
#[track_caller]
pub fn ok_or_logs(result: Result<(), String>, sluice: &sluice::Sluice) {
    if let Err(e) = result {
        panic!("{e}\n{}", sluice.logs());
    }
}
