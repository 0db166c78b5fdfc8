//! The local NDJSON file sink (being written).

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::config::FileSinkConfig;
use crate::sink::SinkInput;

/// Writes batches as NDJSON files under a directory.
#[derive(Debug)]
pub struct FileSink {
    _name: String,
}

impl FileSink {
    pub fn new(name: &str, _dir: PathBuf, _config: &FileSinkConfig) -> Result<Self, String> {
        Ok(Self { _name: name.to_string() })
    }

    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<SinkInput>) {
        while rx.recv().await.is_some() {}
    }
}
