//! The Loki sink (being written).

use tokio::sync::mpsc;

use crate::config::LokiSinkConfig;
use crate::sink::SinkInput;

/// Pushes batches to Loki.
#[derive(Debug)]
pub struct LokiSink {
    _name: String,
}

impl LokiSink {
    pub fn new(name: &str, _config: &LokiSinkConfig) -> Result<Self, String> {
        Ok(Self { _name: name.to_string() })
    }

    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<SinkInput>) {
        while rx.recv().await.is_some() {}
    }
}
