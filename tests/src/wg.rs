//! WireGuard test plumbing: key files, real `wireguard-go` nodes, the gateway's
//! data plane as a process, `wg show` parsing, iperf3 runs, and a star
//! topology (a gateway namespace with one veth per node namespace).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::netns::{gateway_bin, run, unique_name, wait_for, ChildGuard, Netns, VethPair};

/// wireguard-go refuses to start on Linux without this.
const WG_GO_ENV: (&str, &str) = ("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1");
pub const WG_PORT: u16 = 51820;
/// The tunnel network: the gateway is .1, node i is .(i + 2).
pub const TUNNEL_PREFIX: &str = "10.99.0";
/// The tunnel's IPv6 network, numbered like the IPv4 one (`fd99::1` is the gateway).
pub const TUNNEL_PREFIX6: &str = "fd99:";

/// A scratch directory removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(unique_name("dpt"));
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self(path))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A key pair from `wg genkey`; the private key lives in a 0600 file.
#[derive(Clone)]
pub struct Keypair {
    pub private_file: PathBuf,
    pub public: String,
}

impl Keypair {
    pub fn generate(dir: &Path, name: &str) -> Result<Self> {
        let private = run("wg", &["genkey"])?.stdout;
        let private_file = dir.join(format!("{name}.key"));
        std::fs::write(&private_file, &private)?;
        std::fs::set_permissions(&private_file, std::fs::Permissions::from_mode(0o600))?;
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("wg pubkey")?;
        std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, &private)?;
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "wg pubkey failed");
        Ok(Self { private_file, public: String::from_utf8(out.stdout)?.trim().to_owned() })
    }

    pub fn private_path(&self) -> &str {
        self.private_file.to_str().unwrap_or_default()
    }
}

pub fn uapi_socket(iface: &str) -> PathBuf {
    PathBuf::from("/var/run/wireguard").join(format!("{iface}.sock"))
}

fn wait_for_uapi(iface: &str, process: &mut ChildGuard) -> Result<()> {
    wait_for(&format!("UAPI socket of {iface}"), Duration::from_secs(10), || {
        if !process.is_running() {
            bail!("the process serving {iface} exited");
        }
        Ok(uapi_socket(iface).exists().then_some(()))
    })
}

/// `wg <args>`: the UAPI socket is a file, so this works from any namespace.
pub fn wg(args: &[&str]) -> Result<String> {
    Ok(String::from_utf8(run("wg", args)?.stdout)?)
}

/// Removes the UAPI socket on drop (killed processes leave theirs behind).
struct SocketFile(PathBuf);
impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A userspace WireGuard process (`wireguard-go`, `boringtun-cli`) in a
/// namespace, serving its UAPI socket and configured through `wg set`.
pub struct UapiDaemon {
    pub iface: String,
    pub keys: Keypair,
    _socket: SocketFile,
    pub process: ChildGuard,
}

impl UapiDaemon {
    /// Runs `program <args> <iface>` in `ns` (foreground flags are the
    /// caller's) and gives the interface `keys`' private key.
    pub fn start(ns: &Netns, program: &str, args: &[&str], keys: Keypair) -> Result<Self> {
        let iface = unique_name("wgn");
        let mut cmd = ns.command(program);
        cmd.args(args).arg(&iface).env(WG_GO_ENV.0, WG_GO_ENV.1).stdout(Stdio::null()).stderr(Stdio::null());
        let mut process = ChildGuard::spawn(cmd, program)?;
        let socket = SocketFile(uapi_socket(&iface));
        wait_for_uapi(&iface, &mut process)?;
        wg(&["set", &iface, "private-key", keys.private_path()])?;
        Ok(Self { iface, keys, _socket: socket, process })
    }

    /// Addresses the interface and brings it up.
    pub fn address(&self, ns: &Netns, cidr: &str) -> Result<()> {
        ns.ip(&["address", "add", cidr, "dev", &self.iface])?;
        ns.ip(&["link", "set", &self.iface, "up"])?;
        Ok(())
    }
}

/// A real `wireguard-go` node in its own namespace, its only peer the gateway.
pub struct WgGoNode {
    pub iface: String,
    pub tunnel_ip: String,
    pub keys: Keypair,
    _daemon: UapiDaemon,
}

impl WgGoNode {
    pub fn start(ns: &Netns, keys: Keypair, tunnel_ip: &str, gateway_public: &str, gateway_endpoint: &str) -> Result<Self> {
        let daemon = UapiDaemon::start(ns, "wireguard-go", &["-f"], keys)?;
        let iface = daemon.iface.clone();
        wg(&[
            "set", &iface, "peer", gateway_public, "endpoint", gateway_endpoint,
            "allowed-ips", &format!("{TUNNEL_PREFIX}.0/24,{TUNNEL_PREFIX6}:/64"), "persistent-keepalive", "25",
        ])?;
        daemon.address(ns, &format!("{tunnel_ip}/24"))?;
        if let Some(host) = tunnel_ip.rsplit('.').next() {
            ns.ip(&["address", "add", &format!("{TUNNEL_PREFIX6}:{host}/64"), "dev", &iface, "nodad"])?;
        }
        Ok(Self { iface, tunnel_ip: tunnel_ip.to_owned(), keys: daemon.keys.clone(), _daemon: daemon })
    }
}

