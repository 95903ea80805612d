//! The gate has no side doors, tried against the real kernel: a hostile
//! namespace on the gateway's LAN writes hand-built Ethernet frames with
//! `AF_PACKET` (not through the socket API, so nothing the stack would fix
//! up) for every class that could slip past a naive verdict: IPv4 fragments
//! in order, reversed and overlapping, first fragments cut inside the UDP
//! or the WireGuard header, IPv6 extension-header chains, IPv6 fragments
//! and atomic fragments. For a closed slot or a denied endpoint nothing may
//! reach the data plane (its receive and handshake counters stay flat, and
//! the XDP counter of the expected verdict moves); the same frames for the
//! open slot of a real `wireguard-go` node do arrive, except where the
//! class is dropped for everyone by design (docs/RELIABILITY.md).
//!
//! The same holds where XDP cannot see: frames written on a second
//! interface of the gateway's namespace (no XDP there) and on its loopback
//! meet the late gate at the WireGuard sockets, after the kernel reassembled
//! them; there the late gate's counters move.
//!
//! A second test runs that node behind a link with a small MTU, so its
//! outer packets are fragmented on the way: the tunnel keeps working.

use anyhow::{ensure, Context, Result};
use gateway::xdp::{monotonic_now_ns, PinnedMaps};
use gateway_common::frames::{wg_message, ExtHeader, UdpFrame};
use gateway_common::XdpVerdict;
use gateway_tests::lab::{attach_to_lan, Lab};
use gateway_tests::netns::{wait_for, Netns, VethPair};
use gateway_tests::skip::require_root;
use gateway_tests::wg::{Keypair, TUNNEL_PREFIX, WG_PORT};
use std::time::Duration;

/// Token 1 holds host 2 of the tunnel network, hence peer slot 2.
const OPEN_SLOT: u32 = 2;
const CLOSED_SLOT: u32 = 77;
/// IPv6 on the LAN, added by the test (the lab is IPv4 only).
const HOSTILE_IP6: &str = "fd00:201::66";
const GATEWAY_IP6: &str = "fd00:201::1";
/// The second interface: a veth from the hostile namespace straight into
/// the gateway's, with no XDP program on it.
const SIDE_HOSTILE: &str = "10.202.0.66";
const SIDE_GATEWAY: &str = "10.202.0.1";
const SIDE_HOSTILE6: &str = "fd00:202::66";
const SIDE_GATEWAY6: &str = "fd00:202::1";
const FREE_PORT: u16 = 40000;
const DENIED_PORT: u16 = 40001;

/// What the data plane counts when a datagram from the network reaches it:
/// its drop reasons on the receive path, every refused or cookie-answered
/// handshake, and the takeovers a packet for a granted slot without a
/// session sets off. Garbage for the open slot starts a takeover (or lands
/// in `decrypt_error`), garbage initiations land in `invalid_mac`.
/// (`no_route` counts packets from the TUN side, which the kernel writes on
/// its own; abandoned takeovers are counted by a timer.)
const RECEIVE_SERIES: [&str; 10] = [
    r#"gw_wireguard_takeovers_total{result="initiated"}"#,
    r#"gw_wireguard_takeovers_total{result="rate_limited"}"#,
    r#"gw_wireguard_takeovers_total{result="disabled"}"#,
    r#"gw_wireguard_dropped_total{reason="malformed"}"#,
    r#"gw_wireguard_dropped_total{reason="unknown_slot"}"#,
    r#"gw_wireguard_dropped_total{reason="decrypt_error"}"#,
    r#"gw_wireguard_dropped_total{reason="spoofed_source"}"#,
    r#"gw_wireguard_handshakes_total{result="rejected"}"#,
    r#"gw_wireguard_handshakes_total{result="cookie_reply"}"#,
    r#"gw_wireguard_handshakes_total{result="invalid_mac"}"#,
];

fn userspace_work(lab: &Lab) -> Result<f64> {
    let (_, body) = lab.http_get("/metrics")?;
    let mut sum = 0.0;
    for series in RECEIVE_SERIES {
        let line = body.lines().find(|l| l.starts_with(series)).with_context(|| format!("{series} in /metrics"))?;
        sum += line.rsplit(' ').next().context("sample value")?.parse::<f64>()?;
    }
    Ok(sum)
}

fn xdp(lab: &Lab, verdict: XdpVerdict) -> Result<u64> {
    Ok(PinnedMaps::open_instance(&lab.instance)?.stats.read()?.get(verdict))
}

