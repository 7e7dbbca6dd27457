use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::addr::canonical;

/// One allowed address and the hostnames that resolved to it (sorted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The canonical address.
    pub address: IpAddr,
    /// The hostnames whose answers contained it, sorted.
    pub names: Vec<String>,
}

/// The immutable set that is published: canonical addresses with their provenance.
///
/// Lookups are a binary search over sorted integers, so a check costs a few nanoseconds even for thousands of
/// addresses, and no DNS lookup ever happens here.
///
/// ```
/// use vipps_allowlist::AllowSet;
/// let set = AllowSet::from_pairs([
///     ("104.45.17.199".parse().unwrap(), "callback-1.vipps.no"),
///     ("2a01:4f8::1".parse().unwrap(), "callback-2.vipps.no"),
/// ]);
/// assert!(set.contains("104.45.17.199".parse().unwrap()));
/// assert!(set.contains("::ffff:104.45.17.199".parse().unwrap()));
/// assert!(!set.contains("104.45.17.198".parse().unwrap()));
/// assert_eq!(set.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowSet {
    v4: Vec<u32>,
    v6: Vec<u128>,
    entries: Vec<Entry>,
}

impl AllowSet {
    /// An empty set: admits nobody.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a set from `(address, hostname)` pairs; addresses are canonicalised and merged.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (IpAddr, &'a str)>) -> Self {
        let mut map: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for (ip, name) in pairs {
            map.entry(canonical(ip)).or_default().push(name.to_owned());
        }
        Self::from_map(map)
    }

    pub(crate) fn from_map(map: BTreeMap<IpAddr, Vec<String>>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut entries = Vec::with_capacity(map.len());
        for (address, mut names) in map {
            let address = canonical(address);
            names.sort();
            names.dedup();
            match address {
                IpAddr::V4(a) => v4.push(u32::from(a)),
                IpAddr::V6(a) => v6.push(u128::from(a)),
            }
            entries.push(Entry { address, names });
        }
        entries.sort();
        entries.dedup_by(|a, b| a.address == b.address);
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        AllowSet { v4, v6, entries }
    }

    /// Whether the address (canonicalised first) is allowed.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.binary_search(&u32::from(a)).is_ok(),
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                // `::ffff:a.b.c.d` is the IPv4 address a.b.c.d.
                if bits >> 32 == 0xffff {
                    self.v4.binary_search(&(bits as u32)).is_ok()
                } else {
                    self.v6.binary_search(&bits).is_ok()
                }
            }
        }
    }

    /// The number of addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by address (IPv4 before IPv6).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The IPv4 addresses, sorted.
    pub fn v4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.v4.iter().map(|&a| Ipv4Addr::from(a))
    }

    /// The IPv6 addresses, sorted.
    pub fn v6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.v6.iter().map(|&a| Ipv6Addr::from(a))
    }

    /// The hostnames an address came from.
    pub fn names_of(&self, ip: IpAddr) -> Option<&[String]> {
        let ip = canonical(ip);
        self.entries
            .binary_search_by(|e| e.address.cmp(&ip))
            .ok()
            .map(|i| self.entries[i].names.as_slice())
    }

    /// What changed from `previous` to `self`.
    pub fn diff_from(&self, previous: &AllowSet) -> Diff {
        let added = self
            .entries
            .iter()
            .filter(|e| !previous.contains(e.address))
            .cloned()
            .collect();
        let removed = previous
            .entries
            .iter()
            .filter(|e| !self.contains(e.address))
            .cloned()
            .collect();
        Diff { added, removed }
    }
}

/// The addresses added and removed by an update, with their hostnames.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Newly allowed addresses.
    pub added: Vec<Entry>,
    /// Addresses no longer allowed.
    pub removed: Vec<Entry>,
}

impl Diff {
    /// Whether nothing was added or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Added plus removed.
    pub fn churn(&self) -> usize {
        self.added.len() + self.removed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_sorts() {
        let s = AllowSet::from_pairs([
            ("10.0.0.2".parse().unwrap(), "b"),
            ("::ffff:10.0.0.2".parse().unwrap(), "a"),
            ("::1".parse().unwrap(), "c"),
            ("10.0.0.1".parse().unwrap(), "a"),
        ]);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.entries()[0].address,
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(s.names_of("10.0.0.2".parse().unwrap()).unwrap(), ["a", "b"]);
        assert!(s.contains("::1".parse().unwrap()));
        assert!(!s.contains("0.0.0.1".parse().unwrap()));
        let t = AllowSet::from_pairs([("10.0.0.3".parse().unwrap(), "a")]);
        let d = t.diff_from(&s);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.removed.len(), 3);
        assert_eq!(d.churn(), 4);
    }
}
