//! Wire constants: Ethernet, IP, UDP and WireGuard message layouts (pure).

pub const ETH_HDR_LEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
/// 802.1Q and 802.1ad (QinQ) tags; each adds 4 bytes before the real ethertype.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const VLAN_HDR_LEN: usize = 4;
/// We look through at most two VLAN tags (QinQ); deeper stacks are passed.
pub const MAX_VLAN_TAGS: usize = 2;

pub const IPV4_MIN_HDR_LEN: usize = 20;
/// IPv4 flags + fragment offset: More Fragments, and the offset (8-byte units).
pub const IPV4_MF: u16 = 0x2000;
pub const IPV4_OFFSET_MASK: u16 = 0x1fff;
pub const IPV6_HDR_LEN: usize = 40;
pub const IPPROTO_UDP: u8 = 17;
pub const UDP_HDR_LEN: usize = 8;

/// IPv6 extension headers the kernel walks before delivering to UDP
/// (RFC 8200 section 4); every other next-header value ends the chain.
pub const IPV6_EXT_HOP_BY_HOP: u8 = 0;
pub const IPV6_EXT_ROUTING: u8 = 43;
pub const IPV6_EXT_FRAGMENT: u8 = 44;
pub const IPV6_EXT_DEST_OPTS: u8 = 60;
/// The fragment header is 8 bytes; its 16-bit field holds the offset
/// (8-byte units) in the high 13 bits and More Fragments in bit 0.
pub const IPV6_FRAG_HDR_LEN: usize = 8;
pub const IPV6_FRAG_MF: u16 = 0x0001;
/// The walk's bounds: at most this many extension headers, together at most
/// this many bytes. RFC 8200's recommended order has at most six (hop-by-hop,
/// destination options, routing, fragment, AH, destination options); a
/// routing header with 16 SRv6 segments is 264 bytes. Anything longer is a
/// chain the program will not walk (DESIGN.md: dropped when enforcing).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
pub const MAX_IPV6_EXT_BYTES: usize = 512;
/// The furthest a UDP header can start: two VLAN tags, then the larger of a
/// maximal IPv4 header and IPv6 with a maximal extension chain.
pub const MAX_L4_OFFSET: usize = ETH_HDR_LEN + MAX_VLAN_TAGS * VLAN_HDR_LEN + IPV6_HDR_LEN + MAX_IPV6_EXT_BYTES;
/// The furthest byte the classifier reads: the UDP header and a WireGuard
/// receiver index (at most 12 bytes into a message) past `MAX_L4_OFFSET`.
pub const MAX_READ_END: usize = MAX_L4_OFFSET + UDP_HDR_LEN + 16;

/// WireGuard message types (whitepaper section 5.4).
pub const WG_HANDSHAKE_INIT: u8 = 1;
pub const WG_HANDSHAKE_RESPONSE: u8 = 2;
pub const WG_COOKIE_REPLY: u8 = 3;
pub const WG_TRANSPORT: u8 = 4;

/// Exact sizes of the fixed-size messages, and the minimum transport size
/// (16-byte header + 16-byte Poly1305 tag: a keepalive).
pub const WG_HANDSHAKE_INIT_LEN: usize = 148;
pub const WG_HANDSHAKE_RESPONSE_LEN: usize = 92;
pub const WG_COOKIE_REPLY_LEN: usize = 64;
pub const WG_TRANSPORT_MIN_LEN: usize = 32;

/// Where the receiver index sits in each message that carries one.
pub const WG_RESPONSE_RECEIVER_OFFSET: usize = 8;
pub const WG_COOKIE_RECEIVER_OFFSET: usize = 4;
pub const WG_TRANSPORT_RECEIVER_OFFSET: usize = 4;

/// boringtun builds a local session index as `slot << 8 | counter`, so the
/// peer's slot is the index shifted right by this much (DESIGN.md, data plane).
pub const SESSION_INDEX_SLOT_SHIFT: u32 = 8;

/// The peer slot a receiver index names.
#[inline(always)]
pub const fn slot_of_index(receiver_index: u32) -> u32 {
    receiver_index >> SESSION_INDEX_SLOT_SHIFT
}
