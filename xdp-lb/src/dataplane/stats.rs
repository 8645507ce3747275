//! Reading the per-CPU counters: each CPU's copy summed into one snapshot.
use std::collections::BTreeMap;

use xdp_lb_common::{BackendStats, Reason, ServiceStats};

use super::{Dataplane, DataplaneError, map_err};

/// Verdict counts by reason name.
pub type ReasonCounts = BTreeMap<&'static str, u64>;

/// What was forwarded: by one real server, or by a service (the sum of its real
/// servers', the only place the data plane counts it), or by all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Of `packets`, those redirected to another interface (the others left by
    /// `XDP_TX`): the `redirect` and `tx` verdicts.
    pub redirected: u64,
}

impl From<BackendStats> for Traffic {
    fn from(s: BackendStats) -> Traffic {
        Traffic {
            packets: s.packets,
            bytes: s.bytes,
            new_flows: s.new_flows,
            redirected: s.redirected,
        }
    }
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, other: Traffic) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
        self.redirected += other.redirected;
    }
}

impl std::iter::Sum for Traffic {
    fn sum<I: Iterator<Item = Traffic>>(iter: I) -> Traffic {
        iter.fold(Traffic::default(), |mut total, t| {
            total += t;
            total
        })
    }
}

/// The verdict counts: the data plane's (`counted`, from [`Dataplane::global_stats`])
/// and the two it counts only on real servers, derived from `forwarded`, what every
/// real server forwarded.
pub fn verdicts(mut counted: ReasonCounts, forwarded: Traffic) -> ReasonCounts {
    // Saturating: a reading taken while a CPU is between its two increments (or a
    // slot zeroed on a reload between them) may see one more redirected than sent.
    let tx = forwarded.packets.saturating_sub(forwarded.redirected);
    counted.insert(Reason::Tx.name(), tx);
    counted.insert(Reason::Redirect.name(), forwarded.redirected);
    counted
}

impl Dataplane {
    /// The verdicts counted in `GLOBAL_STATS`: all but those counted on real servers
    /// (see [`verdicts`]).
    pub fn global_stats(&self) -> Result<ReasonCounts, DataplaneError> {
        let mut out = BTreeMap::new();
        for reason in Reason::ALL
            .into_iter()
            .filter(|r| !r.counted_on_real_server())
        {
            let per_cpu = self
                .global_stats
                .get(&(reason as u32), 0)
                .map_err(map_err("GLOBAL_STATS"))?;
            out.insert(reason.name(), per_cpu.iter().sum());
        }
        Ok(out)
    }

    pub fn service_stats(&self, id: u32) -> Result<ServiceStats, DataplaneError> {
        let per_cpu = self
            .service_stats
            .get(&id, 0)
            .map_err(map_err("SERVICE_STATS"))?;
        Ok(per_cpu.iter().fold(ServiceStats::default(), |mut acc, s| {
            acc.rescheduled += s.rescheduled;
            acc.pass_inactive += s.pass_inactive;
            acc.drop_no_backend += s.drop_no_backend;
            acc.drop_redirect += s.drop_redirect;
            acc.unpinned += s.unpinned;
            acc.flow_cache_fills += s.flow_cache_fills;
            acc
        }))
    }

    pub fn backend_stats(&self, id: u32) -> Result<BackendStats, DataplaneError> {
        let per_cpu = self
            .backend_stats
            .get(&id, 0)
            .map_err(map_err("BACKEND_STATS"))?;
        Ok(per_cpu.iter().fold(BackendStats::default(), |mut acc, s| {
            acc.packets += s.packets;
            acc.bytes += s.bytes;
            acc.new_flows += s.new_flows;
            acc.closed_flows += s.closed_flows;
            acc.redirected += s.redirected;
            acc
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tx` is what was not redirected; a reading between a CPU's two increments
    /// (one more redirected than sent) gives 0, not a wrapped count.
    #[test]
    fn tx_and_redirect_are_derived_from_the_real_servers_traffic() {
        let counted = ReasonCounts::from([("pass_not_service", 7)]);
        let forwarded = |packets, redirected| Traffic {
            packets,
            redirected,
            ..Traffic::default()
        };
        let v = verdicts(counted.clone(), forwarded(10, 4));
        assert_eq!((v["tx"], v["redirect"], v["pass_not_service"]), (6, 4, 7));
        let v = verdicts(counted, forwarded(3, 4));
        assert_eq!((v["tx"], v["redirect"]), (0, 4));
    }
}
