//! The daemon's configuration: a TOML file, then `GATEWAY_<SECTION>_<KEY>`
//! environment overrides, then validation whose errors name the field and
//! the fix (pure: parsing and checks, no I/O beyond reading the file).

pub mod cli;
pub mod render;

use gateway_core::access::Staleness;
use gateway_core::chain::Address;
use gateway_core::plan::PlanConfig;
use gateway_core::registry::{CidrError, Network};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use gateway_core::access::StalePolicy;

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Names the XDP pin folder (/sys/fs/bpf/<instance>) and the state files.
    pub instance: String,
    /// Registry, chain cursor and audit log live here.
    pub state_dir: PathBuf,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection { instance: "gateway".into(), state_dir: "/var/lib/dstack-gateway".into() }
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSection {
    /// RPC endpoints in order of preference (http://, https://, ws://, wss://).
    pub rpc_urls: Vec<String>,
    /// The DstackAccessNFT contract address.
    pub contract: String,
    /// The chain every endpoint must serve (`eth_chainId`; Base is 8453).
    /// Unset: learned from the first endpoint on first start and pinned in
    /// `state_dir/chain_id`.
    pub chain_id: Option<u64>,
    /// Block to backfill logs from (the contract's deployment block).
    pub start_block: u64,
    /// Confirmations before a grant is applied (revocations apply at once).
    pub confirmations: u64,
    /// HTTP polling interval when no WebSocket endpoint is configured.
    pub poll_interval_ms: u64,
    /// The widest eth_getLogs asked during backfill (the provider's refusals
    /// narrow it: a suggested range, a named cap, too many results, a timeout).
    pub log_range: u64,
    /// How often every known token is re-read from the chain.
    pub reconcile_interval_s: u64,
    /// Serve the last known state this long without hearing from the chain...
    pub max_staleness_s: u64,
    /// ...then apply this policy.
    pub on_stale: StalePolicy,
}

impl Default for ChainSection {
    fn default() -> Self {
        ChainSection {
            rpc_urls: Vec::new(),
            contract: String::new(),
            chain_id: None,
            start_block: 0,
            confirmations: 0,
            poll_interval_ms: 250,
            log_range: gateway_core::chain::log_span::SPAN_CEILING,
            reconcile_interval_s: 300,
            max_staleness_s: 600,
            on_stale: StalePolicy::FailClosed,
        }
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// The tunnel network; the gateway holds its first host, token t gets host t + 1.
    pub cidr: String,
    pub dns_server: String,
    /// Suffix of node hostnames (`<node_id>.<domain>`).
    pub domain: String,
}

/// Why `[network]` of the configuration does not make a tunnel network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkConfigError {
    #[error("network.cidr: {0}")]
    Cidr(#[from] CidrError),
    #[error("network.dns_server: `{0}` is not an IPv4 address")]
    DnsServer(String),
}

impl NetworkSection {
    /// The tunnel network from `cidr` and `dns_server`.
    pub fn network(&self) -> Result<Network, NetworkConfigError> {
        let cidr = self.cidr.parse()?;
        let dns_server = self.dns_server.parse().map_err(|_| NetworkConfigError::DnsServer(self.dns_server.clone()))?;
        Ok(Network { cidr, dns_server })
    }
}

impl ChainSection {
    /// `contract`, parsed (validation has checked it).
    pub fn contract_address(&self) -> Result<Address, gateway_core::chain::HexIdError> {
        Address::parse(&self.contract)
    }

