//! The Debian package (deploy/debian/build-deb.sh, the same script as
//! `cargo xtask package`), built from the test build: its files, conffile
//! and dependencies with dpkg-deb; its systemd unit with `systemd-analyze
//! verify` and `systemd-analyze security --offline`; then installed with
//! dpkg into a container of the debootstrap-made base image (no network),
//! where `gateway --version` and `gateway run --check-config` run, and
//! removed and purged again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_tests::container::{output, output_ok, Engine};
use gateway_tests::netns::{gateway_bin, repo_root, unique_name};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const UNIT: &str = "lib/systemd/system/dstack-gateway.service";
const MINUTE: Duration = Duration::from_secs(60);

/// What the host needs to build and check the package (.ci/setup installs it).
fn tools_missing() -> Option<String> {
    for tool in ["dpkg-deb", "objcopy", "objdump", "systemd-analyze"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success()) {
            return Some(format!("{tool} is not installed (run .ci/setup)"));
        }
    }
    None
}

/// Builds the package into `dir`; returns the .deb's path.
fn build_package(dir: &Path) -> PathBuf {
    let mut cmd = Command::new("sh");
    cmd.arg(repo_root().join("deploy/debian/build-deb.sh")).arg(gateway_bin()).arg(env!("CARGO_PKG_VERSION")).arg(dir);
    let out = output_ok(cmd, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e:#}"));
    let deb = PathBuf::from(out.trim());
    assert!(deb.is_file(), "build-deb.sh printed {out:?}");
    assert_eq!(deb.file_name().unwrap().to_str().unwrap(), format!("dstack-gateway_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
    deb
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    output_ok(cmd, MINUTE).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn the_package_carries_the_binary_the_configuration_and_a_hardened_unit() {
    if let Some(why) = tools_missing() {
        return gateway_tests::skip::skip(&why);
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let deb_s = deb.to_str().unwrap();

    let contents = run_ok("dpkg-deb", &["--contents", deb_s]);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/gateway"),
        ("-rw-r--r--", "./etc/dstack-gateway/gateway.toml"),
        ("-rw-r--r--", &format!("./{UNIT}")),
        ("-rw-r--r--", "./usr/share/doc/dstack-gateway/copyright"),
    ] {
        let line = contents.lines().find(|l| l.ends_with(&format!(" {path}"))).unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"));
        assert!(line.starts_with(mode) && line.contains("root/root"), "{line}");
    }
    assert!(!contents.contains(".key"), "no key in the package:\n{contents}");
    let control = run_ok("dpkg-deb", &["--field", deb_s]);
    assert!(control.contains("Package: dstack-gateway\n"), "{control}");
    assert!(control.contains(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))), "{control}");
    assert!(control.contains("Depends: libc6 (>= 2.34), libgcc-s1\n"), "{control}");
    let root = dir.path().join("root");
    run_ok("dpkg-deb", &["--raw-extract", deb_s, root.to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(root.join("DEBIAN/conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/dstack-gateway/gateway.toml\n", "the operator's edits survive upgrades");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/dstack-gateway/gateway.toml")).unwrap(),
        std::fs::read_to_string(repo_root().join("config/gateway.toml")).unwrap()
    );

    // No debug info in the binary; the debuglink names the split-off file.
    let sections = run_ok("objdump", &["-h", root.join("usr/bin/gateway").to_str().unwrap()]);
    // (.debug_gdb_scripts is 34 allocated bytes naming gdb helpers, no DWARF.)
    assert!(!sections.contains("DEBUGGING"), "debug sections in the packaged binary:\n{sections}");
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    assert!(dir.path().join("gateway.debug").is_file(), "the debug info is kept beside the package");

    // The unit, against the host's systemd units (sysinit.target and friends)
    // copied under the package's tree: verify must say nothing at all, as
    // an unknown or misspelt directive is only a warning there.
    let units = root.join("lib/systemd/system");
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        let to = units.join(entry.file_name());
        if !to.exists() {
            let _ = std::fs::copy(entry.path(), &to);
        }
    }
    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", "--man=no", &format!("--root={}", root.display()), &format!("/{UNIT}")]);
    let out = output(verify, MINUTE).unwrap();
    assert!(out.success && out.stdout.trim().is_empty() && out.stderr.trim().is_empty(), "systemd-analyze verify:\n{}{}", out.stdout, out.stderr);

    let mut security = Command::new("systemd-analyze");
    security.args(["security", "--offline=yes", "--no-pager", &format!("--root={}", root.display()), "dstack-gateway.service"]);
    let report = output(security, MINUTE).unwrap().stdout;
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for dstack-gateway.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    // 2.8 at the time of writing ("OK"); a default service scores 9.6.
    assert!(exposure <= 3.5, "the unit's sandbox loosened: exposure {exposure}\n{report}");

    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
    };
    let caps: Vec<String> = values("CapabilityBoundingSet").join(" ").split_whitespace().map(String::from).collect();
    assert_eq!(caps, ["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_NET_BIND_SERVICE"]);
    assert_eq!(values("ProtectSystem"), ["strict"]);
    assert_eq!(values("ReadWritePaths"), ["/sys/fs/bpf"], "the pins");
    assert_eq!(values("StateDirectory"), ["dstack-gateway"], "registry, cursor, audit log");
    assert_eq!(values("RuntimeDirectory"), ["wireguard"], "the UAPI socket");
    assert_eq!(values("DeviceAllow"), ["/dev/net/tun rw"]);
    assert_eq!(values("Restart"), ["on-failure"]);
    assert_eq!(values("NoNewPrivileges"), ["yes"]);
    assert!(values("ExecStartPre").iter().any(|c| c.contains("gateway run --check-config")), "a bad config stops the start");
    // The paths the unit opens up are the ones the gateway uses.
    let config: gateway::config::Config =
        gateway::config::Config::from_toml_and_env(&std::fs::read_to_string(repo_root().join("config/gateway.toml")).unwrap(), &[]).unwrap();
    assert_eq!(config.gateway.state_dir, Path::new("/var/lib/dstack-gateway"));
    assert_eq!(gateway::dataplane::runtime::UAPI_DIR, "/var/run/wireguard");
    assert_eq!(gateway::xdp::loader::BPFFS_ROOT, "/sys/fs/bpf");
}

/// A container removed on drop.
struct Container<'a> {
    engine: &'a Engine,
    name: String,
}

impl Container<'_> {
    fn exec(&self, script: &str) -> gateway_tests::container::Output {
        let mut cmd = self.engine.docker();
        cmd.args(["exec", &self.name, "sh", "-c", script]);
        output(cmd, MINUTE).unwrap()
    }

    fn exec_ok(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(out.success, "{script}: {}{}", out.stdout, out.stderr);
        out.stdout
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.engine.docker_ok(&["rm", "-f", &self.name], MINUTE);
    }
}

