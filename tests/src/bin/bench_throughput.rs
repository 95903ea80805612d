//! `cargo xtask bench throughput`: iperf3 TCP through four WireGuard servers
//! (the gateway's data plane, gotatun, wireguard-go, boringtun-cli), each
//! driven by two client implementations (wireguard-go, gotatun), every pair
//! in namespaces of its own, runs alternating over all pairs. Reports Mbit/s
//! and the server process's CPU seconds per GB moved as a client x server
//! table with ratios to gotatun as server (same client, same run). With
//! `--peers N`: N gotatun clients at once (half stream to the server's side,
//! the other half in node-to-node pairs through it: 6 streams for 8 nodes),
//! aggregate Mbit/s, CPU-s/GB and Jain's fairness index over the streams.
//! `--reverse`: the other direction (`iperf3 -R`).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use gateway_tests::netns::{require_root, ChildGuard, Netns, VethPair};
use gateway_tests::wg::{
    iperf3_client, iperf3_client_reverse, iperf3_server, link_stats, wg, wg_dump, GatewayProcess, IperfRun, Keypair, LinkStats, ScratchDir,
    UapiDaemon, TUNNEL_PREFIX, WG_PORT,
};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Rounds over every pair (or fleet).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// The servers send (`iperf3 -R`): the download direction.
    #[arg(long)]
    reverse: bool,
    /// Clients streaming at once through one server (1: the client x server table).
    #[arg(long, default_value_t = 1)]
    peers: usize,
    /// Gateway worker counts to measure, one server row each (comma-separated;
    /// empty: the gateway's default).
    #[arg(long, value_delimiter = ',')]
    workers: Vec<usize>,
    /// Gateway burst bounds to measure (`--max-burst`, datagrams per UDP GSO
    /// message), one server row each (comma-separated; empty: the default).
    #[arg(long, value_delimiter = ',')]
    bursts: Vec<usize>,
    /// Another gateway binary (e.g. a build of the previous commit), measured
    /// as one more server row in the same run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Only these clients (labels, comma-separated; empty: the default set).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<String>,
    /// Only these other servers besides the gateway rows (labels; empty: the
    /// default set, `none`: the gateway rows alone).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// GRO on both ends of every veth (`ethtool -K .. gro on`), as a NIC with
    /// NAPI does: a veth without it (or an XDP program) hands each datagram
    /// up alone, so no receiver gets UDP GRO runs.
    #[arg(long)]
    gro: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/throughput.json")]
    json: PathBuf,
}

const IPERF_PORT: u16 = 5201;
/// What every server and client is measured against (the anchor).
const ANCHOR: Impl = Impl::Gotatun;

/// A WireGuard implementation, as server or client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Impl {
    Gateway,
    Gotatun,
    WireguardGo,
    BoringtunCli,
}

impl Impl {
    fn label(self) -> &'static str {
        match self {
            Impl::Gateway => "gateway",
            Impl::Gotatun => "gotatun",
            Impl::WireguardGo => "wireguard-go",
            Impl::BoringtunCli => "boringtun-cli",
        }
    }

    /// The program and its foreground flags, for the implementations that
    /// serve the UAPI socket and are configured with `wg set`.
    fn daemon(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Impl::WireguardGo => ("wireguard-go", &["-f"]),
            Impl::BoringtunCli => ("boringtun-cli", &["--foreground", "--disable-drop-privileges"]),
            Impl::Gotatun | Impl::Gateway => ("gotatun", &["--foreground", "--disable-drop-privileges"]),
        }
    }
}

/// A server row: an implementation, and for the gateway its worker count,
/// burst bound and binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct ServerSpec {
    implementation: Impl,
    /// `None`: the gateway's default (one per CPU).
    workers: Option<usize>,
    /// `None`: the gateway's default `--max-burst`.
    burst: Option<usize>,
    /// The `--baseline` binary instead of this tree's.
    baseline: bool,
}

impl ServerSpec {
    fn of(implementation: Impl) -> Self {
        Self { implementation, workers: None, burst: None, baseline: false }
    }

