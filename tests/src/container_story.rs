//! The container demo's story, told by `cargo xtask demo --container` and
//! checked by tests/container_demo.rs (an I/O edge: Docker, the chain, real
//! wireguard-go nodes): the images from host-built binaries, the compose
//! project up, a node fetches the nginx page through the tunnel, the
//! contract owner revokes it, XDP drops it (seen with `docker exec <gateway>
//! bpftool map dump pinned ...` and `wg show`), the other node goes on, the
//! gateway container restarts while the kernel keeps enforcing and adopts
//! the pinned program, and the tear-down leaves nothing behind.

use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::container::{build_images, parse_bpftool_stats, Engine, Output, Project};
use crate::netns::wait_for;
use gateway_common::XdpVerdict;

/// The gateway's tunnel address in the compose demo: host 1 of
/// config/gateway.toml's `[network] cidr` (tests/docker_files.rs checks it).
pub const GATEWAY_TUNNEL_IP: &str = "10.0.0.1";

/// What the story is told with.
pub struct StoryOptions {
    /// The `gateway` binary the images take (any build; the Dockerfile strips it).
    pub gateway_binary: PathBuf,
    /// Run the operators' `privileged: true` file alone instead of adding
    /// the least-privilege overlay.
    pub privileged: bool,
    /// The image tag; the images stay after the run when `keep_images`.
    pub tag: String,
    pub keep_images: bool,
}

/// Figures of one telling.
#[derive(Debug, Default)]
pub struct StoryReport {
    /// `(image, bytes)`.
    pub image_sizes: Vec<(String, u64)>,
    pub build: Duration,
    pub up: Duration,
    /// `docker-compose run` returning the revoke receipt to node-a's slot closed in the kernel.
    pub revoke_to_slot_closed: Duration,
    pub restart_to_healthy: Duration,
    pub total: Duration,
}

/// Where the story's lines go (stdout for the demo, the test's log for the test).
pub trait Narrator {
    fn step(&mut self, text: &str);
    fn detail(&mut self, text: &str);
}

const EXEC: Duration = Duration::from_secs(30);

pub fn tell(engine: &Engine, opts: &StoryOptions, n: &mut dyn Narrator) -> Result<StoryReport> {
    let started = Instant::now();
    let mut report = StoryReport::default();

    n.step("images from the host-built binaries (docker/Dockerfile: gateway-prebuilt, node-prebuilt, anvil-prebuilt, nginx)");
    let images = build_images(engine, &opts.gateway_binary, &opts.tag, opts.keep_images)?;
    for (image, bytes) in &images.sizes {
        n.detail(&format!("{:<34} {:>6.1} MB", images.name(image), *bytes as f64 / 1e6));
    }
    report.image_sizes = images.sizes.clone();
    report.build = images.build_time;
    n.detail(&format!("built in {:.0} s", report.build.as_secs_f64()));

    n.step(if opts.privileged {
        "docker-compose up: anvil, deployer, gateway (privileged: true), nginx, two nodes"
    } else {
        "docker-compose up: anvil, deployer, gateway (least privilege: NET_ADMIN + SYS_ADMIN, every other capability dropped), nginx, two nodes"
    });
    let mut project = Project::new(engine, &images, opts.privileged);
    let t = Instant::now();
    let told = project.up().and_then(|()| {
        report.up = t.elapsed();
        the_story(&project, n, &mut report)
    });
    if let Err(err) = told {
        let mut logs = String::new();
        for service in ["gateway", "node-a", "node-b", "deployer"] {
            if let Ok(text) = project.logs(service) {
                let lines: Vec<&str> = text.lines().collect();
                logs.push_str(&format!("\n--- {service} (last lines)\n{}", lines[lines.len().saturating_sub(30)..].join("\n")));
            }
        }
        return Err(err.context(format!("container story failed; logs:{logs}")));
    }

    n.step("tear-down: docker-compose down -v, the pins removed");
    let left = project.down()?;
    ensure!(left.0.is_empty(), "the tear-down left {:?}", left.0);
    n.detail(&format!("no container, network, volume, network namespace or pin of project {} is left", project.name));
    drop(images);
    report.total = started.elapsed();
    Ok(report)
}

