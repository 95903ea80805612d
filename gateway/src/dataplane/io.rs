//! The kernel handles the data plane reads and writes (I/O edge): a
//! multi-queue TUN device (ioctl `TUNSETIFF` with virtio headers and TSO, so
//! TCP moves in 64 KiB packets both ways; one queue per worker) and the
//! WireGuard UDP sockets, IPv4 and IPv6, one pair per worker in a
//! `SO_REUSEPORT` group steered by the peer's slot (see `steer`), read with
//! `recvmmsg` + UDP GRO and written with UDP GSO. Each datagram comes with
//! the local address it was sent to, and replies can name their source
//! address (`IP_PKTINFO`), so a gateway holding a floating address answers
//! from it.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

use anyhow::{bail, Context};
use ipnet::IpNet;
use socket2::{Domain, Protocol, Socket, Type};

use super::vnet::{VnetHdr, VNET_HDR_LEN};

/// Socket buffers that absorb a burst of a fast TCP stream while the loop is
/// busy encrypting.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

pub struct Tun {
    fd: OwnedFd,
    name: String,
}

impl Tun {
    /// Creates the TUN interface `name` with `queues` queues (one file
    /// descriptor each), non-blocking, raw IP packets without the
    /// packet-information header. The kernel spreads what it sends over the
    /// queues by flow, and sends a flow's packets to the queue that last
    /// wrote that flow (`tun_automq_select_queue`).
    pub fn create_queues(name: &str, queues: usize) -> anyhow::Result<Vec<Self>> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            bail!("interface name {name:?} must be 1 to {} bytes", libc::IFNAMSIZ - 1);
        }
        (0..queues.max(1)).map(|_| Self::open_queue(name)).collect()
    }

    fn open_queue(name: &str) -> anyhow::Result<Self> {
        let path = CString::new("/dev/net/tun").context("tun path")?;
        // SAFETY: plain open(2) on a NUL-terminated path; the result is checked.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("open /dev/net/tun");
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // IFF_VNET_HDR: every packet carries a `virtio_net_hdr`, which lets us
        // hand the kernel merged TCP segments (see `gro`) and take TCP
        // super-packets from it (see `gso`).
        // IFF_MULTI_QUEUE: each worker reads and writes a queue of its own.
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE) as libc::c_short;
        // SAFETY: TUNSETIFF reads an ifreq we own for the duration of the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("TUNSETIFF {name}"));
        }
        // Checksum offload and TSO: the kernel skips segmenting and
        // checksumming what it sends us; `gso::split` does it in one pass
        // with the copy we need anyway. Best effort: without it we get plain
        // packets.
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offloads as libc::c_ulong) } < 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "TUN offloads unavailable");
        }
        Ok(Self { fd, name: name.to_owned() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the MTU and addresses and brings the link up (iproute2, run in the
    /// caller's network namespace).
    pub fn configure(&self, mtu: u16, addresses: &[IpNet]) -> anyhow::Result<()> {
        run_ip(&["link", "set", "dev", &self.name, "mtu", &mtu.to_string()])?;
        for address in addresses {
            run_ip(&["address", "add", &address.to_string(), "dev", &self.name])?;
        }
        run_ip(&["link", "set", "dev", &self.name, "up"])
    }

    /// Reads one packet into `buf`; returns its virtio header and the IP
    /// packet's range in `buf`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<(VnetHdr, std::ops::Range<usize>)> {
        // SAFETY: reads into a buffer we exclusively borrow, length checked by the kernel.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let Some(hdr) = buf.first_chunk::<VNET_HDR_LEN>() else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "short TUN read"));
        };
        Ok((VnetHdr::parse(hdr), VNET_HDR_LEN..n))
    }

    /// Writes one packet that already starts with its virtio header.
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: writes from a borrowed buffer of the given length.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The listening sockets: IPv4 always, IPv6 when the host has it, on one port.
pub struct UdpSockets {
    pub v4: UdpSocket,
    pub v6: Option<UdpSocket>,
}

impl UdpSockets {
    /// Binds both families to `port` (0: the kernel picks one for IPv4 and
    /// IPv6 takes the same).
    pub fn bind(port: u16) -> anyhow::Result<Self> {
        let mut group = Self::bind_group(port, 1)?;
        group.pop().context("no socket bound")
    }

    /// `workers` pairs of sockets on one port, one pair per worker: with more
    /// than one, an `SO_REUSEPORT` group per family whose steering program
    /// (`steer`) hands each datagram to the worker that owns its peer. If the
    /// kernel refuses the program the hash decides and the workers hand
    /// datagrams to each other, slower but correct.
    pub fn bind_group(port: u16, workers: usize) -> anyhow::Result<Vec<Self>> {
        let workers = workers.max(1);
        let reuse = workers > 1;
        let first = bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), reuse)
            .with_context(|| format!("bind UDP 0.0.0.0:{port}"))?;
        let port = first.local_addr().context("local_addr")?.port();
        let mut v4 = vec![first];
        for _ in 1..workers {
            v4.push(bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), reuse).with_context(|| format!("bind UDP 0.0.0.0:{port}"))?);
        }
        let mut v6: Vec<UdpSocket> = Vec::new();
        for _ in 0..workers {
            match bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), reuse) {
                Ok(s) => v6.push(s),
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "no IPv6 listener; IPv4 only");
                    v6.clear();
                    break;
                }
            }
        }
        if reuse {
            for group in [v4.first(), v6.first()].into_iter().flatten() {
                if let Err(err) = super::steer::attach(group, workers as u32) {
                    tracing::warn!(error = %err, "no reuseport steering; workers hand datagrams to each other");
                }
            }
        }
        let mut v6 = v6.into_iter();
        Ok(v4.into_iter().map(|v4| Self { v4, v6: v6.next() }).collect())
    }

    pub fn port(&self) -> anyhow::Result<u16> {
        Ok(self.v4.local_addr().context("local_addr")?.port())
    }

    pub fn for_destination(&self, to: &SocketAddr) -> Option<&UdpSocket> {
        match to {
            SocketAddr::V4(_) => Some(&self.v4),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }
}

