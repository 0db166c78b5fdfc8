//! The processing every parse plugin shares: find the wanted fields in the line, apply the
//! outputs, count what didn't parse and what overflowed.

use sluice_sdk::{Batch, Entry, Error, Verdict};

use crate::outputs::Outputs;
use crate::values::Values;

/// The counter of lines that were not of the plugin's format (or didn't match its pattern).
pub const UNPARSED: &str = "unparsed";
/// The counter of label values that went to structured metadata because their label had
/// `max_label_values` distinct values already.
pub const LABEL_OVERFLOW: &str = "label_overflow";

/// A line format: finds the wanted fields of a line.
pub trait Extract {
    /// Finds the fields of `line` into `values` (by index into [`Outputs::fields`]), which were
    /// reset. `false` when the line is not of this format: nothing is applied and the line is
    /// counted `unparsed`.
    fn extract(&mut self, line: &str, values: &mut Values) -> bool;
}

/// A parse plugin: an extractor and the outputs. The plugin types wrap one and forward
/// `process` and `process_batch` to it.
#[derive(Debug)]
pub struct Parser<E> {
    outputs: Outputs,
    values: Values,
    extractor: E,
    unparsed: u64,
}

impl<E: Extract> Parser<E> {
    /// A parser whose `extractor` finds the fields of `outputs`.
    pub fn new(outputs: Outputs, extractor: E) -> Self {
        Self { values: Values::new(outputs.fields().len()), outputs, extractor, unparsed: 0 }
    }

    /// The extractor.
    pub fn extractor(&self) -> &E {
        &self.extractor
    }

    /// Parses one entry's line and applies the outputs; every entry is kept.
    pub fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        // The line as this stage received it: nothing has changed it yet, and unlike
        // `entry.line()` it doesn't borrow the entry, which the setters need.
        let line = entry.original_line();
        self.values.reset();
        if self.extractor.extract(line, &mut self.values) {
            self.outputs.apply(entry, &self.values, line)?;
        } else {
            self.unparsed += 1;
        }
        Ok(Verdict::Keep)
    }

    /// Processes every entry, then counts the batch's `unparsed` and `label_overflow`.
    pub fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        // A failed batch's counts are dropped with it.
        self.unparsed = 0;
        self.outputs.take_overflowed();
        batch.for_each_entry(|entry| self.process(entry))?;
        sluice_sdk::count(UNPARSED, std::mem::take(&mut self.unparsed));
        sluice_sdk::count(LABEL_OVERFLOW, self.outputs.take_overflowed());
        Ok(())
    }
}
