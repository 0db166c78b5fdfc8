//! A small set of name/value pairs kept sorted by name, whose strings are reused: clearing,
//! removing and copying keep the allocations, so once warm, relabelling a stream allocates
//! nothing.

/// One pair.
#[derive(Debug, Default)]
pub(crate) struct Pair {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// Pairs sorted by name, names unique. Items past `len` are spare strings.
#[derive(Debug, Default)]
pub(crate) struct PairSet {
    items: Vec<Pair>,
    len: usize,
}

impl PairSet {
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn as_slice(&self) -> &[Pair] {
        &self.items[..self.len]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.as_slice().iter().map(|p| (p.name.as_str(), p.value.as_str()))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.as_slice().binary_search_by(|p| p.name.as_str().cmp(name))
    }

    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.find(name).ok().map(|i| self.items[i].value.as_str())
    }

    /// Sets `name` to `value`, empty values included.
    pub(crate) fn put(&mut self, name: &str, value: &str) {
        let i = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                if self.len == self.items.len() {
                    self.items.push(Pair::default());
                }
                self.items[i..=self.len].rotate_right(1);
                self.len += 1;
                let p = &mut self.items[i];
                p.name.clear();
                p.name.push_str(name);
                i
            }
        };
        let p = &mut self.items[i];
        p.value.clear();
        p.value.push_str(value);
    }

    /// Sets `name` to `value`; an empty value removes `name` (Prometheus and Loki: a label with
    /// an empty value is no label).
    pub(crate) fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.remove(name);
        } else {
            self.put(name, value);
        }
    }

    /// Removes `name`; whether it was there.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        match self.find(name) {
            Ok(i) => {
                self.items[i..self.len].rotate_left(1);
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Keeps the pairs `keep` answers true for, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Pair) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            if keep(&self.items[i]) {
                self.items.swap(kept, i);
                kept += 1;
            }
        }
        self.len = kept;
    }

    /// Replaces the content with `pairs`, which must be sorted by name with unique names.
    pub(crate) fn load<'a>(&mut self, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
        self.len = 0;
        for (name, value) in pairs {
            if self.len == self.items.len() {
                self.items.push(Pair::default());
            }
            let p = &mut self.items[self.len];
            p.name.clear();
            p.name.push_str(name);
            p.value.clear();
            p.value.push_str(value);
            self.len += 1;
        }
    }

    /// Replaces the content with a copy of `other`'s.
    pub(crate) fn copy_from(&mut self, other: &PairSet) {
        self.load(other.iter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(set: &PairSet) -> Vec<(&str, &str)> {
        set.iter().collect()
    }

    #[test]
    fn stays_sorted_and_unique() {
        let mut set = PairSet::default();
        set.put("b", "2");
        set.put("a", "1");
        set.put("c", "3");
        set.put("b", "two");
        assert_eq!(pairs(&set), [("a", "1"), ("b", "two"), ("c", "3")]);
        assert!(set.remove("a"));
        assert!(!set.remove("a"));
        set.set("c", "");
        assert_eq!(pairs(&set), [("b", "two")]);
        set.put("e", "");
        assert_eq!(set.get("e"), Some(""), "put keeps empty values");
        set.put("d", "4");
        set.retain(|p| p.name != "b");
        assert_eq!(pairs(&set), [("d", "4"), ("e", "")]);
        set.put("a", "x");
        assert_eq!(pairs(&set), [("a", "x"), ("d", "4"), ("e", "")]);
        let mut copy = PairSet::default();
        copy.put("z", "z");
        copy.copy_from(&set);
        assert_eq!(pairs(&copy), pairs(&set));
        assert_eq!(copy.len(), 3);
        copy.clear();
        assert!(copy.is_empty());
    }
}