fn bind_udp(addr: SocketAddr, reuse_port: bool) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    // As root (CAP_NET_ADMIN) the *BUFFORCE variants pass the sysctl caps,
    // whose defaults (~200 KiB) overflow within a millisecond at line rate.
    set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER_BYTES as libc::c_int);
    set_int_option(&socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER_BYTES as libc::c_int);
    // The late gate (if the daemon installed it) before bind: nothing queues unfiltered.
    crate::xdp::late_gate::attach(&socket)?;
    socket.bind(&addr.into())?;
    // UDP GRO: the kernel hands us runs of same-sized datagrams from one
    // source as one buffer (split again in `UdpBatch`).
    set_int_option(&socket, libc::SOL_UDP, libc::UDP_GRO, 1);
    // The local address each datagram was sent to (see `UdpBatch::for_each`).
    if addr.is_ipv6() {
        set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1);
    } else {
        set_int_option(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    }
    Ok(socket.into())
}

/// Datagrams per UDP GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes per UDP GSO send: one UDP datagram's worth.
const GSO_MAX_BYTES: usize = 65000;
/// Messages per `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// A run of datagrams to one destination from one source address, all
/// `segment` bytes long but the last.
struct SendRun {
    to: SocketAddr,
    /// The source address to send from; `None`: the kernel's choice.
    from: Option<IpAddr>,
    start: usize,
    len: usize,
    segment: usize,
    count: usize,
}

/// Outgoing datagrams queued during one batch and sent with UDP GSO: a run of
/// equal-sized datagrams to one endpoint is one message, and the messages of
/// a flush leave in as few `sendmmsg` calls as the socket families allow.
pub struct SendQueue {
    /// Datagrams back to back in `buf[..used]`; `buf` keeps its length
    /// between flushes, so encrypting into it needs no zeroing first.
    buf: Vec<u8>,
    used: usize,
    runs: Vec<SendRun>,
    /// Datagrams per message at most: the burst one message puts on the
    /// wire at once (and the unit a full receive buffer drops whole).
    max_segments: usize,
    /// Set when the kernel refused `UDP_SEGMENT`; then one send per datagram.
    gso_unsupported: bool,
    /// Datagrams longer than this go out alone: the kernel refuses a GSO
    /// message whose segments exceed the route's MTU (EMSGSIZE) but
    /// fragments a lone datagram. A node whose tunnel MTU is 1500 (no
    /// wg-quick) sends 1,532-byte datagrams, which forwarded to another
    /// node were all dropped in GSO runs before this limit was learned.
    gso_segment_limit: usize,
    /// `sendmmsg` arguments, kept between flushes to reuse their memory.
    addrs: Vec<socket2::SockAddr>,
    iovecs: Vec<libc::iovec>,
    controls: Vec<[u64; SEND_CMSG_SPACE / 8]>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Default for SendQueue {
    fn default() -> Self {
        Self::new(GSO_MAX_SEGMENTS)
    }
}

impl SendQueue {
    /// `max_segments`: datagrams per GSO message, 1 to [`GSO_MAX_SEGMENTS`].
    pub fn new(max_segments: usize) -> Self {
        Self {
            buf: Vec::new(),
            used: 0,
            runs: Vec::new(),
            max_segments: max_segments.clamp(1, GSO_MAX_SEGMENTS),
            gso_unsupported: false,
            gso_segment_limit: usize::MAX,
            addrs: Vec::new(),
            iovecs: Vec::new(),
            controls: Vec::new(),
            hdrs: Vec::new(),
        }
    }

