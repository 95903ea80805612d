//! A long chain history on a real anvil: `blocks` blocks with `tokens` grants
//! scattered across them, for the backfill benchmark and the provider-limit
//! tests (I/O edge: anvil). anvil mines empty blocks at a few hundred to a
//! thousand a second here, fastest through `anvil_mine` in chunks of about a
//! hundred, so a history is built once per run and shared by what measures it.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use anyhow::Context;
use gateway::chain::contract::DstackAccessNFT;

use crate::anvil::{test_key, TestChain};

/// Empty blocks per `anvil_mine` call: about the quickest chunk (issue 16's measurement).
const MINE_CHUNK: u64 = 100;

/// Gas for one grant with short strings: about 250,000 used; the rest is margin.
const MINT_GAS: u64 = 500_000;

/// Above anvil's base fee, which starts at 1 gwei and only falls over empty blocks.
const MAX_FEE_PER_GAS: u128 = 10_000_000_000;

pub struct History {
    pub chain: TestChain,
    /// The head once built: the history spans `chain.deploy_block..=head`.
    pub head: u64,
    /// The block of each grant, in token id order (token `i + 1` at `grant_blocks[i]`).
    pub grant_blocks: Vec<u64>,
    pub built_in: Duration,
}

impl History {
    /// Deploys the reference contract, then grows the chain to `blocks` blocks
    /// with `tokens` grants at distinct, unevenly spaced blocks (a fixed seed:
    /// the same history every run).
    pub async fn build(blocks: u64, tokens: u64) -> anyhow::Result<Self> {
        let started = Instant::now();
        // anvil keeps every block's state in memory by default: 15,000 blocks
        // took 2.4 GB and mining slowed to a few blocks a second. Logs and
        // current reads need only the latest states.
        let chain = TestChain::start(&["--prune-history", "64"]).await;
        let first = chain.head().await + 1;
        anyhow::ensure!(blocks > first + tokens, "{blocks} blocks cannot hold {tokens} grants after block {first}");
        let grant_blocks = scatter(first, blocks, tokens);
        let owner = chain.address(1);
        let admin = chain.admin.provider().clone();
        let contract = DstackAccessNFT::new(chain.contract, admin.clone());
        // Nonce, gas and fees given up front: each grant is then one
        // eth_sendRawTransaction instead of four calls (the nonce, the gas
        // estimate, the fee history), and a history builds several times faster.
        let mut nonce = admin.get_transaction_count(chain.address(0)).await.context("the admin's nonce")?;
        let mut current = first - 1;
        for (index, &block) in grant_blocks.iter().enumerate() {
            mine_to(&chain, current, block - 1).await?;
            // anvil mines each transaction into a block of its own (automine),
            // a moment after answering: the head is watched, not the receipt.
            let token = index as u64 + 1;
            let _pending = contract
                .mintNodeAccess(owner, format!("node-{token}"), test_key(token), String::new())
                .nonce(nonce)
                .gas(MINT_GAS)
                .max_fee_per_gas(MAX_FEE_PER_GAS)
                .max_priority_fee_per_gas(1)
                .send()
                .await
                .with_context(|| format!("minting token {token}"))?;
            wait_for_head(&chain, block).await?;
            current = block;
            nonce += 1;
        }
        mine_to(&chain, current, blocks).await?;
        let head = chain.head().await;
        anyhow::ensure!(head == blocks, "built to block {head}, wanted {blocks}");
        let history = Self { chain, head, grant_blocks, built_in: started.elapsed() };
        history.check_grants().await?;
        Ok(history)
    }

    pub fn contract(&self) -> Address {
        self.chain.contract
    }

    /// Every grant is where it was meant to be (one unlimited `eth_getLogs` on anvil itself).
    async fn check_grants(&self) -> anyhow::Result<()> {
        let filter = Filter::new()
            .address(self.chain.contract)
            .event_signature(DstackAccessNFT::NodeAccessGranted::SIGNATURE_HASH)
            .from_block(self.chain.deploy_block)
            .to_block(self.head);
        let logs = self.chain.admin.provider().get_logs(&filter).await.context("eth_getLogs over the history")?;
        let blocks: Vec<u64> = logs.iter().filter_map(|log| log.block_number).collect();
        if let Some(at) = blocks.iter().zip(&self.grant_blocks).position(|(found, meant)| found != meant) {
            anyhow::bail!("grant {} is at block {}, meant for block {}", at + 1, blocks[at], self.grant_blocks[at]);
        }
        anyhow::ensure!(blocks.len() == self.grant_blocks.len(), "{} grants found where {} were minted", blocks.len(), self.grant_blocks.len());
        Ok(())
    }
}

/// Waits (briefly: anvil mines at once) until the head has reached `block`.
async fn wait_for_head(chain: &TestChain, block: u64) -> anyhow::Result<()> {
    for _ in 0..1_000 {
        if chain.admin.provider().get_block_number().await.context("eth_blockNumber")? >= block {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    anyhow::bail!("anvil did not mine block {block}")
}

/// Mines empty blocks until the head is `target` (from `current`).
async fn mine_to(chain: &TestChain, mut current: u64, target: u64) -> anyhow::Result<()> {
    while current < target {
        let count = (target - current).min(MINE_CHUNK);
        let _: serde_json::Value = chain
            .admin
            .provider()
            .raw_request("anvil_mine".into(), (U256::from(count),))
            .await
            .context("anvil_mine")?;
        current += count;
    }
    Ok(())
}

/// `count` distinct blocks in `first..=last`, sorted, spaced unevenly: dense
/// stretches and long empty ones, as grants come in bursts on a real chain.
pub fn scatter(first: u64, last: u64, count: u64) -> Vec<u64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64: deterministic, no dependency, good enough to spread blocks.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let span = last - first + 1;
    let mut picked = std::collections::BTreeSet::new();
    while (picked.len() as u64) < count {
        // Squaring a uniform draw crowds the picks towards the start of each
        // of 8 stretches: bursts, then quiet.
        let stretch = next() % 8;
        let within = (next() % 1_000_000) as f64 / 1_000_000.0;
        let offset = ((stretch as f64 + within * within) / 8.0 * span as f64) as u64;
        picked.insert(first + offset.min(span - 1));
    }
    picked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_is_distinct_sorted_in_range_and_the_same_every_time() {
        let blocks = scatter(10, 20_000, 2_000);
        assert_eq!(blocks.len(), 2_000);
        assert!(blocks.windows(2).all(|w| w[0] < w[1]));
        assert!(blocks[0] >= 10 && blocks[blocks.len() - 1] <= 20_000);
        assert_eq!(blocks, scatter(10, 20_000, 2_000));
        // Uneven: 1,000-block stretches hold 100 grants on average, some far more, some far fewer.
        let counts: Vec<usize> = (10..19_010).step_by(1_000).map(|s| blocks.iter().filter(|&&b| b >= s && b < s + 1_000).count()).collect();
        let (densest, sparsest) = (counts.iter().max().copied(), counts.iter().min().copied());
        assert!(densest >= Some(150) && sparsest <= Some(80), "{counts:?}");
    }
}
