//! Runs the XDP program on given frames through `BPF_PROG_TEST_RUN`, without
//! attaching it anywhere (I/O edge): the kernel side of the verdict
//! equivalence test and of the per-packet cost benchmark.

use super::OBJECT;
use super::loader::XdpError;
use anyhow::Context;
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Btf, Ebpf, EbpfLoader};
use gateway_common::{
    AllowSlot, DenyEntry, EndpointKey, XdpVerdict, XdpConfig, XdpStats, MAP_ALLOW_SLOTS, MAP_CONFIG,
    MAP_DENY_ENDPOINTS, MAP_STATS, PROGRAM_NAME, ANCHOR_DROP_COUNT, ANCHOR_PARSE_LOOKUP,
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

    fn stats(&self) -> anyhow::Result<XdpStats> {
        let m: PerCpuArray<&MapData, XdpStats> =
            PerCpuArray::try_from(self.ebpf.map(MAP_STATS).context("stats map")?)?;
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
        let after = self.stats()?.as_array();
        let counted: Vec<XdpVerdict> = XdpVerdict::ALL
            .iter()
            .copied()
            .filter(|r| after[*r as usize] != before[*r as usize])
            .collect();
        anyhow::ensure!(counted.len() == 1, "expected exactly one counter to move, got {counted:?}");
        Ok((result.return_value, counted[0]))
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
