//! Faults, tried for real: the RPC cut off and restored, one of two RPC
//! endpoints lost, the gateway killed with SIGKILL mid-backfill and while a
//! revocation happens, and hostile packets at the kernel and userspace
//! paths. The gateway keeps what it knew, never grants what the chain does
//! not, and comes back by itself.

use anyhow::{ensure, Context, Result};
use gateway::xdp::PinnedMaps;
use gateway_common::XdpVerdict;
use gateway_tests::cutproxy::CutProxy;
use gateway_tests::lab::{Lab, DEV_ADDRESSES, GATEWAY_LAN_IP};
use gateway_tests::netns::{require_root, wait_for};
use gateway_tests::packets;
use gateway_tests::wg::{Keypair, TUNNEL_PREFIX, WG_PORT};
use std::time::Duration;

fn slot_open(lab: &Lab, slot: u32) -> Result<bool> {
    PinnedMaps::open_instance(&lab.instance)?.allow.is_open(slot)
}

fn access_reason(lab: &Lab, key: &str) -> Result<(u16, String)> {
    lab.http_get(&format!("/v1/access/{key}"))
}

fn mint(lab: &Lab, node: &str, key: &str) -> Result<()> {
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], node, "--pubkey", key, "--json"]).map(|_| ())
}

#[test]
fn rpc_outage_serves_last_state_then_fails_closed_and_catches_up() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    let proxy = CutProxy::start(lab.gw.name(), 8546, lab.anvil_port())?;
    let keys_a = Keypair::generate(lab.dir.path(), "a")?;
    mint(&lab, "node-a", &keys_a.public)?;
    lab.gateway_env.push(("GATEWAY_CHAIN_MAX_STALENESS_S".into(), "10".into()));
    lab.start_gateway_full("ws://127.0.0.1:8546", 100, "")?;
    let _node = lab.start_node(0, keys_a.clone(), &format!("{TUNNEL_PREFIX}.2"))?;
    let gw_ip = format!("{TUNNEL_PREFIX}.1");
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(20)), "A connects");

    proxy.cut();
    // Revoked on chain while the gateway cannot see it: inside the staleness
    // window the last known state is still served.
    lab.node_cli(0, &["revoke", "1", "--json"])?;
    ensure!(slot_open(&lab, 2)?, "within max staleness the last known state is served");
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(2)), "A still works inside the staleness window");
    wait_for("readyz reports the outage", Duration::from_secs(30), || {
        let (status, body) = lab.http_get("/readyz")?;
        Ok((status == 503 && body.contains("chain")).then_some(()))
    })?;

    // Past max staleness: fail closed (the default policy).
    wait_for("fail closed after max staleness", Duration::from_secs(30), || Ok((!slot_open(&lab, 2)?).then_some(())))?;
    let (status, body) = access_reason(&lab, &keys_a.public)?;
    ensure!(status != 200 && body.contains("chain_unavailable"), "stale decision: {status} {body}");

    // Back online: the revocation made during the outage is applied from the cursor.
    proxy.restore();
    wait_for("revocation caught up", Duration::from_secs(30), || {
        let (status, body) = access_reason(&lab, &keys_a.public)?;
        Ok((status != 200 && body.contains("revoked")).then_some(()))
    })?;
    wait_for("ready again", Duration::from_secs(15), || Ok((lab.http_get("/readyz")?.0 == 200).then_some(())))?;
    ensure!(!slot_open(&lab, 2)?, "the revoked slot stays closed");
    ensure!(!lab.ping(0, &gw_ip, Duration::from_secs(3)), "revoked A stays out");
    Ok(())
}

#[test]
fn losing_one_of_two_rpc_endpoints_changes_nothing_visible() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    let first = CutProxy::start(lab.gw.name(), 8547, lab.anvil_port())?;
    let second = CutProxy::start(lab.gw.name(), 8548, lab.anvil_port())?;
    lab.start_gateway_full(r#""http://127.0.0.1:8547", "http://127.0.0.1:8548""#, 100, "")?;
    first.cut();
    let keys = Keypair::generate(lab.dir.path(), "b")?;
    mint(&lab, "node-b", &keys.public)?;
    wait_for("grant seen through the second endpoint", Duration::from_secs(20), || Ok(slot_open(&lab, 2)?.then_some(())))?;
    ensure!(lab.http_get("/readyz")?.0 == 200, "still ready");
    let _node = lab.start_node(0, keys, &format!("{TUNNEL_PREFIX}.2"))?;
    ensure!(lab.ping(0, &format!("{TUNNEL_PREFIX}.1"), Duration::from_secs(20)), "the node connects");
    drop(second);
    Ok(())
}

