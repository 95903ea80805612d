//! `gateway demo`: the main job on a fresh machine. Builds a scratch network
//! in namespaces it creates, attaches the XDP front, sends WireGuard-shaped
//! and other traffic, and shows the kernel's counters step by step; every
//! namespace, link and pin is removed at the end, even on failure.

use crate::netns::{Netns, VethPair};
use crate::xdp::{self, AttachOptions, PinnedMaps, XdpModeChoice};
use anyhow::Context;
use gateway_common::{Reason, XdpConfig, MODE_ENFORCE, MODE_OBSERVE};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};

const GW_ADDR: &str = "198.18.0.1";
const NODE_ADDR: &str = "198.18.0.2";
const WG_PORT: u16 = 51820;

struct Detach(String);
impl Drop for Detach {
    fn drop(&mut self) {
        let _ = xdp::detach(&self.0);
    }
}

fn step(out: &mut impl Write, n: u32, text: &str) -> anyhow::Result<()> {
    writeln!(out, "\n[{n}] {text}")?;
    Ok(())
}

fn show_counters(out: &mut impl Write, maps: &PinnedMaps) -> anyhow::Result<()> {
    let stats = maps.stats.read()?;
    for r in Reason::ALL {
        let v = stats.get(r);
        if v > 0 {
            writeln!(out, "      {:<24} {v}", r.name())?;
        }
    }
    Ok(())
}

fn wg_message(kind: u8, receiver_index: u32, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    m[0] = kind;
    m[4..8].copy_from_slice(&receiver_index.to_le_bytes());
    m
}

pub fn run() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "dstack WireGuard gateway demo: the XDP front in scratch network namespaces")?;
    step(&mut out, 1, "creating namespaces gateway <-> node joined by a veth pair")?;
    let gw = Netns::new("dgw")?;
    let node = Netns::new("dnd")?;
    let veth = VethPair::connect(&gw, &format!("{GW_ADDR}/24"), &node, &format!("{NODE_ADDR}/24"))?;
    writeln!(out, "      {} ({GW_ADDR}) <-> {} ({NODE_ADDR})", gw.name(), node.name())?;

    step(&mut out, 2, "attaching the XDP program in observe mode (count, drop nothing)")?;
    let instance = crate::netns::unique_name("demo");
    let guard = Detach(instance.clone());
    let iface = veth.a.clone();
    let inst = instance.clone();
    let pins = gw.within(move || {
        Ok(xdp::attach(&AttachOptions {
            iface,
            instance: inst,
            config: XdpConfig { wg_port: WG_PORT, mode: MODE_OBSERVE, ..XdpConfig::default() },
            xdp_mode: XdpModeChoice::Auto,
            replace: false,
        })?)
    })?;
    writeln!(out, "      maps pinned in {} (try: bpftool map dump pinned {}/GW_STATS)", pins.path().display(), pins.path().display())?;
    let mut maps = PinnedMaps::open(&pins)?;

    step(&mut out, 3, "node sends: a handshake initiation, transport to an unknown slot, garbage, and 3 datagrams to another port")?;
    let sock = node.within(|| Ok(UdpSocket::bind((NODE_ADDR, 0))?))?;
    let to_wg: SocketAddr = format!("{GW_ADDR}:{WG_PORT}").parse()?;
    let to_other: SocketAddr = format!("{GW_ADDR}:9999").parse()?;
    sock.send_to(&wg_message(1, 0, 148), to_wg)?;
    sock.send_to(&wg_message(4, 42 << 8, 64), to_wg)?;
    sock.send_to(&wg_message(9, 0, 20), to_wg)?;
    for _ in 0..3 {
        sock.send_to(b"hello", to_other)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    show_counters(&mut out, &maps)?;

    step(&mut out, 4, "switching to enforce mode and opening slot 42: transport to it passes, to slot 7 drops")?;
    let mut cfg = maps.config.get()?;
    cfg.mode = MODE_ENFORCE;
    maps.config.set(cfg)?;
    maps.allow.open_slot(42, 1)?;
    sock.send_to(&wg_message(4, 42 << 8, 64), to_wg)?;
    sock.send_to(&wg_message(4, 7 << 8, 64), to_wg)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    show_counters(&mut out, &maps)?;
    let stats = maps.stats.read()?;
    anyhow::ensure!(stats.pass_transport == 1, "expected one transport packet passed");
    anyhow::ensure!(stats.drop_unknown_slot == 2, "expected two unknown-slot verdicts");

    step(&mut out, 5, "cleaning up: detaching XDP, removing pins and namespaces")?;
    drop(maps);
    drop(guard);
    drop(veth);
    drop(node);
    drop(gw);
    writeln!(out, "\ndemo finished: every packet was classified in the kernel before any userspace work")?;
    out.flush().context("flushing output")
}