    fn label(&self) -> String {
        let mut parts = Vec::new();
        if self.baseline {
            parts.push("baseline".to_owned());
        }
        match self.workers {
            Some(1) => parts.push("1 worker".to_owned()),
            Some(n) => parts.push(format!("{n} workers")),
            None => {}
        }
        if let Some(b) = self.burst {
            parts.push(format!("burst {b}"));
        }
        if parts.is_empty() {
            self.implementation.label().to_owned()
        } else {
            format!("{} ({})", self.implementation.label(), parts.join(", "))
        }
    }
}

/// The server's process, whichever implementation it is.
enum ServerProcess {
    Gateway(GatewayProcess),
    Daemon(UapiDaemon),
}

impl ServerProcess {
    fn pid(&self) -> u32 {
        match self {
            ServerProcess::Gateway(g) => g.process.id(),
            ServerProcess::Daemon(d) => d.process.id(),
        }
    }

    fn iface(&self) -> &str {
        match self {
            ServerProcess::Gateway(g) => &g.iface,
            ServerProcess::Daemon(d) => &d.iface,
        }
    }
}

/// Starts `spec` in `ns` serving `peers` (public key, allowed IPs) on
/// `WG_PORT` with the tunnel address .1; returns it and its public key.
fn start_server(
    spec: ServerSpec,
    ns: &Netns,
    dir: &ScratchDir,
    peers: &[(String, String)],
    baseline: Option<&std::path::Path>,
) -> Result<(ServerProcess, String)> {
    if spec.implementation == Impl::Gateway {
        let workers = spec.workers.map(|n| n.to_string());
        let burst = spec.burst.map(|n| n.to_string());
        let extra: Vec<&str> = workers
            .iter()
            .flat_map(|n| ["--workers", n.as_str()])
            .chain(burst.iter().flat_map(|n| ["--max-burst", n.as_str()]))
            .collect();
        let binary = match (spec.baseline, baseline) {
            (true, Some(path)) => path.to_path_buf(),
            _ => gateway_tests::netns::gateway_bin(),
        };
        let g = GatewayProcess::start_program(&binary, ns, dir.path(), peers, &extra)?;
        let public = g.keys.public.clone();
        return Ok((ServerProcess::Gateway(g), public));
    }
    let keys = Keypair::generate(dir.path(), &gateway_tests::netns::unique_name("srv"))?;
    let (program, flags) = spec.implementation.daemon();
    let d = UapiDaemon::start(ns, program, flags, keys)?;
    wg(&["set", &d.iface, "listen-port", &WG_PORT.to_string()])?;
    for (public, allowed) in peers {
        wg(&["set", &d.iface, "peer", public, "allowed-ips", allowed])?;
    }
    d.address(ns, &format!("{TUNNEL_PREFIX}.1/24"))?;
    if peers.len() > 1 {
        // Node-to-node traffic goes through the kernel and back out of the
        // same interface for the servers that have no forwarding of their own.
        ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        ns.exec("sysctl", &["-qw", "net.ipv4.conf.all.send_redirects=0"])?;
        ns.exec("sysctl", &["-qw", &format!("net.ipv4.conf.{}.send_redirects=0", d.iface)])?;
    }
    let public = d.keys.public.clone();
    Ok((ServerProcess::Daemon(d), public))
}

/// A client of `implementation` in `ns`, its only peer the server.
fn start_client(implementation: Impl, ns: &Netns, keys: Keypair, tunnel_ip: &str, server_public: &str, endpoint: &str) -> Result<UapiDaemon> {
    let (program, flags) = implementation.daemon();
    let d = UapiDaemon::start(ns, program, flags, keys)?;
    wg(&[
        "set", &d.iface, "peer", server_public, "endpoint", endpoint,
        "allowed-ips", &format!("{TUNNEL_PREFIX}.0/24"), "persistent-keepalive", "25",
    ])?;
    d.address(ns, &format!("{tunnel_ip}/24"))?;
    Ok(d)
}

