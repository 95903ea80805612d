//! Test plumbing: network namespaces and veth pairs (from `gateway::netns`),
//! child processes killed on drop, polling, paths. Every name a test creates
//! carries the process id, and every guard removes what it made on drop, so a
//! failing (panicking) test still cleans up after itself.

use anyhow::{bail, Context, Result};
use std::process::Command;

pub use gateway::netns::{ip, run, unique_name, within, Netns, VethPair};

/// A child process killed (and reaped) on drop.
pub struct ChildGuard {
    child: std::process::Child,
    name: String,
}

impl ChildGuard {
    pub fn spawn(mut cmd: Command, name: &str) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        Ok(ChildGuard { child, name: name.to_string() })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: std::time::Duration) -> Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn child_mut(&mut self) -> &mut std::process::Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Ok(Some(v))` or `timeout` passes;
/// the last error (or "timed out") is returned on failure.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if std::time::Instant::now() > deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub use crate::skip::require_root;

/// Path of the workspace root (the parent of `tests/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// The `gateway` binary built for these tests.
pub fn gateway_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("GATEWAY_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("debug").join("gateway")
}

/// User plus system CPU seconds a process (all its threads) has used.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}
