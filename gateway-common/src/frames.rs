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

/// An IPv6 extension header to put between the IPv6 header and UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options, `units` 8-byte units beyond the first (padding
    /// options only).
    HopByHop(u8),
    /// A routing header of type 4 (segment routing) with no segments left.
    Routing(u8),
    DestOpts(u8),
    /// A fragment header: offset in 8-byte units, More Fragments, id.
    Fragment { offset: u16, more: bool, id: u32 },
    /// A header the walk does not step over (e.g. 51, AH), with its length
    /// byte set as for the options headers.
    Other(u8, u8),
}

impl ExtHeader {
    fn code(&self) -> u8 {
        match self {
            ExtHeader::HopByHop(_) => IPV6_EXT_HOP_BY_HOP,
            ExtHeader::Routing(_) => IPV6_EXT_ROUTING,
            ExtHeader::DestOpts(_) => IPV6_EXT_DEST_OPTS,
            ExtHeader::Fragment { .. } => IPV6_EXT_FRAGMENT,
            ExtHeader::Other(code, _) => *code,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        match *self {
            ExtHeader::HopByHop(units) | ExtHeader::DestOpts(units) | ExtHeader::Other(_, units) => {
                out.extend_from_slice(&[next, units]);
                let rest = (units as usize + 1) * 8 - 2;
                // Linux refuses more than 7 bytes of padding in a row (RFC
                // 8200: padding only aligns), so a longer header carries one
                // experimental option (RFC 4727, type 0x1e: "skip if unknown").
                let option = if rest <= 7 { 1 } else { 0x1e };
                out.extend_from_slice(&[option, (rest - 2) as u8]);
                out.extend(core::iter::repeat_n(0u8, rest - 2));
            }
            ExtHeader::Routing(units) => {
                out.extend_from_slice(&[next, units, 4, 0]);
                out.extend(core::iter::repeat_n(0u8, (units as usize + 1) * 8 - 4));
            }
            ExtHeader::Fragment { offset, more, id } => {
                let field = (offset << 3) | more as u16;
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&field.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
}

/// A UDP datagram inside Ethernet (optionally VLAN-tagged) and IP.
#[derive(Clone, Debug)]
pub struct UdpFrame<'a> {
    pub ips: Ips,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// VLAN tags to put in front of the IP ethertype (outermost first).
    pub vlans: &'a [u16],
    /// IPv4 flags + fragment offset field (0 for a whole datagram).
    pub v4_frag: u16,
    /// IPv4 identification (low 16 bits) or the id of [`Self::fragments`]'
    /// IPv6 fragment headers.
    pub ip_id: u32,
    /// IPv6 extension headers before the UDP header, in order.
    pub v6_ext: &'a [ExtHeader],
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
            dst_mac: [0x02, 0, 0, 0, 0, 1],
            src_mac: [0x02, 0, 0, 0, 0, 2],
            vlans: &[],
            v4_frag: 0,
            ip_id: 0,
            v6_ext: &[],
            udp_len_override: None,
        }
    }

    pub fn v6(src: [u8; 16], src_port: u16, dst: [u8; 16], dst_port: u16, payload: &'a [u8]) -> Self {
        UdpFrame { ips: Ips::V6 { src, dst }, ..Self::v4([0; 4], src_port, [0; 4], dst_port, payload) }
    }

    /// The UDP header and payload, with a valid checksum (IPv6 requires one;
    /// for IPv4 it is computed too, so a test frame survives a real stack).
    pub fn udp_datagram(&self) -> Vec<u8> {
        let udp_len = (UDP_HDR_LEN + self.payload.len()) as u16;
        let mut d = Vec::with_capacity(udp_len as usize);
        d.extend_from_slice(&self.src_port.to_be_bytes());
        d.extend_from_slice(&self.dst_port.to_be_bytes());
        d.extend_from_slice(&self.udp_len_override.unwrap_or(udp_len).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(self.payload);
        let mut sum = 0u32;
        match self.ips {
            Ips::V4 { src, dst } => {
                sum = add_words(sum, &src);
                sum = add_words(sum, &dst);
            }
            Ips::V6 { src, dst } => {
                sum = add_words(sum, &src);
                sum = add_words(sum, &dst);
            }
        }
        sum += IPPROTO_UDP as u32 + udp_len as u32;
        let check = !fold(add_words(sum, &d));
        // 0 means "no checksum" on the wire; its ones' complement twin is 0xffff.
        let check = if check == 0 { 0xffff } else { check };
        d[6..8].copy_from_slice(&check.to_be_bytes());
        d
    }

    fn l2(&self, ethertype: u16, f: &mut Vec<u8>) {
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() > 1 { ETH_P_8021AD } else { ETH_P_8021Q };
            f.extend_from_slice(&tpid.to_be_bytes());
            // The next two bytes are this tag's TCI; the ethertype follows.
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
    }

    /// One frame carrying `ip_payload` (IPv6: after `ext`, the headers
    /// written in front of it) with IPv4 flags/offset `v4_frag`.
    fn frame(&self, ip_payload: &[u8], v4_frag: u16, ext: &[ExtHeader]) -> Vec<u8> {
        let mut f = Vec::with_capacity(80 + ip_payload.len());
        match self.ips {
            Ips::V4 { src, dst } => {
                self.l2(ETH_P_IPV4, &mut f);
                let total = (IPV4_MIN_HDR_LEN + ip_payload.len()) as u16;
                let mut h = [0u8; IPV4_MIN_HDR_LEN];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[4..6].copy_from_slice(&(self.ip_id as u16).to_be_bytes());
                h[6..8].copy_from_slice(&v4_frag.to_be_bytes());
                h[8] = 64;
                h[9] = IPPROTO_UDP;
                h[12..16].copy_from_slice(&src);
                h[16..20].copy_from_slice(&dst);
                let check = !fold(add_words(0, &h));
                h[10..12].copy_from_slice(&check.to_be_bytes());
                f.extend_from_slice(&h);
            }
            Ips::V6 { src, dst } => {
                self.l2(ETH_P_IPV6, &mut f);
                let mut chain = Vec::new();
                for (i, e) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(IPPROTO_UDP, ExtHeader::code);
                    e.write(next, &mut chain);
                }
                let first = ext.first().map_or(IPPROTO_UDP, ExtHeader::code);
                let payload_len = (chain.len() + ip_payload.len()) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&payload_len.to_be_bytes());
                f.extend_from_slice(&[first, 64]);
                f.extend_from_slice(&src);
                f.extend_from_slice(&dst);
                f.extend_from_slice(&chain);
            }
        }
        f.extend_from_slice(ip_payload);
        f
    }