#[test]
fn the_package_installs_and_checks_its_configuration_in_a_container() {
    if let Some(why) = tools_missing() {
        return gateway_tests::skip::skip(&why);
    }
    let engine = match Engine::find() {
        Ok(engine) => engine,
        Err(why) => return gateway_tests::skip::skip(&why),
    };
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let name = unique_name("pkg");
    let mount = format!("{}:/pkg:ro", dir.path().display());
    // Debian's base image as .ci/setup makes it; no network at all.
    engine
        .docker_ok(&["run", "-d", "--name", &name, "--network", "none", "-v", &mount, "debian:bookworm-slim", "sleep", "infinity"], MINUTE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let c = Container { engine: &engine, name };

    let installed = c.exec_ok(&format!("dpkg -i /pkg/{}", deb.file_name().unwrap().to_str().unwrap()));
    assert!(installed.contains("gateway node keygen --out /etc/dstack-gateway/wireguard.key"), "postinst says what to do next:\n{installed}");
    assert_eq!(c.exec_ok("gateway --version").trim(), format!("gateway {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(c.exec_ok("stat -c %a /var/lib/dstack-gateway").trim(), "750");

    // The packaged configuration is complete but for the key.
    let no_key = c.exec("gateway run --check-config");
    assert!(!no_key.success, "checked without a key file");
    assert!(no_key.stderr.contains("/etc/dstack-gateway/wireguard.key"), "names the missing key file: {}", no_key.stderr);
    c.exec_ok("gateway node keygen --out /etc/dstack-gateway/wireguard.key");
    assert_eq!(c.exec_ok("stat -c %a /etc/dstack-gateway/wireguard.key").trim(), "600");
    let ok = c.exec_ok("gateway run --check-config");
    assert!(ok.contains("configuration OK: /etc/dstack-gateway/gateway.toml"), "{ok}");

    // What a broken configuration or key looks like.
    let bad = c.exec("GATEWAY_CHAIN_CONTRACT=0x1234 gateway run --check-config");
    assert!(!bad.success && bad.stderr.contains("chain.contract"), "{}", bad.stderr);
    c.exec_ok("chmod 644 /etc/dstack-gateway/wireguard.key");
    let open_key = c.exec("gateway run --check-config");
    assert!(!open_key.success && open_key.stderr.contains("chmod 600"), "{}", open_key.stderr);

    // Remove keeps the conffile; purge takes the state.
    c.exec_ok("dpkg -r dstack-gateway");
    assert!(!c.exec("command -v gateway").success, "the binary is gone");
    c.exec_ok("test -f /etc/dstack-gateway/gateway.toml && test -d /var/lib/dstack-gateway");
    c.exec_ok("dpkg --purge dstack-gateway");
    c.exec_ok("test ! -e /etc/dstack-gateway/gateway.toml && test ! -e /var/lib/dstack-gateway");
    c.exec_ok("test -f /etc/dstack-gateway/wireguard.key");
}
