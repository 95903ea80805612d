//! Runs the XDP program and the late gate on given frames through
//! `BPF_PROG_TEST_RUN`, without attaching them anywhere (I/O edge): the
//! kernel side of the verdict equivalence test and of the per-packet cost
//! benchmark.

use super::OBJECT;
use super::loader::XdpError;
use anyhow::Context;
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{SocketFilter, TestRun, TestRunOptions, Xdp};
use aya::{Btf, Ebpf, EbpfLoader};
use gateway_common::{
    AllowSlot, Coalesced, DenyEntry, EndpointKey, LiveEndpoint, XdpConfig, XdpStats, XdpVerdict, ANCHOR_DROP_COUNT,
    ANCHOR_PARSE_LOOKUP, LATE_GATE_PROGRAM, MAP_ALLOW_SLOTS, MAP_CONFIG, MAP_DENY_ENDPOINTS,
    MAP_LATE_STATS, MAP_LIVE_ENDPOINTS, MAP_STATS, PROGRAM_NAME,
};
use std::time::Duration;

/// `XDP_DROP` and `XDP_PASS` from the kernel's `enum xdp_action`.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The loaded (unattached) program and its private maps.
pub struct KernelHarness {
    ebpf: Ebpf,
    config: XdpConfig,
}

impl KernelHarness {
    pub fn load(config: XdpConfig) -> Result<Self, XdpError> {
        if OBJECT.is_empty() {
            return Err(XdpError::NotEmbedded);
        }
        let btf = Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new().btf(btf.as_ref()).load(OBJECT).context("loading the eBPF object")?;
        for name in [PROGRAM_NAME, ANCHOR_DROP_COUNT, ANCHOR_PARSE_LOOKUP] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing"))?
                .try_into()
                .context("program is not XDP")?;
            program.load().with_context(|| format!("loading {name} (verifier)"))?;
        }
        let late: &mut SocketFilter = ebpf
            .program_mut(LATE_GATE_PROGRAM)
            .with_context(|| format!("program {LATE_GATE_PROGRAM} missing"))?
            .try_into()
            .context("the late gate is not a socket filter")?;
        late.load().context("loading the late gate (verifier)")?;
        let mut h = KernelHarness { ebpf, config };
        h.set_config(config)?;
        Ok(h)
    }

    pub fn set_config(&mut self, config: XdpConfig) -> anyhow::Result<()> {
        self.config = config;
        let mut m: Array<&mut MapData, XdpConfig> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).context("config map")?)?;
        m.set(0, config, 0)?;
        Ok(())
    }

    pub fn open_slot(&mut self, slot: u32) -> anyhow::Result<()> {
        let mut m: Array<&mut MapData, AllowSlot> =
            Array::try_from(self.ebpf.map_mut(MAP_ALLOW_SLOTS).context("allow map")?)?;
        m.set(slot, AllowSlot { allowed: 1, generation: 0 }, 0)?;
        Ok(())
    }

    pub fn deny(&mut self, endpoint: EndpointKey, expires_ns: u64) -> anyhow::Result<()> {
        let index = gateway_common::deny_slot_of(&endpoint, self.config.hash_seed);
        let mut m: Array<&mut MapData, DenyEntry> =
            Array::try_from(self.ebpf.map_mut(MAP_DENY_ENDPOINTS).context("deny map")?)?;
        m.set(index, DenyEntry { endpoint, expires_ns, reason: 0, _pad: 0 }, 0)?;
        Ok(())
    }

    pub fn mark_live(&mut self, endpoint: EndpointKey, expires_ns: u64) -> anyhow::Result<()> {
        let index = gateway_common::live_slot_of(&endpoint, self.config.hash_seed);
        let mut m: Array<&mut MapData, LiveEndpoint> =
            Array::try_from(self.ebpf.map_mut(MAP_LIVE_ENDPOINTS).context("live endpoint map")?)?;
        m.set(index, LiveEndpoint::new(endpoint, expires_ns), 0)?;
        Ok(())
    }

    fn stats(&self) -> anyhow::Result<XdpStats> {
        self.stats_of(MAP_STATS)
    }

    fn stats_of(&self, map: &str) -> anyhow::Result<XdpStats> {
        let m: PerCpuArray<&MapData, XdpStats> =
            PerCpuArray::try_from(self.ebpf.map(map).context("stats map")?)?;
        let mut total = XdpStats::default();
        for cpu in m.get(&0, 0)?.iter() {
            total.accumulate(cpu);
        }
        Ok(total)
    }

    fn program(&self) -> anyhow::Result<&Xdp> {
        self.named(PROGRAM_NAME)
    }

    fn named(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self.ebpf.program(name).with_context(|| format!("program {name} missing"))?.try_into()?)
    }

    /// Runs the program once on `frame`: its action and the reason it counted.
    pub fn run(&mut self, frame: &[u8]) -> anyhow::Result<(u32, XdpVerdict)> {
        let before = self.stats()?.as_array();
        let result = self
            .program()?
            .test_run(TestRunOptions { data_in: Some(frame), ..TestRunOptions::new() })
            .context("BPF_PROG_TEST_RUN")?;
        Ok((result.return_value, the_one_that_moved(&before, &self.stats()?)?))
    }

    /// Runs the late gate once on `frame` (Ethernet: the kernel strips it and
    /// hands the filter the IP datagram), as a buffer of `coalesced`
    /// datagrams: whether it kept the datagram, and the verdict it counted.
    pub fn run_late(&mut self, frame: &[u8], coalesced: Coalesced) -> anyhow::Result<(bool, XdpVerdict)> {
        let before = self.stats_of(MAP_LATE_STATS)?.as_array();
        let ctx = skb_ctx(coalesced);
        let ctx_in = (coalesced.count > 1).then_some(ctx.as_slice());
        let result = self
            .late()?
            .test_run(TestRunOptions { data_in: Some(frame), ctx_in, ..TestRunOptions::new() })
            .context("BPF_PROG_TEST_RUN (late gate)")?;
        Ok((result.return_value != 0, the_one_that_moved(&before, &self.stats_of(MAP_LATE_STATS)?)?))
    }

    fn late(&self) -> anyhow::Result<&SocketFilter> {
        Ok(self.ebpf.program(LATE_GATE_PROGRAM).context("late gate missing")?.try_into()?)
    }

    /// The late gate run `repeat` times on `frame`: the kernel's mean time per run.
    pub fn time_late(&self, frame: &[u8], coalesced: Coalesced, repeat: u32) -> anyhow::Result<Duration> {
        let ctx = skb_ctx(coalesced);
        let result = self
            .late()?
            .test_run(TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), repeat, ..TestRunOptions::new() })
            .context("BPF_PROG_TEST_RUN (late gate)")?;
        Ok(result.duration)
    }

    /// Opens then closes `count` allow slots from userspace (one map update
    /// syscall each): how fast the access layer can change the kernel's view.
    pub fn time_slot_updates(&mut self, count: u32) -> anyhow::Result<Duration> {
        let mut m: Array<&mut MapData, AllowSlot> =
            Array::try_from(self.ebpf.map_mut(MAP_ALLOW_SLOTS).context("allow map")?)?;
        let started = std::time::Instant::now();
        for slot in 0..count {
            m.set(slot % gateway_common::MAX_PEER_SLOTS, AllowSlot { allowed: 1, generation: slot }, 0)?;
        }
        for slot in 0..count {
            m.set(slot % gateway_common::MAX_PEER_SLOTS, AllowSlot::default(), 0)?;
        }
        Ok(started.elapsed())
    }

    /// Runs program `name` (the gateway's or an anchor) `repeat` times on
    /// `frame` in the kernel: the mean time per run as the kernel measured it.
    pub fn time(&self, name: &str, frame: &[u8], repeat: u32) -> anyhow::Result<Duration> {
        let result = self
            .named(name)?
            .test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::new() })
            .context("BPF_PROG_TEST_RUN")?;
        Ok(result.duration)
    }
}