    /// `max_staleness_s` and `on_stale`.
    pub fn staleness(&self) -> Staleness {
        Staleness { max_age_secs: self.max_staleness_s, policy: self.on_stale }
    }
}

impl XdpSection {
    /// `deny_seconds`, for the planner.
    pub fn plan_config(&self) -> PlanConfig {
        PlanConfig { deny_for: Duration::from_secs(self.deny_seconds) }
    }
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection { cidr: "10.0.0.0/24".into(), dns_server: "10.0.0.1".into(), domain: "vpn.dstack".into() }
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WireguardSection {
    /// TUN interface name (also the UAPI socket name: /var/run/wireguard/<name>.sock).
    pub interface: String,
    pub listen_port: u16,
    /// File holding the gateway's base64 private key; must be mode 0600.
    pub private_key_file: PathBuf,
    /// The endpoint nodes dial (`host:port`), written into rendered node configs.
    pub public_endpoint: String,
    pub persistent_keepalive: u16,
    pub mtu: u16,
    /// Initiate a handshake at once to a node whose packets name its slot
    /// but no session here (a standby taking the address, a restart);
    /// false leaves it to the node's own timers (about 15 s).
    pub takeover: bool,
}

impl Default for WireguardSection {
    fn default() -> Self {
        WireguardSection {
            interface: "wg-dstack".into(),
            listen_port: 51820,
            private_key_file: "/etc/dstack-gateway/wireguard.key".into(),
            public_endpoint: String::new(),
            persistent_keepalive: 25,
            mtu: 1420,
            takeover: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpEnforcement {
    Observe,
    #[default]
    Enforce,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct XdpSection {
    pub enabled: bool,
    /// Underlay interface receiving the WireGuard UDP traffic.
    pub iface: String,
    pub mode: XdpEnforcement,
    pub xdp_mode: crate::xdp::XdpModeChoice,
    pub handshake_rate_per_sec: u32,
    pub handshake_burst: u32,
    /// Handshake initiations per second, for the whole machine, from
    /// endpoints without a completed handshake in the last 180 s (new
    /// nodes, and every spoofed source of a flood); endpoints of live peers
    /// keep their own buckets. 0 disables it.
    pub unproven_handshake_rate_per_sec: u32,
    pub unproven_handshake_burst: u32,
    /// How long an endpoint whose key was rejected or revoked stays denied.
    pub deny_seconds: u64,
    /// Detach on shutdown; otherwise leave it attached and pinned so the
    /// kernel keeps enforcing the last applied state across a restart.
    pub detach_on_exit: bool,
    /// The same verdict at the WireGuard sockets (a socket filter), for what
    /// XDP on `iface` cannot see: other interfaces, loopback.
    pub late_gate: bool,
}

/// The default unproven budget: what passes it costs the data plane about
/// 4 us each (mac1, a cookie reply under load, the send), so a flood gets at
/// most ~1% of a core; a new node's initiation gets through a flood of R
/// initiations per second with probability about this over R (docs/RELIABILITY.md).
const UNPROVEN_HANDSHAKES_PER_SEC: u32 = 2000;

impl Default for XdpSection {
    fn default() -> Self {
        XdpSection {
            enabled: true,
            iface: String::new(),
            mode: XdpEnforcement::Enforce,
            xdp_mode: crate::xdp::XdpModeChoice::Auto,
            handshake_rate_per_sec: 20,
            handshake_burst: 40,
            unproven_handshake_rate_per_sec: UNPROVEN_HANDSHAKES_PER_SEC,
            unproven_handshake_burst: UNPROVEN_HANDSHAKES_PER_SEC,
            deny_seconds: 300,
            detach_on_exit: false,
            late_gate: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub enabled: bool,
    /// Health, metrics and the peer and access API, which lists every
    /// node's key, owner and address: loopback, unless `api_token_file`
    /// guards the API.
    pub listen: String,
    /// Health and metrics alone (empty: none), for a Prometheus on another
    /// host or container: may bind beyond loopback.
    pub metrics_listen: String,
    /// A file (mode 0600) holding the bearer token `/v1/*` requires (empty:
    /// no token, and then `listen` must be a loopback address).
    pub api_token_file: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { enabled: true, listen: "127.0.0.1:9180".into(), metrics_listen: String::new(), api_token_file: String::new() }
    }
}

impl HttpSection {
    /// The metrics-only listener, when one is configured.
    pub fn metrics_listen(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some)
    }
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// JSON-lines audit log; empty means `<state_dir>/audit.jsonl`.
    pub path: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewaySection,
    pub chain: ChainSection,
    pub network: NetworkSection,
    pub wireguard: WireguardSection,
    pub xdp: XdpSection,
    pub http: HttpSection,
    pub audit: AuditSection,
}

/// A configuration problem: the field, what is wrong, and how to fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("config field `{field}`: {problem} (fix: {fix})")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

fn err(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), problem: problem.into(), fix: fix.into() }
}

/// Every problem found, so an operator fixes the file in one pass.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The OS error is the source: `{:#}` prints it once, after this.
    #[error("reading {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid TOML for this gateway: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<ConfigError>),
}

impl Config {
    /// Reads `path`, applies the environment, validates.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_toml_and_env(&text, &env)
            .map_err(|e| match e {
                LoadError::Parse { message, .. } => LoadError::Parse { path: path.to_path_buf(), message },
                other => other,
            })
    }

