//! Block ranges, and a block interval split into bounded `eth_getLogs`
//! ranges for one-off listings (pure). The follower aims its ranges by the
//! provider's answers instead (`log_span`).

/// Public RPC providers commonly cap `eth_getLogs` at 2,000 to 10,000 blocks;
/// 2,000 is accepted by all the ones we know of (`gateway node list` asks
/// in ranges this wide, without reading refusals).
pub const DEFAULT_MAX_BLOCK_SPAN: u64 = 2_000;

/// An inclusive block interval `[from, to]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    pub from: u64,
    pub to: u64,
}

/// Every range from `from` to `to` inclusive, each at most `max_span` blocks long.
pub fn split_ranges(from: u64, to: u64, max_span: u64) -> Vec<BlockRange> {
    let span = max_span.max(1);
    let mut ranges = Vec::new();
    let mut next = from;
    while next <= to {
        let end = next.saturating_add(span - 1).min(to);
        ranges.push(BlockRange { from: next, to: end });
        match end.checked_add(1) {
            Some(after) => next = after,
            None => break,
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn splits_into_contiguous_bounded_ranges() {
        let ranges = split_ranges(10, 4_509, 2_000);
        assert_eq!(
            ranges,
            vec![
                BlockRange { from: 10, to: 2_009 },
                BlockRange { from: 2_010, to: 4_009 },
                BlockRange { from: 4_010, to: 4_509 },
            ]
        );
    }

    #[test]
    fn single_block_and_empty_intervals() {
        assert_eq!(split_ranges(7, 7, 100), vec![BlockRange { from: 7, to: 7 }]);
        assert!(split_ranges(8, 7, 100).is_empty());
    }

    #[test]
    fn zero_span_is_treated_as_one_block() {
        assert_eq!(split_ranges(1, 3, 0).len(), 3);
    }

    #[test]
    fn does_not_overflow_at_the_top_of_u64() {
        let ranges = split_ranges(u64::MAX - 1, u64::MAX, 10);
        assert_eq!(ranges, vec![BlockRange { from: u64::MAX - 1, to: u64::MAX }]);
    }

    #[test]
    fn covers_every_block_exactly_once() {
        for max in 1..20 {
            let ranges = split_ranges(3, 100, max);
            let blocks: Vec<u64> = ranges.iter().flat_map(|r| r.from..=r.to).collect();
            assert_eq!(blocks, (3..=100).collect::<Vec<_>>());
            assert!(ranges.iter().all(|r| r.to - r.from < max));
        }
    }
}
