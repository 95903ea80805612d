//! Typed handles on the pinned XDP maps (I/O edge): allowed slots, denied
//! endpoints, configuration and per-CPU counters. Opened from the pins, so
//! the daemon, `gateway xdp ...` and tests all go through the same code.

use super::loader::{PinDir, XdpError};
use anyhow::Context;
use aya::maps::{Array, Map, MapData, PerCpuArray};
use gateway_common::{
    deny_slot_of, AllowSlot, DenyEntry, EndpointKey, XdpConfig, XdpStats, MAP_ALLOW_SLOTS,
    MAP_CONFIG, MAP_DENY_ENDPOINTS, MAP_LATE_STATS, MAP_STATS, MAX_PEER_SLOTS,
};
use std::net::{IpAddr, SocketAddr};

fn open(pins: &PinDir, name: &str) -> Result<Map, XdpError> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(XdpError::NotAttached {
            instance: pins.instance().to_string(),
            dir: pins.path().to_path_buf(),
        });
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Map::from_map_data(data).with_context(|| format!("map {name}"))?)
}

/// `GW_CONFIG`: the program's settings.
pub struct ConfigMap(Array<MapData, XdpConfig>);

impl ConfigMap {
    pub fn get(&self) -> anyhow::Result<XdpConfig> {
        self.0.get(&0, 0).context("reading XDP config")
    }
    pub fn set(&mut self, config: XdpConfig) -> anyhow::Result<()> {
        self.0.set(0, config, 0).context("writing XDP config")
    }
}

/// `GW_STATS` (XDP) or `GW_LATE_STATS` (the late gate): per-CPU verdict counters.
pub struct StatsMap(PerCpuArray<MapData, XdpStats>);

impl StatsMap {
    /// The counters summed over every CPU.
    pub fn read(&self) -> anyhow::Result<XdpStats> {
        let per_cpu = self.0.get(&0, 0).context("reading XDP stats")?;
        let mut total = XdpStats::default();
        for cpu in per_cpu.iter() {
            total.accumulate(cpu);
        }
        Ok(total)
    }
}

/// `GW_ALLOW_SLOTS`: the peer slots whose session packets may pass.
pub struct AllowSlots(Array<MapData, AllowSlot>);

impl AllowSlots {
    pub fn open_slot(&mut self, slot: u32, generation: u32) -> anyhow::Result<()> {
        anyhow::ensure!(slot < MAX_PEER_SLOTS, "slot {slot} out of range (max {MAX_PEER_SLOTS})");
        self.0
            .set(slot, AllowSlot { allowed: 1, generation }, 0)
            .with_context(|| format!("opening XDP slot {slot}"))
    }

    pub fn close_slot(&mut self, slot: u32) -> anyhow::Result<()> {
        anyhow::ensure!(slot < MAX_PEER_SLOTS, "slot {slot} out of range (max {MAX_PEER_SLOTS})");
        self.0
            .set(slot, AllowSlot::default(), 0)
            .with_context(|| format!("closing XDP slot {slot}"))
    }

    pub fn is_open(&self, slot: u32) -> anyhow::Result<bool> {
        Ok(self.0.get(&slot, 0).context("reading XDP slot")?.allowed != 0)
    }

    /// Every open slot, ascending (a full scan: for reconcile and inspection).
    pub fn open_slots(&self) -> anyhow::Result<Vec<u32>> {
        let mut open = Vec::new();
        for (slot, value) in self.0.iter().enumerate() {
            if value.context("reading XDP slots")?.allowed != 0 {
                open.push(slot as u32);
            }
        }
        Ok(open)
    }
}

/// `GW_DENY_ENDPOINTS`: endpoints whose handshake initiations are dropped,
/// in a direct-mapped table (see `gateway_common::DENY_SLOTS`).
pub struct DenyEndpoints {
    table: Array<MapData, DenyEntry>,
    seed: u32,
}

/// The map key of a socket address (IPv4 stored IPv4-mapped).
pub fn endpoint_key(addr: SocketAddr) -> EndpointKey {
    match addr.ip() {
        IpAddr::V4(v4) => EndpointKey::v4(v4.octets(), addr.port()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => EndpointKey::v4(v4.octets(), addr.port()),
            None => EndpointKey::v6(v6.octets(), addr.port()),
        },
    }
}

