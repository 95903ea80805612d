//! The WireGuard cross-platform userspace API (`get=1` / `set=1`,
//! <https://www.wireguard.com/xplatform/>): rendering a device and applying
//! set requests to it (pure; the socket server lives in `runtime`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use super::device::PeerError;
use super::shards::PeerTable;
use super::peer::{parse_key, PeerConfig, PublicKey};

/// errno values `wg` understands in replies.
const EINVAL: i32 = 22;
const ENOENT: i32 = 2;
const ENOSPC: i32 = 28;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UapiError {
    #[error("bad line {0:?}")]
    BadLine(String),
    #[error("bad value for {key}: {value:?}")]
    BadValue { key: String, value: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Peer(#[from] PeerError),
}

impl UapiError {
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::BadLine(_) | UapiError::BadValue { .. } => EINVAL,
            UapiError::Unsupported(_) => EOPNOTSUPP,
            UapiError::Peer(PeerError::NotFound(_)) => ENOENT,
            UapiError::Peer(PeerError::NoFreeSlot) => ENOSPC,
            UapiError::Peer(PeerError::DuplicateKey(_) | PeerError::SlotInUse(_) | PeerError::AllowedIpInUse(_)) => {
                EEXIST
            }
            UapiError::Peer(_) => EINVAL,
        }
    }
}

/// The `get=1` reply, without the trailing `errno=0` and blank line.
/// `now` anchors the handshake ages boringtun reports to wall-clock times.
pub fn render_get(device: &(impl PeerTable + ?Sized), listen_port: u16, now: SystemTime) -> String {
    let mut out = String::new();
    // The socket is root-only (0600), as with wireguard-go; `wg show` needs
    // the private key to print the public one and shows it as "(hidden)".
    let _ = writeln!(out, "private_key={}", hex::encode(device.private_key()));
    let _ = writeln!(out, "listen_port={listen_port}");
    for peer in device.peer_stats() {
        let _ = writeln!(out, "public_key={}", hex::encode(peer.public_key));
        let _ = writeln!(out, "protocol_version=1");
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let handshake = peer
            .since_last_handshake
            .and_then(|age| now.checked_sub(age))
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .unwrap_or(Duration::ZERO);
        let _ = writeln!(out, "last_handshake_time_sec={}", handshake.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", handshake.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval={}", peer.persistent_keepalive.unwrap_or(0));
        for net in &peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out
}

/// One peer section of a set request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct PeerChange {
    public_key: PublicKey,
    remove: bool,
    update_only: bool,
    endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<u16>,
    replace_allowed_ips: bool,
    allowed_ips: Vec<IpNet>,
}

fn bad(key: &str, value: &str) -> UapiError {
    UapiError::BadValue { key: key.to_owned(), value: value.to_owned() }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, UapiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(key, value)),
    }
}

/// Applies the body of a `set=1` request (its `key=value` lines, without the
/// `set=1` line and the blank line). Sections are applied in order; the first
/// error stops the request, as in the reference implementations.
pub fn apply_set(device: &mut (impl PeerTable + ?Sized), listen_port: u16, body: &str) -> Result<(), UapiError> {
    let mut current: Option<PeerChange> = None;
    for line in body.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once('=').ok_or_else(|| UapiError::BadLine(line.to_owned()))?;
        if key == "public_key" {
            if let Some(change) = current.take() {
                apply_peer_change(device, change)?;
            }
            let public_key = parse_key(value).map_err(|_| bad(key, value))?;
            current = Some(PeerChange { public_key, ..PeerChange::default() });
            continue;
        }
        let Some(change) = current.as_mut() else {
            apply_device_key(device, listen_port, key, value)?;
            continue;
        };
        match key {
            "remove" => change.remove = parse_bool(key, value)?,
            "update_only" => change.update_only = parse_bool(key, value)?,
            "endpoint" => change.endpoint = Some(value.parse().map_err(|_| bad(key, value))?),
            "persistent_keepalive_interval" => {
                change.persistent_keepalive = Some(value.parse().map_err(|_| bad(key, value))?)
            }
            "replace_allowed_ips" => change.replace_allowed_ips = parse_bool(key, value)?,
            "allowed_ip" => change.allowed_ips.push(value.parse().map_err(|_| bad(key, value))?),
            "protocol_version" if value == "1" => {}
            "preshared_key" if value.bytes().all(|b| b == b'0') => {}
            "preshared_key" => return Err(UapiError::Unsupported("preshared keys".into())),
            _ => return Err(bad(key, value)),
        }
    }
    if let Some(change) = current {
        apply_peer_change(device, change)?;
    }
    Ok(())
}

