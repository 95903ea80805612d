//! Summaries of benchmark samples (pure) and the machine's load beside them.

/// The `p`th percentile (nearest rank) of `sorted` samples; NaN if none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), for the report
/// of a timing taken on a shared machine.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 50.0), 5.0);
        assert_eq!(percentile(&ten, 99.0), 10.0, "p99 of ten samples is the largest");
        assert_eq!(percentile(&ten, 0.0), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
