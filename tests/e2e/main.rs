//! End-to-end tests: the real `sluice` binary between real clients and a faithful test Loki.
//!
//! One test binary (as ripgrep does): `support` holds the harness, every other module a group
//! of tests. Each test starts its own sluice in its own temp dir on a free 127.0.0.1 port.

mod support;

mod archive;
mod builtins;
mod clients;
mod default_config;
mod durability;
mod faults;
mod ingest;
mod metrics;
mod plugin_cli;
mod plugins;
mod reload;
mod replay;
mod resilience;
mod routing;
mod security;
mod shutdown;
mod tenants;
mod tls;
mod validate_cmd;
mod validation;
