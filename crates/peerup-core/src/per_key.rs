//! Places held per key (a source IP, a peer), at most so many at once per key, each given back
//! when dropped; a key's entry goes with its last place, so the table holds only keys that hold
//! something now.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// At most `max` places per key at once.
pub(crate) struct PerKey<K> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    max: usize,
}

impl<K> Clone for PerKey<K> {
    fn clone(&self) -> Self {
        Self { counts: self.counts.clone(), max: self.max }
    }
}

impl<K: Hash + Eq + Clone> PerKey<K> {
    pub(crate) fn new(max: usize) -> Self {
        Self { counts: Arc::default(), max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for `key`, unless it holds `max` already.
    pub(crate) fn take(&self, key: K) -> Option<Place<K>> {
        let mut counts = self.lock();
        let count = counts.entry(key.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Place { table: self.clone(), key })
    }

    /// How many keys hold places.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One place in a [`PerKey`], given back when dropped.
pub(crate) struct Place<K: Hash + Eq + Clone> {
    table: PerKey<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Place<K> {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
