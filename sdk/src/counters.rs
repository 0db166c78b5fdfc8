//! Plugin counters: a plugin counts what it did (a detector's hits, a sampler's drops) with
//! [`count`]; sluice exports the counts as `sluice_plugin_events_total{stage, plugin, event}`.
//!
//! Counting is in-guest and cheap (a short list per batch); the SDK hands the batch's counts to
//! the host once, after the batch, so a plugin may count per entry without a host call each.

use std::cell::RefCell;

thread_local! {
    static COUNTS: RefCell<Vec<(String, u64)>> = const { RefCell::new(Vec::new()) };
}

/// The longest event name sluice exports; longer names are refused by the host.
pub const MAX_EVENT_NAME: usize = 64;

/// Adds `n` to this plugin's counter `event` (e.g. `email` for a detector's hits). Names are
/// `[a-zA-Z0-9_:.-]`, at most [`MAX_EVENT_NAME`] bytes, and should be few: sluice exports at
/// most 64 distinct events per stage.
pub fn count(event: &str, n: u64) {
    if n == 0 {
        return;
    }
    COUNTS.with(|c| {
        let mut counts = c.borrow_mut();
        match counts.iter_mut().find(|(name, _)| name == event) {
            Some((_, total)) => *total = total.saturating_add(n),
            None => counts.push((event.to_string(), n)),
        }
    });
}

/// The counts since the last call, emptied.
pub(crate) fn take() -> Vec<(String, u64)> {
    COUNTS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// Whether `event` is a name sluice exports.
pub fn is_valid_event_name(event: &str) -> bool {
    !event.is_empty()
        && event.len() <= MAX_EVENT_NAME
        && event.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
}