fn late_gate(lab: &Lab, verdict: XdpVerdict) -> Result<u64> {
    Ok(PinnedMaps::open_instance(&lab.instance)?.late_stats.read()?.get(verdict))
}

/// The MAC address of `iface` in `ns`.
fn mac_of(ns: &Netns, iface: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-o", "link", "show", "dev", iface])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hex = text.split("link/").nth(1).and_then(|s| s.split_whitespace().nth(1)).context("link address")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(hex.split(':')) {
        *byte = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

/// Writes `frames` on `iface` in `ns` through an `AF_PACKET` socket, as they are.
fn inject(ns: &Netns, iface: &str, frames: Vec<Vec<u8>>) -> Result<()> {
    let iface = iface.to_string();
    ns.within(move || {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let name = std::ffi::CString::new(iface.clone())?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(ifindex != 0, "no interface {iface}");
        // SAFETY: plain socket(2); owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        ensure!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for frame in frames {
            // SAFETY: zeroed sockaddr_ll is valid; the fields set below.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_ifindex = ifindex as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: the frame and the address are valid for the call.
            let sent = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&to as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            ensure!(sent == frame.len() as isize, "sendto: {}", std::io::Error::last_os_error());
        }
        Ok(())
    })
}

/// One class: the frames aimed at a closed slot or from a denied endpoint,
/// the same frames aimed at the open slot, whether the open ones reach the
/// data plane, and the XDP verdict the closed ones must be counted under.
struct Class {
    name: &'static str,
    closed: Vec<Vec<u8>>,
    open: Vec<Vec<u8>>,
    open_arrives: bool,
    closed_verdict: XdpVerdict,
}

/// Where the frames come from and go to: a namespace, the interface they
/// are written on, the MAC and IP addresses they carry.
struct Hostile {
    ns: Netns,
    iface: String,
    gw_mac: [u8; 6],
    my_mac: [u8; 6],
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    src6: std::net::Ipv6Addr,
    dst6: std::net::Ipv6Addr,
    /// IPv4 through a UDP socket instead: the kernel refuses IPv4 to
    /// 127.0.0.0/8 arriving on `lo` without a route attached (martian
    /// destination), so local IPv4 traffic can only come by the socket API,
    /// which loops it through `lo` with its route.
    ipv4_by_socket: bool,
}

impl Hostile {
    fn v4<'a>(&self, src_port: u16, msg: &'a [u8], id: u32) -> UdpFrame<'a> {
        let mut f = UdpFrame::v4(self.src.octets(), src_port, self.dst.octets(), WG_PORT, msg);
        f.dst_mac = self.gw_mac;
        f.src_mac = self.my_mac;
        f.ip_id = id;
        f
    }

    fn v6<'a>(&self, src_port: u16, msg: &'a [u8], id: u32) -> UdpFrame<'a> {
        let mut f = UdpFrame::v6(self.src6.octets(), src_port, self.dst6.octets(), WG_PORT, msg);
        f.dst_mac = self.gw_mac;
        f.src_mac = self.my_mac;
        f.ip_id = id;
        f
    }

    fn denied(&self) -> [std::net::SocketAddr; 2] {
        [
            std::net::SocketAddr::new(self.src.into(), DENIED_PORT),
            std::net::SocketAddr::new(self.src6.into(), DENIED_PORT),
        ]
    }
}

/// What XDP cannot see: the kernel reassembles, then the late gate at the
/// sockets judges the whole datagram.
fn late_classes(h: &Hostile) -> Vec<Class> {
    let mut classes = all_late_classes(h);
    if h.ipv4_by_socket {
        // A socket sends whole datagrams: IPv4 fragments over loopback are
        // left to IPv6 (written on `lo` as frames) and to the other interface.
        classes.retain(|c| c.name != "IPv4 fragments in order");
    }
    classes
}

