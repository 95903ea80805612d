//! Fuzz target: the registry loader (`store::registry_file::decode`, the
//! whole loader but the file read). A document it accepts must save and
//! load back to the same registry: a file the gateway wrote itself is
//! never refused on the next start.
#![no_main]

use std::net::Ipv4Addr;
use std::path::Path;

use gateway::store::registry_file::decode;
use gateway_core::chain::Address;
use gateway_core::registry::{Ipv4Cidr, Network};
use libfuzzer_sys::fuzz_target;

/// The contract and network of the seeds in fuzz/corpus/registry.
const CONTRACT: &str = "0x37d2106badb01dd5be1926e45d172cb4203c4186";

fuzz_target!(|data: &[u8]| {
    let (Ok(contract), Ok(cidr)) = (Address::parse(CONTRACT), Ipv4Cidr::new(Ipv4Addr::new(10, 88, 0, 0), 24)) else {
        panic!("the target's own constants do not parse");
    };
    let network = Network { cidr, dns_server: Ipv4Addr::new(10, 88, 0, 1) };
    let path = Path::new("registry.json");
    let Ok(registry) = decode(path, data, contract, network.clone()) else { return };
    let saved = serde_json::to_vec(&registry.to_document()).unwrap_or_else(|e| panic!("encoding: {e}"));
    match decode(path, &saved, contract, network) {
        Ok(again) => assert_eq!(again, registry, "saved and loaded back, the registry differs"),
        Err(err) => panic!("the registry refused what it saved: {err}\n{}", String::from_utf8_lossy(&saved)),
    }
});
