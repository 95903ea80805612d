//! The control API the access layer calls, in-process: a real `wireguard-go`
//! node whose key is unknown is reported (key and endpoint) on the event
//! channel; `add_peer` with a chosen slot admits it, `update_peer` rekeys it
//! and `remove_peer` cuts it off, each taking effect live.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use gateway::dataplane::cli::read_private_key;
use gateway::dataplane::{parse_key, Dataplane, DataplaneConfig, DeviceEvent, PeerConfig};
use gateway_tests::netns::{require_root, unique_name, wait_for, Netns, VethPair};
use gateway_tests::wg::{wg, Keypair, ScratchDir, WgGoNode, TUNNEL_PREFIX, WG_PORT};

fn pings(ns: &Netns, to: &str) -> bool {
    ns.exec("ping", &["-c", "1", "-W", "1", to]).is_ok()
}

#[test]
fn access_layer_adds_rekeys_and_removes_a_peer_live() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = ScratchDir::new()?;
    let gateway_ns = Netns::new("dpg")?;
    let node_ns = Netns::new("dpn")?;
    VethPair::connect(&gateway_ns, "10.200.0.1/24", &node_ns, "10.200.0.2/24")?;
    let gateway_keys = Keypair::generate(dir.path(), "gateway")?;
    let config = DataplaneConfig {
        iface: unique_name("wgg"),
        listen_port: WG_PORT,
        private_key: read_private_key(&gateway_keys.private_file)?,
        addresses: vec![format!("{TUNNEL_PREFIX}.1/24").parse()?],
        mtu: 1420,
        uapi: false,
        // Two shards whatever the machine: peers on both, hand-offs between.
        workers: 2,
        takeover: true,
        max_burst: gateway::dataplane::DEFAULT_MAX_BURST.into(),
    };
    // Created inside the namespace; its threads and sockets stay there.
    let (dataplane, mut events) = gateway_ns.within(move || Dataplane::start(config))?;
    let handle = dataplane.handle();
    let gateway_ip = format!("{TUNNEL_PREFIX}.1");

    let node_keys = Keypair::generate(dir.path(), "node")?;
    let node_key = parse_key(&node_keys.public)?;
    let node = WgGoNode::start(&node_ns, node_keys, &format!("{TUNNEL_PREFIX}.2"), &gateway_keys.public, &format!("10.200.0.1:{WG_PORT}"))?;

    // Unknown key: refused, and reported with the endpoint to deny.
    ensure!(!pings(&node_ns, &gateway_ip), "an unknown key got through");
    let event = wait_for("rejected handshake event", Duration::from_secs(10), || Ok(events.try_recv().ok()))?;
    let DeviceEvent::RejectedHandshake { public_key, endpoint } = event;
    ensure!(public_key == node_key, "event names the initiator's key");
    ensure!(endpoint.ip().to_string() == "10.200.0.2", "event names the source endpoint: {endpoint}");

    // Granted: the slot is the caller's choice.
    let peer = |key, slot| PeerConfig {
        public_key: key,
        slot,
        allowed_ips: vec![format!("{TUNNEL_PREFIX}.2/32").parse().expect("static CIDR")],
        endpoint: None,
        persistent_keepalive: None,
    };
    handle.add_peer(peer(node_key, 2))?;
    wait_for("ping after add_peer", Duration::from_secs(15), || Ok(pings(&node_ns, &gateway_ip).then_some(())))?;
    let stats = handle.peer(&node_key).context("peer listed")?;
    ensure!(stats.slot == 2 && stats.since_last_handshake.is_some() && stats.rx_bytes > 0, "{stats:?}");
    ensure!(stats.endpoint.map(|e| e.ip().to_string()) == Some("10.200.0.2".into()), "{stats:?}");

    // Rekey: the node switches keys, the access layer swaps old for new.
    let new_keys = Keypair::generate(dir.path(), "node-new")?;
    let new_key = parse_key(&new_keys.public)?;
    wg(&["set", &node.iface, "private-key", new_keys.private_path()])?;
    handle.update_peer(&node_key, peer(new_key, 2))?;
    ensure!(handle.peer(&node_key).is_none(), "old key gone");
    wait_for("ping after rekey", Duration::from_secs(15), || Ok(pings(&node_ns, &gateway_ip).then_some(())))?;

    // Revoked: cut off at once.
    handle.remove_peer(&new_key)?;
    ensure!(handle.peers().is_empty());
    ensure!(!pings(&node_ns, &gateway_ip), "a removed peer still gets through");
    drop(node);
    dataplane.stop();
    Ok(())
}
