//! One verdict function, three homes: the XDP program and the late gate
//! (the socket filter) run by the kernel (`BPF_PROG_TEST_RUN`), and
//! `gateway_common::classify` / `classify_datagram` run in userspace, must
//! give the same action and reason on every frame of a corpus of valid,
//! malformed, truncated, fragmented, extension-header and randomly mutated
//! packets, and (late gate) UDP GRO buffers of many datagrams.

use anyhow::Result;
use gateway::xdp::testrun::{KernelHarness, XDP_DROP, XDP_PASS};
use gateway_common::frames::{wg_message, ModelGate, UdpFrame};
use gateway_common::{classify, classify_datagram, Coalesced, EndpointKey, IpDatagram, XdpConfig, XdpVerdict, MODE_ENFORCE};
use gateway_tests::netns::require_root;

const GW: [u8; 4] = [198, 18, 0, 1];
const NODE: [u8; 4] = [198, 18, 0, 2];
const PORT: u16 = 51820;
const OPEN_SLOTS: [u32; 2] = [5, 9];

/// A small deterministic generator (xorshift64*): the corpus is the same on
/// every run, so a disagreement reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

/// Valid and near-valid frames of every shape the classifier distinguishes.
fn base_frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let msgs = [
        wg_message(1, 0, 148),
        wg_message(2, 5 << 8, 92),
        wg_message(3, 9 << 8 | 1, 64),
        wg_message(4, 5 << 8 | 2, 32),
        wg_message(4, 9 << 8, 200),
        wg_message(4, 6 << 8, 64),
        wg_message(4, 0xffff_ff00, 64),
        wg_message(2, 77 << 8, 92),
        wg_message(7, 0, 148),
        wg_message(1, 0, 147),
        wg_message(3, 5 << 8, 65),
        wg_message(4, 5 << 8, 31),
        vec![1, 0],
        vec![],
    ];
    for m in &msgs {
        for src_port in [40000u16, 40001, 40002] {
            out.push(UdpFrame::v4(NODE, src_port, GW, PORT, m).build());
        }
        out.push(UdpFrame::v6(v6(2), 40000, v6(1), PORT, m).build());
        let mut tagged = UdpFrame::v4(NODE, 40000, GW, PORT, m);
        tagged.vlans = &[10];
        out.push(tagged.build());
        let mut qinq = UdpFrame::v4(NODE, 40000, GW, PORT, m);
        qinq.vlans = &[10, 20];
        out.push(qinq.build());
        out.push(UdpFrame::v4(NODE, 40000, GW, 53, m).build());
        let mut frag = UdpFrame::v4(NODE, 40000, GW, PORT, m);
        frag.v4_frag = 0x2000;
        out.push(frag.build());
        let mut lying = UdpFrame::v4(NODE, 40000, GW, PORT, m);
        lying.udp_len_override = Some((m.len() + 9) as u16);
        out.push(lying.build());
    }
    out.extend(fragment_frames());
    out.extend(extension_header_frames());
    // Every truncation of a valid initiation and transport frame.
    for m in [wg_message(1, 0, 148), wg_message(4, 5 << 8, 48)] {
        let full = UdpFrame::v4(NODE, 40000, GW, PORT, &m).build();
        for len in 0..full.len() {
            out.push(full[..len].to_vec());
        }
    }
    out
}