/// The socket address of a map key.
pub fn endpoint_addr(key: &EndpointKey) -> SocketAddr {
    let v6 = std::net::Ipv6Addr::from(key.addr);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, key.port)
}

impl DenyEndpoints {
    /// Denies `endpoint` until `expires_ns` on CLOCK_MONOTONIC. Returns the
    /// endpoint this evicted from its slot, if another one was denied there.
    pub fn deny(&mut self, endpoint: SocketAddr, expires_ns: u64, reason: u32) -> anyhow::Result<Option<SocketAddr>> {
        let key = endpoint_key(endpoint);
        let index = deny_slot_of(&key, self.seed);
        let previous = self.table.get(&index, 0).context("reading deny table")?;
        self.table
            .set(index, DenyEntry { endpoint: key, expires_ns, reason, _pad: 0 }, 0)
            .with_context(|| format!("denying {endpoint}"))?;
        let evicted = (previous.expires_ns != 0 && previous.endpoint != key).then(|| endpoint_addr(&previous.endpoint));
        Ok(evicted)
    }

    /// Lifts the deny of `endpoint` (a no-op when it is not denied).
    pub fn allow(&mut self, endpoint: SocketAddr) -> anyhow::Result<()> {
        let key = endpoint_key(endpoint);
        let index = deny_slot_of(&key, self.seed);
        let current = self.table.get(&index, 0).context("reading deny table")?;
        if current.endpoint == key && current.expires_ns != 0 {
            self.table.set(index, DenyEntry::default(), 0).with_context(|| format!("allowing {endpoint}"))?;
        }
        Ok(())
    }

    /// Every occupied slot, sorted by endpoint (expired ones included: the
    /// kernel ignores them). A full scan, for inspection.
    pub fn entries(&self) -> anyhow::Result<Vec<(SocketAddr, DenyEntry)>> {
        let mut out = Vec::new();
        for item in self.table.iter() {
            let entry = item.context("reading deny table")?;
            if entry.expires_ns != 0 {
                out.push((endpoint_addr(&entry.endpoint), entry));
            }
        }
        out.sort_by_key(|(a, _)| *a);
        Ok(out)
    }
}

/// Every map of one attached instance.
pub struct PinnedMaps {
    pub config: ConfigMap,
    pub stats: StatsMap,
    /// The late gate's counters (the same verdicts, at the sockets).
    pub late_stats: StatsMap,
    pub allow: AllowSlots,
    pub deny: DenyEndpoints,
}

impl PinnedMaps {
    pub fn open(pins: &PinDir) -> Result<Self, XdpError> {
        let config = Array::try_from(open(pins, MAP_CONFIG)?).context("GW_CONFIG type")?;
        let stats = PerCpuArray::try_from(open(pins, MAP_STATS)?).context("GW_STATS type")?;
        let late_stats = PerCpuArray::try_from(open(pins, MAP_LATE_STATS)?).context("GW_LATE_STATS type")?;
        let allow = Array::try_from(open(pins, MAP_ALLOW_SLOTS)?).context("GW_ALLOW_SLOTS type")?;
        let table = Array::try_from(open(pins, MAP_DENY_ENDPOINTS)?).context("GW_DENY_ENDPOINTS type")?;
        let config = ConfigMap(config);
        let seed = config.get()?.hash_seed;
        Ok(PinnedMaps {
            config,
            stats: StatsMap(stats),
            late_stats: StatsMap(late_stats),
            allow: AllowSlots(allow),
            deny: DenyEndpoints { table, seed },
        })
    }

    pub fn open_instance(instance: &str) -> Result<Self, XdpError> {
        Self::open(&PinDir::for_instance(instance)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_round_trip_both_families() {
        for s in ["10.1.2.3:51820", "[2001:db8::7]:443", "[::ffff:192.0.2.1]:9"] {
            let addr: SocketAddr = s.parse().expect("literal");
            let back = endpoint_addr(&endpoint_key(addr));
            let expected = match addr {
                SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                    Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                    None => addr,
                },
                SocketAddr::V4(_) => addr,
            };
            assert_eq!(back, expected, "{s}");
        }
        // The kernel side stores IPv4 as ::ffff:a.b.c.d; both must agree.
        let k = endpoint_key("192.0.2.1:9".parse().expect("literal"));
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 192, 0, 2, 1]);
    }
}
