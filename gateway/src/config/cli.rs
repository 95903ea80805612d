//! `gateway config render` (I/O edge): reads the gateway's configuration, its
//! registry file and keys, and prints a node's wg-quick file made by
//! [`super::render`].

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::render::{find_node, render, NodeConfigInput, PrivateKey};
use super::Config;
use crate::store::RegistryStore;
use gateway_core::registry::WgKey;

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print a node's wg-quick configuration: its tunnel address (from its
    /// token id), the network's DNS, and the gateway as its peer.
    Render(RenderArgs),
}

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// The node: its node id, or its token id.
    #[arg(long)]
    pub node: String,
    /// The gateway's TOML configuration (GATEWAY_<SECTION>_<KEY> variables override it).
    #[arg(long, env = "GATEWAY_CONFIG", default_value = "/etc/dstack-gateway/gateway.toml")]
    pub config: PathBuf,
    /// The registry file the gateway writes [default: <state_dir>/registry.json].
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// The gateway's base64 public key, instead of deriving it from
    /// `wireguard.private_key_file` (which only the gateway's host can read).
    #[arg(long)]
    pub gateway_public_key: Option<String>,
    /// Fill `PrivateKey =` from this file (base64, mode 0600, owned by the
    /// caller); its public half must be the key bound to the token.
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Render(args) => {
            let text = render_from_files(&args)?;
            write!(std::io::stdout().lock(), "{text}")?;
            Ok(())
        }
    }
}

/// Gathers the inputs from files and renders.
pub fn render_from_files(args: &RenderArgs) -> anyhow::Result<String> {
    let config = Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    let network = config.network.network()?;
    let registry_path = args.registry.clone().unwrap_or_else(|| config.gateway.state_dir.join("registry.json"));
    let (_, loaded) = RegistryStore::open(&registry_path, config.chain.contract_address()?, network)?;
    let Some(registry) = loaded else {
        bail!(
            "no registry at {}: the gateway writes it once it has synced with the chain (`gateway run`); pass --registry to read another file",
            registry_path.display()
        );
    };
    let registry = registry.with_domain(config.network.domain.clone());
    let view = find_node(&registry, &args.node)?;
    if !view.is_granted() {
        tracing::warn!(token_id = %view.token_id, node_id = %view.node_id, reason = %view.reason, "rendering for a node without access: the gateway refuses it until this changes");
    }
    let gateway_public_key = match &args.gateway_public_key {
        Some(text) => WgKey::parse(text.trim()).with_context(|| format!("--gateway-public-key {text:?}"))?,
        None => {
            let private = crate::dataplane::cli::read_private_key(&config.wireguard.private_key_file).context(
                "deriving the gateway's public key from wireguard.private_key_file (or pass --gateway-public-key)",
            )?;
            PrivateKey::from_bytes(private).public_key()
        }
    };
    let private_key = match &args.private_key_file {
        Some(path) => Some(read_owned_private_key(path)?),
        None => None,
    };
    let text = render(&NodeConfigInput {
        network: &network,
        domain: &config.network.domain,
        token_id: view.token_id,
        node_id: &view.node_id,
        standing: view.reason,
        bound_key: view.key,
        gateway_public_key: &gateway_public_key,
        endpoint: &config.wireguard.public_endpoint,
        persistent_keepalive: config.wireguard.persistent_keepalive,
        private_key: private_key.as_ref(),
    })?;
    Ok(text)
}

/// A node's private key file: mode 0600 (checked by the reader) and owned by
/// whoever runs the command, so nobody renders someone else's secret.
fn read_owned_private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!("{} is owned by uid {}, not by you (uid {me}); render on the node that owns the key", path.display(), meta.uid());
    }
    Ok(PrivateKey::from_bytes(crate::dataplane::cli::read_private_key(path)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use gateway_core::chain::Address;
    use gateway_core::registry::Registry;
    use gateway_core::testing::{granted, granted_raw, key_b64};

    const CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    /// A config and a registry with token 1 (`node-1`) bound to `bound`.
    fn setup(dir: &Path, bound: &str) -> RenderArgs {
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nstate_dir = {:?}\n[chain]\nrpc_urls = [\"ws://127.0.0.1:8545\"]\ncontract = \"{CONTRACT}\"\n\
                 [wireguard]\npublic_endpoint = \"gw.example.com:51820\"\nprivate_key_file = \"/nonexistent\"\n[xdp]\niface = \"eth0\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let network = crate::config::NetworkSection::default().network().unwrap();
        let contract = Address::parse(CONTRACT).unwrap();
        let (store, _) = RegistryStore::open(dir.join("registry.json"), contract, network).unwrap();
        let mut reg = Registry::new(contract, network);
        reg.apply(&granted_raw(1, "node-1", bound, 10, 0), 100);
        reg.apply(&granted(2, 22, 10, 1), 100);
        store.save(&reg).unwrap();
        RenderArgs {
            node: "node-1".into(),
            config,
            registry: None,
            gateway_public_key: Some(key_b64(9)),
            private_key_file: None,
        }
    }

    #[test]
    fn renders_from_the_registry_file() {
        let dir = tempfile::tempdir().unwrap();
        let args = setup(dir.path(), &key_b64(11));
        let text = render_from_files(&args).unwrap();
        assert!(text.contains("\nAddress = 10.0.0.2/24\n"), "{text}");
        assert!(text.contains(&format!("\nPublicKey = {}\n", key_b64(9))));
        assert!(text.contains("\nPrivateKey = <paste yours>\n"));
        let by_token = RenderArgs { node: "2".into(), ..args };
        assert!(render_from_files(&by_token).unwrap().contains("\nAddress = 10.0.0.3/24\n"));
    }

    #[test]
    fn an_unknown_node_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let args = RenderArgs { node: "ghost".into(), ..setup(dir.path(), &key_b64(11)) };
        let err = format!("{:#}", render_from_files(&args).unwrap_err());
        assert!(err.contains("node \"ghost\" is not in the registry (2 tokens known)"), "{err}");
    }

    #[test]
    fn a_missing_registry_or_gateway_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let args = setup(dir.path(), &key_b64(11));
        let missing = RenderArgs { registry: Some(dir.path().join("nope.json")), ..setup(dir.path(), &key_b64(11)) };
        assert!(format!("{:#}", render_from_files(&missing).unwrap_err()).contains("no registry at"));
        let no_gw_key = RenderArgs { gateway_public_key: None, ..args };
        assert!(format!("{:#}", render_from_files(&no_gw_key).unwrap_err()).contains("--gateway-public-key"));
    }

    #[test]
    fn the_private_key_file_fills_the_key_when_private_and_matching() {
        let dir = tempfile::tempdir().unwrap();
        let secret = PrivateKey::from_bytes([5; 32]);
        let key_file = dir.path().join("node.key");
        std::fs::write(&key_file, format!("{}\n", crate::dataplane::encode_key(&[5; 32]))).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let args = RenderArgs {
            private_key_file: Some(key_file.clone()),
            ..setup(dir.path(), &secret.public_key().to_base64())
        };
        assert!(render_from_files(&args).is_err(), "a world-readable key file is refused");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = render_from_files(&args).unwrap();
        assert!(text.contains(&format!("\nPrivateKey = {}\n", crate::dataplane::encode_key(&[5; 32]))));
        let other = RenderArgs { node: "2".into(), ..args };
        assert!(format!("{:#}", render_from_files(&other).unwrap_err()).contains("not the key bound to token 2"));
    }
}
