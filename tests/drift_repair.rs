//! Desired vs real against a running `gateway run` with real XDP in enforce
//! mode, real anvil and two real `wireguard-go` nodes: a peer added and a
//! granted peer removed with `wg set`, a slot opened with `gateway xdp allow`
//! and a granted slot closed with `gateway xdp close` are each seen at the
//! next read-back, counted by kind, and put back to what the chain says; the
//! nodes ping again. Before the hand-made changes, read-backs find nothing.

use anyhow::{ensure, Context, Result};
use gateway::xdp::PinnedMaps;
use gateway_tests::lab::Lab;
use gateway_tests::netns::{gateway_bin, require_root, wait_for};
use gateway_tests::pinger::Pinger;
use gateway_tests::wg::{wg, wg_dump, Keypair, TUNNEL_PREFIX};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

const KINDS: [&str; 4] = ["unknown_peer", "missing_peer", "opened_slot", "closed_slot"];
/// Several read-back periods (10 s each).
const REPAIRED_WITHIN: Duration = Duration::from_secs(60);

fn repairs(lab: &Lab) -> Result<BTreeMap<&'static str, f64>> {
    KINDS.iter().map(|k| Ok((*k, lab.metric(&format!("gw_drift_repairs_total{{kind=\"{k}\"}}"))?))).collect()
}

fn open_slots(lab: &Lab) -> Result<Vec<u32>> {
    PinnedMaps::open_instance(&lab.instance)?.allow.open_slots()
}

fn xdp_cli(lab: &Lab, verb: &str, slot: u32) -> Result<()> {
    let out = Command::new(gateway_bin()).args(["xdp", verb, &slot.to_string(), "--instance", &lab.instance]).output()?;
    ensure!(out.status.success(), "gateway xdp {verb} {slot}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[test]
fn hand_made_changes_to_peers_and_slots_are_put_back() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(2)?;
    let nodes = lab.start_with_granted_nodes("")?;
    let gateway_ip = format!("{TUNNEL_PREFIX}.1");
    let pingers = [Pinger::start(&lab.nodes[0], &gateway_ip)?, Pinger::start(&lab.nodes[1], &gateway_ip)?];
    for p in &pingers {
        p.wait_reply_after(SystemTime::now(), Duration::from_secs(15))?;
    }
    let granted_peers = wg_dump(&lab.wg_iface)?;
    let granted_slots = open_slots(&lab)?;
    ensure!(granted_peers.len() == 2 && granted_slots.len() == 2, "expected two peers and two open slots, got {granted_peers:?} {granted_slots:?}");

    // Two read-backs with the nodes up (the one at start and a periodic
    // one) find nothing to repair.
    let checks = "gw_drift_checks_total";
    let seen = lab.metric(checks)?;
    wait_for("a periodic read-back", REPAIRED_WITHIN, || Ok((lab.metric(checks)? > seen.max(1.0)).then_some(())))?;
    let before = repairs(&lab)?;
    ensure!(before.values().all(|n| *n == 0.0), "read-backs of an untouched gateway repaired {before:?}");

    // By hand: a stranger's peer, node 1's peer gone, a free slot opened,
    // a granted slot closed.
    let stranger = Keypair::generate(lab.dir.path(), "stranger")?;
    wg(&["set", &lab.wg_iface, "peer", &stranger.public, "allowed-ips", &format!("{TUNNEL_PREFIX}.50/32")])?;
    wg(&["set", &lab.wg_iface, "peer", &nodes[1].keys.public, "remove"])?;
    let free = (1..).find(|s| !granted_slots.contains(s)).context("a free slot")?;
    xdp_cli(&lab, "allow", free)?;
    xdp_cli(&lab, "close", granted_slots[0])?;
    ensure!(wg_dump(&lab.wg_iface)?.contains_key(&stranger.public), "wg set did not add the stranger");
    ensure!(open_slots(&lab)?.contains(&free), "gateway xdp allow did not open slot {free}");

    wait_for("every hand-made change repaired", REPAIRED_WITHIN, || {
        let now = repairs(&lab)?;
        Ok(KINDS.iter().all(|k| now[k] >= 1.0).then_some(now))
    })
    .map(|now| eprintln!("repairs by kind: {now:?}"))?;
    let peers = wg_dump(&lab.wg_iface)?;
    ensure!(
        peers.keys().eq(granted_peers.keys()),
        "the data plane holds {:?}, the chain grants {:?}",
        peers.keys().collect::<Vec<_>>(),
        granted_peers.keys().collect::<Vec<_>>()
    );
    for (key, peer) in &peers {
        ensure!(peer.allowed_ips == granted_peers[key].allowed_ips, "peer {key} came back with {:?}", peer.allowed_ips);
    }
    ensure!(open_slots(&lab)? == granted_slots, "open slots {:?}, granted {granted_slots:?}", open_slots(&lab)?);
    let repaired = SystemTime::now();
    for p in &pingers {
        p.wait_reply_after(repaired, Duration::from_secs(30))?;
    }
    let log = std::fs::read_to_string(lab.log_path())?;
    ensure!(log.contains("drift:") && log.contains(&stranger.public), "the log names no repair of the stranger's peer");
    Ok(())
}