fn tunnel_ip(node: usize) -> String {
    format!("{TUNNEL_PREFIX}.{}", node + 2)
}

/// One server and its clients, each in a namespace of its own: node i at
/// 10.(200 + i / 200).(i % 200).2 over its own veth. Fields drop in order:
/// processes before the namespaces they live in.
struct Fleet {
    client: Impl,
    server: ServerSpec,
    clients: Vec<UapiDaemon>,
    process: ServerProcess,
    client_ns: Vec<Netns>,
    server_ns: Netns,
}

impl Fleet {
    fn label(&self) -> String {
        format!("{} -> {}", self.client.label(), self.server.label())
    }
}

fn set_up(client: Impl, server: ServerSpec, peers: usize, dir: &ScratchDir, baseline: Option<&std::path::Path>, gro: bool) -> Result<Fleet> {
    let server_ns = Netns::new("bsv")?;
    let mut client_ns = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..peers {
        let ns = Netns::new("bcl")?;
        let net = format!("10.{}.{}", 200 + i / 200, i % 200);
        let veth = VethPair::connect(&server_ns, &format!("{net}.1/24"), &ns, &format!("{net}.2/24"))?;
        if gro {
            server_ns.exec("ethtool", &["-K", &veth.a, "gro", "on"])?;
            ns.exec("ethtool", &["-K", &veth.b, "gro", "on"])?;
        }
        endpoints.push(format!("{net}.1:{WG_PORT}"));
        client_ns.push(ns);
    }
    let keys: Vec<Keypair> =
        (0..peers).map(|i| Keypair::generate(dir.path(), &gateway_tests::netns::unique_name(&format!("c{i}")))).collect::<Result<_>>()?;
    let allowed: Vec<(String, String)> = keys.iter().enumerate().map(|(i, k)| (k.public.clone(), format!("{}/32", tunnel_ip(i)))).collect();
    // gotatun now and then drops its UAPI socket while it is being
    // configured on a loaded machine: a fresh start gets another chance.
    let mut attempt = 0;
    let (process, server_public) = loop {
        attempt += 1;
        match start_server(server, &server_ns, dir, &allowed, baseline) {
            Ok(started) => break started,
            Err(err) if attempt < 3 => eprintln!("start the {} server (attempt {attempt}): {err:#}; again", server.label()),
            Err(err) => return Err(err.context(format!("start the {} server", server.label()))),
        }
    };
    let mut clients = Vec::new();
    for (i, (ns, keys)) in client_ns.iter().zip(keys).enumerate() {
        clients.push(
            start_client(client, ns, keys, &tunnel_ip(i), &server_public, &endpoints[i])
                .with_context(|| format!("start {} client {i}", client.label()))?,
        );
    }
    let fleet = Fleet { client, server, clients, process, client_ns, server_ns };
    for (i, ns) in fleet.client_ns.iter().enumerate() {
        gateway_tests::netns::wait_for(&format!("tunnel {i} of {}", fleet.label()), Duration::from_secs(20), || {
            Ok(ns.exec("ping", &["-c", "1", "-W", "1", &format!("{TUNNEL_PREFIX}.1")]).is_ok().then_some(()))
        })?;
    }
    Ok(fleet)
}

/// Node to node, a node that receives a stream sends none: an upload of its
/// own fills its tunnel's queue (a 500-packet pfifo on the client's TUN,
/// tail-dropped when the client encrypts slower than its kernel sends; this
/// kernel has no fq_codel), which drops the ACKs of the stream it receives
/// and measures the client, not the server. With N nodes: N/4 node-to-node
/// pairs (a sender, then a receiver), the other nodes stream to the server's
/// side.
struct Stream {
    from: usize,
    /// `None`: the server's namespace, else a node.
    to: Option<usize>,
    port: u16,
}