    pub fn build(&self) -> Vec<u8> {
        self.frame(&self.udp_datagram(), self.v4_frag, self.v6_ext)
    }

    /// The bytes `[start, end)` of the UDP datagram as one IP fragment at
    /// offset `start` (a multiple of 8), with More Fragments `more`: IPv4
    /// fragments of id `ip_id`, or IPv6 with `v6_ext` then a fragment header.
    /// Any ranges, overlapping ones included.
    pub fn fragment(&self, start: usize, end: usize, more: bool) -> Vec<u8> {
        self.fragment_of(&self.udp_datagram(), start, end, more)
    }

    /// The same as [`Self::fragment`], cut from other datagram bytes (a
    /// fragment crafted to overlap another with different contents).
    pub fn fragment_of(&self, datagram: &[u8], start: usize, end: usize, more: bool) -> Vec<u8> {
        let end = end.min(datagram.len());
        let piece = &datagram[start.min(end)..end];
        let offset = (start / 8) as u16;
        match self.ips {
            Ips::V4 { .. } => {
                let field = if more { IPV4_MF } else { 0 } | (offset & IPV4_OFFSET_MASK);
                self.frame(piece, field, &[])
            }
            Ips::V6 { .. } => {
                let mut ext: Vec<ExtHeader> = self.v6_ext.to_vec();
                ext.push(ExtHeader::Fragment { offset, more, id: self.ip_id });
                self.frame(piece, 0, &ext)
            }
        }
    }

    /// The datagram cut at `cuts` (increasing multiples of 8), in order:
    /// how a router with a small MTU fragments it.
    pub fn fragments(&self, cuts: &[usize]) -> Vec<Vec<u8>> {
        let len = self.udp_datagram().len();
        let mut bounds: Vec<usize> = alloc::vec![0];
        bounds.extend(cuts.iter().copied().filter(|c| *c > 0 && *c < len));
        bounds.push(len);
        bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| self.fragment(w[0], w[1], i + 2 < bounds.len()))
            .collect()
    }
}

/// Ones' complement sum of big-endian 16-bit words (odd tail zero-padded).
fn add_words(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
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
    /// The fragment table, the same direct-mapped slots as the kernel's.
    pub fragments: alloc::collections::BTreeMap<u32, crate::FragSlot>,
    /// The live-endpoint table, direct-mapped as the kernel's.
    pub live: alloc::collections::BTreeMap<u32, crate::LiveEndpoint>,
    /// The unproven budget (one CPU's bucket).
    pub unproven: crate::RateBucket,
    /// Must equal the config's `hash_seed`.
    pub seed: u32,
}

impl ModelGate {
    pub fn deny(&mut self, endpoint: crate::EndpointKey, expires_ns: u64) {
        let index = crate::deny_slot_of(&endpoint, self.seed);
        self.deny_table.insert(index, crate::DenyEntry { endpoint, expires_ns, reason: 0, _pad: 0 });
    }

    /// Marks `endpoint` live until `expires_ns`, as the daemon does.
    pub fn mark_live(&mut self, endpoint: crate::EndpointKey, expires_ns: u64) {
        let index = crate::live_slot_of(&endpoint, self.seed);
        self.live.insert(index, crate::LiveEndpoint::new(endpoint, expires_ns));
    }
}

impl crate::Gate for ModelGate {
    fn fragment(&self, index: u32, key: &crate::FragKey) -> Option<crate::FragEntry> {
        self.fragments.get(&index).filter(|s| s.key == *key).map(|s| s.entry)
    }
    fn record_fragment(&mut self, index: u32, key: &crate::FragKey, entry: crate::FragEntry) {
        self.fragments.insert(index, crate::FragSlot { key: *key, entry });
    }
    fn slot_allowed(&self, slot: u32) -> bool {
        slot < crate::MAX_PEER_SLOTS && self.allowed_slots.contains(&slot)
    }
    fn deny_entry(&self, index: u32, endpoint: &crate::EndpointKey) -> Option<crate::DenyEntry> {
        self.deny_table.get(&index).filter(|e| e.endpoint == *endpoint).copied()
    }
    fn bucket_mut(&mut self, index: u32) -> Option<&mut crate::RateBucket> {
        Some(self.buckets.entry(index).or_default())
    }
    fn live_mut(&mut self, index: u32, endpoint: &crate::EndpointKey) -> Option<(u64, &mut crate::RateBucket)> {
        self.live.get_mut(&index).filter(|e| e.endpoint == *endpoint).map(|e| (e.expires_ns, &mut e.bucket))
    }
    fn unproven_bucket_mut(&mut self) -> Option<&mut crate::RateBucket> {
        Some(&mut self.unproven)
    }
}