    /// Pure: parse, override from `env` pairs, validate.
    pub fn from_toml_and_env(text: &str, env: &[(String, String)]) -> Result<Config, LoadError> {
        let mut value: toml::Value = toml::from_str(text)
            .map_err(|e| LoadError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        apply_env(&mut value, env).map_err(|e| LoadError::Invalid(vec![e]))?;
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| LoadError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(LoadError::Invalid(problems))
        }
    }

    /// Every problem with the values (not with the syntax).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        if crate::xdp::PinDir::for_instance(&self.gateway.instance).is_err() {
            out.push(err("gateway.instance", format!("{:?} is not a valid name", self.gateway.instance), "use 1-64 characters from [A-Za-z0-9_-]"));
        }
        if self.chain.rpc_urls.is_empty() {
            out.push(err("chain.rpc_urls", "no RPC endpoint", "list at least one, e.g. [\"ws://127.0.0.1:8545\"] or set GATEWAY_CHAIN_RPC_URLS"));
        }
        for (i, url) in self.chain.rpc_urls.iter().enumerate() {
            let ok = ["http://", "https://", "ws://", "wss://"].iter().any(|p| url.starts_with(p) && url.len() > p.len());
            if !ok {
                out.push(err(&format!("chain.rpc_urls[{i}]"), format!("{url:?} is not an http(s):// or ws(s):// URL"), "write a full URL such as http://127.0.0.1:8545"));
            }
        }
        let c = &self.chain.contract;
        if self.chain.contract_address().is_err() {
            out.push(err("chain.contract", format!("{c:?} is not a 20-byte hex address"), "set the DstackAccessNFT address, 0x followed by 40 hex digits (GATEWAY_CHAIN_CONTRACT)"));
        }
        if self.chain.chain_id == Some(0) {
            out.push(err("chain.chain_id", "is 0", "set the chain's id (eth_chainId), e.g. 8453 for Base, 31337 for anvil"));
        }
        if self.chain.poll_interval_ms == 0 {
            out.push(err("chain.poll_interval_ms", "is 0", "use a positive interval, e.g. 250"));
        }
        if self.chain.log_range == 0 {
            out.push(err("chain.log_range", "is 0", "use a positive block range, or leave it out: the follower learns each provider's limits"));
        }
        if self.chain.max_staleness_s == 0 {
            out.push(err("chain.max_staleness_s", "is 0", "use a positive number of seconds, e.g. 600"));
        }
        match parse_cidr(&self.network.cidr) {
            Ok((_, prefix, v4)) => {
                let host_bits = if v4 { 32 - prefix } else { 128 - prefix };
                if host_bits < 2 {
                    out.push(err("network.cidr", "leaves no room for nodes", "use a prefix of /30 or shorter"));
                }
                if v4 && host_bits > 16 {
                    out.push(err("network.cidr", format!("/{prefix} has more hosts than XDP peer slots (65536)"), "use a prefix of /16 or longer"));
                }
            }
            Err(problem) => out.push(err("network.cidr", problem, "write an IPv4 network such as 10.0.0.0/24")),
        }
        if self.network.dns_server.parse::<IpAddr>().is_err() {
            out.push(err("network.dns_server", format!("{:?} is not an IP address", self.network.dns_server), "write an address such as 10.0.0.1"));
        }
        let iface = &self.wireguard.interface;
        if iface.is_empty() || iface.len() > 15 || iface.contains('/') || iface.contains(char::is_whitespace) {
            out.push(err("wireguard.interface", format!("{iface:?} is not a valid interface name"), "use 1-15 characters without '/' or spaces, e.g. wg-dstack"));
        }
        if self.wireguard.listen_port == 0 {
            out.push(err("wireguard.listen_port", "is 0", "use the UDP port nodes dial, e.g. 51820"));
        }
        if self.wireguard.private_key_file.as_os_str().is_empty() {
            out.push(err("wireguard.private_key_file", "is empty", "point it at a 0600 file made by `gateway node keygen`"));
        }
        if !(1280..=9000).contains(&self.wireguard.mtu) {
            out.push(err("wireguard.mtu", format!("{} is out of range", self.wireguard.mtu), "use 1280..=9000; 1420 fits a 1500-byte underlay"));
        }
        if self.xdp.enabled && self.xdp.iface.is_empty() {
            out.push(err("xdp.iface", "is empty while xdp.enabled = true", "name the underlay interface (e.g. eth0), or set xdp.enabled = false"));
        }
        if self.xdp.unproven_handshake_rate_per_sec > 0 && self.xdp.unproven_handshake_burst == 0 {
            out.push(err("xdp.unproven_handshake_burst", "is 0 while a rate is set", "allow a burst of at least 1 (e.g. 2000), or set the rate to 0 to disable the budget"));
        }
        if self.xdp.handshake_rate_per_sec > 0 && self.xdp.handshake_burst == 0 {
            out.push(err("xdp.handshake_burst", "is 0 while a rate is set", "allow a burst of at least 1 (e.g. 40), or set the rate to 0 to disable the limiter"));
        }
        if self.http.enabled {
            match self.http.listen.parse::<SocketAddr>() {
                Err(_) => out.push(err("http.listen", format!("{:?} is not an address:port", self.http.listen), "write e.g. 127.0.0.1:9180")),
                Ok(addr) if !addr.ip().is_loopback() && self.http.api_token_file.is_empty() => out.push(err(
                    "http.listen",
                    format!("{addr} is beyond loopback, and /v1/peers and /v1/access would list every node's key, owner and address to anyone"),
                    "keep it on 127.0.0.1 and give Prometheus http.metrics_listen, or set http.api_token_file",
                )),
                Ok(_) => {}
            }
            match self.http.metrics_listen() {
                Err(_) => out.push(err("http.metrics_listen", format!("{:?} is not an address:port", self.http.metrics_listen), "write e.g. 0.0.0.0:9181, or leave it empty")),
                Ok(Some(m)) if Some(m) == self.http.listen.parse().ok() => {
                    out.push(err("http.metrics_listen", format!("{m} is http.listen too"), "give the metrics listener a port of its own"))
                }
                Ok(_) => {}
            }
        }
        out
    }

