//! The container files checked without a Docker engine: the compose file's
//! structure (the operators' `privileged: true` and the least-privilege
//! overlay the container test runs), and the Dockerfile's copied paths,
//! toolchain, stripping and final command against the repository. No
//! network traffic. tests/container_demo.rs runs them for real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

// ---------------------------------------------------------------- compose

fn compose() -> Value {
    yaml("docker/docker-compose.yml")
}

fn yaml(rel: &str) -> Value {
    let mut v: Value = serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"));
    // `<<: *build` merge keys, as docker compose applies them.
    v.apply_merge().expect("merge keys");
    v
}

/// `${NAME:-default}` as compose substitutes it with NAME unset.
fn default_of(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map(|(_, d)| d).unwrap_or(""));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["services"].get(name).unwrap_or_else(|| panic!("service {name} missing"))
}

/// A sequence of strings (or one string) as a Vec; empty when absent.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(|i| i.as_str().expect("string item").to_string()).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => Vec::new(),
        other => panic!("expected a list of strings, got {other:?}"),
    }
}

fn condition(c: &Value, svc: &str, on: &str) -> String {
    service(c, svc)["depends_on"]
        .get(on)
        .unwrap_or_else(|| panic!("{svc} does not depend on {on}"))["condition"]
        .as_str()
        .unwrap_or_else(|| panic!("{svc} -> {on}: no condition"))
        .to_string()
}

/// `KEY=value` lines of an env file, comments and blanks skipped.
fn env_file(rel: &str) -> Vec<(String, String)> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{rel}: {l:?} is not KEY=value"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The gateway's configuration inside the compose demo: the example file,
/// the env file's overrides, and a contract address like the deployer's.
fn compose_gateway_config() -> gateway::config::Config {
    let c = compose();
    let files = strings(&service(&c, "gateway")["env_file"]);
    assert_eq!(files, ["gateway.env"]);
    let mut env = env_file("docker/gateway.env");
    // `environment:` wins over `env_file:`, as compose applies them.
    for (k, v) in service(&c, "gateway")["environment"].as_mapping().expect("gateway environment") {
        let k = k.as_str().expect("name").to_string();
        env.retain(|(name, _)| *name != k);
        env.push((k, default_of(v.as_str().expect("value"))));
    }
    env.push(("GATEWAY_CHAIN_CONTRACT".into(), "0x5FbDB2315678afecb367f032d93F642f64180aa3".into()));
    gateway::config::Config::from_toml_and_env(&read("config/gateway.toml"), &env)
        .unwrap_or_else(|e| panic!("docker/gateway.env does not make a valid configuration: {e}"))
}

#[test]
fn every_service_of_the_demo_is_there() {
    let c = compose();
    let names: BTreeSet<&str> =
        c["services"].as_mapping().expect("services").keys().map(|k| k.as_str().expect("name")).collect();
    assert_eq!(names, BTreeSet::from(["anvil", "deployer", "gateway-host", "gateway", "nginx", "node-a", "node-b"]));
}

#[test]
fn the_gateway_is_privileged_with_bpffs_and_tun() {
    let c = compose();
    let gw = service(&c, "gateway");
    // What operators run on an ordinary host: every capability, so no
    // capability list beside it (compose would merge an overlay's into it).
    assert_eq!(gw["privileged"].as_bool(), Some(true));
    assert!(gw["cap_add"].is_null() && gw["cap_drop"].is_null(), "privileged needs no capability list");
    let volumes = strings(&gw["volumes"]);
    assert!(volumes.iter().any(|v| v == "/sys/fs/bpf:/sys/fs/bpf"), "bpffs from the host: {volumes:?}");
    assert!(volumes.iter().any(|v| v.ends_with(":/var/lib/dstack-gateway")), "state survives restarts: {volumes:?}");
    let devices = strings(&gw["devices"]);
    assert!(devices.iter().any(|d| d == "/dev/net/tun:/dev/net/tun"), "{devices:?}");
    assert_eq!(gw["build"]["target"].as_str(), Some("gateway"));
    let entry = strings(&gw["entrypoint"]).join(" ");
    assert!(entry.contains("exec gateway run --config /etc/dstack-gateway/gateway.toml"), "{entry}");
    let health = strings(&gw["healthcheck"]["test"]).join(" ");
    assert!(health.contains("/readyz"), "{health}");
    assert_eq!(gw["restart"].as_str(), Some("unless-stopped"));
}

