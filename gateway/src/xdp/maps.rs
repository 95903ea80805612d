//! Typed handles on the pinned XDP maps (I/O edge): allowed slots, denied
//! and live endpoints, configuration and per-CPU counters. Opened from the pins, so
//! the daemon, `gateway xdp ...` and tests all go through the same code.

use super::loader::{PinDir, XdpError};
use anyhow::Context;
use aya::maps::{Array, Map, MapData, PerCpuArray};
use gateway_common::{
    deny_slot_of, live_slot_of, AllowSlot, DenyEntry, EndpointKey, LiveEndpoint, XdpConfig, XdpStats, MAP_ALLOW_SLOTS,
    MAP_CONFIG, MAP_DENY_ENDPOINTS, MAP_LATE_STATS, MAP_LIVE_ENDPOINTS, MAP_STATS, MAX_PEER_SLOTS,
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

/// `GW_LIVE_ENDPOINTS`: endpoints of peers with a recent completed
/// handshake, whose initiations skip the unproven budget (see
/// `gateway_common::LIVE_SLOTS`).
pub struct LiveEndpoints {
    table: Array<MapData, LiveEndpoint>,
    seed: u32,
    /// What [`refresh`](Self::refresh) last wrote, so a tick rewrites only
    /// what a new handshake moved.
    written: std::collections::BTreeMap<SocketAddr, u64>,
}

/// How long after its last completed handshake an endpoint counts as live:
/// WireGuard's REJECT_AFTER_TIME (a session older than that is dead; a
/// peer in use rekeys every 120 s).
pub const LIVE_AFTER_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(180);

impl LiveEndpoints {
    /// Marks the endpoints of peers whose last handshake is under
    /// [`LIVE_AFTER_HANDSHAKE`] old, live until that age: `peers` gives each
    /// endpoint with the time since its handshake. Returns how many slots it
    /// wrote.
    pub fn refresh(
        &mut self,
        peers: impl IntoIterator<Item = (SocketAddr, std::time::Duration)>,
        now_ns: u64,
    ) -> anyhow::Result<usize> {
        let mut wrote = 0;
        for (endpoint, since) in peers {
            let Some(left) = LIVE_AFTER_HANDSHAKE.checked_sub(since) else { continue };
            let expires_ns = now_ns.saturating_add(left.as_nanos() as u64);
            // The same handshake seen a tick later: within the clocks' skew.
            if self.written.get(&endpoint).is_some_and(|w| w.abs_diff(expires_ns) < 1_000_000_000) {
                continue;
            }
            self.mark(endpoint, expires_ns)?;
            self.written.insert(endpoint, expires_ns);
            wrote += 1;
        }
        self.written.retain(|_, expires_ns| *expires_ns > now_ns);
        Ok(wrote)
    }

    /// Marks `endpoint` live until `expires_ns` (CLOCK_MONOTONIC).
    pub fn mark(&mut self, endpoint: SocketAddr, expires_ns: u64) -> anyhow::Result<()> {
        let key = endpoint_key(endpoint);
        let index = live_slot_of(&key, self.seed);
        self.table
            .set(index, LiveEndpoint::new(key, expires_ns), 0)
            .with_context(|| format!("marking {endpoint} live"))
    }

    /// Until when `endpoint` is live, if its slot holds it.
    pub fn until(&self, endpoint: SocketAddr) -> anyhow::Result<Option<u64>> {
        let key = endpoint_key(endpoint);
        let entry = self.table.get(&live_slot_of(&key, self.seed), 0).context("reading live endpoint table")?;
        Ok((entry.endpoint == key && entry.expires_ns != 0).then_some(entry.expires_ns))
    }
}

/// The per-CPU share of a budget configured for the whole machine (at least
/// 1 when the total is not 0): XDP runs on the CPU that received the frame,
/// and each CPU has its own bucket.
pub fn per_cpu_share(total: u32) -> u32 {
    let cpus = aya::util::nr_cpus().map(|n| n.max(1) as u32).unwrap_or(1);
    if total == 0 {
        0
    } else {
        total.div_ceil(cpus)
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
    pub live: LiveEndpoints,
}

impl PinnedMaps {
    pub fn open(pins: &PinDir) -> Result<Self, XdpError> {
        let config = Array::try_from(open(pins, MAP_CONFIG)?).context("GW_CONFIG type")?;
        let stats = PerCpuArray::try_from(open(pins, MAP_STATS)?).context("GW_STATS type")?;
        let late_stats = PerCpuArray::try_from(open(pins, MAP_LATE_STATS)?).context("GW_LATE_STATS type")?;
        let allow = Array::try_from(open(pins, MAP_ALLOW_SLOTS)?).context("GW_ALLOW_SLOTS type")?;
        let table = Array::try_from(open(pins, MAP_DENY_ENDPOINTS)?).context("GW_DENY_ENDPOINTS type")?;
        let live = Array::try_from(open(pins, MAP_LIVE_ENDPOINTS)?).context("GW_LIVE_ENDPOINTS type")?;
        let config = ConfigMap(config);
        let seed = config.get()?.hash_seed;
        Ok(PinnedMaps {
            config,
            stats: StatsMap(stats),
            late_stats: StatsMap(late_stats),
            allow: AllowSlots(allow),
            deny: DenyEndpoints { table, seed },
            live: LiveEndpoints { table: live, seed, written: Default::default() },
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
