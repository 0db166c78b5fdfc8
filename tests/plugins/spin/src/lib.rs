//! Loops forever on a batch with a line containing "spin" (only the host's deadline stops it);
//! otherwise keeps every entry. Written against the raw contract, not the SDK.

wit_bindgen::generate!({ world: "log-plugin", path: "../../../sdk/wit" });

use exports::sluice::plugin::plugin::{Guest, PluginInfo};
use sluice_sdk::format::request::Request;
use sluice_sdk::format::response::ResponseWriter;

struct Spin;

impl Guest for Spin {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "spin".into(),
            version: "0.1.0".into(),
            format_version: sluice_sdk::format::VERSION,
        }
    }

    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        let request = Request::parse(&batch).map_err(|e| e.to_string())?;
        let n = request.entry_count();
        if (0..n).any(|i| request.entry(i).line.contains("spin")) {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        ResponseWriter::new(n).finish().map_err(|e| e.to_string())
    }
}

export!(Spin);
