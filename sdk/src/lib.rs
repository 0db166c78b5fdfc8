//! The sluice plugin SDK: write a sluice plugin as a plain Rust type.
//!
//! ```ignore
//! use sluice_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { drop_if_contains: String }
//!
//! struct DropNoise { needle: String }
//!
//! impl Plugin for DropNoise {
//!     type Config = Config;
//!     fn init(config: Config) -> Result<Self, Error> {
//!         Ok(Self { needle: config.drop_if_contains })
//!     }
//!     fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
//!         Ok(if entry.line().contains(&self.needle) { Verdict::Drop } else { Verdict::Keep })
//!     }
//! }
//!
//! sluice_sdk::export!(DropNoise);
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` makes the plugin component; `cargo test` runs
//! the same code natively, where the host imports are stubs ([`native`], [`testing`]).
//!
//! The layers, bottom up: [`format`] is the flat batch format that crosses the Wasm boundary
//! (`sdk/FORMAT.md`), shared with the host; [`Batch`] and [`Entry`] are borrowed views of a
//! request with setters that become patches; [`Plugin`] is the trait; [`export!`] binds it to the
//! component-model exports of `sdk/wit/plugin.wit`. See `sdk/README.md` for the guide.

mod batch;
mod counters;
mod error;
pub mod format;
pub mod hash;
mod host;
mod macros;
mod plugin;
mod runner;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use batch::{Batch, Entry, Labels, Metadata, NewEntry, Stream, Verdict};
pub use counters::{MAX_EVENT_NAME, count, is_valid_event_name};
pub use error::Error;
pub use format::is_valid_label_name;
pub use host::{Level, keyed_hash, keyed_hash_hex, log, to_hex};
pub use plugin::Plugin;

/// What a plugin needs, in one import.
pub mod prelude {
    pub use crate::{Batch, Entry, Error, Level, NewEntry, Plugin, Stream, Verdict, count};
    pub use crate::{bail, debug, error, info, trace, warn};
}

/// Used by the [`export!`] expansion; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::runner::Runner;
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{Guest, PluginInfo, Slot, bindings, info, init, process};

    /// Compile-time check, natively, that the exported type is a plugin.
    pub const fn assert_plugin<P: crate::Plugin>() {}
}

/// Exports a [`Plugin`] type as the plugin of this crate: the component-model exports `info`,
/// `init` and `process` of `sdk/wit/plugin.wit`. Name and version come from the crate's Cargo
/// package. Use it once, in the crate's `lib.rs`; natively it only checks the type.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        const _: () = $crate::__private::assert_plugin::<$plugin>();

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct __SluiceExport;

            ::std::thread_local! {
                static __SLUICE_INSTANCE: ::std::cell::RefCell<
                    ::std::option::Option<$crate::__private::Runner<$plugin>>,
                > = const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            impl $crate::__private::Guest for __SluiceExport {
                fn info() -> $crate::__private::PluginInfo {
                    $crate::__private::info(::std::env!("CARGO_PKG_NAME"), ::std::env!("CARGO_PKG_VERSION"))
                }

                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::init::<$plugin>(&__SLUICE_INSTANCE, &config)
                }

                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__private::process::<$plugin>(&__SLUICE_INSTANCE, &batch)
                }
            }

            $crate::__private::bindings::__sluice_export_bindings!(
                __SluiceExport with_types_in $crate::__private::bindings
            );
        };
    };
}
