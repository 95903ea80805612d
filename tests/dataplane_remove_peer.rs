//! Removing a peer live (`wg set <gw> peer X remove`) cuts that node off at
//! once while another node's iperf3 stream through the gateway keeps running:
//! no one-second interval without throughput.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Result};

use gateway_tests::netns::{require_root, ChildGuard};
use gateway_tests::wg::{iperf3_client, iperf3_server, wg, wg_dump, Star, TUNNEL_PREFIX};

const IPERF_PORT: u16 = 5201;
const STREAM_SECONDS: u32 = 8;

#[test]
fn removing_one_peer_leaves_the_other_stream_running() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let star = Star::new(2)?;
    let gateway_ip = format!("{TUNNEL_PREFIX}.1");
    star.ping_from(0, &gateway_ip, Duration::from_secs(10))?;
    star.ping_from(1, &gateway_ip, Duration::from_secs(10))?;

    let _server = iperf3_server(&star.gateway_ns, IPERF_PORT)?;
    let run = std::thread::scope(|scope| -> Result<_> {
        let stream = scope.spawn(|| iperf3_client(&star.node_ns[0], &gateway_ip, IPERF_PORT, STREAM_SECONDS));
        // The node about to be removed is busy too when it goes.
        let mut pinger = star.node_ns[1].command("ping");
        pinger.args(["-i", "0.05", "-W", "1", &gateway_ip]).stdout(Stdio::null()).stderr(Stdio::null());
        let _pinger = ChildGuard::spawn(pinger, "ping")?;
        std::thread::sleep(Duration::from_secs(3));
        let removed = star.nodes[1].keys.public.clone();
        wg(&["set", &star.gateway.iface, "peer", &removed, "remove"])?;
        ensure!(!wg_dump(&star.gateway.iface)?.contains_key(&removed), "peer still listed");
        let cut_off = star.node_ns[1].exec("ping", &["-c", "2", "-W", "1", &gateway_ip]);
        ensure!(cut_off.is_err(), "the removed node still reaches the gateway");
        stream.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))?
    })?;
    eprintln!(
        "intervals (Mbit/s): {:?}, retransmits {}",
        run.intervals.iter().map(|b| (b / 1e6).round()).collect::<Vec<_>>(),
        run.retransmits
    );
    ensure!(run.intervals.len() >= STREAM_SECONDS as usize, "short run {run:?}");
    ensure!(run.intervals.iter().all(|b| *b > 1e6), "an interval without throughput: {run:?}");
    ensure!(wg_dump(&star.gateway.iface)?.contains_key(&star.nodes[0].keys.public));
    Ok(())
}
