//! Stateless takeover against the real kernel and a real `wireguard-go`
//! node: a `gateway dataplane run` killed and started again with the same
//! key takes the node back at the node's next packet, where with
//! `--no-takeover` the node sits out its own timers; and forged packets for
//! a granted slot buy at most one 148-byte initiation per slot per 5 s
//! towards their source, for an unknown slot nothing.

use anyhow::{ensure, Result};
use gateway_common::MAX_PEER_SLOTS;
use gateway_tests::netns::{require_root, unique_name, Netns, VethPair};
use gateway_tests::packets::transport;
use gateway_tests::pinger::Pinger;
use gateway_tests::wg::{GatewayProcess, Keypair, ScratchDir, WgGoNode, TUNNEL_PREFIX, WG_PORT};
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

/// REKEY_TIMEOUT: the takeover's budget per slot.
const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// A handshake initiation on the wire.
const INITIATION_BYTES: usize = 148;

#[test]
fn a_restarted_data_plane_takes_its_node_back_at_the_next_packet() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = ScratchDir::new()?;
    let gw_ns = Netns::new("tkg")?;
    let node_ns = Netns::new("tkn")?;
    let _veth = VethPair::connect(&gw_ns, "10.200.0.1/24", &node_ns, "10.200.0.2/24")?;
    let gw_keys = Keypair::generate(dir.path(), "gateway")?;
    let node_keys = Keypair::generate(dir.path(), "node")?;
    let iface = unique_name("wgg");
    let peers = vec![(node_keys.public.clone(), format!("{TUNNEL_PREFIX}.2/32"))];
    let start = |extra: &[&str]| GatewayProcess::start_as(&gw_ns, &iface, gw_keys.clone(), &peers, extra);

    let gateway = start(&[])?;
    let _node = WgGoNode::start(&node_ns, node_keys.clone(), &format!("{TUNNEL_PREFIX}.2"), &gw_keys.public, &format!("10.200.0.1:{WG_PORT}"))?;
    let pinger = Pinger::start(&node_ns, &format!("{TUNNEL_PREFIX}.1"))?;
    pinger.wait_reply_after(SystemTime::now(), Duration::from_secs(10))?;

    // SIGKILL (no clean-up runs), then the same data plane again: the node's
    // next ping names the dead process's session, and the new one initiates.
    drop(gateway);
    let restarted = SystemTime::now();
    let gateway = start(&[])?;
    let back = pinger.wait_reply_after(restarted, Duration::from_secs(10))?;
    eprintln!("takeover: node back {} ms after the restart", back.as_millis());
    ensure!(back < Duration::from_secs(3), "the node came back only after {back:?}: the takeover did not happen");

    // The anchor: the same restart without the takeover leaves the node to
    // its keepalive + rekey timeouts (about 15 s).
    drop(gateway);
    let restarted = SystemTime::now();
    let _gateway = start(&["--no-takeover"])?;
    ensure!(
        pinger.wait_reply_after(restarted, Duration::from_secs(3)).is_err(),
        "without the takeover the node came back within 3 s: this test would not see it missing"
    );
    let by_timers = pinger.wait_reply_after(restarted, Duration::from_secs(30))?;
    eprintln!("anchor: the node's own timers brought it back after {} ms", by_timers.as_millis());
    Ok(())
}

#[test]
fn forged_packets_buy_at_most_one_initiation_per_slot_per_rekey_timeout() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let dir = ScratchDir::new()?;
    let gw_ns = Netns::new("tfg")?;
    let attacker_ns = Netns::new("tfa")?;
    let _veth = VethPair::connect(&gw_ns, "10.200.0.1/24", &attacker_ns, "10.200.0.2/24")?;
    // Two granted peers nobody runs: `gateway dataplane run` gives them the
    // top slots, in order.
    let peers: Vec<(String, String)> = (0..2)
        .map(|i| Ok((Keypair::generate(dir.path(), &format!("p{i}"))?.public, format!("{TUNNEL_PREFIX}.{}/32", i + 2))))
        .collect::<Result<_>>()?;
    let _gateway = GatewayProcess::start(&gw_ns, dir.path(), &peers)?;
    let granted = [MAX_PEER_SLOTS - 1, MAX_PEER_SLOTS - 2];
    let unknown = 5u32;

    // One socket per target slot, so what comes back is counted per slot.
    let flood = Duration::from_millis(10_500);
    let results = attacker_ns.within(move || {
        let sockets: Vec<UdpSocket> = (0..3).map(|i| UdpSocket::bind(("10.200.0.2", 40000 + i))).collect::<std::io::Result<_>>()?;
        for s in &sockets {
            s.set_nonblocking(true)?;
        }
        let slots = [granted[0], granted[1], unknown];
        let gateway = ("10.200.0.1", WG_PORT);
        let mut received = vec![Vec::<Vec<u8>>::new(); 3];
        let mut buf = [0u8; 2048];
        let started = Instant::now();
        let mut sent = 0u64;
        // Then a second to let the last answers arrive.
        while started.elapsed() < flood + Duration::from_secs(1) {
            if started.elapsed() < flood {
                for (socket, slot) in sockets.iter().zip(slots) {
                    socket.send_to(&transport(slot << 8 | 0x42, 64), gateway)?;
                    sent += 1;
                }
            }
            for (socket, got) in sockets.iter().zip(received.iter_mut()) {
                while let Ok((n, _)) = socket.recv_from(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok((received, sent))
    })?;
    let (received, sent) = results;
    let bound = flood.as_millis().div_ceil(REKEY_TIMEOUT.as_millis()) as usize;
    eprintln!("sent {sent} forged packets over {flood:?}; answers per slot: {:?}", received.iter().map(Vec::len).collect::<Vec<_>>());
    for (slot, got) in granted.iter().zip(&received) {
        ensure!(got.iter().all(|d| d.len() == INITIATION_BYTES && d[0] == 1), "slot {slot}: only handshake initiations come back");
        let bytes: usize = got.iter().map(Vec::len).sum();
        ensure!(bytes <= bound * INITIATION_BYTES, "slot {slot}: {bytes} bytes over {flood:?}, bound {}", bound * INITIATION_BYTES);
        // And the takeover is alive: each budget was used.
        ensure!(got.len() >= bound - 1, "slot {slot}: {} initiations over {flood:?}, expected about {bound}", got.len());
    }
    ensure!(received[2].is_empty(), "a slot no peer holds buys nothing: {:?}", received[2].len());
    Ok(())
}