fn all_late_classes(h: &Hostile) -> Vec<Class> {
    use ExtHeader::*;
    let closed_msg = wg_message(4, CLOSED_SLOT << 8, 400);
    let open_msg = wg_message(4, OPEN_SLOT << 8, 400);
    let init = wg_message(1, 0, 148);
    let mut closed_chain = h.v6(FREE_PORT, &closed_msg, 0);
    closed_chain.v6_ext = &[HopByHop(0), DestOpts(1)];
    let mut open_chain = h.v6(FREE_PORT, &open_msg, 0);
    open_chain.v6_ext = &[HopByHop(0), DestOpts(1)];
    vec![
        Class {
            name: "transport",
            closed: vec![h.v4(FREE_PORT, &closed_msg, 0).build()],
            open: vec![h.v4(FREE_PORT, &open_msg, 0).build()],
            open_arrives: true,
            closed_verdict: XdpVerdict::DropUnknownSlot,
        },
        Class {
            name: "IPv4 fragments in order",
            closed: h.v4(FREE_PORT, &closed_msg, 3001).fragments(&[120, 240]),
            open: h.v4(FREE_PORT, &open_msg, 3002).fragments(&[120, 240]),
            open_arrives: true,
            closed_verdict: XdpVerdict::DropUnknownSlot,
        },
        Class {
            name: "initiation from a denied endpoint",
            closed: vec![h.v4(DENIED_PORT, &init, 0).build()],
            open: vec![h.v4(FREE_PORT, &init, 0).build()],
            open_arrives: true,
            closed_verdict: XdpVerdict::DropDeniedEndpoint,
        },
        Class {
            name: "IPv6 extension-header chain",
            closed: vec![closed_chain.build()],
            open: vec![open_chain.build()],
            open_arrives: true,
            closed_verdict: XdpVerdict::DropUnknownSlot,
        },
        Class {
            name: "IPv6 fragments in order",
            closed: h.v6(FREE_PORT, &closed_msg, 3003).fragments(&[120, 240]),
            open: h.v6(FREE_PORT, &open_msg, 3004).fragments(&[120, 240]),
            open_arrives: true,
            closed_verdict: XdpVerdict::DropUnknownSlot,
        },
        Class {
            name: "IPv6 initiation from a denied endpoint",
            closed: vec![h.v6(DENIED_PORT, &init, 0).build()],
            open: vec![h.v6(FREE_PORT, &init, 0).build()],
            open_arrives: true,
            closed_verdict: XdpVerdict::DropDeniedEndpoint,
        },
    ]
}

