//! Allocation of schedule ranges in the shared schedule pool map.
//!
//! A new schedule is written into a fresh range while packets still read the old
//! one; the service entry is then switched with one map update. The old range is
//! not reused at once: it is retired and only returns to the free list on the next
//! allocation, long after any program run that read the old service entry (runs
//! last microseconds, updates are milliseconds apart).
use std::ops::Range;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "schedule pool exhausted: {wanted} slots wanted, largest free range is {largest} of {capacity}"
)]
pub struct PoolExhausted {
    pub wanted: u32,
    pub largest: u32,
    pub capacity: u32,
}

#[derive(Debug)]
pub struct SchedulePool {
    capacity: u32,
    /// Sorted, non-overlapping, coalesced free ranges.
    free: Vec<Range<u32>>,
    retired: Vec<Range<u32>>,
}

impl SchedulePool {
    pub fn new(capacity: u32) -> Self {
        SchedulePool {
            capacity,
            free: std::iter::once(0..capacity).collect(),
            retired: Vec::new(),
        }
    }

    /// First-fit allocation of `len` slots (an empty range for `len == 0`).
    pub fn allocate(&mut self, len: u32) -> Result<Range<u32>, PoolExhausted> {
        for r in std::mem::take(&mut self.retired) {
            self.release(r);
        }
        if len == 0 {
            return Ok(0..0);
        }
        let pos = self.free.iter().position(|r| r.end - r.start >= len);
        let Some(pos) = pos else {
            let largest = self.free.iter().map(|r| r.end - r.start).max().unwrap_or(0);
            return Err(PoolExhausted {
                wanted: len,
                largest,
                capacity: self.capacity,
            });
        };
        let r = &mut self.free[pos];
        let got = r.start..r.start + len;
        r.start += len;
        if r.start == r.end {
            self.free.remove(pos);
        }
        Ok(got)
    }

    /// Marks a range unused; it becomes allocatable after the next allocation.
    pub fn retire(&mut self, range: Range<u32>) {
        if !range.is_empty() {
            self.retired.push(range);
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

    pub fn free_slots(&self) -> u32 {
        self.free
            .iter()
            .chain(&self.retired)
            .map(|r| r.end - r.start)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_first_fit_and_refuses_when_full() {
        let mut p = SchedulePool::new(10);
        assert_eq!(p.allocate(4).unwrap(), 0..4);
        assert_eq!(p.allocate(6).unwrap(), 4..10);
        assert_eq!(
            p.allocate(1).unwrap_err(),
            PoolExhausted {
                wanted: 1,
                largest: 0,
                capacity: 10
            }
        );
    }

    #[test]
    fn a_replacement_never_lands_on_the_range_it_replaces() {
        let mut p = SchedulePool::new(8);
        let old = p.allocate(4).unwrap();
        // The replacement is allocated while `old` is still live...
        let new = p.allocate(4).unwrap();
        assert_eq!(new, 4..8);
        p.retire(old.clone());
        // ...and with the pool otherwise full, `old` only comes back on the next update.
        assert_eq!(p.free_slots(), 4);
        assert_eq!(p.allocate(4).unwrap(), old);
    }

    #[test]
    fn a_full_pool_refuses_a_replacement_instead_of_overwriting() {
        let mut p = SchedulePool::new(8);
        let _a = p.allocate(4).unwrap();
        let _b = p.allocate(4).unwrap();
        assert!(p.allocate(4).is_err());
    }

    #[test]
    fn freed_ranges_coalesce() {
        let mut p = SchedulePool::new(9);
        let a = p.allocate(3).unwrap();
        let b = p.allocate(3).unwrap();
        let c = p.allocate(3).unwrap();
        p.retire(a);
        p.retire(c);
        p.retire(b);
        assert_eq!(p.allocate(0).unwrap(), 0..0); // releases the retired ranges
        assert_eq!(p.allocate(9).unwrap(), 0..9);
    }
}
