//! The names the zone answers (pure): node id (lower case) -> tunnel address
//! of its granted token, built from the registry whenever it changes, so a
//! query never waits on the control core nor scans every token.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use gateway_core::registry::Registry;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    addresses: HashMap<String, Ipv4Addr>,
}

impl Zone {
    /// Every granted token's node id; when several share one, the lowest
    /// token id holds the name.
    pub fn from_registry(registry: &Registry) -> Self {
        let mut addresses = HashMap::new();
        for view in registry.views() {
            if let Some(admission) = view.admission() {
                addresses.entry(view.node_id.to_ascii_lowercase()).or_insert(admission.tunnel_ip);
            }
        }
        Zone { addresses }
    }

    /// Node ids are ASCII; DNS names are case-insensitive.
    pub fn resolve(&self, node_id: &str) -> Option<Ipv4Addr> {
        self.addresses.get(&node_id.to_ascii_lowercase()).copied()
    }
}

impl super::Names for RwLock<Zone> {
    fn resolve(&self, node_id: &str) -> Option<Ipv4Addr> {
        self.read().unwrap_or_else(|p| p.into_inner()).resolve(node_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gateway_core::testing::{granted_raw, key_b64, registry, revoked};

    #[test]
    fn a_node_id_resolves_while_its_token_is_granted() {
        let mut reg = registry();
        reg.apply(&granted_raw(1, "Alpha", &key_b64(11), 10, 0), 100);
        reg.apply(&granted_raw(5, "alpha", &key_b64(55), 10, 1), 100);
        let ip = |zone: &Zone| zone.resolve("ALPHA").map(|ip| ip.to_string());
        let zone = Zone::from_registry(&reg);
        assert_eq!(ip(&zone), Some("10.88.0.2".to_string()), "case-insensitive, lowest token first");
        assert_eq!(zone.resolve("beta"), None);
        reg.apply(&revoked(1, 11, 0), 101);
        assert_eq!(ip(&Zone::from_registry(&reg)), Some("10.88.0.6".to_string()), "the other token still holds the name");
        reg.apply(&revoked(5, 11, 1), 101);
        assert_eq!(Zone::from_registry(&reg).resolve("alpha"), None, "a revoked node's name stops resolving");
    }
}
