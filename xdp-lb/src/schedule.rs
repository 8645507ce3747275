//! Schedule construction: the precomputed slot sequences the XDP program indexes.
//!
//! The kernel walks a service's schedule with a per-CPU cursor (rr, wrr) or indexes
//! it by a hash (sh: the source address; maglev: the connection's 5-tuple) into a
//! Maglev table, so everything about weights lives here, in plain functions that need
//! no root to test.

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

/// A real server's connections as IPVS counts them: active (established) and
/// inactive (a FIN or RST seen, waiting for its timeout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub active: u64,
    pub inactive: u64,
}

impl Load {
    /// IPVS's overhead of a server for lc and wlc: an active connection costs 256
    /// inactive ones.
    pub fn overhead(self) -> u64 {
        self.active
            .saturating_mul(256)
            .saturating_add(self.inactive)
    }
}

/// Slots of a least-connection schedule: enough to express fractional shares, few
/// enough to rewrite every tick.
const LEAST_CONN_SLOTS_PER_BACKEND: u64 = 16;
const LEAST_CONN_MIN_SLOTS: u64 = 32;
const LEAST_CONN_MAX_SLOTS: u64 = 1024;

/// Which of IPVS's least-connection schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeastConn {
    /// The fewest connections (active × 256 + inactive); a weight only excludes a
    /// server at 0.
    Lc,
    /// The fewest connections per unit of weight.
    Wlc,
    /// Shortest expected delay: the fewest active connections per unit of weight.
    Sed,
    /// Never queue: an idle server first, otherwise as sed.
    Nq,
}

/// Least connections, by `rule`, for the next `arrivals` new connections.
///
/// IPVS picks the server with the least overhead per weight at every new connection.
/// Here the kernel only walks a schedule, which the daemon rewrites every few ms from
/// the counts; so instead of naming the single least-loaded server (a burst of new
/// connections before the next rewrite would all land on it) the schedule spreads the
/// expected arrivals the way IPVS would end up spreading them: by water-filling, the
/// least-loaded servers are raised to a common level of overhead per weight, and each
/// gets its share of that many slots, interleaved. Equal loads give weighted round
/// robin.
pub fn least_connections(
    weights: &[u32],
    loads: &[Load],
    arrivals: u64,
    rule: LeastConn,
) -> Result<Schedule, ScheduleError> {
    let mut members: Vec<(usize, f64, f64)> = weights
        .iter()
        .zip(loads)
        .enumerate()
        .filter(|(_, (w, _))| **w > 0)
        .map(|(i, (w, load))| {
            let w = if rule == LeastConn::Lc {
                1.0
            } else {
                f64::from(*w)
            };
            let overhead = match rule {
                LeastConn::Lc | LeastConn::Wlc => load.overhead(),
                LeastConn::Sed | LeastConn::Nq => load.active.saturating_mul(256),
            };
            (i, w, overhead as f64)
        })
        .collect();
    // nq: a server with no active connection takes a new one without queueing, as
    // long as there are enough idle ones for the arrivals.
    if rule == LeastConn::Nq {
        let idle: Vec<_> = members.iter().copied().filter(|m| m.2 == 0.0).collect();
        if !idle.is_empty() && idle.len() as u64 >= arrivals {
            members = idle;
        }
    }
    if members.is_empty() {
        return Ok(Schedule {
            slots: Vec::new(),
            select: SELECT_CURSOR,
        });
    }
    // Water-fill `arrivals` connections (256 overhead each): find the level `level`
    // of overhead per weight that the least-loaded servers reach together.
    let mut by_level = members.clone();
    by_level.sort_by(|a, b| (a.2 / a.1).total_cmp(&(b.2 / b.1)));
    let water = 256.0 * arrivals.max(1) as f64;
    let (mut sum_w, mut sum_o, mut level) = (0.0, 0.0, 0.0);
    for (n, (_, w, o)) in by_level.iter().enumerate() {
        sum_w += w;
        sum_o += o;
        level = (water + sum_o) / sum_w;
        let next = by_level.get(n + 1).map(|(_, w, o)| o / w);
        if next.is_none_or(|next| next >= level) {
            break;
        }
    }
    let shares: Vec<f64> = members
        .iter()
        .map(|(_, w, o)| (level * w - o).max(0.0))
        .collect();
    let total: f64 = shares.iter().sum();
    // Whole slots by largest remainder.
    let slots_wanted = (LEAST_CONN_SLOTS_PER_BACKEND * members.len() as u64)
        .clamp(LEAST_CONN_MIN_SLOTS, LEAST_CONN_MAX_SLOTS) as f64;
    let exact: Vec<f64> = shares.iter().map(|s| s / total * slots_wanted).collect();
    let mut counts: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let short = slots_wanted as u32 - counts.iter().sum::<u32>();
    let mut by_remainder: Vec<usize> = (0..exact.len()).collect();
    by_remainder.sort_by(|a, b| {
        (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor()))
    });
    for &k in by_remainder.iter().take(short as usize) {
        counts[k] += 1;
    }
    let mut per_server = vec![0u32; weights.len()];
    for ((i, _, _), c) in members.iter().zip(&counts) {
        per_server[*i] = *c;
    }
    weighted_round_robin(&per_server)
}

