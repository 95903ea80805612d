//! Userspace WireGuard data plane on boringtun's `noise::Tunn`: a pure-ish
//! device core (peers, routing, allowed IPs) and the I/O edge around it
//! (TUN, UDP, UAPI socket, the event loop).

pub mod allowed_ips;
pub mod cli;
pub mod device;
pub mod peer;

pub use device::{Device, DeviceCounters, DeviceEvent, PacketSink, PeerError};
pub use peer::{encode_key, parse_key, PeerConfig, PeerStats, PublicKey};
