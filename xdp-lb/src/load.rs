//! Each real server's connections, as lc and wlc follow them (and `ipvsadm -Ln`'s
//! ActiveConn / InActConn show them).
//!
//! Walking the flow table is the only exact count, and it costs two system calls per
//! entry, so it is done only at the idle-flow collection (every 1–10 s). Between two
//! walks the program's per-backend counters carry the count: every new flow is one
//! more active connection, and every first FIN or RST moves one from active to
//! inactive. A flow that goes idle without a FIN, or an inactive one that times out,
//! leaves the count only at the next walk, as IPVS's entries leave at their timer.
//!
//! The counters are read before a walk begins, so a flow opened during the walk may be
//! counted twice until the next one: the error is bounded by the new flows of one
//! walk, spread over the servers as the schedule spreads them.

use std::collections::HashMap;

use crate::schedule::Load;

/// A backend's cumulative counters from `BACKEND_STATS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub new_flows: u64,
    pub closed_flows: u64,
}

/// Connection counts by backend id, from the last walk and the counters since.
#[derive(Debug, Default)]
pub struct LoadTracker {
    /// The count of the last walk and the counters read just before it began.
    anchors: HashMap<u32, (Load, Counters)>,
    /// The counters of the previous [`LoadTracker::loads`], for the arrival rate.
    previous: HashMap<u32, Counters>,
}

impl LoadTracker {
    /// A walk of the flow table counted `walked` (ids absent: no flows) while the
    /// counters read `before` just before it began.
    pub fn anchor(&mut self, walked: &HashMap<u32, Load>, before: &HashMap<u32, Counters>) {
        self.anchors = before
            .iter()
            .map(|(id, c)| (*id, (walked.get(id).copied().unwrap_or_default(), *c)))
            .collect();
    }

    /// The load of each backend in `now` (its counters read now), and the new flows
    /// each had since the previous call.
    pub fn loads(&mut self, now: &HashMap<u32, Counters>) -> HashMap<u32, (Load, u64)> {
        let out = now
            .iter()
            .map(|(id, c)| {
                let load = match self.anchors.get(id) {
                    // Counters zeroed since (a reload gave the id to a new server):
                    // the anchor is someone else's.
                    Some((load, at))
                        if c.new_flows >= at.new_flows && c.closed_flows >= at.closed_flows =>
                    {
                        let closed = c.closed_flows - at.closed_flows;
                        let opened = c.new_flows - at.new_flows;
                        Load {
                            active: (load.active + opened).saturating_sub(closed),
                            inactive: load.inactive + closed,
                        }
                    }
                    // Not walked yet: everything it counted is still there.
                    _ => Load {
                        active: c.new_flows.saturating_sub(c.closed_flows),
                        inactive: c.closed_flows,
                    },
                };
                let arrived = match self.previous.get(id) {
                    Some(p) if c.new_flows >= p.new_flows => c.new_flows - p.new_flows,
                    _ => 0,
                };
                (*id, (load, arrived))
            })
            .collect();
        self.previous = now.clone();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(new_flows: u64, closed_flows: u64) -> Counters {
        Counters {
            new_flows,
            closed_flows,
        }
    }

    fn load(active: u64, inactive: u64) -> Load {
        Load { active, inactive }
    }

    #[test]
    fn counters_carry_the_count_between_walks() {
        let mut t = LoadTracker::default();
        // Before any walk: opened minus closed.
        let now = HashMap::from([(3, counters(10, 4))]);
        assert_eq!(t.loads(&now)[&3], (load(6, 4), 0));
        // A walk finds 5 active and 1 inactive (the others timed out).
        t.anchor(&HashMap::from([(3, load(5, 1))]), &now);
        // Then 7 new flows and 2 FINs.
        let now = HashMap::from([(3, counters(17, 6))]);
        assert_eq!(t.loads(&now)[&3], (load(10, 3), 7));
        // No change: no arrivals.
        assert_eq!(t.loads(&now)[&3], (load(10, 3), 0));
    }

    #[test]
    fn a_backend_absent_from_the_walk_had_no_flows() {
        let mut t = LoadTracker::default();
        let before = HashMap::from([(1, counters(50, 50)), (2, counters(9, 0))]);
        t.anchor(&HashMap::from([(2, load(9, 0))]), &before);
        let loads = t.loads(&before);
        assert_eq!(loads[&1].0, load(0, 0));
        assert_eq!(loads[&2].0, load(9, 0));
    }

    #[test]
    fn zeroed_counters_drop_the_old_anchor() {
        let mut t = LoadTracker::default();
        let before = HashMap::from([(1, counters(100, 10))]);
        t.anchor(&HashMap::from([(1, load(80, 5))]), &before);
        // A reload gave id 1 to a new server: its counters start from zero.
        let now = HashMap::from([(1, counters(3, 0))]);
        assert_eq!(t.loads(&now)[&1].0, load(3, 0));
    }

    #[test]
    fn more_closes_than_opens_never_go_negative() {
        let mut t = LoadTracker::default();
        let before = HashMap::from([(1, counters(0, 0))]);
        t.anchor(&HashMap::from([(1, load(1, 0))]), &before);
        // Flows opened during the walk closed after it: counted as closes only.
        let now = HashMap::from([(1, counters(0, 3))]);
        assert_eq!(t.loads(&now)[&1].0, load(0, 3));
    }
}
