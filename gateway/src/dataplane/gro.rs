//! TCP receive coalescing for the TUN device (pure): consecutive segments of
//! one TCP flow are merged into one large packet that the kernel takes in a
//! single write as a GSO packet (`IFF_VNET_HDR`), so its TCP stack handles
//! one skb instead of dozens, and the receiver acknowledges less often.
//!
//! The rules follow the kernel's own GRO (`tcp_gro_receive`): same addresses,
//! ports, TTL/hop limit, TOS, ack number and TCP options; in-order sequence
//! numbers; only ACK/PSH flags; equal-sized segments except the last.

use super::vnet::*;

/// An IP packet's length field caps a merged packet.
const MAX_COALESCED: usize = 65535;
/// Merged packets still open at once; beyond this the oldest is closed.
const MAX_OPEN: usize = 16;

/// Where the headers of a TCP packet we could merge sit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Shape {
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
}

impl Shape {
    fn headers(&self) -> usize {
        self.ip_len + self.tcp_len
    }
}

/// A packet is mergeable if it is plain TCP carrying data with only ACK/PSH.
fn shape(packet: &[u8]) -> Option<Shape> {
    let version = packet.first()? >> 4;
    let (v6, ip_len) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
            // Options and fragments are rare; leave them to the kernel as is.
            if ihl != 20 || packet.get(9)? != &IPPROTO_TCP || frag & 0x3fff != 0 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            if total != packet.len() {
                return None;
            }
            (false, 20)
        }
        6 => {
            if packet.len() < 40 || packet[6] != IPPROTO_TCP {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            if payload + 40 != packet.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let tcp_len = usize::from(packet.get(ip_len + 12)? >> 4) * 4;
    if tcp_len < 20 || packet.len() <= ip_len + tcp_len {
        return None;
    }
    let flags = packet[ip_len + 13];
    if flags & !(TCP_FLAG_ACK | TCP_FLAG_PSH) != 0 || flags & TCP_FLAG_ACK == 0 {
        return None;
    }
    Some(Shape { v6, ip_len, tcp_len })
}

fn seq(packet: &[u8], s: &Shape) -> u32 {
    let o = s.ip_len + 4;
    u32::from_be_bytes([packet[o], packet[o + 1], packet[o + 2], packet[o + 3]])
}

/// Whether every header byte that must match between two segments does:
/// everything but the IP length/id/checksum (and v6 payload length), the
/// sequence number, PSH and the TCP checksum.
fn same_flow(a: &[u8], b: &[u8], s: &Shape) -> bool {
    let ip_match = if s.v6 {
        a[..4] == b[..4] && a[6..40] == b[6..40]
    } else {
        // version/IHL, TOS; flags (DF); TTL, protocol; addresses.
        a[..2] == b[..2] && a[6] == b[6] && a[8..10] == b[8..10] && a[12..20] == b[12..20]
    };
    let t = s.ip_len;
    ip_match
        // ports
        && a[t..t + 4] == b[t..t + 4]
        // ack number, data offset
        && a[t + 8..t + 13] == b[t + 8..t + 13]
        // window
        && a[t + 14..t + 16] == b[t + 14..t + 16]
        // options (timestamps included, as the kernel insists)
        && a[t + 20..t + s.tcp_len] == b[t + 20..t + s.tcp_len]
}

struct Open {
    /// Virtio header space, then the merged IP packet.
    buf: Vec<u8>,
    shape: Shape,
    gso_size: usize,
    segments: usize,
    next_seq: u32,
    /// A short segment or PSH ends a merge, as in the kernel.
    closed: bool,
}

/// Collects the decrypted packets of one receive batch, then writes them out
/// (merged where possible) with their virtio headers.
#[derive(Default)]
pub struct Coalescer {
    open: Vec<Open>,
    spare: Vec<Vec<u8>>,
}

impl Coalescer {
    pub fn push(&mut self, packet: &[u8], write: &mut impl FnMut(&[u8])) {
        if let Some(s) = shape(packet) {
            let payload = packet.len() - s.headers();
            let seq_no = seq(packet, &s);
            if let Some(i) = self.open.iter().rposition(|o| o.shape == s && same_flow(&o.buf[VNET_HDR_LEN..], packet, &s)) {
                let open = &mut self.open[i];
                let fits = open.buf.len() - VNET_HDR_LEN + payload <= MAX_COALESCED;
                if !open.closed && open.next_seq == seq_no && payload <= open.gso_size && fits {
                    open.buf.extend_from_slice(&packet[s.headers()..]);
                    open.segments += 1;
                    open.next_seq = seq_no.wrapping_add(payload as u32);
                    let flags = packet[s.ip_len + 13];
                    if flags & TCP_FLAG_PSH != 0 {
                        open.buf[VNET_HDR_LEN + s.ip_len + 13] |= TCP_FLAG_PSH;
                    }
                    open.closed = payload < open.gso_size || flags & TCP_FLAG_PSH != 0;
                    // A merge nothing can extend any more leaves now: the
                    // caller may hold the rest while input keeps coming.
                    if open.closed || open.buf.len() - VNET_HDR_LEN + open.gso_size > MAX_COALESCED {
                        let done = self.open.remove(i);
                        self.emit(done, write);
                    }
                    return;
                }
                // Out of order, after a short segment or full: keep the order
                // the kernel sees by writing what is open for this flow first.
                let done = self.open.remove(i);
                self.emit(done, write);
            }
            if self.open.len() >= MAX_OPEN {
                let oldest = self.open.remove(0);
                self.emit(oldest, write);
            }
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
            buf.extend_from_slice(packet);
            let closed = packet[s.ip_len + 13] & TCP_FLAG_PSH != 0;
            let open = Open { buf, shape: s, gso_size: payload, segments: 1, next_seq: seq_no.wrapping_add(payload as u32), closed };
            if closed {
                self.emit(open, write);
            } else {
                self.open.push(open);
            }
            return;
        }
        // Not TCP data: must not overtake what is queued for its flow, and
        // ordering across flows is cheap to keep, so flush first.
        self.flush(write);
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        buf.extend_from_slice(packet);
        write(&buf);
        self.spare.push(buf);
    }

    /// Whether nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Writes everything still open.
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        let open = std::mem::take(&mut self.open);
        for o in open {
            self.emit(o, write);
        }
    }

    fn emit(&mut self, mut open: Open, write: &mut impl FnMut(&[u8])) {
        if open.segments > 1 {
            finish_merged(&mut open);
        }
        write(&open.buf);
        self.spare.push(open.buf);
    }
}

