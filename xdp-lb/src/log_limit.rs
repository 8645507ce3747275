//! At most one log line per period for a warning that can repeat at packet rate
//! (ENOBUFS on every advert or announcement, EMFILE on every accept): the first is
//! logged at once, the rest are counted, and the count goes with the next line.
use std::time::{Duration, Instant};

/// How often a repeating warning is logged.
pub const LOG_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct LogLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new(period: Duration) -> LogLimit {
        LogLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many were not
    /// since the last line; `None` (counted) otherwise.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Default for LogLimit {
    fn default() -> LogLimit {
        LogLimit::new(LOG_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_carries_the_count_of_the_others() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(Duration::from_secs(10));
        assert_eq!(limit.allow(t0), Some(0));
        for ms in 1..1000 {
            assert_eq!(limit.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.allow(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(limit.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(30)), Some(1));
    }
}
