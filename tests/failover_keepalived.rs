//! Two gateways, one network, everything real: anvil, two `gateway run`
//! daemons with one WireGuard key, Debian's keepalived on each moving the
//! floating address the two `wireguard-go` nodes dial (VRRPv3 unicast
//! between the gateways' namespaces), ping and iperf3 running. SIGKILL the
//! master: traffic resumes through the other, node to node too. A revocation
//! made while the first is down is enforced by the second, and by the first
//! when it returns, before it can hold the address again.

use anyhow::{ensure, Context, Result};
use gateway::xdp::PinnedMaps;
use gateway_tests::ha::HaPair;
use gateway_tests::netns::{require_root, wait_for, Netns};
use gateway_tests::pinger::Pinger;
use gateway_tests::wg::{iperf3_client, iperf3_server, IperfRun};
use std::time::{Duration, Instant, SystemTime};

/// Generous beside the ~0.2 s a failover takes (VRRP plus one handshake),
/// far below the nodes' own timers (15 s): a failover that waited for those,
/// or a floating address that did not move, fails.
const BACK_WITHIN: Duration = Duration::from_secs(3);
const IPERF_PORT: u16 = 5201;
/// Node 1 holds token 2: host 3, slot 3.
const REVOKED_TOKEN: &str = "2";
const REVOKED_SLOT: u32 = 3;

#[test]
fn the_standby_takes_the_nodes_and_enforces_what_happened_meanwhile() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut pair = HaPair::new(2, true)?;
    let first = pair.wait_master(None, Duration::from_secs(20))?;
    let second = 1 - first;
    let gateway_ip = HaPair::gateway_tunnel_ip();
    let (node0, node1) = (HaPair::tunnel_ip(0), HaPair::tunnel_ip(1));
    let pingers = [
        ("node 0 -> gateway", Pinger::start(&pair.lab.nodes[0], &gateway_ip)?),
        ("node 1 -> gateway", Pinger::start(&pair.lab.nodes[1], &gateway_ip)?),
        ("node 0 -> node 1", Pinger::start(&pair.lab.nodes[0], &node1)?),
        ("node 1 -> node 0", Pinger::start(&pair.lab.nodes[1], &node0)?),
    ];
    let started = SystemTime::now();
    for (what, p) in &pingers {
        p.wait_reply_after(started, Duration::from_secs(15)).with_context(|| format!("{what} through the first gateway"))?;
    }

    // iperf3 node 1 -> node 0 through the gateways, across the failover.
    let _server = iperf3_server(&pair.lab.nodes[0], IPERF_PORT)?;
    let client_ns = Netns::existing(pair.lab.nodes[1].name());
    let target = node0.clone();
    let iperf = std::thread::spawn(move || iperf3_client(&client_ns, &target, IPERF_PORT, 8));
    std::thread::sleep(Duration::from_secs(3));

    // SIGKILL the master.
    let killed = SystemTime::now();
    pair.gateways[first].kill()?;
    for (what, p) in &pingers {
        let back = p.wait_reply_after(killed, Duration::from_secs(30))?;
        eprintln!("failover: {what} back {} ms after the SIGKILL", back.as_millis());
        ensure!(back < BACK_WITHIN, "{what} came back only {back:?} after the SIGKILL");
    }
    ensure!(pair.wait_master(Some(first), Duration::from_secs(1))? == second, "the second gateway holds the address");
    let takeovers = pair.gateways[second].metric(r#"gw_wireguard_takeovers_total{result="initiated"}"#)?;
    ensure!(takeovers >= 2.0, "the second gateway initiated {takeovers} takeovers, expected one per node");
    let run: IperfRun = iperf.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
    let after_kill = &run.intervals[run.intervals.len().saturating_sub(3)..];
    eprintln!("iperf3 node 1 -> node 0 across the failover: {:?} Mbit/s", run.intervals.iter().map(|b| (b / 1e6) as u64).collect::<Vec<_>>());
    ensure!(after_kill.iter().all(|b| *b > 0.0), "iperf3 carried nothing in its last seconds: {:?}", run.intervals);

    // Revoke node 1 while the first gateway is down: the second enforces it.
    pair.lab.node_cli(0, &["revoke", REVOKED_TOKEN, "--json"])?;
    let second_instance = pair.gateways[second].instance.clone();
    wait_for("the revoked slot closed on the second gateway", Duration::from_secs(10), || {
        Ok((!PinnedMaps::open_instance(&second_instance)?.allow.is_open(REVOKED_SLOT)?).then_some(()))
    })?;
    let revoked_at = SystemTime::now();
    std::thread::sleep(Duration::from_secs(2));
    ensure!(pingers[1].1.first_reply_after(revoked_at).is_none(), "the revoked node still reaches the second gateway");
    ensure!(pingers[3].1.first_reply_after(revoked_at).is_none(), "the revoked node still reaches node 0");
    ensure!(pingers[0].1.first_reply_after(revoked_at).is_some(), "node 0 lost the second gateway");

    // The first gateway returns with its registry from before the
    // revocation. It must enforce it before it can take the address: while
    // it catches up it never holds the address, and when it says ready the
    // slot is closed in its kernel and the peer gone from its data plane.
    let revoked_key = pair.node_keys[1].public.clone();
    let first_instance = pair.gateways[first].instance.clone();
    pair.gateways[first].start()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pair.gateways[first].ready() {
        ensure!(Instant::now() < deadline, "the first gateway did not come back");
        ensure!(!pair.gateways[first].holds_floating()?, "the first gateway took the address before it was ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        !PinnedMaps::open_instance(&first_instance)?.allow.is_open(REVOKED_SLOT)?,
        "the first gateway is ready with the revoked slot open in its kernel"
    );
    ensure!(!pair.gateways[first].wg_peers()?.contains(&revoked_key), "the first gateway is ready with the revoked peer in its data plane");
    pair.wait_standby(first, Duration::from_secs(20))?;
    ensure!(pair.master()? == Some(second), "the second gateway keeps the address when the first returns");

    // Now the second one dies: the first takes the nodes back, the revoked
    // one stays out.
    let killed = SystemTime::now();
    pair.gateways[second].kill()?;
    // Node 0 comes back through the first gateway; node 1 is revoked.
    let back = pingers[0].1.wait_reply_after(killed, Duration::from_secs(30))?;
    eprintln!("failback: node 0 -> gateway back {} ms after the SIGKILL", back.as_millis());
    ensure!(back < BACK_WITHIN, "node 0 came back only {back:?} after the second SIGKILL");
    ensure!(pair.wait_master(Some(second), Duration::from_secs(1))? == first, "the first gateway holds the address again");
    std::thread::sleep(Duration::from_secs(2));
    ensure!(pingers[1].1.first_reply_after(killed).is_none(), "the revoked node reaches the first gateway");
    ensure!(pingers[2].1.first_reply_after(killed).is_none(), "node 0 reaches the revoked node");
    Ok(())
}
