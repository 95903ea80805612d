//! Crash points for the chaos soak (I/O edge: reads one environment
//! variable and may SIGKILL the process). `GATEWAY_FAULT_KILL=<point>:<n>`
//! kills the gateway on its n-th pass through [`point`]`(<point>)`, so a
//! test can crash it exactly between two ops of one plan or halfway through
//! writing the registry, moments a kill from outside hits only by luck.
//! Unset (always, outside tests), a point costs one load and one compare.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a crash point.
pub const ENV: &str = "GATEWAY_FAULT_KILL";

/// The points the code passes through, for the soak to pick from.
pub const POINTS: [&str; 3] = ["plan.between_ops", "store.mid_write", "store.before_rename"];

struct Armed {
    point: String,
    /// Passes left before the kill.
    left: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// `<point>:<n>` (n >= 1; `<point>` alone means the first pass).
fn parse(spec: &str) -> Option<(String, u64)> {
    let (point, n) = match spec.rsplit_once(':') {
        Some((point, n)) => (point, n.parse().ok().filter(|n| *n >= 1)?),
        None => (spec, 1),
    };
    (!point.is_empty()).then(|| (point.to_owned(), n))
}

/// Passes through crash point `name`; SIGKILLs the process when it is the
/// armed point and its count runs out.
pub fn point(name: &str) {
    let armed = ARMED.get_or_init(|| {
        let (point, n) = parse(&std::env::var(ENV).ok()?)?;
        Some(Armed { point, left: AtomicU64::new(n) })
    });
    let Some(armed) = armed else { return };
    if armed.point != name || armed.left.fetch_sub(1, Ordering::SeqCst) != 1 {
        return;
    }
    tracing::warn!(point = name, "fault point reached: SIGKILL");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_point_and_a_positive_count() {
        assert_eq!(parse("plan.between_ops:3"), Some(("plan.between_ops".into(), 3)));
        assert_eq!(parse("store.mid_write"), Some(("store.mid_write".into(), 1)));
        assert_eq!(parse("store.mid_write:0"), None, "a zero count would never fire");
        assert_eq!(parse("x:y"), None);
        assert_eq!(parse(""), None);
    }
}
