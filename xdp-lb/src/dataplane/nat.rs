//! NAT state as the daemon sees it: the timeouts the program applies, and the
//! garbage collection of idle flow and reply entries (the LRU only evicts when full,
//! so without this a quiet table would keep dead entries forever).
use std::{collections::HashMap, time::Duration};

use xdp_lb_common::{
    CONFIG_TIMEOUT_TCP_FIN_NS, CONFIG_TIMEOUT_TCP_NS, CONFIG_TIMEOUT_UDP_NS, FLOW_F_CLOSING,
    FlowKey, IPPROTO_TCP, NAT_PORT_WORDS, NatOrigin, ServiceKey,
};

use super::{Dataplane, DataplaneError, map_err};
pub use crate::config::NatTimeouts;
use crate::{load::Counters, schedule::Load, services::NatOrigins};

impl NatTimeouts {
    pub(crate) fn for_entry(&self, proto: u8, flags: u16) -> Duration {
        match (proto, flags & FLOW_F_CLOSING != 0) {
            (IPPROTO_TCP, true) => self.tcp_fin,
            (IPPROTO_TCP, false) => self.tcp,
            _ => self.udp,
        }
    }
}

/// The clock `bpf_ktime_get_ns` reads (CLOCK_MONOTONIC), in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What one walk of the flow table did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSweep {
    pub gc: NatGc,
    /// Connections of the aging flows left, by backend id.
    pub loads: HashMap<u32, Load>,
}

/// What one garbage-collection pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatGc {
    pub flows_left: usize,
    pub flows_removed: usize,
    pub replies_left: usize,
    pub replies_removed: usize,
}

