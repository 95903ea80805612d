//! `cargo xtask bench revocation`: from a revoke transaction's receipt to the
//! first packet of that peer dropped in the kernel, over many revocations,
//! with the gateway following the chain over WebSocket and over HTTP polling.
//!
//! Each round mints a token (a fresh key), waits for its slot to open in
//! XDP, aims a stream of transport packets (one every 200 µs) at the slot
//! from a node namespace, revokes the token, and times the receipt to the
//! first rise of the kernel's `drop_unknown_slot` counter.

use std::io::Write as _;
use anyhow::{Context, Result};
use gateway::node::admin::{load_signer, Session};
use gateway::xdp::PinnedMaps;
use gateway_common::XdpVerdict;
use gateway_tests::lab::{Lab, DEV_ADDRESSES, GATEWAY_LAN_IP};
use gateway_tests::netns::{wait_for, Netns};
use gateway_tests::packets;
use gateway_tests::stats::percentile;
use gateway_tests::wg::WG_PORT;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    count: usize,
    json: Option<std::path::PathBuf>,
    poll_interval_ms: u64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { count: 100, json: None, poll_interval_ms: 100 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => args.count = it.next().context("--count N")?.parse()?,
            "--json" => args.json = Some(it.next().context("--json PATH")?.into()),
            "--poll-interval-ms" => args.poll_interval_ms = it.next().context("--poll-interval-ms N")?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

#[derive(serde::Serialize)]
struct Summary {
    transport: String,
    count: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    samples_ms: Vec<f64>,
}

fn summarise(transport: &str, samples: Vec<f64>) -> Summary {
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Summary {
        transport: transport.into(),
        count: samples.len(),
        p50_ms: percentile(&sorted, 50.0),
        p90_ms: percentile(&sorted, 90.0),
        p99_ms: percentile(&sorted, 99.0),
        max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        mean_ms: samples.iter().sum::<f64>() / samples.len().max(1) as f64,
        samples_ms: samples,
    }
}

fn random_key() -> Result<String> {
    use base64::Engine;
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// One gateway run following the chain over `transport` ("ws" or "http").
fn run_transport(transport: &str, args: &Args) -> Result<Summary> {
    let mut lab = Lab::new(1)?;
    let rpc = if transport == "ws" { "ws://127.0.0.1:8545" } else { "http://127.0.0.1:8545" };
    lab.start_gateway_with_rpc(rpc, args.poll_interval_ms)?;
    let instance = lab.instance.clone();

    // The packet stream: transport messages to whatever slot is the target.
    let target = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let node_ns = lab.nodes[0].name().to_string();
    let (t, s) = (target.clone(), stop.clone());
    let sender = std::thread::spawn(move || -> Result<()> {
        gateway::netns::enter(&node_ns)?;
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let to: std::net::SocketAddr = format!("{GATEWAY_LAN_IP}:{WG_PORT}").parse()?;
        while !s.load(Ordering::Relaxed) {
            let slot = t.load(Ordering::Relaxed);
            if slot != 0 {
                let _ = sock.send_to(&packets::transport(packets::index_for_slot(slot), 64), to);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    });

    let signer_file = lab.signer_files[0].clone();
    let contract = lab.contract.clone();
    let count = args.count;
    let gw = Netns::existing(lab.gw.name());
    let samples = gw.within(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let session = Session::with_signer("http://127.0.0.1:8545", load_signer(&signer_file)?).await?;
            let address: alloy::primitives::Address = contract.parse()?;
            let owner: alloy::primitives::Address = DEV_ADDRESSES[1].parse()?;
            let mut samples = Vec::new();
            for i in 0..count {
                let minted = session.mint(address, owner, &format!("bench-{i}"), &random_key()?, "").await?;
                let slot = minted.token_id as u32 + 1;
                let maps = PinnedMaps::open_instance(&instance)?;
                wait_for("slot open", Duration::from_secs(15), || Ok(maps.allow.is_open(slot)?.then_some(())))?;
                target.store(slot, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let before = maps.stats.read()?.get(XdpVerdict::DropUnknownSlot);
                session.revoke(address, alloy::primitives::U256::from(minted.token_id)).await?;
                let receipt = Instant::now();
                loop {
                    if maps.stats.read()?.get(XdpVerdict::DropUnknownSlot) > before {
                        break;
                    }
                    if receipt.elapsed() > Duration::from_secs(10) {
                        anyhow::bail!("no kernel drop 10 s after revoking token {}", minted.token_id);
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                samples.push(receipt.elapsed().as_secs_f64() * 1000.0);
                target.store(0, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(samples)
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    lab.stop_gateway()?;
    Ok(summarise(transport, samples?))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut out = Vec::new();
    for transport in ["ws", "http"] {
        let s = run_transport(transport, &args)?;
        writeln!(
            std::io::stdout(),
            "{:<5} n={:<4} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            s.transport, s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        )?;
        out.push(s);
    }
    let report = serde_json::json!({
        "what": "revoke transaction receipt -> first packet of the revoked peer dropped by XDP",
        "target_p99_ms": 300,
        "http_poll_interval_ms": args.poll_interval_ms,
        "runs": out,
    });
    if let Some(path) = args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        writeln!(std::io::stdout(), "JSON report: {}", path.display())?;
    }
    Ok(())
}
