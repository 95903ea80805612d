//! A deterministic simulation of the follower (tests only), in the spirit
//! of quinn's `Pair`: a simulated chain running the reference contract's
//! rules, with reorganisations at chosen depths; endpoints that fail, hang,
//! lag behind (serving an older version of the chain, abandoned forks
//! included), refuse wide log ranges or report a stale head, and refuse
//! as hosted providers do (a suggested range, a result cap, a rate limit
//! with or without `Retry-After`, a wide range that times out); a
//! simulated clock. No socket, no thread, no sleep: a scenario is a function of its
//! seed. `FOLLOWER_SEED=n FOLLOWER_TRACE=1 cargo test -p gateway-core
//! random_scenarios` replays seed `n` with every request and event on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Bytes, U256};
use alloy_sol_types::{SolCall, SolEvent};

use super::{Follower, FollowerConfig, StartState};
use crate::chain::abi::{DstackAccessNFT, RawLog};
use crate::chain::backoff::Backoff;
use crate::chain::confirm::confirmed_height;
use crate::chain::ids::{Address, BlockHash, TokenId, TxHash};
use crate::chain::rpc::{BlockTag, RpcCall, RpcFailure, RpcReply, RpcRequest, RpcResult};
use crate::chain::ChainEvent;
use crate::registry::{Network, Registry, WgKey};
use crate::time::MonoTime;

/// A small deterministic generator (SplitMix64): scenarios replay from their seed.
#[derive(Clone, Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub(super) const CONTRACT: Address = Address([0xc0; 20]);

/// A token as the reference contract stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TokenState {
    pub node_id: String,
    pub key: String,
    pub owner: Address,
    pub active: bool,
}

/// What a key's binding to a token looks like to the registry: the pair the
/// registry admits when the token is active and owned.
pub(super) type Binding = (TokenId, String);

#[derive(Debug)]
pub(super) struct Block {
    pub number: u64,
    pub hash: BlockHash,
    pub logs: Vec<RawLog>,
    pub state: BTreeMap<TokenId, TokenState>,
    pub next_token: TokenId,
    /// The bindings granted after any of the block's transactions: a key a
    /// later transaction of the same block replaced was granted too, by a
    /// transaction as confirmed as the block.
    pub granted_by_txs: BTreeSet<Binding>,
}

/// The bindings the registry may admit from a state.
fn granted_in(state: &BTreeMap<TokenId, TokenState>) -> BTreeSet<Binding> {
    state
        .iter()
        .filter(|(_, t)| t.active && !t.owner.is_zero() && !t.key.is_empty())
        .map(|(id, t)| (*id, t.key.clone()))
        .collect()
}

impl Block {
    /// The bindings granted in the state after the block.
    pub(super) fn granted(&self) -> BTreeSet<Binding> {
        granted_in(&self.state)
    }
}

/// One version of the chain: the canonical blocks from genesis to the head
/// as a node saw them at some moment.
pub(super) type Version = Arc<Vec<Arc<Block>>>;

pub(super) fn owner(n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0x0a;
    bytes[19] = n as u8;
    Address(bytes)
}

pub(super) fn key(n: u64) -> String {
    WgKey([n as u8; 32]).to_base64()
}

/// A contract action in a block.
#[derive(Clone, Copy, Debug)]
pub(super) enum Tx {
    Mint { owner: u64, key: u64 },
    Revoke { token: TokenId },
    Transfer { token: TokenId, to: u64 },
    Rekey { token: TokenId, key: u64 },
}

pub(super) struct SimChain {
    pub versions: Vec<Version>,
    /// Distinguishes the blocks of different forks at the same height.
    forks: u64,
    /// Every binding that some version's confirmed part ever showed an
    /// endpoint's client (see the module tests' definition of "granted").
    pub ever_granted: BTreeSet<Binding>,
    /// Per version: the confirmed height up to which `ever_granted` has it.
    counted_up_to: BTreeMap<usize, u64>,
    pub confirmations: u64,
}

impl SimChain {
    pub(super) fn new(confirmations: u64) -> Self {
        let genesis = Block { number: 0, hash: block_hash(0, 0), logs: Vec::new(), state: BTreeMap::new(), next_token: 1, granted_by_txs: BTreeSet::new() };
        SimChain {
            versions: vec![Arc::new(vec![Arc::new(genesis)])],
            forks: 0,
            ever_granted: BTreeSet::new(),
            counted_up_to: BTreeMap::new(),
            confirmations,
        }
    }

