//! Names inside the tunnel: `<node_id>.<domain>` (`vpn.dstack` by default)
//! answered from the registry on the gateway's tunnel address, UDP port 53.
//! Authoritative for that zone only, no recursion: a granted token's node id
//! resolves to its tunnel address, anything else in the zone is NXDOMAIN and
//! names outside it are REFUSED.

pub mod server;
pub mod wire;
pub mod zone;

pub use server::{serve, Counters, Names};
pub use zone::Zone;
