//! Allocation of index ranges in a map the program reads while userspace rewrites it:
//! schedule ranges in the shared schedule pool, and backend value copies in the
//! backend value pool.
//!
//! A new schedule (or backend value) is written into a fresh range while packets
//! still read the old one; one map update then switches readers to it. The old range
//! is retired, not freed: a program run that read the old service entry (or backend
//! index) just before the switch may still be reading it. It becomes free again only
//! after a grace period ([`GRACE`]) measured from its retirement. Program runs last
//! microseconds, so 50 ms is a wide margin, and times are passed in, so tests check
//! the rule without sleeping.
use std::{
    collections::VecDeque,
    ops::Range,
    time::{Duration, Instant},
};

/// How long a retired range stays untouched before it may be handed out again.
pub const GRACE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{pool} exhausted: {wanted} slots wanted, largest free range is {largest} of {capacity} \
     ({in_grace} slots were retired less than {grace_ms} ms ago and could not be waited for)"
)]
pub struct PoolExhausted {
    pub pool: &'static str,
    pub wanted: u32,
    pub largest: u32,
    pub capacity: u32,
    pub in_grace: u32,
    pub grace_ms: u128,
}

/// Where the pool reads the time and how it waits; [`SystemClock`] in production,
/// a fake in tests.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
}

/// The monotonic clock and a blocking sleep.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

#[derive(Debug)]
pub struct RangePool {
    name: &'static str,
    capacity: u32,
    grace: Duration,
    /// Sorted, non-overlapping, coalesced free ranges.
    free: Vec<Range<u32>>,
    /// Retired ranges in the order (and so the time) of their retirement.
    retired: VecDeque<(Instant, Range<u32>)>,
}

impl RangePool {
    /// A pool handing out indices from `slots` (e.g. `1..n` keeps index 0 out of it).
    pub fn new(name: &'static str, slots: Range<u32>, grace: Duration) -> Self {
        RangePool {
            name,
            capacity: slots.end - slots.start,
            grace,
            free: std::iter::once(slots).filter(|r| !r.is_empty()).collect(),
            retired: VecDeque::new(),
        }
    }

    /// First-fit allocation of `len` slots (an empty range for `len == 0`), after
    /// freeing the retired ranges whose grace period has passed at `now`.
    pub fn allocate(&mut self, len: u32, now: Instant) -> Result<Range<u32>, PoolExhausted> {
        self.release_expired(now);
        if len == 0 {
            return Ok(0..0);
        }
        let pos = self.free.iter().position(|r| r.end - r.start >= len);
        let Some(pos) = pos else {
            return Err(self.exhausted(len));
        };
        let r = &mut self.free[pos];
        let got = r.start..r.start + len;
        r.start += len;
        if r.start == r.end {
            self.free.remove(pos);
        }
        Ok(got)
    }

    /// Like [`RangePool::allocate`], but when the pool is short only because ranges
    /// are still in their grace period, waits them out (at most one grace period:
    /// every retired range was retired before now) and tries again.
    pub fn allocate_waiting(
        &mut self,
        len: u32,
        clock: &impl Clock,
    ) -> Result<Range<u32>, PoolExhausted> {
        loop {
            let now = clock.now();
            match self.allocate(len, now) {
                Ok(r) => return Ok(r),
                Err(e) => match self.retired.front() {
                    // Each round frees at least the oldest retired range.
                    Some((at, _)) => clock.sleep((*at + self.grace).saturating_duration_since(now)),
                    None => return Err(e),
                },
            }
        }
    }

    /// Marks a range that readers may have seen as unused; it becomes allocatable
    /// once the grace period has passed since `now`.
    pub fn retire(&mut self, range: Range<u32>, now: Instant) {
        if !range.is_empty() {
            self.retired.push_back((now, range));
        }
    }

    /// Frees at once a range that no reader ever saw (its writing failed before the
    /// switch).
    pub fn unused(&mut self, range: Range<u32>) {
        if !range.is_empty() {
            self.release(range);
        }
    }

    fn release_expired(&mut self, now: Instant) {
        while let Some((at, _)) = self.retired.front() {
            if now.saturating_duration_since(*at) < self.grace {
                break;
            }
            let (_, range) = self.retired.pop_front().expect("front exists");
            self.release(range);
        }
    }

    fn release(&mut self, range: Range<u32>) {
        let pos = self.free.partition_point(|r| r.start < range.start);
        self.free.insert(pos, range);
        // Coalesce with neighbours.
        if pos + 1 < self.free.len() && self.free[pos].end == self.free[pos + 1].start {
            self.free[pos].end = self.free[pos + 1].end;
            self.free.remove(pos + 1);
        }
        if pos > 0 && self.free[pos - 1].end == self.free[pos].start {
            self.free[pos - 1].end = self.free[pos].end;
            self.free.remove(pos);
        }
    }

    fn exhausted(&self, wanted: u32) -> PoolExhausted {
        PoolExhausted {
            pool: self.name,
            wanted,
            largest: self.free.iter().map(|r| r.end - r.start).max().unwrap_or(0),
            capacity: self.capacity,
            in_grace: self.in_grace_slots(),
            grace_ms: self.grace.as_millis(),
        }
    }

