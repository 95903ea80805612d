//! Which worker's socket the kernel hands a WireGuard datagram to (a classic
//! BPF program for `SO_ATTACH_REUSEPORT_CBPF`; building it is pure, attaching
//! it is the one system call here).
//!
//! A session index is `slot << 8 | counter`, and the worker that owns a
//! peer is `slot % workers`, so every message that carries a receiver index
//! (handshake response, cookie reply, transport data) can go straight to the
//! owner's socket: the program reads `receiver_index >> 8` (bytes 5..8 of
//! types 3 and 4, bytes 9..12 of type 2, little endian) and returns
//! `slot % workers`, the socket's position in the reuseport group. A
//! handshake initiation carries no receiver index (the initiator's key is
//! encrypted): the program returns an out-of-range index, which makes the
//! kernel fall back to its 4-tuple hash, so a flood of initiations from many
//! sources spreads over all workers and one source stays on one worker; the
//! worker that decrypts the initiator's key hands it to the owner. The
//! program runs on the UDP payload (the kernel pulls the UDP header first);
//! a datagram too short for a load ends the program with 0 (worker 0),
//! which drops it as malformed.

use std::io;
use std::os::fd::AsRawFd;

/// WireGuard's message type that carries no receiver index.
const HANDSHAKE_INITIATION: u32 = 1;
const HANDSHAKE_RESPONSE: u32 = 2;
/// Any index at or past the group's size means "use the hash".
const USE_THE_HASH: u32 = u32::MAX;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

/// `A = slot % workers` for the receiver index at byte `at`: the slot is the
/// index's upper three bytes, assembled from the most significant down.
fn slot_mod(at: u32, workers: u32) -> [libc::sock_filter; 11] {
    use libc::{BPF_ABS, BPF_ALU, BPF_B, BPF_K, BPF_LD, BPF_LSH, BPF_MISC, BPF_MOD, BPF_OR, BPF_RET, BPF_TAX, BPF_X};
    [
        stmt(BPF_LD | BPF_B | BPF_ABS, at + 3),
        stmt(BPF_ALU | BPF_LSH | BPF_K, 8),
        stmt(BPF_MISC | BPF_TAX, 0),
        stmt(BPF_LD | BPF_B | BPF_ABS, at + 2),
        stmt(BPF_ALU | BPF_OR | BPF_X, 0),
        stmt(BPF_ALU | BPF_LSH | BPF_K, 8),
        stmt(BPF_MISC | BPF_TAX, 0),
        stmt(BPF_LD | BPF_B | BPF_ABS, at + 1),
        stmt(BPF_ALU | BPF_OR | BPF_X, 0),
        stmt(BPF_ALU | BPF_MOD | BPF_K, workers),
        stmt(BPF_RET | 0x10 /* BPF_A */, 0),
    ]
}

/// The steering program for a reuseport group of `workers` sockets.
pub fn program(workers: u32) -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET};
    let transport = slot_mod(4, workers);
    let response = slot_mod(8, workers);
    let mut prog = vec![
        stmt(BPF_LD | BPF_B | BPF_ABS, 0),
        // Initiation: fall through to "use the hash"; else skip it.
        jump(BPF_JMP | BPF_JEQ | BPF_K, HANDSHAKE_INITIATION, 0, 1),
        stmt(BPF_RET | BPF_K, USE_THE_HASH),
        // Response: skip the transport block; else fall into it.
        jump(BPF_JMP | BPF_JEQ | BPF_K, HANDSHAKE_RESPONSE, transport.len() as u8, 0),
    ];
    prog.extend_from_slice(&transport);
    prog.extend_from_slice(&response);
    prog
}

/// Attaches [`program`] to the reuseport group `socket` belongs to (one
/// socket of the group is enough; the kernel keeps it with the group).
pub fn attach(socket: &impl AsRawFd, workers: u32) -> io::Result<()> {
    let mut filter = program(workers);
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: setsockopt reads the sock_fprog and the filter array it points
    // at, both alive for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    fn reuseport_group(n: usize) -> Vec<UdpSocket> {
        let mut port = 0;
        (0..n)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
                s.set_reuse_port(true).unwrap();
                s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
                let s: UdpSocket = s.into();
                port = s.local_addr().unwrap().port();
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                s
            })
            .collect()
    }

    fn message(kind: u8, receiver_at: usize, index: u32, len: usize) -> Vec<u8> {
        let mut m = vec![0u8; len];
        m[0] = kind;
        m[receiver_at..receiver_at + 4].copy_from_slice(&index.to_le_bytes());
        m
    }

    /// The real kernel picks the owner's socket by the receiver index's slot.
    #[test]
    fn the_kernel_hands_each_message_to_its_slots_worker() {
        let workers = 3;
        let group = reuseport_group(workers);
        attach(&group[0], workers as u32).unwrap();
        let to = group[0].local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cases = [
            (message(4, 4, 7 << 8 | 3, 64), 7 % workers),
            (message(4, 4, 0x01_0203 << 8 | 9, 64), 0x01_0203 % workers),
            (message(3, 4, 5 << 8, 64), 5 % workers),
            (message(2, 8, 11 << 8 | 1, 92), 11 % workers),
        ];
        for (datagram, expected) in cases {
            sender.send_to(&datagram, to).unwrap();
            let mut buf = [0u8; 256];
            let got: Vec<usize> = group.iter().enumerate().filter(|(_, s)| s.recv(&mut buf).is_ok()).map(|(i, _)| i).collect();
            assert_eq!(got, vec![expected], "type {} went to the wrong worker", datagram[0]);
        }
        // Initiations: whichever the hash says, but always exactly one.
        sender.send_to(&message(1, 4, 0xdead_beef, 148), to).unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(group.iter().filter(|s| s.recv(&mut buf).is_ok()).count(), 1);
    }
}