fn streams(peers: usize) -> Vec<Stream> {
    let pairs = peers / 4;
    let to_server = peers - 2 * pairs;
    let upload = (0..to_server).map(|i| (i, None));
    let node_to_node = (0..pairs).map(|j| (to_server + j, Some(to_server + pairs + j)));
    upload.chain(node_to_node).enumerate().map(|(k, (from, to))| Stream { from, to, port: IPERF_PORT + k as u16 }).collect()
}

#[derive(Debug, Clone, Serialize)]
struct Sample {
    client: Impl,
    server: ServerSpec,
    round: u32,
    /// Sum over the streams (they run at the same time).
    mbit_per_second: f64,
    /// Per stream, in stream order.
    stream_mbit_per_second: Vec<f64>,
    bytes: u64,
    seconds: f64,
    server_cpu_seconds: f64,
    cpu_seconds_per_gb: f64,
    retransmits: u64,
    /// Datagrams the receiving side's UDP sockets dropped for a full buffer
    /// (`/proc/net/snmp` Udp RcvbufErrors of the namespaces that receive
    /// the WireGuard stream: the clients' with `--reverse`, else the server's).
    receiver_udp_drops: u64,
    jain_fairness: f64,
    /// Per node: packets its tunnel interface dropped on the way out (the
    /// kernel's queue to the client's TUN reader was full).
    node_tunnel_tx_drops: Vec<u64>,
    /// Per node: bytes the server counted from it and to it (its UAPI
    /// `rx_bytes`/`tx_bytes`): what the server took in and sent on.
    server_rx_from_node: Vec<u64>,
    server_tx_to_node: Vec<u64>,
}

/// What the run's diagnostics read before and after it.
struct Counters {
    node_tunnels: Vec<LinkStats>,
    server_peers: Vec<(u64, u64)>,
}

fn counters(fleet: &Fleet) -> Result<Counters> {
    let node_tunnels = fleet.client_ns.iter().zip(&fleet.clients).map(|(ns, c)| link_stats(ns, &c.iface)).collect::<Result<_>>()?;
    let dump = wg_dump(fleet.process.iface())?;
    let server_peers =
        fleet.clients.iter().map(|c| dump.get(&c.keys.public).map_or((0, 0), |p| (p.rx_bytes, p.tx_bytes))).collect();
    Ok(Counters { node_tunnels, server_peers })
}

/// Jain's index: 1 when every stream gets the same, 1/n when one gets all.
fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares > 0.0 {
        sum * sum / (xs.len() as f64 * squares)
    } else {
        0.0
    }
}

/// `Udp: ... RcvbufErrors` of the namespace `ns`.
fn udp_rcvbuf_errors(ns: &Netns) -> Result<u64> {
    let out = ns.exec("cat", &["/proc/net/snmp"])?;
    let text = String::from_utf8(out.stdout)?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().context("Udp header")?, udp.next().context("Udp values")?);
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors").context("RcvbufErrors column")?;
    Ok(values.split_whitespace().nth(column).context("RcvbufErrors value")?.parse()?)
}

/// The namespaces whose UDP sockets receive the encrypted stream.
fn receivers(fleet: &Fleet, reverse: bool) -> Vec<&Netns> {
    if reverse {
        fleet.client_ns.iter().collect()
    } else {
        // Node-to-node streams end at a client too.
        std::iter::once(&fleet.server_ns).chain(&fleet.client_ns).collect()
    }
}

fn udp_drops(fleet: &Fleet, reverse: bool) -> Result<u64> {
    receivers(fleet, reverse).into_iter().map(udp_rcvbuf_errors).sum()
}

