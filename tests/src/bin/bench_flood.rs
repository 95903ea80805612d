//! `cargo xtask bench flood`: how much legitimate throughput a server keeps
//! while an attacker floods its WireGuard port, and what the flood costs it.
//!
//! One LAN (a bridge in a namespace), an attacker namespace on it, and three
//! servers, each with its own wireguard-go client running iperf3 through it:
//! the gateway (`gateway run`, the node minted on anvil, XDP enforcing), a
//! wireguard-go server and a boringtun-cli server. For each server an
//! unflooded run, then one run under each flood:
//! - `unknown-index`: transport packets to a receiver index no session has;
//! - `denied-init`: handshake initiations from one endpoint (on the gateway,
//!   an endpoint its XDP deny list holds, as after a rejection);
//! - `spoofed-init`: handshake initiations from random spoofed sources (raw socket);
//!   on the gateway also `spoofed-init-unbounded`, the same with the
//!   unproven budget off (every spoofed source gets a fresh per-source
//!   bucket, as before the budget), for the before/after of the same run.
//!
//! Then a node minted before the flood starts its first handshake with the
//! gateway during a spoofed flood: how long it took, and how many of the
//! flood's initiations the unproven budget dropped meanwhile.
//!
//! The generator sends batches with sendmmsg from two threads as fast as it can.
//!
//! The attacker shares the machine's two cores with the servers, so even a
//! server the flood costs nothing loses throughput to it: the sending, the
//! bridge and the receive path all run in softirq on the same cores. The
//! anchor row (`drop-all-sink`) measures that ceiling: the gateway's own flow
//! while the same flood goes to a sink elsewhere on the LAN whose interface
//! drops every packet at the first XDP instruction (`anchor_drop_count`, the
//! bare-drop anchor of `bench xdp`).
//!
//! Besides throughput kept, each run reports the server's CPU (during iperf3,
//! and for a few seconds of the flood alone, which is what the flood itself
//! costs it), the machine's softirq time, the flood's rate, the packets the
//! gateway's XDP dropped, packets lost before reaching the server and the
//! legitimate flow's TCP retransmissions. `--server NAME` runs one row only.

use std::io::Write as _;
use anyhow::{Context, Result};
use gateway::xdp::PinnedMaps;
use gateway_common::{XdpVerdict, ANCHOR_DROP_COUNT};
use gateway_tests::lab::{attach_to_lan, Lab, DEV_ADDRESSES};
use gateway_tests::netns::{wait_for, Netns};
use gateway_tests::packets;
use gateway_tests::wg::{iperf3_client, iperf3_server, wg, Keypair, UapiDaemon, WgGoNode, TUNNEL_PREFIX, WG_PORT};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ATTACKER_PORT: u16 = 40404;
const IPERF_PORT: u16 = 5201;
const FLOOD_ONLY_SECONDS: u64 = 3;
const SINK_IP: &str = "10.201.0.4";

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Flood {
    None,
    UnknownIndex,
    DeniedInit,
    SpoofedInit,
    SpoofedInitUnbounded,
}

const FLOODS: [Flood; 5] = [Flood::None, Flood::UnknownIndex, Flood::DeniedInit, Flood::SpoofedInit, Flood::SpoofedInitUnbounded];

