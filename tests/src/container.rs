//! Docker for the container tests and `cargo xtask demo --container` (an I/O
//! edge): finding an engine that can run here, building the images from
//! host-built binaries, and a compose project that removes everything it
//! made on drop (containers, networks, volumes, per-run image tags and the
//! gateway's pins), so a failing run still cleans up.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{repo_root, unique_name};

/// The images docker/docker-compose.yml runs, by the Dockerfile target that
/// makes each from host-built binaries.
pub const IMAGES: [(&str, &str); 4] =
    [("gateway", "gateway-prebuilt"), ("node", "node-prebuilt"), ("anvil", "anvil-prebuilt"), ("nginx", "nginx")];

/// Where image names start (`${DSTACK_IMAGES}` in the compose file).
pub const IMAGE_PREFIX: &str = "dstack-gateway";

/// A Docker engine that answers, and the clients to drive it.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: PathBuf,
    compose: Vec<OsString>,
}

impl Engine {
    /// The engine, or why none can run here (the caller records a skip).
    pub fn find() -> std::result::Result<Engine, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (Docker engine, bpffs pins)".into());
        }
        // The engine's own client: Debian's docker.io puts it in /usr/bin,
        // and it builds with BuildKit built in. A newer standalone client
        // earlier in PATH (as on these machines, in /usr/local/bin) has no
        // buildx plugin and falls back to the legacy builder, which neither
        // skips unused stages nor reads Dockerfile.dockerignore.
        let docker = match std::env::var_os("DOCKER") {
            Some(d) => PathBuf::from(d),
            None if Path::new("/usr/bin/docker").exists() => PathBuf::from("/usr/bin/docker"),
            None => PathBuf::from("docker"),
        };
        let info = Command::new(&docker).args(["info", "--format", "{{.ServerVersion}}"]).output();
        match info {
            Err(_) => return Err("no docker client (run .ci/setup)".into()),
            Ok(out) if !out.status.success() => {
                return Err(format!(
                    "no Docker engine answers ({}); run .ci/setup",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Ok(_) => {}
        }
        let compose: Vec<OsString> = if Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success()) {
            vec!["docker-compose".into()]
        } else if Command::new(&docker).args(["compose", "version"]).output().is_ok_and(|o| o.status.success()) {
            vec![docker.clone().into(), "compose".into()]
        } else {
            return Err("no compose implementation (docker-compose or docker compose); run .ci/setup".into());
        };
        Ok(Engine { docker, compose })
    }

    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(&self.docker);
        cmd.env("DOCKER_BUILDKIT", "1");
        cmd
    }

    /// `docker ARGS`, its stdout; an error with stderr when it fails.
    pub fn docker_ok(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut cmd = self.docker();
        cmd.args(args);
        output_ok(cmd, timeout)
    }

    fn compose(&self) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..]);
        cmd
    }
}

/// Runs `cmd` with a deadline; stdout on success, an error naming the
/// command with its stderr otherwise.
pub fn output_ok(cmd: Command, timeout: Duration) -> Result<String> {
    let out = output(cmd, timeout)?;
    if !out.success {
        bail!("{} failed: {}{}", out.command, out.stderr.trim(), tail_of(&out.stdout));
    }
    Ok(out.stdout)
}

fn tail_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
}