    pub(super) fn current(&self) -> &Version {
        self.versions.last().expect("genesis")
    }

    pub(super) fn head(&self) -> u64 {
        self.current().len() as u64 - 1
    }

    /// Mines one block on the current head with `txs` (those the contract
    /// would refuse are left out, as a reverted transaction logs nothing).
    pub(super) fn mine(&mut self, txs: &[Tx]) {
        let mut blocks: Vec<Arc<Block>> = self.current().as_ref().clone();
        let parent = blocks.last().expect("genesis").clone();
        blocks.push(Arc::new(self.build(&parent, txs)));
        self.versions.push(Arc::new(blocks));
    }

    /// Replaces the last `depth` blocks with `replacement.len()` new ones.
    pub(super) fn reorg(&mut self, depth: u64, replacement: &[Vec<Tx>]) {
        self.forks += 1;
        let mut blocks: Vec<Arc<Block>> = self.current().as_ref().clone();
        let keep = blocks.len().saturating_sub(depth as usize).max(1);
        blocks.truncate(keep);
        for txs in replacement {
            let parent = blocks.last().expect("genesis").clone();
            blocks.push(Arc::new(self.build(&parent, txs)));
        }
        self.versions.push(Arc::new(blocks));
    }

    fn build(&self, parent: &Block, txs: &[Tx]) -> Block {
        let number = parent.number + 1;
        let hash = block_hash(number, self.forks);
        let mut state = parent.state.clone();
        let mut next_token = parent.next_token;
        let mut logs = Vec::new();
        let mut granted_by_txs = granted_in(&state);
        let key_taken = |state: &BTreeMap<TokenId, TokenState>, key: &str| state.values().any(|t| t.active && t.key == key);
        for (i, tx) in txs.iter().enumerate() {
            let tx_hash = tx_hash(number, self.forks, i as u64);
            let mut log = |data: alloy_primitives::LogData| {
                let (topics, data) = data.split();
                logs.push(RawLog {
                    address: CONTRACT,
                    topics,
                    data,
                    block_number: Some(number),
                    block_hash: Some(hash),
                    tx_hash: Some(tx_hash),
                    log_index: Some(logs.len() as u64),
                    removed: false,
                });
            };
            match *tx {
                Tx::Mint { owner: o, key: k } => {
                    if key_taken(&state, &key(k)) {
                        continue;
                    }
                    let token = next_token;
                    next_token += 1;
                    let node_id = format!("node-{token}");
                    state.insert(token, TokenState { node_id: node_id.clone(), key: key(k), owner: owner(o), active: true });
                    // The standard ERC-721 event too: the follower must filter it out.
                    log(DstackAccessNFT::Transfer { from: alloy_primitives::Address::ZERO, to: owner(o).into(), tokenId: U256::from(token) }.encode_log_data());
                    log(DstackAccessNFT::NodeAccessGranted {
                        tokenId: U256::from(token),
                        nodeId: node_id,
                        owner: owner(o).into(),
                        wireguardPublicKey: key(k),
                    }
                    .encode_log_data());
                }
                Tx::Revoke { token } => {
                    let Some(t) = state.get_mut(&token).filter(|t| t.active) else { continue };
                    t.active = false;
                    log(DstackAccessNFT::NodeAccessRevoked { tokenId: U256::from(token), nodeId: t.node_id.clone() }.encode_log_data());
                }
                Tx::Transfer { token, to } => {
                    let Some(t) = state.get_mut(&token).filter(|t| t.owner != owner(to)) else { continue };
                    let from = t.owner;
                    t.owner = owner(to);
                    t.key.clear();
                    log(DstackAccessNFT::Transfer { from: from.into(), to: owner(to).into(), tokenId: U256::from(token) }.encode_log_data());
                    log(DstackAccessNFT::NodeAccessTransferred { tokenId: U256::from(token), from: from.into(), to: owner(to).into() }.encode_log_data());
                }
                Tx::Rekey { token, key: k } => {
                    if key_taken(&state, &key(k)) {
                        continue;
                    }
                    let Some(t) = state.get_mut(&token).filter(|t| t.active) else { continue };
                    t.key = key(k);
                    let owner = t.owner;
                    log(DstackAccessNFT::PublicKeyUpdated { owner: owner.into(), wireguardPublicKey: key(k) }.encode_log_data());
                }
            }
            granted_by_txs.extend(granted_in(&state));
        }
        Block { number, hash, logs, state, next_token, granted_by_txs }
    }

