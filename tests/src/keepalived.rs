//! Debian's `keepalived` inside a test's gateway namespace, configured from
//! the shipped example (`config/keepalived.conf`) with the test's addresses
//! put in place of the example's, so the example is what the tests run.
//! VRRP goes unicast to the peer gateway's namespace only. The process (and
//! its VRRP child) is stopped on drop.

use crate::netns::{repo_root, ChildGuard, Netns};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The example's values, replaced by [`Vrrp`]'s.
const EXAMPLE_IFACE: &str = "eth0";
const EXAMPLE_SELF: &str = "192.0.2.11";
const EXAMPLE_PEER: &str = "192.0.2.12";
const EXAMPLE_FLOATING: &str = "192.0.2.10/24";
const EXAMPLE_WG_IFACE: &str = "wg-dstack";
const EXAMPLE_ROUTER_ID: &str = "gateway-a";

/// One gateway's side of the pair.
#[derive(Debug, Clone)]
pub struct Vrrp {
    pub router_id: String,
    /// The underlay interface carrying the floating address.
    pub iface: String,
    pub self_ip: String,
    pub peer_ip: String,
    /// With its prefix, e.g. `10.201.0.100/24`.
    pub floating: String,
    /// The gateway's WireGuard (TUN) interface: gone when the gateway dies.
    pub wg_iface: String,
}

/// The example with `v`'s values in place (pure).
pub fn render(example: &str, v: &Vrrp) -> Result<String> {
    for needle in [EXAMPLE_IFACE, EXAMPLE_SELF, EXAMPLE_PEER, EXAMPLE_FLOATING, EXAMPLE_WG_IFACE, EXAMPLE_ROUTER_ID] {
        ensure!(example.contains(needle), "config/keepalived.conf no longer mentions {needle}: update tests/src/keepalived.rs");
    }
    // The floating address first: it contains no other needle, but the
    // interface name appears after it on the same line.
    let text = example
        .replace(EXAMPLE_FLOATING, &v.floating)
        .replace(&format!("dev {EXAMPLE_IFACE}"), &format!("dev {}", v.iface))
        .replace(&format!("interface {EXAMPLE_IFACE}"), &format!("interface {}", v.iface))
        .replace(EXAMPLE_SELF, &v.self_ip)
        .replace(EXAMPLE_PEER, &v.peer_ip)
        .replace(EXAMPLE_WG_IFACE, &v.wg_iface)
        .replace(EXAMPLE_ROUTER_ID, &v.router_id);
    Ok(text)
}

/// A running `keepalived -n` in a namespace.
pub struct Keepalived {
    process: Option<ChildGuard>,
    vrrp_pid_file: PathBuf,
    log: PathBuf,
}

impl Keepalived {
    /// Writes `<dir>/<router_id>.conf` from the example and starts keepalived
    /// in `ns`, its log in `<dir>/<router_id>.keepalived.log`.
    pub fn start(ns: &Netns, dir: &Path, v: &Vrrp) -> Result<Self> {
        let example = std::fs::read_to_string(repo_root().join("config/keepalived.conf")).context("config/keepalived.conf")?;
        let conf = dir.join(format!("{}.conf", v.router_id));
        std::fs::write(&conf, render(&example, v)?)?;
        let pid_file = dir.join(format!("{}.pid", v.router_id));
        let vrrp_pid_file = dir.join(format!("{}.vrrp.pid", v.router_id));
        let log_path = dir.join(format!("{}.keepalived.log", v.router_id));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = ns.command("keepalived");
        // -n: stay in the foreground (our child), -l: log to the console,
        // --vrrp: no health-checker process.
        cmd.args(["-n", "-l", "--vrrp", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(&pid_file)
            .arg("-r")
            .arg(&vrrp_pid_file)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let process = ChildGuard::spawn(cmd, "keepalived")?;
        Ok(Keepalived { process: Some(process), vrrp_pid_file, log: log_path })
    }

    /// The VRRP state keepalived last logged entering (`MASTER`, `BACKUP`,
    /// `FAULT`), if any yet.
    pub fn state(&self) -> Result<Option<String>> {
        Ok(last_state(&std::fs::read_to_string(&self.log)?))
    }
}

/// The last `(<instance>) Entering <STATE> STATE` of a keepalived log (pure;
/// keepalived writes `entering FAULT state` in lower case at start-up).
fn last_state(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let lower = line.to_ascii_lowercase();
        let rest = &lower[lower.find(") entering ")? + ") entering ".len()..];
        let state = rest.split_whitespace().next()?;
        Some(state.to_ascii_uppercase())
    })
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // SIGTERM lets keepalived remove the floating address and stop its
        // VRRP child; SIGKILL (the guard's drop) only if it hangs.
        if let Some(mut p) = self.process.take() {
            let _ = p.terminate(Duration::from_secs(5));
        }
        // A VRRP child that outlived its parent, by its own pid file, and
        // only if that pid is still a keepalived.
        if let Some(pid) = std::fs::read_to_string(&self.vrrp_pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "keepalived" {
                // SAFETY: kill(2) on a pid we checked is our keepalived child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Whether `ns` holds `address` (no prefix) on `iface`.
pub fn holds(ns: &Netns, iface: &str, address: &str) -> Result<bool> {
    let out = ns.ip(&["-j", "addr", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["addr_info"].as_array().is_some_and(|a| a.iter().any(|i| i["local"].as_str() == Some(address))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_last_state_entered_wins() {
        let log = "Tue Dec  1 22:24:32 2026: (gw) entering FAULT state\n\
                   Tue Dec  1 22:24:32 2026: Netlink reports katunA up\n\
                   Tue Dec  1 22:24:32 2026: (gw) Entering BACKUP STATE (init)\n";
        assert_eq!(last_state(log).as_deref(), Some("BACKUP"));
        assert_eq!(last_state("Startup complete\n"), None);
    }

    #[test]
    fn the_shipped_example_renders_with_the_tests_addresses() {
        let example = std::fs::read_to_string(repo_root().join("config/keepalived.conf")).unwrap();
        let v = Vrrp {
            router_id: "ha1".into(),
            iface: "ve1".into(),
            self_ip: "10.201.0.1".into(),
            peer_ip: "10.201.0.2".into(),
            floating: "10.201.0.100/24".into(),
            wg_iface: "wgl1".into(),
        };
        let text = render(&example, &v).unwrap();
        for line in ["interface ve1", "unicast_src_ip 10.201.0.1", "10.201.0.2", "10.201.0.100/24 dev ve1", "wgl1", "router_id ha1", "version 3", "advert_int 0.1"] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        for example_value in ["eth0", "192.0.2.", "wg-dstack", "gateway-a"] {
            let in_settings = text.lines().filter(|l| !l.trim_start().starts_with('#')).any(|l| l.contains(example_value));
            assert!(!in_settings, "{example_value} left in a setting");
        }
    }
}
