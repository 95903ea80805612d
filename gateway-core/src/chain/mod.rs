//! The chain follower (pure): a state machine that asks for RPC calls and
//! takes their answers, what the access contract's logs and reads mean,
//! which grants wait for confirmations, how block ranges are cut and how RPC
//! endpoints are chosen. The gateway crate's driver carries its calls to
//! real endpoints.

pub mod abi;
pub mod backoff;
pub mod chain_id;
pub(crate) mod confirm;
pub mod endpoints;
pub mod event;
pub mod follower;
pub mod ids;
pub mod log_span;
pub mod provider;
pub mod range;
pub mod rpc;

pub use event::{ChainEvent, Cursor, LogMeta, SnapshotCause, TokenSnapshot};
pub use ids::{Address, BlockHash, HexIdError, TokenId, TxHash};
