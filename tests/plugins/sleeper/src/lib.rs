//! Sleeps for an hour in `process` on a batch with a line containing "sleep", and in `init` when
//! its config is `{"sleep_in_init": true}`; otherwise keeps every entry. Only the host can stop
//! it: sleeping is a WASI wait, which the epoch deadline cannot interrupt, so sluice must refuse
//! the wait itself. Written against the raw contract, not the SDK.

wit_bindgen::generate!({ world: "log-plugin", path: "../../../sdk/wit" });

use std::time::Duration;

use exports::sluice::plugin::plugin::{Guest, PluginInfo};
use sluice_sdk::format::request::Request;
use sluice_sdk::format::response::ResponseWriter;

struct Sleeper;

impl Guest for Sleeper {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "sleeper".into(),
            version: "0.1.0".into(),
            format_version: sluice_sdk::format::VERSION,
        }
    }

    fn init(config: String) -> Result<(), String> {
        if config.contains("\"sleep_in_init\":true") {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        let request = Request::parse(&batch).map_err(|e| e.to_string())?;
        let n = request.entry_count();
        if (0..n).any(|i| request.entry(i).line.contains("sleep")) {
            std::thread::sleep(Duration::from_secs(3600));
        }
        ResponseWriter::new(n).finish().map_err(|e| e.to_string())
    }
}

export!(Sleeper);
