//! A node's wg-quick configuration (pure): its tunnel address derived from its
//! token id exactly as the registry places it, the gateway as its one peer.
//! No files, no clock: `config::cli` reads the inputs and prints the result.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use gateway_core::chain::TokenId;
use gateway_core::registry::document::hostname;
use gateway_core::registry::{AccessReason, Network, PlacementError, Registry, TokenView, WgKey};

/// What the placeholder line says when no private key is filled in.
pub const PRIVATE_KEY_PLACEHOLDER: &str = "<paste yours>";

/// A node's WireGuard private key. Only [`render`] ever writes it out, and
/// only into the configuration the node asked for; `Debug` hides it.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(bytes)
    }

    /// The public half (X25519), as bound on chain.
    pub fn public_key(&self) -> WgKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        WgKey(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Everything one rendering needs; the caller gathered it.
#[derive(Clone, Debug)]
pub struct NodeConfigInput<'a> {
    /// The tunnel network (`[network] cidr`, `dns_server`).
    pub network: &'a Network,
    /// Hostname suffix (`[network] domain`).
    pub domain: &'a str,
    pub token_id: TokenId,
    pub node_id: &'a str,
    /// The token's standing in the registry, shown as a comment.
    pub standing: AccessReason,
    /// The key bound on chain, if any: a filled-in private key must match it.
    pub bound_key: Option<WgKey>,
    pub gateway_public_key: &'a WgKey,
    /// `[wireguard] public_endpoint`, `host:port`.
    pub endpoint: &'a str,
    /// `[wireguard] persistent_keepalive`; 0 leaves the line out (wg-quick: off).
    pub persistent_keepalive: u16,
    /// Fills `PrivateKey =`; `None` writes the placeholder.
    pub private_key: Option<&'a PrivateKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("token {token_id} has no tunnel address: {source}")]
    NoAddress { token_id: TokenId, source: PlacementError },
    #[error("wireguard.public_endpoint {0:?} is not host:port (set the address nodes dial, e.g. gateway.example.com:51820)")]
    BadEndpoint(String),
    #[error("the private key's public half {derived} is not the key bound to token {token_id} ({bound}); the gateway would refuse it")]
    KeyMismatch { token_id: TokenId, derived: WgKey, bound: String },
}

/// Why `--node` names no single token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeLookupError {
    #[error("node {node:?} is not in the registry ({known} tokens known): check the node id or token id, and that the gateway has seen its mint (grants wait for confirmations)")]
    Unknown { node: String, known: usize },
    #[error("node id {node:?} is on several tokens ({tokens:?}) and none or several are granted: pass the token id instead")]
    Ambiguous { node: String, tokens: Vec<TokenId> },
}

/// Finds the token `node` names: a number is a token id first (as in
/// `gateway node info`), otherwise a node id. Of several tokens carrying one
/// node id (a seed contract does not enforce uniqueness) the granted one wins.
pub fn find_node(registry: &Registry, node: &str) -> Result<TokenView, NodeLookupError> {
    if let Some(view) = node.trim().parse::<TokenId>().ok().and_then(|t| registry.view(t)) {
        return Ok(view);
    }
    let matches: Vec<TokenView> = registry.views().filter(|v| v.node_id == node).collect();
    let granted: Vec<&TokenView> = matches.iter().filter(|v| v.is_granted()).collect();
    match (matches.len(), granted.as_slice()) {
        (0, _) => Err(NodeLookupError::Unknown { node: node.to_string(), known: registry.views().count() }),
        (1, _) => Ok(matches[0].clone()),
        (_, [only]) => Ok((*only).clone()),
        _ => Err(NodeLookupError::Ambiguous {
            node: node.to_string(),
            tokens: matches.iter().map(|v| v.token_id).collect(),
        }),
    }
}

