//! `gateway xdp bench`: the XDP program's cost per packet on each verdict
//! path, through `BPF_PROG_TEST_RUN`, beside two anchors measured in the same
//! run (a bare counted drop; header parsing plus one hash lookup), each path
//! also as a ratio to the parse+lookup anchor (I/O edge: loads the object).

use super::testrun::KernelHarness;
use gateway_common::frames::{wg_message, UdpFrame};
use gateway_common::{
    Coalesced, EndpointKey, XdpConfig, ANCHOR_DROP_COUNT, ANCHOR_PARSE_LOOKUP, LATE_GATE_PROGRAM, MODE_ENFORCE, PROGRAM_NAME,
};
use serde::Serialize;

const GW: [u8; 4] = [198, 18, 0, 1];
const NODE: [u8; 4] = [198, 18, 0, 2];
const PORT: u16 = 51820;
const OPEN_SLOT: u32 = 5;
/// The target for every verdict path (issue 12): at most this many times
/// the parse+lookup anchor measured in the same run.
pub const TARGET_VS_PARSE_LOOKUP: f64 = 1.2;

#[derive(Debug, Serialize)]
pub struct PathCost {
    pub path: String,
    pub program: String,
    /// Median over rounds of the kernel's mean ns per run.
    pub ns_per_packet: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    /// `ns_per_packet` over the parse+lookup anchor's.
    pub vs_parse_lookup: f64,
}

#[derive(Debug, Serialize)]
pub struct XdpBenchReport {
    pub repeat: u32,
    pub rounds: u32,
    pub paths: Vec<PathCost>,
    pub anchor_drop_count_ns: f64,
    pub anchor_parse_lookup_ns: f64,
    pub slowest_path: String,
    pub slowest_ns: f64,
    pub slowest_vs_parse_lookup: f64,
    pub target_vs_parse_lookup: f64,
    /// Allow-slot updates per second from userspace (open + close of 65,536 slots).
    pub map_updates_per_sec: f64,
    pub kernel: String,
}

fn frames() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use gateway_common::frames::ExtHeader::*;
    let v4 = |port: u16, src_port: u16, msg: &[u8]| UdpFrame::v4(NODE, src_port, GW, port, msg).build();
    let mut v6src = [0u8; 16];
    v6src[0] = 0xfd;
    v6src[15] = 2;
    let open = wg_message(4, OPEN_SLOT << 8, 1400);
    let mut fragmented = UdpFrame::v4(NODE, 40000, GW, PORT, &open);
    fragmented.ip_id = 1;
    let mut unknown = fragmented.clone();
    unknown.ip_id = 2;
    let mut v6_fragmented = UdpFrame::v6(v6src, 40000, [0xfd; 16], PORT, &open);
    v6_fragmented.ip_id = 3;
    let mut chain = UdpFrame::v6(v6src, 40000, [0xfd; 16], PORT, &open);
    chain.v6_ext = &[HopByHop(0), Routing(1), DestOpts(0)];
    let mut unwalkable = chain.clone();
    unwalkable.v6_ext = &[DestOpts(0); 7];
    vec![
        ("anchor: counted drop", ANCHOR_DROP_COUNT, v4(PORT, 40000, &wg_message(4, OPEN_SLOT << 8, 96))),
        ("anchor: parse + 1 hash lookup", ANCHOR_PARSE_LOOKUP, v4(PORT, 40000, &wg_message(4, OPEN_SLOT << 8, 96))),
        ("pass_other_port (DNS)", PROGRAM_NAME, v4(53, 40000, b"not wireguard")),
        ("drop_malformed (bad size)", PROGRAM_NAME, v4(PORT, 40000, &wg_message(1, 0, 100))),
        ("drop_unknown_slot (revoked)", PROGRAM_NAME, v4(PORT, 40000, &wg_message(4, 77 << 8, 96))),
        ("pass_transport (allowed slot)", PROGRAM_NAME, v4(PORT, 40000, &open)),
        ("pass_transport IPv6", PROGRAM_NAME, UdpFrame::v6(v6src, 40000, [0xfd; 16], PORT, &open).build()),
        ("pass_transport IPv6, 3 extension headers", PROGRAM_NAME, chain.build()),
        ("drop_ext_header_unwalkable (7 headers)", PROGRAM_NAME, unwalkable.build()),
        ("pass_handshake_response", PROGRAM_NAME, v4(PORT, 40000, &wg_message(2, OPEN_SLOT << 8, 92))),
        ("drop_denied_endpoint", PROGRAM_NAME, v4(PORT, 40001, &wg_message(1, 0, 148))),
        ("pass_handshake_init (deny miss, limiter off)", PROGRAM_NAME, v4(PORT, 40000, &wg_message(1, 0, 148))),
        // The first fragment is judged and recorded (an LRU insert) on every
        // run; the later ones look the record up.
        ("pass_transport, first fragment (recorded)", PROGRAM_NAME, fragmented.fragment(0, 512, true)),
        ("pass_fragment (later fragment)", PROGRAM_NAME, fragmented.fragment(512, 2000, false)),
        ("drop_fragment_never_seen", PROGRAM_NAME, unknown.fragment(512, 2000, false)),
        ("drop_fragment_too_short (first fragment)", PROGRAM_NAME, unknown.fragment(0, 8, true)),
        ("drop_fragment_first_dropped", PROGRAM_NAME, unknown.fragment(512, 2000, false)),
        ("pass_transport IPv6, first fragment (recorded)", PROGRAM_NAME, v6_fragmented.fragment(0, 512, true)),
        ("pass_fragment IPv6 (later fragment)", PROGRAM_NAME, v6_fragmented.fragment(512, 2000, false)),
    ]
}

