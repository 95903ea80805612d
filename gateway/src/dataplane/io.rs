//! The kernel handles the data plane reads and writes: a TUN device (ioctl
//! `TUNSETIFF`) and the WireGuard UDP sockets, IPv4 and IPv6 (I/O edge).

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

use anyhow::{bail, Context};
use ipnet::IpNet;
use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffers that absorb a burst of a fast TCP stream while the loop is
/// busy encrypting; best effort, the kernel clamps them to `net.core.*mem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

pub struct Tun {
    fd: OwnedFd,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name`, non-blocking, raw IP
    /// packets without the packet-information header.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            bail!("interface name {name:?} must be 1 to {} bytes", libc::IFNAMSIZ - 1);
        }
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
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads an ifreq we own for the duration of the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("TUNSETIFF {name}"));
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

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads into a buffer we exclusively borrow, length checked by the kernel.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

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
        let v4 = bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
            .with_context(|| format!("bind UDP 0.0.0.0:{port}"))?;
        let port = v4.local_addr().context("local_addr")?.port();
        let v6 = match bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "no IPv6 listener; IPv4 only");
                None
            }
        };
        Ok(Self { v4, v6 })
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

fn bind_udp(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Best effort: the kernel clamps to its maxima.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Waits until `fd` can take more data, at most `timeout_ms`.
pub fn wait_writable(fd: RawFd, timeout_ms: i32) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}
