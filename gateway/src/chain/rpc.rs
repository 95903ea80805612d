//! A pool of RPC endpoints with failover and exponential backoff (I/O edge).
//! Every failure is logged with the endpoint that produced it.

use std::future::Future;
use std::time::{Duration, Instant};

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Header;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::backoff::{try_order, Backoff, EndpointHealth};

/// A hung endpoint must not stall the follower; a healthy node answers a
/// 2,000-block `eth_getLogs` well within this.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

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
    provider: Option<DynProvider>,
    health: EndpointHealth,
}

impl Endpoint {
    fn is_pubsub(&self) -> bool {
        self.url.starts_with("ws://") || self.url.starts_with("wss://")
    }
}

pub struct RpcPool {
    endpoints: Vec<Endpoint>,
    current: usize,
    backoff: Backoff,
    call_timeout: Duration,
}

impl RpcPool {
    pub fn new(urls: &[String], backoff: Backoff, call_timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "at least one RPC URL is required");
        let endpoints = urls
            .iter()
            .map(|url| Endpoint { url: url.trim().to_string(), provider: None, health: EndpointHealth::default() })
            .collect();
        Ok(Self { endpoints, current: 0, backoff, call_timeout })
    }

    pub fn current_url(&self) -> &str {
        &self.endpoints[self.current].url
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
        for index in try_order(&self.health(), self.current, Instant::now()) {
            let provider = match self.connect(index).await {
                Ok(provider) => provider,
                Err(err) => {
                    last = err;
                    self.fail(index, what, &last);
                    continue;
                }
            };
            let outcome = match tokio::time::timeout(self.call_timeout, op(provider)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(CallError::Transport(format!("timed out after {:?}", self.call_timeout))),
            };
            match outcome {
                Ok(value) => {
                    self.succeed(index);
                    return Ok(value);
                }
                Err(CallError::Rejected(message)) => {
                    // The endpoint is alive: it answered.
                    self.succeed(index);
                    return Err(RpcError::Rejected { endpoint: self.endpoints[index].url.clone(), what, message });
                }
                Err(CallError::Transport(message)) => {
                    last = message;
                    self.fail(index, what, &last);
                }
            }
        }
        Err(RpcError::AllDown { what, last })
    }

    /// New block headers from the current endpoint, when it is a WebSocket.
    pub async fn subscribe_heads(&mut self) -> Option<BoxStream<'static, Header>> {
        let index = self.current;
        if !self.endpoints[index].is_pubsub() {
            return None;
        }
        let provider = self.connect(index).await.ok()?;
        match provider.subscribe_blocks().await {
            Ok(subscription) => Some(subscription.into_stream().boxed()),
            Err(err) => {
                tracing::warn!(endpoint = %self.endpoints[index].url, error = %err, "subscribing to new heads failed; polling");
                None
            }
        }
    }

    fn health(&self) -> Vec<EndpointHealth> {
        self.endpoints.iter().map(|e| e.health.clone()).collect()
    }

    async fn connect(&mut self, index: usize) -> Result<DynProvider, String> {
        let endpoint = &mut self.endpoints[index];
        if let Some(provider) = &endpoint.provider {
            return Ok(provider.clone());
        }
        let connecting = ProviderBuilder::new().connect(&endpoint.url);
        let provider = match tokio::time::timeout(self.call_timeout, connecting).await {
            Ok(Ok(provider)) => provider.erased(),
            Ok(Err(err)) => return Err(format!("connecting: {err}")),
            Err(_) => return Err(format!("connecting timed out after {:?}", self.call_timeout)),
        };
        endpoint.provider = Some(provider.clone());
        Ok(provider)
    }

    fn succeed(&mut self, index: usize) {
        if index != self.current {
            tracing::warn!(from = %self.endpoints[self.current].url, to = %self.endpoints[index].url, "RPC failover");
        }
        self.current = index;
        self.endpoints[index].health.record_success();
    }

    fn fail(&mut self, index: usize, what: &'static str, error: &str) {
        let endpoint = &mut self.endpoints[index];
        tracing::warn!(endpoint = %endpoint.url, call = what, error = %error, "RPC call failed");
        endpoint.health.record_failure(&self.backoff, Instant::now());
        // A broken WebSocket stays broken: reconnect on the next attempt.
        endpoint.provider = None;
    }
}