fn measure(fleet: &Fleet, round: u32, seconds: u32, reverse: bool) -> Result<Sample> {
    let streams = streams(fleet.client_ns.len());
    let _servers: Vec<ChildGuard> = streams
        .iter()
        .map(|s| iperf3_server(s.to.map_or(&fleet.server_ns, |n| &fleet.client_ns[n]), s.port))
        .collect::<Result<_>>()?;
    let pid = fleet.process.pid();
    let cpu_before = gateway_tests::netns::cpu_seconds(pid)?;
    let drops_before = udp_drops(fleet, reverse)?;
    let counters_before = counters(fleet)?;
    let client = if reverse { iperf3_client_reverse } else { iperf3_client };
    let runs: Vec<Result<IperfRun>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .map(|s| {
                let ns = &fleet.client_ns[s.from];
                let to = s.to.map_or_else(|| format!("{TUNNEL_PREFIX}.1"), tunnel_ip);
                scope.spawn(move || client(ns, &to, s.port, seconds))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("iperf3 thread panicked")))).collect()
    });
    let cpu = gateway_tests::netns::cpu_seconds(pid)? - cpu_before;
    let receiver_udp_drops = udp_drops(fleet, reverse)?.saturating_sub(drops_before);
    let counters_after = counters(fleet)?;
    let node_tunnel_tx_drops = counters_after
        .node_tunnels
        .iter()
        .zip(&counters_before.node_tunnels)
        .map(|(a, b)| a.tx_dropped.saturating_sub(b.tx_dropped))
        .collect();
    let peer_delta = |pick: fn(&(u64, u64)) -> u64| -> Vec<u64> {
        counters_after.server_peers.iter().zip(&counters_before.server_peers).map(|(a, b)| pick(a).saturating_sub(pick(b))).collect()
    };
    let (server_rx_from_node, server_tx_to_node) = (peer_delta(|p| p.0), peer_delta(|p| p.1));
    let runs: Vec<IperfRun> = runs.into_iter().collect::<Result<_>>().with_context(|| fleet.label())?;
    let bytes: u64 = runs.iter().map(|r| r.received_bytes).sum();
    if runs.iter().any(|r| r.received_bytes == 0) {
        bail!("{}: a stream moved nothing", fleet.label());
    }
    let per_stream: Vec<f64> = runs.iter().map(|r| r.received_bits_per_second / 1e6).collect();
    Ok(Sample {
        client: fleet.client,
        server: fleet.server,
        round,
        mbit_per_second: per_stream.iter().sum(),
        jain_fairness: jain(&per_stream),
        stream_mbit_per_second: per_stream,
        bytes,
        seconds: runs.iter().map(|r| r.seconds).fold(0.0, f64::max),
        server_cpu_seconds: cpu,
        cpu_seconds_per_gb: cpu / (bytes as f64 / 1e9),
        retransmits: runs.iter().map(|r| r.retransmits).sum(),
        receiver_udp_drops,
        node_tunnel_tx_drops,
        server_rx_from_node,
        server_tx_to_node,
    })
}

#[derive(Debug, Serialize)]
struct Summary {
    client: Impl,
    server: ServerSpec,
    runs: usize,
    /// Total bytes over total time, so long and short runs weigh by duration.
    mbit_per_second: f64,
    cpu_seconds_per_gb: f64,
    retransmits_per_run: f64,
    receiver_udp_drops_per_run: f64,
    /// Mean over the runs.
    jain_fairness: f64,
    /// This row over gotatun as server with the same client.
    throughput_ratio_vs_gotatun: f64,
    cpu_per_gb_ratio_vs_gotatun: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    rounds: u32,
    seconds_per_run: u32,
    /// True when the servers sent (download direction).
    reverse: bool,
    peers: usize,
    /// GRO on the veths (`--gro`).
    underlay_gro: bool,
    samples: Vec<Sample>,
    summary: Vec<Summary>,
}

fn summarise(client: Impl, server: ServerSpec, samples: &[Sample]) -> Summary {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.server == server && s.client == client).collect();
    let bytes: f64 = mine.iter().map(|s| s.bytes as f64).sum();
    let seconds: f64 = mine.iter().map(|s| s.seconds).sum();
    let cpu: f64 = mine.iter().map(|s| s.server_cpu_seconds).sum();
    let runs = mine.len().max(1) as f64;
    Summary {
        client,
        server,
        runs: mine.len(),
        mbit_per_second: if seconds > 0.0 { bytes * 8.0 / seconds / 1e6 } else { 0.0 },
        cpu_seconds_per_gb: if bytes > 0.0 { cpu / (bytes / 1e9) } else { 0.0 },
        retransmits_per_run: mine.iter().map(|s| s.retransmits as f64).sum::<f64>() / runs,
        receiver_udp_drops_per_run: mine.iter().map(|s| s.receiver_udp_drops as f64).sum::<f64>() / runs,
        jain_fairness: mine.iter().map(|s| s.jain_fairness).sum::<f64>() / runs,
        throughput_ratio_vs_gotatun: 0.0,
        cpu_per_gb_ratio_vs_gotatun: 0.0,
    }
}

