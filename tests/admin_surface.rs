//! The admin surface seen from another host (a node's network namespace
//! on the gateway's LAN; real gateway with XDP): health and metrics on their
//! own listener beyond loopback, the peer and access API on loopback only,
//! or on the LAN behind a bearer token read from a 0600 file.

use anyhow::{ensure, Context, Result};
use gateway_tests::lab::{write_secret, Lab, GATEWAY_LAN_IP, HTTP_PORT};
use gateway_tests::netns::Netns;
use std::io::{Read, Write};
use std::time::Duration;

const METRICS_PORT: u16 = 9181;

/// GET `http://{ip}:{port}{path}` from inside `ns` with `headers`: the
/// status and the whole response, or the connection error.
fn get_from(ns: &Netns, ip: &str, port: u16, path: &str, headers: &str) -> Result<(u16, String)> {
    let (ip, path, headers) = (ip.to_string(), path.to_string(), headers.to_string());
    ns.within(move || {
        let addr: std::net::SocketAddr = format!("{ip}:{port}").parse()?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\n{headers}\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text.get(9..12).context("status line")?.parse()?;
        Ok((status, text))
    })
}

#[test]
fn metrics_reach_another_host_and_the_peer_api_stays_on_loopback() -> Result<()> {
    if !gateway_tests::netns::require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    lab.gateway_env.push(("GATEWAY_HTTP_METRICS_LISTEN".into(), format!("0.0.0.0:{METRICS_PORT}")));
    lab.start_gateway("")?;
    let node = &lab.nodes[0];
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, text) = get_from(node, GATEWAY_LAN_IP, METRICS_PORT, path, "")?;
        ensure!(status == 200, "{path} from the LAN: {text}");
    }
    let (_, metrics) = get_from(node, GATEWAY_LAN_IP, METRICS_PORT, "/metrics", "")?;
    ensure!(metrics.contains("gw_xdp_packets_total{"), "{metrics}");
    for path in ["/v1/peers", "/v1/access/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="] {
        let (status, _) = get_from(node, GATEWAY_LAN_IP, METRICS_PORT, path, "")?;
        ensure!(status == 404, "{path} on the metrics listener answered {status}");
    }
    // The API listener is on the gateway's loopback: nothing answers on the LAN.
    let refused = get_from(node, GATEWAY_LAN_IP, HTTP_PORT, "/v1/peers", "");
    ensure!(refused.is_err(), "the peer API answered on the LAN: {refused:?}");
    let (status, peers) = lab.http_get("/v1/peers")?;
    ensure!(status == 200 && peers.contains("\"peers\""), "on loopback the API answers: {status} {peers}");
    Ok(())
}

#[test]
fn the_peer_api_beyond_loopback_wants_the_bearer_token() -> Result<()> {
    if !gateway_tests::netns::require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(1)?;
    let token = "dGVzdC10b2tlbi1mb3ItdGhlLWFkbWluLWFwaQ";
    let token_file = lab.dir.path().join("api.token");
    write_secret(&token_file, &format!("{token}\n"))?;
    lab.gateway_env.push(("GATEWAY_HTTP_LISTEN".into(), format!("0.0.0.0:{HTTP_PORT}")));
    lab.gateway_env.push(("GATEWAY_HTTP_API_TOKEN_FILE".into(), token_file.display().to_string()));
    lab.start_gateway("")?;
    let node = &lab.nodes[0];
    // 32 bytes of 'a': a valid key bound to no token (the all-zero key is a
    // low-order point, refused as invalid_key with 400 before any lookup).
    let key = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=";
    let (status, text) = get_from(node, GATEWAY_LAN_IP, HTTP_PORT, "/v1/peers", "")?;
    ensure!(status == 401 && !text.contains("\"peers\""), "without a token: {text}");
    let (status, _) = get_from(node, GATEWAY_LAN_IP, HTTP_PORT, &format!("/v1/access/{key}"), "Authorization: Bearer wrong-token-of-some-length\r\n")?;
    ensure!(status == 401, "a wrong token: {status}");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, text) = get_from(node, GATEWAY_LAN_IP, HTTP_PORT, "/v1/peers", &bearer)?;
    ensure!(status == 200 && text.contains("\"peers\""), "with the token: {text}");
    let (status, _) = get_from(node, GATEWAY_LAN_IP, HTTP_PORT, &format!("/v1/access/{key}"), &bearer)?;
    ensure!(status == 403, "an unknown key is denied, with the token: {status}");
    // Health and metrics need no token; the refusals are counted.
    let (status, metrics) = get_from(node, GATEWAY_LAN_IP, HTTP_PORT, "/metrics", "")?;
    ensure!(status == 200 && metrics.contains("gw_http_unauthorized_total 2\n"), "{metrics}");
    Ok(())
}

#[test]
fn a_token_file_others_can_read_stops_the_start() -> Result<()> {
    if !gateway_tests::netns::require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(0)?;
    let token_file = lab.dir.path().join("api.token");
    write_secret(&token_file, "dGVzdC10b2tlbi1mb3ItdGhlLWFkbWluLWFwaQ\n")?;
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    lab.gateway_env.push(("GATEWAY_HTTP_API_TOKEN_FILE".into(), token_file.display().to_string()));
    let started = lab.start_gateway("");
    let err = format!("{:#}", started.err().context("the gateway started with a token file others can read")?);
    ensure!(err.contains("chmod 600"), "{err}");
    Ok(())
}