    pub fn push(&mut self, to: SocketAddr, from: Option<IpAddr>, datagram: &[u8]) {
        let start = self.reserve(datagram.len());
        self.buf[start..start + datagram.len()].copy_from_slice(datagram);
        self.used += datagram.len();
        self.add_run(to, from, start, datagram.len());
    }

    /// Room for `n` more bytes after `used`; returns where they start.
    fn reserve(&mut self, n: usize) -> usize {
        if self.buf.len() < self.used + n {
            self.buf.resize(self.used + n, 0);
        }
        self.used
    }

    /// Queues the datagram `fill` writes into a slice of at least `room`
    /// bytes at the end of the queue's buffer (encryption straight into the
    /// send buffer, no copy); `fill` returns its length (0: nothing to send).
    pub fn push_with(&mut self, to: SocketAddr, from: Option<IpAddr>, room: usize, fill: impl FnOnce(&mut [u8]) -> usize) {
        let start = self.reserve(room);
        let len = fill(&mut self.buf[start..start + room]).min(room);
        self.used += len;
        if len > 0 {
            self.add_run(to, from, start, len);
        }
    }

    fn add_run(&mut self, to: SocketAddr, from: Option<IpAddr>, start: usize, len: usize) {
        if let Some(run) = self.runs.last_mut() {
            let ends_with_full = run.len == run.segment * run.count;
            if !self.gso_unsupported
                && run.to == to
                && run.from == from
                && ends_with_full
                && len <= run.segment
                && run.segment <= self.gso_segment_limit
                && run.count < self.max_segments
                && run.len + len <= GSO_MAX_BYTES
            {
                run.len += len;
                run.count += 1;
                return;
            }
        }
        self.runs.push(SendRun { to, from, start, len, segment: len, count: 1 });
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes queued: callers flush before this grows past what one batch
    /// should hold.
    pub fn queued_bytes(&self) -> usize {
        self.used
    }

    /// Sends everything queued. A full socket buffer gets one short wait;
    /// after that the rest of the message is dropped, as a NIC would. A source
    /// address this host no longer holds (a floating address that moved to
    /// the other gateway) fails the send: nothing leaves from another address,
    /// which would make the node roam away from the floating one.
    pub fn flush(&mut self, sockets: &UdpSockets) {
        let runs = std::mem::take(&mut self.runs);
        let mut first = 0;
        while first < runs.len() {
            // Consecutive runs of one family share a socket and a call.
            let v6 = runs[first].to.is_ipv6();
            let end = runs[first..]
                .iter()
                .position(|r| r.to.is_ipv6() != v6)
                .map_or(runs.len(), |n| first + n)
                .min(first + SEND_BATCH);
            if let Some(socket) = sockets.for_destination(&runs[first].to) {
                self.send_runs(socket, &runs[first..end]);
            }
            first = end;
        }
        self.runs = runs;
        self.runs.clear();
        self.used = 0;
    }

    /// One `sendmmsg` for `runs` (all to `socket`'s family), then whatever
    /// the kernel did not take: a message it refused is retried alone.
    fn send_runs(&mut self, socket: &UdpSocket, runs: &[SendRun]) {
        let n = runs.len();
        self.addrs.clear();
        self.addrs.extend(runs.iter().map(|r| socket2::SockAddr::from(r.to)));
        self.iovecs.resize(n, libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        self.controls.resize(n, [0u64; SEND_CMSG_SPACE / 8]);
        // SAFETY: mmsghdr is plain old data; zero is a valid value.
        self.hdrs.resize(n, unsafe { std::mem::zeroed() });
        for (i, run) in runs.iter().enumerate() {
            let data = &self.buf[run.start..run.start + run.len];
            self.iovecs[i] = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
            let segment = (run.count > 1).then_some(run.segment);
            // SAFETY: every pointer refers to this queue's vectors, which are
            // not resized again before the call below.
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: unsafe { fill_msghdr(&self.addrs[i], &mut self.iovecs[i], &mut self.controls[i], run.from, segment) },
                msg_len: 0,
            };
        }
        let mut sent = 0;
        let mut waited = false;
        while sent < n {
            // SAFETY: hdrs[sent..n] point at live buffers of the stated sizes.
            let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), self.hdrs[sent..].as_mut_ptr(), (n - sent) as libc::c_uint, 0) };
            if rc > 0 {
                sent += rc as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock && !waited {
                waited = true;
                wait_writable(socket.as_raw_fd(), 5);
                continue;
            }
            self.send_refused(socket, &runs[sent], err);
            sent += 1;
        }
    }

