//! The chain a gateway follows is pinned: two real anvils of different chain
//! ids as the two endpoints of one gateway, the same contract at the same
//! address on both (one deployer, one nonce), a token on each. The endpoint
//! of the other chain is refused on connect (log line, metric, `/readyz`
//! detail) and nothing of its state reaches the gateway; a chain id learned
//! on first start is pinned in the state dir and holds on the next start;
//! a contract address without code stops the start with its address and chain.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use gateway_tests::lab::{Lab, DEV_ADDRESSES, HTTP_PORT};
use gateway_tests::netns::{gateway_bin, repo_root, require_root, wait_for, ChildGuard};
use gateway_tests::wg::Keypair;

/// The second anvil, in the gateway's namespace beside the lab's (31337).
const OTHER_PORT: u16 = 8547;
const OTHER_CHAIN: u64 = 1;
const OTHER_RPC: &str = "http://127.0.0.1:8547";

/// An anvil of chain 1 in the lab's gateway namespace, with the access
/// contract deployed by the same account at the same nonce (so at the same
/// address) and a token `impostor` minted on it.
fn other_chain(lab: &Lab) -> Result<ChildGuard> {
    let anvil = repo_root().join("node_modules/.bin/anvil");
    let mut cmd = lab.gw.command(anvil.to_str().context("utf-8")?);
    cmd.args(["--port", &OTHER_PORT.to_string(), "--host", "127.0.0.1", "--chain-id", &OTHER_CHAIN.to_string()])
        .args(["--max-persisted-states", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = ChildGuard::spawn(cmd, "anvil (chain 1)")?;
    wait_for("the chain-1 anvil listening", Duration::from_secs(20), || {
        Ok(lab.gw.within(|| Ok(std::net::TcpStream::connect(("127.0.0.1", OTHER_PORT)).is_ok()))?.then_some(()))
    })?;
    let deployed = other_cli(lab, &["deploy", "--json"])?;
    ensure!(deployed["address"].as_str().is_some_and(|a| a.eq_ignore_ascii_case(&lab.contract)), "the same address on both chains: {deployed}");
    let keys = Keypair::generate(lab.dir.path(), "impostor")?;
    other_cli(lab, &["mint", DEV_ADDRESSES[2], "impostor", "--pubkey", &keys.public, "--json"])?;
    Ok(guard)
}

/// `gateway node` against the chain-1 anvil.
fn other_cli(lab: &Lab, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(gateway_bin())
        .args(["--netns", lab.gw.name(), "node"])
        .args(args)
        .env("GATEWAY_RPC_URL", OTHER_RPC)
        .env("GATEWAY_CONTRACT", &lab.contract)
        .env("GATEWAY_SIGNER_KEY", &lab.signer_files[0])
        .output()?;
    ensure!(out.status.success(), "gateway node {} on chain 1: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn mint_here(lab: &Lab, node: &str) -> Result<()> {
    let keys = Keypair::generate(lab.dir.path(), node)?;
    lab.node_cli(0, &["mint", DEV_ADDRESSES[1], node, "--pubkey", &keys.public, "--json"]).map(|_| ())
}

/// The gateway's log without its colours.
fn log(lab: &Lab) -> String {
    let text = std::fs::read_to_string(lab.log_path()).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn an_endpoint_of_another_chain_is_refused_and_the_right_one_followed() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(0)?;
    let _other = other_chain(&lab)?;
    mint_here(&lab, "node-a")?;
    lab.gateway_env.push(("GATEWAY_CHAIN_CHAIN_ID".into(), "31337".into()));
    // The other chain first: preferred, and refused.
    let both = format!("\"{OTHER_RPC}\", \"ws://127.0.0.1:{}\"", lab.anvil_port());
    lab.start_gateway_full(&both, 100, "")?;

    let (status, body) = lab.http_get("/readyz")?;
    ensure!(status == 200, "ready on the endpoint of chain 31337: {status} {body}");
    ensure!(body.contains(&format!("{OTHER_RPC} serves chain 1, not chain 31337: refused")), "/readyz names the refused endpoint: {body}");
    let refused = lab.metric(&format!("gw_chain_endpoint_wrong_chain_total{{endpoint=\"{OTHER_RPC}\"}}"))?;
    ensure!(refused >= 1.0, "the refusal is counted: {refused}");
    let text = log(&lab);
    ensure!(
        text.lines().any(|l| l.contains("RPC endpoint serves another chain: refused") && l.contains(OTHER_RPC) && l.contains("served_chain_id=1")),
        "a log line names the endpoint and its chain:\n{text}"
    );
    let (_, peers) = lab.http_get("/v1/peers")?;
    ensure!(peers.contains("node-a") && !peers.contains("impostor"), "only chain 31337's token: {peers}");
    Ok(())
}

#[test]
fn a_learned_chain_id_is_pinned_and_holds_on_the_next_start() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(0)?;
    let _other = other_chain(&lab)?;
    mint_here(&lab, "node-a")?;
    // No chain.chain_id: the first start learns it from the endpoint.
    lab.start_gateway("")?;
    let pin = lab.dir.path().join("state/chain_id");
    ensure!(std::fs::read_to_string(&pin)? == "31337\n", "pinned in the state dir");
    ensure!(log(&lab).contains("CHAIN ID PINNED"), "said loudly:\n{}", log(&lab));
    lab.stop_gateway()?;

    // Next start with only the other chain's endpoint: refused, never ready,
    // and its token never admitted.
    let config = lab.gateway_config(OTHER_RPC, 100, "");
    std::fs::write(&lab.config_path, config)?;
    let log_file = std::fs::OpenOptions::new().append(true).open(lab.log_path())?;
    let mut cmd = Command::new(gateway_bin());
    cmd.args(["--netns", lab.gw.name(), "run", "--config"])
        .arg(&lab.config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file));
    let mut gateway = ChildGuard::spawn(cmd, "gateway run")?;
    let body = wait_for("/readyz naming the refused endpoint", Duration::from_secs(30), || {
        ensure!(gateway.is_running(), "the gateway exited:\n{}", log(&lab));
        Ok(match gateway_tests::lab::http_get_in(&lab.gw, HTTP_PORT, "/readyz") {
            Ok((503, body)) if body.contains("serves chain 1, not chain 31337: refused") => Some(body),
            _ => None,
        })
    })?;
    ensure!(body.starts_with("not ready"), "{body}");
    let (_, peers) = gateway_tests::lab::http_get_in(&lab.gw, HTTP_PORT, "/v1/peers")?;
    ensure!(!peers.contains("impostor"), "{peers}");
    gateway.terminate(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn a_contract_address_without_code_stops_the_start_naming_it_and_the_chain() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(0)?;
    // An address of an account, not a contract.
    lab.contract = DEV_ADDRESSES[2].to_string();
    lab.gateway_env.push(("GATEWAY_CHAIN_CHAIN_ID".into(), "31337".into()));
    let err = lab.start_gateway("").expect_err("no contract: the start fails");
    let text = format!("{err:#}");
    ensure!(
        text.contains(&format!("no contract at {}", DEV_ADDRESSES[2].to_ascii_lowercase())) && text.contains("on chain 31337"),
        "{text}"
    );
    Ok(())
}
