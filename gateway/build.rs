//! Embeds the XDP object built by `cargo xtask build-ebpf` so one binary
//! runs. Without it the gateway still builds (stable toolchain only, for
//! `cargo check`, clippy and the pure tests) and the loader reports how to
//! build it.

use std::path::{Path, PathBuf};

const OBJECT_NAME: &str = "gateway.bpf.o";

fn main() {
    println!("cargo:rerun-if-env-changed=GATEWAY_BPF_OBJECT");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let found = find_object(&out_dir);
    let dest = out_dir.join(OBJECT_NAME);
    match &found {
        Some(src) => {
            println!("cargo:rerun-if-changed={}", src.display());
            std::fs::copy(src, &dest).expect("copying the eBPF object into OUT_DIR");
        }
        None => {
            println!(
                "cargo:warning=eBPF object not found: run `cargo xtask build-ebpf` (the gateway builds, but cannot attach XDP)"
            );
            std::fs::write(&dest, b"").expect("writing the empty eBPF placeholder");
        }
    }
}

/// `$GATEWAY_BPF_OBJECT`, else `<target dir>/bpf/gateway.bpf.o` where the
/// target dir is the nearest ancestor of OUT_DIR holding a `bpf/` folder
/// (works with `CARGO_TARGET_DIR` and with `--target`).
fn find_object(out_dir: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GATEWAY_BPF_OBJECT") {
        return Some(PathBuf::from(p));
    }
    for dir in out_dir.ancestors() {
        let candidate = dir.join("bpf").join(OBJECT_NAME);
        if candidate.is_file() {
            return Some(candidate);
        }
        if dir.file_name().is_some_and(|n| n == "target") {
            // Watch where the object will appear, so a later build-ebpf
            // triggers a rebuild.
            println!("cargo:rerun-if-changed={}", candidate.display());
            break;
        }
    }
    None
}
