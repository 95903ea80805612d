//! Applies plan ops to the XDP maps and the data plane (I/O edge). The order
//! comes from the plan (revoke: XDP first; grant: WireGuard first); this only
//! carries each op out and says whether it worked, and reads the live
//! state back to put right what was changed by hand ([`super::drift`]).

use super::drift::{self, Drift, LivePeer};
use crate::dataplane::peer::PeerConfig;
use crate::dataplane::runtime::DataplaneHandle;
use gateway_core::plan::{Applied, Op};
use gateway_core::registry::{PeerSlot, WgKey};
use crate::xdp::PinnedMaps;

pub(super) struct Executor {
    /// `None` when XDP is disabled: its ops succeed as no-ops.
    pub xdp: Option<PinnedMaps>,
    pub dataplane: DataplaneHandle,
    pub persistent_keepalive: Option<u16>,
}

impl Executor {
    pub(super) fn apply(&mut self, op: &Op) -> anyhow::Result<()> {
        match op {
            Op::CloseSlot { slot } => {
                if let Some(maps) = &mut self.xdp {
                    maps.allow.close_slot(slot.0)?;
                }
            }
            Op::OpenSlot { slot, generation } => {
                if let Some(maps) = &mut self.xdp {
                    maps.allow.open_slot(slot.0, *generation)?;
                }
            }
            Op::DenyEndpoint { endpoint, until_ns, reason, .. } => {
                if let Some(maps) = &mut self.xdp {
                    if let Some(evicted) = maps.deny.deny(*endpoint, *until_ns, reason.code())? {
                        tracing::debug!(%endpoint, %evicted, "deny table slot shared; older deny replaced");
                    }
                }
            }
            Op::LiftDeny { endpoint } => {
                if let Some(maps) = &mut self.xdp {
                    maps.deny.allow(*endpoint)?;
                }
            }
            Op::RemoveWgPeer { key, .. } => {
                // Already gone (a restart, or removed by hand through UAPI) is done.
                if self.dataplane.peer(&key.0).is_some() {
                    self.dataplane.remove_peer(&key.0)?;
                }
            }
            Op::AddWgPeer { key, slot, allowed_ip } => {
                let config = PeerConfig {
                    public_key: key.0,
                    slot: slot.0,
                    allowed_ips: vec![ipnet::IpNet::from(ipnet::Ipv4Net::new(*allowed_ip, 32)?)],
                    endpoint: None,
                    persistent_keepalive: self.persistent_keepalive,
                };
                match self.dataplane.peer(&key.0) {
                    // Already as planned (e.g. the plan is retried after a later op failed).
                    Some(existing) if existing.slot == slot.0 && existing.allowed_ips == config.allowed_ips => {}
                    // Another slot or allowed IPs (a drift repair): replaced
                    // under one table lock, and put back if the new one fails.
                    Some(_) => self.dataplane.update_peer(&key.0, config)?,
                    None => self.dataplane.add_peer(config)?,
                }
            }
        }
        Ok(())
    }

    /// Compares `applied` with the data plane's peers and the pinned allow
    /// map as they are now, and puts back each difference (logged, with
    /// what changed). Returns the differences repaired; one that could not
    /// be is logged and seen again at the next check.
    pub(super) fn repair_drift(&mut self, applied: &Applied) -> anyhow::Result<Vec<Drift>> {
        let live: Vec<LivePeer> = self
            .dataplane
            .peers()
            .into_iter()
            .map(|p| LivePeer { key: WgKey(p.public_key), slot: PeerSlot(p.slot), allowed_ips: p.allowed_ips })
            .collect();
        let open = match &self.xdp {
            Some(maps) => Some(maps.allow.open_slots()?),
            None => None,
        };
        let mut repaired = Vec::new();
        for d in drift::diff(applied, &live, open.as_deref()) {
            match self.apply(&d.repair()) {
                Ok(()) => {
                    tracing::warn!(kind = d.kind(), change = %d, "drift: the live state differed from the chain's; put back");
                    repaired.push(d);
                }
                Err(err) => tracing::error!(kind = d.kind(), change = %d, error = %err, "drift: could not put it back"),
            }
        }
        Ok(repaired)
    }
}
