//! Flow ageing and connection counting: idle flows of NAT, lc and wlc services are
//! collected (the LRU alone would only evict them when full), and each walk also
//! counts every real server's connections exactly; between walks, lc and wlc
//! schedules follow the program's counters every [`COUNT_LOADS`] (see
//! [`crate::load`]).

use super::*;

/// How often lc and wlc schedules follow the counters: a burst of new connections
/// waits at most this long before the counts it makes steer the next ones.
pub(super) const COUNT_LOADS: Duration = Duration::from_millis(10);

impl Core {
    /// The backend ids whose connections are counted: those of aging services.
    fn counted_backends(&self) -> Vec<u32> {
        let table = self.forwarding.table();
        table
            .services
            .iter()
            .filter(|s| s.ages())
            .flat_map(|s| s.backends.iter().map(|b| table.backends[*b].id.0))
            .collect()
    }

    /// Deletes idle flow and NAT reply entries, and re-counts connections from the
    /// flows that stay.
    pub(super) fn collect_idle_flows(&mut self) {
        let Some(timeouts) = self.forwarding.aging() else {
            return;
        };
        let ids = self.counted_backends();
        let writer = self.forwarding.writer_mut();
        // Read before the walk: see `crate::load` for the error this bounds.
        let before = match writer.backend_counters(ids) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %Chain(&e), "could not read the connection counters");
                return;
            }
        };
        match writer.expire_idle(&timeouts, monotonic_ns()) {
            Ok(sweep) => {
                let gc = sweep.gc;
                if gc.flows_removed + gc.replies_removed > 0 {
                    info!(
                        flows_removed = gc.flows_removed,
                        replies_removed = gc.replies_removed,
                        flows_left = gc.flows_left,
                        replies_left = gc.replies_left,
                        "expired idle flow entries"
                    );
                }
                self.loads.anchor(&sweep.loads, &before);
            }
            Err(e) => {
                warn!(error = %Chain(&e), "collecting idle flows failed; the LRU still bounds the tables")
            }
        }
    }

    /// Brings lc and wlc schedules up to date with the counters.
    pub(super) fn count_loads(&mut self) {
        if !self
            .forwarding
            .table()
            .services
            .iter()
            .any(|s| s.scheduler.counts_connections())
        {
            return;
        }
        let ids = self.counted_backends();
        let counters = match self.forwarding.writer().backend_counters(ids) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %Chain(&e), "could not read the connection counters");
                return;
            }
        };
        let loads = self.loads.loads(&counters);
        if let Err(e) = self.forwarding.apply_loads(&loads) {
            warn!(error = %Chain(&e), "could not rewrite a least-connection schedule");
        }
    }
}