/// The gateway's data plane (`gateway dataplane run`) in its namespace.
pub struct GatewayProcess {
    pub iface: String,
    pub keys: Keypair,
    _socket: SocketFile,
    pub process: ChildGuard,
}

impl GatewayProcess {
    /// `peers`: (base64 public key, allowed IPs) given on the command line.
    pub fn start(ns: &Netns, dir: &Path, peers: &[(String, String)]) -> Result<Self> {
        Self::start_with(ns, dir, peers, &[])
    }

    /// The same with extra `dataplane run` arguments (`--workers 2`).
    pub fn start_with(ns: &Netns, dir: &Path, peers: &[(String, String)], extra: &[&str]) -> Result<Self> {
        Self::start_program(&gateway_bin(), ns, dir, peers, extra)
    }

    /// The same with another gateway binary (a benchmark's baseline build).
    pub fn start_program(binary: &Path, ns: &Netns, dir: &Path, peers: &[(String, String)], extra: &[&str]) -> Result<Self> {
        let iface = unique_name("wgg");
        let keys = Keypair::generate(dir, &iface)?;
        Self::launch(binary, ns, &iface, keys, peers, extra)
    }

    /// The same with a given interface name and key (a restart, or a second
    /// gateway with the first one's key) and `extra` arguments.
    pub fn start_as(ns: &Netns, iface: &str, keys: Keypair, peers: &[(String, String)], extra: &[&str]) -> Result<Self> {
        Self::launch(&gateway_bin(), ns, iface, keys, peers, extra)
    }

    fn launch(binary: &Path, ns: &Netns, iface: &str, keys: Keypair, peers: &[(String, String)], extra: &[&str]) -> Result<Self> {
        let iface = iface.to_string();
        let mut cmd = Command::new(binary);
        cmd.args(["--netns", ns.name(), "dataplane", "run", "--iface", &iface])
            .args(["--listen-port", &WG_PORT.to_string(), "--private-key-file", keys.private_path()])
            .args(["--address", &format!("{TUNNEL_PREFIX}.1/24"), "--address", &format!("{TUNNEL_PREFIX6}:1/64")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (public, allowed) in peers {
            cmd.arg("--peer").arg(format!("{public}={allowed}"));
        }
        let mut process = ChildGuard::spawn(cmd, "gateway dataplane")?;
        let socket = SocketFile(uapi_socket(&iface));
        wait_for_uapi(&iface, &mut process)?;
        Ok(Self { iface, keys, _socket: socket, process })
    }
}

/// One peer as `wg show <iface> dump` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPeer {
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<String>,
    /// Unix seconds, 0 if never.
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// `wg show <iface> dump`, peers by base64 public key.
pub fn wg_dump(iface: &str) -> Result<BTreeMap<String, DumpPeer>> {
    let text = wg(&["show", iface, "dump"])?;
    let mut peers = BTreeMap::new();
    // The first line is the interface; each peer line has 8 tab-separated fields.
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        ensure!(f.len() == 8, "unexpected dump line {line:?}");
        peers.insert(
            f[0].to_owned(),
            DumpPeer {
                endpoint: f[2].parse().ok(),
                allowed_ips: f[3].split(',').filter(|s| *s != "(none)").map(str::to_owned).collect(),
                latest_handshake: f[4].parse()?,
                rx_bytes: f[5].parse()?,
                tx_bytes: f[6].parse()?,
            },
        );
    }
    Ok(peers)
}

/// A gateway namespace and `n` node namespaces, node i reaching the gateway
/// at 10.200.i.1 over its own veth, the gateway's data plane running with
/// every node as a peer (tunnel IPs 10.99.0.(i + 2)/32 and fd99::(i + 2)/128).
/// Odd-numbered nodes reach the gateway over IPv6 (fd00:200:i::1), the others
/// over IPv4.
pub struct Star {
    pub nodes: Vec<WgGoNode>,
    pub gateway: GatewayProcess,
    pub node_ns: Vec<Netns>,
    pub gateway_ns: Netns,
    _dir: ScratchDir,
}

impl Star {
    pub fn new(n: usize) -> Result<Self> {
        let dir = ScratchDir::new()?;
        let gateway_ns = Netns::new("dpg")?;
        let mut node_ns = Vec::new();
        for i in 0..n {
            let ns = Netns::new("dpn")?;
            let veth = VethPair::connect(&gateway_ns, &format!("10.200.{i}.1/24"), &ns, &format!("10.200.{i}.2/24"))?;
            gateway_ns.ip(&["address", "add", &format!("fd00:200:{i}::1/64"), "dev", &veth.a, "nodad"])?;
            ns.ip(&["address", "add", &format!("fd00:200:{i}::2/64"), "dev", &veth.b, "nodad"])?;
            node_ns.push(ns);
        }
        // Keys first: the gateway needs the nodes' public keys, the nodes the gateway's.
        let node_keys: Vec<Keypair> =
            (0..n).map(|i| Keypair::generate(dir.path(), &format!("node{i}"))).collect::<Result<_>>()?;
        let peers: Vec<(String, String)> =
            node_keys.iter().enumerate().map(|(i, k)| (k.public.clone(), format!("{TUNNEL_PREFIX}.{h}/32,{TUNNEL_PREFIX6}:{h}/128", h = i + 2))).collect();
        let gateway = GatewayProcess::start(&gateway_ns, dir.path(), &peers)?;
        let mut nodes = Vec::new();
        for (i, (ns, keys)) in node_ns.iter().zip(node_keys).enumerate() {
            nodes.push(WgGoNode::start(
                ns,
                keys,
                &format!("{TUNNEL_PREFIX}.{}", i + 2),
                &gateway.keys.public,
                &if i % 2 == 1 { format!("[fd00:200:{i}::1]:{WG_PORT}") } else { format!("10.200.{i}.1:{WG_PORT}") },
            )?);
        }
        Ok(Self { nodes, gateway, node_ns, gateway_ns, _dir: dir })
    }

