//! Undoing the kernel's offloads on packets read from the TUN device (pure):
//! with `TUNSETOFFLOAD` (checksum + TSO) the kernel hands us TCP super-packets
//! of up to 64 KiB with a partial checksum; each must become ordinary,
//! checksummed segments before it is encrypted. One read then yields dozens of
//! equal-sized datagrams, which leave in one UDP GSO send.

use super::vnet::*;


#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OffloadError {
    #[error("GSO type {0} is not one we enabled")]
    UnsupportedGso(u8),
    #[error("packet too short or inconsistent with its virtio header")]
    Malformed,
}

/// Hands `emit` the ordinary packets that `packet` (as read, after its
/// virtio header) stands for: itself with its checksum completed, or its TCP
/// segments. `scratch` holds one segment at a time.
pub fn split(
    hdr: &VnetHdr,
    packet: &mut [u8],
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    match hdr.gso_type {
        VIRTIO_NET_HDR_GSO_NONE => {
            if hdr.needs_csum {
                complete_checksum(packet, hdr.csum_start.into(), hdr.csum_offset.into())?;
            }
            emit(packet);
            Ok(())
        }
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => {
            segment_tcp(packet, usize::from(hdr.gso_size), scratch, &mut emit)
        }
        other => Err(OffloadError::UnsupportedGso(other)),
    }
}