fn the_story(p: &Project, n: &mut dyn Narrator, report: &mut StoryReport) -> Result<()> {
    let pins = format!("/sys/fs/bpf/{}", p.instance);
    n.detail(&format!("project {}, gateway healthy (/readyz) after {:.0} s", p.name, report.up.as_secs_f64()));
    let link = p.exec_ok("gateway", &["ip", "-d", "link", "show", "eth0"], EXEC)?;
    let xdp = link.lines().find(|l| l.contains("prog/xdp")).context(format!("no XDP program on the container's eth0:\n{link}"))?;
    n.detail(&format!("XDP on the container's eth0: {}", xdp.trim()));
    let pinned = p.exec_ok("gateway", &["ls", &pins], EXEC)?;
    n.detail(&format!("pinned in {pins}: {}", pinned.split_whitespace().collect::<Vec<_>>().join(" ")));
    ensure!(pinned.split_whitespace().any(|f| f == "GW_STATS"), "GW_STATS not pinned: {pinned}");

    n.step("both nodes fetch the nginx page through the tunnel");
    for node in ["node-a", "node-b"] {
        let page = wait_for(&format!("{node} fetches the page"), Duration::from_secs(90), || {
            let out = fetch(p, node)?;
            Ok(out.success.then_some(out.stdout))
        })?;
        n.detail(&format!("{node}: {}", page.trim()));
    }

    n.step("docker exec <gateway> wg show");
    let wg = p.exec_ok("gateway", &["wg", "show"], EXEC)?;
    for line in wg.lines().filter(|l| !l.trim().is_empty()) {
        n.detail(line);
    }
    ensure!(wg.matches("peer: ").count() == 2, "two peers in `wg show`:\n{wg}");
    ensure!(wg.contains("latest handshake"), "handshakes in `wg show`:\n{wg}");

    n.step("the admin surface from another container: metrics on gateway-host:9181, the peer API on the gateway's loopback only");
    let metrics = p.exec_ok("node-b", &["curl", "-fsS", "--max-time", "3", "http://gateway-host:9181/metrics"], EXEC)?;
    let drops = metrics.lines().filter(|l| l.starts_with("gw_xdp_packets_total{")).count();
    ensure!(drops > 0, "no XDP counters on the metrics listener:\n{metrics}");
    n.detail(&format!("node-b: GET http://gateway-host:9181/metrics: 200, {drops} gw_xdp_packets_total series"));
    let peers = p.exec("node-b", &["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", "http://gateway-host:9181/v1/peers"], EXEC)?;
    ensure!(peers.stdout.trim() == "404", "the metrics listener served /v1/peers: {}", peers.stdout);
    let api = p.exec("node-b", &["curl", "-sS", "--max-time", "3", "http://gateway-host:9180/v1/peers"], EXEC)?;
    ensure!(!api.success, "the peer API answered another container: {}", api.stdout);
    n.detail("node-b: /v1/peers on :9181 is 404, and nothing listens on :9180 beyond the gateway's loopback");

    n.step(&format!("docker exec <gateway> bpftool map dump pinned {pins}/GW_STATS"));
    let before = stats_in_container(p, &pins)?;
    n.detail(&nonzero(&before));
    ensure!(before.get("pass_transport").copied().unwrap_or(0) > 0, "transport packets passed XDP: {before:?}");

    n.step("the contract owner revokes node-a (token 1)");
    let revoked = p.compose_ok(&["run", "--rm", "--no-deps", "-T", "deployer", "revoke", "1"], Duration::from_secs(60))?;
    let t = Instant::now();
    let receipt: serde_json::Value = serde_json::from_str(revoked.trim()).with_context(|| format!("revoke output: {revoked}"))?;
    n.detail(&format!("tx {} in block {}", receipt["tx_hash"].as_str().unwrap_or("?"), receipt["block_number"]));
    // Token t holds XDP slot t + 1 (docs/REGISTRY.md); read from the host's pins.
    wait_for("node-a's XDP slot closed", Duration::from_secs(20), || {
        Ok((!gateway::xdp::PinnedMaps::open_instance(&p.instance)?.allow.is_open(2)?).then_some(()))
    })?;
    report.revoke_to_slot_closed = t.elapsed();
    n.detail(&format!(
        "node-a's XDP slot (2) closed {:.0} ms after `docker-compose run` returned the receipt",
        report.revoke_to_slot_closed.as_secs_f64() * 1000.0
    ));
    ensure!(!fetch(p, "node-a")?.success, "node-a still fetches the page after its revocation");
    n.detail("node-a's fetch fails");
    let key_a = p.exec_ok("node-a", &["wg", "show", "wg0", "public-key"], EXEC)?;
    let decision = p.exec("gateway", &["gateway", "access", "check", key_a.trim()], EXEC)?;
    n.detail(&format!("docker exec <gateway> gateway access check <node-a's key>: {}", decision.stdout.trim()));
    ensure!(!decision.success, "the gateway still allows node-a: {}", decision.stdout);

    n.step("node-a keeps trying, with a fresh handshake too: XDP drops it in the kernel");
    renew_handshake(p, "node-a")?;
    for _ in 0..3 {
        ensure!(!fetch(p, "node-a")?.success, "node-a fetched the page after its revocation");
    }
    let after = stats_in_container(p, &pins)?;
    let delta = |reason: &str| after.get(reason).copied().unwrap_or(0) - before.get(reason).copied().unwrap_or(0);
    for reason in ["drop_unknown_slot", "drop_denied_endpoint", "pass_transport"] {
        n.detail(&format!("XDP {reason:<22} +{}", delta(reason)));
    }
    ensure!(delta("drop_unknown_slot") > 0, "node-a's transport packets dropped in the kernel");
    ensure!(delta("drop_denied_endpoint") > 0, "node-a's new handshake initiation dropped in the kernel");

    n.step("node-b goes on");
    let page = fetch(p, "node-b")?;
    ensure!(page.success, "node-b lost the page after node-a's revocation: {}", page.stderr);
    n.detail(&format!("node-b: {}", page.stdout.trim()));

    n.step("the gateway container restarts: the kernel enforces while it is down, then the new process adopts the pinned program");
    // Read from the host: the pins are on its bpffs, and nothing in the
    // gateway's network namespace holds the capabilities while it is down.
    let prog_id = || -> Result<u64> {
        let mut cmd = std::process::Command::new("bpftool");
        cmd.args(["-j", "prog", "show", "pinned", &format!("{pins}/prog")]);
        let json = crate::container::output_ok(cmd, EXEC)?;
        let v: serde_json::Value = serde_json::from_str(&json).context("bpftool prog JSON")?;
        v["id"].as_u64().context("program id")
    };
    let host_drops = || -> Result<u64> {
        let stats = gateway::xdp::PinnedMaps::open_instance(&p.instance)?.stats.read()?;
        Ok(stats.get(XdpVerdict::DropUnknownSlot) + stats.get(XdpVerdict::DropDeniedEndpoint))
    };
    let id_before = prog_id()?;
    let gateway = p.container("gateway")?;
    p.docker_ok(&["stop", "-t", "20", &gateway], Duration::from_secs(60))?;
    let link = p.exec_ok("gateway-host", &["ip", "-d", "link", "show", "eth0"], EXEC)?;
    ensure!(link.contains("prog/xdp"), "XDP left eth0 with the gateway:\n{link}");
    let down_before = host_drops()?;
    let _ = fetch(p, "node-a")?;
    renew_handshake(p, "node-a")?;
    let _ = fetch(p, "node-a")?;
    let dropped_while_down = host_drops()? - down_before;
    n.detail(&format!("gateway stopped; the program stays on eth0 and dropped {dropped_while_down} more of node-a's packets"));
    ensure!(dropped_while_down > 0, "the kernel stopped enforcing while the gateway was down");
    let t = Instant::now();
    p.docker_ok(&["start", &gateway], Duration::from_secs(60))?;
    wait_for("gateway healthy again", Duration::from_secs(120), || Ok((p.health("gateway")? == "healthy").then_some(())))?;
    report.restart_to_healthy = t.elapsed();
    let logs = p.logs("gateway")?;
    let adopted = logs.lines().rev().find(|l| l.contains("adopted the attached XDP program")).context("no adoption in the gateway's log")?;
    n.detail(&format!("healthy {:.1} s after the start; log: {}", report.restart_to_healthy.as_secs_f64(), adopted.trim()));
    let id_after = prog_id()?;
    ensure!(id_after == id_before, "the restarted gateway replaced program {id_before} with {id_after}");
    n.detail(&format!("program id {id_after} before and after"));
    let page = wait_for("node-b fetches the page again", Duration::from_secs(90), || {
        let out = fetch(p, "node-b")?;
        Ok(out.success.then_some(out.stdout))
    })?;
    n.detail(&format!("node-b: {}", page.trim()));
    ensure!(!fetch(p, "node-a")?.success, "node-a got its access back with the restart");
    n.detail("node-a: still cut off");
    Ok(())
}

/// One `curl` of the nginx page from a node, 3 s at most.
fn fetch(p: &Project, node: &str) -> Result<Output> {
    p.exec(node, &["curl", "-fsS", "--max-time", "3", &format!("http://{GATEWAY_TUNNEL_IP}/")], EXEC)
}

/// Drops the node's session with the gateway and adds the peer back, so its
/// next packet starts a new handshake (an initiation, from the same endpoint).
fn renew_handshake(p: &Project, node: &str) -> Result<()> {
    p.exec_ok(
        node,
        &["sh", "-c", "wg-quick strip wg0 > /tmp/wg0.strip && peer=$(wg show wg0 peers) && wg set wg0 peer \"$peer\" remove && wg addconf wg0 /tmp/wg0.strip"],
        EXEC,
    )?;
    Ok(())
}

fn stats_in_container(p: &Project, pins: &str) -> Result<BTreeMap<String, u64>> {
    let json = p.exec_ok("gateway", &["bpftool", "-j", "map", "dump", "pinned", &format!("{pins}/GW_STATS")], EXEC)?;
    parse_bpftool_stats(&json)
}

fn nonzero(stats: &BTreeMap<String, u64>) -> String {
    stats.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
}
