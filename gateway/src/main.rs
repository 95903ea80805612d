//! `gateway`: the daemon and its operator commands.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "gateway", version, about = "eBPF-gated userspace WireGuard gateway whose peer list is an NFT contract")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, env = "GATEWAY_LOG_FORMAT", default_value = "text")]
    log_format: gateway::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    gateway::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Xdp(cmd) => gateway::xdp::cli::run(cmd),
        Command::Node(cmd) => gateway::node::run(cmd),
        Command::Dataplane(cmd) => gateway::dataplane::cli::run(cmd),
        Command::Chain(cmd) => gateway::chain::cli::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
