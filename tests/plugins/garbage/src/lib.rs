//! Answers a batch with a line containing "garbage" with bytes that are not a response;
//! otherwise keeps every entry with a response written by hand. Written against the raw
//! contract, not the SDK.

wit_bindgen::generate!({ world: "log-plugin", path: "../../../sdk/wit" });

use exports::sluice::plugin::plugin::{Guest, PluginInfo};
use sluice_sdk::format::request::Request;
use sluice_sdk::format::response::ResponseWriter;

struct Garbage;

impl Guest for Garbage {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "garbage".into(),
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
        if (0..n).any(|i| request.entry(i).line.contains("garbage")) {
            // Right magic, wrong everything else: the host must check, not trust.
            return Ok(b"SLCR\x01\x00\x00\x00 this is not a response".to_vec());
        }
        ResponseWriter::new(n).finish().map_err(|e| e.to_string())
    }
}

export!(Garbage);
