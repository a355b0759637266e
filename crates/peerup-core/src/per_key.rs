//! Places held per key (a source IP, a peer), at most so many at once per key, each given back
//! when dropped; a key's entry goes with its last place, so the table holds only keys that hold
//! something now.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The key a source address is counted under in per-address caps: an IPv4 address (an IPv4
/// address mapped into IPv6 included) as it is, an IPv6 address by its /64, the block one
/// subscriber is usually given, from which a client picks any address it likes.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let key = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(key("198.18.0.7"), "198.18.0.7");
        assert_eq!(key("::ffff:198.18.0.7"), "198.18.0.7", "mapped IPv4 is IPv4");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"), "one /64, one key");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"), "another /64");
    }
}
