//! The bound on what sluice holds between ingest and delivery, in entries and bytes.
//!
//! A push takes a [`Charge`] for all its entries before it is handed to the pipeline; the charge
//! travels with the data into the sinks' batches and is released when the last piece of that
//! data is delivered or dropped. When the budget is spent, ingest answers 429 instead of growing
//! memory, so memory is bounded end to end, not only in front of the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared budget.
#[derive(Debug)]
pub struct Budget {
    max_entries: u64,
    max_bytes: u64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// Entries and bytes taken from a [`Budget`]; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    entries: u64,
    bytes: u64,
}

impl Budget {
    pub fn new(max_entries: u64, max_bytes: u64) -> Arc<Self> {
        Arc::new(Self { max_entries, max_bytes, entries: AtomicU64::new(0), bytes: AtomicU64::new(0) })
    }

    /// Takes `entries` and `bytes` if both fit, else `None`. A single request larger than the
    /// whole budget is admitted when the budget is empty, so it cannot be refused forever.
    pub fn try_charge(self: &Arc<Self>, entries: u64, bytes: u64) -> Option<Charge> {
        self.take(entries, bytes, true).then(|| Charge { budget: Arc::clone(self), entries, bytes })
    }

    /// Adds `entries` and `bytes` to what is held if both fit (or, `when_empty`, if nothing is
    /// held of that kind); nothing is taken when they do not.
    fn take(&self, entries: u64, bytes: u64, when_empty: bool) -> bool {
        let take = |counter: &AtomicU64, amount: u64, max: u64| {
            counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                    let sum = held.checked_add(amount)?;
                    (sum <= max || (when_empty && held == 0)).then_some(sum)
                })
                .is_ok()
        };
        if !take(&self.entries, entries, self.max_entries) {
            return false;
        }
        if !take(&self.bytes, bytes, self.max_bytes) {
            self.entries.fetch_sub(entries, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// A charge of nothing, to [`Charge::grow`] while a push is decoded.
    pub fn empty_charge(self: &Arc<Self>) -> Charge {
        Charge { budget: Arc::clone(self), entries: 0, bytes: 0 }
    }

    /// The whole budget: (entries, bytes).
    pub fn capacity(&self) -> (u64, u64) {
        (self.max_entries, self.max_bytes)
    }

    /// Entries currently held.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Acquire)
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
}

impl Charge {
    /// Takes `entries` and `bytes` more if both fit in what the budget has left; nothing is
    /// taken when they do not.
    pub fn grow(&mut self, entries: u64, bytes: u64) -> bool {
        if !self.budget.take(entries, bytes, false) {
            return false;
        }
        self.entries += entries;
        self.bytes += bytes;
        true
    }

    /// Gives back what this charge holds above `entries` and `bytes` (a decoded push's estimate
    /// once its real size is known).
    pub fn shrink_to(&mut self, entries: u64, bytes: u64) {
        let (e, b) = (self.entries.saturating_sub(entries), self.bytes.saturating_sub(bytes));
        self.budget.entries.fetch_sub(e, Ordering::AcqRel);
        self.budget.bytes.fetch_sub(b, Ordering::AcqRel);
        self.entries -= e;
        self.bytes -= b;
    }

    /// Bytes held by this charge.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The budget this charge is taken from.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.entries.fetch_sub(self.entries, Ordering::AcqRel);
        self.budget.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_bounded_and_released_on_drop() {
        let budget = Budget::new(10, 1000);
        let a = budget.try_charge(6, 100).expect("fits");
        assert!(budget.try_charge(5, 100).is_none(), "entries exceed");
        let b = budget.try_charge(4, 900).expect("fits exactly");
        assert!(budget.try_charge(0, 1).is_none(), "bytes exceed");
        assert_eq!((budget.entries(), budget.bytes()), (10, 1000));
        drop(a);
        drop(b);
        assert_eq!((budget.entries(), budget.bytes()), (0, 0));
        let huge = budget.try_charge(50, 5000).expect("oversized request admitted into an empty budget");
        assert!(budget.try_charge(1, 1).is_none());
        drop(huge);
        assert_eq!(budget.entries(), 0);
    }

    #[test]
    fn a_growing_charge_never_passes_the_budget_and_shrinks_to_its_real_size() {
        let budget = Budget::new(10, 1000);
        let other = budget.try_charge(2, 200).expect("fits");
        let mut c = budget.empty_charge();
        assert!(c.grow(5, 500));
        assert!(!c.grow(1, 301), "bytes would pass the budget");
        assert!(!c.grow(4, 1), "entries would pass the budget");
        assert_eq!((budget.entries(), budget.bytes()), (7, 700), "a refused growth takes nothing");
        assert!(c.grow(3, 300), "exactly full");
        c.shrink_to(2, 50);
        assert_eq!((budget.entries(), budget.bytes()), (4, 250));
        assert_eq!(c.bytes(), 50);
        c.shrink_to(100, 100);
        assert_eq!(c.bytes(), 50, "shrinking never grows");
        drop(c);
        drop(other);
        assert_eq!((budget.entries(), budget.bytes()), (0, 0));
    }
}