/// Fragmented datagrams for open and closed slots and from a denied
/// endpoint, both families: in order, reversed, overlapping, and first
/// fragments cut inside the UDP or the WireGuard header. The order matters
/// (the fragment table is state), and both sides see the same order.
fn fragment_frames() -> Vec<Vec<u8>> {
    use gateway_common::frames::ExtHeader;
    let mut out = Vec::new();
    let msgs = [
        (wg_message(4, 5 << 8, 300), 40000u16),
        (wg_message(4, 6 << 8, 300), 40000),
        (wg_message(2, 9 << 8, 92), 40000),
        (wg_message(1, 0, 148), 40001),
        (wg_message(1, 0, 148), 40000),
    ];
    for (i, (m, src_port)) in msgs.iter().enumerate() {
        for family in 0..2 {
            let mut d = if family == 0 {
                UdpFrame::v4(NODE, *src_port, GW, PORT, m)
            } else {
                UdpFrame::v6(v6(2), *src_port, v6(1), PORT, m)
            };
            let id = 100 + i as u32 * 10 + family;
            d.ip_id = id;
            out.extend(d.fragments(&[48, 96]));
            d.ip_id = id + 1;
            let mut reversed = d.fragments(&[48, 96]);
            reversed.reverse();
            out.extend(reversed);
            d.ip_id = id + 2;
            // Overlapping: the second piece rewrites bytes of the first.
            out.push(d.fragment(0, 48, true));
            out.push(d.fragment(8, 64, true));
            out.push(d.fragment(64, 400, false));
            d.ip_id = id + 3;
            // Cut inside the UDP header, then inside the WireGuard header.
            out.push(d.fragment(0, 4, true));
            out.push(d.fragment(8, 400, false));
            d.ip_id = id + 4;
            out.push(d.fragment(0, 16, true));
            out.push(d.fragment(16, 400, false));
            if family == 1 {
                d.ip_id = id + 5;
                d.v6_ext = &[ExtHeader::HopByHop(0), ExtHeader::DestOpts(1)];
                out.extend(d.fragments(&[64, 128]));
            }
        }
    }
    out
}

/// IPv6 extension-header chains: walkable ones, too long or too deep ones,
/// headers the walk stops at, atomic fragments, two fragment headers.
fn extension_header_frames() -> Vec<Vec<u8>> {
    use gateway_common::frames::ExtHeader::{self, *};
    let chains: [&[ExtHeader]; 9] = [
        &[HopByHop(0)],
        &[DestOpts(2), Routing(1)],
        &[HopByHop(0), DestOpts(0), Routing(0), Fragment { offset: 0, more: false, id: 7 }, DestOpts(0)],
        &[Fragment { offset: 0, more: false, id: 8 }],
        &[DestOpts(0); 6],
        &[DestOpts(0); 7],
        &[HopByHop(63), DestOpts(0)],
        &[Other(51, 2)],
        &[Fragment { offset: 0, more: true, id: 9 }, Fragment { offset: 0, more: true, id: 10 }],
    ];
    let mut out = Vec::new();
    for chain in chains {
        for m in [wg_message(4, 5 << 8, 64), wg_message(4, 6 << 8, 64), wg_message(1, 0, 148)] {
            let mut f = UdpFrame::v6(v6(2), 40000, v6(1), PORT, &m);
            f.v6_ext = chain;
            let frame = f.build();
            // Cut inside the chain too.
            out.push(frame[..(14 + 40 + 6).min(frame.len())].to_vec());
            out.push(frame);
        }
    }
    out
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !f.is_empty() => {
                // Header bytes matter most: bias flips to the first 64.
                let i = rng.below(f.len().min(64));
                f[i] ^= 1 << rng.below(8);
            }
            1 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
            2 => f.truncate(rng.below(f.len() + 1)),
            _ => f.extend((0..rng.below(32)).map(|_| rng.next() as u8)),
        }
    }
    f
}

fn setup(config: XdpConfig, now: u64) -> Result<(KernelHarness, ModelGate)> {
    let mut kernel = KernelHarness::load(config)?;
    let mut model = ModelGate { seed: config.hash_seed, ..ModelGate::default() };
    for s in OPEN_SLOTS {
        kernel.open_slot(s)?;
        model.allowed_slots.insert(s);
    }
    // Denied for good, and a deny that has lapsed.
    for (port, expires) in [(40001u16, u64::MAX), (40002, 1)] {
        kernel.deny(EndpointKey::v4(NODE, port), expires)?;
        model.deny(EndpointKey::v4(NODE, port), expires);
    }
    let _ = now;
    Ok((kernel, model))
}

