//! Userspace WireGuard data plane on boringtun's `noise::Tunn`: a socket-free
//! device core (peers, routing, allowed IPs, UAPI protocol), split into one
//! shard per packet worker, and the I/O edge around it (a TUN queue and UDP
//! sockets per worker, the UAPI socket, the packet loops).

pub mod allowed_ips;
pub mod cli;
pub mod device;
pub mod gro;
pub mod gso;
pub mod io;
pub mod peer;
pub mod runtime;
pub mod shards;
pub mod sink;
pub mod steer;
pub mod takeover;
#[cfg(test)]
pub(crate) mod test_support;
pub mod uapi;
pub mod vnet;
pub mod weak_keys;

pub use device::{Device, DeviceCounters, DeviceEvent, PeerError};
pub use peer::{encode_key, parse_key, PeerConfig, PeerStats, PublicKey};
pub use runtime::{default_workers, Dataplane, DataplaneConfig, DataplaneHandle, DEFAULT_MAX_BURST};
pub use shards::PeerTable;
pub use sink::{Handoff, PacketSink, Shard};
