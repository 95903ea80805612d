//! A whole deployment in network namespaces: anvil and the gateway daemon in
//! the gateway's namespace, a bridged LAN, and node namespaces that run real
//! `wireguard-go` peers. Everything is removed on drop.

use crate::netns::{gateway_bin, repo_root, unique_name, wait_for, ChildGuard, Netns};
use crate::wg::{Keypair, ScratchDir, WgGoNode, TUNNEL_PREFIX, WG_PORT};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// anvil's well-known development accounts (mnemonic "test test ... junk"):
/// 0 deploys and administers the contract, 1 and 2 own nodes.
pub const DEV_KEYS: [&str; 3] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];
pub const DEV_ADDRESSES: [&str; 3] = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
];
const ANVIL_PORT: u16 = 8545;
pub const HTTP_PORT: u16 = 9180;
/// The gateway's underlay address on the LAN.
pub const GATEWAY_LAN_IP: &str = "10.201.0.1";

pub struct Lab {
    pub dir: ScratchDir,
    pub gw: Netns,
    pub lan: Netns,
    pub nodes: Vec<Netns>,
    pub gateway_iface: String,
    pub instance: String,
    pub contract: String,
    pub gateway_keys: Keypair,
    pub signer_files: Vec<PathBuf>,
    pub config_path: PathBuf,
    /// The gateway's WireGuard interface (and UAPI socket) name.
    pub wg_iface: String,
    /// Extra environment for `gateway run` (GATEWAY_<SECTION>_<KEY> overrides).
    pub gateway_env: Vec<(String, String)>,
    anvil: Option<ChildGuard>,
    gateway: Option<ChildGuard>,
}