#[test]
fn the_gateway_restarts_inside_a_network_namespace_it_does_not_own() {
    // gateway-host holds the namespace (interface, address, XDP program),
    // so a restart of the gateway container is a daemon restart on a host.
    let c = compose();
    let host = service(&c, "gateway-host");
    assert_eq!(strings(&host["entrypoint"]), ["sleep", "infinity"]);
    assert_eq!(host["image"], service(&c, "gateway")["image"], "one image: its ip and bpftool serve the host side");
    assert!(host["privileged"].is_null() && host["cap_add"].is_null(), "the holder needs no privilege");
    assert_eq!(strings(&host["networks"]), ["underlay"]);
    for svc in ["gateway", "nginx"] {
        assert_eq!(service(&c, svc)["network_mode"].as_str(), Some("service:gateway-host"), "{svc}");
        assert!(service(&c, svc)["networks"].is_null(), "{svc}");
    }
    assert_eq!(condition(&c, "gateway", "gateway-host"), "service_started");
}

#[test]
fn the_least_privilege_overlay_drops_everything_but_what_the_gateway_needs() {
    let overlay = yaml("docker/least-privilege.yml");
    let services: Vec<&str> = overlay["services"].as_mapping().expect("services").keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(services, ["gateway"], "the overlay changes the gateway alone");
    let gw = &overlay["services"]["gateway"];
    assert_eq!(gw["privileged"].as_bool(), Some(false));
    assert_eq!(strings(&gw["cap_drop"]), ["ALL"]);
    // Found by trying (docs/OPERATIONS.md): NET_ADMIN for TUN, SYS_ADMIN for
    // bpf(2) on engines that know neither BPF nor PERFMON.
    assert_eq!(strings(&gw["cap_add"]), ["NET_ADMIN", "SYS_ADMIN"]);
    assert!(gw["security_opt"].is_null(), "the default seccomp profile stays");
    let keys: BTreeSet<&str> = gw.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, BTreeSet::from(["privileged", "cap_drop", "cap_add"]), "devices and mounts come from the main file");
    let doc = read("docs/OPERATIONS.md");
    assert!(doc.contains("docker/least-privilege.yml"), "OPERATIONS documents the overlay");
    // The container test runs with it.
    let story = read("tests/src/container.rs");
    assert!(story.contains("least-privilege.yml"));
}

#[test]
fn start_order_follows_the_data_flow() {
    let c = compose();
    assert_eq!(condition(&c, "deployer", "anvil"), "service_healthy");
    assert_eq!(condition(&c, "gateway", "deployer"), "service_completed_successfully");
    assert_eq!(condition(&c, "gateway", "anvil"), "service_healthy");
    // nginx binds the tunnel address, which exists once the gateway is up.
    assert_eq!(condition(&c, "nginx", "gateway"), "service_healthy");
    for node in ["node-a", "node-b"] {
        assert_eq!(condition(&c, node, "gateway"), "service_healthy");
        assert_eq!(condition(&c, node, "deployer"), "service_completed_successfully");
    }
    // A service waited for as healthy must have a health check.
    for (name, svc) in c["services"].as_mapping().unwrap() {
        if let Some(deps) = svc["depends_on"].as_mapping() {
            for (on, cond) in deps {
                if cond["condition"].as_str() == Some("service_healthy") {
                    let on = on.as_str().unwrap();
                    assert!(!service(&c, on)["healthcheck"].is_null(), "{name:?} waits for {on} to be healthy; it has no healthcheck");
                }
            }
        }
    }
    assert!(service(&c, "anvil")["depends_on"].is_null(), "the chain comes first");
}