/// Every class, built for both targets. Ids differ per datagram so no class
/// finds another's fragment record.
fn classes(h: &Hostile) -> Vec<Class> {
    use ExtHeader::*;
    let closed_msg = wg_message(4, CLOSED_SLOT << 8, 400);
    let open_msg = wg_message(4, OPEN_SLOT << 8, 400);
    let init = wg_message(1, 0, 148);
    let response_closed = wg_message(2, CLOSED_SLOT << 8, 92);
    let response_open = wg_message(2, OPEN_SLOT << 8, 92);
    let cuts = [120usize, 240];
    let mut out = Vec::new();

    out.push(Class {
        name: "IPv4 fragments in order (transport)",
        closed: h.v4(FREE_PORT, &closed_msg, 1001).fragments(&cuts),
        open: h.v4(FREE_PORT, &open_msg, 1002).fragments(&cuts),
        open_arrives: true,
        closed_verdict: XdpVerdict::DropFragmentFirstDropped,
    });
    out.push(Class {
        name: "IPv4 fragments in order (initiation)",
        closed: h.v4(DENIED_PORT, &init, 1003).fragments(&[64]),
        open: h.v4(FREE_PORT, &init, 1004).fragments(&[64]),
        open_arrives: true,
        closed_verdict: XdpVerdict::DropDeniedEndpoint,
    });
    let reversed = |mut v: Vec<Vec<u8>>| {
        v.reverse();
        v
    };
    // The later fragments come before the one they depend on: dropped as
    // never seen, so the datagram never completes, whatever its slot.
    out.push(Class {
        name: "IPv4 fragments reversed",
        closed: reversed(h.v4(FREE_PORT, &closed_msg, 1005).fragments(&cuts)),
        open: reversed(h.v4(FREE_PORT, &open_msg, 1006).fragments(&cuts)),
        open_arrives: false,
        closed_verdict: XdpVerdict::DropFragmentNeverSeen,
    });
    // The attack: the first fragment names the open slot (and passes); an
    // overlapping second one rewrites the receiver index to the closed
    // slot, with the UDP checksum right for the rewritten datagram. Linux
    // discards overlapping datagrams (RFC 5722; IPv4 since 4.19), so
    // nothing arrives; exact duplicates are ignored and the open datagram
    // completes.
    {
        let target = h.v4(FREE_PORT, &closed_msg, 1007);
        let wanted = target.udp_datagram();
        let mut decoy = wanted.clone();
        decoy[12..16].copy_from_slice(&(OPEN_SLOT << 8).to_le_bytes());
        let len = wanted.len();
        let open = h.v4(FREE_PORT, &open_msg, 1008);
        out.push(Class {
            name: "IPv4 fragments overlapping (receiver index rewritten)",
            closed: vec![
                target.fragment_of(&decoy, 0, 48, true),
                target.fragment_of(&wanted, 8, 64, true),
                target.fragment_of(&wanted, 64, len, false),
            ],
            open: vec![open.fragment(0, 48, true), open.fragment(0, 48, true), open.fragment(48, len, false)],
            open_arrives: true,
            closed_verdict: XdpVerdict::PassFragment,
        });
    }
    {
        let closed = h.v4(FREE_PORT, &closed_msg, 1009);
        let open = h.v4(FREE_PORT, &open_msg, 1010);
        let len = closed.udp_datagram().len();
        out.push(Class {
            name: "IPv4 first fragment cut inside the UDP header",
            closed: vec![closed.fragment(0, 4, true), closed.fragment(8, len, false)],
            open: vec![open.fragment(0, 4, true), open.fragment(8, len, false)],
            open_arrives: false,
            closed_verdict: XdpVerdict::DropFragmentTooShort,
        });
    }
    {
        // 16 bytes show a response's type but not its receiver index.
        let closed = h.v4(FREE_PORT, &response_closed, 1011);
        let open = h.v4(FREE_PORT, &response_open, 1012);
        out.push(Class {
            name: "IPv4 first fragment cut inside the WireGuard header",
            closed: closed.fragments(&[16]),
            open: open.fragments(&[16]),
            open_arrives: false,
            closed_verdict: XdpVerdict::DropFragmentFirstDropped,
        });
    }
    let build_with = |mut f: UdpFrame<'_>, ext: &'static [ExtHeader]| {
        f.v6_ext = ext;
        f.build()
    };
    out.push(Class {
        name: "IPv6 extension-header chain (hop-by-hop, destination options x2)",
        closed: vec![build_with(h.v6(FREE_PORT, &closed_msg, 0), &[HopByHop(0), DestOpts(1), DestOpts(0)])],
        open: vec![build_with(h.v6(FREE_PORT, &open_msg, 0), &[HopByHop(0), DestOpts(1), DestOpts(0)])],
        open_arrives: true,
        closed_verdict: XdpVerdict::DropUnknownSlot,
    });
    out.push(Class {
        name: "IPv6 extension-header chain the walk refuses (7 headers)",
        closed: vec![build_with(h.v6(FREE_PORT, &closed_msg, 0), &[DestOpts(0); 7])],
        open: vec![build_with(h.v6(FREE_PORT, &open_msg, 0), &[DestOpts(0); 7])],
        open_arrives: false,
        closed_verdict: XdpVerdict::DropExtHeaderUnwalkable,
    });
    out.push(Class {
        name: "IPv6 fragments in order",
        closed: h.v6(FREE_PORT, &closed_msg, 2001).fragments(&cuts),
        open: h.v6(FREE_PORT, &open_msg, 2002).fragments(&cuts),
        open_arrives: true,
        closed_verdict: XdpVerdict::DropFragmentFirstDropped,
    });
    {
        let mut closed = h.v6(FREE_PORT, &closed_msg, 2003);
        closed.v6_ext = &[HopByHop(0)];
        let mut open = h.v6(FREE_PORT, &open_msg, 2004);
        open.v6_ext = &[HopByHop(0)];
        out.push(Class {
            name: "IPv6 fragments behind a hop-by-hop header, reversed",
            closed: reversed(closed.fragments(&cuts)),
            open: reversed(open.fragments(&cuts)),
            open_arrives: false,
            closed_verdict: XdpVerdict::DropFragmentNeverSeen,
        });
    }
    out.push(Class {
        name: "IPv6 initiation fragments from a denied endpoint",
        closed: h.v6(DENIED_PORT, &init, 2005).fragments(&[64]),
        open: h.v6(FREE_PORT, &init, 2006).fragments(&[64]),
        open_arrives: true,
        closed_verdict: XdpVerdict::DropFragmentFirstDropped,
    });
    out.push(Class {
        name: "IPv6 atomic fragment (offset 0, no more fragments)",
        closed: vec![build_with(h.v6(FREE_PORT, &closed_msg, 0), &[Fragment { offset: 0, more: false, id: 2007 }])],
        open: vec![build_with(h.v6(FREE_PORT, &open_msg, 0), &[Fragment { offset: 0, more: false, id: 2008 }])],
        open_arrives: true,
        closed_verdict: XdpVerdict::DropUnknownSlot,
    });
    out
}

