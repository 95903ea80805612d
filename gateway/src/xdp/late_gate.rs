//! The late gate (I/O edge, aya): the XDP program guards one interface, so
//! every WireGuard socket also gets a socket filter that runs the same
//! `gateway_common::classify` on each datagram it receives, whatever
//! interface or path it came by (another NIC, loopback, a tunnel), sharing
//! the pinned maps of the XDP instance (slots, denies, configuration) with
//! its own counters (`GW_LATE_STATS`) and rate-limit buckets. Dropped
//! datagrams never reach the socket's receive queue. docs/ARCHITECTURE.md,
//! "The late gate", says why this and not binding to the guarded interface,
//! and what it costs.
//!
//! The daemon calls [`install`] once the XDP instance is attached; the data
//! plane calls [`attach`] on every socket it opens, before binding it, so
//! no datagram is queued unfiltered. Until `install`, `attach` does nothing
//! (a data plane run on its own, without the XDP front, has no maps to
//! share).

use super::loader::{PinDir, XdpError};
use super::OBJECT;
use anyhow::Context;
use aya::programs::SocketFilter;
use aya::{Btf, Ebpf, EbpfLoader};
use gateway_common::{ALL_MAPS, LATE_GATE_PROGRAM};
use std::os::fd::AsFd;
use std::sync::Mutex;

/// The loaded program, kept for the life of the process: sockets the data
/// plane opens later (more `SO_REUSEPORT` workers, a rebind) attach it too.
/// One process serves one instance, so one slot is enough; it is a global
/// because the data plane opens its sockets far from where the daemon
/// attaches XDP, and this keeps its hook to one call.
static INSTALLED: Mutex<Option<Ebpf>> = Mutex::new(None);

/// Loads the late gate against the maps pinned in `pins` (attached XDP
/// instance), for [`attach`] to put on every WireGuard socket from now on.
pub fn install(pins: &PinDir) -> Result<(), XdpError> {
    if OBJECT.is_empty() {
        return Err(XdpError::NotEmbedded);
    }
    if !pins.is_attached() {
        return Err(XdpError::NotAttached { instance: pins.instance().to_string(), dir: pins.path().to_path_buf() });
    }
    let btf = Btf::from_sys_fs().ok();
    let mut loader = EbpfLoader::new();
    loader.btf(btf.as_ref());
    let paths: Vec<_> = ALL_MAPS.iter().map(|name| (*name, pins.map(name))).collect();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT).context("loading the eBPF object for the late gate")?;
    let program: &mut SocketFilter = ebpf
        .program_mut(LATE_GATE_PROGRAM)
        .with_context(|| format!("program {LATE_GATE_PROGRAM} missing from the object"))?
        .try_into()
        .context("the late gate is not a socket filter")?;
    program.load().context("loading the late gate (verifier)")?;
    *INSTALLED.lock().unwrap_or_else(|p| p.into_inner()) = Some(ebpf);
    tracing::info!(instance = pins.instance(), "late gate loaded: every WireGuard socket gets the verdict");
    Ok(())
}

/// Puts the late gate on `socket` (any number of sockets, each once), if it
/// is installed. Call it before binding, so nothing queues unfiltered.
pub fn attach(socket: &impl AsFd) -> anyhow::Result<()> {
    let installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    let Some(ebpf) = installed.as_ref() else { return Ok(()) };
    let program: &SocketFilter = ebpf
        .program(LATE_GATE_PROGRAM)
        .context("late gate program missing")?
        .try_into()
        .context("the late gate is not a socket filter")?;
    program.attach(socket.as_fd()).context("attaching the late gate to a WireGuard socket (SO_ATTACH_BPF)")?;
    Ok(())
}

/// Whether [`install`] ran in this process.
pub fn is_installed() -> bool {
    INSTALLED.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}
