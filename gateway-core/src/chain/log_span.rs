//! How many blocks the next `eth_getLogs` asks for, and what to do after a
//! refusal (pure). A backfill starts by asking for everything up to a large
//! ceiling and lets the provider say what fits: its suggested range is used
//! at once, a block cap it names is never exceeded again, a result cap it
//! names aims the span by the density of logs just seen, and the span grows
//! again while answers are small. One refused call per limit learned is the
//! whole cost of not knowing the provider in advance. (Rate limits are not
//! about the range: the follower waits them out for any call.)

use super::provider::LogsVerdict;

/// Above any chain's length today (Base: about 30 million blocks after two
/// years): a provider that answers the whole history at once is asked once.
pub const SPAN_CEILING: u64 = 100_000_000;

/// The logs an answer is aimed at when no provider has named its cap: below
/// the 10,000 that Alchemy and Infura allow, the lowest common cap we know of.
const DEFAULT_TARGET_LOGS: u64 = 8_000;

/// Aim below a named result cap, so a slightly denser next stretch still fits.
const TARGET_SHARE_OF_CAP: f64 = 0.8;

/// The span grows at most this much from one answer to the next: density
/// seen over a stretch says little about a stretch eight times longer.
const MAX_GROWTH: u64 = 8;

/// What the follower does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextLogs {
    /// Ask `[from, to]` now.
    Ask { from: u64, to: u64 },
    /// Even one block does not fit: the endpoint's problem, not the range's.
    Fail,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogSpan {
    ceiling: u64,
    /// A block cap a provider named: never ask wider.
    block_cap: Option<u64>,
    /// A result cap a provider named: aim by density under it.
    result_cap: Option<u64>,
    /// The provider answers an oversized request with the exact range that
    /// fits: overshooting then costs one call, so the span aims at the cap itself.
    suggests: bool,
    /// The span of the next request.
    next: u64,
}

impl LogSpan {
    /// Starts at the ceiling (`SPAN_CEILING` unless configured lower).
    pub fn new(ceiling: u64) -> Self {
        let ceiling = ceiling.max(1);
        Self { ceiling, block_cap: None, result_cap: None, suggests: false, next: ceiling }
    }

    /// The widest span asked now.
    pub fn span(&self) -> u64 {
        self.next
    }

    fn limit(&self) -> u64 {
        self.block_cap.map_or(self.ceiling, |cap| cap.min(self.ceiling)).max(1)
    }

    /// The next range from `from`, ending at `head` at most.
    pub fn range(&self, from: u64, head: u64) -> Option<(u64, u64)> {
        (from <= head).then(|| (from, from.saturating_add(self.next - 1).min(head)))
    }

    /// `[from, to]` was answered with `logs` logs: aim the next span.
    pub fn answered(&mut self, from: u64, to: u64, logs: u64) {
        let asked = to.saturating_sub(from).saturating_add(1);
        let share = if self.suggests { 1.0 } else { TARGET_SHARE_OF_CAP };
        let target = self.result_cap.map_or(DEFAULT_TARGET_LOGS, |cap| ((cap as f64 * share) as u64).max(1));
        let aimed = if logs == 0 {
            asked.saturating_mul(MAX_GROWTH)
        } else {
            // u128: a 100-million-block span times a 20,000-log target.
            u64::try_from(u128::from(asked) * u128::from(target) / u128::from(logs)).unwrap_or(u64::MAX)
        };
        // Never below what was just asked while that fit under the target,
        // never more than MAX_GROWTH times it, never past the cap.
        let floor = if logs <= target { asked } else { 1 };
        self.next = aimed.clamp(floor, asked.saturating_mul(MAX_GROWTH)).min(self.limit()).max(1);
    }