/// What a finished command said.
pub struct Output {
    pub command: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to the end or kills it at `timeout` (a hung engine call must
/// not hang the test run).
pub fn output(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let command = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {command}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        bail!("{command} did not finish within {timeout:?}: {}{}", stderr.trim(), tail_of(&stdout));
    };
    Ok(Output { command, success: status.success(), stdout, stderr })
}

// ------------------------------------------------------------------ images

/// Image tags made for one run, removed on drop when the run owns them.
pub struct Images {
    engine: Engine,
    pub tag: String,
    /// `(image name, bytes)` in [`IMAGES`] order.
    pub sizes: Vec<(String, u64)>,
    pub build_time: Duration,
    remove_on_drop: bool,
}

impl Images {
    /// `dstack-gateway/<name>:<tag>`.
    pub fn name(&self, image: &str) -> String {
        format!("{IMAGE_PREFIX}/{image}:{}", self.tag)
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        for (image, _) in IMAGES {
            let name = self.name(image);
            // Untags; the layers stay in the build cache for the next run.
            let _ = output(
                {
                    let mut c = self.engine.docker();
                    c.args(["rmi", &name]);
                    c
                },
                Duration::from_secs(60),
            );
        }
    }
}

/// Builds the four images from the host's `gateway` binary (any build: the
/// Dockerfile strips it) and the anvil binary `npm ci` installed. With
/// `keep`, the images stay (the demo leaves them for the operator);
/// otherwise the run's tags are removed on drop.
pub fn build_images(engine: &Engine, gateway_binary: &Path, tag: &str, keep: bool) -> Result<Images> {
    let started = Instant::now();
    let repo = repo_root();
    // Both binaries are staged inside the build context (target/ is
    // ignored except this folder): node_modules may be a symlink out of
    // the repository, and CARGO_TARGET_DIR may be anywhere.
    let inputs = Staging::new(&repo.join("target").join("container-inputs").join(unique_name("in")))?;
    let anvil = std::fs::canonicalize(repo.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"))
        .context("the anvil binary from npm is missing: run .ci/setup (npm ci)")?;
    inputs.place(gateway_binary, "gateway")?;
    inputs.place(&anvil, "anvil")?;
    let rel = |name: &str| -> Result<String> {
        let path = inputs.dir.join(name);
        Ok(path.strip_prefix(&repo).context("staging inside the repository")?.to_str().context("utf-8 path")?.to_string())
    };
    let (gateway_arg, anvil_arg) = (format!("GATEWAY_BINARY={}", rel("gateway")?), format!("ANVIL_BINARY={}", rel("anvil")?));
    let mut images = Images { engine: engine.clone(), tag: tag.to_string(), sizes: Vec::new(), build_time: Duration::ZERO, remove_on_drop: !keep };
    for (image, target) in IMAGES {
        let name = images.name(image);
        let mut cmd = engine.docker();
        cmd.current_dir(&repo)
            .args(["build", "-f", "docker/Dockerfile", "--target", target, "-t", &name])
            .args(["--build-arg", &gateway_arg, "--build-arg", &anvil_arg, "--progress", "plain", "."]);
        // A cold build installs Debian packages into four images.
        output_ok(cmd, Duration::from_secs(1200)).with_context(|| format!("building {name} (target {target})"))?;
        let size = engine.docker_ok(&["image", "inspect", "-f", "{{.Size}}", &name], Duration::from_secs(30))?;
        images.sizes.push((image.to_string(), size.trim().parse().context("image size")?));
    }
    images.build_time = started.elapsed();
    Ok(images)
}

/// A folder removed on drop.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging { dir: dir.to_path_buf() })
    }

