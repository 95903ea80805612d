//! `cargo xtask demo`: the whole story on a local dev chain, step by step.
//! anvil, the DstackAccessNFT contract, two minted nodes running real
//! wireguard-go, the gateway with its XDP front; traffic flows, one node is
//! revoked on chain and its packets die in the kernel. Everything it creates
//! (namespaces, processes, pins) is removed at the end, even on failure.

use anyhow::{ensure, Context, Result};
use gateway::xdp::PinnedMaps;
use gateway_common::XdpVerdict;
use gateway_tests::lab::{dns_query, Lab, DEV_ADDRESSES};
use gateway_tests::netns::wait_for;
use gateway_tests::wg::{iperf3_client, iperf3_server, wg, Keypair, TUNNEL_PREFIX};
use std::io::Write;
use std::time::{Duration, Instant};

struct Steps {
    n: u32,
    started: Instant,
}

impl Steps {
    fn step(&mut self, text: &str) {
        self.n += 1;
        say(&format!("\n\x1b[1m[{}] {text}\x1b[0m  (+{:.1}s)", self.n, self.started.elapsed().as_secs_f64()));
    }
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn detail(text: &str) {
    say(&format!("    {text}"));
}

fn main() -> Result<()> {
    let mut s = Steps { n: 0, started: Instant::now() };
    say("dstack WireGuard gateway: access from an NFT contract, enforced in the kernel");

    s.step("network namespaces (gateway, LAN bridge, two nodes) and a local anvil chain");
    let mut lab = Lab::new(2)?;
    detail(&format!("gateway ns {}, nodes {} and {}", lab.gw.name(), lab.nodes[0].name(), lab.nodes[1].name()));

    s.step("DstackAccessNFT deployed");
    detail(&format!("contract {}", lab.contract));

    s.step("two nodes generate WireGuard keys; the contract owner mints them access NFTs");
    let keys: Vec<Keypair> = (1..=2).map(|i| Keypair::generate(lab.dir.path(), &format!("node-{i}"))).collect::<Result<_>>()?;
    for (i, k) in keys.iter().enumerate() {
        let minted = lab.node_cli(0, &["mint", DEV_ADDRESSES[1], &format!("node-{}", i + 1), "--pubkey", &k.public, "--json"])?;
        detail(&format!(
            "node-{} key {} -> token {} (tx {}, block {})",
            i + 1,
            k.public,
            minted["token_id"],
            minted["tx_hash"].as_str().unwrap_or("?"),
            minted["block_number"]
        ));
    }

    s.step("the gateway starts: follows the chain, attaches XDP, brings up the userspace WireGuard data plane");
    lab.start_gateway("")?;
    detail(&format!("config {}", lab.config_path.display()));
    detail(&format!("XDP on {} with maps pinned in /sys/fs/bpf/{}", lab.gateway_iface, lab.instance));
    let (_, peers) = lab.http_get("/v1/peers")?;
    let peers: serde_json::Value = serde_json::from_str(&peers)?;
    for p in peers["peers"].as_array().context("peers")? {
        detail(&format!("registry: {} {} {} {}", p["node_id"], p["ip_address"], p["hostname"], p["status"]));
    }

    s.step("both nodes run wireguard-go and join 10.99.0.0/24");
    let node1 = lab.start_node(0, keys[0].clone(), &format!("{TUNNEL_PREFIX}.2"))?;
    let _node2 = lab.start_node(1, keys[1].clone(), &format!("{TUNNEL_PREFIX}.3"))?;
    let gw_ip = format!("{TUNNEL_PREFIX}.1");
    ensure!(lab.ping(0, &gw_ip, Duration::from_secs(20)), "node-1 reaches the gateway");
    ensure!(lab.ping(1, &gw_ip, Duration::from_secs(20)), "node-2 reaches the gateway");
    detail("node-1 -> gateway 10.99.0.1: ping ok");
    detail("node-2 -> gateway 10.99.0.1: ping ok");
    ensure!(lab.ping(0, &format!("{TUNNEL_PREFIX}.3"), Duration::from_secs(10)), "node-1 reaches node-2");
    detail("node-1 -> node-2 10.99.0.3 (forwarded inside the gateway): ping ok");
    let (_, addresses) = dns_query(&lab.nodes[0], &gw_ip, "node-2.vpn.dstack")?;
    ensure!(addresses == [format!("{TUNNEL_PREFIX}.3").parse::<std::net::Ipv4Addr>()?], "node-2.vpn.dstack resolves: {addresses:?}");
    detail(&format!("node-1 asks the gateway (DNS on {gw_ip}) for node-2.vpn.dstack: {}", addresses[0]));

    s.step("a short iperf3 from node-2 through the tunnel");
    let server = iperf3_server(&lab.gw, 5201)?;
    let run = iperf3_client(&lab.nodes[1], &gw_ip, 5201, 3)?;
    drop(server);
    detail(&format!("{:.0} Mbit/s over 3 s", run.received_bits_per_second / 1e6));

    s.step("what `wg show` says (the gateway serves the WireGuard UAPI socket)");
    for line in wg(&["show", &lab.wg_iface])?.lines() {
        detail(line);
    }

    s.step("the contract owner revokes node-1 on chain");
    let before = PinnedMaps::open_instance(&lab.instance)?.stats.read()?;
    let t = Instant::now();
    let revoked = lab.node_cli(0, &["revoke", "1", "--json"])?;
    wait_for("slot closed", Duration::from_secs(10), || {
        Ok((!PinnedMaps::open_instance(&lab.instance)?.allow.is_open(2)?).then_some(()))
    })?;
    detail(&format!("tx {} mined; node-1's XDP slot closed {:.0} ms later", revoked["tx_hash"].as_str().unwrap_or("?"), t.elapsed().as_secs_f64() * 1000.0));
    let (_, decision) = lab.http_get(&format!("/v1/access/{}", keys[0].public))?;
    detail(&format!("access check: {decision}"));

    s.step("node-1 keeps sending: the kernel drops it before any userspace work");
    let reachable = lab.ping(0, &gw_ip, Duration::from_secs(3));
    // A fresh handshake from node-1: its endpoint was denied at revocation.
    let endpoint = format!("{}:{}", gateway_tests::lab::GATEWAY_LAN_IP, gateway_tests::wg::WG_PORT);
    wg(&["set", &node1.iface, "peer", &lab.gateway_keys.public, "remove"])?;
    wg(&["set", &node1.iface, "peer", &lab.gateway_keys.public, "endpoint", &endpoint, "allowed-ips", &format!("{TUNNEL_PREFIX}.0/24")])?;
    let _ = lab.ping(0, &gw_ip, Duration::from_secs(2));
    let after = PinnedMaps::open_instance(&lab.instance)?.stats.read()?;
    detail(&format!("node-1 -> gateway ping: {}", if reachable { "answered (unexpected)" } else { "no answer" }));
    for r in [XdpVerdict::DropUnknownSlot, XdpVerdict::DropDeniedEndpoint, XdpVerdict::PassTransport] {
        detail(&format!("XDP {:<22} +{}", r.name(), after.get(r) - before.get(r)));
    }
    ensure!(!reachable, "the revoked node must be cut off");
    ensure!(lab.ping(1, &gw_ip, Duration::from_secs(5)), "node-2 unaffected");
    detail("node-2 -> gateway: still ping ok");

    s.step("the audit log");
    let audit = std::fs::read_to_string(lab.dir.path().join("state/audit.jsonl"))?;
    for line in audit.lines().take(6) {
        detail(line);
    }

    s.step("cleaning up: gateway stopped, XDP detached, namespaces and anvil removed");
    lab.stop_gateway()?;
    drop(lab);
    say(&format!("\ndemo finished in {:.0} s", s.started.elapsed().as_secs_f64()));
    Ok(())
}