impl Dataplane {
    /// Sets the NAT real servers (none: no NAT reply handling) and the idle timeouts:
    /// the ports replies may come from (`NAT_PORTS`) and the VIPs each real server
    /// answers for (`NAT_ORIGINS`). A real server with more VIPs than an origin lists
    /// keeps the first ones in (address, port, service) order, while its backends
    /// switch to writing reply entries with the flow (`BACKEND_F_NAT_EAGER`): a reload
    /// that adds such a VIP leaves its connections that already had a reply (and so
    /// a reply entry) as they were, and those through the VIPs kept; one through a
    /// VIP it pushed out, still waiting for its first reply, loses that reply.
    pub fn set_nat(&mut self, origins: &NatOrigins, t: &NatTimeouts) -> Result<(), DataplaneError> {
        let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        for (slot, value) in [
            (CONFIG_TIMEOUT_TCP_NS, ns(t.tcp)),
            (CONFIG_TIMEOUT_TCP_FIN_NS, ns(t.tcp_fin)),
            (CONFIG_TIMEOUT_UDP_NS, ns(t.udp)),
        ] {
            self.config.set(slot, value, 0).map_err(map_err("CONFIG"))?;
        }
        // The origins first: a port's bit sends replies to them.
        for (key, vips) in origins {
            let mut origin = NatOrigin::default();
            for (slot, vip) in origin.vips.iter_mut().zip(vips) {
                *slot = *vip;
                origin.count += 1;
            }
            self.nat_origins
                .insert(key, origin, 0)
                .map_err(map_err("NAT_ORIGINS"))?;
        }
        let gone: Vec<ServiceKey> = self
            .nat_origins
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !origins.contains_key(k))
            .collect();
        for key in &gone {
            self.nat_origins
                .remove(key)
                .map_err(map_err("NAT_ORIGINS"))?;
        }
        let mut words = vec![0u64; NAT_PORT_WORDS as usize];
        for key in origins.keys() {
            let port = u16::from_be(key.port_be);
            words[usize::from(port >> 6)] |= 1 << (port & 63);
        }
        for (i, word) in words.into_iter().enumerate() {
            self.nat_ports
                .set(i as u32, word, 0)
                .map_err(map_err("NAT_PORTS"))?;
        }
        Ok(())
    }

    /// The flood guard's rate per second on each CPU (0: off; see `schedule::admit`
    /// in the XDP program).
    pub fn set_new_flow_rate(&mut self, per_cpu: u64) -> Result<(), DataplaneError> {
        self.config
            .set(xdp_lb_common::CONFIG_NEW_FLOW_RATE, per_cpu, 0)
            .map_err(map_err("CONFIG"))
    }

    /// How long ago the flood guard last saw a SYN flood (a SYN finding its CPU's
    /// bucket dry); `None` if never since the program was loaded.
    pub fn syn_flood_seen_ago(&self) -> Result<Option<std::time::Duration>, DataplaneError> {
        let seen = self.flood_seen.get(&0, 0).map_err(map_err("FLOOD_SEEN"))?;
        if seen == 0 {
            return Ok(None);
        }
        Ok(Some(std::time::Duration::from_nanos(
            monotonic_ns().saturating_sub(seen),
        )))
    }

    /// Deletes flow and NAT reply entries idle past their timeout, and counts the
    /// connections of the flows that stay, by backend id (aging flows only: DR and TUN
    /// flows of other services are never stamped and are left to the LRU).
    pub fn expire_idle(
        &mut self,
        t: &NatTimeouts,
        now_ns: u64,
    ) -> Result<FlowSweep, DataplaneError> {
        let idle = |last: u64, proto: u8, flags: u16| {
            last != 0 && now_ns.saturating_sub(last) > t.for_entry(proto, flags).as_nanos() as u64
        };
        let mut sweep = FlowSweep::default();
        let mut stale_flows = Vec::new();
        for (k, v) in self.flows.iter().filter_map(Result::ok) {
            if idle(v.last_seen_ns, k.proto, v.flags) {
                stale_flows.push(k);
                continue;
            }
            sweep.gc.flows_left += 1;
            if v.last_seen_ns != 0 {
                let load = sweep.loads.entry(v.backend).or_default();
                if v.flags & FLOW_F_CLOSING != 0 {
                    load.inactive += 1;
                } else {
                    load.active += 1;
                }
            }
        }
        for k in &stale_flows {
            // Gone already (evicted or raced): fine.
            let _ = self.flows.remove(k);
        }
        let stale_replies: Vec<FlowKey> = self
            .nat_replies
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| idle(v.last_seen_ns, k.proto, v.flags))
            .map(|(k, _)| k)
            .collect();
        for k in &stale_replies {
            let _ = self.nat_replies.remove(k);
        }
        sweep.gc.flows_removed = stale_flows.len();
        sweep.gc.replies_removed = stale_replies.len();
        sweep.gc.replies_left = self.nat_replies.keys().count();
        Ok(sweep)
    }

    /// The cumulative new and closed flow counters of backend `ids`.
    pub fn backend_counters(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<HashMap<u32, Counters>, DataplaneError> {
        ids.into_iter()
            .map(|id| {
                let s = self.backend_stats(id)?;
                Ok((
                    id,
                    Counters {
                        new_flows: s.new_flows,
                        closed_flows: s.closed_flows,
                    },
                ))
            })
            .collect()
    }

    /// Every NAT reply entry (one per NAT connection), for the sync to describe.
    pub fn nat_reply_entries(&self) -> Vec<(FlowKey, xdp_lb_common::NatValue)> {
        self.nat_replies.iter().filter_map(Result::ok).collect()
    }

    /// A second handle on the NAT reply table (duplicated descriptors), so the sync
    /// can walk it on a thread of its own instead of in the daemon's loop.
    pub fn reply_walker(&self) -> Result<ReplyWalker, DataplaneError> {
        self.nat_replies
            .duplicate()
            .map(ReplyWalker)
            .map_err(super::failed)
    }

    /// Writes connections a sync peer sent (see [`crate::sync`]): each one's flow and
    /// reply entry, replacing what was there. Returns how many were written.
    pub fn install_synced(
        &mut self,
        installs: &[crate::sync::Install],
    ) -> Result<usize, DataplaneError> {
        for i in installs {
            self.flows
                .insert(&i.flow.0, i.flow.1)
                .map_err(super::failed)?;
            self.nat_replies
                .insert(&i.reply.0, i.reply.1)
                .map_err(super::failed)?;
        }
        Ok(installs.len())
    }

    /// Entries in the flow table and the NAT reply table.
    pub fn table_sizes(&self) -> (usize, usize) {
        (self.flows.keys().count(), self.nat_replies.keys().count())
    }
}

/// The NAT reply table, read-only, for the sync's walk (see [`Dataplane::reply_walker`]).
pub struct ReplyWalker(super::by_family::ReplyTable);

impl ReplyWalker {
    /// Every entry now (a walk: one syscall pair per entry).
    pub fn entries(&self) -> Vec<(FlowKey, xdp_lb_common::NatValue)> {
        self.0.iter().filter_map(Result::ok).collect()
    }
}