impl Lab {
    /// Namespaces (gateway, LAN bridge, `n` nodes), anvil, the contract.
    pub fn new(n: usize) -> Result<Self> {
        let dir = ScratchDir::new()?;
        let gw = Netns::new("lgw")?;
        let lan = Netns::new("lan")?;
        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        let gateway_iface = attach_to_lan(&lan, &gw, &format!("{GATEWAY_LAN_IP}/24"))?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = Netns::new("lnd")?;
            attach_to_lan(&lan, &ns, &format!("10.201.0.{}/24", i + 10))?;
            nodes.push(ns);
        }
        let anvil_bin = repo_root().join("node_modules/.bin/anvil");
        if !anvil_bin.exists() {
            bail!("{} missing: run .ci/setup (npm ci)", anvil_bin.display());
        }
        let mut cmd = gw.command(anvil_bin.to_str().context("utf-8")?);
        // States stay in memory: anvil otherwise spills them under
        // ~/.foundry/anvil/tmp (tens of GB over a 10,000-token run).
        cmd.args(["--port", &ANVIL_PORT.to_string(), "--host", "127.0.0.1", "--max-persisted-states", "0"]).stdout(Stdio::null()).stderr(Stdio::null());
        let anvil = ChildGuard::spawn(cmd, "anvil")?;
        let port = ANVIL_PORT;
        wait_for("anvil listening", Duration::from_secs(20), || {
            Ok(gw.within(move || Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()))?.then_some(()))
        })?;
        let mut signer_files = Vec::new();
        for (i, key) in DEV_KEYS.iter().enumerate() {
            let path = dir.path().join(format!("signer{i}.key"));
            write_secret(&path, key)?;
            signer_files.push(path);
        }
        let gateway_keys = Keypair::generate(dir.path(), "gateway")?;
        let mut lab = Lab {
            dir,
            gw,
            lan,
            nodes,
            gateway_iface,
            instance: unique_name("lab"),
            contract: String::new(),
            gateway_keys,
            signer_files,
            config_path: PathBuf::new(),
            wg_iface: unique_name("wgl"),
            gateway_env: Vec::new(),
            anvil: Some(anvil),
            gateway: None,
        };
        let out = lab.node_cli(0, &["deploy", "--json"])?;
        lab.contract = out["address"].as_str().context("deploy --json prints the address")?.to_string();
        Ok(lab)
    }

    /// `gateway --netns <gw> node <args>` signed by dev account `signer`,
    /// parsed from `--json` output.
    pub fn node_cli(&self, signer: usize, args: &[&str]) -> Result<serde_json::Value> {
        let out = Command::new(gateway_bin())
            .args(["--netns", self.gw.name(), "node"])
            .args(args)
            .env("GATEWAY_RPC_URL", format!("http://127.0.0.1:{ANVIL_PORT}"))
            .env("GATEWAY_CONTRACT", &self.contract)
            .env("GATEWAY_SIGNER_KEY", &self.signer_files[signer])
            .output()?;
        if !out.status.success() {
            bail!("gateway node {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("node {} output", args.join(" ")))
    }

    /// Writes the gateway's configuration and starts `gateway run` in its
    /// namespace, following the chain over WebSocket.
    pub fn start_gateway(&mut self, extra_toml: &str) -> Result<()> {
        self.start_gateway_full(&format!("ws://127.0.0.1:{ANVIL_PORT}"), 100, extra_toml)
    }

    /// The same, following the chain through `rpc` (ws:// or http://, polled
    /// every `poll_interval_ms`).
    pub fn start_gateway_with_rpc(&mut self, rpc: &str, poll_interval_ms: u64) -> Result<()> {
        self.start_gateway_full(rpc, poll_interval_ms, "")
    }

    /// `rpc` is the TOML list body of `chain.rpc_urls` (one quoted URL, or several).
    pub fn start_gateway_full(&mut self, rpc: &str, poll_interval_ms: u64, extra_toml: &str) -> Result<()> {
        self.write_config(rpc, poll_interval_ms, extra_toml)?;
        self.restart_gateway()
    }

    /// Writes the gateway's configuration (see [`start_gateway_full`](Self::start_gateway_full)).
    pub fn write_config(&mut self, rpc: &str, poll_interval_ms: u64, extra_toml: &str) -> Result<()> {
        let config = self.gateway_config(rpc, poll_interval_ms, extra_toml);
        self.config_path = self.dir.path().join("gateway.toml");
        std::fs::write(&self.config_path, config)?;
        Ok(())
    }

    /// The gateway's configuration as [`start_gateway_full`](Self::start_gateway_full)
    /// writes it (other gateways of a test derive theirs from it).
    pub fn gateway_config(&self, rpc: &str, poll_interval_ms: u64, extra_toml: &str) -> String {
        let state = self.dir.path().join("state");
        format!(
            r#"
[gateway]
instance = "{instance}"
state_dir = "{state}"
[chain]
rpc_urls = [{rpc_list}]
contract = "{contract}"
confirmations = 0
poll_interval_ms = {poll_interval_ms}
max_staleness_s = 600
[network]
cidr = "{TUNNEL_PREFIX}.0/24"
dns_server = "{TUNNEL_PREFIX}.1"
[wireguard]
interface = "{iface}"
listen_port = {WG_PORT}
private_key_file = "{key}"
public_endpoint = "{GATEWAY_LAN_IP}:{WG_PORT}"
[xdp]
iface = "{underlay}"
mode = "enforce"
deny_seconds = 300
detach_on_exit = true
[http]
listen = "127.0.0.1:{HTTP_PORT}"
{extra_toml}
"#,
            instance = self.instance,
            rpc_list = if rpc.starts_with('"') { rpc.to_string() } else { format!("\"{rpc}\"") },
            state = state.display(),
            contract = self.contract,
            iface = self.wg_iface,
            key = self.gateway_keys.private_path(),
            underlay = self.gateway_iface,
        )
    }

    /// Starts `gateway run` with the configuration already written, its log
    /// appended to [`log_path`](Self::log_path), and waits until it is ready.
    pub fn restart_gateway(&mut self) -> Result<()> {
        self.spawn_gateway()?;
        let log_path = self.log_path();
        wait_for("gateway ready", Duration::from_secs(30), || {
            if let Some(g) = self.gateway.as_mut() {
                if !g.is_running() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    bail!("gateway exited during start-up:\n{log}");
                }
            }
            Ok(matches!(self.http_get("/readyz"), Ok((200, _))).then_some(()))
        })
    }

    /// Starts `gateway run` without waiting for it (a restart while the
    /// chain is out of reach never gets ready).
    pub fn spawn_gateway(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut cmd = Command::new(gateway_bin());
        cmd.args(["--netns", self.gw.name(), "run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .envs(self.gateway_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.gateway = Some(ChildGuard::spawn(cmd, "gateway run")?);
        Ok(())
    }

    /// How the gateway ended, once it has (`None` while it runs or when none
    /// was started); the status is kept until the next start.
    pub fn gateway_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.gateway.as_mut().and_then(|g| g.child_mut().try_wait().ok().flatten())
    }

    /// The running gateway's process id.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.as_ref().map(ChildGuard::id)
    }

    /// Where the gateway's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// Kills the gateway with SIGKILL (a crash: no clean-up runs).
    pub fn kill_gateway(&mut self) -> Result<()> {
        if let Some(mut g) = self.gateway.take() {
            g.child_mut().kill()?;
            g.child_mut().wait()?;
        }
        Ok(())
    }

    /// The anvil endpoint inside the gateway's namespace.
    pub fn anvil_port(&self) -> u16 {
        ANVIL_PORT
    }

    /// Stops the gateway with SIGTERM.
    pub fn stop_gateway(&mut self) -> Result<()> {
        if let Some(mut g) = self.gateway.take() {
            let status = g.terminate(Duration::from_secs(10))?;
            if !status.success() {
                bail!("gateway exited with {status}");
            }
        }
        Ok(())
    }

    /// GET on the gateway's admin HTTP server (inside its namespace).
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get_in(&self.gw, HTTP_PORT, path)
    }

    /// One sample of the gateway's /metrics, e.g.
    /// `gw_xdp_packets_total{reason="drop_unknown_slot",verdict="drop"}`.
    pub fn metric(&self, series: &str) -> Result<f64> {
        metric_in(&self.gw, series)
    }

    /// Grants each node namespace a token of its own (`node-<i>`, owned by
    /// dev account 1, minted before the gateway starts), starts the gateway
    /// with `extra_toml`, then each node's wireguard-go at its token's
    /// tunnel address: token t is host t + 1, so node i is host i + 2.
    pub fn start_with_granted_nodes(&mut self, extra_toml: &str) -> Result<Vec<WgGoNode>> {
        let keys: Vec<Keypair> =
            (0..self.nodes.len()).map(|i| Keypair::generate(self.dir.path(), &format!("n{i}"))).collect::<Result<_>>()?;
        for (i, k) in keys.iter().enumerate() {
            self.node_cli(0, &["mint", DEV_ADDRESSES[1], &format!("node-{i}"), "--pubkey", &k.public, "--json"])?;
        }
        self.start_gateway(extra_toml)?;
        keys.into_iter().enumerate().map(|(i, k)| self.start_node(i, k, &format!("{TUNNEL_PREFIX}.{}", i + 2))).collect()
    }

    /// A wireguard-go node in namespace `i` with `keys`, dialing the gateway.
    pub fn start_node(&self, i: usize, keys: Keypair, tunnel_ip: &str) -> Result<WgGoNode> {
        WgGoNode::start(&self.nodes[i], keys, tunnel_ip, &self.gateway_keys.public, &format!("{GATEWAY_LAN_IP}:{WG_PORT}"))
    }

    /// Whether node `i` gets a ping reply from `to` within `timeout`.
    pub fn ping(&self, i: usize, to: &str, timeout: Duration) -> bool {
        wait_for("ping", timeout, || Ok(self.nodes[i].exec("ping", &["-c", "1", "-W", "1", to]).is_ok().then_some(()))).is_ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            let _ = g.terminate(Duration::from_secs(5));
        }
        if let Some(mut anvil) = self.anvil.take() {
            let _ = anvil.terminate(Duration::from_secs(5));
        }
        let _ = Command::new(gateway_bin()).args(["xdp", "detach", "--instance", &self.instance]).output();
    }
}