#[test]
fn kernel_and_userspace_verdicts_agree_on_the_corpus() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let config = XdpConfig { wg_port: PORT, mode: MODE_ENFORCE, hash_seed: 0x1234_5678, ..XdpConfig::default() };
    let now = gateway::xdp::monotonic_now_ns();
    let (mut kernel, mut model) = setup(config, now)?;

    let mut corpus = base_frames();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bases = corpus.clone();
    for _ in 0..4000 {
        let b = &bases[rng.below(bases.len())];
        corpus.push(mutate(&mut rng, b));
    }

    let mut seen = std::collections::BTreeSet::new();
    for (i, frame) in corpus.iter().enumerate() {
        // The kernel rejects test runs on frames shorter than an Ethernet header.
        if frame.len() < 14 {
            continue;
        }
        let expected = classify(frame.as_slice(), &config, &mut model, || now);
        let (action, reason) = kernel.run(frame)?;
        assert_eq!(reason, expected, "frame #{i} {frame:02x?}");
        let expected_action = if expected.is_drop() { XDP_DROP } else { XDP_PASS };
        assert_eq!(action, expected_action, "frame #{i}");
        seen.insert(reason);
    }
    // The corpus reaches every reason but the rate limiter and the unproven
    // budget (tested below: they need one CPU's bucket).
    for r in XdpVerdict::ALL {
        if r != XdpVerdict::DropRateLimited && r != XdpVerdict::DropUnprovenBudget {
            assert!(seen.contains(&r), "corpus never produced {r:?}");
        }
    }
    Ok(())
}

#[test]
fn kernel_and_userspace_rate_limit_alike() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // One initiation per 1000 s with a burst of 2: the third back-to-back
    // initiation is over the limit whatever the clocks read.
    let config = XdpConfig { wg_port: PORT, mode: MODE_ENFORCE, handshake_rate_per_sec: 0, hash_seed: 7, ..XdpConfig::default() };
    let (mut kernel, mut model) = setup(config, 0)?;
    let limited = XdpConfig { handshake_rate_per_sec: 1, handshake_burst: 2, ..config };
    kernel.set_config(limited)?;
    let now = gateway::xdp::monotonic_now_ns();
    let init = UdpFrame::v4(NODE, 40000, GW, PORT, &wg_message(1, 0, 148)).build();
    let mut got = Vec::new();
    for _ in 0..3 {
        let expected = classify(init.as_slice(), &limited, &mut model, || now);
        let (_, reason) = kernel.run(&init)?;
        assert_eq!(reason, expected);
        got.push(reason);
    }
    assert_eq!(got, [XdpVerdict::PassHandshakeInit, XdpVerdict::PassHandshakeInit, XdpVerdict::DropRateLimited]);
    Ok(())
}

/// The unproven budget is one bucket per CPU: the test pins itself to one
/// CPU so every run meets the same bucket, as the model's one.
fn pin_to_one_cpu() -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    anyhow::ensure!(rc == 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
    Ok(())
}

#[test]
fn kernel_and_userspace_spend_the_unproven_budget_alike() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    pin_to_one_cpu()?;
    // A budget of 3 per 1000 s for every endpoint not marked live: the
    // spoofed sources past the third are dropped whatever the clocks read,
    // the live endpoint keeps its own bucket (burst 2), an expired mark
    // counts for nothing.
    let config = XdpConfig {
        wg_port: PORT,
        mode: MODE_ENFORCE,
        handshake_rate_per_sec: 1,
        handshake_burst: 2,
        unproven_rate_per_sec: 1,
        unproven_burst: 3,
        hash_seed: 0x5eed,
        ..XdpConfig::default()
    };
    let (mut kernel, mut model) = setup(config, 0)?;
    let now = gateway::xdp::monotonic_now_ns();
    let live = EndpointKey::v4(NODE, 40000);
    let lapsed = EndpointKey::v4(NODE, 40003);
    for (endpoint, until) in [(live, u64::MAX), (lapsed, 1)] {
        kernel.mark_live(endpoint, until)?;
        model.mark_live(endpoint, until);
    }
    let init = |src: [u8; 4], port: u16| UdpFrame::v4(src, port, GW, PORT, &wg_message(1, 0, 148)).build();
    let mut frames = Vec::new();
    for i in 0..6u8 {
        frames.push(init([10, 7, 0, i], 1000 + i as u16));
        frames.push(init(NODE, 40000));
    }
    frames.push(init(NODE, 40003));
    let mut got = Vec::new();
    for f in &frames {
        let expected = classify(f.as_slice(), &config, &mut model, || now);
        let (_, reason) = kernel.run(f)?;
        assert_eq!(reason, expected);
        got.push(reason);
    }
    let count = |v: XdpVerdict| got.iter().filter(|g| **g == v).count();
    assert_eq!(count(XdpVerdict::DropUnprovenBudget), 4, "{got:?}");
    assert_eq!(count(XdpVerdict::DropRateLimited), 4, "the live endpoint's own bucket: {got:?}");
    assert_eq!(count(XdpVerdict::PassHandshakeInit), 5, "{got:?}");
    Ok(())
}