fn apply_device_key(device: &mut (impl PeerTable + ?Sized), listen_port: u16, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "private_key" => {
            let wanted = parse_key(value).map_err(|_| bad(key, value))?;
            if wanted != device.private_key() {
                return Err(UapiError::Unsupported("changing the private key of a running gateway".into()));
            }
        }
        "listen_port" => {
            let wanted: u16 = value.parse().map_err(|_| bad(key, value))?;
            if wanted != listen_port {
                return Err(UapiError::Unsupported("changing the listen port of a running gateway".into()));
            }
        }
        "fwmark" if matches!(value, "0" | "") => {}
        "fwmark" => return Err(UapiError::Unsupported("fwmark".into())),
        "replace_peers" => {
            if parse_bool(key, value)? {
                for peer in device.peer_stats() {
                    device.remove_peer(&peer.public_key)?;
                }
            }
        }
        _ => return Err(bad(key, value)),
    }
    Ok(())
}

fn apply_peer_change(device: &mut (impl PeerTable + ?Sized), change: PeerChange) -> Result<(), UapiError> {
    let keepalive = |k: Option<u16>| k.filter(|s| *s != 0);
    if change.remove {
        return match device.remove_peer(&change.public_key) {
            Ok(_) | Err(PeerError::NotFound(_)) => Ok(()),
            Err(err) => Err(err.into()),
        };
    }
    match device.peer_config(&change.public_key) {
        Some(mut config) => {
            if change.replace_allowed_ips {
                config.allowed_ips.clear();
            }
            for net in change.allowed_ips {
                if !config.allowed_ips.contains(&net) {
                    config.allowed_ips.push(net);
                }
            }
            if change.endpoint.is_some() {
                config.endpoint = change.endpoint;
            }
            if change.persistent_keepalive.is_some() {
                config.persistent_keepalive = keepalive(change.persistent_keepalive);
            }
            device.reconfigure_peer(config)?;
        }
        None if change.update_only => {}
        None => {
            let slot = device.free_slot()?;
            device.add_peer(PeerConfig {
                public_key: change.public_key,
                slot,
                allowed_ips: change.allowed_ips,
                endpoint: change.endpoint,
                persistent_keepalive: keepalive(change.persistent_keepalive),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::dataplane::device::Device;
    use gateway_common::MAX_PEER_SLOTS;

    fn key(seed: u8) -> [u8; 32] {
        [seed; 32]
    }

    #[test]
    fn set_adds_updates_and_removes_peers() {
        let mut dev = Device::new(key(1));
        let body = format!(
            "listen_port=51820\npublic_key={}\nendpoint=127.0.0.1:9\npersistent_keepalive_interval=25\n\
             allowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\npublic_key={}\nallowed_ip=10.0.0.3/32\n",
            hex::encode(key(2)),
            hex::encode(key(3))
        );
        apply_set(&mut dev, 51820, &body).unwrap();
        let two = dev.peer_config(&key(2)).unwrap().clone();
        assert_eq!(two.endpoint, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(two.persistent_keepalive, Some(25));
        assert_eq!(two.allowed_ips.len(), 2);
        assert_eq!(two.slot, MAX_PEER_SLOTS - 1, "UAPI peers take free slots from the top");
        assert_eq!(dev.peer_config(&key(3)).unwrap().slot, MAX_PEER_SLOTS - 2);

        let body = format!("public_key={}\nreplace_allowed_ips=true\nallowed_ip=10.0.0.9/32\n", hex::encode(key(2)));
        apply_set(&mut dev, 51820, &body).unwrap();
        let two = dev.peer_config(&key(2)).unwrap();
        assert_eq!(two.allowed_ips, vec!["10.0.0.9/32".parse::<IpNet>().unwrap()]);
        assert_eq!(two.slot, MAX_PEER_SLOTS - 1, "an update keeps the slot");

        apply_set(&mut dev, 51820, &format!("public_key={}\nremove=true\n", hex::encode(key(3)))).unwrap();
        assert!(dev.peer_config(&key(3)).is_none());
        apply_set(&mut dev, 51820, "replace_peers=true\n").unwrap();
        assert_eq!(dev.peer_count(), 0);
    }

    #[test]
    fn set_errors_map_to_errnos() {
        let mut dev = Device::new(key(1));
        assert_eq!(apply_set(&mut dev, 51820, "listen_port=1\n").unwrap_err().errno(), EOPNOTSUPP);
        assert_eq!(apply_set(&mut dev, 51820, "nonsense\n").unwrap_err().errno(), EINVAL);
        let clash = format!(
            "public_key={}\nallowed_ip=10.0.0.2/32\npublic_key={}\nallowed_ip=10.0.0.2/32\n",
            hex::encode(key(2)),
            hex::encode(key(3))
        );
        assert_eq!(apply_set(&mut dev, 51820, &clash).unwrap_err().errno(), EEXIST);
        let psk = format!("public_key={}\npreshared_key={}\n", hex::encode(key(4)), hex::encode(key(5)));
        assert_eq!(apply_set(&mut dev, 51820, &psk).unwrap_err().errno(), EOPNOTSUPP);
    }

    #[test]
    fn get_lists_peers_with_counters_and_handshake_time() {
        let mut dev = Device::new(key(1));
        dev.add_peer(PeerConfig {
            public_key: key(2),
            slot: 7,
            allowed_ips: vec!["10.0.0.2/32".parse().unwrap()],
            endpoint: Some("[::1]:51821".parse().unwrap()),
            persistent_keepalive: None,
        })
        .unwrap();
        let text = render_get(&dev, 51820, UNIX_EPOCH + Duration::from_secs(1000));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("private_key={}", hex::encode(dev.private_key())));
        assert_eq!(lines[1], "listen_port=51820");
        assert!(lines.contains(&format!("public_key={}", hex::encode(key(2))).as_str()));
        assert!(lines.contains(&"endpoint=[::1]:51821"));
        assert!(lines.contains(&"last_handshake_time_sec=0"), "no handshake yet");
        assert!(lines.contains(&"rx_bytes=0"));
        assert!(lines.contains(&"allowed_ip=10.0.0.2/32"));
    }

    /// Lines a `set=1` body is made of: known keys with valid, invalid and
    /// odd values, a small pool of public keys so sections meet the same
    /// peer, and plain garbage.
    fn set_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let pubkey = (2u8..6).prop_map(|s| hex::encode(key(s)));
        let value = prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("0".to_string()),
            Just("25".to_string()),
            Just("70000".to_string()),
            Just("10.0.0.2/32".to_string()),
            Just("10.0.0.0/24".to_string()),
            Just("fd00::2/128".to_string()),
            Just("10.0.0.2/33".to_string()),
            Just("127.0.0.1:9".to_string()),
            Just("[::1]:51821".to_string()),
            Just("51820".to_string()),
            Just(hex::encode(key(1))),
            (2u8..6).prop_map(|s| hex::encode(key(s))),
            "\\PC{0,24}",
        ];
        let known = prop_oneof![
            Just("remove"),
            Just("update_only"),
            Just("endpoint"),
            Just("persistent_keepalive_interval"),
            Just("replace_allowed_ips"),
            Just("allowed_ip"),
            Just("protocol_version"),
            Just("preshared_key"),
            Just("private_key"),
            Just("listen_port"),
            Just("fwmark"),
            Just("replace_peers"),
        ];
        prop_oneof![
            pubkey.prop_map(|k| format!("public_key={k}")),
            (known, value).prop_map(|(k, v)| format!("{k}={v}")),
            "\\PC{0,40}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// Whatever a client sends, `apply_set` answers Ok or an error with a
        /// real errno, never panics, and leaves a consistent device: each peer
        /// in its own slot, no allowed IP on two peers, and a `get=1` reply
        /// made of `key=value` lines.
        #[test]
        fn any_set_body_leaves_a_consistent_device(
            requests in proptest::collection::vec(proptest::collection::vec(set_line(), 0..12), 1..4)
        ) {
            let mut dev = Device::new(key(1));
            for lines in requests {
                if let Err(err) = apply_set(&mut dev, 51820, &lines.join("\n")) {
                    proptest::prop_assert!([EINVAL, ENOENT, ENOSPC, EEXIST, EOPNOTSUPP].contains(&err.errno()), "{err}");
                }
                let peers = dev.peer_stats();
                proptest::prop_assert_eq!(peers.len(), dev.peer_count());
                let mut slots = std::collections::HashSet::new();
                let mut nets = std::collections::HashSet::new();
                for peer in &peers {
                    let config = dev.peer_config(&peer.public_key).unwrap();
                    proptest::prop_assert!(slots.insert(config.slot), "slot {} twice", config.slot);
                    for net in &config.allowed_ips {
                        proptest::prop_assert!(nets.insert(*net), "{} on two peers", net);
                    }
                }
                let text = render_get(&dev, 51820, UNIX_EPOCH + Duration::from_secs(1000));
                proptest::prop_assert!(text.lines().all(|l| l.split_once('=').is_some_and(|(k, _)| !k.is_empty())), "{}", text);
            }
        }
    }
}