/// Runs the flood from `ns` at `target` until `stop`; counts datagrams sent.
fn start_flood(ns: &str, target: Ipv4Addr, flood: Flood, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> Vec<std::thread::JoinHandle<()>> {
    if flood == Flood::None {
        return Vec::new();
    }
    (0..2)
        .map(|t| {
            let (ns, stop, sent) = (ns.to_string(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                if gateway::netns::enter(&ns).is_err() {
                    return;
                }
                let _ = match flood {
                    Flood::SpoofedInit | Flood::SpoofedInitUnbounded => spoofed(target, t, &stop, &sent),
                    _ => plain(target, flood, t, &stop, &sent),
                };
            })
        })
        .collect()
}

/// Plain UDP from the attacker's own address, sendmmsg batches of 64.
fn plain(target: Ipv4Addr, flood: Flood, thread: u32, stop: &AtomicBool, sent: &AtomicU64) -> Result<()> {
    use std::os::fd::AsRawFd;
    // Each thread its own port (both denied on the gateway for `denied-init`).
    let sock = std::net::UdpSocket::bind(("0.0.0.0", ATTACKER_PORT + thread as u16))?;
    sock.connect(SocketAddrV4::new(target, WG_PORT))?;
    let msg = match flood {
        Flood::UnknownIndex => packets::transport(0x00ab_cd00, 96),
        _ => packets::handshake_init(7),
    };
    let mut iov = libc::iovec { iov_base: msg.as_ptr() as *mut libc::c_void, iov_len: msg.len() };
    // SAFETY: zeroed mmsghdr is valid; each points at the one iovec above.
    let mut batch: Vec<libc::mmsghdr> = (0..64).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in batch.iter_mut() {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `batch` holds 64 initialised headers for a connected socket.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), batch.as_mut_ptr(), 64, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Handshake initiations from random source addresses in 10.202.0.0/16 (the
/// server's replies go nowhere), through a raw socket with our own headers.
fn spoofed(target: Ipv4Addr, thread: u32, stop: &AtomicBool, sent: &AtomicU64) -> Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd, AsRawFd};
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let payload = packets::handshake_init(9);
    let mut seed = 0x9e37_79b9_u32 ^ thread;
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: WG_PORT.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(target.octets()) },
        sin_zero: [0; 8],
    };
    let mut frame = vec![0u8; 20 + 8 + payload.len()];
    while !stop.load(Ordering::Relaxed) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let src = [10, 202, (seed >> 8) as u8, seed as u8];
        let total = frame.len() as u16;
        frame[..20].copy_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0, src[0], src[1], src[2], src[3], 0, 0, 0, 0]);
        frame[16..20].copy_from_slice(&target.octets());
        let sport = (seed >> 16) as u16 | 1024;
        frame[20..22].copy_from_slice(&sport.to_be_bytes());
        frame[22..24].copy_from_slice(&WG_PORT.to_be_bytes());
        frame[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        frame[26..28].copy_from_slice(&[0, 0]);
        frame[28..].copy_from_slice(&payload);
        // SAFETY: frame and dst are valid for the call; the kernel fills the IP checksum.
        let r = unsafe {
            libc::sendto(fd.as_raw_fd(), frame.as_ptr() as *const libc::c_void, frame.len(), 0, &dst as *const libc::sockaddr_in as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32)
        };
        if r > 0 {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}


#[derive(serde::Serialize)]
struct Run {
    server: &'static str,
    flood: Flood,
    mbit_per_second: f64,
    kept_percent: f64,
    server_cpu_percent_of_a_core: f64,
    /// The whole machine's softirq time (packet receive, XDP included).
    softirq_percent_of_a_core: f64,
    /// The server's CPU while the flood runs alone, after iperf3.
    flood_only_cpu_percent_of_a_core: f64,
    flood_packets_per_second: f64,
    xdp_dropped: Option<u64>,
    /// Dropped by the kernel before reaching the server (see [`lan_port_drops`]).
    lost_on_the_way_in: u64,
    /// TCP retransmissions of the legitimate iperf3 flow.
    retransmits: u64,
}

struct Target<'a> {
    name: &'static str,
    server_ns: &'a Netns,
    /// Where the flood goes: the server, or the sink for the anchor.
    flood_ip: Ipv4Addr,
    client_ns: &'a Netns,
    pid: u32,
}

