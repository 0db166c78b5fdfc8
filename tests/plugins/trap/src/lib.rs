//! Traps (a Rust panic, which aborts in Wasm) on a batch with a line containing "trap";
//! otherwise keeps every entry. Written against the raw contract, not the SDK.

wit_bindgen::generate!({ world: "log-plugin", path: "../../../sdk/wit" });

use exports::sluice::plugin::plugin::{Guest, PluginInfo};
use sluice_sdk::format::request::Request;
use sluice_sdk::format::response::ResponseWriter;

struct Trap;

impl Guest for Trap {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "trap".into(),
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
        if (0..n).any(|i| request.entry(i).line.contains("trap")) {
            panic!("asked to trap");
        }
        ResponseWriter::new(n).finish().map_err(|e| e.to_string())
    }
}

export!(Trap);
