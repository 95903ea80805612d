//! Builders for whole Ethernet frames (userspace only: tests, fuzzing, the
//! kernel equivalence test and the XDP benchmark).

extern crate alloc;
use alloc::vec::Vec;

use crate::wire::*;

/// IPv4 or IPv6 endpoints of a frame.
#[derive(Clone, Copy, Debug)]
pub enum Ips {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

/// A UDP datagram inside Ethernet (optionally VLAN-tagged) and IP.
#[derive(Clone, Debug)]
pub struct UdpFrame<'a> {
    pub ips: Ips,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
    /// VLAN tags to put in front of the IP ethertype (outermost first).
    pub vlans: &'a [u16],
    /// IPv4 flags + fragment offset field (0 for a whole datagram).
    pub v4_frag: u16,
    /// Overrides the UDP length field (None: the true length).
    pub udp_len_override: Option<u16>,
}

impl<'a> UdpFrame<'a> {
    pub fn v4(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16, payload: &'a [u8]) -> Self {
        UdpFrame {
            ips: Ips::V4 { src, dst },
            src_port,
            dst_port,
            payload,
            vlans: &[],
            v4_frag: 0,
            udp_len_override: None,
        }
    }

    pub fn v6(src: [u8; 16], src_port: u16, dst: [u8; 16], dst_port: u16, payload: &'a [u8]) -> Self {
        UdpFrame { ips: Ips::V6 { src, dst }, ..Self::v4([0; 4], src_port, [0; 4], dst_port, payload) }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(80 + self.payload.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // src MAC
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() > 1 { ETH_P_8021AD } else { ETH_P_8021Q };
            f.extend_from_slice(&tpid.to_be_bytes());
            // The next two bytes are this tag's TCI; the ethertype follows.
            f.extend_from_slice(&vid.to_be_bytes());
        }
        let udp_len = (UDP_HDR_LEN + self.payload.len()) as u16;
        match self.ips {
            Ips::V4 { src, dst } => {
                f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
                let total = (IPV4_MIN_HDR_LEN as u16) + udp_len;
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&self.v4_frag.to_be_bytes());
                f.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]);
                f.extend_from_slice(&src);
                f.extend_from_slice(&dst);
            }
            Ips::V6 { src, dst } => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&udp_len.to_be_bytes());
                f.extend_from_slice(&[IPPROTO_UDP, 64]);
                f.extend_from_slice(&src);
                f.extend_from_slice(&dst);
            }
        }
        f.extend_from_slice(&self.src_port.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        f.extend_from_slice(&self.udp_len_override.unwrap_or(udp_len).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(self.payload);
        f
    }
}

/// A WireGuard message of `kind` and total length `len`, with the receiver
/// index (for types 2, 3, 4) at its place and a recognisable filler.
pub fn wg_message(kind: u8, receiver_index: u32, len: usize) -> Vec<u8> {
    let mut m = alloc::vec![0u8; len];
    for (i, b) in m.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(29).wrapping_add(3);
    }
    if len >= 4 {
        m[0] = kind;
        m[1] = 0;
        m[2] = 0;
        m[3] = 0;
    }
    let at = match kind {
        WG_HANDSHAKE_RESPONSE => WG_RESPONSE_RECEIVER_OFFSET,
        WG_COOKIE_REPLY => WG_COOKIE_RECEIVER_OFFSET,
        WG_TRANSPORT => WG_TRANSPORT_RECEIVER_OFFSET,
        _ => return m,
    };
    if len >= at + 4 {
        m[at..at + 4].copy_from_slice(&receiver_index.to_le_bytes());
    }
    m
}

/// The userspace model of the kernel maps, for running [`crate::classify`]
/// outside the kernel with the same state and the same direct-mapped tables.
#[derive(Clone, Debug, Default)]
pub struct ModelGate {
    pub allowed_slots: alloc::collections::BTreeSet<u32>,
    pub deny_table: alloc::collections::BTreeMap<u32, crate::DenyEntry>,
    pub buckets: alloc::collections::BTreeMap<u32, crate::RateBucket>,
    /// Must equal the config's `hash_seed`.
    pub seed: u32,
}

impl ModelGate {
    pub fn deny(&mut self, endpoint: crate::EndpointKey, expires_ns: u64) {
        let index = crate::deny_slot_of(&endpoint, self.seed);
        self.deny_table.insert(index, crate::DenyEntry { endpoint, expires_ns, reason: 0, _pad: 0 });
    }
}

impl crate::Gate for ModelGate {
    fn slot_allowed(&self, slot: u32) -> bool {
        slot < crate::MAX_PEER_SLOTS && self.allowed_slots.contains(&slot)
    }
    fn deny_entry(&self, index: u32, endpoint: &crate::EndpointKey) -> Option<crate::DenyEntry> {
        self.deny_table.get(&index).filter(|e| e.endpoint == *endpoint).copied()
    }
    fn bucket_mut(&mut self, index: u32) -> Option<&mut crate::RateBucket> {
        Some(self.buckets.entry(index).or_default())
    }
}
