//! Userspace WireGuard data plane on boringtun's `noise::Tunn`: a socket-free
//! device core (peers, routing, allowed IPs, UAPI protocol) and the I/O edge
//! around it (TUN, UDP, the UAPI socket, the packet loop).

pub mod allowed_ips;
pub mod cli;
pub mod device;
pub mod gro;
pub mod gso;
pub mod io;
pub mod peer;
pub mod runtime;
pub mod takeover;
pub mod uapi;
pub mod vnet;

pub use device::{Device, DeviceCounters, DeviceEvent, PacketSink, PeerError};
pub use peer::{encode_key, parse_key, PeerConfig, PeerStats, PublicKey};
pub use runtime::{Dataplane, DataplaneConfig, DataplaneHandle};