/// GRO buffers as the late gate sees them: one IP and UDP header, then
/// `count` payloads of `segment` bytes (the last may be shorter).
fn coalesced_frames() -> Vec<(Vec<u8>, Coalesced)> {
    let mut out = Vec::new();
    let seg = |slot: u32, len: usize| wg_message(4, slot << 8, len);
    let cases: Vec<(Vec<Vec<u8>>, usize)> = vec![
        (vec![seg(5, 200), seg(5, 200), seg(9, 200)], 200),
        (vec![seg(5, 200), seg(6, 200), seg(5, 200)], 200),
        (vec![seg(5, 200), seg(5, 200), seg(5, 48)], 200),
        (vec![seg(5, 200), seg(5, 200), seg(6, 48)], 200),
        (vec![wg_message(2, 5 << 8, 92), seg(5, 32)], 92),
        (vec![wg_message(1, 0, 148), wg_message(1, 0, 148)], 148),
        (vec![seg(5, 48); 64], 48),
        (vec![seg(5, 32); 65], 32),
    ];
    for (segments, size) in cases {
        let payload: Vec<u8> = segments.concat();
        let f = UdpFrame::v4(NODE, 40000, GW, PORT, &payload).build();
        out.push((f.clone(), Coalesced { segment: size, count: segments.len() }));
        out.push((f, Coalesced { segment: 0, count: segments.len() }));
    }
    out
}

#[test]
fn kernel_and_userspace_late_gates_agree() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let config = XdpConfig { wg_port: PORT, mode: MODE_ENFORCE, hash_seed: 0x0bad_cafe, ..XdpConfig::default() };
    let now = gateway::xdp::monotonic_now_ns();
    let (mut kernel, mut model) = setup(config, now)?;
    let mut corpus: Vec<(Vec<u8>, Coalesced)> = base_frames().into_iter().map(|f| (f, Coalesced::ONE)).collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let bases = corpus.clone();
    for _ in 0..2000 {
        let (b, _) = &bases[rng.below(bases.len())];
        corpus.push((mutate(&mut rng, b), Coalesced::ONE));
    }
    corpus.extend(coalesced_frames());
    let mut seen = std::collections::BTreeSet::new();
    for (i, (frame, coalesced)) in corpus.iter().enumerate() {
        // The kernel refuses to test-run a socket filter on a datagram
        // without a whole IP header (no socket ever gets one).
        let ip_header = match frame.get(12..14) {
            Some([0x86, 0xdd]) => 40,
            _ => 20,
        };
        if frame.len() < 14 + ip_header {
            continue;
        }
        // The socket filter gets the datagram from its IP header on.
        let datagram = IpDatagram::new(&frame[14..]);
        let expected = classify_datagram(&datagram, &config, &mut model, || now, *coalesced);
        let (kept, verdict) = kernel.run_late(frame, *coalesced)?;
        assert_eq!(verdict, expected, "datagram #{i} {coalesced:?} {frame:02x?}");
        assert_eq!(kept, !expected.is_drop(), "datagram #{i}");
        seen.insert(verdict);
    }
    for v in [XdpVerdict::PassTransport, XdpVerdict::DropUnknownSlot, XdpVerdict::DropDeniedEndpoint, XdpVerdict::DropMalformed] {
        assert!(seen.contains(&v), "the late corpus never produced {v:?}");
    }
    Ok(())
}
