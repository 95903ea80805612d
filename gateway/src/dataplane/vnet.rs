//! The `virtio_net_hdr` that precedes every packet on an `IFF_VNET_HDR` TUN,
//! TCP header constants, and the Internet checksum (pure).

/// `struct virtio_net_hdr` without the v1 `num_buffers` field.
pub const VNET_HDR_LEN: usize = 10;
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

pub const IPPROTO_TCP: u8 = 6;
pub const TCP_FLAG_FIN: u8 = 0x01;
pub const TCP_FLAG_PSH: u8 = 0x08;
pub const TCP_FLAG_ACK: u8 = 0x10;
pub const TCP_FLAG_CWR: u8 = 0x80;
/// The TCP checksum field's offset inside the TCP header.
pub const TCP_CSUM_OFFSET: u16 = 16;

/// The fields of a `virtio_net_hdr` we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub needs_csum: bool,
    pub gso_type: u8,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(bytes: &[u8; VNET_HDR_LEN]) -> Self {
        Self {
            needs_csum: bytes[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
            gso_type: bytes[1] & !VIRTIO_NET_HDR_GSO_ECN,
            gso_size: u16::from_le_bytes([bytes[4], bytes[5]]),
            csum_start: u16::from_le_bytes([bytes[6], bytes[7]]),
            csum_offset: u16::from_le_bytes([bytes[8], bytes[9]]),
        }
    }
}

/// One's-complement sum of big-endian 16-bit words, on top of `initial`.
pub(crate) fn sum_words(bytes: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `bytes` (for tests and callers checking headers).
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    !fold(sum_words(bytes, 0))
}

