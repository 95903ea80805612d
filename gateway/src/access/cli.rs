//! `gateway access check <pubkey> [--json]` (I/O edge): asks a running
//! gateway's admin HTTP surface, or reads a registry file when none runs.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

use gateway_core::access::{decide_str, AccessReason, Decision};
use gateway_core::registry::{Registry, RegistryDocument};

#[derive(clap::Subcommand, Debug)]
pub enum AccessCommand {
    /// Is this WireGuard public key allowed, and why? Exit status 0 when
    /// allowed, 1 when denied or on error.
    Check {
        /// Base64 WireGuard public key.
        public_key: String,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
        /// Admin address of the running gateway (`[http] listen`).
        #[arg(long, env = "GATEWAY_ADMIN_URL", default_value = "http://127.0.0.1:9180")]
        url: String,
        /// Answer from this registry file instead of a running gateway.
        #[arg(long, conflicts_with = "url")]
        registry: Option<PathBuf>,
        /// Answer straight from the chain: read the contract's logs from
        /// `--from-block` through this RPC endpoint (no gateway needed).
        #[arg(long, value_name = "RPC_URL", conflicts_with_all = ["url", "registry"], requires = "contract")]
        chain: Option<String>,
        /// The DstackAccessNFT address, with --chain.
        #[arg(long, env = "GATEWAY_CONTRACT")]
        contract: Option<String>,
        /// First block to read logs from, with --chain (the deployment block).
        #[arg(long, default_value_t = 0)]
        from_block: u64,
        /// Tunnel network, with --chain (for the node's address in the answer).
        #[arg(long, default_value = "10.0.0.0/24")]
        cidr: String,
    },
}

/// The key was answered and refused: not a failure of the command, but a
/// non-zero exit status for scripts.
#[derive(Debug, thiserror::Error)]
#[error("access denied: {0}")]
pub struct Denied(pub AccessReason);

pub fn run(cmd: AccessCommand) -> anyhow::Result<()> {
    match cmd {
        AccessCommand::Check { public_key, json, url, registry, chain, contract, from_block, cidr } => {
            let decision = match (registry, chain) {
                (Some(path), _) => from_registry_file(&path, &public_key)?,
                (None, Some(rpc)) => from_chain(&rpc, contract.as_deref().unwrap_or_default(), from_block, &cidr, &public_key)?,
                (None, None) => from_gateway(&url, &public_key)?,
            };
            let text = if json { serde_json::to_string_pretty(&decision)? } else { decision.summary() };
            writeln!(std::io::stdout().lock(), "{text}")?;
            if decision.allowed {
                Ok(())
            } else {
                Err(Denied(decision.reason).into())
            }
        }
    }
}

/// Decides from a persisted registry, as of its `last_sync` (no staleness
/// policy: the reader sees what the gateway last knew).
pub fn from_registry_file(path: &std::path::Path, public_key: &str) -> anyhow::Result<Decision> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: RegistryDocument =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a registry document", path.display()))?;
    let contract = doc.contract_address;
    let network = doc.network;
    let registry = Registry::from_document(doc, contract, network).with_context(|| format!("loading {}", path.display()))?;
    Ok(decide_str(&registry, public_key))
}

/// Follows the contract from `from_block` to the chain head with the real
/// follower, applies every event to a fresh registry, and decides from it.
pub fn from_chain(rpc: &str, contract: &str, from_block: u64, cidr: &str, public_key: &str) -> anyhow::Result<Decision> {
    use crate::chain::follower::{Follower, FollowerConfig};
    use gateway_core::chain::ChainEvent;
    let address: gateway_core::chain::Address = contract.parse().with_context(|| format!("--contract {contract:?} is not an address"))?;
    let network = gateway_core::registry::Network { cidr: cidr.parse().with_context(|| format!("--cidr {cidr}"))?, dns_server: std::net::Ipv4Addr::UNSPECIFIED };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(10_000);
        let mut config = FollowerConfig::new([rpc], address);
        config.start_block = from_block;
        let follower = Follower::new(config, Default::default(), tx)?;
        let task = tokio::spawn(follower.run());
        let mut registry = Registry::new(address, network);
        let now = crate::clock::unix_now();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .context("the chain did not answer within 60 s")?
                .context("the follower stopped")?;
            match &event {
                ChainEvent::Unavailable { error } => bail!("chain unavailable: {error}"),
                ChainEvent::Synced { block_number, head, .. } if block_number >= head => {
                    let _ = registry.apply(&event, now);
                    break;
                }
                _ => {
                    let _ = registry.apply(&event, now);
                }
            }
        }
        task.abort();
        Ok(decide_str(&registry, public_key))
    })
}

/// GET `/v1/access/{key}` from the admin surface (plain HTTP/1.1; the admin
/// surface listens on loopback or a management network, never TLS here).
pub fn from_gateway(url: &str, public_key: &str) -> anyhow::Result<Decision> {
    let Some(authority) = url.strip_prefix("http://").map(|a| a.trim_end_matches('/')) else {
        bail!("--url must be http://host:port, got {url}");
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the gateway at {url} (is it running? use --registry to read a file)"))?;
    stream.set_read_timeout(Some(timeout))?;
    let key = public_key.trim();
    // One write: `write!` would send the formatted pieces separately.
    let request = format!("GET /v1/access/{key} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).context("reading the gateway's answer")?;
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.get(9..12).unwrap_or("");
    serde_json::from_str(body).with_context(|| format!("gateway answered HTTP {status} with an unexpected body: {body}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::RegistryStore;
    use gateway_core::testing::*;

    #[test]
    fn answers_from_a_registry_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let (store, _) = RegistryStore::open(&path, CONTRACT, network()).unwrap();
        let mut reg = registry();
        reg.apply(&granted(1, 11, 10, 0), 100);
        reg.apply(&granted(2, 22, 10, 1), 100);
        reg.apply(&revoked(2, 11, 0), 100);
        store.save(&reg).unwrap();
        let d = from_registry_file(&path, &key_b64(11)).unwrap();
        assert_eq!((d.allowed, d.token_id, d.http_status()), (true, Some(1), 200));
        assert_eq!(d.summary(), format!("allowed (granted): token 1, node node-1, tunnel ip 10.88.0.2, owner {}", owner(1)));
        assert_eq!(from_registry_file(&path, &key_b64(22)).unwrap().reason, AccessReason::Revoked);
        let bad = from_registry_file(&path, "nope").unwrap();
        assert_eq!((bad.reason, bad.http_status()), (AccessReason::InvalidKey, 400));
    }

    #[test]
    fn asks_a_running_gateway_over_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut reg = registry();
        reg.apply(&granted(1, 11, 10, 0), 100);
        let answer = serde_json::to_string(&gateway_core::access::decide(&reg, &key(11))).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "client closed early");
                request.extend_from_slice(&buf[..n]);
            }
            let request = String::from_utf8(request).unwrap();
            write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len()).unwrap();
            request
        });
        let d = from_gateway(&format!("http://{addr}"), &key_b64(11)).unwrap();
        assert!(d.allowed);
        let request = server.join().unwrap();
        assert!(request.starts_with(&format!("GET /v1/access/{} HTTP/1.1\r\n", key_b64(11))), "{request}");
    }
}
