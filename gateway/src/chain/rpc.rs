//! RPC endpoints tried in order, for one-off typed reads (`gateway node`,
//! the start-up identity check, benches) (I/O edge): the first that answers
//! serves the call, those that failed lately are tried last (the core's
//! backoff), and each connection's `eth_chainId` is checked. Every failure
//! is logged with the endpoint that produced it. The follower's endpoints
//! (failover, looking back at preferred ones, rate limits) are owned by its
//! state machine in `gateway_core::chain::follower`; nothing here repeats that.

use std::future::Future;
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};

use alloy::primitives::{Address, U256};

use gateway_core::chain::backoff::{try_order, Backoff, EndpointHealth};
use gateway_core::chain::chain_id::{check_endpoint, EndpointChain};
use gateway_core::chain::endpoints::redact_url;
use gateway_core::chain::{ChainEvent, TokenId, TokenSnapshot};

use super::contract::DstackAccessNFT;

pub use gateway_core::chain::follower::DEFAULT_CALL_TIMEOUT;

/// How one attempt on one endpoint failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// No answer: connection refused or dropped, timeout, garbage. Try another endpoint.
    Transport(String),
    /// The node answered with an error (a revert, a range it refuses). Another
    /// endpoint would most likely say the same, so the caller decides.
    Rejected(String),
}

impl From<alloy::transports::TransportError> for CallError {
    fn from(err: alloy::transports::TransportError) -> Self {
        if err.is_error_resp() {
            CallError::Rejected(err.to_string())
        } else {
            CallError::Transport(err.to_string())
        }
    }
}