    /// Counts what version `index` shows as confirmed into `ever_granted`.
    fn served(&mut self, index: usize) {
        let version = self.versions[index].clone();
        let head = version.len() as u64 - 1;
        let confirmed = confirmed_height(head, self.confirmations);
        let from = self.counted_up_to.get(&index).map_or(0, |n| n + 1);
        for n in from..=confirmed {
            self.ever_granted.extend(version[n as usize].granted_by_txs.iter().cloned());
        }
        self.counted_up_to.insert(index, confirmed);
    }

    /// The bindings the registry must hold once everything has settled on
    /// the current version: bound at the confirmed height and still at the head.
    pub(super) fn settled_grants(&self) -> BTreeSet<Binding> {
        let version = self.current();
        let head = version.len() as u64 - 1;
        let confirmed = version[confirmed_height(head, self.confirmations) as usize].granted();
        let at_head = version[head as usize].granted();
        confirmed.intersection(&at_head).cloned().collect()
    }
}

fn block_hash(number: u64, fork: u64) -> BlockHash {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&number.to_be_bytes());
    bytes[8..16].copy_from_slice(&fork.to_be_bytes());
    bytes[31] = 0xb1;
    BlockHash(bytes)
}

fn tx_hash(number: u64, fork: u64, index: u64) -> TxHash {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&number.to_be_bytes());
    bytes[8..16].copy_from_slice(&fork.to_be_bytes());
    bytes[16..24].copy_from_slice(&index.to_be_bytes());
    TxHash(bytes)
}

/// How one simulated endpoint misbehaves right now.
#[derive(Clone, Debug, Default)]
pub(super) struct Faults {
    /// Refuses connections.
    pub down: bool,
    /// Accepts and never answers (the follower's timeout fires).
    pub hung: bool,
    /// Serves the chain as it was this many versions ago.
    pub lag_versions: usize,
    /// Reports a head this many blocks below the one it serves.
    pub stale_head: u64,
    /// Refuses `eth_getLogs` over more blocks than this.
    pub max_range: Option<u64>,
    /// Drops this percentage of calls.
    pub flaky_percent: u64,
    /// Now a node of another chain (chain id 1, nothing at the contract):
    /// the URL points elsewhere, so the connection breaks once first.
    pub other_chain: bool,
    /// Answers this percentage of calls with Base's 429 ("over rate limit").
    pub rate_limited_percent: u64,
    /// The next this many calls get the 429, whatever the percentage.
    pub rate_limit_next: u32,
    /// The 429's `Retry-After`.
    pub retry_after: Option<Duration>,
    /// Alchemy's free tier: `eth_getLogs` over more blocks than this is
    /// refused with the range that fits.
    pub suggests_range: Option<u64>,
    /// Infura's result cap: an answer over this many logs is refused.
    pub max_results: Option<u64>,
    /// `eth_getLogs` over more blocks than this never answers in time.
    pub slow_range: Option<u64>,
}

pub(super) struct SimEndpoint {
    pub pubsub: bool,
    pub faults: Faults,
    pub subscribed: bool,
    /// The next call fails as a broken connection.
    pub reset: bool,
}

