//! Two gateways, one network: a [`Lab`] (anvil, the LAN bridge, node
//! namespaces) with two `gateway run` daemons sharing one WireGuard key, each
//! in its own namespace with Debian's keepalived moving a floating address
//! between them (VRRPv3, unicast between those two namespaces only), and
//! `wireguard-go` nodes dialing the floating address. Used by the failover
//! test and `cargo xtask bench failover`; everything goes on drop.

use crate::cutproxy::CutProxy;
use crate::keepalived::{holds, Keepalived, Vrrp};
use crate::lab::{attach_to_lan, http_get_in, metric_in, write_secret, Lab, DEV_ADDRESSES, GATEWAY_LAN_IP, HTTP_PORT};
use crate::netns::{gateway_bin, unique_name, wait_for, ChildGuard, Netns};
use crate::wg::{Keypair, WgGoNode, TUNNEL_PREFIX, WG_PORT};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The address the nodes dial, held by whichever gateway is master.
pub const FLOATING_IP: &str = "10.201.0.100";
/// The second gateway's own underlay address (the first has the lab's).
pub const SECOND_LAN_IP: &str = "10.201.0.2";
const LAN_PREFIX_LEN: u8 = 24;

/// One `gateway run` in its namespace, started and killed at will.
pub struct GatewayDaemon {
    pub ns: String,
    pub instance: String,
    pub wg_iface: String,
    pub underlay: String,
    pub lan_ip: String,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    process: Option<ChildGuard>,
}

impl GatewayDaemon {
    fn netns(&self) -> Netns {
        Netns::existing(&self.ns)
    }

    /// Spawns the daemon (its log appended to `<name>.log`); does not wait.
    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(gateway_bin());
        cmd.args(["--netns", &self.ns, "run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.process = Some(ChildGuard::spawn(cmd, "gateway run")?);
        Ok(())
    }

    pub fn ready(&self) -> bool {
        matches!(self.http_get("/readyz"), Ok((200, _)))
    }

    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let log = self.log.clone();
        wait_for("gateway ready", timeout, || {
            if let Some(p) = self.process.as_mut() {
                if !p.is_running() {
                    bail!("gateway exited during start-up:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
            Ok(self.ready().then_some(()))
        })
    }

    /// SIGKILL: a crash, no clean-up runs (the XDP program stays attached).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.child_mut().kill()?;
            p.child_mut().wait()?;
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get_in(&self.netns(), HTTP_PORT, path)
    }

    pub fn metric(&self, series: &str) -> Result<f64> {
        metric_in(&self.netns(), series)
    }

    /// Whether this gateway's namespace holds the floating address.
    pub fn holds_floating(&self) -> Result<bool> {
        holds(&self.netns(), &self.underlay, FLOATING_IP)
    }

    /// The data plane's peers, by base64 key (`wg show <iface> dump`).
    pub fn wg_peers(&self) -> Result<Vec<String>> {
        Ok(crate::wg::wg_dump(&self.wg_iface)?.into_keys().collect())
    }
}

impl Drop for GatewayDaemon {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.terminate(Duration::from_secs(5));
        }
        let _ = Command::new(gateway_bin()).args(["xdp", "detach", "--instance", &self.instance]).output();
    }
}

/// The whole pair. Field order is drop order: keepalived first (it removes
/// the floating address), then the nodes, the gateways, and the lab.
pub struct HaPair {
    keepalived: Vec<Keepalived>,
    pub nodes: Vec<WgGoNode>,
    pub gateways: [GatewayDaemon; 2],
    _rpc: CutProxy,
    second_ns: Netns,
    pub node_keys: Vec<Keypair>,
    pub lab: Lab,
}

