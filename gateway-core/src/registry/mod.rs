//! The peer registry (pure): every token the chain told us about, its
//! standing and tunnel address, and the JSON v2 document it is saved as with
//! the chain cursor beside it. The file itself is the gateway crate's.

pub mod document;
pub mod key;
pub mod network;
pub mod reason;
pub mod state;

#[cfg(test)]
pub(crate) mod tests;

pub use document::{DocumentError, RegistryDocument, FORMAT_VERSION};
pub use key::{is_low_order_point, KeyError, WgKey};
#[cfg(any(test, feature = "test-support"))]
pub use key::low_order_encodings;
pub use network::{CidrError, Ipv4Cidr, Network, PeerSlot, Placement, PlacementError};
pub use reason::AccessReason;
pub use state::{Admission, Effect, KeyLookup, KeyUpdateLog, Outcome, Registry, TokenChange, TokenRecord, TokenView};