    /// Slots free now (not counting those still in their grace period).
    pub fn free_slots(&self) -> u32 {
        self.free.iter().map(|r| r.end - r.start).sum()
    }

    /// Slots retired and not yet freed.
    pub fn in_grace_slots(&self) -> u32 {
        self.retired.iter().map(|(_, r)| r.end - r.start).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pool(capacity: u32) -> RangePool {
        RangePool::new("test pool", 0..capacity, GRACE)
    }

    /// A clock that only moves when the pool sleeps.
    struct FakeClock {
        now: Cell<Instant>,
        slept: Cell<Duration>,
    }

    impl FakeClock {
        fn new(now: Instant) -> Self {
            FakeClock {
                now: Cell::new(now),
                slept: Cell::new(Duration::ZERO),
            }
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.now.get()
        }
        fn sleep(&self, d: Duration) {
            self.now.set(self.now.get() + d);
            self.slept.set(self.slept.get() + d);
        }
    }

    #[test]
    fn allocates_first_fit_and_refuses_when_full() {
        let t = Instant::now();
        let mut p = pool(10);
        assert_eq!(p.allocate(4, t).unwrap(), 0..4);
        assert_eq!(p.allocate(6, t).unwrap(), 4..10);
        assert_eq!(
            p.allocate(1, t).unwrap_err(),
            PoolExhausted {
                pool: "test pool",
                wanted: 1,
                largest: 0,
                capacity: 10,
                in_grace: 0,
                grace_ms: 50,
            }
        );
    }

    #[test]
    fn a_reserved_index_is_never_handed_out() {
        let t = Instant::now();
        let mut p = RangePool::new("values", 1..4, GRACE);
        let got: Vec<u32> = (0..3).map(|_| p.allocate(1, t).unwrap().start).collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(p.allocate(1, t).is_err());
    }

    /// The bug this replaced: two allocations in a row handed out the range retired
    /// just before, while a program run could still be reading it.
    #[test]
    fn a_retired_range_stays_out_for_the_grace_period() {
        let t = Instant::now();
        let mut p = pool(12);
        let a = p.allocate(4, t).unwrap();
        let b = p.allocate(4, t).unwrap(); // the replacement, written while `a` is live
        p.retire(a.clone(), t);
        let c = p.allocate(4, t).unwrap();
        assert!(c.start >= b.end, "{c:?} reuses {a:?} or overlaps {b:?}");
        p.retire(b.clone(), t + MS);
        // Full, and a is still in grace 49 ms later.
        let err = p.allocate(4, t + 49 * MS).unwrap_err();
        assert_eq!((err.in_grace, err.largest), (8, 0), "{err}");
        assert!(
            err.to_string()
                .contains("8 slots were retired less than 50 ms ago")
        );
        // At 50 ms `a` is free again, `b` (retired 1 ms later) not yet.
        assert_eq!(p.allocate(4, t + 50 * MS).unwrap(), a);
        assert!(p.allocate(4, t + 50 * MS).is_err());
        assert_eq!(p.allocate(4, t + 51 * MS).unwrap(), b);
    }

    #[test]
    fn a_short_pool_waits_out_the_grace_period_and_no_longer() {
        let t = Instant::now();
        let clock = FakeClock::new(t);
        let mut p = pool(8);
        let a = p.allocate(4, t).unwrap();
        let _b = p.allocate(4, t).unwrap();
        p.retire(a.clone(), t);
        clock.now.set(t + 10 * MS);
        // Full, with `a` in grace for 40 ms more: the allocation waits exactly that.
        assert_eq!(p.allocate_waiting(4, &clock).unwrap(), a);
        assert_eq!(clock.slept.get(), 40 * MS);
    }

    #[test]
    fn a_pool_that_is_really_full_says_so_without_waiting() {
        let t = Instant::now();
        let clock = FakeClock::new(t);
        let mut p = pool(8);
        let _a = p.allocate(4, t).unwrap();
        let b = p.allocate(4, t).unwrap();
        let err = p.allocate_waiting(5, &clock).unwrap_err();
        assert_eq!((err.wanted, err.largest, err.in_grace), (5, 0, 0));
        assert_eq!(clock.slept.get(), Duration::ZERO);
        // Ranges in grace that would not be enough either: waited for, then refused.
        p.retire(b, t);
        let err = p.allocate_waiting(5, &clock).unwrap_err();
        assert_eq!((err.largest, err.in_grace), (4, 0), "{err}");
        assert_eq!(clock.slept.get(), GRACE);
    }

    #[test]
    fn a_range_never_published_is_free_at_once() {
        let t = Instant::now();
        let mut p = pool(4);
        let a = p.allocate(4, t).unwrap();
        p.unused(a.clone());
        assert_eq!(p.allocate(4, t).unwrap(), a);
    }

    #[test]
    fn freed_ranges_coalesce() {
        let t = Instant::now();
        let mut p = pool(9);
        let a = p.allocate(3, t).unwrap();
        let b = p.allocate(3, t).unwrap();
        let c = p.allocate(3, t).unwrap();
        p.retire(a, t);
        p.retire(c, t);
        p.retire(b, t);
        assert_eq!(p.in_grace_slots(), 9);
        assert_eq!(p.allocate(9, t + GRACE).unwrap(), 0..9);
    }
}
