//! Helpers for the end-to-end tests: network namespaces, processes, clean-up,
//! packets, a local chain.
#![warn(unreachable_pub)]

pub mod anvil;
pub mod backfill_sim;
pub mod bench_args;
pub mod chaos;
pub mod container;
pub mod container_story;
pub mod cutproxy;
pub mod ha;
pub mod history;
pub mod keepalived;
pub mod lab;
pub mod minimal_nft;
pub mod netns;
pub mod node_cli;
pub mod packets;
pub mod pinger;
pub mod provider_limits;
pub mod provider_proxy;
pub mod proxy;
pub mod skip;
pub mod stats;
pub mod wg;
