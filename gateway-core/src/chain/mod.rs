//! The chain follower's logic (pure): what the access contract's logs mean,
//! which grants wait for confirmations, how block ranges are cut and how RPC
//! endpoints are chosen. The gateway crate runs it against real endpoints.

pub mod abi;
pub mod backoff;
pub mod chain_id;
pub mod confirm;
pub mod event;
pub mod ids;
pub mod log_span;
pub mod provider;
pub mod range;

pub use event::{ChainEvent, Cursor, LogMeta, SnapshotCause, TokenSnapshot};
pub use ids::{Address, BlockHash, HexIdError, TokenId, TxHash};