/// Maglev table sizes (primes, so every skip visits every slot). A table gets the
/// smallest that holds at least [`MAGLEV_SLOTS_PER_BACKEND`] slots per real server
/// with weight, which keeps each server's share within about 1 % of its weight's.
const MAGLEV_SIZES: [u32; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];
const MAGLEV_SLOTS_PER_BACKEND: u64 = 100;

/// A Maglev lookup table (Eisenbud et al., NSDI 2016) with weights: every real server
/// walks its own permutation of the slots, and in each round a server with weight `w`
/// (divided by the weights' gcd) claims its next `w` free slots, so shares follow the
/// weights. The permutation comes from the server's identity (`keys`, e.g. a hash of
/// its address and port), never from its position in the list, so:
/// - every load balancer with the same healthy servers builds the same table, and a
///   flow lands on the same real server whichever LB the network (or a VRRP failover)
///   hands it to;
/// - a server leaving or joining moves only about its own share of the slots.
///
/// `keys` and `weights` are parallel; slots hold positions in them. Weight 0 takes no
/// slot. `select` is the kernel's hash ([`xdp_lb_common::SELECT_HASH_SRC`],
/// [`xdp_lb_common::SELECT_HASH_DST`] or [`xdp_lb_common::SELECT_HASH_FLOW`]).
pub fn maglev(keys: &[u64], weights: &[u32], select: u8) -> Schedule {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    let mut members: Vec<(u64, usize, u64)> = keys
        .iter()
        .zip(weights)
        .enumerate()
        .filter(|(_, (_, w))| **w > 0)
        .map(|(pos, (key, w))| (*key, pos, u64::from(*w / g)))
        .collect();
    if members.is_empty() {
        return Schedule {
            slots: Vec::new(),
            select,
        };
    }
    // The same order on every node, whatever the configuration's order.
    members.sort_unstable();
    let wanted = MAGLEV_SLOTS_PER_BACKEND * members.len() as u64;
    let size = MAGLEV_SIZES
        .iter()
        .copied()
        .find(|m| u64::from(*m) >= wanted)
        .unwrap_or(MAGLEV_SIZES[MAGLEV_SIZES.len() - 1]);
    let m = u64::from(size);
    // (offset, skip, next) of each member's permutation: slot = offset + next * skip.
    let mut walks: Vec<(u64, u64, u64)> = members
        .iter()
        .map(|(key, _, _)| (fnv1a(*key, 0) % m, fnv1a(*key, 1) % (m - 1) + 1, 0))
        .collect();
    let mut table: Vec<Option<u32>> = vec![None; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (k, (_, pos, turns)) in members.iter().enumerate() {
            for _ in 0..*turns {
                let (offset, skip, next) = &mut walks[k];
                let mut slot = (*offset + *next * *skip) % m;
                while table[slot as usize].is_some() {
                    *next += 1;
                    slot = (*offset + *next * *skip) % m;
                }
                table[slot as usize] = Some(*pos as u32);
                *next += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    Schedule {
        slots: table
            .into_iter()
            .map(|s| s.expect("every slot filled"))
            .collect(),
        select,
    }
}

/// A real server's identity for [`maglev`]: its address and port, hashed.
pub fn backend_key(addr: std::net::IpAddr, port: u16) -> u64 {
    let bytes = match addr {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    let mut h = FNV_OFFSET;
    for b in bytes.iter().chain(&port.to_be_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
    }
    h
}

/// FNV-1a (64 bit): a published, fixed function, so tables agree between nodes and
/// versions (std's hasher makes no such promise).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of `key`'s bytes after a one-byte `seed`.
fn fnv1a(key: u64, seed: u8) -> u64 {
    let mut h = (FNV_OFFSET ^ u64::from(seed)).wrapping_mul(FNV_PRIME);
    for b in key.to_le_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    h
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

    fn load(active: u64) -> Load {
        Load {
            active,
            inactive: 0,
        }
    }

    #[test]
    fn least_connections_with_equal_loads_is_weighted_round_robin() {
        // Connections in proportion to the weights: an equal load per weight.
        let loads = [load(5), load(10), load(15)];
        let s = least_connections(&[1, 2, 3], &loads, 10, LeastConn::Wlc).unwrap();
        let c = counts(&s, 3);
        assert_eq!(c[1], 2 * c[0], "{c:?}");
        assert_eq!(c[2], 3 * c[0], "{c:?}");
        assert_eq!(s.select, SELECT_CURSOR);
        // lc: weights only exclude; equal loads share equally.
        let lc = least_connections(&[1, 2, 3], &[load(5); 3], 10, LeastConn::Lc).unwrap();
        let c = counts(&lc, 3);
        assert!(c[0] == c[1] && c[1] == c[2], "{c:?}");
    }

    #[test]
    fn a_loaded_server_gets_nothing_until_the_others_catch_up() {
        let loads = [load(50), load(0), load(0)];
        let s = least_connections(&[1, 1, 1], &loads, 3, LeastConn::Wlc).unwrap();
        assert_eq!(counts(&s, 3)[0], 0, "{:?}", s.slots);
        // Enough arrivals raise the others past it: it gets its part of the rest.
        // Level: (256 * 300 + 50 * 256) / 3 = 116.7 connections per server.
        let s = least_connections(&[1, 1, 1], &loads, 300, LeastConn::Wlc).unwrap();
        let c = counts(&s, 3);
        let ratio = f64::from(c[0] as u32) / f64::from(c[1] as u32);
        assert!((ratio - 66.7 / 116.7).abs() < 0.04, "{c:?}");
        assert!(c[1].abs_diff(c[2]) <= 1, "{c:?}");
    }

    #[test]
    fn wlc_divides_by_weight_and_inactive_counts_a_256th() {
        // 10 connections on weight 1 (10 per weight) against 10 on weight 3 (3.3).
        let s = least_connections(&[1, 3], &[load(10), load(10)], 1, LeastConn::Wlc).unwrap();
        assert_eq!(counts(&s, 2), vec![0, 1]);
        // lc ignores the weights: a tie, shared.
        let s = least_connections(&[1, 3], &[load(10), load(10)], 1, LeastConn::Lc).unwrap();
        assert_eq!(counts(&s, 2), vec![1, 1]);
        // An inactive connection weighs a 256th of an active one: 100 of them are
        // lighter than 2 active, 1,000 heavier.
        let inactive = |n| Load {
            active: 0,
            inactive: n,
        };
        let s = least_connections(&[1, 1], &[inactive(100), load(2)], 1, LeastConn::Wlc).unwrap();
        assert_eq!(counts(&s, 2), vec![1, 0]);
        let s = least_connections(&[1, 1], &[inactive(1000), load(2)], 1, LeastConn::Wlc).unwrap();
        assert_eq!(counts(&s, 2), vec![0, 1]);
    }

    #[test]
    fn sed_ignores_inactive_connections_and_nq_prefers_an_idle_server() {
        let inactive = Load {
            active: 0,
            inactive: 1000,
        };
        // wlc avoids 1,000 inactive connections; sed does not see them.
        let s = least_connections(&[1, 1], &[inactive, load(2)], 1, LeastConn::Sed).unwrap();
        assert_eq!(counts(&s, 2), vec![1, 0]);
        // sed: 2 active on weight 4 (0.5 per weight) beats 1 on weight 1.
        let s = least_connections(&[1, 4], &[load(1), load(2)], 1, LeastConn::Sed).unwrap();
        assert_eq!(counts(&s, 2), vec![0, 1]);
        // nq: the idle server, whatever the weights say.
        let s = least_connections(&[1, 4], &[load(0), load(2)], 1, LeastConn::Nq).unwrap();
        assert_eq!(counts(&s, 2), vec![1, 0]);
        // More arrivals than idle servers: as sed over all of them.
        let nq = least_connections(&[1, 4], &[load(0), load(2)], 20, LeastConn::Nq).unwrap();
        let sed = least_connections(&[1, 4], &[load(0), load(2)], 20, LeastConn::Sed).unwrap();
        assert_eq!(nq, sed);
    }

    #[test]
    fn least_connections_leaves_out_weight_zero_and_empty_pools() {
        let s =
            least_connections(&[0, 1, 1], &[load(0), load(9), load(9)], 5, LeastConn::Wlc).unwrap();
        assert_eq!(counts(&s, 3)[0], 0);
        assert!(
            least_connections(&[0, 0], &[load(0); 2], 5, LeastConn::Wlc)
                .unwrap()
                .slots
                .is_empty()
        );
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

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| backend_key(format!("192.0.2.{}", 11 + i).parse().unwrap(), 80))
            .collect()
    }

    #[test]
    fn maglev_shares_follow_the_weights() {
        use xdp_lb_common::SELECT_HASH_FLOW;
        for weights in [vec![1, 1, 1], vec![1, 2, 3], vec![5, 0, 1, 4], vec![1; 40]] {
            let s = maglev(&keys(weights.len()), &weights, SELECT_HASH_FLOW);
            assert!(MAGLEV_SIZES.contains(&(s.slots.len() as u32)));
            assert_eq!(s.select, SELECT_HASH_FLOW);
            let total: u32 = weights.iter().sum();
            for (pos, got) in counts(&s, weights.len()).into_iter().enumerate() {
                let expected = s.slots.len() as f64 * f64::from(weights[pos]) / f64::from(total);
                assert!(
                    (got as f64 - expected).abs() <= expected * 0.02 + 1.0,
                    "weights {weights:?}: position {pos} has {got} slots, expected {expected:.1}"
                );
            }
        }
    }

    #[test]
    fn maglev_is_the_same_in_any_configuration_order() {
        let (k, w) = (keys(3), [1, 2, 3]);
        let a = maglev(&k, &w, 0);
        let b = maglev(&[k[2], k[0], k[1]], &[w[2], w[0], w[1]], 0);
        // Positions differ; the servers behind them must not.
        let a_keys: Vec<u64> = a.slots.iter().map(|p| k[*p as usize]).collect();
        let reordered = [k[2], k[0], k[1]];
        let b_keys: Vec<u64> = b.slots.iter().map(|p| reordered[*p as usize]).collect();
        assert_eq!(a_keys, b_keys);
    }

    #[test]
    fn maglev_moves_little_when_a_server_leaves() {
        let k = keys(10);
        let all = maglev(&k, &[1; 10], 0);
        let mut down = [1; 10];
        down[3] = 0;
        let fewer = maglev(&k, &down, 0);
        assert_eq!(all.slots.len(), fewer.slots.len(), "same table size");
        // Slots of the servers that stayed should mostly stay with them.
        let kept_before = all.slots.iter().filter(|p| **p != 3).count();
        let moved = all
            .slots
            .iter()
            .zip(&fewer.slots)
            .filter(|(a, b)| **a != 3 && a != b)
            .count();
        assert!(
            (moved as f64) < kept_before as f64 * 0.10,
            "{moved} of {kept_before} slots of remaining servers moved"
        );
        assert!(!fewer.slots.contains(&3));
    }

    /// Maglev's disruption bound: removing 1 of N servers remaps its own 1/N of the
    /// table and little else (flows held in the flow table do not move at all).
    #[test]
    fn removing_one_of_n_servers_remaps_about_one_nth() {
        for n in [3usize, 10, 100] {
            let k = keys(n);
            let all = maglev(&k, &vec![1; n], 0);
            let mut down = vec![1; n];
            down[n / 2] = 0;
            let fewer = maglev(&k, &down, 0);
            let changed = all
                .slots
                .iter()
                .zip(&fewer.slots)
                .filter(|(a, b)| a != b)
                .count();
            let fraction = changed as f64 / all.slots.len() as f64;
            let own = 1.0 / n as f64;
            println!(
                "maglev, 1 of {n} removed: {:.2}% of {} slots remapped (its own share {:.2}%)",
                fraction * 100.0,
                all.slots.len(),
                own * 100.0
            );
            assert!(fraction >= own * 0.8, "n={n}: {fraction}");
            assert!(fraction <= own + 0.03, "n={n}: {fraction} remapped");
        }
    }

    #[test]
    fn maglev_of_nothing_is_empty() {
        assert!(maglev(&keys(2), &[0, 0], 0).slots.is_empty());
        assert!(maglev(&[], &[], 0).slots.is_empty());
    }

    #[test]
    fn backend_keys_tell_servers_and_ports_apart() {
        let a = backend_key("192.0.2.11".parse().unwrap(), 80);
        assert_ne!(a, backend_key("192.0.2.11".parse().unwrap(), 81));
        assert_ne!(a, backend_key("192.0.2.12".parse().unwrap(), 80));
        assert_ne!(a, backend_key("::ffff:192.0.2.12".parse().unwrap(), 80));
        // Fixed function: the same key on every node and version.
        assert_eq!(a, backend_key("::ffff:192.0.2.11".parse().unwrap(), 80));
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
