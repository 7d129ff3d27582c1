//! A map of at most a fixed number of entries that forgets the oldest
//! first: for what a download remembers about peers after they leave.
//!
//! A seed runs for months, and peers come and go without end (a hostile
//! one can reconnect hundreds of times a second), so anything kept per
//! departed peer must have a bound. What these maps hold matters most
//! while it is fresh: the address of a key whose piece is still to be
//! verified, or a ban on an address that just sent bad data.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Entries kept in insertion order, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct FifoMap<K, V> {
    entries: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Copy, V> FifoMap<K, V> {
    /// An empty map that keeps at most `cap` entries (at least one).
    pub(crate) fn new(cap: usize) -> Self {
        FifoMap {
            entries: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Adds `key`, forgetting the oldest entry if the map is full; returns
    /// false, and changes nothing, if `key` was already there.
    pub(crate) fn insert(&mut self, key: K, value: V) -> bool {
        if self.entries.contains_key(&key) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(key, value);
        self.order.push_back(key);
        true
    }

    /// The value of `key`, if it is still remembered.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// Whether `key` is still remembered.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Entries remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_goes_first_and_a_repeat_changes_nothing() {
        let mut m = FifoMap::new(3);
        assert!(m.insert(1, 'a'));
        assert!(m.insert(2, 'b'));
        assert!(!m.insert(1, 'z'));
        assert_eq!(m.get(&1), Some(&'a'));
        assert!(m.insert(3, 'c'));
        assert!(m.insert(4, 'd'));
        assert!(!m.contains_key(&1));
        assert_eq!((m.get(&2), m.get(&4), m.len()), (Some(&'b'), Some(&'d'), 3));
    }

    #[test]
    fn an_endless_stream_stays_within_the_cap() {
        let mut m = FifoMap::new(100);
        for i in 0..100_000u32 {
            m.insert(i, ());
        }
        assert_eq!(m.len(), 100);
        assert!(m.contains_key(&99_999) && !m.contains_key(&99_899));
    }
}