impl SimEndpoint {
    /// The answer to `request` and how long it takes to arrive.
    fn answer(&mut self, chain: &mut SimChain, request: &RpcRequest, rng: &mut Rng) -> (Duration, RpcResult) {
        let latency = Duration::from_millis(1 + rng.below(40));
        if self.faults.down {
            return (Duration::from_millis(1), Err(RpcFailure::Refused { message: "connection refused".into() }));
        }
        if self.faults.hung {
            return (request.timeout, Err(RpcFailure::Timeout { after: request.timeout }));
        }
        if std::mem::take(&mut self.reset) || rng.chance(self.faults.flaky_percent) {
            return (latency, Err(RpcFailure::Transport { message: "connection reset".into() }));
        }
        if self.faults.rate_limit_next > 0 || rng.chance(self.faults.rate_limited_percent) {
            self.faults.rate_limit_next = self.faults.rate_limit_next.saturating_sub(1);
            let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32016,"message":"over rate limit"}}"#.to_string();
            return (Duration::from_millis(1), Err(RpcFailure::Http { status: 429, retry_after: self.faults.retry_after, body }));
        }
        if let RpcCall::GetLogs { from, to, .. } = &request.call {
            if self.faults.slow_range.is_some_and(|slow| to.saturating_sub(*from) + 1 > slow) {
                return (request.timeout, Err(RpcFailure::Timeout { after: request.timeout }));
            }
        }
        if self.faults.other_chain {
            let result = match &request.call {
                RpcCall::ChainId => Ok(RpcReply::ChainId(1)),
                RpcCall::BlockNumber => Ok(RpcReply::BlockNumber(0)),
                RpcCall::BlockHash { number } => Ok(RpcReply::BlockHash((*number == 0).then(|| block_hash(0, u64::MAX)))),
                RpcCall::GetLogs { .. } => Ok(RpcReply::Logs(Vec::new())),
                RpcCall::GetCode { .. } => Ok(RpcReply::Code(Bytes::new())),
                RpcCall::Call { .. } => contract_call(&BTreeMap::new(), &[]),
                RpcCall::SubscribeHeads => Ok(RpcReply::Subscribed),
            };
            return (latency, result);
        }
        let index = chain.versions.len().saturating_sub(1 + self.faults.lag_versions);
        let version = chain.versions[index].clone();
        let head = version.len() as u64 - 1;
        let result = match &request.call {
            RpcCall::ChainId => Ok(RpcReply::ChainId(31_337)),
            RpcCall::GetCode { .. } => Ok(RpcReply::Code(Bytes::from(vec![0x60]))),
            RpcCall::BlockNumber => Ok(RpcReply::BlockNumber(head.saturating_sub(self.faults.stale_head))),
            RpcCall::BlockHash { number } => Ok(RpcReply::BlockHash(version.get(*number as usize).map(|b| b.hash))),
            RpcCall::GetLogs { address, topics, from, to } => {
                let width = to.saturating_sub(*from) + 1;
                if self.faults.max_range.is_some_and(|max| width > max) {
                    Err(RpcFailure::JsonRpc { code: -32005, message: "query exceeds max block range".into(), data: None })
                } else if let Some(fits) = self.faults.suggests_range.filter(|&fits| width > fits) {
                    let message = format!(
                        "You can make eth_getLogs requests with up to a {fits} block range. Based on your parameters, this block range should work: [{from:#x}, {:#x}]",
                        from + fits - 1
                    );
                    Err(RpcFailure::JsonRpc { code: -32600, message, data: None })
                } else {
                    let logs = version
                        .iter()
                        .filter(|b| b.number >= *from && b.number <= *to)
                        .flat_map(|b| b.logs.iter())
                        .filter(|l| l.address == *address && l.topics.first().is_some_and(|t| topics.contains(t)))
                        .cloned()
                        .collect::<Vec<_>>();
                    match self.faults.max_results {
                        Some(max) if logs.len() as u64 > max => {
                            Err(RpcFailure::JsonRpc { code: -32005, message: format!("query returned more than {max} results"), data: None })
                        }
                        _ => Ok(RpcReply::Logs(logs)),
                    }
                }
            }
            RpcCall::Call { to, data, block } => {
                let number = match block {
                    BlockTag::Latest => head,
                    BlockTag::Number(n) => *n,
                };
                match version.get(number as usize) {
                    None => Err(RpcFailure::JsonRpc { code: -32000, message: "header not found".into(), data: None }),
                    // The contract is deployed in block 1: before, its address holds no code.
                    Some(_) if *to != CONTRACT || number == 0 => Ok(RpcReply::Call(Bytes::new())),
                    Some(block) => contract_call(&block.state, data),
                }
            }
            RpcCall::SubscribeHeads => {
                if self.pubsub {
                    self.subscribed = true;
                    Ok(RpcReply::Subscribed)
                } else {
                    Err(RpcFailure::JsonRpc { code: -32601, message: "method not found".into(), data: None })
                }
            }
        };
        if result.is_ok() {
            chain.served(index);
        }
        (latency, result)
    }
}