    pub fn audit_path(&self) -> PathBuf {
        self.audit.path.clone().unwrap_or_else(|| self.gateway.state_dir.join("audit.jsonl"))
    }
}

/// An IPv4 or IPv6 network: (address, prefix length, is IPv4).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8, bool), String> {
    let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} has no /prefix"))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| format!("{prefix:?} is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("/{prefix} is longer than {max}"));
    }
    Ok((addr, prefix, addr.is_ipv4()))
}

/// `GATEWAY_<SECTION>_<KEY>=value` replaces `[section] key`. Values are
/// parsed as the key's TOML type: integers, booleans, strings; lists take
/// comma-separated items. Other `GATEWAY_*` variables (CLI flags) are ignored.
fn apply_env(value: &mut toml::Value, env: &[(String, String)]) -> Result<(), ConfigError> {
    const SECTIONS: [&str; 7] = ["gateway", "chain", "network", "wireguard", "xdp", "http", "audit"];
    let table = match value.as_table_mut() {
        Some(t) => t,
        None => return Ok(()),
    };
    // The defaults tell each key's type (a key without a default is a string).
    let defaults = toml::Value::try_from(Config::default()).map_err(|e| err("(defaults)", e.to_string(), "report a bug"))?;
    for (name, raw) in env {
        let rest = match name.strip_prefix("GATEWAY_") {
            Some(r) => r.to_ascii_lowercase(),
            None => continue,
        };
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else { continue };
        let key = &rest[section.len() + 1..];
        let field = format!("{section}.{key}");
        let string = toml::Value::String(String::new());
        let integer = toml::Value::Integer(0);
        // Only keys the configuration has: other GATEWAY_* variables belong to
        // CLI flags (GATEWAY_XDP_INSTANCE, GATEWAY_SIGNER_KEY, ...). A key
        // whose default is unset (audit.path) is a string.
        let default = match defaults.get(*section).and_then(|s| s.get(key)) {
            Some(d) => d,
            None if (*section, key) == ("audit", "path") => &string,
            None if (*section, key) == ("chain", "chain_id") => &integer,
            None => continue,
        };
        let parsed = match default {
            toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| err(&field, format!("{name}={raw:?} is not an integer"), "set a whole number"))?),
            toml::Value::Boolean(_) => toml::Value::Boolean(raw.trim().parse().map_err(|_| err(&field, format!("{name}={raw:?} is not true/false"), "set true or false"))?),
            toml::Value::Array(_) => toml::Value::Array(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect()),
            _ => toml::Value::String(raw.clone()),
        };
        let section_table = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(t) = section_table.as_table_mut() {
            t.insert(key.to_string(), parsed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
[chain]
rpc_urls = ["ws://127.0.0.1:8545", "http://127.0.0.1:8546"]
contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
[xdp]
iface = "eth0"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn the_peer_api_stays_on_loopback_unless_a_token_guards_it() {
        let with = |pairs: &[(&str, &str)]| Config::from_toml_and_env(GOOD, &env(pairs));
        let fields = |r: Result<Config, LoadError>| match r {
            Err(LoadError::Invalid(problems)) => problems.into_iter().map(|p| p.field).collect::<Vec<_>>(),
            other => panic!("expected invalid, got {other:?}"),
        };
        assert!(with(&[]).unwrap().http.metrics_listen().unwrap().is_none(), "no metrics listener by default");
        assert_eq!(fields(with(&[("GATEWAY_HTTP_LISTEN", "0.0.0.0:9180")])), ["http.listen"]);
        assert_eq!(fields(with(&[("GATEWAY_HTTP_LISTEN", "10.1.0.5:9180")])), ["http.listen"]);
        let guarded = with(&[("GATEWAY_HTTP_LISTEN", "0.0.0.0:9180"), ("GATEWAY_HTTP_API_TOKEN_FILE", "/etc/dstack-gateway/api.token")]).unwrap();
        assert_eq!(guarded.http.api_token_file, "/etc/dstack-gateway/api.token");
        let metrics = with(&[("GATEWAY_HTTP_METRICS_LISTEN", "0.0.0.0:9181")]).unwrap();
        assert_eq!(metrics.http.metrics_listen().unwrap(), Some("0.0.0.0:9181".parse().unwrap()), "metrics may face the network");
        assert_eq!(fields(with(&[("GATEWAY_HTTP_METRICS_LISTEN", "9181")])), ["http.metrics_listen"]);
        assert_eq!(fields(with(&[("GATEWAY_HTTP_METRICS_LISTEN", "127.0.0.1:9180")])), ["http.metrics_listen"]);
        assert!(with(&[("GATEWAY_HTTP_LISTEN", "[::1]:9180")]).is_ok(), "IPv6 loopback is loopback");
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let c = Config::from_toml_and_env(GOOD, &[]).unwrap();
        assert_eq!(c.network.cidr, "10.0.0.0/24");
        assert_eq!(c.wireguard.listen_port, 51820);
        assert_eq!(c.chain.on_stale, StalePolicy::FailClosed);
        assert_eq!(c.http.listen, "127.0.0.1:9180", "admin surface binds to loopback by default");
        assert_eq!(c.audit_path(), PathBuf::from("/var/lib/dstack-gateway/audit.jsonl"));
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../config/gateway.toml");
        Config::from_toml_and_env(text, &[]).unwrap();
    }

    #[test]
    fn environment_overrides_typed_fields() {
        let c = Config::from_toml_and_env(
            GOOD,
            &env(&[
                ("GATEWAY_CHAIN_RPC_URLS", "http://127.0.0.1:1, ws://127.0.0.1:2"),
                ("GATEWAY_CHAIN_CONFIRMATIONS", "3"),
                ("GATEWAY_XDP_ENABLED", "false"),
                ("GATEWAY_NETWORK_CIDR", "10.9.0.0/16"),
                ("GATEWAY_SIGNER_KEY", "/not/a/config/key"),
                ("GATEWAY_XDP_INSTANCE", "a CLI flag's variable, not [xdp] instance"),
                ("GATEWAY_AUDIT_PATH", "/var/log/gw-audit.jsonl"),
            ]),
        )
        .unwrap();
        assert_eq!(c.chain.rpc_urls, vec!["http://127.0.0.1:1", "ws://127.0.0.1:2"]);
        assert_eq!(c.chain.confirmations, 3);
        assert!(!c.xdp.enabled);
        assert_eq!(c.network.cidr, "10.9.0.0/16");
        assert_eq!(c.audit_path(), PathBuf::from("/var/log/gw-audit.jsonl"));
    }

    #[test]
    fn bad_values_name_the_field_and_the_fix() {
        let text = r#"
[chain]
rpc_urls = ["127.0.0.1:8545"]
contract = "0x1234"
[network]
cidr = "10.0.0.0/8"
[xdp]
iface = ""
[http]
listen = "localhost"
"#;
        let problems = match Config::from_toml_and_env(text, &[]) {
            Err(LoadError::Invalid(p)) => p,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["chain.rpc_urls[0]", "chain.contract", "network.cidr", "xdp.iface", "http.listen"]);
        assert!(problems.iter().all(|p| !p.fix.is_empty()));
    }

    #[test]
    fn network_errors_name_the_field() {
        let mut s = NetworkSection::default();
        assert_eq!(s.network().map(|n| n.gateway_ip()), Ok(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        s.cidr = "10.0.0.1/24".into();
        assert!(s.network().unwrap_err().to_string().starts_with("network.cidr"));
        s.cidr = "10.0.0.0/24".into();
        s.dns_server = "dns".into();
        assert!(s.network().unwrap_err().to_string().starts_with("network.dns_server"));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused() {
        let typo = format!("{GOOD}\n[wireguard]\nlisten_prot = 1\n");
        assert!(matches!(Config::from_toml_and_env(&typo, &[]), Err(LoadError::Parse { message, .. }) if message.contains("listen_prot")));
        let bad_env = Config::from_toml_and_env(GOOD, &env(&[("GATEWAY_WIREGUARD_LISTEN_PORT", "many")]));
        assert!(matches!(bad_env, Err(LoadError::Invalid(p)) if p[0].field == "wireguard.listen_port"));
        assert!(matches!(Config::from_toml_and_env("[[[", &[]), Err(LoadError::Parse { .. })));
    }
}