#[test]
fn nginx_is_reachable_only_through_the_tunnel() {
    let c = compose();
    let nginx = service(&c, "nginx");
    assert_eq!(nginx["network_mode"].as_str(), Some("service:gateway-host"), "no network of its own");
    for key in ["ports", "networks", "expose"] {
        assert!(nginx[key].is_null(), "nginx must not have `{key}`");
    }
    let volumes = strings(&nginx["volumes"]);
    let conf = volumes
        .iter()
        .find_map(|v| v.strip_prefix("./").and_then(|v| v.split(':').next()))
        .expect("nginx.conf bind mount");
    let text = read(&format!("docker/{conf}"));
    let config = compose_gateway_config();
    let network = config.network.network().unwrap();
    let listens: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("listen "))
        .map(|l| l.trim_end_matches(';').trim())
        .collect();
    assert_eq!(listens, [format!("{}:80", network.gateway_ip())], "listen on the gateway's tunnel address only");
    assert_eq!(gateway_tests::container_story::GATEWAY_TUNNEL_IP, network.gateway_ip().to_string(), "the story fetches it there");
    assert!(text.contains(&format!("allow {};", network.cidr)), "{text}");
    assert!(text.contains("deny all;"), "{text}");
    // The nodes fetch it at that address, which their AllowedIPs route into the tunnel.
    for node in ["node-a", "node-b"] {
        let health = strings(&service(&c, node)["healthcheck"]["test"]).join(" ");
        assert!(health.contains(&format!("http://{}/", network.gateway_ip())), "{health}");
    }
}

#[test]
fn the_env_file_makes_a_valid_gateway_configuration() {
    let config = compose_gateway_config();
    let c = compose();
    // Nodes dial the namespace holder by name: the engine picks the subnet,
    // so runs side by side do not collide.
    let (host, port) = config.wireguard.public_endpoint.rsplit_once(':').expect("host:port");
    assert_eq!(host, "gateway-host");
    assert_eq!(port, config.wireguard.listen_port.to_string());
    assert!(c["networks"]["underlay"]["ipam"].is_null(), "no fixed subnet");
    assert_eq!(c["networks"]["underlay"]["internal"].as_bool(), Some(true), "no route out of the demo's network");
    for (name, svc) in c["services"].as_mapping().unwrap() {
        assert!(svc["ports"].is_null(), "{name:?} publishes a port");
    }
    assert_eq!(config.chain.rpc_urls, ["ws://anvil:8545"]);
    assert_ne!(config.gateway.instance, "gateway", "its own pin folder on a shared /sys/fs/bpf");
    assert!(config.xdp.enabled && !config.xdp.iface.is_empty());
    assert!(!config.xdp.detach_on_exit, "the pinned program outlives a restart");
}

#[test]
fn nodes_join_with_rendered_configs() {
    let c = compose();
    let script = read("docker/node.sh");
    assert!(script.contains("gateway config render --node \"$NODE_ID\""), "{script}");
    assert!(script.contains("wg-quick up wg0"));
    let deploy = read("docker/deploy.sh");
    let mut ids = BTreeSet::new();
    for node in ["node-a", "node-b"] {
        let svc = service(&c, node);
        assert_eq!(svc["build"]["target"].as_str(), Some("node"));
        assert!(strings(&svc["cap_add"]).contains(&"NET_ADMIN".to_string()));
        assert!(strings(&svc["devices"]).contains(&"/dev/net/tun:/dev/net/tun".to_string()));
        assert!(svc["privileged"].is_null(), "a node needs no privileges beyond NET_ADMIN");
        let id = svc["environment"]["NODE_ID"].as_str().expect("NODE_ID").to_string();
        assert!(deploy.contains(&format!(" {id} --key-file /run/{id}-secrets/node.key")), "deployer mints {id}");
        let volumes = strings(&svc["volumes"]);
        assert!(volumes.contains(&format!("{id}-secrets:/run/node-secrets:ro")), "{volumes:?}");
        assert!(!volumes.iter().any(|v| v.starts_with("gateway-secrets")), "a node never sees the gateway's key");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 2);
    let deployer = service(&c, "deployer");
    assert_eq!(strings(&deployer["entrypoint"]), ["/usr/local/bin/deploy.sh"]);
}

