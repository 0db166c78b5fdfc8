//! A hostile plugin on the raw contract: for a batch with a line containing "amplify", it answers
//! with `copies` added entries that all point at the same `line_bytes`-long line of its response
//! (config `{"copies": N, "line_bytes": M}`, default 2,000 × 1 MiB): a response of about M bytes
//! that a host copying each entry's line would turn into N × M. Otherwise keeps every entry.

wit_bindgen::generate!({ world: "log-plugin", path: "../../../sdk/wit" });

use std::sync::OnceLock;

use exports::sluice::plugin::plugin::{Guest, PluginInfo};
use sluice_sdk::format::request::Request;
use sluice_sdk::format::response::ResponseWriter;

static SHAPE: OnceLock<(usize, usize)> = OnceLock::new();

/// Where an added entry's line span sits in its 40-byte record (after entry, fields, timestamp).
const LINE_SPAN: usize = 16;
const RECORD: usize = 40;
const HEADER: usize = 32;

struct Amplify;

fn number(config: &str, key: &str) -> Option<usize> {
    let at = config.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = config[at..].trim_start().strip_prefix(':')?.trim_start();
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

impl Guest for Amplify {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "amplify".into(),
            version: "0.1.0".into(),
            format_version: sluice_sdk::format::VERSION,
        }
    }

    fn init(config: String) -> Result<(), String> {
        let shape =
            (number(&config, "copies").unwrap_or(2000), number(&config, "line_bytes").unwrap_or(1 << 20));
        let _ = SHAPE.set(shape);
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        let request = Request::parse(&batch).map_err(|e| e.to_string())?;
        let n = request.entry_count();
        let mut writer = ResponseWriter::new(n);
        if !(0..n).any(|i| request.entry(i).line.contains("amplify")) {
            return writer.finish().map_err(|e| e.to_string());
        }
        let (copies, line_bytes) = *SHAPE.get_or_init(|| (2000, 1 << 20));
        let labels = [("app", "amplified")];
        writer.add(0, &"x".repeat(line_bytes), &labels, &[]);
        for i in 1..copies {
            writer.add(i as i64, "", &labels, &[]);
        }
        let mut out = writer.finish().map_err(|e| e.to_string())?;
        // Every added entry's line now points at the first one's.
        let first = HEADER + n.div_ceil(4) * 4;
        let span: [u8; 8] = out[first + LINE_SPAN..first + LINE_SPAN + 8].try_into().map_err(|_| "layout")?;
        for i in 1..copies {
            let at = first + i * RECORD + LINE_SPAN;
            out[at..at + 8].copy_from_slice(&span);
        }
        Ok(out)
    }
}

export!(Amplify);
