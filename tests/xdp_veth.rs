//! The XDP front on a real veth pair between two network namespaces: every
//! packet is seen and classified, counters are readable through the pins from
//! other processes (ours and bpftool), enforce mode gates transport packets by
//! slot, and detach removes everything.

use anyhow::{Context, Result};
use gateway_tests::netns::{gateway_bin, require_root, run, unique_name, Netns, VethPair};
use gateway_tests::packets;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const GW_ADDR: &str = "198.18.0.1";
const CLIENT_ADDR: &str = "198.18.0.2";
const WG_PORT: u16 = 51820;

/// Runs `gateway <args>`, failing with its stderr.
fn gateway(args: &[&str]) -> Result<String> {
    let bin = gateway_bin();
    let out = run(bin.to_str().context("utf-8 path")?, args)?;
    Ok(String::from_utf8(out.stdout)?)
}

/// Detaches the instance on drop, so a failed test leaves no program or pins.
struct Instance(String);
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::process::Command::new(gateway_bin())
            .args(["xdp", "detach", "--instance", &self.0])
            .output();
    }
}

fn stats(instance: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&gateway(&["xdp", "stats", "--instance", instance, "--json"])?)?)
}

fn count(stats: &serde_json::Value, reason: &str) -> u64 {
    stats[reason].as_u64().unwrap_or(u64::MAX)
}

/// Sends each payload from the client namespace and returns how many the
/// gateway-side socket received within a short wait.
fn send_and_receive(client: &UdpSocket, server: &UdpSocket, to: SocketAddr, payloads: &[Vec<u8>]) -> Result<usize> {
    for p in payloads {
        client.send_to(p, to)?;
    }
    server.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0u8; 2048];
    let mut received = 0;
    while server.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    Ok(received)
}

#[test]
fn xdp_counts_and_gates_wireguard_packets_on_veth() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let gw = Netns::new("xgw")?;
    let client = Netns::new("xcl")?;
    let veth = VethPair::connect(&gw, &format!("{GW_ADDR}/24"), &client, &format!("{CLIENT_ADDR}/24"))?;
    let instance = Instance(unique_name("xt"));
    let inst = instance.0.clone();

    let port = WG_PORT.to_string();
    gateway(&["--netns", gw.name(), "xdp", "attach", "--iface", &veth.a, "--port", &port, "--instance", &inst, "--handshake-rate", "0"])?;
    assert!(std::path::Path::new("/sys/fs/bpf").join(&inst).join("link").exists(), "link pinned");

    let server = gw.within(move || Ok(UdpSocket::bind(("0.0.0.0", WG_PORT))?))?;
    let other = gw.within(|| Ok(UdpSocket::bind(("0.0.0.0", 9999))?))?;
    let sender = client.within(|| Ok(UdpSocket::bind((CLIENT_ADDR, 0))?))?;
    let to_wg: SocketAddr = format!("{GW_ADDR}:{WG_PORT}").parse()?;
    let to_other: SocketAddr = format!("{GW_ADDR}:9999").parse()?;

    // Observe mode: everything is counted under its reason and still delivered.
    let wg_msgs = vec![
        packets::handshake_init(7),
        packets::transport(packets::index_for_slot(5), 64),
        packets::unknown_type(),
    ];
    let got = send_and_receive(&sender, &server, to_wg, &wg_msgs)?;
    assert_eq!(got, 3, "observe mode passes every packet");
    let got_other = send_and_receive(&sender, &other, to_other, &[vec![1, 2, 3], vec![4], vec![5]])?;
    assert_eq!(got_other, 3);

    let s = stats(&inst)?;
    assert_eq!(count(&s, "pass_handshake_init"), 1, "{s}");
    assert_eq!(count(&s, "drop_unknown_slot"), 1, "{s}");
    assert_eq!(count(&s, "drop_malformed"), 1, "{s}");
    assert_eq!(count(&s, "pass_other_port"), 3, "{s}");
    assert_eq!(count(&s, "pass_transport"), 0, "{s}");

    // bpftool reads the same pinned map, with field names from BTF.
    let map = format!("/sys/fs/bpf/{inst}/GW_STATS");
    let dump = String::from_utf8(run("bpftool", &["-j", "map", "dump", "pinned", &map])?.stdout)?;
    assert!(dump.contains("\"drop_unknown_slot\""), "BTF field names in bpftool output: {dump}");
    let dumped: serde_json::Value = serde_json::from_str(&dump)?;
    let mut malformed_sum = 0;
    for entry in dumped.as_array().context("array")? {
        for cpu in entry["formatted"]["values"].as_array().context("values")? {
            malformed_sum += cpu["value"]["drop_malformed"].as_u64().context("field")?;
        }
    }
    assert_eq!(malformed_sum, count(&s, "drop_malformed"), "bpftool and gateway agree");

    // Enforce mode: transport to a closed slot is dropped in the kernel,
    // opening the slot lets it through.
    gateway(&["--netns", gw.name(), "xdp", "attach", "--iface", &veth.a, "--port", &port, "--instance", &inst, "--mode", "enforce", "--replace", "--handshake-rate", "0"])?;
    let t = packets::transport(packets::index_for_slot(5), 64);
    assert_eq!(send_and_receive(&sender, &server, to_wg, std::slice::from_ref(&t))?, 0, "closed slot dropped");
    gateway(&["xdp", "allow", "5", "--instance", &inst])?;
    assert_eq!(send_and_receive(&sender, &server, to_wg, std::slice::from_ref(&t))?, 1, "open slot passes");
    gateway(&["xdp", "close", "5", "--instance", &inst])?;
    assert_eq!(send_and_receive(&sender, &server, to_wg, std::slice::from_ref(&t))?, 0, "closed again");

    // Denied endpoint: the client's initiations are dropped until the deny lapses.
    let from = sender.local_addr()?.to_string();
    gateway(&["xdp", "deny", &from, "--seconds", "60", "--instance", &inst])?;
    assert_eq!(send_and_receive(&sender, &server, to_wg, &[packets::handshake_init(8)])?, 0, "denied");
    let s = stats(&inst)?;
    assert_eq!(count(&s, "drop_unknown_slot"), 2, "{s}");
    assert_eq!(count(&s, "pass_transport"), 1, "{s}");
    assert_eq!(count(&s, "drop_denied_endpoint"), 1, "{s}");

    gateway(&["xdp", "detach", "--instance", &inst])?;
    assert!(!std::path::Path::new("/sys/fs/bpf").join(&inst).exists(), "pins removed");
    let link = String::from_utf8(gw.ip(&["link", "show", &veth.a])?.stdout)?;
    assert!(!link.contains("xdp"), "program detached: {link}");
    Ok(())
}
