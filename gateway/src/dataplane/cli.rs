//! `gateway dataplane run`: the data plane on its own, peers from the command
//! line or `wg set`, until SIGTERM/SIGINT (I/O edge).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ipnet::IpNet;

use super::peer::{encode_key, parse_key, PeerConfig, PublicKey};
use super::runtime::{Dataplane, DataplaneConfig, DEFAULT_MAX_BURST};
use super::DeviceEvent;

/// WireGuard's default MTU: 1500 minus the largest (IPv6) encapsulation overhead.
const DEFAULT_MTU: u16 = 1420;

#[derive(clap::Subcommand, Debug)]
pub enum DataplaneCommand {
    /// Run a userspace WireGuard interface until SIGTERM/SIGINT.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TUN interface to create (also names the UAPI socket).
    #[arg(long)]
    pub iface: String,
    /// UDP port for WireGuard, IPv4 and IPv6.
    #[arg(long, default_value_t = 51820)]
    pub listen_port: u16,
    /// File holding the private key (base64 as `wg genkey` writes it), mode 0600.
    #[arg(long)]
    pub private_key_file: PathBuf,
    /// Interface address with prefix, e.g. 10.99.0.1/24 (repeatable).
    #[arg(long = "address", required = true)]
    pub addresses: Vec<IpNet>,
    /// A peer: `<base64 public key>=<allowed-ip>[,<allowed-ip>...]` (repeatable).
    #[arg(long = "peer", value_parser = parse_peer_arg)]
    pub peers: Vec<PeerArg>,
    #[arg(long, default_value_t = DEFAULT_MTU)]
    pub mtu: u16,
    /// Do not serve /var/run/wireguard/<iface>.sock.
    #[arg(long)]
    pub no_uapi: bool,
    /// Packet worker threads (each a TUN queue and UDP sockets of its own);
    /// 0: one per CPU.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Datagrams sent to a peer in one burst (one UDP GSO message), 1 to 64.
    #[arg(long, default_value_t = DEFAULT_MAX_BURST, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_burst: u16,
    /// Leave nodes whose session lives elsewhere (another gateway with this
    /// key, or this one before a restart) to their own timers instead of
    /// initiating a handshake to them at once.
    #[arg(long)]
    pub no_takeover: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerArg {
    pub public_key: PublicKey,
    pub allowed_ips: Vec<IpNet>,
}

/// Base64 keys end in `=`, allowed IPs never contain one: split at the last.
fn parse_peer_arg(text: &str) -> Result<PeerArg, String> {
    let (key, ips) = text.rsplit_once('=').ok_or("expected <public key>=<allowed-ip>[,...]")?;
    let public_key = parse_key(key).map_err(|e| e.to_string())?;
    let allowed_ips = ips
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpNet>().map_err(|e| format!("{s}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(PeerArg { public_key, allowed_ips })
}

/// Reads a private key file, refusing one that others could read.
pub fn read_private_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{} is readable by group or others; chmod 600 it", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse_key(&text).with_context(|| format!("{} holds no WireGuard private key", path.display()))
}

pub fn run(cmd: DataplaneCommand) -> anyhow::Result<()> {
    match cmd {
        DataplaneCommand::Run(args) => run_device(args),
    }
}

fn run_device(args: RunArgs) -> anyhow::Result<()> {
    let config = DataplaneConfig {
        iface: args.iface.clone(),
        listen_port: args.listen_port,
        private_key: read_private_key(&args.private_key_file)?,
        addresses: args.addresses,
        mtu: args.mtu,
        uapi: !args.no_uapi,
        workers: args.workers,
        takeover: !args.no_takeover,
        max_burst: usize::from(args.max_burst),
    };
    let (dataplane, mut events) = Dataplane::start(config)?;
    let handle = dataplane.handle();
    for peer in args.peers {
        let slot = handle.free_slot()?;
        handle
            .add_peer(PeerConfig {
                public_key: peer.public_key,
                slot,
                allowed_ips: peer.allowed_ips,
                endpoint: None,
                persistent_keepalive: None,
            })
            .with_context(|| format!("add peer {}", encode_key(&peer.public_key)))?;
    }
    tracing::info!(public_key = %encode_key(&handle.public_key()), peers = handle.peers().len(), "ready");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        let mut check = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                Some(DeviceEvent::RejectedHandshake { public_key, endpoint }) = events.recv() => {
                    tracing::info!(%endpoint, key = %encode_key(&public_key), "rejected handshake from unknown key");
                }
                _ = check.tick() => {
                    if !dataplane.is_running() {
                        bail!("data plane thread stopped");
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    tracing::info!("stopping");
    dataplane.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn peer_argument_splits_at_the_last_equals_sign() {
        let key = encode_key(&[3; 32]);
        let arg = parse_peer_arg(&format!("{key}=10.0.0.2/32,fd00::2/128")).unwrap();
        assert_eq!(arg.public_key, [3; 32]);
        assert_eq!(arg.allowed_ips.len(), 2);
        assert!(parse_peer_arg("nokey").is_err());
        assert!(parse_peer_arg(&format!("{key}=10.0.0.300/32")).is_err());
    }

    #[test]
    fn private_key_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, encode_key(&[5; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_private_key(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_key(&path).unwrap(), [5; 32]);
    }
}
