//! Longest-prefix-match table from IP networks to peer slots (pure).
//!
//! One hash map per prefix length present, probed from the longest length
//! down: a lookup costs one probe per distinct prefix length (typically one or
//! two: /32 tunnel addresses and maybe a site route), whatever the peer count.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: BTreeMap<u8, HashMap<u32, T>>,
    v6: BTreeMap<u8, HashMap<u128, T>>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self { v4: BTreeMap::new(), v6: BTreeMap::new() }
    }
}

fn mask_v4(addr: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(addr: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    /// Maps `net` (host bits ignored) to `value`; returns what it replaced.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net {
            IpNet::V4(n) => {
                let key = mask_v4(u32::from(n.addr()), n.prefix_len());
                self.v4.entry(n.prefix_len()).or_default().insert(key, value)
            }
            IpNet::V6(n) => {
                let key = mask_v6(u128::from(n.addr()), n.prefix_len());
                self.v6.entry(n.prefix_len()).or_default().insert(key, value)
            }
        }
    }

    /// The value stored for exactly `net`, if any.
    pub fn get_exact(&self, net: IpNet) -> Option<T> {
        match net {
            IpNet::V4(n) => self
                .v4
                .get(&n.prefix_len())
                .and_then(|m| m.get(&mask_v4(u32::from(n.addr()), n.prefix_len())))
                .copied(),
            IpNet::V6(n) => self
                .v6
                .get(&n.prefix_len())
                .and_then(|m| m.get(&mask_v6(u128::from(n.addr()), n.prefix_len())))
                .copied(),
        }
    }

    /// Removes exactly `net`; returns the value it mapped to.
    pub fn remove(&mut self, net: IpNet) -> Option<T> {
        match net {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let map = self.v4.get_mut(&len)?;
                let old = map.remove(&mask_v4(u32::from(n.addr()), len));
                if map.is_empty() {
                    self.v4.remove(&len);
                }
                old
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let map = self.v6.get_mut(&len)?;
                let old = map.remove(&mask_v6(u128::from(n.addr()), len));
                if map.is_empty() {
                    self.v6.remove(&len);
                }
                old
            }
        }
    }

    /// The value of the longest prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<T> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().rev().find_map(|(len, map)| map.get(&mask_v4(a, *len)).copied())
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().rev().find_map(|(len, map)| map.get(&mask_v6(a, *len)).copied())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_for_both_families() {
        let mut t = AllowedIps::default();
        t.insert(net("10.0.0.0/8"), 1u32);
        t.insert(net("10.1.0.0/16"), 2);
        t.insert(net("10.1.2.3/32"), 3);
        t.insert(net("fd00::/64"), 4);
        t.insert(net("fd00::2/128"), 5);
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("10.1.2.4".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("10.9.9.9".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
        assert_eq!(t.lookup("fd00::2".parse().unwrap()), Some(5));
        assert_eq!(t.lookup("fd00::3".parse().unwrap()), Some(4));
        assert_eq!(t.lookup("fd01::3".parse().unwrap()), None);
    }

    #[test]
    fn host_bits_are_ignored_and_default_routes_match_everything() {
        let mut t = AllowedIps::default();
        t.insert(net("192.168.7.9/24"), 7u32);
        t.insert(net("0.0.0.0/0"), 0);
        t.insert(net("::/0"), 9);
        assert_eq!(t.lookup("192.168.7.200".parse().unwrap()), Some(7));
        assert_eq!(t.lookup("8.8.8.8".parse().unwrap()), Some(0));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(9));
        assert_eq!(t.get_exact(net("192.168.7.0/24")), Some(7));
    }

    #[test]
    fn remove_restores_the_shorter_prefix() {
        let mut t = AllowedIps::default();
        t.insert(net("10.0.0.0/8"), 1u32);
        t.insert(net("10.0.0.5/32"), 2);
        assert_eq!(t.remove(net("10.0.0.5/32")), Some(2));
        assert_eq!(t.lookup("10.0.0.5".parse().unwrap()), Some(1));
        assert_eq!(t.remove(net("10.0.0.5/32")), None);
        assert_eq!(t.remove(net("10.0.0.0/8")), Some(1));
        assert!(t.is_empty());
    }
}