    /// The kernel refused one message with `err`. A GSO message whose
    /// segments exceed the MTU (EMSGSIZE) goes out datagram by datagram;
    /// otherwise one whose datagrams go out one by one tells a kernel
    /// without `UDP_SEGMENT` from a source address that is gone.
    fn send_refused(&mut self, socket: &UdpSocket, run: &SendRun, err: io::Error) {
        tracing::debug!(to = %run.to, error = %err, "UDP send failed");
        let data = &self.buf[run.start..run.start + run.len];
        if run.count >= 2 && err.raw_os_error() == Some(libc::EMSGSIZE) {
            // Segments above the MTU: alone, the kernel fragments them.
            self.gso_segment_limit = self.gso_segment_limit.min(run.segment - 1);
            for d in data.chunks(run.segment) {
                let _ = send_with_retry(socket, run.to, || send_msg(socket, run.to, run.from, d, None));
            }
            return;
        }
        if run.count < 2 || !matches!(err.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)) {
            return;
        }
        let mut singles_sent = false;
        for d in data.chunks(run.segment) {
            singles_sent |= send_with_retry(socket, run.to, || send_msg(socket, run.to, run.from, d, None)).is_ok();
        }
        if singles_sent {
            tracing::info!(error = %err, "UDP GSO unavailable; sending datagrams one by one");
            self.gso_unsupported = true;
        }
    }
}

fn send_with_retry(socket: &UdpSocket, to: SocketAddr, mut send: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    match send() {
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
            wait_writable(socket.as_raw_fd(), 5);
            send()
        }
        Err(err) => {
            tracing::debug!(%to, error = %err, "UDP send failed");
            Err(err)
        }
        ok => ok,
    }
}

/// One `sendmsg` of `data` to `to`: from source address `from` if given
/// (`IP_PKTINFO` / `IPV6_PKTINFO`), as `segment`-sized datagrams if given
/// (`UDP_SEGMENT`).
fn send_msg(socket: &UdpSocket, to: SocketAddr, from: Option<IpAddr>, data: &[u8], segment: Option<usize>) -> io::Result<()> {
    if from.is_none() && segment.is_none() {
        return socket.send_to(data, to).map(drop);
    }
    let addr = socket2::SockAddr::from(to);
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut control = [0u64; SEND_CMSG_SPACE / 8];
    // SAFETY: the header points at `addr`, `iov` and `control`, all alive
    // until after the call.
    let n = unsafe {
        let msg = fill_msghdr(&addr, &mut iov, &mut control, from, segment);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A `msghdr` for one message of `iov` to `addr`, from source address
/// `from` if given, as `segment`-sized datagrams if given.
///
/// # Safety
/// The header points at `addr`, `iov` and `control`: they must outlive its use.
unsafe fn fill_msghdr(
    addr: &socket2::SockAddr,
    iov: &mut libc::iovec,
    control: &mut [u64; SEND_CMSG_SPACE / 8],
    from: Option<IpAddr>,
    segment: Option<usize>,
) -> libc::msghdr {
    // SAFETY: msghdr is plain old data; every pointer set below is the caller's.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    if from.is_none() && segment.is_none() {
        return msg;
    }
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = SEND_CMSG_SPACE as _;
    let mut used = 0usize;
    // SAFETY: CMSG_* walk the control buffer we were given, sized for both
    // messages (SEND_CMSG_SPACE); each payload is written within its CMSG_LEN.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        let source = match from {
            Some(IpAddr::V4(src)) => Some(write_cmsg(
                cmsg,
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(src.octets()) },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                },
            )),
            Some(IpAddr::V6(src)) => Some(write_cmsg(
                cmsg,
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: src.octets() }, ipi6_ifindex: 0 },
            )),
            None => None,
        };
        if let Some(space) = source {
            used += space;
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if let Some(segment) = segment {
            used += write_cmsg(cmsg, libc::SOL_UDP, libc::UDP_SEGMENT, segment as u16);
        }
    }
    msg.msg_controllen = used as _;
    msg
}

