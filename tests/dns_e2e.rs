//! Node names end to end: anvil, `gateway run`, two wireguard-go nodes. A
//! node asks the gateway's tunnel address (UDP 53, through the tunnel) for
//! `<node_id>.vpn.dstack` and gets the other node's tunnel address; unknown
//! names are NXDOMAIN, names outside the zone REFUSED, and a revoked node's
//! name stops resolving. A host on the underlay that routes the tunnel
//! address through the gateway gets no answer. Root only (network
//! namespaces, TUN).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use gateway::dns::wire::Rcode;
use gateway_tests::lab::{dns_query, Lab, DEV_ADDRESSES, GATEWAY_LAN_IP};
use gateway_tests::netns::{require_root, wait_for, Netns};
use gateway_tests::wg::{Keypair, TUNNEL_PREFIX};

fn ask(node: &Netns, name: &str) -> Result<(Rcode, Vec<Ipv4Addr>)> {
    dns_query(node, &format!("{TUNNEL_PREFIX}.1"), name)
}

#[test]
fn nodes_resolve_each_other_while_granted() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // nodes: 0 alpha, 1 bravo, 2 a plain host on the LAN, outside the tunnel
    let mut lab = Lab::new(3)?;
    let keys_a = Keypair::generate(lab.dir.path(), "a")?;
    let keys_b = Keypair::generate(lab.dir.path(), "b")?;
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "alpha", "--pubkey", &keys_a.public, "--json"])?;
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], "bravo", "--pubkey", &keys_b.public, "--json"])?;
    lab.start_gateway("")?;
    let _a = lab.start_node(0, keys_a, &format!("{TUNNEL_PREFIX}.2"))?;
    let _b = lab.start_node(1, keys_b, &format!("{TUNNEL_PREFIX}.3"))?;
    ensure!(lab.ping(0, &format!("{TUNNEL_PREFIX}.1"), Duration::from_secs(20)), "node A reaches the gateway");

    let bravo: Ipv4Addr = format!("{TUNNEL_PREFIX}.3").parse()?;
    ensure!(ask(&lab.nodes[0], "bravo.vpn.dstack")? == (Rcode::NoError, vec![bravo]), "bravo resolves");
    ensure!(ask(&lab.nodes[0], "Alpha.VPN.dstack")?.1 == vec![format!("{TUNNEL_PREFIX}.2").parse::<Ipv4Addr>()?], "case-insensitive");
    ensure!(ask(&lab.nodes[0], "charlie.vpn.dstack")?.0 == Rcode::NxDomain, "no such token");
    ensure!(ask(&lab.nodes[0], "example.com")?.0 == Rcode::Refused, "no recursion");

    // Only through the tunnel: the same query over the underlay, routed to
    // the gateway's LAN address, goes unanswered.
    lab.nodes[2].ip(&["route", "add", &format!("{TUNNEL_PREFIX}.1/32"), "via", GATEWAY_LAN_IP])?;
    lab.nodes[2].exec("ping", &["-c", "1", "-W", "2", &format!("{TUNNEL_PREFIX}.1")]).context("the LAN host reaches the tunnel address by the underlay")?;
    ensure!(ask(&lab.nodes[2], "bravo.vpn.dstack").is_err(), "a query from outside the tunnel was answered");

    // Revoke bravo (token 2): its name goes with its access.
    lab.node_cli(0, &["revoke", "2", "--json"])?;
    wait_for("bravo's name gone", Duration::from_secs(10), || {
        Ok((ask(&lab.nodes[0], "bravo.vpn.dstack")?.0 == Rcode::NxDomain).then_some(()))
    })?;
    ensure!(lab.metric(r#"gw_dns_responses_total{rcode="refused"}"#)? >= 1.0, "refusals counted");
    ensure!(lab.metric(r#"gw_dns_responses_total{rcode="nxdomain"}"#)? >= 2.0, "NXDOMAIN counted");
    lab.stop_gateway()?;
    Ok(())
}