/// `getNodeAccess` and `ownerOf` as the reference contract answers them.
fn contract_call(state: &BTreeMap<TokenId, TokenState>, data: &[u8]) -> RpcResult {
    let revert = || Err(RpcFailure::JsonRpc { code: 3, message: "execution reverted".into(), data: Some("0x7e273289".into()) });
    if let Ok(call) = DstackAccessNFT::getNodeAccessCall::abi_decode(data) {
        let Some(t) = u128::try_from(call.tokenId).ok().and_then(|id| state.get(&id)) else { return revert() };
        let returned = DstackAccessNFT::getNodeAccessCall::abi_encode_returns(&DstackAccessNFT::getNodeAccessReturn {
            nodeId: t.node_id.clone(),
            wireguardPublicKey: t.key.clone(),
            createdAt: U256::from(1_700_000_000u64),
            isActive: t.active,
        });
        return Ok(RpcReply::Call(returned.into()));
    }
    if let Ok(call) = DstackAccessNFT::ownerOfCall::abi_decode(data) {
        let Some(t) = u128::try_from(call.tokenId).ok().and_then(|id| state.get(&id)) else { return revert() };
        return Ok(RpcReply::Call(DstackAccessNFT::ownerOfCall::abi_encode_returns(&t.owner.into()).into()));
    }
    revert()
}

/// Something that happens at a moment of a scenario.
#[derive(Clone, Debug)]
pub(super) enum Happening {
    Mine(Vec<Tx>),
    Reorg { depth: u64, replacement: Vec<Vec<Tx>> },
    Faults { endpoint: usize, faults: Faults },
}

/// The follower, the chain, the endpoints and the consumer (a registry),
/// driven by one clock.
pub(super) struct Harness {
    pub follower: Follower,
    pub chain: SimChain,
    pub endpoints: Vec<SimEndpoint>,
    pub registry: Registry,
    pub events: Vec<ChainEvent>,
    pub now: MonoTime,
    pub script: VecDeque<(MonoTime, Happening)>,
    pub requests: u64,
    /// Every request made and whether it was answered, in order.
    pub calls: Vec<SimCall>,
    rng: Rng,
}

/// One request as the endpoint saw it.
#[derive(Clone, Debug)]
pub(super) struct SimCall {
    pub at: MonoTime,
    pub endpoint: usize,
    pub call: RpcCall,
    /// The failure, when it was not answered.
    pub failure: Option<RpcFailure>,
}

impl SimCall {
    /// An `eth_getLogs`'s range.
    pub(super) fn logs_range(&self) -> Option<(u64, u64)> {
        match self.call {
            RpcCall::GetLogs { from, to, .. } => Some((from, to)),
            _ => None,
        }
    }
}

pub(super) fn network() -> Network {
    Network { cidr: "10.64.0.0/16".parse().expect("cidr"), dns_server: std::net::Ipv4Addr::new(10, 64, 0, 1) }
}

impl Harness {
    pub(super) fn new(config: FollowerConfig, start: StartState, chain: SimChain, pubsub: &[bool], seed: u64) -> Self {
        let endpoints = pubsub.iter().map(|&p| SimEndpoint { pubsub: p, faults: Faults::default(), subscribed: false, reset: false }).collect();
        Harness {
            follower: Follower::new(config, start).expect("config"),
            chain,
            endpoints,
            registry: Registry::new(CONTRACT, network()),
            events: Vec::new(),
            now: MonoTime::from_nanos(1_000_000_000),
            script: VecDeque::new(),
            requests: 0,
            calls: Vec::new(),
            rng: Rng::new(seed),
        }
    }