/// Writes one control message (`level`, `kind`, `value`) at `cmsg`; returns
/// the space it takes.
///
/// # Safety
/// `cmsg` points into a control buffer with room for `CMSG_SPACE` of `T`.
unsafe fn write_cmsg<T>(cmsg: *mut libc::cmsghdr, level: libc::c_int, kind: libc::c_int, value: T) -> usize {
    let size = std::mem::size_of::<T>() as u32;
    // SAFETY: the caller guarantees the room; the payload is written unaligned.
    unsafe {
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<T>(), value);
        libc::CMSG_SPACE(size) as usize
    }
}

/// Best effort: an option the kernel refuses only costs speed.
fn set_int_option(socket: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt with a pointer to an int we own and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(level, name, error = %io::Error::last_os_error(), "setsockopt refused");
    }
}

/// Messages per `recvmmsg`; each may hold a GRO run of up to 64 KiB.
pub const RECV_BATCH: usize = 32;
const RECV_BUF: usize = 65536;
/// Room for the control messages of one received message: UDP_GRO (an int)
/// and IP_PKTINFO or IPV6_PKTINFO (12 or 20 bytes), each behind a 16-byte
/// cmsghdr, 8-byte aligned.
const CMSG_SPACE: usize = 128;
/// The same for a send: a pktinfo and a UDP_SEGMENT (u16).
const SEND_CMSG_SPACE: usize = 128;

/// Buffers for receiving up to [`RECV_BATCH`] messages in one `recvmmsg`.
pub struct UdpBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    cmsgs: Vec<[u64; CMSG_SPACE / 8]>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

impl Default for UdpBatch {
    fn default() -> Self {
        // SAFETY: these C structs are plain old data; zero is a valid value.
        let zeroed_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zeroed_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            bufs: (0..RECV_BATCH).map(|_| vec![0u8; RECV_BUF]).collect(),
            addrs: vec![zeroed_addr; RECV_BATCH],
            iovecs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; RECV_BATCH],
            cmsgs: vec![[0u64; CMSG_SPACE / 8]; RECV_BATCH],
            hdrs: vec![zeroed_hdr; RECV_BATCH],
            received: 0,
        }
    }
}

impl UdpBatch {
    /// Receives what is queued (non-blocking); returns how many messages.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for i in 0..RECV_BATCH {
            self.iovecs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: RECV_BUF };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            hdr.msg_controllen = CMSG_SPACE as _;
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.received = 0;
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// Calls `f` for every datagram of the last `recv`, GRO runs split back
    /// into their datagrams: its source, the local address it was sent to
    /// (where replies should come from), and its bytes.
    pub fn for_each(&self, mut f: impl FnMut(SocketAddr, Option<IpAddr>, &[u8])) {
        for i in 0..self.received {
            let Some(from) = sockaddr_to_std(&self.addrs[i]) else { continue };
            let data = &self.bufs[i][..self.hdrs[i].msg_len as usize];
            let control = ReceivedControl::parse(&self.hdrs[i].msg_hdr);
            let segment = control.gro_segment.unwrap_or(data.len()).max(1);
            for datagram in data.chunks(segment) {
                f(from, control.local, datagram);
            }
        }
    }
}

/// What the kernel said about a received message besides its bytes.
#[derive(Default)]
struct ReceivedControl {
    /// UDP GRO: the run's datagram size.
    gro_segment: Option<usize>,
    /// The message's destination address (one of ours).
    local: Option<IpAddr>,
}

