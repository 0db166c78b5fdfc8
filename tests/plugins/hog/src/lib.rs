//! Allocates without bound on a batch with a line containing "hog" (the host's memory limit
//! stops it); otherwise keeps every entry. Written against the raw contract, not the SDK.

wit_bindgen::generate!({ world: "log-plugin", path: "../../../sdk/wit" });

use exports::sluice::plugin::plugin::{Guest, PluginInfo};
use sluice_sdk::format::request::Request;
use sluice_sdk::format::response::ResponseWriter;

struct Hog;

impl Guest for Hog {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hog".into(),
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
        if (0..n).any(|i| request.entry(i).line.contains("hog")) {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        ResponseWriter::new(n).finish().map_err(|e| e.to_string())
    }
}

export!(Hog);