/// Sends `frames` and says whether the data plane saw any of them.
/// Sends the UDP datagrams of IPv4 `frames` (whole, unfragmented) through a
/// socket bound to their source, to their destination, from inside `ns`.
fn send_by_socket(ns: &Netns, frames: Vec<Vec<u8>>) -> Result<()> {
    ns.within(move || {
        for f in frames {
            let ihl = ((f[14] & 0x0f) as usize) * 4;
            let udp = 14 + ihl;
            let at = |o: usize| std::net::Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
            let (src, dst) = (at(14 + 12), at(14 + 16));
            let sport = u16::from_be_bytes([f[udp], f[udp + 1]]);
            let dport = u16::from_be_bytes([f[udp + 2], f[udp + 3]]);
            let socket = std::net::UdpSocket::bind((src, sport))?;
            socket.send_to(&f[udp + 8..], (dst, dport))?;
        }
        Ok(())
    })
}

fn reaches_userspace(lab: &Lab, h: &Hostile, frames: &[Vec<u8>], expect: bool) -> Result<bool> {
    let before = userspace_work(lab)?;
    let is_v4 = |f: &Vec<u8>| f.get(12..14) == Some(&[0x08, 0x00][..]);
    if h.ipv4_by_socket && frames.iter().all(is_v4) {
        send_by_socket(&h.ns, frames.to_vec())?;
    } else {
        inject(&h.ns, &h.iface, frames.to_vec())?;
    }
    if expect {
        let seen = wait_for("the data plane counts the datagram", Duration::from_secs(5), || {
            Ok((userspace_work(lab)? > before).then_some(()))
        });
        return Ok(seen.is_ok());
    }
    // What gets through reaches the socket within microseconds; the data
    // plane counts it as soon as it reads it.
    std::thread::sleep(Duration::from_millis(500));
    Ok(userspace_work(lab)? > before)
}

/// The gateway enforcing, one `wireguard-go` node minted on chain (token 1,
/// slot 2) and connected.
fn lab_with_a_node() -> Result<(Lab, gateway_tests::wg::WgGoNode)> {
    let mut lab = Lab::new(1)?;
    let keys = Keypair::generate(lab.dir.path(), "a")?;
    lab.node_cli(0, &["mint", gateway_tests::lab::DEV_ADDRESSES[1], "node-a", "--pubkey", &keys.public, "--json"])?;
    lab.start_gateway("")?;
    let node = lab.start_node(0, keys, &format!("{TUNNEL_PREFIX}.2"))?;
    ensure!(lab.ping(0, &format!("{TUNNEL_PREFIX}.1"), Duration::from_secs(20)), "the node reaches the gateway");
    Ok((lab, node))
}