impl ReceivedControl {
    fn parse(hdr: &libc::msghdr) -> Self {
        let mut out = ReceivedControl::default();
        // SAFETY: walks the control buffer the kernel filled, with the libc
        // macros; each payload is read unaligned at its type's size.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                let data = libc::CMSG_DATA(cmsg);
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::SOL_UDP, libc::UDP_GRO) => {
                        out.gro_segment = usize::try_from(std::ptr::read_unaligned(data.cast::<libc::c_int>())).ok();
                    }
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        // The local address, not the header's destination
                        // (which may be a broadcast address).
                        let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                        out.local = Some(IpAddr::V4(Ipv4Addr::from(info.ipi_spec_dst.s_addr.to_ne_bytes())));
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        out.local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        out
    }
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Waits until `fd` can take more data, at most `timeout_ms`.
pub fn wait_writable(fd: RawFd, timeout_ms: i32) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// GSO sends from the data plane's socket arrive as separate datagrams of
    /// the right sizes, and a batched receive splits GRO runs back apart.
    #[test]
    fn gso_sends_and_batched_receives_round_trip_over_loopback() {
        let sockets = UdpSockets::bind(0).unwrap();
        let receiver = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let to = receiver.local_addr().unwrap();
        let mut queue = SendQueue::default();
        let sizes = [1200usize, 1200, 1200, 700, 1200, 64];
        for (i, size) in sizes.iter().enumerate() {
            queue.push(to, None, &vec![i as u8; *size]);
        }
        // Equal sizes then a short one form a run; the short one closes it.
        assert_eq!(queue.runs.iter().map(|r| r.count).collect::<Vec<_>>(), vec![4, 2]);
        queue.flush(&sockets);
        assert!(queue.is_empty());

        let mut batch = UdpBatch::default();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < sizes.len() && std::time::Instant::now() < deadline {
            if batch.recv(&receiver).is_ok() {
                batch.for_each(|from, _, d| got.push((from, d.to_vec())));
            } else {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, sockets.port().unwrap()));
        assert_eq!(got.len(), sizes.len());
        for (i, (src, d)) in got.iter().enumerate() {
            assert_eq!(*src, from);
            assert_eq!(d.len(), sizes[i]);
            assert!(d.iter().all(|b| *b == i as u8));
        }
    }

    /// A burst bound splits a run of equal datagrams into messages of at
    /// most that many; encrypting into the queue (`push_with`) joins runs
    /// like a copy does, and a fill that writes nothing queues nothing.
    #[test]
    fn bursts_are_bounded_and_filled_datagrams_join_runs() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut queue = SendQueue::new(4);
        for _ in 0..6 {
            queue.push(to, None, &[7u8; 100]);
        }
        for _ in 0..4 {
            queue.push_with(to, None, 1500, |buf| {
                buf[..100].fill(8);
                100
            });
        }
        queue.push_with(to, None, 1500, |_| 0);
        assert_eq!(queue.runs.iter().map(|r| r.count).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(queue.queued_bytes(), 1000);
        assert!(queue.buf[600..1000].iter().all(|b| *b == 8));
    }

    /// Every address of 127.0.0.0/8 is local: a datagram sent to 127.0.0.2
    /// says so, a reply from it leaves from it (GSO runs too), and a reply
    /// from an address this host does not hold leaves from nowhere else.
    #[test]
    fn replies_leave_from_the_address_the_peer_wrote_to() {
        let sockets = UdpSockets::bind(0).unwrap();
        let port = sockets.port().unwrap();
        // A plain socket: one datagram per read (no GRO).
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"hello", ("127.0.0.2", port)).unwrap();
        let mut batch = UdpBatch::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut local = None;
        while local.is_none() && std::time::Instant::now() < deadline {
            if batch.recv(&sockets.v4).is_ok() {
                batch.for_each(|_, to, _| local = to);
            } else {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let local = local.unwrap();
        assert_eq!(local, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));

        let to = peer.local_addr().unwrap();
        let mut queue = SendQueue::default();
        queue.push(to, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))), b"from an address not ours");
        queue.push(to, Some(local), &[1u8; 300]);
        queue.push(to, Some(local), &[2u8; 300]);
        queue.flush(&sockets);
        peer.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        for expected in [1u8, 2] {
            let (n, src) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (300, expected));
            assert_eq!(src, SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port)));
        }
        peer.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
        assert!(peer.recv_from(&mut buf).is_err(), "nothing else arrived");
        assert!(!queue.gso_unsupported, "a refused source address is not a GSO failure");
    }
}