    pub(super) fn config(endpoints: usize, pubsub: &[bool], confirmations: u64) -> FollowerConfig {
        let urls = (0..endpoints).map(|i| format!("{}://node-{i}.sim", if pubsub[i] { "ws" } else { "http" }));
        let mut config = FollowerConfig::new(urls, CONTRACT);
        config.confirmations = confirmations;
        config.poll_interval = Duration::from_millis(200);
        config.reconcile_interval = Duration::from_secs(5);
        config.backoff = Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) };
        config.call_timeout = Duration::from_secs(2);
        config
    }

    fn happen(&mut self, happening: Happening) {
        match happening {
            Happening::Mine(txs) => self.chain.mine(&txs),
            Happening::Reorg { depth, replacement } => self.chain.reorg(depth, &replacement),
            Happening::Faults { endpoint, faults } => {
                if faults.down || faults.hung {
                    // A node that goes away takes its subscription with it.
                    if std::mem::take(&mut self.endpoints[endpoint].subscribed) {
                        self.follower.handle_heads_closed(self.now);
                    }
                }
                let endpoint = &mut self.endpoints[endpoint];
                endpoint.reset |= faults.other_chain != endpoint.faults.other_chain;
                endpoint.faults = faults;
            }
        }
        let head = self.chain.head();
        for endpoint in self.endpoints.iter().filter(|e| e.subscribed && !e.faults.down) {
            let _ = endpoint;
            self.follower.handle_head(head, self.now);
        }
    }

    /// Moves the clock to `to`, with whatever the script holds until then.
    fn advance_to(&mut self, to: MonoTime) {
        while let Some((at, _)) = self.script.front() {
            if *at > to {
                break;
            }
            let (at, happening) = self.script.pop_front().expect("front");
            self.now = self.now.max(at);
            self.happen(happening);
        }
        self.now = self.now.max(to);
    }

    /// Delivers the follower's events to the registry, checking `after_each`.
    fn drain(&mut self, after_each: &mut impl FnMut(&Harness) -> Result<(), String>) -> Result<(), String> {
        while let Some(event) = self.follower.poll_event() {
            if std::env::var("FOLLOWER_TRACE").is_ok() {
                eprintln!("EVT {}", format!("{event:?}").chars().take(200).collect::<String>());
            }
            let unix = self.now.as_nanos() / 1_000_000_000;
            self.registry.apply(&event, unix);
            self.events.push(event);
            after_each(self)?;
        }
        Ok(())
    }

    /// Runs until `until` on the simulated clock.
    pub(super) fn run(&mut self, until: MonoTime, mut after_each: impl FnMut(&Harness) -> Result<(), String>) -> Result<(), String> {
        let mut turns = 0u64;
        loop {
            turns += 1;
            if turns > 1_000_000 {
                return Err(format!("no progress at {:?}: wake {:?}, stage {:?}, in flight {:?}, pending {:?}, script {:?}", self.now, self.follower.poll_timeout(), self.follower.stage, self.follower.in_flight, self.follower.pending, self.script.front()));
            }
            self.drain(&mut after_each)?;
            if let Some(request) = self.follower.poll_request(self.now) {
                self.requests += 1;
                let endpoint = request.endpoint;
                let (took, result) = self.endpoints[endpoint].answer(&mut self.chain, &request, &mut self.rng);
                if std::env::var("FOLLOWER_TRACE").is_ok() {
                    let summary = match &result { Ok(RpcReply::Logs(l)) => format!("{} logs", l.len()), Ok(RpcReply::Call(_)) => "call ok".into(), other => format!("{other:?}") };
                    let f = &self.endpoints[endpoint].faults;
                    eprintln!("REQ t={:?} ep{endpoint} lag{} stale{} other{} v{} {:?} -> {}", self.now, f.lag_versions, f.stale_head, f.other_chain, self.chain.versions.len() - 1, request.call, summary.chars().take(100).collect::<String>());
                }
                let failure = result.as_ref().err().cloned();
                self.calls.push(SimCall { at: self.now, endpoint, call: request.call.clone(), failure });
                self.advance_to(self.now + took);
                self.follower.handle_response(request.id, result, self.now);
                continue;
            }
            // What the last step emitted reaches the consumer before time moves on.
            self.drain(&mut after_each)?;
            let wake = self.follower.poll_timeout().map(|(at, _)| at);
            let next = [wake, self.script.front().map(|(at, _)| *at)].into_iter().flatten().min();
            match next {
                Some(at) if at <= until => self.advance_to(at.max(self.now)),
                _ => {
                    self.advance_to(until);
                    self.drain(&mut after_each)?;
                    return Ok(());
                }
            }
        }
    }
}
