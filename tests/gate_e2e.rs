//! The chain decides, the kernel enforces, everything real: anvil with the
//! contract, `gateway run`, two `wireguard-go` nodes minted on chain. A
//! revocation closes the node's slot in XDP (its packets and renewed
//! handshakes die in the kernel, not in userspace) while the other node's
//! iperf3 stream runs on; a rekey lets only the new key in; a transfer locks
//! the old key out until the new owner binds one.

use anyhow::{ensure, Context, Result};
use gateway::xdp::PinnedMaps;
use gateway_common::XdpVerdict;
use gateway_tests::lab::{Lab, DEV_ADDRESSES};
use gateway_tests::netns::{require_root, wait_for};
use gateway_tests::wg::{iperf3_client, iperf3_server, wg, Keypair, TUNNEL_PREFIX};
use std::time::{Duration, Instant};

const NODE_A: usize = 0;
const NODE_B: usize = 1;
/// Token 1 -> host 2, token 2 -> host 3 (the gateway holds host 1).
const SLOT_A: u32 = 2;
const SLOT_B: u32 = 3;

fn xdp(lab: &Lab, reason: XdpVerdict) -> Result<u64> {
    Ok(PinnedMaps::open_instance(&lab.instance)?.stats.read()?.get(reason))
}

fn slot_open(lab: &Lab, slot: u32) -> Result<bool> {
    PinnedMaps::open_instance(&lab.instance)?.allow.is_open(slot)
}