/// Fixes lengths and checksums of a merged packet and fills in the virtio
/// header asking the kernel to treat it as `gso_size`-sized TCP segments.
fn finish_merged(open: &mut Open) {
    let s = open.shape;
    let (hdr, packet) = open.buf.split_at_mut(VNET_HDR_LEN);
    let tcp_total = packet.len() - s.ip_len;
    if s.v6 {
        packet[4..6].copy_from_slice(&(tcp_total as u16).to_be_bytes());
    } else {
        let total = packet.len() as u16;
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        packet[10..12].copy_from_slice(&[0, 0]);
        let csum = !fold(sum_words(&packet[..20], 0));
        packet[10..12].copy_from_slice(&csum.to_be_bytes());
    }
    // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, uncomplemented.
    let addrs = if s.v6 { &packet[8..40] } else { &packet[12..20] };
    let pseudo = fold(sum_words(addrs, u32::from(IPPROTO_TCP) + tcp_total as u32));
    let c = s.ip_len + usize::from(TCP_CSUM_OFFSET);
    packet[c..c + 2].copy_from_slice(&pseudo.to_be_bytes());
    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    hdr[1] = if s.v6 { VIRTIO_NET_HDR_GSO_TCPV6 } else { VIRTIO_NET_HDR_GSO_TCPV4 };
    hdr[2..4].copy_from_slice(&(s.headers() as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&(open.gso_size as u16).to_le_bytes());
    hdr[6..8].copy_from_slice(&(s.ip_len as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&TCP_CSUM_OFFSET.to_le_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;


    /// An IPv4/TCP segment with a 12-byte timestamp option.
    fn tcp4(seq: u32, payload: &[u8], flags: u8, tsval: u32) -> Vec<u8> {
        let tcp_len = 32;
        let total = 20 + tcp_len + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[10, 99, 0, 2]);
        p[16..20].copy_from_slice(&[10, 99, 0, 1]);
        let c = internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = 20;
        p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        p[t + 12] = (tcp_len as u8 / 4) << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        p[t + 20..t + 24].copy_from_slice(&[1, 1, 8, 10]);
        p[t + 24..t + 28].copy_from_slice(&tsval.to_be_bytes());
        p[t + tcp_len..].copy_from_slice(payload);
        p
    }

    fn run(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut c = Coalescer::default();
        let mut write = |b: &[u8]| out.push(b.to_vec());
        for p in packets {
            c.push(p, &mut write);
        }
        c.flush(&mut write);
        out
    }

    #[test]
    fn consecutive_segments_merge_into_one_gso_packet() {
        let a = tcp4(1000, &[1; 100], TCP_FLAG_ACK, 5);
        let b = tcp4(1100, &[2; 100], TCP_FLAG_ACK, 5);
        let c = tcp4(1200, &[3; 60], TCP_FLAG_ACK | TCP_FLAG_PSH, 5);
        let out = run(&[a, b, c]);
        assert_eq!(out.len(), 1);
        let (hdr, ip) = out[0].split_at(VNET_HDR_LEN);
        assert_eq!(hdr[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(hdr[1], VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(u16::from_le_bytes([hdr[2], hdr[3]]), 52, "headers");
        assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), 100, "gso_size");
        assert_eq!(u16::from_le_bytes([hdr[6], hdr[7]]), 20, "csum_start");
        assert_eq!(ip.len(), 52 + 260);
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum valid");
        assert_eq!(&ip[52..152], &[1; 100][..]);
        assert_eq!(&ip[252..], &[3; 60][..]);
        assert_ne!(ip[20 + 13] & TCP_FLAG_PSH, 0, "PSH carried over");
        // Pseudo-header sum: addresses + protocol + TCP length.
        let expect = fold(sum_words(&ip[12..20], 6 + (ip.len() - 20) as u32));
        assert_eq!(u16::from_be_bytes([ip[36], ip[37]]), expect);
    }

    #[test]
    fn gaps_option_changes_and_non_tcp_are_not_merged() {
        let a = tcp4(1000, &[1; 100], TCP_FLAG_ACK, 5);
        let gap = tcp4(1300, &[2; 100], TCP_FLAG_ACK, 5);
        let new_ts = tcp4(1400, &[2; 100], TCP_FLAG_ACK, 6);
        let out = run(&[a.clone(), gap.clone(), new_ts.clone()]);
        assert_eq!(out.len(), 3);
        for (o, p) in out.iter().zip([&a, &gap, &new_ts]) {
            assert_eq!(&o[..VNET_HDR_LEN], &[0; VNET_HDR_LEN], "single segments need no offload");
            assert_eq!(&o[VNET_HDR_LEN..], &p[..]);
        }
        let mut icmp = a.clone();
        icmp[9] = 1;
        let out = run(&[a.clone(), icmp.clone(), tcp4(1100, &[1; 100], TCP_FLAG_ACK, 5)]);
        assert_eq!(out.len(), 3, "ordering around a non-TCP packet is kept");
        assert_eq!(&out[1][VNET_HDR_LEN..], &icmp[..]);
    }

    #[test]
    fn nothing_is_appended_after_a_short_segment_or_fin() {
        let out = run(&[
            tcp4(1000, &[1; 100], TCP_FLAG_ACK, 5),
            tcp4(1100, &[1; 50], TCP_FLAG_ACK, 5),
            tcp4(1150, &[1; 100], TCP_FLAG_ACK, 5),
        ]);
        assert_eq!(out.len(), 2);
        let out = run(&[tcp4(1000, &[1; 100], TCP_FLAG_ACK, 5), tcp4(1100, &[1; 100], TCP_FLAG_ACK | TCP_FLAG_FIN, 5)]);
        assert_eq!(out.len(), 2);
    }

    /// The I/O loop holds the coalescer open while input keeps coming: a
    /// merge that nothing can extend (full, or ended by PSH) must leave at
    /// once, not wait for the flush.
    #[test]
    fn finished_merges_leave_without_a_flush() {
        let mut c = Coalescer::default();
        let out = std::cell::RefCell::new(Vec::new());
        let mut write = |b: &[u8]| out.borrow_mut().push(b.len());
        for i in 0..70u32 {
            c.push(&tcp4(1000 + i * 1000, &[1; 1000], TCP_FLAG_ACK, 5), &mut write);
        }
        assert_eq!(out.borrow().len(), 1, "the first 64 KiB left when full");
        assert!(out.borrow()[0] - VNET_HDR_LEN <= MAX_COALESCED);
        c.push(&tcp4(71_000, &[1; 1000], TCP_FLAG_ACK | TCP_FLAG_PSH, 5), &mut write);
        assert_eq!(out.borrow().len(), 2, "PSH ended the second merge");
        assert!(c.is_empty());
    }
}
