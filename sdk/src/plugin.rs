//! The trait a plugin implements.

use serde::de::DeserializeOwned;

use crate::{Batch, Entry, Error, Verdict};

/// A sluice plugin: a type built once per instance from its configuration, then given every batch
/// of its stage. Export it with [`export!`](crate::export).
///
/// One instance handles one batch at a time (sluice runs an instance per worker thread), so
/// `&mut self` state needs no locking; it lives until the instance is rebuilt (after a trap,
/// a reload, or a change of the plugin file). Decisions that must agree across sluice replicas
/// should come from the data (e.g. [`keyed_hash`](crate::keyed_hash)), not from such state.
pub trait Plugin: Sized + 'static {
    /// The stage's `config` from the sluice YAML, deserialized from JSON with serde. Use `()` for
    /// none; `#[serde(deny_unknown_fields)]` makes typos an error that `sluice validate` shows.
    type Config: DeserializeOwned;

    /// Builds the plugin. An error rejects the configuration, with its message shown to the
    /// operator.
    fn init(config: Self::Config) -> Result<Self, Error>;

    /// Handles one entry: read it, change it through the setters, keep or drop it. An error fails
    /// the whole batch (the stage's `on_error` policy applies).
    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error>;

    /// Handles a whole batch. The default calls [`Plugin::process`] for each entry in order;
    /// override it for batch-level work: counting, sampling, adding summary entries.
    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        batch.for_each_entry(|entry| self.process(entry))
    }
}