#[test]
fn sigkill_mid_backfill_and_during_a_revocation_recovers() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    const TOKENS: usize = 30;
    let mut lab = Lab::new(1)?;
    let mut first_key = None;
    for i in 0..TOKENS {
        let keys = Keypair::generate(lab.dir.path(), &format!("n{i}"))?;
        mint(&lab, &format!("node-{i}"), &keys.public)?;
        if i == 0 {
            first_key = Some(keys);
        }
    }
    let first_key = first_key.context("minted")?;
    // Start, and kill mid-backfill or right after; either way the files must be whole.
    lab.start_gateway("")?;
    lab.kill_gateway()?;
    let registry_path = lab.dir.path().join("state/registry.json");
    if registry_path.exists() {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&registry_path)?)?;
        ensure!(doc["version"] == "2.0", "a whole registry after SIGKILL");
    }
    lab.restart_gateway()?;
    wait_for("all tokens admitted", Duration::from_secs(30), || {
        let open = PinnedMaps::open_instance(&lab.instance)?.allow.open_slots()?;
        Ok((open.len() == TOKENS).then_some(()))
    })?;
    let _node = lab.start_node(0, first_key.clone(), &format!("{TUNNEL_PREFIX}.2"))?;
    let gw_ip = format!("{TUNNEL_PREFIX}.1");
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(20)), "node 1 connects");

    // Crash, revoke while down: the kernel keeps enforcing the old state
    // meanwhile, and the restart closes the slot from the chain.
    lab.kill_gateway()?;
    ensure!(slot_open(&lab, 2)?, "XDP stays attached across the crash");
    lab.node_cli(0, &["revoke", "2", "--json"])?;
    lab.restart_gateway()?;
    wait_for("revoked-while-down slot closed", Duration::from_secs(20), || Ok((!slot_open(&lab, 3)?).then_some(())))?;
    let open = PinnedMaps::open_instance(&lab.instance)?.allow.open_slots()?;
    let expected: Vec<u32> = (2..=TOKENS as u32 + 1).filter(|s| *s != 3).collect();
    ensure!(open == expected, "kernel slots match the registry exactly: {open:?}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&registry_path)?)?;
    ensure!(doc["peers"].as_array().map(|p| p.len()) == Some(TOKENS), "every token in the registry");
    // The surviving node reconnects to the restarted data plane by itself.
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(40)), "node 1 reconnects after the restart");
    Ok(())
}

#[test]
fn hostile_packets_are_counted_and_hurt_nobody() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(2)?;
    let keys = Keypair::generate(lab.dir.path(), "ok")?;
    mint(&lab, "node-ok", &keys.public)?;
    // Observe mode: every hostile packet also reaches the userspace path.
    lab.gateway_env.push(("GATEWAY_XDP_MODE".into(), "observe".into()));
    lab.start_gateway("")?;
    let _node = lab.start_node(0, keys, &format!("{TUNNEL_PREFIX}.2"))?;
    let gw_ip = format!("{TUNNEL_PREFIX}.1");
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(20)), "legit node connects");

    let before = PinnedMaps::open_instance(&lab.instance)?.stats.read()?;
    let user_malformed_before = lab.metric(r#"gw_wireguard_dropped_total{reason="malformed"}"#)?;
    let attacker = lab.nodes[1].name().to_string();
    let sent = gateway::netns::within(&attacker, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let to: std::net::SocketAddr = format!("{GATEWAY_LAN_IP}:{WG_PORT}").parse()?;
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut malformed = 0u64;
        for i in 0..2000u32 {
            let msg: Vec<u8> = match i % 5 {
                // random bytes of random length
                0 => (0..(next() % 200) as usize).map(|_| next() as u8).collect(),
                // a truncated initiation
                1 => packets::handshake_init(i)[..(next() % 148) as usize].to_vec(),
                // oversized "initiation"
                2 => {
                    let mut m = packets::handshake_init(i);
                    m.resize(1400, 0xAA);
                    m
                }
                // wrong type
                3 => packets::unknown_type(),
                // a replayed transport packet to an unknown session
                _ => packets::transport(0x00ab_cd00, 64),
            };
            if i % 5 != 4 {
                malformed += 1;
            }
            sock.send_to(&msg, to)?;
        }
        Ok(malformed)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let after = PinnedMaps::open_instance(&lab.instance)?.stats.read()?;
    let kernel_malformed = after.get(XdpVerdict::DropMalformed) - before.get(XdpVerdict::DropMalformed);
    // A random 4-byte header may happen to be a valid type and size; nearly all are malformed.
    ensure!(kernel_malformed + 20 >= sent, "kernel classified {kernel_malformed} of {sent} as malformed");
    ensure!(after.get(XdpVerdict::DropUnknownSlot) > before.get(XdpVerdict::DropUnknownSlot), "replays counted");
    ensure!(lab.http_get("/healthz")?.0 == 200, "the gateway survived");
    let user_malformed = lab.metric(r#"gw_wireguard_dropped_total{reason="malformed"}"#)? - user_malformed_before;
    ensure!(user_malformed > 0.0, "userspace counted malformed packets too");
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(5)), "the legit node is unaffected");
    Ok(())
}