fn measure(t: &Target, lan: &Netns, flood: Flood, attacker: &str, seconds: u32, xdp_instance: Option<&str>, baseline: f64) -> Result<Run> {
    let _server = iperf3_server(t.server_ns, IPERF_PORT)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let drops = |i: &str| -> Result<u64> {
        let s = PinnedMaps::open_instance(i)?.stats.read()?;
        Ok(XdpVerdict::ALL.iter().filter(|r| r.is_drop()).map(|r| s.get(*r)).sum())
    };
    let cpu = || gateway_tests::netns::cpu_seconds(t.pid);
    let budget = match (flood, xdp_instance) {
        (Flood::SpoofedInitUnbounded, Some(i)) => Some(UnprovenBudgetOff::new(i)?),
        _ => None,
    };
    let xdp_before = xdp_instance.map(drops).transpose()?;
    let port_drops_before = lan_port_drops(lan, t.server_ns)?;
    let threads = start_flood(attacker, t.flood_ip, flood, stop.clone(), sent.clone());
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, sent0, t0, softirq0) = (cpu()?, sent.load(Ordering::Relaxed), Instant::now(), softirq_seconds()?);
    let run = iperf3_client(t.client_ns, &format!("{TUNNEL_PREFIX}.1"), IPERF_PORT, seconds);
    let (cpu1, sent1, t1, softirq1) = (cpu()?, sent.load(Ordering::Relaxed), Instant::now(), softirq_seconds()?);
    // The flood alone: what it costs the server with nothing else to do.
    std::thread::sleep(Duration::from_secs(FLOOD_ONLY_SECONDS));
    let (cpu2, t2) = (cpu()?, Instant::now());
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        let _ = th.join();
    }
    drop(budget);
    let xdp_dropped = match (xdp_instance, xdp_before) {
        (Some(i), Some(b)) => Some(drops(i)? - b),
        _ => None,
    };
    let lost_on_the_way_in = lan_port_drops(lan, t.server_ns)? - port_drops_before;
    let (mbit, retransmits) = run.map(|r| (r.received_bits_per_second / 1e6, r.retransmits)).unwrap_or((0.0, 0));
    let busy = (t1 - t0).as_secs_f64();
    Ok(Run {
        server: t.name,
        flood,
        mbit_per_second: mbit,
        kept_percent: if baseline > 0.0 { 100.0 * mbit / baseline } else { 100.0 },
        server_cpu_percent_of_a_core: 100.0 * (cpu1 - cpu0) / busy,
        softirq_percent_of_a_core: 100.0 * (softirq1 - softirq0) / busy,
        flood_only_cpu_percent_of_a_core: 100.0 * (cpu2 - cpu1) / (t2 - t1).as_secs_f64(),
        flood_packets_per_second: (sent1 - sent0) as f64 / busy,
        xdp_dropped,
        lost_on_the_way_in,
        retransmits,
    })
}

/// Turns the gateway's unproven budget off until dropped (then back as it was).
struct UnprovenBudgetOff {
    instance: String,
    saved: gateway_common::XdpConfig,
}

impl UnprovenBudgetOff {
    fn new(instance: &str) -> Result<Self> {
        let mut maps = PinnedMaps::open_instance(instance)?;
        let saved = maps.config.get()?;
        maps.config.set(gateway_common::XdpConfig { unproven_rate_per_sec: 0, ..saved })?;
        Ok(UnprovenBudgetOff { instance: instance.to_string(), saved })
    }
}

impl Drop for UnprovenBudgetOff {
    fn drop(&mut self) {
        if let Ok(mut maps) = PinnedMaps::open_instance(&self.instance) {
            let _ = maps.config.set(self.saved);
        }
    }
}

#[derive(serde::Serialize)]
struct FirstHandshake {
    /// Whether the node's first handshake completed before the timeout.
    completed: bool,
    seconds: f64,
    flood_packets_per_second: f64,
    /// Flood initiations the unproven budget dropped meanwhile.
    dropped_by_the_budget: u64,
    /// Initiations that passed XDP meanwhile (the node's among them).
    passed_xdp: u64,
    /// Cookie replies the data plane sent meanwhile (it was under load).
    cookie_replies: f64,
    gateway_cpu_percent_of_a_core: f64,
}

