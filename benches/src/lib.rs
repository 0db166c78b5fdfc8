//! The benchmark suite of sluice: the seeded reference workload of `shared/BENCHMARK.md`
//! ([`workload`]), a cheap loopback Loki that counts what sluice delivers ([`receiver`]), and
//! the end-to-end load driver ([`driver`], binary `load`) that starts the real `sluice` binary,
//! pushes the workload at it from 8 connections and reports throughput, CPU per million lines,
//! latency at half the maximum rate, peak memory and whether every line arrived; and a real
//! S3-compatible store ([`s3`], SeaweedFS) for `chain-fanout`'s archive and the archive's
//! end-to-end tests.
//!
//! See `benches/README.md` for how to run it and what each figure means.

pub mod chain;
pub mod driver;
pub mod procfs;
pub mod receiver;
pub mod report;
pub mod s3;
pub mod server;
pub mod stats;
pub mod workload;
