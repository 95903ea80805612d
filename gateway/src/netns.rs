//! Network namespaces: entering one by name (`/run/netns/<name>`) for this
//! process or a thread, and scratch namespaces and veth pairs for the demo
//! and the tests (I/O edge).

use anyhow::Context;
use std::os::fd::AsFd;

/// Moves the calling thread (call it before spawning any) into the network
/// namespace `name`.
pub fn enter(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && !name.contains('/') && name != "." && name != "..",
        "invalid network namespace name {name:?}"
    );
    let path = std::path::Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {name}"))?;
    Ok(())
}

/// Runs `f` on a new thread that has entered network namespace `name`, and
/// returns its result. Sockets created inside stay in that namespace when
/// handed back, so one process can talk from several namespaces.
pub fn within<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread inside network namespace panicked"))?
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("spawning {program}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip <args>` in the current namespace.
pub fn ip(args: &[&str]) -> anyhow::Result<std::process::Output> {
    run("ip", args)
}

/// A name unique to this process and call: `<prefix><pid%100000>x<n>`.
/// Interface names must stay under 16 bytes: keep prefixes to 4 characters.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A network namespace made for a test or the demo, deleted (with every
/// interface inside it) on drop, so a failing run still cleans up.
pub struct Netns {
    name: String,
    /// Deleted on drop only when this handle created it.
    owned: bool,
}

impl Netns {
    /// Creates `<prefix>...` with its loopback up.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = unique_name(prefix);
        ip(&["netns", "add", &name])?;
        let ns = Netns { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace someone else owns (not deleted on drop), e.g.
    /// to use one from another thread.
    pub fn existing(name: &str) -> Self {
        Netns { name: name.to_string(), owned: false }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a program inside the namespace (`ip netns exec`) and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A `Command` running `program` inside the namespace via `ip netns exec`
    /// (a fresh mount namespace: use `gateway --netns` for the gateway itself).
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", self.name.as_str(), program]);
        cmd
    }

    /// Runs `f` on a thread inside this namespace (see [`within`]).
    pub fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        within(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = std::process::Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// A veth pair between two namespaces, each end addressed and up. Deleting
/// either namespace deletes the pair.
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    pub fn connect(ns_a: &Netns, addr_a: &str, ns_b: &Netns, addr_b: &str) -> anyhow::Result<Self> {
        let a = unique_name("va");
        let b = unique_name("vb");
        ip(&[
            "link", "add", &a, "netns", ns_a.name(), "type", "veth", "peer", "name", &b, "netns",
            ns_b.name(),
        ])?;
        ns_a.ip(&["addr", "add", addr_a, "dev", &a])?;
        ns_b.ip(&["addr", "add", addr_b, "dev", &b])?;
        ns_a.ip(&["link", "set", &a, "up"])?;
        ns_b.ip(&["link", "set", &b, "up"])?;
        Ok(VethPair { a, b })
    }
}