    /// A hard link where the file system allows it, else a copy.
    fn place(&self, from: &Path, name: &str) -> Result<()> {
        let to = self.dir.join(name);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ----------------------------------------------------------------- project

/// The compose files the project runs: the main file, and the least-privilege
/// overlay unless `privileged` (which cannot start where the capability
/// bounding set lacks one).
pub fn compose_files(privileged: bool) -> Vec<PathBuf> {
    let docker = repo_root().join("docker");
    let mut files = vec![docker.join("docker-compose.yml")];
    if !privileged {
        files.push(docker.join("least-privilege.yml"));
    }
    files
}

/// One compose project: a unique name, its own pin folder on the host's
/// bpffs, everything removed on drop.
pub struct Project {
    engine: Engine,
    pub name: String,
    /// `[gateway] instance`: /sys/fs/bpf/<instance>/ on the host.
    pub instance: String,
    files: Vec<PathBuf>,
    tag: String,
    /// Network namespaces of the project's containers, seen while they ran
    /// (docker's SandboxKey), to check none outlives the tear-down.
    sandboxes: std::cell::RefCell<Vec<String>>,
    down: bool,
}

/// What a tear-down left behind (empty when clean).
#[derive(Debug, Default)]
pub struct Leftovers(pub Vec<String>);

impl Project {
    pub fn new(engine: &Engine, images: &Images, privileged: bool) -> Project {
        let name = unique_name("dgw");
        Project {
            engine: engine.clone(),
            instance: name.clone(),
            name,
            files: compose_files(privileged),
            tag: images.tag.clone(),
            sandboxes: Default::default(),
            down: false,
        }
    }

    fn compose(&self) -> Command {
        let mut cmd = self.engine.compose();
        cmd.current_dir(repo_root());
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(["-p", &self.name, "--ansi", "never"])
            .env("DSTACK_IMAGES", IMAGE_PREFIX)
            .env("DSTACK_TAG", &self.tag)
            .env("DSTACK_INSTANCE", &self.instance);
        cmd
    }

    /// `docker-compose ARGS`, its stdout.
    pub fn compose_ok(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut cmd = self.compose();
        cmd.args(args);
        output_ok(cmd, timeout)
    }

    /// Starts every service; returns once the gateway is healthy (the
    /// nodes' `depends_on` waits for it). On failure the error carries the
    /// services' logs.
    pub fn up(&self) -> Result<()> {
        let result = self.compose_ok(&["up", "-d", "--no-build"], Duration::from_secs(300));
        if let Err(err) = result {
            let logs = self.compose_ok(&["logs", "--no-color", "--tail", "40"], Duration::from_secs(30)).unwrap_or_default();
            return Err(err.context(format!("docker-compose up; the services' logs:\n{logs}")));
        }
        for service in ["gateway-host", "gateway", "anvil", "nginx", "node-a", "node-b"] {
            let id = self.container(service)?;
            let key = self.engine.docker_ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", &id], Duration::from_secs(30))?;
            let key = key.trim().to_string();
            if !key.is_empty() {
                self.sandboxes.borrow_mut().push(key);
            }
        }
        Ok(())
    }

    /// The container id of a service.
    pub fn container(&self, service: &str) -> Result<String> {
        let id = self.compose_ok(&["ps", "-q", service], Duration::from_secs(30))?;
        let id = id.trim().to_string();
        ensure!(!id.is_empty(), "service {service} has no container");
        Ok(id)
    }

    /// `docker exec <service's container> ARGS`.
    pub fn exec(&self, service: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        let id = self.container(service)?;
        let mut cmd = self.engine.docker();
        cmd.arg("exec").arg(&id).args(args);
        output(cmd, timeout)
    }

    pub fn exec_ok(&self, service: &str, args: &[&str], timeout: Duration) -> Result<String> {
        let out = self.exec(service, args, timeout)?;
        ensure!(out.success, "{} failed: {}{}", out.command, out.stderr.trim(), tail_of(&out.stdout));
        Ok(out.stdout)
    }

    /// `docker inspect` health status of a service's container.
    pub fn health(&self, service: &str) -> Result<String> {
        let id = self.container(service)?;
        Ok(self.engine.docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &id], Duration::from_secs(30))?.trim().to_string())
    }

    pub fn logs(&self, service: &str) -> Result<String> {
        let id = self.container(service)?;
        let mut cmd = self.engine.docker();
        cmd.args(["logs", &id]);
        let out = output(cmd, Duration::from_secs(30))?;
        Ok(format!("{}{}", out.stdout, out.stderr))
    }

    pub fn docker_ok(&self, args: &[&str], timeout: Duration) -> Result<String> {
        self.engine.docker_ok(args, timeout)
    }

