//! A bounded map from 64-bit hashes to per-key state, for every stateful mode.
//!
//! Keys are already xxh3 hashes, so the map doesn't hash them again. When the table is full and a
//! new key arrives, entries that no longer matter (`stale`: a bucket that has refilled, a dedupe
//! entry past its window) go first, without changing any decision; if that leaves it more than
//! half full, the least recently seen entries are forgotten down to half the cap (counted as
//! `evicted`). Eviction costs O(cap) once per cap/2 new keys, so O(1) per entry on average.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The hasher of already-hashed `u64` keys: the key itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in, to stay a correct hasher.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map of at most `cap` entries.
#[derive(Debug)]
pub struct Table<V> {
    map: HashMap<u64, V, BuildHasherDefault<KeyHasher>>,
    cap: usize,
    /// Entries forgotten while they still mattered, since the last [`Table::take_evicted`].
    evicted: u64,
}

/// What a table needs to know about its values to evict.
pub trait Aging {
    /// When the entry was last used (a log timestamp).
    fn last_seen(&self) -> i64;
}

impl<V: Aging> Table<V> {
    /// An empty table for at most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Self {
        Self { map: HashMap::default(), cap: cap.max(1), evicted: 0 }
    }

    /// The entry of `key`, made by `make` if absent. If the table is full, entries for which
    /// `stale` (forgetting them changes no decision) are dropped first, then the oldest.
    pub fn entry(&mut self, key: u64, make: impl FnOnce() -> V, stale: impl Fn(&V) -> bool) -> &mut V {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.evict(stale);
        }
        self.map.entry(key).or_insert_with(make)
    }

    /// The entry of `key`, if present.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.map.get_mut(&key)
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Forced evictions since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    fn evict(&mut self, stale: impl Fn(&V) -> bool) {
        self.map.retain(|_, v| !stale(v));
        let keep = self.cap / 2;
        if self.map.len() <= keep {
            return;
        }
        let mut seen: Vec<i64> = self.map.values().map(Aging::last_seen).collect();
        let remove = seen.len() - keep;
        let (_, &mut newest_removed, _) = seen.select_nth_unstable(remove - 1);
        let before = self.map.len();
        self.map.retain(|_, v| v.last_seen() > newest_removed);
        self.evicted += (before - self.map.len()) as u64;
    }
}
