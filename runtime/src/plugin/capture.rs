//! A plugin's stdout and stderr: captured into a small buffer per call and written to sluice's
//! log afterwards (a Rust plugin's panic message arrives this way), never to sluice's own
//! streams. Output beyond the bound is discarded, not an error, so a chatty plugin cannot fail.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per stream per call.
pub const CAPTURE_LIMIT: usize = 4096;

/// A bounded capture buffer; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    discarded: usize,
}

impl Capture {
    fn append(&self, data: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = CAPTURE_LIMIT.saturating_sub(c.bytes.len());
        let kept = data.len().min(room);
        c.bytes.extend_from_slice(&data[..kept]);
        c.discarded += data.len() - kept;
    }

    /// What was written since the last call (lossy UTF-8, trailing newlines trimmed) and how
    /// many bytes were discarded; `None` when nothing was written.
    pub fn take(&self) -> Option<(String, usize)> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if c.bytes.is_empty() && c.discarded == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&c.bytes).trim_end().to_string();
        let discarded = std::mem::take(&mut c.discarded);
        c.bytes.clear();
        Some((text, discarded))
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_prefix_and_counts_the_rest() {
        let c = Capture::default();
        assert!(c.take().is_none());
        c.append(b"hello\n");
        assert_eq!(c.take(), Some(("hello".to_string(), 0)));
        c.append(&vec![b'x'; CAPTURE_LIMIT + 10]);
        let (text, discarded) = c.take().expect("written");
        assert_eq!((text.len(), discarded), (CAPTURE_LIMIT, 10));
        assert!(c.take().is_none(), "taking empties it");
    }
}