fn with_ratios(mut summary: Vec<Summary>) -> Vec<Summary> {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let anchors: Vec<(Impl, f64, f64)> = summary
        .iter()
        .filter(|s| s.server.implementation == ANCHOR)
        .map(|s| (s.client, s.mbit_per_second, s.cpu_seconds_per_gb))
        .collect();
    for s in &mut summary {
        if let Some((_, mbit, cpu)) = anchors.iter().find(|(c, _, _)| *c == s.client) {
            s.throughput_ratio_vs_gotatun = ratio(s.mbit_per_second, *mbit);
            s.cpu_per_gb_ratio_vs_gotatun = ratio(s.cpu_seconds_per_gb, *cpu);
        }
    }
    summary
}

fn print_table(out: &mut impl std::io::Write, report: &Report, clients: &[Impl], servers: &[ServerSpec]) -> Result<()> {
    writeln!(out)?;
    let direction = if report.reverse { "server to client (iperf3 -R)" } else { "client to server" };
    writeln!(
        out,
        "{direction}, {} stream(s) at once{}: Mbit/s, server CPU-s/GB, retransmits per run{} (ratios: this server / gotatun, same client)",
        report.peers,
        if report.underlay_gro { ", GRO on the veths" } else { "" },
        if report.peers > 1 { ", Jain's fairness" } else { "" }
    )?;
    write!(out, "{:<26}", "server")?;
    for c in clients {
        write!(out, " | {:<52}", format!("client {}", c.label()))?;
    }
    writeln!(out)?;
    for server in servers {
        write!(out, "{:<26}", server.label())?;
        for client in clients {
            let Some(s) = report.summary.iter().find(|s| s.client == *client && s.server == *server) else {
                write!(out, " | {:<52}", "")?;
                continue;
            };
            let mut cell = format!(
                "{:>5.0} {:>5.2} {:>7.0} ({:.2}x, {:.2}x)",
                s.mbit_per_second, s.cpu_seconds_per_gb, s.retransmits_per_run, s.throughput_ratio_vs_gotatun, s.cpu_per_gb_ratio_vs_gotatun
            );
            if report.peers > 1 {
                cell.push_str(&format!(" J={:.3}", s.jain_fairness));
            }
            write!(out, " | {cell:<52}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !require_root() {
        bail!("the benchmark needs root (network namespaces)");
    }
    for program in ["wireguard-go", "boringtun-cli", "gotatun", "iperf3", "wg", "ethtool"] {
        if gateway_tests::netns::run("sh", &["-c", &format!("command -v {program}")]).is_err() {
            bail!("{program} not found (`cargo xtask bench throughput` installs it)");
        }
    }
    let worker_rows: Vec<Option<usize>> = if args.workers.is_empty() { vec![None] } else { args.workers.iter().map(|n| Some(*n)).collect() };
    let burst_rows: Vec<Option<usize>> = if args.bursts.is_empty() { vec![None] } else { args.bursts.iter().map(|n| Some(*n)).collect() };
    let mut gateways: Vec<ServerSpec> = worker_rows
        .iter()
        .flat_map(|w| burst_rows.iter().map(|b| ServerSpec { workers: *w, burst: *b, ..ServerSpec::of(Impl::Gateway) }))
        .collect();
    if let Some(path) = &args.baseline {
        if !path.exists() {
            bail!("baseline gateway {} not found", path.display());
        }
        gateways.push(ServerSpec { baseline: true, ..ServerSpec::of(Impl::Gateway) });
    }
    let (clients, others): (Vec<Impl>, &[Impl]) = if args.peers > 1 {
        // Many peers: the faster client only, and the two strongest other servers.
        (vec![Impl::Gotatun], &[Impl::Gotatun, Impl::WireguardGo])
    } else {
        (vec![Impl::WireguardGo, Impl::Gotatun], &[Impl::Gotatun, Impl::WireguardGo, Impl::BoringtunCli])
    };
    let clients: Vec<Impl> = clients.into_iter().filter(|c| args.clients.is_empty() || args.clients.iter().any(|l| l == c.label())).collect();
    let others = others.iter().filter(|i| args.servers.is_empty() || args.servers.iter().any(|l| l == i.label()));
    let servers: Vec<ServerSpec> = gateways.into_iter().chain(others.map(|i| ServerSpec::of(*i))).collect();
    let dir = ScratchDir::new()?;
    let mut fleets = Vec::new();
    for client in &clients {
        for server in &servers {
            fleets.push(set_up(*client, *server, args.peers.max(1), &dir, args.baseline.as_deref(), args.gro)?);
        }
    }
    let mut samples = Vec::new();
    let mut out = std::io::stdout();
    for round in 0..args.rounds {
        for fleet in &fleets {
            let sample = measure(fleet, round, args.seconds, args.reverse)?;
            writeln!(
                out,
                "round {round} {:<42} {:>6.0} Mbit/s {:>6.2} CPU-s/GB {:>7} retransmits {:>7} receiver UDP drops{}",
                fleet.label(),
                sample.mbit_per_second,
                sample.cpu_seconds_per_gb,
                sample.retransmits,
                sample.receiver_udp_drops,
                if args.peers > 1 { format!(" fairness {:.3}", sample.jain_fairness) } else { String::new() }
            )?;
            if args.peers > 1 {
                let mb = |v: &[u64]| v.iter().map(|b| format!("{:.0}", *b as f64 / 1e6)).collect::<Vec<_>>().join(" ");
                let streams: Vec<String> = sample.stream_mbit_per_second.iter().map(|m| format!("{m:.0}")).collect();
                writeln!(
                    out,
                    "  per stream Mbit/s [{}]; per node: tunnel TX drops {:?}, server MB from [{}] to [{}]",
                    streams.join(" "),
                    sample.node_tunnel_tx_drops,
                    mb(&sample.server_rx_from_node),
                    mb(&sample.server_tx_to_node)
                )?;
            }
            samples.push(sample);
        }
    }
    let summary = with_ratios(
        clients.iter().flat_map(|c| servers.iter().map(|s| summarise(*c, *s, &samples))).collect(),
    );
    let report = Report { rounds: args.rounds, seconds_per_run: args.seconds, reverse: args.reverse, peers: args.peers, underlay_gro: args.gro, samples, summary };
    print_table(&mut out, &report, &clients, &servers)?;
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    writeln!(out, "wrote {}", args.json.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index_is_one_when_fair_and_one_over_n_when_not() {
        assert!((jain(&[5.0, 5.0, 5.0, 5.0]) - 1.0).abs() < 1e-9);
        assert!((jain(&[8.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn node_to_node_receivers_send_nothing() {
        let s = streams(8);
        assert_eq!(s.iter().filter(|s| s.to.is_none()).count(), 4);
        let receivers: Vec<usize> = s.iter().filter_map(|s| s.to).collect();
        assert_eq!(receivers, vec![6, 7]);
        assert!(s.iter().all(|st| !receivers.contains(&st.from)), "a receiver also sends");
        // Every node takes part, as sender or receiver.
        let mut nodes: Vec<usize> = s.iter().map(|s| s.from).chain(receivers.iter().copied()).collect();
        nodes.sort();
        assert_eq!(nodes, (0..8).collect::<Vec<_>>());
        assert_eq!(streams(1).len(), 1);
        assert_eq!(streams(1)[0].to, None);
    }
}
