//! The sluice plugin SDK.
//!
//! [`format`] is the flat batch format that crosses the Wasm boundary (`sdk/FORMAT.md`); the host
//! and the plugins share this one implementation of it. The author-facing plugin API and the
//! `export!` macro build on it.

pub mod format;
