//! Splits a block interval into bounded `eth_getLogs` ranges and adapts the
//! span when a node refuses a range as too large (pure).

/// Public RPC providers commonly cap `eth_getLogs` at 2,000 to 10,000 blocks;
/// 2,000 is accepted by all the ones we know of.
pub const DEFAULT_MAX_BLOCK_SPAN: u64 = 2_000;

/// The span never shrinks below one block: a one-block range that still fails
/// is a node problem, not a range problem.
const MIN_BLOCK_SPAN: u64 = 1;

/// An inclusive block interval `[from, to]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    pub from: u64,
    pub to: u64,
}

/// The span used for the next `eth_getLogs`: halved when a node rejects a
/// range, grown back towards the configured maximum after successes.
#[derive(Clone, Debug)]
pub struct AdaptiveSpan {
    max: u64,
    current: u64,
}

impl AdaptiveSpan {
    pub fn new(max: u64) -> Self {
        let max = max.max(MIN_BLOCK_SPAN);
        Self { max, current: max }
    }

    pub fn current(&self) -> u64 {
        self.current
    }

    /// The next range to fetch, starting at `from` and ending at `head` at most.
    pub fn next_range(&self, from: u64, head: u64) -> Option<BlockRange> {
        if from > head {
            return None;
        }
        let to = from.saturating_add(self.current - 1).min(head);
        Some(BlockRange { from, to })
    }

    /// Returns false when the span cannot shrink any further.
    pub fn shrink(&mut self) -> bool {
        if self.current <= MIN_BLOCK_SPAN {
            return false;
        }
        self.current = (self.current / 2).max(MIN_BLOCK_SPAN);
        true
    }

    pub fn grow(&mut self) {
        self.current = self.current.saturating_mul(2).min(self.max);
    }
}

/// Every range from `from` to `to` inclusive, each at most `max_span` blocks long.
pub fn split_ranges(from: u64, to: u64, max_span: u64) -> Vec<BlockRange> {
    let span = AdaptiveSpan::new(max_span);
    let mut ranges = Vec::new();
    let mut next = from;
    while let Some(range) = span.next_range(next, to) {
        ranges.push(range);
        match range.to.checked_add(1) {
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
    fn shrinks_to_one_block_then_refuses_and_grows_back_to_max() {
        let mut span = AdaptiveSpan::new(8);
        assert!(span.shrink());
        assert_eq!(span.current(), 4);
        assert!(span.shrink());
        assert!(span.shrink());
        assert_eq!(span.current(), 1);
        assert!(!span.shrink());
        span.grow();
        span.grow();
        span.grow();
        span.grow();
        assert_eq!(span.current(), 8);
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