/// Finishes a partial checksum: the field already holds the pseudo-header
/// sum, the rest is summed from `start` to the end.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start + offset;
    if field + 2 > packet.len() {
        return Err(OffloadError::Malformed);
    }
    let csum = internet_checksum(&packet[start..]);
    packet[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

fn segment_tcp(packet: &[u8], mss: usize, scratch: &mut Vec<u8>, emit: &mut impl FnMut(&[u8])) -> Result<(), OffloadError> {
    let v6 = packet.first().ok_or(OffloadError::Malformed)? >> 4 == 6;
    let ip_len = if v6 {
        if packet.get(6) != Some(&IPPROTO_TCP) {
            return Err(OffloadError::Malformed);
        }
        40
    } else {
        usize::from(packet[0] & 0x0f) * 4
    };
    let tcp_len = usize::from(packet.get(ip_len + 12).ok_or(OffloadError::Malformed)? >> 4) * 4;
    let headers = ip_len + tcp_len;
    if mss == 0 || tcp_len < 20 || packet.len() < headers {
        return Err(OffloadError::Malformed);
    }
    let payload = &packet[headers..];
    let first_seq = u32::from_be_bytes([packet[ip_len + 4], packet[ip_len + 5], packet[ip_len + 6], packet[ip_len + 7]]);
    let first_id = u16::from_be_bytes([packet[4], packet[5]]);
    let flags = packet[ip_len + 13];
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        scratch.clear();
        scratch.extend_from_slice(&packet[..headers]);
        scratch.extend_from_slice(chunk);
        let last = i + 1 == count;
        let total = scratch.len();
        if v6 {
            scratch[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            scratch[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            scratch[4..6].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
            scratch[10..12].copy_from_slice(&[0, 0]);
            let csum = internet_checksum(&scratch[..ip_len]);
            scratch[10..12].copy_from_slice(&csum.to_be_bytes());
        }
        let t = ip_len;
        scratch[t + 4..t + 8].copy_from_slice(&first_seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut seg_flags = flags;
        if !last {
            seg_flags &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
        }
        if i > 0 {
            seg_flags &= !TCP_FLAG_CWR;
        }
        scratch[t + 13] = seg_flags;
        scratch[t + 16..t + 18].copy_from_slice(&[0, 0]);
        let csum = tcp_checksum(scratch, ip_len, v6);
        scratch[t + 16..t + 18].copy_from_slice(&csum.to_be_bytes());
        emit(scratch);
    }
    Ok(())
}

/// Full TCP checksum (pseudo header + segment) with the field zeroed.
fn tcp_checksum(packet: &[u8], ip_len: usize, v6: bool) -> u16 {
    let addrs = if v6 { &packet[8..40] } else { &packet[12..20] };
    let tcp_total = (packet.len() - ip_len) as u32;
    let pseudo = sum_words(addrs, u32::from(IPPROTO_TCP) + tcp_total);
    !fold(sum_words(&packet[ip_len..], pseudo))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tcp4(payload_len: usize, flags: u8) -> Vec<u8> {
        let total = 40 + payload_len;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&100u16.to_be_bytes());
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[10, 99, 0, 1]);
        p[16..20].copy_from_slice(&[10, 99, 0, 2]);
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&1000u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    /// A receiver's check: the segment's checksum verifies to zero.
    fn verifies(seg: &[u8]) -> bool {
        let mut c = seg.to_vec();
        let stored = u16::from_be_bytes([c[36], c[37]]);
        c[36..38].copy_from_slice(&[0, 0]);
        tcp_checksum(&c, 20, false) == stored && internet_checksum(&seg[..20]) == 0
    }

    #[test]
    fn a_super_packet_becomes_valid_mss_sized_segments() {
        let mut big = tcp4(3000, 0x10 | TCP_FLAG_PSH | TCP_FLAG_FIN);
        let hdr = VnetHdr { needs_csum: true, gso_type: VIRTIO_NET_HDR_GSO_TCPV4, gso_size: 1400, csum_start: 20, csum_offset: 16 };
        let mut segs = Vec::new();
        split(&hdr, &mut big, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1440, 1440, 240]);
        for (i, s) in segs.iter().enumerate() {
            assert!(verifies(s), "segment {i} checksums");
            assert_eq!(u32::from_be_bytes([s[24], s[25], s[26], s[27]]), 1000 + 1400 * i as u32);
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 100 + i as u16, "IP ids advance");
            let last = i == 2;
            assert_eq!(s[33] & (TCP_FLAG_FIN | TCP_FLAG_PSH) != 0, last, "FIN/PSH only on the last");
        }
        let rejoined: Vec<u8> = segs.iter().flat_map(|s| s[40..].to_vec()).collect();
        assert_eq!(rejoined, big[40..].to_vec());
    }

    #[test]
    fn ipv6_super_packets_are_segmented_too() {
        let payload = 2500;
        let mut p = vec![0u8; 40 + 20 + payload];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        p[6] = IPPROTO_TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&"fd99::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd99::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[44..48].copy_from_slice(&7u32.to_be_bytes());
        p[52] = 5 << 4;
        p[53] = 0x10 | TCP_FLAG_PSH;
        let hdr = VnetHdr { needs_csum: true, gso_type: VIRTIO_NET_HDR_GSO_TCPV6, gso_size: 1000, csum_start: 40, csum_offset: 16 };
        let mut segs = Vec::new();
        split(&hdr, &mut p, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1060, 1060, 560]);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40, "payload length");
            assert_eq!(u32::from_be_bytes([s[44], s[45], s[46], s[47]]), 7 + 1000 * i as u32);
            let mut c = s.clone();
            let stored = u16::from_be_bytes([c[56], c[57]]);
            c[56..58].copy_from_slice(&[0, 0]);
            assert_eq!(tcp_checksum(&c, 40, true), stored);
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut p = tcp4(100, 0x10);
        let expected = tcp_checksum(&p, 20, false);
        // What the kernel leaves: the pseudo-header sum, uncomplemented.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(120u16).to_be_bytes());
        let partial = !internet_checksum(&pseudo);
        p[36..38].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr { needs_csum: true, gso_type: VIRTIO_NET_HDR_GSO_NONE, gso_size: 0, csum_start: 20, csum_offset: 16 };
        let mut out = Vec::new();
        split(&hdr, &mut p, &mut Vec::new(), |s| out.push(s.to_vec())).unwrap();
        assert_eq!(u16::from_be_bytes([out[0][36], out[0][37]]), expected);
    }

    proptest::proptest! {
        /// Whatever the kernel (or a bug) puts in front of us: an error or
        /// packets, never a panic; and the coalescer takes anything too.
        #[test]
        fn arbitrary_headers_and_packets_never_panic(
            hdr in proptest::array::uniform10(proptest::num::u8::ANY),
            mut packet in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
        ) {
            let hdr = VnetHdr::parse(&hdr);
            let mut out = Vec::new();
            let _ = split(&hdr, &mut packet, &mut Vec::new(), |s| out.push(s.len()));
            let mut coalescer = crate::dataplane::gro::Coalescer::default();
            let mut written = 0usize;
            coalescer.push(&packet, &mut |_| written += 1);
            coalescer.flush(&mut |_| written += 1);
            proptest::prop_assert_eq!(written, 1);
        }
    }

    #[test]
    fn unknown_offloads_and_garbage_are_refused() {
        let hdr = VnetHdr { needs_csum: false, gso_type: 3, gso_size: 0, csum_start: 0, csum_offset: 0 };
        assert_eq!(split(&hdr, &mut tcp4(10, 0x10), &mut Vec::new(), |_| {}), Err(OffloadError::UnsupportedGso(3)));
        let hdr = VnetHdr { needs_csum: false, gso_type: VIRTIO_NET_HDR_GSO_TCPV4, gso_size: 0, csum_start: 0, csum_offset: 0 };
        assert_eq!(split(&hdr, &mut tcp4(10, 0x10), &mut Vec::new(), |_| {}), Err(OffloadError::Malformed));
        let hdr = VnetHdr { needs_csum: true, gso_type: 0, gso_size: 0, csum_start: 60, csum_offset: 16 };
        assert_eq!(split(&hdr, &mut tcp4(10, 0x10), &mut Vec::new(), |_| {}), Err(OffloadError::Malformed));
    }
}
