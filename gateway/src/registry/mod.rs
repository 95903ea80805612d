//! The peer registry (pure, except `store`, the file I/O edge): every token
//! the chain told us about, its standing and tunnel address, persisted as the
//! JSON v2 document with the chain cursor beside it.

pub mod document;
pub mod key;
pub mod network;
pub mod reason;
pub mod state;
pub mod store;
pub mod time;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
pub(crate) mod tests;

pub use document::{RegistryDocument, FORMAT_VERSION};
pub use key::WgKey;
pub use network::{Ipv4Cidr, Network, PeerSlot, Placement};
pub use reason::Reason;
pub use state::{Admission, Cursor, Effect, KeyLookup, Outcome, Registry, TokenChange, TokenView};
pub use store::{RegistryStore, StoreError};