/// A node granted before the flood starts its first handshake during one.
fn first_handshake_under_flood(lab: &Lab, node: usize, keys: Keypair, attacker: &str, pid: u32) -> Result<FirstHandshake> {
    let stat = |r: XdpVerdict| -> Result<u64> { Ok(PinnedMaps::open_instance(&lab.instance)?.stats.read()?.get(r)) };
    let cookies = || lab.metric(r#"gw_wireguard_handshakes_total{result="cookie_reply"}"#);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let gw_ip: Ipv4Addr = gateway_tests::lab::GATEWAY_LAN_IP.parse()?;
    let threads = start_flood(attacker, gw_ip, Flood::SpoofedInit, stop.clone(), sent.clone());
    std::thread::sleep(Duration::from_secs(1));
    let (budget0, passed0, cookies0, sent0, cpu0) =
        (stat(XdpVerdict::DropUnprovenBudget)?, stat(XdpVerdict::PassHandshakeInit)?, cookies()?, sent.load(Ordering::Relaxed), gateway_tests::netns::cpu_seconds(pid)?);
    let t0 = Instant::now();
    // Token 2: host 3.
    let _node = lab.start_node(node, keys, &format!("{TUNNEL_PREFIX}.3"))?;
    let completed = lab.ping(node, &format!("{TUNNEL_PREFIX}.1"), Duration::from_secs(120));
    let seconds = t0.elapsed().as_secs_f64();
    let (budget1, passed1, cookies1, sent1, cpu1) =
        (stat(XdpVerdict::DropUnprovenBudget)?, stat(XdpVerdict::PassHandshakeInit)?, cookies()?, sent.load(Ordering::Relaxed), gateway_tests::netns::cpu_seconds(pid)?);
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        let _ = th.join();
    }
    Ok(FirstHandshake {
        completed,
        seconds,
        flood_packets_per_second: (sent1 - sent0) as f64 / seconds,
        dropped_by_the_budget: budget1 - budget0,
        passed_xdp: passed1 - passed0,
        cookie_replies: cookies1 - cookies0,
        gateway_cpu_percent_of_a_core: 100.0 * (cpu1 - cpu0) / seconds,
    })
}

/// The `ip -s -o link` line, in the LAN namespace, of the port facing `server`.
fn lan_port_line(lan: &Netns, server: &Netns) -> Result<String> {
    let out = lan.ip(&["-s", "-o", "link"])?;
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .find(|l| {
            let words: Vec<&str> = l.split(|c: char| c.is_whitespace() || c == '\\').collect();
            words.windows(2).any(|w| w == ["link-netns", server.name()])
        })
        .map(str::to_string)
        .with_context(|| format!("no LAN port facing {}", server.name()))
}

/// The name of the LAN port facing `server` ("3: vlNN@if2: ...").
fn lan_port(lan: &Netns, server: &Netns) -> Result<String> {
    let line = lan_port_line(lan, server)?;
    let name = line.split(": ").nth(1).context("port name")?;
    Ok(name.split('@').next().unwrap_or(name).to_string())
}

/// Softirq time of all CPUs so far (`/proc/stat`, in USER_HZ = 100 ticks).
fn softirq_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat")?;
    let ticks: f64 = cpu.split_whitespace().nth(7).context("softirq field")?.parse()?;
    Ok(ticks / 100.0)
}

/// Packets the LAN port facing `server` could not hand over (the receiving
/// veth's ring or the CPU's backlog was full): flood and legitimate alike.
fn lan_port_drops(lan: &Netns, server: &Netns) -> Result<u64> {
    let line = lan_port_line(lan, server)?;
    // `-s -o`: "... TX:  bytes packets errors dropped carrier collsns\    <numbers>"
    let tx = line.split("TX:").nth(1).context("TX counters")?;
    let numbers: Vec<u64> = tx.split('\\').nth(1).context("TX numbers")?.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    numbers.get(3).copied().context("TX dropped")
}