impl HaPair {
    /// `nodes` nodes with tokens 1..=n (tunnel IPs .2, .3, ...); `takeover`
    /// false switches the stateless takeover off on both gateways.
    pub fn new(nodes: usize, takeover: bool) -> Result<Self> {
        let lab = Lab::new(nodes)?;
        let node_keys: Vec<Keypair> = (0..nodes).map(|i| Keypair::generate(lab.dir.path(), &format!("node{i}"))).collect::<Result<_>>()?;
        for (i, k) in node_keys.iter().enumerate() {
            lab.node_cli(0, &["mint", DEV_ADDRESSES[1], &format!("node-{i}"), "--pubkey", &k.public, "--json"])?;
        }
        let second_ns = Netns::new("lg2")?;
        let second_underlay = attach_to_lan(&lab.lan, &second_ns, &format!("{SECOND_LAN_IP}/{LAN_PREFIX_LEN}"))?;
        // The second gateway follows the same anvil through a forwarder.
        let rpc = CutProxy::between(second_ns.name(), lab.anvil_port(), lab.gw.name(), lab.anvil_port())?;
        // One WireGuard key, distributed like any secret file (0600).
        let key_text = std::fs::read_to_string(&lab.gateway_keys.private_file)?;
        let second_key = lab.dir.path().join("gateway-b.key");
        write_secret(&second_key, &key_text)?;

        let env = if takeover { Vec::new() } else { vec![("GATEWAY_WIREGUARD_TAKEOVER".to_string(), "false".to_string())] };
        let floating_endpoint = format!("{FLOATING_IP}:{WG_PORT}");
        let first_config = lab
            .gateway_config(&format!("ws://127.0.0.1:{}", lab.anvil_port()), 100, "")
            .replace(&format!("{GATEWAY_LAN_IP}:{WG_PORT}"), &floating_endpoint);
        let first = GatewayDaemon {
            ns: lab.gw.name().to_string(),
            instance: lab.instance.clone(),
            wg_iface: lab.wg_iface.clone(),
            underlay: lab.gateway_iface.clone(),
            lan_ip: GATEWAY_LAN_IP.to_string(),
            config: lab.dir.path().join("gateway-a.toml"),
            log: lab.dir.path().join("gateway-a.log"),
            env: env.clone(),
            process: None,
        };
        let second = GatewayDaemon {
            ns: second_ns.name().to_string(),
            instance: unique_name("lab"),
            wg_iface: unique_name("wgl"),
            underlay: second_underlay,
            lan_ip: SECOND_LAN_IP.to_string(),
            config: lab.dir.path().join("gateway-b.toml"),
            log: lab.dir.path().join("gateway-b.log"),
            env,
            process: None,
        };
        let second_config = first_config
            .replace(&first.instance, &second.instance)
            .replace(&first.wg_iface, &second.wg_iface)
            .replace(lab.gateway_keys.private_path(), second_key.to_str().context("utf-8 path")?)
            .replace(&format!("\"{}\"", first.underlay), &format!("\"{}\"", second.underlay))
            .replace("/state\"", "/state-b\"");
        std::fs::write(&first.config, first_config)?;
        std::fs::write(&second.config, second_config)?;
        let mut gateways = [first, second];
        for g in &mut gateways {
            g.start()?;
        }
        for g in &mut gateways {
            g.wait_ready(Duration::from_secs(60))?;
        }

        let mut keepalived = Vec::new();
        for (me, peer) in [(0, 1), (1, 0)] {
            let g = &gateways[me];
            let vrrp = Vrrp {
                router_id: unique_name("ha"),
                iface: g.underlay.clone(),
                self_ip: g.lan_ip.clone(),
                peer_ip: gateways[peer].lan_ip.clone(),
                floating: format!("{FLOATING_IP}/{LAN_PREFIX_LEN}"),
                wg_iface: g.wg_iface.clone(),
            };
            let ns = Netns::existing(&g.ns);
            keepalived.push(Keepalived::start(&ns, lab.dir.path(), &vrrp)?);
        }
        let mut pair = HaPair { keepalived, nodes: Vec::new(), gateways, _rpc: rpc, second_ns, node_keys, lab };
        pair.wait_master(None, Duration::from_secs(20))?;
        for i in 0..nodes {
            let node = WgGoNode::start(
                &pair.lab.nodes[i],
                pair.node_keys[i].clone(),
                &Self::tunnel_ip(i),
                &pair.lab.gateway_keys.public,
                &floating_endpoint,
            )?;
            pair.nodes.push(node);
        }
        Ok(pair)
    }

    /// Node `i`'s tunnel address (token i + 1 is host i + 2).
    pub fn tunnel_ip(i: usize) -> String {
        format!("{TUNNEL_PREFIX}.{}", i + 2)
    }

    /// The gateways' shared tunnel address.
    pub fn gateway_tunnel_ip() -> String {
        format!("{TUNNEL_PREFIX}.1")
    }

    /// Which gateway holds the floating address, if exactly one does.
    pub fn master(&self) -> Result<Option<usize>> {
        let held: Vec<usize> = (0..2).filter(|&i| self.gateways[i].holds_floating().unwrap_or(false)).collect();
        Ok(match held.as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    }

    /// Waits until exactly one gateway holds the floating address, and not
    /// `not` (the one just killed).
    pub fn wait_master(&self, not: Option<usize>, timeout: Duration) -> Result<usize> {
        wait_for("one gateway holding the floating address", timeout, || {
            Ok(self.master()?.filter(|m| Some(*m) != not))
        })
    }

    /// Waits until gateway `i`'s keepalived is a backup ready to take over:
    /// its gateway answers ready and keepalived has left FAULT.
    pub fn wait_standby(&self, i: usize, timeout: Duration) -> Result<()> {
        wait_for("the standby ready to take over", timeout, || {
            Ok((self.gateways[i].ready() && self.keepalived[i].state()?.as_deref() == Some("BACKUP")).then_some(()))
        })
    }

    /// The second gateway's namespace (the first's is `lab.gw`).
    pub fn second_ns(&self) -> &Netns {
        &self.second_ns
    }

    /// Gateway `i`'s namespace.
    pub fn ns(&self, i: usize) -> Netns {
        Netns::existing(&self.gateways[i].ns)
    }
}
