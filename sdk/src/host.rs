//! The host imports — logging and the keyed hash — behind one API for both builds.
//!
//! On Wasm they call sluice through the component model. Natively they are stubs: log lines go to
//! the sink of the [`NativePlugin`](crate::native::NativePlugin) running on this thread (stderr
//! when none), and the keyed hash is [`hash::keyed_hash`](crate::hash::keyed_hash) under the key
//! that plugin was given, so a native run hashes exactly as the host would with the same key.

use std::fmt;

/// Severity of a log line, as sluice's own log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// Writes `message` to sluice's log at `level`, attributed to the plugin's stage. Prefer the
/// macros ([`info!`](crate::info) and friends).
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// The keyed hash of `data` under the stage's secret key, which the plugin never sees: stable
/// across replicas and restarts, not reversible without the key.
pub fn keyed_hash(data: &[u8]) -> [u8; 32] {
    imp::keyed_hash(data)
}

/// [`keyed_hash`] as 64 lowercase hex digits, e.g. to put into a line or metadata.
pub fn keyed_hash_hex(data: &[u8]) -> String {
    to_hex(&keyed_hash(data))
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::wasm::bindings::sluice::plugin::host;

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }

    pub(super) fn keyed_hash(data: &[u8]) -> [u8; 32] {
        let hash = host::keyed_hash(data);
        match <[u8; 32]>::try_from(hash.as_slice()) {
            Ok(h) => h,
            Err(_) => panic!("the host's keyed-hash returned {} bytes, not 32", hash.len()),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::Level;

    /// Where a native plugin's log lines go.
    pub(crate) type Logger = Arc<dyn Fn(Level, &str) + Send + Sync>;

    /// The host a native plugin sees while one of its calls runs on this thread.
    #[derive(Clone)]
    pub(crate) struct Stub {
        pub(crate) key: [u8; 32],
        pub(crate) logger: Option<Logger>,
    }

    thread_local! {
        static CURRENT: RefCell<Stub> = const { RefCell::new(Stub { key: [0; 32], logger: None }) };
    }

    /// Makes `stub` this thread's host until the guard drops (then the previous one is back).
    pub(crate) fn enter(stub: &Stub) -> Guard {
        Guard { previous: Some(CURRENT.with(|c| c.replace(stub.clone()))) }
    }

    pub(crate) struct Guard {
        previous: Option<Stub>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(previous) = self.previous.take() {
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
    }

    pub(super) fn log(level: Level, message: &str) {
        let logger = CURRENT.with(|c| c.borrow().logger.clone());
        match logger {
            Some(logger) => logger(level, message),
            None => eprintln!("sluice plugin [{level}] {message}"),
        }
    }

    pub(super) fn keyed_hash(data: &[u8]) -> [u8; 32] {
        let key = CURRENT.with(|c| c.borrow().key);
        crate::hash::keyed_hash(&key, data)
    }
}