    /// The scratch directory holding the key files.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Pings `to` from node `i` until one reply arrives (the first packets
    /// wait for the handshake) or `timeout` passes.
    pub fn ping_from(&self, i: usize, to: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("ping {to} from node {i}"), timeout, || {
            Ok(self.node_ns[i].exec("ping", &["-c", "1", "-W", "1", to]).is_ok().then_some(()))
        })
    }
}

/// An iperf3 TCP run, summarised from its JSON output.
#[derive(Debug, Clone)]
pub struct IperfRun {
    /// Bits per second of each reporting interval.
    pub intervals: Vec<f64>,
    pub sent_bits_per_second: f64,
    pub received_bits_per_second: f64,
    pub received_bytes: u64,
    pub seconds: f64,
    pub retransmits: u64,
}

/// Starts a one-shot iperf3 server in `ns` on `port`.
pub fn iperf3_server(ns: &Netns, port: u16) -> Result<ChildGuard> {
    let mut cmd = ns.command("iperf3");
    cmd.args(["-s", "-1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    let server = ChildGuard::spawn(cmd, "iperf3 server")?;
    let port_s = port.to_string();
    wait_for("iperf3 server listening", Duration::from_secs(5), || {
        let out = ns.exec("ss", &["-Hltn", "sport", "=", &format!(":{port_s}")])?;
        Ok((!out.stdout.is_empty()).then_some(()))
    })?;
    Ok(server)
}

/// Runs an iperf3 TCP client in `ns` against `server:port` for `seconds`.
pub fn iperf3_client(ns: &Netns, server: &str, port: u16, seconds: u32) -> Result<IperfRun> {
    iperf3(ns, server, port, seconds, false)
}

/// The same with the server sending (`iperf3 -R`).
pub fn iperf3_client_reverse(ns: &Netns, server: &str, port: u16, seconds: u32) -> Result<IperfRun> {
    iperf3(ns, server, port, seconds, true)
}

fn iperf3(ns: &Netns, server: &str, port: u16, seconds: u32, reverse: bool) -> Result<IperfRun> {
    let (port, seconds) = (port.to_string(), seconds.to_string());
    // A stalled control connection would hang iperf3 forever: bound it.
    let limit = (seconds.parse::<u32>()? + 30).to_string();
    let mut args = vec!["-s", "KILL", &limit, "iperf3", "-c", server, "-p", &port, "-t", &seconds, "-i", "1", "-J"];
    if reverse {
        args.push("-R");
    }
    let out = ns.exec("timeout", &args)?;
    parse_iperf3(&String::from_utf8(out.stdout)?)
}

pub fn parse_iperf3(json: &str) -> Result<IperfRun> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 JSON")?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let intervals = v["intervals"]
        .as_array()
        .context("iperf3 intervals")?
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0))
        .collect();
    Ok(IperfRun {
        intervals,
        sent_bits_per_second: v["end"]["sum_sent"]["bits_per_second"].as_f64().unwrap_or(0.0),
        received_bits_per_second: v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0),
        received_bytes: v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0),
        seconds: v["end"]["sum_received"]["seconds"].as_f64().unwrap_or(0.0),
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// Counters of one interface (from sysfs via `ip -s -j`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets dropped: e.g. a TUN whose queue to its userspace reader was full.
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

pub fn link_stats(ns: &Netns, iface: &str) -> Result<LinkStats> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let stats = &v[0]["stats64"];
    let field = |dir: &str, name: &str| stats[dir][name].as_u64().with_context(|| format!("{iface}: {dir} {name}"));
    Ok(LinkStats {
        rx_bytes: field("rx", "bytes")?,
        tx_bytes: field("tx", "bytes")?,
        rx_dropped: field("rx", "dropped")?,
        tx_dropped: field("tx", "dropped")?,
    })
}

/// Bytes received and sent by `iface` in `ns`.
pub fn link_bytes(ns: &Netns, iface: &str) -> Result<(u64, u64)> {
    let s = link_stats(ns, iface)?;
    Ok((s.rx_bytes, s.tx_bytes))
}
