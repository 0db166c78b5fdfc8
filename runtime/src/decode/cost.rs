//! What a push costs once decoded, charged while it is decoded.
//!
//! A decoded entry holds far more memory than it takes on the wire: an empty protobuf entry is 2
//! bytes sent and over 100 held, so a body within every size limit could decode to gigabytes.
//! The decoders charge each stream and entry here *before* they build it: the push's stream and
//! entry counts are capped ([`PushLimits`]), and the bytes go to a [`Meter`] (ingest's is the
//! shared memory budget), which may refuse. What is charged is an upper bound of what decoding
//! allocates (prost's intermediate structs and vector slack included); ingest shrinks the charge
//! to the batch's real size afterwards.

use std::mem::size_of;

use super::DecodeError;
use crate::model::{Entry, Pair, Stream};
use crate::proto::{EntryAdapter, LabelPairAdapter, StreamAdapter};

/// Bounds on one push, whatever its size in bytes.
#[derive(Debug, Clone, Copy)]
pub struct PushLimits {
    /// Entries in one push (`server.max_entries_per_push`).
    pub max_entries: usize,
    /// Streams in one push (`server.max_streams_per_push`).
    pub max_streams: usize,
}

impl PushLimits {
    /// No bound (tools that decode what an operator gave them).
    pub const NONE: Self = Self { max_entries: usize::MAX, max_streams: usize::MAX };
}

/// Where the decoded bytes are charged.
pub trait Meter {
    /// Takes `entries` and `bytes` more for this push, or refuses with the error to answer.
    fn take(&mut self, entries: u64, bytes: u64) -> Result<(), DecodeError>;
}

/// A meter that takes everything: for callers that bound input some other way.
#[derive(Debug, Default)]
pub struct Unmetered {
    /// Bytes taken so far.
    pub bytes: u64,
}

impl Meter for Unmetered {
    fn take(&mut self, _entries: u64, bytes: u64) -> Result<(), DecodeError> {
        self.bytes += bytes;
        Ok(())
    }
}

/// Held per entry beyond its strings: the model's entry and prost's, each with vector slack.
pub(crate) const ENTRY_OVERHEAD: usize = 2 * (size_of::<Entry>() + size_of::<EntryAdapter>());
/// Held per structured-metadata pair beyond its strings.
pub(crate) const PAIR_OVERHEAD: usize = 2 * (size_of::<Pair>() + size_of::<LabelPairAdapter>());
/// Held per stream beyond its strings.
pub(crate) const STREAM_OVERHEAD: usize = 2 * (size_of::<Stream>() + size_of::<StreamAdapter>());

/// Charged bytes are handed to the meter in steps of at least this much, so a JSON push does not
/// touch the shared budget once per entry.
const STEP_BYTES: u64 = 256 << 10;

/// One push's running cost.
pub(crate) struct Cost<'m> {
    limits: PushLimits,
    meter: &'m mut dyn Meter,
    entries: usize,
    streams: usize,
    /// Charged here but not yet taken from the meter.
    pending_entries: u64,
    pending_bytes: u64,
    /// The first refusal; once set, every later charge fails too.
    refused: Option<DecodeError>,
}

/// Decoding must stop; [`Cost::take_error`] says why.
#[derive(Debug)]
pub(crate) struct Refused;

impl<'m> Cost<'m> {
    pub(crate) fn new(limits: PushLimits, meter: &'m mut dyn Meter) -> Self {
        Self { limits, meter, entries: 0, streams: 0, pending_entries: 0, pending_bytes: 0, refused: None }
    }

    /// Charges one more stream of `bytes` beyond its entries.
    pub(crate) fn stream(&mut self, bytes: usize) -> Result<(), Refused> {
        self.check()?;
        self.streams += 1;
        if self.streams > self.limits.max_streams {
            return self.refuse(DecodeError::TooManyStreams { limit: self.limits.max_streams });
        }
        self.add(0, STREAM_OVERHEAD + bytes)
    }

    /// Charges `n` more entries holding `bytes` of strings (and their pairs' overhead) in all.
    pub(crate) fn entries(&mut self, n: usize, bytes: usize) -> Result<(), Refused> {
        self.check()?;
        self.entries = self.entries.saturating_add(n);
        if self.entries > self.limits.max_entries {
            return self.refuse(DecodeError::TooManyEntries { limit: self.limits.max_entries });
        }
        self.add(n as u64, n.saturating_mul(ENTRY_OVERHEAD).saturating_add(bytes))
    }

    /// Hands what is still pending to the meter; the push is fully charged after this.
    pub(crate) fn finish(&mut self) -> Result<(), DecodeError> {
        if let Some(e) = self.refused.take() {
            return Err(e);
        }
        self.flush().map_err(|Refused| self.take_error())
    }

    /// Why decoding was refused (a generic error if it was not).
    pub(crate) fn take_error(&mut self) -> DecodeError {
        self.refused.take().unwrap_or_else(|| DecodeError::Malformed("decoding was stopped".into()))
    }

    /// Whether a charge was refused.
    pub(crate) fn is_refused(&self) -> bool {
        self.refused.is_some()
    }

    fn check(&self) -> Result<(), Refused> {
        if self.refused.is_some() { Err(Refused) } else { Ok(()) }
    }

    fn add(&mut self, entries: u64, bytes: usize) -> Result<(), Refused> {
        self.pending_entries += entries;
        self.pending_bytes = self.pending_bytes.saturating_add(bytes as u64);
        if self.pending_bytes >= STEP_BYTES { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), Refused> {
        let (entries, bytes) = (self.pending_entries, self.pending_bytes);
        self.pending_entries = 0;
        self.pending_bytes = 0;
        match self.meter.take(entries, bytes) {
            Ok(()) => Ok(()),
            Err(e) => self.refuse(e),
        }
    }

    fn refuse(&mut self, e: DecodeError) -> Result<(), Refused> {
        self.refused.get_or_insert(e);
        Err(Refused)
    }
}