#[test]
fn build_contexts_and_bind_mounts_exist() {
    let c = compose();
    let docker = repo().join("docker");
    let stages: BTreeSet<String> = dockerfile().into_iter().map(|s| s.name).collect();
    for (name, svc) in c["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if let Some(build) = svc.get("build") {
            let context = docker.join(build["context"].as_str().expect("context"));
            assert!(context.join("Cargo.toml").is_file(), "{name}: build context is the repository root");
            assert!(context.join(build["dockerfile"].as_str().expect("dockerfile")).is_file());
            let target = build["target"].as_str().expect("target");
            assert!(stages.contains(target), "{name}: no stage {target} in {stages:?}");
        }
        for v in strings(&svc["volumes"]) {
            if let Some(rel) = v.strip_prefix("./") {
                let host = rel.split(':').next().unwrap();
                assert!(docker.join(host).exists(), "{name}: bind mount {host} missing");
            }
        }
        for f in strings(&svc["env_file"]) {
            assert!(docker.join(&f).is_file(), "{name}: env file {f} missing");
        }
    }
}

// ------------------------------------------------------------- Dockerfile

#[derive(Debug)]
struct Stage {
    name: String,
    base: String,
    /// (instruction in upper case, its arguments), continuation lines joined.
    lines: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, instr: &str) -> Vec<&str> {
        self.lines.iter().filter(|(i, _)| i == instr).map(|(_, a)| a.as_str()).collect()
    }
}

/// Stages with global `ARG` defaults substituted into `FROM`.
fn dockerfile() -> Vec<Stage> {
    let text = read("docker/Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(t);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut globals: Vec<(String, String)> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for l in logical {
        let (instr, args) = l.split_once(char::is_whitespace).unwrap_or((l.as_str(), ""));
        let (instr, args) = (instr.to_ascii_uppercase(), args.trim().to_string());
        if instr == "FROM" {
            let mut from = args.clone();
            for (k, v) in &globals {
                from = from.replace(&format!("${{{k}}}"), v);
            }
            let (base, name) = from.split_once(" AS ").expect("every stage is named");
            stages.push(Stage { name: name.trim().into(), base: base.trim().into(), lines: Vec::new() });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push((instr, args));
        } else if instr == "ARG" {
            let (k, v) = args.split_once('=').expect("global ARGs have defaults");
            globals.push((k.into(), v.into()));
        }
    }
    stages
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no stage {name}"))
}

/// (`--from` stage, sources, destination) of a COPY line.
fn copy_parts(args: &str) -> (Option<String>, Vec<String>, String) {
    let mut from = None;
    let mut words: Vec<String> = Vec::new();
    for w in args.split_whitespace() {
        if let Some(f) = w.strip_prefix("--from=") {
            from = Some(f.to_string());
        } else if !w.starts_with("--") {
            words.push(w.to_string());
        }
    }
    let dest = words.pop().expect("COPY has a destination");
    (from, words, dest)
}

impl Stage {
    /// `${NAME}` replaced by the stage's `ARG NAME=default`.
    fn expand(&self, text: &str) -> String {
        let mut out = text.to_string();
        for arg in self.all("ARG") {
            if let Some((k, v)) = arg.split_once('=') {
                out = out.replace(&format!("${{{k}}}"), v);
            }
        }
        out
    }

    /// Whether `path` is made in this stage: copied to, or named by a RUN.
    fn makes(&self, path: &str) -> bool {
        self.all("COPY").into_iter().any(|c| copy_parts(c).2 == path) || self.all("RUN").iter().any(|r| r.contains(path))
    }

    /// The stage it builds on, when that is another stage.
    fn parent<'a>(&self, stages: &'a [Stage]) -> Option<&'a Stage> {
        stages.iter().find(|s| s.name == self.base)
    }
}

