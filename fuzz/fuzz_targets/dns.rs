//! Fuzz target: a datagram at the node-name DNS responder, and the same
//! bytes through the response parser the tests use. A response, when there
//! is one, carries the query's id, has the response flag set, parses, and
//! gives an address only for the one granted node id.
#![no_main]

use std::net::Ipv4Addr;

use gateway::dns::wire::{parse_response, respond};
use libfuzzer_sys::fuzz_target;

const GRANTED: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);

fuzz_target!(|data: &[u8]| {
    let _ = parse_response(data);
    let resolve = |node: &str| (node == "node-1").then_some(GRANTED);
    let Some(response) = respond(data, "vpn.dstack", resolve) else { return };
    assert!(response.len() >= 12, "a response shorter than a header");
    assert_eq!(response[..2], data[..2], "the response names another query id");
    assert!(response[2] & 0x80 != 0, "the response flag is not set");
    let (_, addresses) = parse_response(&response).unwrap_or_else(|| panic!("our own response does not parse: {response:02x?}"));
    assert!(addresses.iter().all(|a| *a == GRANTED), "answered {addresses:?}");
});