impl From<alloy::contract::Error> for CallError {
    fn from(err: alloy::contract::Error) -> Self {
        if super::contract::is_revert(&err) {
            CallError::Rejected(super::contract::revert_reason(&err).unwrap_or_else(|| err.to_string()))
        } else {
            CallError::Transport(err.to_string())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{endpoint} rejected {what}: {message}")]
    Rejected { endpoint: String, what: &'static str, message: String },
    #[error("no RPC endpoint answered {what} (last error: {last})")]
    AllDown { what: &'static str, last: String },
}

struct Endpoint {
    url: String,
    /// What logs and errors show: provider URLs often carry an API key in the path or query.
    label: String,
    provider: Option<DynProvider>,
    health: EndpointHealth,
}

impl Endpoint {
    fn is_pubsub(&self) -> bool {
        self.url.starts_with("ws://") || self.url.starts_with("wss://")
    }
}

/// Endpoints in order of preference (the configuration's). Calls go to the
/// current one and on to the others when it does not answer.
pub struct RpcPool {
    endpoints: Vec<Endpoint>,
    current: usize,
    backoff: Backoff,
    call_timeout: Duration,
    /// The chain every endpoint must serve (`eth_chainId` on connect); `None`
    /// until the first endpoint that answers sets it.
    chain_id: Option<u64>,
    /// Where each connect's chain check is reported (`ChainEvent::EndpointChecked`).
    chain_reports: Option<tokio::sync::mpsc::Sender<ChainEvent>>,
}

impl RpcPool {
    pub fn new(urls: &[String], backoff: Backoff, call_timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "at least one RPC URL is required");
        let endpoints = urls
            .iter()
            .map(|url| Endpoint {
                url: url.trim().to_string(),
                label: redact_url(url.trim()),
                provider: None,
                health: EndpointHealth::default(),
            })
            .collect();
        Ok(Self { endpoints, current: 0, backoff, call_timeout, chain_id: None, chain_reports: None })
    }

    /// Every endpoint must serve `chain_id` (learned from the first that
    /// answers when `None`); each check is reported on `reports`.
    pub fn with_chain_check(mut self, chain_id: Option<u64>, reports: Option<tokio::sync::mpsc::Sender<ChainEvent>>) -> Self {
        self.chain_id = chain_id;
        self.chain_reports = reports;
        self
    }

    /// The chain the endpoints serve: configured, or learned on the first connect.
    pub fn chain_id(&self) -> Option<u64> {
        self.chain_id
    }

    /// The current endpoint, redacted for logs.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.current].label
    }

    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Runs `op` on the current endpoint, failing over to the others in turn.
    pub async fn call<T, F, Fut>(&mut self, what: &'static str, op: F) -> Result<T, RpcError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut last = String::from("no endpoint tried");
        for index in try_order(&self.health(), self.current, mono_now()) {
            match self.attempt(index, what, self.call_timeout, &op).await {
                Ok(value) => {
                    self.succeed(index);
                    return Ok(value);
                }
                Err(CallError::Rejected(message)) => {
                    // The endpoint is alive: it answered.
                    self.succeed(index);
                    return Err(RpcError::Rejected { endpoint: self.endpoints[index].label.clone(), what, message });
                }
                Err(CallError::Transport(message)) => last = message,
            }
        }
        Err(RpcError::AllDown { what, last })
    }

    fn health(&self) -> Vec<EndpointHealth> {
        self.endpoints.iter().map(|e| e.health.clone()).collect()
    }

    /// `op` on endpoint `index`: connecting, then the call, each within
    /// `timeout`. A transport failure is recorded against the endpoint; what
    /// a success or a rejection means is the caller's to say.
    async fn attempt<T, F, Fut>(&mut self, index: usize, what: &'static str, timeout: Duration, op: &F) -> Result<T, CallError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let outcome = match self.connect(index, timeout).await {
            Ok(provider) => match tokio::time::timeout(timeout, op(provider)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(CallError::Transport(format!("timed out after {timeout:?}"))),
            },
            Err(err) => Err(CallError::Transport(err)),
        };
        if let Err(CallError::Transport(message)) = &outcome {
            self.fail(index, what, message);
        }
        outcome
    }

    async fn connect(&mut self, index: usize, timeout: Duration) -> Result<DynProvider, String> {
        let endpoint = &mut self.endpoints[index];
        if let Some(provider) = &endpoint.provider {
            return Ok(provider.clone());
        }
        let provider = if endpoint.is_pubsub() {
            // No reconnecting inside alloy: its retries hold our calls until they
            // time out, while the pool would have failed over at once and
            // reconnects by itself after backoff.
            let connect = alloy::providers::WsConnect::new(endpoint.url.clone()).with_max_retries(0);
            tokio::time::timeout(timeout, ProviderBuilder::new().connect_ws(connect))
                .await
                .map(|connected| connected.map(|p| p.erased()))
        } else {
            tokio::time::timeout(timeout, ProviderBuilder::new().connect(&endpoint.url))
                .await
                .map(|connected| connected.map(|p| p.erased()))
        };
        let provider = match provider {
            Ok(Ok(provider)) => provider,
            Ok(Err(err)) => return Err(redact_error(&format!("connecting: {err}"), &endpoint.url, &endpoint.label)),
            Err(_) => return Err(format!("connecting timed out after {timeout:?}")),
        };
        self.check_chain(index, &provider, timeout).await?;
        self.endpoints[index].provider = Some(provider.clone());
        Ok(provider)
    }

    /// `eth_chainId` on a fresh connection: an endpoint of another chain is
    /// refused (as a failed connect: the pool moves on and retries it after
    /// backoff, checking again), with a log line and a report.
    async fn check_chain(&mut self, index: usize, provider: &DynProvider, timeout: Duration) -> Result<(), String> {
        let served = match tokio::time::timeout(timeout, provider.get_chain_id()).await {
            Ok(Ok(served)) => served,
            Ok(Err(err)) => {
                let endpoint = &self.endpoints[index];
                return Err(redact_error(&format!("eth_chainId: {err}"), &endpoint.url, &endpoint.label));
            }
            Err(_) => return Err(format!("eth_chainId timed out after {timeout:?}")),
        };
        let label = self.endpoints[index].label.clone();
        let verdict = check_endpoint(&mut self.chain_id, served);
        if let Some(reports) = &self.chain_reports {
            let expected = self.chain_id.unwrap_or(served);
            // Never blocks the follower: a full channel loses a report, never an event.
            let _ = reports.try_send(ChainEvent::EndpointChecked { endpoint: label.clone(), expected, served });
        }
        match verdict {
            EndpointChain::Expected => Ok(()),
            EndpointChain::Learned(chain_id) => {
                tracing::warn!(endpoint = %label, chain_id, "no chain id configured: following the chain this endpoint serves; every other endpoint must serve it too");
                Ok(())
            }
            EndpointChain::Other { expected, served } => {
                tracing::error!(endpoint = %label, expected_chain_id = expected, served_chain_id = served, "RPC endpoint serves another chain: refused");
                Err(format!("serves chain {served}, not chain {expected}: refused"))
            }
        }
    }

    fn succeed(&mut self, index: usize) {
        if index != self.current {
            let (from, to) = (&self.endpoints[self.current].label, &self.endpoints[index].label);
            if index < self.current {
                tracing::info!(%from, %to, "RPC endpoint: back to a preferred one");
            } else {
                tracing::warn!(%from, %to, "RPC failover");
            }
            self.current = index;
        }
        self.endpoints[index].health.record_success();
    }

    fn fail(&mut self, index: usize, what: &'static str, error: &str) {
        let endpoint = &mut self.endpoints[index];
        tracing::warn!(endpoint = %endpoint.label, call = what, error = %redact_error(error, &endpoint.url, &endpoint.label), "RPC call failed");
        endpoint.health.record_failure(&self.backoff, mono_now());
        // A broken WebSocket stays broken: reconnect on the next attempt.
        endpoint.provider = None;
    }
}

fn mono_now() -> gateway_core::time::MonoTime {
    gateway_core::time::MonoTime::from_nanos(crate::xdp::monotonic_now_ns())
}

/// Transport errors quote the URL they failed on; show the redacted one instead.
fn redact_error(error: &str, url: &str, label: &str) -> String {
    error.replace(url, label).replace(url.trim_end_matches('/'), label)
}

pub async fn latest_block(rpc: &mut RpcPool) -> Result<u64, RpcError> {
    rpc.call("eth_blockNumber", |p| async move { Ok(p.get_block_number().await?) }).await
}

/// Reads one token's state (`getNodeAccess`, `ownerOf`) at `block_number`
/// (both calls see the same state). A token the contract does not know (never
/// minted, burned, reorged out) is an inactive snapshot with no owner, not an error.
pub async fn read_token(
    rpc: &mut RpcPool,
    contract: Address,
    token_id: TokenId,
    block_number: u64,
) -> Result<TokenSnapshot, RpcError> {
    let id = U256::from(token_id);
    let access = rpc
        .call("getNodeAccess", |p| async move {
            let access = DstackAccessNFT::new(contract, p).getNodeAccess(id).block(block_number.into()).call().await?;
            Ok((access.nodeId, access.wireguardPublicKey, access.createdAt, access.isActive))
        })
        .await;
    let (node_id, public_key, created_at, is_active) = match access {
        Ok(access) => access,
        Err(RpcError::Rejected { .. }) => (String::new(), String::new(), U256::ZERO, false),
        Err(err) => return Err(err),
    };
    let owner = rpc
        .call("ownerOf", |p| async move {
            match DstackAccessNFT::new(contract, p).ownerOf(id).block(block_number.into()).call().await {
                Ok(owner) => Ok(Some(gateway_core::chain::Address::from(owner))),
                Err(err) => match CallError::from(err) {
                    CallError::Rejected(_) => Ok(None),
                    transport => Err(transport),
                },
            }
        })
        .await?;
    Ok(TokenSnapshot {
        token_id,
        node_id,
        public_key,
        created_at: u64::try_from(created_at).unwrap_or(u64::MAX),
        is_active,
        owner,
        block_number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_redacted_url() {
        let error = "error sending request for url (https://rpc.example/v2/SECRET)";
        let url = "https://rpc.example/v2/SECRET";
        assert!(!redact_error(error, url, &redact_url(url)).contains("SECRET"));
    }
}
