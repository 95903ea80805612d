//! Fuzz target: the configuration loader (`Config::from_toml_and_env`:
//! TOML, then `GATEWAY_*` overrides, then validation). The first line of
//! the input is an environment override `NAME=value`, the rest the file.
//! Whatever comes in, the loader answers with a configuration or with
//! errors that each name a field; an accepted configuration validates.
#![no_main]

use gateway::config::{Config, LoadError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (first, toml) = text.split_once('\n').unwrap_or(("", text));
    let env: Vec<(String, String)> = match first.split_once('=') {
        Some((name, value)) if name.starts_with("GATEWAY_") => vec![(name.to_owned(), value.to_owned())],
        _ => Vec::new(),
    };
    match Config::from_toml_and_env(toml, &env) {
        Ok(config) => assert!(config.validate().is_empty(), "accepted, yet invalid"),
        Err(LoadError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "refused with no problem named");
            for p in &problems {
                assert!(!p.to_string().is_empty(), "a problem with no message");
            }
        }
        Err(_) => {}
    }
});
