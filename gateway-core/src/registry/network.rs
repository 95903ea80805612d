//! The tunnel network and the pure token-id -> (slot, tunnel IP) rule that
//! lets several gateways following one chain agree on addresses without
//! talking to each other.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chain::TokenId;

/// An IPv4 network in CIDR notation, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not of the form a.b.c.d/len")]
    Syntax(String),
    #[error("prefix /{0} leaves no host addresses for peers (need at most /30)")]
    TooSmall(u8),
    #[error("`{0}` has host bits set; did you mean {1}?")]
    HostBitsSet(String, String),
}

impl Ipv4Cidr {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        // /31 and /32 have no room for a gateway plus one peer.
        if prefix > 30 {
            return Err(CidrError::TooSmall(prefix));
        }
        // `checked_shl`: /0 would shift by 32, which overflows (the registry
        // fuzzer's first crash: a registry file naming 10.88.0.24/0).
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let base = u32::from(network);
        if base & !mask != 0 {
            let fixed = Ipv4Cidr { network: Ipv4Addr::from(base & mask), prefix };
            return Err(CidrError::HostBitsSet(format!("{network}/{prefix}"), fixed.to_string()));
        }
        Ok(Ipv4Cidr { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Highest usable host index: all-ones host part is the broadcast address.
    pub(crate) fn last_host_index(&self) -> u64 {
        (1u64 << (32 - self.prefix)) - 2
    }

    /// The address of host `index` (1 = first host); `None` past the last host.
    pub fn host(&self, index: u64) -> Option<Ipv4Addr> {
        if index == 0 || index > self.last_host_index() {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + index as u32))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        if len > 32 {
            return Err(syntax());
        }
        Ipv4Cidr::new(addr, len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The tunnel network of the registry document (`network` in JSON v2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub cidr: Ipv4Cidr,
    pub dns_server: Ipv4Addr,
}

/// A peer's index in the XDP allow map and the data plane's session-index
/// space (`receiver_index >> 8`); equal to its host index in the CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerSlot(pub u32);

/// Where a token's peer lives: its slot and tunnel address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub slot: PeerSlot,
    pub tunnel_ip: Ipv4Addr,
}

/// Why a token gets no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Token 0 would take host 1, the gateway's own address.
    #[error("token id 0 maps to the gateway's own address")]
    Reserved,
    /// Past the last usable host of the CIDR or of the slot space.
    #[error("no host address left for this token in the tunnel network")]
    NetworkFull,
}

/// Host index of the gateway itself: the first host of the CIDR.
pub(crate) const GATEWAY_HOST_INDEX: u64 = 1;

impl Network {
    /// The gateway's own tunnel address.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        // A /30 or larger always has host 1.
        self.cidr.host(GATEWAY_HOST_INDEX).unwrap_or(self.cidr.network)
    }

    /// Token `t` takes host `t + 1` (the gateway holds host 1). Deterministic
    /// and stateless, so gateways agree without coordination and a reused
    /// slot always belongs to the same token.
    pub fn place(&self, token_id: TokenId) -> Result<Placement, PlacementError> {
        if token_id == 0 {
            return Err(PlacementError::Reserved);
        }
        let index = u64::try_from(token_id)
            .ok()
            .and_then(|t| t.checked_add(GATEWAY_HOST_INDEX))
            .ok_or(PlacementError::NetworkFull)?;
        if index >= u64::from(gateway_common::MAX_PEER_SLOTS) {
            return Err(PlacementError::NetworkFull);
        }
        let tunnel_ip = self.cidr.host(index).ok_or(PlacementError::NetworkFull)?;
        Ok(Placement { slot: PeerSlot(index as u32), tunnel_ip })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn net(cidr: &str) -> Network {
        Network { cidr: cidr.parse().unwrap(), dns_server: Ipv4Addr::new(10, 0, 0, 1) }
    }

    #[test]
    fn a_zero_prefix_is_judged_without_overflow() {
        // The input the registry fuzzer found (fuzz/corpus/registry keeps it).
        assert!(matches!("10.88.0.24/0".parse::<Ipv4Cidr>(), Err(CidrError::HostBitsSet(_, fixed)) if fixed == "0.0.0.0/0"));
        let all = "0.0.0.0/0".parse::<Ipv4Cidr>().unwrap();
        assert_eq!(all.host(1), Some(Ipv4Addr::new(0, 0, 0, 1)));
        assert_eq!(all.host((1 << 32) - 1), None);
    }

    #[test]
    fn token_n_gets_host_n_plus_one() {
        let n = net("10.88.0.0/24");
        assert_eq!(n.gateway_ip(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(
            n.place(1),
            Ok(Placement { slot: PeerSlot(2), tunnel_ip: Ipv4Addr::new(10, 88, 0, 2) })
        );
        assert_eq!(n.place(253).map(|p| p.tunnel_ip), Ok(Ipv4Addr::new(10, 88, 0, 254)));
        // .255 is the broadcast address.
        assert_eq!(n.place(254), Err(PlacementError::NetworkFull));
        assert_eq!(n.place(0), Err(PlacementError::Reserved));
        assert_eq!(n.place(u128::MAX), Err(PlacementError::NetworkFull));
    }

    #[test]
    fn slots_stay_inside_the_kernel_slot_space() {
        let n = net("10.0.0.0/8");
        let last = u128::from(gateway_common::MAX_PEER_SLOTS) - 2;
        assert_eq!(n.place(last).map(|p| p.slot), Ok(PeerSlot(gateway_common::MAX_PEER_SLOTS - 1)));
        assert_eq!(n.place(last + 1), Err(PlacementError::NetworkFull));
    }

    #[test]
    fn cidr_parsing_is_strict() {
        assert!("10.0.0.0/16".parse::<Ipv4Cidr>().is_ok());
        assert!(matches!("10.0.0.1/16".parse::<Ipv4Cidr>(), Err(CidrError::HostBitsSet(..))));
        assert!(matches!("10.0.0.0/31".parse::<Ipv4Cidr>(), Err(CidrError::TooSmall(31))));
        assert!(matches!("10.0.0.0".parse::<Ipv4Cidr>(), Err(CidrError::Syntax(_))));
        assert!(matches!("10.0.0.0/33".parse::<Ipv4Cidr>(), Err(CidrError::Syntax(_))));
    }

    proptest::proptest! {
        #[test]
        fn placements_are_unique_and_inside_the_network(a in 1u128..70_000, b in 1u128..70_000) {
            let n = net("10.64.0.0/12");
            if let (Ok(pa), Ok(pb)) = (n.place(a), n.place(b)) {
                proptest::prop_assert_eq!(a == b, pa.slot == pb.slot);
                proptest::prop_assert_eq!(a == b, pa.tunnel_ip == pb.tunnel_ip);
                proptest::prop_assert!(pa.tunnel_ip != n.gateway_ip());
                proptest::prop_assert!(pa.slot.0 < gateway_common::MAX_PEER_SLOTS);
            }
        }
    }
}