    /// `[from, to]` was refused and classified as `verdict`.
    pub fn refused(&mut self, from: u64, to: u64, verdict: LogsVerdict) -> NextLogs {
        let asked = to.saturating_sub(from).saturating_add(1);
        match verdict {
            LogsVerdict::UseRange { from: s_from, to: s_to, cap, result_cap } => {
                self.learn(cap, result_cap);
                self.suggests = true;
                self.next = (s_to - s_from + 1).min(self.limit());
                NextLogs::Ask { from: s_from, to: s_from + self.next - 1 }
            }
            LogsVerdict::SpanCap { max_blocks } => {
                self.learn(Some(max_blocks), None);
                if self.limit() >= asked {
                    // A cap the refused range was within says nothing
                    // usable: every answer to a refusal asks less than it.
                    return self.halve(asked, from);
                }
                self.next = self.limit();
                NextLogs::Ask { from, to: from + self.next - 1 }
            }
            LogsVerdict::Split { result_cap } => {
                self.learn(None, result_cap);
                self.halve(asked, from)
            }
            LogsVerdict::Shrink => self.halve(asked, from),
        }
    }

    fn halve(&mut self, asked: u64, from: u64) -> NextLogs {
        if asked <= 1 {
            // One block that still does not fit is the endpoint's problem.
            return NextLogs::Fail;
        }
        self.next = (asked / 2).max(1);
        NextLogs::Ask { from, to: from + self.next - 1 }
    }

    fn learn(&mut self, block_cap: Option<u64>, result_cap: Option<u64>) {
        if let Some(cap) = block_cap.filter(|&c| c > 0) {
            self.block_cap = Some(self.block_cap.map_or(cap, |known| known.min(cap)));
        }
        if let Some(cap) = result_cap.filter(|&c| c > 0) {
            self.result_cap = Some(self.result_cap.map_or(cap, |known| known.min(cap)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> LogSpan {
        LogSpan::new(SPAN_CEILING)
    }

    #[test]
    fn a_backfill_asks_for_everything_first() {
        assert_eq!(span().range(5_000_000, 30_000_000), Some((5_000_000, 30_000_000)));
        assert_eq!(span().range(10, 9), None);
    }

    #[test]
    fn a_suggested_range_is_asked_at_once_and_its_cap_kept() {
        let mut s = span();
        let verdict = LogsVerdict::UseRange { from: 100, to: 599, cap: Some(500), result_cap: None };
        assert_eq!(s.refused(100, 1_000_000, verdict), NextLogs::Ask { from: 100, to: 599 });
        s.answered(100, 599, 0);
        assert_eq!(s.range(600, 1_000_000), Some((600, 1_099)), "empty answers grow, but never past the cap");
    }

    #[test]
    fn a_named_block_cap_is_never_exceeded_again() {
        let mut s = span();
        assert_eq!(s.refused(0, 99_999_999, LogsVerdict::SpanCap { max_blocks: 10_000 }), NextLogs::Ask { from: 0, to: 9_999 });
        for _ in 0..5 {
            s.answered(0, 9_999, 0);
        }
        assert_eq!(s.span(), 10_000);
    }

    #[test]
    fn too_many_results_halves_then_the_density_aims_the_span() {
        let mut s = span();
        assert_eq!(s.refused(0, 999, LogsVerdict::Split { result_cap: Some(1_000) }), NextLogs::Ask { from: 0, to: 499 });
        // 500 blocks held 400 logs: aim at 800 (80% of the cap) -> 1,000 blocks.
        s.answered(0, 499, 400);
        assert_eq!(s.span(), 1_000);
        // A sparse stretch grows at most eightfold.
        s.answered(500, 1_499, 1);
        assert_eq!(s.span(), 8_000);
        assert_eq!(s.refused(0, 0, LogsVerdict::Split { result_cap: None }), NextLogs::Fail, "one block that does not fit is the endpoint's problem");
    }

    #[test]
    fn timeouts_shrink_from_the_start() {
        let mut s = span();
        assert_eq!(s.refused(0, 1_999, LogsVerdict::Shrink), NextLogs::Ask { from: 0, to: 999 });
        assert_eq!(s.span(), 1_000);
        assert_eq!(s.refused(7, 7, LogsVerdict::Shrink), NextLogs::Fail);
    }
}
