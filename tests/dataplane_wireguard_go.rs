//! The data plane against real `wireguard-go` nodes in network namespaces:
//! a node handshakes, pings and runs iperf3 through the gateway; two nodes
//! reach each other through it without a TUN round trip, over IPv4 and IPv6
//! inside and outside the tunnel; `wg show` reports
//! endpoints, handshakes and transfer; `wg set` admits an unknown node.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use gateway_tests::netns::{require_root, wait_for, Netns, VethPair};
use gateway_tests::wg::{
    iperf3_client, iperf3_client_reverse, iperf3_server, link_bytes, wg, wg_dump, Keypair, Star, WgGoNode, TUNNEL_PREFIX,
    TUNNEL_PREFIX6, WG_PORT,
};

/// The tests share two cores: one at a time, so throughput figures mean something.
static SERIAL: Mutex<()> = Mutex::new(());

const IPERF_PORT: u16 = 5201;
/// Far below what the debug build moves (hundreds of Mbit/s); only a broken
/// data plane, not a slow machine, falls under it.
const MIN_BITS_PER_SECOND: f64 = 20e6;

#[test]
fn node_pings_and_streams_through_the_gateway_and_to_another_node() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let star = Star::new(2)?;
    let gateway_ip = format!("{TUNNEL_PREFIX}.1");

    star.ping_from(0, &gateway_ip, Duration::from_secs(10))?;
    let _server = iperf3_server(&star.gateway_ns, IPERF_PORT)?;
    let run = iperf3_client(&star.node_ns[0], &gateway_ip, IPERF_PORT, 3)?;
    eprintln!("node -> gateway: {:.0} Mbit/s, {} retransmits", run.received_bits_per_second / 1e6, run.retransmits);
    ensure!(run.received_bits_per_second > MIN_BITS_PER_SECOND, "throughput {run:?}");
    // And the other way: the gateway's TCP super-packets (TSO on its TUN)
    // are segmented, encrypted and sent with UDP GSO.
    let _server = iperf3_server(&star.gateway_ns, IPERF_PORT)?;
    let run = iperf3_client_reverse(&star.node_ns[0], &gateway_ip, IPERF_PORT, 3)?;
    eprintln!("gateway -> node: {:.0} Mbit/s, {} retransmits", run.received_bits_per_second / 1e6, run.retransmits);
    ensure!(run.received_bits_per_second > MIN_BITS_PER_SECOND, "throughput {run:?}");

    // wg show: the node's endpoint, a recent handshake, the bytes just moved.
    let dump = wg_dump(&star.gateway.iface)?;
    let node = &dump[&star.nodes[0].keys.public];
    ensure!(node.endpoint.map(|e| e.ip().to_string()) == Some("10.200.0.2".into()), "endpoint {node:?}");
    ensure!(node.allowed_ips == vec![format!("{TUNNEL_PREFIX}.2/32"), format!("{TUNNEL_PREFIX6}:2/128")], "allowed ips {node:?}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    ensure!(node.latest_handshake + 60 > now && node.latest_handshake <= now + 1, "handshake {node:?}");
    ensure!(node.rx_bytes > 3 * 1_000_000, "rx {node:?}");
    let human = wg(&["show", &star.gateway.iface])?;
    ensure!(human.contains(&format!("listening port: {WG_PORT}")), "{human}");
    ensure!(human.contains("latest handshake:") && human.contains("transfer:"), "{human}");

    // Node to node: forwarded inside the gateway, the TUN device stays quiet.
    let other = star.nodes[1].tunnel_ip.clone();
    star.ping_from(0, &other, Duration::from_secs(10))?;
    let tun_before = link_bytes(&star.gateway_ns, &star.gateway.iface)?;
    let _server = iperf3_server(&star.node_ns[1], IPERF_PORT)?;
    let run = iperf3_client(&star.node_ns[0], &other, IPERF_PORT, 3)?;
    let tun_after = link_bytes(&star.gateway_ns, &star.gateway.iface)?;
    eprintln!("node -> node: {:.0} Mbit/s, {} retransmits", run.received_bits_per_second / 1e6, run.retransmits);
    ensure!(run.received_bits_per_second > MIN_BITS_PER_SECOND, "throughput {run:?}");
    let moved = (run.received_bits_per_second * 3.0 / 8.0) as u64;
    let tun_traffic = (tun_after.0 - tun_before.0) + (tun_after.1 - tun_before.1);
    ensure!(tun_traffic < moved / 100, "{tun_traffic} bytes crossed the TUN device for {moved} forwarded");

    // IPv6 inside the tunnel, and node 1 reaches the gateway over IPv6.
    star.ping_from(0, &format!("{TUNNEL_PREFIX6}:1"), Duration::from_secs(10))?;
    star.ping_from(0, &format!("{TUNNEL_PREFIX6}:3"), Duration::from_secs(10))?;
    let dump = wg_dump(&star.gateway.iface)?;
    let second = &dump[&star.nodes[1].keys.public];
    ensure!(second.endpoint.map(|e| e.ip().to_string()) == Some("fd00:200:1::2".into()), "IPv6 endpoint {second:?}");
    ensure!(second.allowed_ips.contains(&format!("{TUNNEL_PREFIX6}:3/128")), "{second:?}");
    Ok(())
}

#[test]
fn unknown_node_is_refused_until_wg_set_admits_it() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let star = Star::new(1)?;
    let gateway_ip = format!("{TUNNEL_PREFIX}.1");
    // A node the gateway was not told about, on a link of its own.
    let stranger_ns = Netns::new("dps")?;
    VethPair::connect(&star.gateway_ns, "10.201.0.1/24", &stranger_ns, "10.201.0.2/24")?;
    let stranger_keys = Keypair::generate(star.dir(), "stranger")?;
    let stranger_public = stranger_keys.public.clone();
    let stranger = WgGoNode::start(
        &stranger_ns,
        stranger_keys,
        &format!("{TUNNEL_PREFIX}.9"),
        &star.gateway.keys.public,
        &format!("10.201.0.1:{WG_PORT}"),
    )?;

    let refused = stranger_ns.exec("ping", &["-c", "3", "-W", "1", &gateway_ip]);
    ensure!(refused.is_err(), "an unknown key got through");
    ensure!(!wg_dump(&star.gateway.iface)?.contains_key(&stranger_public));

    wg(&["set", &star.gateway.iface, "peer", &stranger_public, "allowed-ips", &format!("{}/32", stranger.tunnel_ip)])?;
    wait_for("stranger admitted", Duration::from_secs(15), || {
        Ok(stranger_ns.exec("ping", &["-c", "1", "-W", "1", &gateway_ip]).is_ok().then_some(()))
    })?;
    let dump = wg_dump(&star.gateway.iface)?;
    ensure!(dump[&stranger_public].endpoint.map(|e| e.ip().to_string()) == Some("10.201.0.2".into()), "{dump:?}");
    // The first node was never disturbed.
    star.ping_from(0, &gateway_ip, Duration::from_secs(10))?;
    Ok(())
}