    /// Stops and removes everything: containers, networks, volumes, the
    /// pins; then lists whatever is still there.
    pub fn down(&mut self) -> Result<Leftovers> {
        self.down = true;
        let result = self.compose_ok(&["down", "-v", "--remove-orphans", "-t", "5"], Duration::from_secs(180));
        // The pins live on the host's bpffs and outlive the containers:
        // unlinking them releases the link and the maps.
        let pins = Path::new("/sys/fs/bpf").join(&self.instance);
        if pins.exists() {
            std::fs::remove_dir_all(&pins).with_context(|| format!("removing {}", pins.display()))?;
        }
        result?;
        Ok(self.leftovers())
    }

    fn leftovers(&self) -> Leftovers {
        let mut left = Vec::new();
        let label = format!("label=com.docker.compose.project={}", self.name);
        for (what, args) in [
            ("container", vec!["ps", "-aq", "--filter", label.as_str()]),
            ("network", vec!["network", "ls", "-q", "--filter", label.as_str()]),
            ("volume", vec!["volume", "ls", "-q", "--filter", label.as_str()]),
        ] {
            match self.engine.docker_ok(&args, Duration::from_secs(30)) {
                Ok(ids) => left.extend(ids.split_whitespace().map(|id| format!("{what} {id}"))),
                Err(err) => left.push(format!("listing {what}s: {err:#}")),
            }
        }
        // A sandbox's namespace lives while its file is a mount (nsfs);
        // docker unmounts it at once and deletes the empty file later.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounted: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(4)).collect();
        for key in self.sandboxes.borrow().iter() {
            if mounted.contains(&key.as_str()) {
                left.push(format!("network namespace {key}"));
            }
        }
        let pins = Path::new("/sys/fs/bpf").join(&self.instance);
        if pins.exists() {
            left.push(format!("pins {}", pins.display()));
        }
        Leftovers(left)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if !self.down {
            if let Err(err) = self.down() {
                eprintln!("container project {}: tear-down: {err:#}", self.name);
            }
        }
    }
}

// ---------------------------------------------------------- XDP counters

/// Per-reason XDP counters summed over CPUs, from `bpftool -j map dump` of
/// GW_STATS (the field names come from the map's BTF).
pub fn parse_bpftool_stats(json: &str) -> Result<BTreeMap<String, u64>> {
    let v: serde_json::Value = serde_json::from_str(json).context("bpftool JSON")?;
    let mut sums = BTreeMap::new();
    let entries = v.as_array().context("a list of map entries")?;
    for entry in entries {
        // With BTF, bpftool -j gives the raw bytes and beside them
        // `formatted: {key, values: [{cpu, value: {field: n}}]}`.
        let formatted = entry.get("formatted").unwrap_or(entry);
        let values = formatted["values"].as_array().context("per-CPU values (is GW_STATS per-CPU with BTF?)")?;
        for per_cpu in values {
            let fields = per_cpu["value"].as_object().context("named fields (BTF)")?;
            for (name, n) in fields {
                *sums.entry(name.clone()).or_insert(0) += n.as_u64().with_context(|| format!("{name} is not a counter"))?;
            }
        }
    }
    ensure!(!sums.is_empty(), "GW_STATS dump has no counters: {json}");
    Ok(sums)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bpftool_per_cpu_dumps_sum_over_cpus() {
        let dump = r#"[{"key":["0x00","0x00","0x00","0x00"],
            "values":[{"cpu":0,"value":["0x03"]},{"cpu":1,"value":["0x04"]}],
            "formatted":{"key":0,"values":[
              {"cpu":0,"value":{"pass_transport":3,"drop_unknown_slot":1}},
              {"cpu":1,"value":{"pass_transport":4,"drop_unknown_slot":0}}]}}]"#;
        let sums = parse_bpftool_stats(dump).unwrap();
        assert_eq!(sums["pass_transport"], 7);
        assert_eq!(sums["drop_unknown_slot"], 1);
        assert!(parse_bpftool_stats("[]").is_err(), "an empty dump is not zero counters");
        assert!(parse_bpftool_stats(r#"[{"key":0,"value":[0,0]}]"#).is_err(), "no BTF names");
    }
}