/// GET `path` from 127.0.0.1:`port` inside `ns` (a gateway's admin surface):
/// the status code and the body.
pub fn http_get_in(ns: &Netns, port: u16, path: &str) -> Result<(u16, String)> {
    let path = path.to_string();
    ns.within(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text.get(9..12).context("status line")?.parse()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, body))
    })
}

/// One sample of the /metrics of the gateway in `ns` (admin HTTP on
/// [`HTTP_PORT`]).
pub fn metric_in(ns: &Netns, series: &str) -> Result<f64> {
    let (_, body) = http_get_in(ns, HTTP_PORT, "/metrics")?;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix(series) {
            if let Some(v) = rest.strip_prefix(' ') {
                return Ok(v.trim().parse()?);
            }
        }
    }
    bail!("no series {series} in /metrics")
}

/// Asks `server` (UDP 53) for the A record of `name` from inside `ns`; an
/// error when nothing answers within 2 s.
pub fn dns_query(ns: &Netns, server: &str, name: &str) -> Result<(gateway::dns::wire::Rcode, Vec<std::net::Ipv4Addr>)> {
    let (server, name) = (server.to_string(), name.to_string());
    ns.within(move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(&gateway::dns::wire::query(0x4242, &name, gateway::dns::wire::TYPE_A), (server.as_str(), 53))?;
        let mut buf = [0u8; 512];
        let (len, _) = socket.recv_from(&mut buf).context("no DNS answer")?;
        anyhow::ensure!(buf[..2] == [0x42, 0x42], "answer to another query");
        gateway::dns::wire::parse_response(&buf[..len]).context("unparsable DNS answer")
    })
}

/// A veth from `ns` into the LAN bridge; returns the interface name in `ns`.
pub fn attach_to_lan(lan: &Netns, ns: &Netns, cidr: &str) -> Result<String> {
    let inner = unique_name("ve");
    let outer = unique_name("vl");
    crate::netns::ip(&["link", "add", &inner, "netns", ns.name(), "type", "veth", "peer", "name", &outer, "netns", lan.name()])?;
    lan.ip(&["link", "set", &outer, "master", "br0"])?;
    lan.ip(&["link", "set", &outer, "up"])?;
    ns.ip(&["addr", "add", cidr, "dev", &inner])?;
    ns.ip(&["link", "set", &inner, "up"])?;
    Ok(inner)
}

/// Writes a secret file readable by its owner only.
pub fn write_secret(path: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