fn userspace_unknown_slot(lab: &Lab) -> Result<f64> {
    lab.metric(r#"gw_wireguard_dropped_total{reason="unknown_slot"}"#)
}

#[test]
fn revoke_rekey_and_transfer_are_enforced_end_to_end() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(2)?;
    let gw_ip = format!("{TUNNEL_PREFIX}.1");
    let keys_a = Keypair::generate(lab.dir.path(), "a")?;
    let keys_b = Keypair::generate(lab.dir.path(), "b")?;
    let minted_a = lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "node-a", "--pubkey", &keys_a.public, "--json"])?;
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "node-b", "--pubkey", &keys_b.public, "--json"])?;
    ensure!(minted_a["token_id"].to_string().trim_matches('"') == "1", "first token is 1: {minted_a}");

    lab.start_gateway("")?;
    let node_a = lab.start_node(NODE_A, keys_a.clone(), &format!("{TUNNEL_PREFIX}.2"))?;
    let node_b = lab.start_node(NODE_B, keys_b.clone(), &format!("{TUNNEL_PREFIX}.3"))?;
    ensure!(lab.ping(NODE_A, &gw_ip, Duration::from_secs(20)), "node A reaches the gateway");
    ensure!(lab.ping(NODE_B, &gw_ip, Duration::from_secs(20)), "node B reaches the gateway");
    ensure!(slot_open(&lab, SLOT_A)? && slot_open(&lab, SLOT_B)?, "both slots open in XDP");
    let (status, body) = lab.http_get(&format!("/v1/access/{}", keys_a.public))?;
    ensure!(status == 200 && body.contains("granted"), "A granted: {status} {body}");

    // B streams through the gateway while A is revoked.
    let server = iperf3_server(&lab.gw, 5201)?;
    let b_ns_name = lab.nodes[NODE_B].name().to_string();
    let gw_ip_for_b = gw_ip.clone();
    let stream = std::thread::spawn(move || {
        iperf3_client(&gateway_tests::netns::Netns::existing(&b_ns_name), &gw_ip_for_b, 5201, 8)
    });
    std::thread::sleep(Duration::from_secs(2));

    let revoked_at = Instant::now();
    lab.node_cli(0, &["revoke", "1", "--json"])?;
    wait_for("A's slot closed in XDP", Duration::from_secs(10), || Ok((!slot_open(&lab, SLOT_A)?).then_some(())))?;
    eprintln!("revoke receipt to closed slot: {:?}", revoked_at.elapsed());

    // The same answer straight from the chain, without any gateway.
    let from_chain = std::process::Command::new(gateway_tests::netns::gateway_bin())
        .args(["--netns", lab.gw.name(), "access", "check", &keys_a.public, "--json", "--chain", "http://127.0.0.1:8545", "--contract", &lab.contract])
        .output()?;
    let answer = String::from_utf8_lossy(&from_chain.stdout);
    ensure!(!from_chain.status.success() && answer.contains("\"revoked\""), "access check --chain: {answer}");

    // A's transport packets now die in the kernel: the XDP counter rises,
    // the data plane never sees them.
    let kernel_before = xdp(&lab, XdpVerdict::DropUnknownSlot)?;
    let user_before = userspace_unknown_slot(&lab)?;
    ensure!(!lab.ping(NODE_A, &gw_ip, Duration::from_secs(3)), "revoked A cannot reach the gateway");
    let kernel_after = xdp(&lab, XdpVerdict::DropUnknownSlot)?;
    ensure!(kernel_after > kernel_before, "A's packets dropped in XDP ({kernel_before} -> {kernel_after})");
    ensure!(userspace_unknown_slot(&lab)? == user_before, "no userspace work for A's packets");

    // A's renewed handshakes are dropped in the kernel too: its endpoint was
    // denied when it was revoked.
    let denied_before = xdp(&lab, XdpVerdict::DropDeniedEndpoint)?;
    let rejected_before = lab.metric(r#"gw_wireguard_handshakes_total{result="rejected"}"#)?;
    wg(&["set", &node_a.iface, "peer", &lab.gateway_keys.public, "remove"])?;
    wg(&[
        "set", &node_a.iface, "peer", &lab.gateway_keys.public, "endpoint",
        &format!("{}:{}", gateway_tests::lab::GATEWAY_LAN_IP, gateway_tests::wg::WG_PORT),
        "allowed-ips", &format!("{TUNNEL_PREFIX}.0/24"), "persistent-keepalive", "1",
    ])?;
    ensure!(!lab.ping(NODE_A, &gw_ip, Duration::from_secs(4)), "A's new handshake fails");
    ensure!(xdp(&lab, XdpVerdict::DropDeniedEndpoint)? > denied_before, "A's initiations dropped in XDP");
    ensure!(
        lab.metric(r#"gw_wireguard_handshakes_total{result="rejected"}"#)? == rejected_before,
        "A's initiations never reached userspace"
    );

    // A peer cannot borrow another's tunnel address: B sources A's IP.
    let spoofed_before = lab.metric(r#"gw_wireguard_dropped_total{reason="spoofed_source"}"#)?;
    lab.nodes[NODE_B].ip(&["address", "add", &format!("{TUNNEL_PREFIX}.2/32"), "dev", &node_b.iface])?;
    let spoof = lab.nodes[NODE_B].exec("ping", &["-c", "2", "-W", "1", "-I", &format!("{TUNNEL_PREFIX}.2"), &gw_ip]);
    ensure!(spoof.is_err(), "a ping sourced from A's address gets no answer");
    lab.nodes[NODE_B].ip(&["address", "del", &format!("{TUNNEL_PREFIX}.2/32"), "dev", &node_b.iface])?;
    ensure!(
        lab.metric(r#"gw_wireguard_dropped_total{reason="spoofed_source"}"#)? > spoofed_before,
        "spoofed packets dropped by allowed-IPs"
    );

    // B's stream never stopped.
    let run = stream.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
    drop(server);
    ensure!(run.intervals.iter().all(|bps| *bps > 0.0), "B's stream had a zero interval: {:?}", run.intervals);
    eprintln!("B during A's revocation: {:.0} Mbit/s, {} retransmits", run.received_bits_per_second / 1e6, run.retransmits);

    // Rekey B (owner: dev account 1): the old key is out, the new key is in.
    let keys_b2 = Keypair::generate(lab.dir.path(), "b2")?;
    lab.node_cli(1, &["rekey", "2", "--pubkey", &keys_b2.public, "--json"])?;
    wait_for("B's old key removed", Duration::from_secs(10), || {
        let (status, _) = lab.http_get(&format!("/v1/access/{}", keys_b.public))?;
        Ok((status != 200).then_some(()))
    })?;
    wg(&["set", &node_b.iface, "private-key", keys_b2.private_path()])?;
    ensure!(lab.ping(NODE_B, &gw_ip, Duration::from_secs(20)), "B with its new key reaches the gateway");

    // Transfer B's token to dev account 2: its key is unbound until the new
    // owner binds one.
    lab.node_cli(1, &["transfer", "2", DEV_ADDRESSES[2], "--json"])?;
    wait_for("B's slot closed after transfer", Duration::from_secs(10), || Ok((!slot_open(&lab, SLOT_B)?).then_some(())))?;
    let (status, body) = lab.http_get(&format!("/v1/access/{}", keys_b2.public))?;
    ensure!(status != 200, "transferred key denied: {status} {body}");
    ensure!(!lab.ping(NODE_B, &gw_ip, Duration::from_secs(3)), "B locked out after the transfer");
    let keys_b3 = Keypair::generate(lab.dir.path(), "b3")?;
    lab.node_cli(2, &["rekey", "2", "--pubkey", &keys_b3.public, "--json"])?;
    wg(&["set", &node_b.iface, "private-key", keys_b3.private_path()])?;
    ensure!(lab.ping(NODE_B, &gw_ip, Duration::from_secs(20)), "the new owner's key connects");

    // What the operator sees.
    let (_, metrics) = lab.http_get("/metrics")?;
    for family in [
        "gw_registry_tokens",
        "gw_xdp_packets_total",
        "gw_wireguard_bytes_total",
        "gw_wireguard_handshakes_total",
        "gw_chain_head_block",
        "gw_chain_lag_blocks",
        "gw_chain_rpc_errors_total",
        "gw_revocation_latency_seconds_bucket",
        "gw_access_cache_total",
    ] {
        ensure!(metrics.contains(family), "/metrics lacks {family}");
    }
    let audit = std::fs::read_to_string(lab.dir.path().join("state/audit.jsonl")).context("audit log")?;
    for event in ["grant", "revoke", "rekey", "transfer"] {
        ensure!(audit.contains(event), "audit log lacks a {event} record:\n{audit}");
    }
    // The gateway's private key appears nowhere it could leak.
    let secret = std::fs::read_to_string(lab.gateway_keys.private_path())?.trim().to_string();
    let (_, peers) = lab.http_get("/v1/peers")?;
    lab.stop_gateway()?;
    let registry = std::fs::read_to_string(lab.dir.path().join("state/registry.json"))?;
    let log = std::fs::read_to_string(lab.log_path())?;
    for (what, text) in [("metrics", &metrics), ("/v1/peers", &peers), ("registry", &registry), ("audit log", &audit), ("log", &log)] {
        ensure!(!text.contains(&secret), "the private key leaked into the {what}");
    }
    let doc: serde_json::Value = serde_json::from_str(&registry)?;
    ensure!(!log.is_empty() && doc["version"] == "2.0", "the places searched are real");
    ensure!(
        !std::path::Path::new("/sys/fs/bpf").join(&lab.instance).exists(),
        "detach_on_exit removed the pins"
    );
    Ok(())
}
