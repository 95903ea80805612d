//! `gateway run` restarted on the same host takes its nodes back at their
//! next packet, not after their own timers (about 15 s): after a crash
//! (SIGKILL: the XDP program stays attached and is adopted) and after a
//! clean stop (SIGTERM with `detach_on_exit`: a fresh program whose slots the
//! first step opens). Real anvil, real XDP in enforce mode, two real
//! `wireguard-go` nodes pinging the gateway and each other. The same for
//! `gateway dataplane run` alone (peers on its command line, no chain).

use anyhow::{ensure, Result};
use gateway_tests::lab::Lab;
use gateway_tests::netns::{require_root, unique_name, Netns, VethPair};
use gateway_tests::pinger::Pinger;
use gateway_tests::wg::{GatewayProcess, Keypair, ScratchDir, WgGoNode, TUNNEL_PREFIX, WG_PORT};
use std::time::{Duration, SystemTime};

/// Generous beside the ~100 ms the takeover takes, far below the nodes' own
/// keepalive + rekey timeouts (15 s): a restart that waited for those fails.
const BACK_WITHIN: Duration = Duration::from_secs(3);

#[test]
fn a_restarted_gateway_takes_its_nodes_back_at_their_next_packet() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(2)?;
    let nodes = lab.start_with_granted_nodes("")?;
    let gateway_ip = format!("{TUNNEL_PREFIX}.1");
    let pingers = [
        ("node 0 -> gateway", Pinger::start(&lab.nodes[0], &gateway_ip)?),
        ("node 1 -> gateway", Pinger::start(&lab.nodes[1], &gateway_ip)?),
        ("node 0 -> node 1", Pinger::start(&lab.nodes[0], &nodes[1].tunnel_ip)?),
        ("node 1 -> node 0", Pinger::start(&lab.nodes[1], &nodes[0].tunnel_ip)?),
    ];
    let up = SystemTime::now();
    for (what, p) in &pingers {
        p.wait_reply_after(up, Duration::from_secs(15)).map_err(|e| e.context(format!("{what} before the restart")))?;
    }
    let drop_unknown = r#"gw_xdp_packets_total{reason="drop_unknown_slot",verdict="drop"}"#;
    for (how, crash) in [("SIGKILL", true), ("SIGTERM", false)] {
        let drops_before = lab.metric(drop_unknown)?;
        if crash {
            lab.kill_gateway()?;
        } else {
            lab.stop_gateway()?;
        }
        // The nodes keep pinging into the void for a moment.
        std::thread::sleep(Duration::from_millis(500));
        let restarted = SystemTime::now();
        lab.restart_gateway()?;
        for (what, p) in &pingers {
            let back = p.wait_reply_after(restarted, Duration::from_secs(30))?;
            eprintln!("after {how}: {what} back {} ms after the restart began", back.as_millis());
            ensure!(back < BACK_WITHIN, "after {how}: {what} came back only after {back:?}: no takeover");
        }
        let initiated = lab.metric(r#"gw_wireguard_takeovers_total{result="initiated"}"#)?;
        ensure!(initiated >= 2.0, "after {how}: the restarted gateway initiated {initiated} takeovers, expected one per node");
        let drops = lab.metric(drop_unknown)?;
        eprintln!("after {how}: XDP drop_unknown_slot {drops_before} -> {drops}");
        if crash {
            // The adopted program kept the slots open throughout: the nodes'
            // packets to the restarted gateway all passed the kernel.
            ensure!(drops == drops_before, "after {how}: XDP dropped {} of the nodes' packets", drops - drops_before);
        }
    }
    Ok(())
}

#[test]
fn a_restarted_data_plane_takes_all_its_nodes_back_at_their_next_packet() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = ScratchDir::new()?;
    let gw_ns = Netns::new("rdg")?;
    let node_ns = [Netns::new("rdn")?, Netns::new("rdn")?];
    let _veths = [
        VethPair::connect(&gw_ns, "10.200.0.1/24", &node_ns[0], "10.200.0.2/24")?,
        VethPair::connect(&gw_ns, "10.200.1.1/24", &node_ns[1], "10.200.1.2/24")?,
    ];
    let gw_keys = Keypair::generate(dir.path(), "gateway")?;
    let keys: Vec<Keypair> = (0..2).map(|i| Keypair::generate(dir.path(), &format!("n{i}"))).collect::<Result<_>>()?;
    let ips = [format!("{TUNNEL_PREFIX}.2"), format!("{TUNNEL_PREFIX}.3")];
    let peers: Vec<(String, String)> = keys.iter().zip(&ips).map(|(k, ip)| (k.public.clone(), format!("{ip}/32"))).collect();
    let iface = unique_name("wgr");
    let start = || GatewayProcess::start_as(&gw_ns, &iface, gw_keys.clone(), &peers, &[]);
    let mut gateway = start()?;
    let _nodes: Vec<WgGoNode> = (0..2)
        .map(|i| WgGoNode::start(&node_ns[i], keys[i].clone(), &ips[i], &gw_keys.public, &format!("10.200.{i}.1:{WG_PORT}")))
        .collect::<Result<_>>()?;
    let gateway_ip = format!("{TUNNEL_PREFIX}.1");
    let pingers = [
        ("node 0 -> gateway", Pinger::start(&node_ns[0], &gateway_ip)?),
        ("node 1 -> gateway", Pinger::start(&node_ns[1], &gateway_ip)?),
        ("node 0 -> node 1", Pinger::start(&node_ns[0], &ips[1])?),
        ("node 1 -> node 0", Pinger::start(&node_ns[1], &ips[0])?),
    ];
    let up = SystemTime::now();
    for (what, p) in &pingers {
        p.wait_reply_after(up, Duration::from_secs(15)).map_err(|e| e.context(format!("{what} before the restart")))?;
    }
    for (how, crash) in [("SIGKILL", true), ("SIGTERM", false)] {
        if !crash {
            gateway.process.terminate(Duration::from_secs(10))?;
        }
        // SIGKILL on drop when still running; the UAPI socket file goes too.
        drop(gateway);
        std::thread::sleep(Duration::from_millis(500));
        let restarted = SystemTime::now();
        gateway = start()?;
        for (what, p) in &pingers {
            let back = p.wait_reply_after(restarted, Duration::from_secs(30))?;
            eprintln!("data plane after {how}: {what} back {} ms after the restart began", back.as_millis());
            ensure!(back < BACK_WITHIN, "data plane after {how}: {what} came back only after {back:?}: no takeover");
        }
    }
    Ok(())
}