/// The late gate's paths: (name, frame, GRO buffer shape, datagrams per run).
fn late_frames() -> Vec<(&'static str, Vec<u8>, Coalesced, u32)> {
    let v4 = |src_port: u16, msg: &[u8]| UdpFrame::v4(NODE, src_port, GW, PORT, msg).build();
    let open = wg_message(4, OPEN_SLOT << 8, 1400);
    // Small payloads: a test run takes at most a page, and the late gate
    // reads only each datagram's header, whatever its size.
    let batch: Vec<u8> = (0..64).flat_map(|_| wg_message(4, OPEN_SLOT << 8, 48)).collect();
    vec![
        ("late gate: pass_transport (allowed slot)", v4(40000, &open), Coalesced::ONE, 1),
        ("late gate: drop_unknown_slot", v4(40000, &wg_message(4, 77 << 8, 96)), Coalesced::ONE, 1),
        ("late gate: pass_handshake_init (limiter off)", v4(40000, &wg_message(1, 0, 148)), Coalesced::ONE, 1),
        ("late gate: drop_denied_endpoint", v4(40001, &wg_message(1, 0, 148)), Coalesced::ONE, 1),
        (
            "late gate: 64 GRO-coalesced transports, per datagram",
            v4(40000, &batch),
            Coalesced { segment: 48, count: 64 },
            64,
        ),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn measure(h: &KernelHarness, path: &str, program: &str, frame: &[u8], repeat: u32, rounds: u32) -> anyhow::Result<PathCost> {
    let mut samples = Vec::new();
    for _ in 0..rounds {
        samples.push(h.time(program, frame, repeat)?.as_nanos() as f64);
    }
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(0.0, f64::max);
    Ok(PathCost { path: path.into(), program: program.into(), ns_per_packet: median(samples), min_ns: min, max_ns: max, vs_parse_lookup: 0.0 })
}

pub fn run(repeat: u32, rounds: u32) -> anyhow::Result<XdpBenchReport> {
    anyhow::ensure!(rounds > 0 && repeat > 0, "repeat and rounds must be positive");
    let config = XdpConfig { wg_port: PORT, mode: MODE_ENFORCE, ..XdpConfig::default() };
    let mut h = KernelHarness::load(config)?;
    h.open_slot(OPEN_SLOT)?;
    h.deny(EndpointKey::v4(NODE, 40001), u64::MAX)?;
    let mut paths = Vec::new();
    // In order: a later-fragment path finds the record the path before it
    // left (`never seen` runs before anything records its datagram).
    for (path, program, frame) in frames() {
        paths.push(measure(&h, path, program, &frame, repeat, rounds)?);
    }
    for (path, frame, coalesced, per_run) in late_frames() {
        let mut samples = Vec::new();
        for _ in 0..rounds {
            samples.push(h.time_late(&frame, coalesced, repeat)?.as_nanos() as f64 / per_run as f64);
        }
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        paths.push(PathCost {
            path: path.into(),
            program: LATE_GATE_PROGRAM.into(),
            ns_per_packet: median(samples),
            min_ns: min,
            max_ns: max,
            vs_parse_lookup: 0.0,
        });
    }
    // The rate limiter writes its bucket: measured with the limiter on,
    // where after the burst every run takes the rate-limited path.
    h.set_config(XdpConfig { handshake_rate_per_sec: 1, handshake_burst: 1, ..config })?;
    let init = UdpFrame::v4(NODE, 40000, GW, PORT, &wg_message(1, 0, 148)).build();
    paths.push(measure(&h, "drop_rate_limited (bucket update)", PROGRAM_NAME, &init, repeat, rounds)?);
    // The unproven budget on: a source without a recent handshake pays it
    // (empty after its burst: every run takes the drop), a live endpoint
    // looks itself up and goes on to its own bucket (drop_rate_limited).
    h.set_config(XdpConfig { handshake_rate_per_sec: 1, handshake_burst: 1, unproven_rate_per_sec: 1, unproven_burst: 1, ..config })?;
    let spoofed = UdpFrame::v4(NODE, 40002, GW, PORT, &wg_message(1, 0, 148)).build();
    paths.push(measure(&h, "drop_unproven_budget (spoofed source)", PROGRAM_NAME, &spoofed, repeat, rounds)?);
    h.mark_live(EndpointKey::v4(NODE, 40000), u64::MAX)?;
    paths.push(measure(&h, "live endpoint: own bucket (rate limited)", PROGRAM_NAME, &init, repeat, rounds)?);

    let anchor_drop = paths[0].ns_per_packet;
    let anchor_parse = paths[1].ns_per_packet;
    for p in &mut paths {
        p.vs_parse_lookup = p.ns_per_packet / anchor_parse.max(1.0);
    }
    let slowest = paths
        .iter()
        .filter(|p| p.program == PROGRAM_NAME)
        .max_by(|a, b| a.ns_per_packet.total_cmp(&b.ns_per_packet))
        .ok_or_else(|| anyhow::anyhow!("no gateway paths measured"))?;
    let updates = 2 * gateway_common::MAX_PEER_SLOTS;
    let took = h.time_slot_updates(gateway_common::MAX_PEER_SLOTS)?;
    let map_updates_per_sec = updates as f64 / took.as_secs_f64().max(1e-9);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    Ok(XdpBenchReport {
        repeat,
        rounds,
        slowest_path: slowest.path.clone(),
        slowest_ns: slowest.ns_per_packet,
        slowest_vs_parse_lookup: slowest.ns_per_packet / anchor_parse.max(1.0),
        anchor_drop_count_ns: anchor_drop,
        anchor_parse_lookup_ns: anchor_parse,
        target_vs_parse_lookup: TARGET_VS_PARSE_LOOKUP,
        map_updates_per_sec,
        kernel,
        paths,
    })
}

/// The report as a table.
pub fn table(r: &XdpBenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "XDP cost per packet, BPF_PROG_TEST_RUN, {} repeats x {} rounds (median; min-max)", r.repeat, r.rounds);
    let _ = writeln!(out, "  {:<48} {:>9}  {:>11}  {:>8}", "path", "ns", "min-max", "x anchor");
    for p in &r.paths {
        let _ = writeln!(
            out,
            "  {:<48} {:>9.1}  {:>11}  {:>7.2}x",
            p.path,
            p.ns_per_packet,
            format!("{:.0}-{:.0}", p.min_ns, p.max_ns),
            p.vs_parse_lookup
        );
    }
    let _ = writeln!(
        out,
        "slowest XDP path: {} at {:.1} ns = {:.2}x the parse+lookup anchor ({:.1} ns); target <= {:.1}x: {}",
        r.slowest_path,
        r.slowest_ns,
        r.slowest_vs_parse_lookup,
        r.anchor_parse_lookup_ns,
        r.target_vs_parse_lookup,
        if r.slowest_vs_parse_lookup <= r.target_vs_parse_lookup { "met" } else { "missed" }
    );
    let _ = writeln!(out, "allow-slot map updates from userspace: {:.0}/s", r.map_updates_per_sec);
    out
}
