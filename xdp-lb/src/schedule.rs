//! Schedule construction: the precomputed slot sequences the XDP program indexes.
//!
//! The kernel walks a service's schedule with a per-CPU cursor (rr, wrr) or indexes
//! it by a hash (sh, maglev later), so everything about weights lives here, in plain
//! functions that need no root to test.

use xdp_lb_common::{MAX_SCHEDULE_LEN, SELECT_CURSOR};

/// A service's schedule: backend positions (indices into the weights given) and how
/// the kernel picks a slot for a new flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub slots: Vec<u32>,
    pub select: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error(
        "schedule needs {len} slots (sum of weights divided by their gcd), more than the limit of {max}"
    )]
    TooLong { len: u64, max: u32 },
}

/// Round robin: every backend with a non-zero weight once, in order.
pub fn round_robin(weights: &[u32]) -> Schedule {
    let slots = weights
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0)
        .map(|(i, _)| i as u32)
        .collect();
    Schedule {
        slots,
        select: SELECT_CURSOR,
    }
}

/// Weighted round robin as a smooth interleave (the nginx algorithm): weights are
/// first divided by their gcd, so 2:4:6 behaves exactly like 1:2:3 with a shorter
/// table, and a heavy backend never gets a long run of consecutive new flows.
/// Weight 0 means no slots (no new flows).
pub fn weighted_round_robin(weights: &[u32]) -> Result<Schedule, ScheduleError> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Ok(Schedule {
            slots: Vec::new(),
            select: SELECT_CURSOR,
        });
    }
    let reduced: Vec<i64> = weights.iter().map(|w| i64::from(*w / g)).collect();
    let total: i64 = reduced.iter().sum();
    if total > i64::from(MAX_SCHEDULE_LEN) {
        return Err(ScheduleError::TooLong {
            len: total as u64,
            max: MAX_SCHEDULE_LEN,
        });
    }
    let mut current = vec![0i64; reduced.len()];
    let mut slots = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (i, w) in reduced.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            current[i] += w;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        slots.push(best as u32);
    }
    Ok(Schedule {
        slots,
        select: SELECT_CURSOR,
    })
}

/// Length the weighted schedule would have, for validation without building it.
pub fn weighted_len(weights: &[u32]) -> u64 {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return 0;
    }
    weights.iter().map(|w| u64::from(*w / g)).sum()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &Schedule, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for slot in &s.slots {
            c[*slot as usize] += 1;
        }
        c
    }

    #[test]
    fn wrr_interleaves_1_2_3_smoothly() {
        let s = weighted_round_robin(&[1, 2, 3]).unwrap();
        // Worked by hand with the smooth algorithm (ties go to the lower index).
        assert_eq!(s.slots, vec![2, 1, 0, 2, 1, 2]);
        assert_eq!(s.select, SELECT_CURSOR);
    }

    #[test]
    fn wrr_never_gives_a_heavy_backend_a_long_run() {
        let s = weighted_round_robin(&[5, 1, 1]).unwrap();
        assert_eq!(s.slots, vec![0, 0, 1, 0, 2, 0, 0]);
        let longest_run = s
            .slots
            .chunk_by(|a, b| a == b)
            .map(<[u32]>::len)
            .max()
            .unwrap();
        assert!(longest_run <= 2, "{:?}", s.slots);
    }

    #[test]
    fn wrr_proportions_match_weights_exactly() {
        for weights in [
            vec![1, 2, 3],
            vec![7, 3],
            vec![10, 1, 1, 1],
            vec![100, 99, 1],
            vec![3, 0, 5, 2],
        ] {
            let s = weighted_round_robin(&weights).unwrap();
            let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
            let expected: Vec<usize> = weights.iter().map(|w| (*w / g) as usize).collect();
            assert_eq!(counts(&s, weights.len()), expected, "weights {weights:?}");
        }
    }

    #[test]
    fn wrr_reduces_by_gcd() {
        let big = weighted_round_robin(&[200, 400, 600]).unwrap();
        let small = weighted_round_robin(&[1, 2, 3]).unwrap();
        assert_eq!(big, small);
        assert_eq!(weighted_len(&[200, 400, 600]), 6);
    }

    #[test]
    fn weight_zero_gets_no_slot() {
        let s = weighted_round_robin(&[0, 4, 2]).unwrap();
        assert_eq!(counts(&s, 3), vec![0, 2, 1]);
        assert!(!round_robin(&[0, 4, 2]).slots.contains(&0));
    }

    #[test]
    fn all_zero_weights_give_an_empty_schedule() {
        assert!(weighted_round_robin(&[0, 0]).unwrap().slots.is_empty());
        assert!(weighted_round_robin(&[]).unwrap().slots.is_empty());
        assert!(round_robin(&[0]).slots.is_empty());
    }

    #[test]
    fn round_robin_ignores_weights() {
        assert_eq!(round_robin(&[1, 5, 2]).slots, vec![0, 1, 2]);
    }

    #[test]
    fn too_long_schedule_is_refused() {
        // Coprime weights cannot be reduced: 65_536 + 3 slots.
        let err = weighted_round_robin(&[65_536, 3]).unwrap_err();
        assert_eq!(
            err,
            ScheduleError::TooLong {
                len: 65_539,
                max: MAX_SCHEDULE_LEN
            }
        );
    }
}
