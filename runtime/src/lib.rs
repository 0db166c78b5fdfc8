//! sluice: a gateway in front of Grafana Loki that runs plugins on every pushed batch.
//!
//! Data flows one way: [`ingest`] (HTTP) → [`decode`] → [`route`] → [`pipeline`] (stages on a
//! CPU pool, Wasm [`plugin`]s) → [`sink`]s. [`buffer`] bounds what is held in between; [`app`] wires the parts
//! together and owns shutdown.

pub mod app;
pub mod archive;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod decode;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod private_fs;
pub mod proto;
pub mod reload;
pub mod replay;
pub mod route;
pub mod sink;
pub mod telemetry;
pub mod wal;