#[test]
fn no_frame_class_slips_past_the_verdict() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (lab, _node) = lab_with_a_node()?;
    ensure!(PinnedMaps::open_instance(&lab.instance)?.allow.is_open(OPEN_SLOT)?, "the node's slot is open");

    let ns = Netns::new("hst")?;
    let iface = attach_to_lan(&lab.lan, &ns, "10.201.0.66/24")?;
    ns.ip(&["-6", "addr", "add", &format!("{HOSTILE_IP6}/64"), "dev", &iface, "nodad"])?;
    lab.gw.ip(&["-6", "addr", "add", &format!("{GATEWAY_IP6}/64"), "dev", &lab.gateway_iface, "nodad"])?;
    let lan = Hostile {
        gw_mac: mac_of(&lab.gw, &lab.gateway_iface)?,
        my_mac: mac_of(&ns, &iface)?,
        src: "10.201.0.66".parse()?,
        dst: gateway_tests::lab::GATEWAY_LAN_IP.parse()?,
        src6: HOSTILE_IP6.parse()?,
        dst6: GATEWAY_IP6.parse()?,
        ipv4_by_socket: false,
        iface,
        ns,
    };
    // Another interface into the gateway's namespace, which XDP does not guard.
    let side_ns = Netns::new("hss")?;
    let side = VethPair::connect(&side_ns, &format!("{SIDE_HOSTILE}/24"), &lab.gw, &format!("{SIDE_GATEWAY}/24"))?;
    side_ns.ip(&["-6", "addr", "add", &format!("{SIDE_HOSTILE6}/64"), "dev", &side.a, "nodad"])?;
    lab.gw.ip(&["-6", "addr", "add", &format!("{SIDE_GATEWAY6}/64"), "dev", &side.b, "nodad"])?;
    let other_iface = Hostile {
        gw_mac: mac_of(&lab.gw, &side.b)?,
        my_mac: mac_of(&side_ns, &side.a)?,
        src: SIDE_HOSTILE.parse()?,
        dst: SIDE_GATEWAY.parse()?,
        src6: SIDE_HOSTILE6.parse()?,
        dst6: SIDE_GATEWAY6.parse()?,
        ipv4_by_socket: false,
        iface: side.a.clone(),
        ns: side_ns,
    };
    // A local process on the gateway's host writing on its loopback.
    let loopback = Hostile {
        gw_mac: [0; 6],
        my_mac: [0; 6],
        src: std::net::Ipv4Addr::LOCALHOST,
        dst: std::net::Ipv4Addr::LOCALHOST,
        src6: std::net::Ipv6Addr::LOCALHOST,
        dst6: std::net::Ipv6Addr::LOCALHOST,
        ipv4_by_socket: true,
        iface: "lo".into(),
        ns: Netns::existing(lab.gw.name()),
    };
    {
        let mut maps = PinnedMaps::open_instance(&lab.instance)?;
        let until = monotonic_now_ns() + 600_000_000_000;
        for h in [&lan, &other_iface, &loopback] {
            for endpoint in h.denied() {
                maps.deny.deny(endpoint, until, 0)?;
            }
        }
    }

    type Counter = fn(&Lab, XdpVerdict) -> Result<u64>;
    let paths: [(&str, &Hostile, Vec<Class>, Counter); 3] = [
        ("LAN (XDP)", &lan, classes(&lan), xdp),
        ("another interface (late gate)", &other_iface, late_classes(&other_iface), late_gate),
        ("loopback (late gate)", &loopback, late_classes(&loopback), late_gate),
    ];
    let mut failures = Vec::new();
    for (path, hostile, classes, counter) in paths {
        for class in classes {
            let name = format!("{path}: {}", class.name);
            let verdict_before = counter(&lab, class.closed_verdict)?;
            if reaches_userspace(&lab, hostile, &class.closed, false)? {
                failures.push(format!("{name}: the closed-slot/denied frames reached the data plane"));
            }
            if counter(&lab, class.closed_verdict)? <= verdict_before {
                failures.push(format!("{name}: never counted {}", class.closed_verdict.name()));
            }
            let arrived = reaches_userspace(&lab, hostile, &class.open, class.open_arrives)?;
            if arrived != class.open_arrives {
                failures.push(format!("{name}: open-slot frames arrived: {arrived}, expected {}", class.open_arrives));
            }
            eprintln!("{name}: closed held back, open arrived: {arrived}");
        }
    }
    ensure!(failures.is_empty(), "side doors:\n{}", failures.join("\n"));
    Ok(())
}

#[test]
fn a_node_behind_a_small_mtu_link_keeps_working() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (lab, node) = lab_with_a_node()?;
    let gw_ip = format!("{TUNNEL_PREFIX}.1");

    // A 1280-byte link on both ends of the LAN: the tunnel's 1420-byte
    // packets become outer datagrams of up to 1480 bytes, which each side
    // fragments (WireGuard does not set DF).
    let node_lan = lab.nodes[0].ip(&["-o", "-4", "addr", "show", "to", "10.201.0.0/24"])?;
    let node_iface = String::from_utf8_lossy(&node_lan.stdout).split_whitespace().nth(1).context("node LAN iface")?.to_string();
    lab.nodes[0].ip(&["link", "set", &node_iface, "mtu", "1280"])?;
    lab.gw.ip(&["link", "set", &lab.gateway_iface, "mtu", "1280"])?;
    let before = xdp(&lab, XdpVerdict::PassFragment)?;
    let big = lab.nodes[0].exec("ping", &["-c", "3", "-W", "2", "-s", "1350", "-M", "dont", &gw_ip]);
    ensure!(big.is_ok(), "1350-byte pings through the tunnel over a 1280-byte link: {big:?}");
    let after = xdp(&lab, XdpVerdict::PassFragment)?;
    ensure!(after > before, "the outer packets were fragmented and XDP passed the later fragments ({before} -> {after})");
    // And the ordinary traffic still flows.
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(5)), "small pings still pass");
    drop(node);
    Ok(())
}
