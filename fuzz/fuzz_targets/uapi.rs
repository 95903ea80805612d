//! Fuzz target: a UAPI connection's bytes (`get=1` / `set=1` requests, each
//! ended by a blank line) against a real `Device`, as the socket server
//! reads them. Every refusal must carry an errno `wg` knows, and `get=1`
//! must render `key=value` lines whatever the sets before it did.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use gateway::dataplane::device::Device;
use gateway::dataplane::uapi::{apply_set, render_get};
use libfuzzer_sys::fuzz_target;

const LISTEN_PORT: u16 = 51820;
/// EINVAL, ENOENT, ENOSPC, EEXIST, EOPNOTSUPP.
const KNOWN_ERRNOS: [i32; 5] = [22, 2, 28, 17, 95];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut device = Device::new([7; 32]);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for request in text.split("\n\n") {
        let (command, body) = request.split_once('\n').unwrap_or((request, ""));
        match command {
            "get=1" => {
                let rendered = render_get(&device, LISTEN_PORT, now);
                for line in rendered.lines() {
                    assert!(line.split_once('=').is_some_and(|(k, _)| !k.is_empty()), "get=1 rendered {line:?}");
                }
            }
            "set=1" => {
                let mut body = body.to_owned();
                body.push('\n');
                if let Err(err) = apply_set(&mut device, LISTEN_PORT, &body) {
                    assert!(KNOWN_ERRNOS.contains(&err.errno()), "{err} answered errno {}", err.errno());
                }
            }
            // The server closes the connection on anything else.
            _ => return,
        }
    }
});
