//! Applies plan ops to the XDP maps and the data plane (I/O edge). The order
//! comes from the plan (revoke: XDP first; grant: WireGuard first); this only
//! carries each op out and says whether it worked.

use crate::dataplane::peer::PeerConfig;
use crate::dataplane::runtime::DataplaneHandle;
use gateway_core::plan::Op;
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
                    Some(_) => {
                        self.dataplane.remove_peer(&key.0)?;
                        self.dataplane.add_peer(config)?;
                    }
                    None => self.dataplane.add_peer(config)?,
                }
            }
        }
        Ok(())
    }
}