/// The anchor's drop-all sink: a namespace on the LAN at `ip` whose interface
/// runs `anchor_drop_count`. The returned object keeps the program attached.
/// The program drops ARP too, so the attacker gets the sink's MAC address as
/// a permanent neighbour entry (else the flood would wait for ARP and never
/// leave the attacker's namespace).
fn start_sink(lab: &Lab, ip: &str, attacker: &Netns) -> Result<(Netns, aya::Ebpf)> {
    let ns = Netns::new("snk")?;
    let iface = attach_to_lan(&lab.lan, &ns, &format!("{ip}/24"))?;
    let link: serde_json::Value = serde_json::from_slice(&ns.ip(&["-j", "link", "show", &iface])?.stdout)?;
    let mac = link[0]["address"].as_str().context("sink MAC address")?.to_string();
    let route: serde_json::Value = serde_json::from_slice(&attacker.ip(&["-j", "route", "get", ip])?.stdout)?;
    let dev = route[0]["dev"].as_str().context("attacker's route to the sink")?;
    attacker.ip(&["neigh", "replace", ip, "lladdr", &mac, "nud", "permanent", "dev", dev])?;
    // Nor does the bridge ever learn the MAC from the sink's traffic for
    // long: a static entry keeps the flood off the other ports.
    let port = lan_port(&lab.lan, &ns)?;
    gateway_tests::netns::run("bridge", &["-n", lab.lan.name(), "fdb", "replace", &mac, "dev", &port, "master", "static"])?;
    let ebpf = ns.within(move || {
        let btf = aya::Btf::from_sys_fs().ok();
        let mut ebpf = aya::EbpfLoader::new().btf(btf.as_ref()).load(gateway::xdp::OBJECT)?;
        let program: &mut aya::programs::Xdp = ebpf.program_mut(ANCHOR_DROP_COUNT).context("anchor program")?.try_into()?;
        program.load()?;
        program.attach(&iface, aya::programs::XdpMode::Default)?;
        Ok(ebpf)
    })?;
    Ok((ns, ebpf))
}