/// `host:port` with a non-zero port (`[v6]:port` too).
fn endpoint_is_valid(endpoint: &str) -> bool {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

/// The wg-quick file for one node.
pub fn render(input: &NodeConfigInput<'_>) -> Result<String, RenderError> {
    let placement = input
        .network
        .place(input.token_id)
        .map_err(|source| RenderError::NoAddress { token_id: input.token_id, source })?;
    if !endpoint_is_valid(input.endpoint) {
        return Err(RenderError::BadEndpoint(input.endpoint.to_string()));
    }
    let private_key = match input.private_key {
        Some(key) => {
            let derived = key.public_key();
            if input.bound_key != Some(derived) {
                let bound = input.bound_key.map_or_else(|| "no key bound".to_string(), |k| k.to_base64());
                return Err(RenderError::KeyMismatch { token_id: input.token_id, derived, bound });
            }
            STANDARD.encode(key.0)
        }
        None => PRIVATE_KEY_PLACEHOLDER.to_string(),
    };
    let host = hostname(input.node_id, input.domain);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# wg-quick configuration for node {} (token {}{})", input.node_id, input.token_id, if host.is_empty() { String::new() } else { format!(", {host}") });
    let _ = writeln!(out, "# access: {}", input.standing);
    let _ = writeln!(out, "[Interface]");
    let _ = writeln!(out, "Address = {}/{}", placement.tunnel_ip, input.network.cidr.prefix());
    let _ = writeln!(out, "DNS = {}", input.network.dns_server);
    let _ = writeln!(out, "PrivateKey = {private_key}");
    let _ = writeln!(out);
    let _ = writeln!(out, "[Peer]");
    let _ = writeln!(out, "# the dstack gateway ({})", input.network.gateway_ip());
    let _ = writeln!(out, "PublicKey = {}", input.gateway_public_key);
    let _ = writeln!(out, "Endpoint = {}", input.endpoint);
    let _ = writeln!(out, "AllowedIPs = {}", input.network.cidr);
    if input.persistent_keepalive > 0 {
        let _ = writeln!(out, "PersistentKeepalive = {}", input.persistent_keepalive);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gateway_core::testing::{granted, granted_raw, key, key_b64, registry, revoked};

    fn net(cidr: &str) -> Network {
        Network { cidr: cidr.parse().unwrap(), dns_server: "10.0.0.1".parse().unwrap() }
    }

    fn input<'a>(network: &'a Network, gw: &'a WgKey, token_id: TokenId) -> NodeConfigInput<'a> {
        NodeConfigInput {
            network,
            domain: "vpn.dstack",
            token_id,
            node_id: "node-a",
            standing: AccessReason::Granted,
            bound_key: None,
            gateway_public_key: gw,
            endpoint: "gw.example.com:51820",
            persistent_keepalive: 25,
            private_key: None,
        }
    }

    #[test]
    fn renders_the_whole_file_with_a_placeholder_key() {
        let network = net("10.0.0.0/24");
        let gw = WgKey([9; 32]);
        let text = render(&input(&network, &gw, 1)).unwrap();
        let expected = format!(
            "# wg-quick configuration for node node-a (token 1, node-a.vpn.dstack)\n\
             # access: granted\n\
             [Interface]\n\
             Address = 10.0.0.2/24\n\
             DNS = 10.0.0.1\n\
             PrivateKey = <paste yours>\n\
             \n\
             [Peer]\n\
             # the dstack gateway (10.0.0.1)\n\
             PublicKey = {gw}\n\
             Endpoint = gw.example.com:51820\n\
             AllowedIPs = 10.0.0.0/24\n\
             PersistentKeepalive = 25\n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn the_address_is_the_registrys_placement() {
        let network = net("10.64.0.0/16");
        let gw = WgKey([9; 32]);
        for t in [1u128, 254, 255, 300, 65_533] {
            let placed = network.place(t).unwrap().tunnel_ip;
            let text = render(&input(&network, &gw, t)).unwrap();
            assert!(text.contains(&format!("\nAddress = {placed}/16\n")), "token {t}: {text}");
        }
        assert_eq!(network.place(300).unwrap().tunnel_ip.to_string(), "10.64.1.45");
    }

    #[test]
    fn tokens_without_an_address_are_refused() {
        let network = net("10.0.0.0/24");
        let gw = WgKey([9; 32]);
        assert_eq!(
            render(&input(&network, &gw, 0)),
            Err(RenderError::NoAddress { token_id: 0, source: PlacementError::Reserved })
        );
        assert_eq!(
            render(&input(&network, &gw, 254)),
            Err(RenderError::NoAddress { token_id: 254, source: PlacementError::NetworkFull })
        );
    }

    #[test]
    fn endpoint_must_be_host_and_port() {
        let network = net("10.0.0.0/24");
        let gw = WgKey([9; 32]);
        for bad in ["", "gw.example.com", "gw.example.com:0", ":51820", "gw:port"] {
            let mut i = input(&network, &gw, 1);
            i.endpoint = bad;
            assert_eq!(render(&i), Err(RenderError::BadEndpoint(bad.into())), "{bad:?}");
        }
        let mut i = input(&network, &gw, 1);
        i.endpoint = "[2001:db8::1]:51820";
        assert!(render(&i).unwrap().contains("Endpoint = [2001:db8::1]:51820\n"));
    }

    #[test]
    fn keepalive_zero_leaves_the_line_out() {
        let network = net("10.0.0.0/24");
        let gw = WgKey([9; 32]);
        let mut i = input(&network, &gw, 1);
        i.persistent_keepalive = 0;
        assert!(!render(&i).unwrap().contains("PersistentKeepalive"));
    }

    #[test]
    fn a_private_key_fills_the_line_only_when_it_matches_the_bound_key() {
        let network = net("10.0.0.0/24");
        let gw = WgKey([9; 32]);
        let private = PrivateKey::from_bytes([3; 32]);
        let mut i = input(&network, &gw, 1);
        i.private_key = Some(&private);
        i.bound_key = Some(private.public_key());
        let text = render(&i).unwrap();
        assert!(text.contains(&format!("\nPrivateKey = {}\n", STANDARD.encode([3u8; 32]))));
        assert!(!text.contains(PRIVATE_KEY_PLACEHOLDER));

        i.bound_key = Some(WgKey([4; 32]));
        assert!(matches!(render(&i), Err(RenderError::KeyMismatch { token_id: 1, .. })));
        i.bound_key = None;
        assert!(matches!(render(&i), Err(RenderError::KeyMismatch { .. })));
        assert_eq!(format!("{private:?}"), "PrivateKey(<redacted>)");
    }

    #[test]
    fn public_half_matches_rfc7748() {
        // RFC 7748 section 6.1, Alice.
        let private: [u8; 32] = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap().try_into().unwrap();
        let public = hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a").unwrap();
        assert_eq!(PrivateKey::from_bytes(private).public_key().0.to_vec(), public);
    }

    #[test]
    fn nodes_are_found_by_token_id_or_node_id() {
        let mut reg = registry();
        reg.apply(&granted(1, 11, 10, 0), 100);
        reg.apply(&granted(2, 22, 10, 1), 100);
        assert_eq!(find_node(&reg, "2").unwrap().token_id, 2);
        assert_eq!(find_node(&reg, "node-1").unwrap().token_id, 1);
        assert_eq!(find_node(&reg, "node-1").unwrap().key, Some(key(11)));
        assert_eq!(
            find_node(&reg, "node-9"),
            Err(NodeLookupError::Unknown { node: "node-9".into(), known: 2 })
        );
        assert!(matches!(find_node(&reg, "7"), Err(NodeLookupError::Unknown { .. })));
    }

    #[test]
    fn a_node_id_on_several_tokens_resolves_to_the_granted_one_or_asks_for_the_token() {
        let mut reg = registry();
        reg.apply(&granted_raw(3, "dup", &key_b64(33), 10, 0), 100);
        reg.apply(&granted_raw(4, "dup", &key_b64(44), 10, 1), 100);
        assert_eq!(
            find_node(&reg, "dup"),
            Err(NodeLookupError::Ambiguous { node: "dup".into(), tokens: vec![3, 4] })
        );
        reg.apply(&revoked(3, 11, 0), 100);
        assert_eq!(find_node(&reg, "dup").unwrap().token_id, 4);
    }

    #[test]
    fn a_revoked_node_still_renders_and_says_so() {
        let mut reg = registry();
        reg.apply(&granted(1, 11, 10, 0), 100);
        reg.apply(&revoked(1, 11, 0), 100);
        let view = find_node(&reg, "node-1").unwrap();
        let gw = WgKey([9; 32]);
        let mut i = input(reg.network(), &gw, view.token_id);
        i.standing = view.reason;
        assert!(render(&i).unwrap().contains("\n# access: revoked\n"));
    }
}
