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

/// One's-complement sum of big-endian 16-bit words, on top of `initial`
/// (congruent modulo 0xffff; `fold` finishes it). Eight bytes at a time:
/// two 32-bit words summed into 64 bits fold to the same 16-bit sum
/// (RFC 1071, 2.(B)), and this runs over every byte sent.
pub(crate) fn sum_words(bytes: &[u8], initial: u32) -> u32 {
    let mut sum = u64::from(initial);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for c in &mut words {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    // 2^32 is 1 modulo 0xffff: an end-around carry keeps the sum.
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-by-word definition the fast sum must agree with.
    fn sum_by_words(bytes: &[u8], initial: u32) -> u16 {
        let mut sum = u64::from(initial);
        for (i, b) in bytes.iter().enumerate() {
            sum += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn the_fast_sum_agrees_with_the_word_by_word_one() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [0, 1, 2, 7, 8, 9, 15, 20, 40, 1420, 1421, 65535, 70_000] {
            for initial in [0, 6 + 1400, 0xffff_fff0] {
                assert_eq!(fold(sum_words(&data[..len], initial)), sum_by_words(&data[..len], initial), "len {len}");
            }
        }
        assert_eq!(fold(sum_words(&[0xff; 4096], 0)), 0xffff);
    }
}