/// A wireguard-go or boringtun-cli server on the LAN at `ip`, with a client.
fn uapi_server(lab: &Lab, program: &str, args: &[&str], ip: &str, client_ns: &Netns) -> Result<(Netns, UapiDaemon, WgGoNode)> {
    let ns = Netns::new("fls")?;
    attach_to_lan(&lab.lan, &ns, &format!("{ip}/24"))?;
    let server_keys = Keypair::generate(lab.dir.path(), &format!("srv-{program}"))?;
    let client_keys = Keypair::generate(lab.dir.path(), &format!("cl-{program}"))?;
    let d = UapiDaemon::start(&ns, program, args, server_keys)?;
    wg(&["set", &d.iface, "listen-port", &WG_PORT.to_string(), "peer", &client_keys.public, "allowed-ips", &format!("{TUNNEL_PREFIX}.2/32")])?;
    d.address(&ns, &format!("{TUNNEL_PREFIX}.1/24"))?;
    let client = WgGoNode::start(client_ns, client_keys, &format!("{TUNNEL_PREFIX}.2"), &d.keys.public, &format!("{ip}:{WG_PORT}"))?;
    wait_for("tunnel up", Duration::from_secs(20), || Ok(client_ns.exec("ping", &["-c", "1", "-W", "1", &format!("{TUNNEL_PREFIX}.1")]).is_ok().then_some(())))?;
    Ok((ns, d, client))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u32 = args.iter().position(|a| a == "--seconds").and_then(|i| args.get(i + 1)).map(|v| v.parse()).transpose()?.unwrap_or(5);
    let json = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();

    // nodes: 0 gateway client, 1 attacker, 2 wireguard-go client, 3 boringtun
    // client, 4 the gateway's late joiner (token 2)
    let mut lab = Lab::new(5)?;
    let keys = Keypair::generate(lab.dir.path(), "client")?;
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "bench-client", "--pubkey", &keys.public, "--json"])?;
    let joiner_keys = Keypair::generate(lab.dir.path(), "joiner")?;
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "late-joiner", "--pubkey", &joiner_keys.public, "--json"])?;
    lab.start_gateway("")?;
    let _client = lab.start_node(0, keys, &format!("{TUNNEL_PREFIX}.2"))?;
    anyhow::ensure!(lab.ping(0, &format!("{TUNNEL_PREFIX}.1"), Duration::from_secs(20)), "gateway tunnel up");
    let attacker = lab.nodes[1].name().to_string();
    // The gateway rejected this endpoint before: its XDP deny list holds it.
    let gw_ip: Ipv4Addr = gateway_tests::lab::GATEWAY_LAN_IP.parse()?;
    let mut maps = PinnedMaps::open_instance(&lab.instance)?;
    for port in [ATTACKER_PORT, ATTACKER_PORT + 1] {
        let until = gateway::xdp::monotonic_now_ns() + 3_600_000_000_000;
        maps.deny.deny(std::net::SocketAddr::from(([10, 201, 0, 11], port)), until, 0)?;
    }

    let (wg_ns, wg_d, _wg_client) = uapi_server(&lab, "wireguard-go", &["-f"], "10.201.0.2", &lab.nodes[2])?;
    let (bt_ns, bt_d, _bt_client) =
        uapi_server(&lab, "boringtun-cli", &["--foreground", "--disable-drop-privileges"], "10.201.0.3", &lab.nodes[3])?;
    let (_sink_ns, _sink) = start_sink(&lab, SINK_IP, &lab.nodes[1])?;
    let gateway_pid = lab.gateway_pid().context("pid")?;
    let targets = [
        Target { name: "gateway", server_ns: &lab.gw, flood_ip: gw_ip, client_ns: &lab.nodes[0], pid: gateway_pid },
        Target { name: "drop-all-sink", server_ns: &lab.gw, flood_ip: SINK_IP.parse()?, client_ns: &lab.nodes[0], pid: gateway_pid },
        Target { name: "wireguard-go", server_ns: &wg_ns, flood_ip: "10.201.0.2".parse()?, client_ns: &lab.nodes[2], pid: wg_d.process.id() },
        Target { name: "boringtun-cli", server_ns: &bt_ns, flood_ip: "10.201.0.3".parse()?, client_ns: &lab.nodes[3], pid: bt_d.process.id() },
    ];
    let mut runs = Vec::new();
    let only = args.iter().position(|a| a == "--server").and_then(|i| args.get(i + 1)).cloned();
    for t in targets.iter().filter(|t| only.as_deref().is_none_or(|o| o == t.name)) {
        let mut baseline = 0.0;
        for flood in FLOODS {
            if flood == Flood::SpoofedInitUnbounded && t.name != "gateway" {
                continue;
            }
            let xdp = (t.name == "gateway").then_some(lab.instance.as_str());
            let r = measure(t, &lab.lan, flood, &attacker, seconds, xdp, baseline)?;
            if flood == Flood::None {
                baseline = r.mbit_per_second;
            }
            writeln!(
                std::io::stdout(),
                "{:<14} {:<13} {:>4.0} Mbit/s kept {:>5.1}%  server CPU {:>5.1}%, flood only {:>5.1}%  softirq {:>5.1}%  flood {:>7.0} pkt/s  XDP dropped {:>8}  lost on the way in {:>6}  retransmits {:>6}",
                r.server,
                format!("{:?}", r.flood),
                r.mbit_per_second,
                r.kept_percent,
                r.server_cpu_percent_of_a_core,
                r.flood_only_cpu_percent_of_a_core,
                r.softirq_percent_of_a_core,
                r.flood_packets_per_second,
                r.xdp_dropped.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                r.lost_on_the_way_in,
                r.retransmits,
            )?;
            runs.push(r);
        }
    }
    let mut first = None;
    if only.as_deref().is_none_or(|o| o == "gateway") {
        let f = first_handshake_under_flood(&lab, 4, joiner_keys, &attacker, gateway_pid)?;
        writeln!(
            std::io::stdout(),
            "first handshake of a new node under a spoofed flood of {:.0} pkt/s: {} after {:.1} s; the unproven budget dropped {}, {} initiations passed XDP, {:.0} cookie replies, gateway CPU {:.1}%",
            f.flood_packets_per_second,
            if f.completed { "completed" } else { "NOT completed" },
            f.seconds,
            f.dropped_by_the_budget,
            f.passed_xdp,
            f.cookie_replies,
            f.gateway_cpu_percent_of_a_core,
        )?;
        first = Some(f);
    }
    if let Some(path) = json {
        let path = std::path::PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&serde_json::json!({ "seconds": seconds, "runs": runs, "first_handshake_under_spoofed_flood": first }))?)?;
    }
    lab.stop_gateway()?;
    Ok(())
}