/// What `cargo xtask build --release` leaves in the target directory, read
/// from xtask and the gateway's manifest so a rename breaks this test.
fn build_outputs() -> BTreeSet<String> {
    let util = read("xtask/src/util.rs");
    assert!(util.contains(r#"args(["build", "-p", "gateway"])"#), "xtask build builds the gateway package");
    assert!(read("gateway/Cargo.toml").contains("[[bin]]\nname = \"gateway\""), "the gateway binary is named gateway");
    let ebpf = read("xtask/src/ebpf.rs");
    assert!(ebpf.contains(r#"target_dir().join("bpf").join("gateway.bpf.o")"#), "eBPF object path");
    BTreeSet::from(["target/release/gateway".to_string(), "target/bpf/gateway.bpf.o".to_string()])
}

fn dockerignore() -> Vec<String> {
    read("docker/Dockerfile.dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Whether the context sends `path`: the last matching pattern wins, as
/// docker reads the ignore file (plain prefixes are all this one uses).
fn context_sends(path: &str) -> bool {
    let mut sent = true;
    for p in dockerignore() {
        let (exception, pat) = match p.strip_prefix('!') {
            Some(pat) => (true, pat.to_string()),
            None => (false, p.clone()),
        };
        let pat = pat.trim_start_matches("**/");
        let matches = path == pat || path.starts_with(&format!("{pat}/")) || (p.starts_with("**/") && path.ends_with(pat.trim_start_matches('*')));
        if matches {
            sent = exception;
        }
    }
    sent
}

#[test]
fn every_path_the_dockerfile_copies_exists() {
    let stages = dockerfile();
    let outputs = build_outputs();
    let mut from_context = 0;
    for s in &stages {
        for args in s.all("COPY") {
            let (from, sources, _) = copy_parts(&s.expand(args));
            match from {
                None => {
                    for src in sources {
                        let src = src.trim_end_matches('/');
                        assert!(context_sends(src), "stage {}: COPY {src} is excluded by Dockerfile.dockerignore", s.name);
                        if outputs.contains(src) || src.starts_with("node_modules/") {
                            // Host build outputs (`cargo xtask build --release`, `npm ci`), not in a fresh clone.
                            continue;
                        }
                        assert!(repo().join(src).exists(), "stage {}: COPY {src}: not in the repository", s.name);
                        from_context += 1;
                    }
                }
                Some(from) => {
                    let producer = stage(&stages, &from);
                    for src in sources {
                        assert!(producer.makes(&src), "stage {}: COPY --from={from} {src}: stage {from} does not make it", s.name);
                    }
                }
            }
        }
    }
    assert!(from_context > 5, "the parser found the COPY lines");
    // The build stage checks both outputs exist before anything copies them.
    let build = stage(&stages, "build").all("RUN").join("\n");
    for out in &outputs {
        assert!(build.contains(out.as_str()), "the build stage checks {out}");
    }
    // The host-built binaries the prebuilt targets take by default are sent.
    let host = stage(&stages, "host-binaries");
    for arg in ["GATEWAY_BINARY=target/release/gateway", "ANVIL_BINARY=node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"] {
        assert!(host.all("ARG").contains(&arg), "host-binaries: ARG {arg}");
        assert!(context_sends(arg.split_once('=').unwrap().1), "{arg} is excluded from the context");
    }
    // And so is the staging folder of the container test and the demo.
    assert!(read("tests/src/container.rs").contains(r#"join("target").join("container-inputs")"#));
    assert!(context_sends("target/container-inputs/x/gateway"));
    for secret in ["target/debug/gateway", ".git/config", "config/wireguard.key", "node_modules/solc/index.js"] {
        assert!(!context_sends(secret), "{secret} must stay out of the build context");
    }
}

/// The system CA roots, where Debian's ca-certificates puts them.
const CA_PACKAGE: &str = "ca-certificates";

#[test]
fn the_gateway_image_is_slim_and_runs_the_daemon() {
    let stages = dockerfile();
    let last = stages.last().unwrap();
    assert_eq!(last.name, "gateway", "the default target is the gateway");
    let runtime = last.parent(&stages).expect("the gateway builds on a runtime stage");
    assert_eq!(runtime.name, "gateway-runtime");
    assert!(runtime.base.starts_with("debian:") && runtime.base.ends_with("-slim"), "{}", runtime.base);
    // The runtime: exactly the operator's tools and the CA bundle.
    let runs = runtime.all("RUN");
    assert_eq!(runs.len(), 1, "one layer of packages");
    let packages: BTreeSet<&str> = runs[0]
        .split("--no-install-recommends")
        .nth(1)
        .expect("no recommends")
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(packages, BTreeSet::from(["bpftool", "wireguard-tools", "iproute2", CA_PACKAGE]));
    assert!(runs[0].contains("rm -rf /var/lib/apt/lists/*"), "no apt lists in the image");
    // Both gateway targets only add the stripped binary.
    for (target, from) in [("gateway", "build"), ("gateway-prebuilt", "host-binaries")] {
        let s = stage(&stages, target);
        assert_eq!(s.base, "gateway-runtime", "{target}");
        assert!(s.all("RUN").is_empty(), "{target}: nothing installed on top of the runtime");
        let copies: Vec<_> = s.all("COPY").into_iter().map(copy_parts).collect();
        assert_eq!(copies, [(Some(from.to_string()), vec!["/out/gateway".to_string()], "/usr/local/bin/gateway".to_string())], "{target}");
        let strip = stage(&stages, from).all("RUN").join("\n");
        assert!(strip.contains("objcopy --only-keep-debug") && strip.contains("--strip-debug"), "{from} splits the debug info off");
        assert!(strip.split_whitespace().any(|w| w == "/out/gateway"), "{from} makes /out/gateway");
    }
    let exec = |instr: &str| -> Vec<String> {
        let args = runtime.all(instr);
        assert_eq!(args.len(), 1, "one {instr}");
        serde_json::from_str(args[0]).unwrap_or_else(|_| panic!("{instr} in exec form"))
    };
    let command = [exec("ENTRYPOINT"), exec("CMD")].concat().join(" ");
    assert_eq!(command, "/usr/local/bin/gateway run --config /etc/dstack-gateway/gateway.toml");
    // Node images carry the same binary; each host-built image has its
    // from-source twin and the compose file runs the from-source names.
    for (target, from) in [("node", "build"), ("node-prebuilt", "host-binaries")] {
        assert_eq!(stage(&stages, target).base, "node-runtime");
        assert!(stage(&stages, target).all("COPY").iter().any(|c| c.contains(&format!("--from={from} /out/gateway"))));
    }
    for image in ["gateway", "node", "anvil"] {
        stage(&stages, &format!("{image}-prebuilt"));
        stage(&stages, image);
    }
    // The images the container test builds are these targets.
    let harness = read("tests/src/container.rs");
    for target in ["gateway-prebuilt", "node-prebuilt", "anvil-prebuilt", "\"nginx\""] {
        assert!(harness.contains(target), "the container harness builds {target}");
    }
}

#[test]
fn every_base_image_can_be_made_without_a_registry() {
    // BuildKit would fetch a `# syntax=` frontend from a registry.
    assert!(!read("docker/Dockerfile").lines().any(|l| l.trim_start().starts_with("# syntax=")), "no syntax directive");
    let stages = dockerfile();
    let names: BTreeSet<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    let setup = read(".ci/setup");
    let made = setup.lines().find_map(|l| l.trim().strip_prefix("sh docker/base-image.sh ")).expect(".ci/setup makes the base image");
    // The stages the prebuilt targets need start from what .ci/setup makes;
    // only the from-source build stages pull toolchain images.
    let pulled_only = ["build", "anvil-npm"];
    for s in &stages {
        if names.contains(s.base.as_str()) {
            continue;
        }
        if pulled_only.contains(&s.name.as_str()) {
            assert!(s.base.starts_with("rust:") || s.base.starts_with("node:"), "{}: {}", s.name, s.base);
        } else {
            assert_eq!(s.base, made, "stage {} starts from an image .ci/setup does not make", s.name);
        }
    }
    fn needs<'a>(stages: &'a [Stage], name: &str, out: &mut BTreeSet<&'a str>) {
        let s = stage(stages, name);
        out.insert(&s.name);
        if let Some(p) = s.parent(stages) {
            needs(stages, &p.name, out);
        }
        for c in s.all("COPY") {
            if let (Some(from), _, _) = copy_parts(c) {
                needs(stages, &from, out);
            }
        }
    }
    for target in ["gateway-prebuilt", "node-prebuilt", "anvil-prebuilt", "nginx"] {
        let mut deps = BTreeSet::new();
        needs(&stages, target, &mut deps);
        for pulled in pulled_only {
            assert!(!deps.contains(pulled), "{target} needs {pulled}, which pulls from a registry");
        }
    }
}

#[test]
fn the_build_stage_installs_the_toolchain_like_ci_setup() {
    let stages = dockerfile();
    for s in &stages {
        if stages.iter().any(|p| p.name == s.base) {
            continue;
        }
        assert!(s.base.contains("bookworm"), "stage {} is not Debian bookworm based: {}", s.name, s.base);
    }
    let build = stage(&stages, "build");
    let rust_version = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = ").map(|v| v.trim_matches('"').to_string()))
        .expect("workspace rust-version");
    assert!(build.base.starts_with(&format!("rust:{rust_version}-")), "{} vs rust-version {rust_version}", build.base);

    let setup = read(".ci/setup");
    let linker = setup
        .lines()
        .find_map(|l| l.strip_prefix("BPF_LINKER_VERSION="))
        .expect(".ci/setup pins bpf-linker");
    assert!(build.all("ARG").contains(&format!("BPF_LINKER_VERSION={linker}").as_str()), "bpf-linker {linker} like .ci/setup");
    let apt = build.all("RUN").into_iter().find(|r| r.contains("apt-get install")).expect("apt-get install");
    let packages = setup.split("APT_PACKAGES=(").nth(1).and_then(|r| r.split(')').next()).expect("APT_PACKAGES");
    let toolchain: Vec<&str> = packages
        .split_whitespace()
        .filter(|p| ["llvm-", "libpolly-", "zlib1g-", "libzstd-"].iter().any(|pre| p.starts_with(pre)))
        .collect();
    assert_eq!(toolchain.len(), 4, "{toolchain:?}");
    for p in toolchain {
        assert!(apt.split_whitespace().any(|w| w == p), "{p} from .ci/setup is not installed in the build stage");
    }
    let runs = build.all("RUN").join("\n");
    for needle in ["rustup toolchain install nightly", "--component rust-src", "cargo install bpf-linker", "--features llvm-22", "PATH=/usr/lib/llvm-22/bin"] {
        assert!(runs.contains(needle), "build stage lacks {needle:?}");
        assert!(setup.contains(needle), ".ci/setup no longer says {needle:?}: update the Dockerfile and this test");
    }

    let package: serde_json::Value = serde_json::from_str(&read("package.json")).unwrap();
    let anvil = package["devDependencies"]["@foundry-rs/anvil-linux-amd64"].as_str().expect("anvil pinned");
    let anvil_stage = stage(&stages, "anvil-npm").all("RUN").join("\n");
    assert!(anvil_stage.contains(&format!("@foundry-rs/anvil-linux-amd64@{anvil}")), "anvil {anvil} like package.json");
}

#[test]
fn the_container_scripts_are_executable_posix_sh() {
    use std::os::unix::fs::PermissionsExt as _;
    for script in ["docker/deploy.sh", "docker/node.sh", "docker/base-image.sh"] {
        let path = repo().join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(mode & 0o111, 0, "{script} is not executable (COPY keeps the mode)");
        assert!(read(script).starts_with("#!/bin/sh\n"), "{script}: debian-slim's /bin/sh is dash");
        let check = std::process::Command::new("sh").arg("-n").arg(&path).output().expect("sh");
        assert!(check.status.success(), "{script}: {}", String::from_utf8_lossy(&check.stderr));
    }
}
