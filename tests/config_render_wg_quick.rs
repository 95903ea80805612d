//! `gateway config render` end to end: a node's rendered file, given to a
//! real `wg-quick` (over `wireguard-go`) in a scratch network namespace,
//! brings the node up against the gateway's data plane and reaches the
//! gateway's tunnel address. Root only (network namespaces, TUN).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use gateway_core::chain::{ChainEvent, LogMeta};
use gateway::store::RegistryStore;
use gateway_core::registry::{Network, Registry};
use gateway_tests::netns::{gateway_bin, require_root, unique_name, wait_for, Netns, VethPair};
use gateway_tests::wg::{wg_dump, GatewayProcess, Keypair, ScratchDir, TUNNEL_PREFIX, WG_PORT};

const CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const GATEWAY_UNDERLAY: &str = "10.203.0.1";
const NODE_UNDERLAY: &str = "10.203.0.2";

/// Brings the wg-quick interface down on drop; `wireguard-go` exits with it.
struct WgQuickUp<'a> {
    ns: &'a Netns,
    conf: std::path::PathBuf,
    iface: String,
}

impl Drop for WgQuickUp<'_> {
    fn drop(&mut self) {
        let conf = self.conf.to_string_lossy().into_owned();
        let _ = self.ns.command("wg-quick").args(["down", &conf]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = self.ns.ip(&["link", "delete", &self.iface]);
    }
}

#[test]
fn a_rendered_config_brings_a_node_up_with_wg_quick() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = ScratchDir::new()?;
    let gw_ns = Netns::new("rgw")?;
    let node_ns = Netns::new("rnd")?;
    let _veth = VethPair::connect(&gw_ns, &format!("{GATEWAY_UNDERLAY}/24"), &node_ns, &format!("{NODE_UNDERLAY}/24"))?;

    // The chain's view, as the gateway would have persisted it: token 1 is node-a.
    let node_keys = Keypair::generate(dir.path(), "node-a")?;
    let network = Network { cidr: format!("{TUNNEL_PREFIX}.0/24").parse()?, dns_server: format!("{TUNNEL_PREFIX}.1").parse()? };
    let contract = CONTRACT.parse()?;
    let (store, _) = RegistryStore::open(dir.path().join("registry.json"), contract, network)?;
    let mut registry = Registry::new(contract, network);
    let meta = LogMeta { block_number: 3, block_hash: format!("0x{:064x}", 3).parse()?, tx_hash: format!("0x{:064x}", 0xabc).parse()?, log_index: 0 };
    let granted = ChainEvent::Granted {
        token_id: 1,
        node_id: "node-a".into(),
        owner: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8".parse()?,
        public_key: node_keys.public.clone(),
        meta,
    };
    registry.apply(&granted, 1_764_000_000);
    store.save(&registry)?;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstate_dir = {state:?}\n[chain]\nrpc_urls = [\"ws://127.0.0.1:8545\"]\ncontract = \"{CONTRACT}\"\n\
             [network]\ncidr = \"{TUNNEL_PREFIX}.0/24\"\ndns_server = \"{TUNNEL_PREFIX}.1\"\n\
             [wireguard]\npublic_endpoint = \"{GATEWAY_UNDERLAY}:{WG_PORT}\"\npersistent_keepalive = 25\n[xdp]\nenabled = false\n",
            state = dir.path().display().to_string()
        ),
    )?;

    // The gateway's data plane, with the node admitted at its derived address.
    let gateway = GatewayProcess::start(&gw_ns, dir.path(), &[(node_keys.public.clone(), format!("{TUNNEL_PREFIX}.2/32"))])?;

    let out = std::process::Command::new(gateway_bin())
        .args(["config", "render", "--node", "node-a", "--config"])
        .arg(&config)
        .args(["--gateway-public-key", &gateway.keys.public, "--private-key-file", node_keys.private_path()])
        .output()
        .context("running gateway config render")?;
    ensure!(out.status.success(), "render failed: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout)?;
    ensure!(rendered.contains(&format!("\nAddress = {TUNNEL_PREFIX}.2/24\n")), "{rendered}");
    ensure!(rendered.contains(&format!("\nPublicKey = {}\n", gateway.keys.public)), "{rendered}");
    ensure!(!rendered.contains("<paste yours>"), "the node's key was filled in");

    // wg-quick names the interface after the file. `DNS =` needs resolvconf,
    // which a namespace test has no business changing: drop that line only.
    let iface = unique_name("wgq");
    let conf = dir.path().join(format!("{iface}.conf"));
    let without_dns: String = rendered.lines().filter(|l| !l.starts_with("DNS = ")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&conf, without_dns)?;
    // It holds the node's private key.
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let up = node_ns
        .command("wg-quick")
        .arg("up")
        .arg(&conf)
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .output()
        .context("wg-quick up")?;
    let _guard = WgQuickUp { ns: &node_ns, conf: conf.clone(), iface: iface.clone() };
    ensure!(up.status.success(), "wg-quick up failed: {}", String::from_utf8_lossy(&up.stderr));

    let gateway_ip = format!("{TUNNEL_PREFIX}.1");
    wait_for(&format!("ping {gateway_ip} through the rendered tunnel"), Duration::from_secs(15), || {
        Ok(node_ns.exec("ping", &["-c", "1", "-W", "1", &gateway_ip]).is_ok().then_some(()))
    })?;

    // The node's side is what the file said: the gateway as its one peer.
    let node_side = wg_dump(&iface)?;
    let peer = node_side.get(&gateway.keys.public).context("the gateway is the node's peer")?;
    ensure!(peer.endpoint.map(|e| e.to_string()) == Some(format!("{GATEWAY_UNDERLAY}:{WG_PORT}")), "{peer:?}");
    ensure!(peer.allowed_ips == vec![format!("{TUNNEL_PREFIX}.0/24")], "{peer:?}");
    // And the gateway saw the node handshake from its underlay address.
    let gateway_side = wg_dump(&gateway.iface)?;
    let node = gateway_side.get(&node_keys.public).context("the node is the gateway's peer")?;
    ensure!(node.endpoint.map(|e| e.ip().to_string()) == Some(NODE_UNDERLAY.to_string()), "{node:?}");
    ensure!(node.latest_handshake > 0, "{node:?}");
    Ok(())
}
