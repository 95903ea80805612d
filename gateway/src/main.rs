//! `gateway`: the daemon and its operator commands.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "gateway", version, about = "eBPF-gated userspace WireGuard gateway whose peer list is an NFT contract")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, env = "GATEWAY_LOG_FORMAT", default_value = "text")]
    log_format: gateway::logging::LogFormat,
    /// Run inside the named network namespace (/run/netns/NAME) through
    /// setns(2) on the network namespace only: unlike `ip netns exec`, the
    /// mount namespace stays shared, so pins under /sys/fs/bpf stay visible.
    #[arg(long, global = true, env = "GATEWAY_NETNS")]
    netns: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway: chain follower, registry, access, XDP front and data plane.
    Run {
        /// TOML configuration (GATEWAY_<SECTION>_<KEY> variables override it).
        #[arg(long, env = "GATEWAY_CONFIG", default_value = "/etc/dstack-gateway/gateway.toml")]
        config: std::path::PathBuf,
        /// Check the configuration and the private key file, then exit (0:
        /// `run` would start with them). The systemd unit runs it first.
        #[arg(long)]
        check_config: bool,
    },
    /// Load, attach, inspect and detach the XDP front.
    #[command(subcommand)]
    Xdp(gateway::xdp::cli::XdpCommand),
    /// Node and contract administration: keys, deploy, mint, revoke, transfer, rekey.
    #[command(subcommand)]
    Node(gateway::node::NodeCommand),
    /// Follow the access contract and print what the gateway would learn from it.
    #[command(subcommand)]
    Chain(gateway::chain::cli::ChainCommand),
    /// Run the userspace WireGuard data plane on its own (peers via `wg set`).
    #[command(subcommand)]
    Dataplane(gateway::dataplane::cli::DataplaneCommand),
    /// Access decisions: is a key allowed, and why.
    #[command(subcommand)]
    Access(gateway::access::cli::AccessCommand),
    /// Configuration for nodes: `config render --node <id>` prints a node's wg-quick file.
    #[command(subcommand)]
    Config(gateway::config::cli::ConfigCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    gateway::logging::init(cli.log_format);
    // Before any thread exists: threads inherit the namespace they start in.
    if let Some(ns) = &cli.netns {
        if let Err(err) = gateway::netns::enter(ns) {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Run { config: path, check_config } => gateway::config::Config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|config| if check_config { report_config_ok(&path, &config) } else { gateway::daemon::run(config) }),
        Command::Xdp(cmd) => gateway::xdp::cli::run(cmd),
        Command::Node(cmd) => gateway::node::run(cmd),
        Command::Dataplane(cmd) => gateway::dataplane::cli::run(cmd),
        Command::Access(cmd) => gateway::access::cli::run(cmd),
        Command::Chain(cmd) => gateway::chain::cli::run(cmd),
        Command::Config(cmd) => gateway::config::cli::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `gateway run --check-config`: the key file and the API token file are
/// read as `run` reads them (present, 0600, well formed); the
/// configuration was validated by loading it.
fn report_config_ok(path: &std::path::Path, config: &gateway::config::Config) -> anyhow::Result<()> {
    use std::io::Write as _;
    let key = &config.wireguard.private_key_file;
    gateway::dataplane::cli::read_private_key(key)?;
    gateway::http::ApiToken::configured(&config.http)?;
    writeln!(std::io::stdout(), "configuration OK: {} (private key {})", path.display(), key.display())?;
    Ok(())
}
