//! `gateway node ...`: node keys and the access contract's administration
//! (I/O edge: files, alloy). Every subcommand prints JSON with `--json`.

pub mod admin;
pub mod keys;

use std::io::Write;
use std::path::PathBuf;

use alloy::primitives::{Address, U256};
use anyhow::Context;
use serde::Serialize;

use admin::Session;

#[derive(clap::Args, Debug, Clone)]
pub struct ChainArgs {
    /// JSON-RPC endpoint (http(s):// or ws(s)://).
    #[arg(long, env = "GATEWAY_RPC_URL", default_value = "http://127.0.0.1:8545")]
    pub rpc_url: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ContractArgs {
    #[command(flatten)]
    pub chain: ChainArgs,
    /// The DstackAccessNFT contract address.
    #[arg(long, env = "GATEWAY_CONTRACT")]
    pub contract: Address,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SignerArgs {
    /// File holding the transaction signer's hex private key (never the key itself).
    #[arg(long = "signer-key", env = "GATEWAY_SIGNER_KEY", value_name = "FILE")]
    pub signer_key: PathBuf,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Machine-readable output: one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What every transaction-sending command needs: where, who signs, how to print.
#[derive(clap::Args, Debug, Clone)]
pub struct TxArgs {
    #[command(flatten)]
    pub contract: ContractArgs,
    #[command(flatten)]
    pub signer: SignerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl TxArgs {
    async fn session(&self) -> anyhow::Result<Session> {
        signed(&self.contract.chain, &self.signer).await
    }
}

/// The WireGuard public key to bind: given directly, or derived from a private key file.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct KeySource {
    /// Base64 WireGuard public key (as printed by `gateway node keygen` or `wg pubkey`).
    #[arg(long)]
    pub pubkey: Option<String>,
    /// WireGuard private key file (`gateway node keygen --out` or `wg genkey`); only its public key is sent.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

impl KeySource {
    fn public_key(&self) -> anyhow::Result<String> {
        match (&self.pubkey, &self.key_file) {
            (Some(key), _) => keys::validate_public_key(key),
            (None, Some(path)) => Ok(keys::read_private_key(path)?.public_base64()),
            (None, None) => anyhow::bail!("give --pubkey or --key-file"),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {
    /// Generate a WireGuard key pair: the private key goes to a 0600 file, the public key is printed.
    Keygen {
        /// Where to write the private key.
        #[arg(long, short)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Deploy the reference DstackAccessNFT contract; the signer becomes its owner.
    Deploy {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Grant access: mint a token binding <node-id> to a WireGuard key, owned by <owner> (contract owner only).
    Mint {
        owner: Address,
        node_id: String,
        #[command(flatten)]
        key: KeySource,
        #[arg(long, default_value = "")]
        token_uri: String,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Revoke a token's access (contract owner only).
    Revoke {
        token_id: U256,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Transfer the signer's token to <to>; its key is unbound until the new owner rekeys.
    Transfer {
        token_id: U256,
        to: Address,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Bind a new WireGuard key to the signer's token.
    Rekey {
        token_id: U256,
        #[command(flatten)]
        key: KeySource,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Hand the contract over to <new-owner> (`transferContractOwnership`, contract owner only).
    /// On the reference contract this is two-step: <new-owner> then runs `accept-ownership`.
    TransferOwnership {
        new_owner: Address,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Take over the contract as its pending owner (the second step of `transfer-ownership`).
    AcceptOwnership {
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Show a token by token id (a number) or node id.
    Info {
        node_or_token: String,
        #[command(flatten)]
        contract: ContractArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List every token ever granted (found from the contract's logs) with its current state.
    List {
        /// First block to search for grants (the contract's deployment block).
        #[arg(long, default_value_t = 0)]
        from_block: u64,
        #[command(flatten)]
        contract: ContractArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(run_async(cmd))
}

async fn signed(chain: &ChainArgs, signer: &SignerArgs) -> anyhow::Result<Session> {
    Session::with_signer(&chain.rpc_url, admin::load_signer(&signer.signer_key)?).await
}

async fn run_async(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Keygen { out, force, output } => {
            let pair = keys::KeyPair::generate();
            keys::write_private_key(&out, &pair, force)?;
            let public_key = pair.public_base64();
            let report = serde_json::json!({ "public_key": public_key, "private_key_file": out });
            print(&output, &report, &public_key)
        }
        NodeCommand::Deploy { chain, signer, output } => {
            let deployed = signed(&chain, &signer).await?.deploy().await?;
            let text = format!(
                "deployed DstackAccessNFT at {} (block {}, tx {})",
                deployed.address, deployed.tx.block_number, deployed.tx.tx_hash
            );
            print(&output, &deployed, &text)
        }
        NodeCommand::Mint { owner, node_id, key, token_uri, tx } => {
            let public_key = key.public_key()?;
            let minted = tx.session().await?.mint(tx.contract.contract, owner, &node_id, &public_key, &token_uri).await?;
            let text = format!(
                "minted token {} for node {} to {} (block {}, tx {})",
                minted.token_id, minted.node_id, minted.owner, minted.tx.block_number, minted.tx.tx_hash
            );
            print(&tx.output, &minted, &text)
        }
        NodeCommand::Revoke { token_id, tx } => {
            let done = tx.session().await?.revoke(tx.contract.contract, token_id).await?;
            let report = serde_json::json!({ "token_id": token_id.to_string(), "tx_hash": done.tx_hash, "block_number": done.block_number });
            print(&tx.output, &report, &format!("revoked token {token_id} (block {}, tx {})", done.block_number, done.tx_hash))
        }
        NodeCommand::Transfer { token_id, to, tx } => {
            let done = tx.session().await?.transfer(tx.contract.contract, token_id, to).await?;
            let to = crate::chain::contract::address_string(to);
            let report = serde_json::json!({ "token_id": token_id.to_string(), "to": to, "tx_hash": done.tx_hash, "block_number": done.block_number });
            let text = format!("transferred token {token_id} to {to}; its key is unbound until the new owner rekeys (tx {})", done.tx_hash);
            print(&tx.output, &report, &text)
        }
        NodeCommand::Rekey { token_id, key, tx } => {
            let public_key = key.public_key()?;
            let done = tx.session().await?.rekey(tx.contract.contract, token_id, &public_key).await?;
            let report = serde_json::json!({ "token_id": token_id.to_string(), "public_key": public_key, "tx_hash": done.tx_hash, "block_number": done.block_number });
            print(&tx.output, &report, &format!("token {token_id} now bound to {public_key} (tx {})", done.tx_hash))
        }
        NodeCommand::TransferOwnership { new_owner, tx } => {
            let done = tx.session().await?.transfer_contract_ownership(tx.contract.contract, new_owner).await?;
            let text = match &done.pending_owner {
                Some(pending) => format!(
                    "ownership transfer to {pending} initiated; {} stays owner until {pending} runs `gateway node accept-ownership` (tx {})",
                    done.owner, done.tx.tx_hash
                ),
                None => format!("the contract is now owned by {} (tx {})", done.owner, done.tx.tx_hash),
            };
            print(&tx.output, &done, &text)
        }
        NodeCommand::AcceptOwnership { tx } => {
            let done = tx.session().await?.accept_ownership(tx.contract.contract).await?;
            print(&tx.output, &done, &format!("the contract is now owned by {} (tx {})", done.owner, done.tx.tx_hash))
        }
        NodeCommand::Info { node_or_token, contract, output } => {
            let session = Session::read_only(&contract.chain.rpc_url).await?;
            let token_id = resolve_token(&session, contract.contract, &node_or_token).await?;
            let info = session.info(contract.contract, token_id).await?;
            let s = &info.snapshot;
            let text = format!(
                "token {} node {} key {} active {} owner {} created {} uri {:?}",
                s.token_id,
                s.node_id,
                if s.public_key.is_empty() { "(unbound)" } else { &s.public_key },
                s.is_active,
                s.owner.map_or_else(|| "none".to_string(), |o| o.to_string()),
                s.created_at,
                info.token_uri
            );
            print(&output, &info, &text)
        }
        NodeCommand::List { from_block, contract, output } => {
            let session = Session::read_only(&contract.chain.rpc_url).await?;
            let tokens = session.list(&contract.chain.rpc_url, contract.contract, from_block).await?;
            let text = tokens
                .iter()
                .map(|s| {
                    format!(
                        "{:>6}  {:<24} {:<44} {:<6} {}",
                        s.token_id,
                        s.node_id,
                        if s.public_key.is_empty() { "(unbound)" } else { &s.public_key },
                        if s.is_active { "active" } else { "revoked" },
                        s.owner.map_or_else(|| "none".to_string(), |o| o.to_string())
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            let text = if tokens.is_empty() { format!("no token granted since block {from_block}") } else { text };
            print(&output, &tokens, &text)
        }
    }
}

/// A number is a token id first; if no such token exists it may still be a numeric node id.
async fn resolve_token(session: &Session, contract: Address, node_or_token: &str) -> anyhow::Result<U256> {
    let Ok(token_id) = node_or_token.parse::<U256>() else {
        return session.token_id_of_node(contract, node_or_token).await;
    };
    let as_token = match session.info(contract, token_id).await {
        Ok(_) => return Ok(token_id),
        Err(err) => err,
    };
    session
        .token_id_of_node(contract, node_or_token)
        .await
        .map_err(|_| anyhow::anyhow!("no token {token_id} ({as_token:#}) and no node id {node_or_token:?}"))
}

fn print<T: Serialize>(output: &OutputArgs, value: &T, text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if output.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(value)?)?;
    } else if !text.is_empty() {
        writeln!(stdout, "{text}")?;
    }
    Ok(())
}