/// The verdict whose counter moved between `before` and `after`: exactly one
/// must, or the program counted wrong.
fn the_one_that_moved(before: &[u64; XdpVerdict::COUNT], after: &XdpStats) -> anyhow::Result<XdpVerdict> {
    let after = after.as_array();
    let counted: Vec<XdpVerdict> = XdpVerdict::ALL.iter().copied().filter(|r| after[*r as usize] != before[*r as usize]).collect();
    anyhow::ensure!(counted.len() == 1, "expected exactly one counter to move, got {counted:?}");
    Ok(counted[0])
}

/// A `struct __sk_buff` for `BPF_PROG_TEST_RUN` with only the UDP GRO
/// fields set (the kernel copies `gso_segs` and `gso_size` into the buffer
/// it builds; every other field must be zero).
fn skb_ctx(coalesced: Coalesced) -> Vec<u8> {
    // Offsets of gso_segs and gso_size in include/uapi/linux/bpf.h's
    // struct __sk_buff (192 bytes), stable kernel ABI.
    const GSO_SEGS: usize = 164;
    const GSO_SIZE: usize = 176;
    let mut ctx = vec![0u8; 192];
    let segs = if coalesced.count > 1 { coalesced.count as u32 } else { 0 };
    let size = if coalesced.count > 1 { coalesced.segment as u32 } else { 0 };
    ctx[GSO_SEGS..GSO_SEGS + 4].copy_from_slice(&segs.to_ne_bytes());
    ctx[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
    ctx
}
