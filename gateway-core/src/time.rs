//! Time as values (pure, no clock read here): [`MonoTime`], a reading of a
//! monotonic clock that the caller passes in as `now`, and unix seconds <->
//! RFC 3339 UTC (`2025-01-06T16:00:00Z`), the timestamp form of the seed's
//! registry and of the audit log.

use std::time::Duration;

/// A reading of a monotonic clock: time since an origin the caller picks.
/// The daemon passes CLOCK_MONOTONIC (the clock `bpf_ktime_get_ns` reads, so
/// deny expiries compare in the kernel); tests start a simulated clock at 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoTime(Duration);

impl MonoTime {
    pub const ZERO: MonoTime = MonoTime(Duration::ZERO);

    pub fn from_nanos(nanos: u64) -> Self {
        MonoTime(Duration::from_nanos(nanos))
    }

    /// Nanoseconds since the origin (saturating past 584 years).
    pub fn as_nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long after `earlier` this is; zero when it is not later.
    pub fn saturating_since(self, earlier: MonoTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for MonoTime {
    type Output = MonoTime;
    fn add(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(d))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses what [`rfc3339`] writes (UTC, whole seconds; a fractional part as
/// JavaScript's `toISOString` writes it is accepted and dropped).
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    // `get`, not indexing: byte 19 of hostile text may fall inside a character.
    let tail = s.get(19..)?;
    let tail_ok = tail == "Z"
        || (tail.starts_with('.')
            && tail.ends_with('Z')
            && tail.len() > 2
            && tail[1..tail.len() - 1].bytes().all(|c| c.is_ascii_digit()));
    if !tail_ok {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if y < 1970 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + sec)).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_character_across_byte_19_is_refused_not_a_panic() {
        // The registry fuzzer's crash: 'Ф' is two bytes, 18 and 19.
        assert_eq!(parse_rfc3339("2026-12-02T12:00:0\u{424}"), None);
        assert_eq!(parse_rfc3339("2026-12-02T12:00:0\u{424}Z"), None);
    }

    #[test]
    fn monotonic_readings_add_and_subtract_without_panicking() {
        let t = MonoTime::from_nanos(1_500);
        assert_eq!((t + Duration::from_nanos(500)).as_nanos(), 2_000);
        assert_eq!(t.saturating_since(MonoTime::ZERO), Duration::from_nanos(1_500));
        assert_eq!(MonoTime::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!((MonoTime::from_nanos(u64::MAX) + Duration::from_secs(1_000_000_000)).as_nanos(), u64::MAX);
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_736_179_200), "2025-01-06T16:00:00Z");
        assert_eq!(parse_rfc3339("2025-01-06T16:00:00Z"), Some(1_736_179_200));
        assert_eq!(parse_rfc3339("2025-01-06T16:00:00.123Z"), Some(1_736_179_200));
        assert_eq!(parse_rfc3339("2025-01-06 16:00:00Z"), None);
        assert_eq!(parse_rfc3339("2025-13-06T16:00:00Z"), None);
        assert_eq!(parse_rfc3339("2025-01-06T16:00:00+01:00"), None);
    }

    proptest::proptest! {
        #[test]
        fn round_trip(t in 0u64..253_402_300_799) {
            proptest::prop_assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
    }
}
