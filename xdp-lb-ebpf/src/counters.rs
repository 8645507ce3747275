//! Per-CPU counters: no atomics needed, userspace sums the CPUs.
//!
//! Every pointer here comes from a successful lookup in a per-CPU array: it is this
//! CPU's own copy of the value and stays valid while the program runs.
use xdp_lb_common::{Reason, ServiceStats};

use crate::maps::{BACKEND_STATS, GLOBAL_STATS, SERVICE_STATS};

#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(c) = GLOBAL_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU array value is this CPU's own copy, valid while the map lives
        // (as long as the program). XDP runs with migration disabled and one run at a
        // time per CPU, so nothing else writes it meanwhile (userspace only reads it,
        // or zeroes it on a reload, where a lost increment is the worst outcome).
        unsafe { *c += 1 };
    }
}

/// A service's own counters, looked up only when one is bumped: they count the rare
/// events (a pass, a drop, a move). A forwarded packet is counted once, on its real
/// server; the service's traffic is the sum of its real servers' (userspace derives it).
#[derive(Clone, Copy)]
pub struct ServiceCounters(u32);

#[inline(always)]
pub fn service(id: u32) -> ServiceCounters {
    ServiceCounters(id)
}

/// Adds one to the counter `field` picks in this CPU's copy of a service's stats.
#[inline(always)]
pub fn bump(stats: ServiceCounters, field: impl FnOnce(&mut ServiceStats) -> &mut u64) {
    if let Some(s) = SERVICE_STATS.get_ptr_mut(stats.0) {
        // SAFETY: a per-CPU array value is this CPU's own copy, valid while the map lives
        // (as long as the program). XDP runs with migration disabled and one run at a
        // time per CPU, so nothing else writes it meanwhile (userspace only reads it,
        // or zeroes it on a reload, where a lost increment is the worst outcome).
        let s = unsafe { &mut *s };
        *field(s) += 1;
    }
}

/// Counts a forwarded packet on its real server, verdict included (`redirected`, or
/// else `XDP_TX`): the only count on the hot path.
#[inline(always)]
pub fn account(backend: u32, len: u64, new_flow: bool, redirected: bool) {
    if let Some(b) = BACKEND_STATS.get_ptr_mut(backend) {
        // SAFETY: this CPU's copy from a successful per-CPU array lookup; as in `bump`.
        unsafe {
            (*b).packets += 1;
            (*b).bytes += len;
            (*b).new_flows += new_flow as u64;
            (*b).redirected += redirected as u64;
        }
    }
}

/// Counts a flow of an aging service seeing its first FIN or RST on its backend.
#[inline(always)]
pub fn closed(backend: u32) {
    if let Some(b) = BACKEND_STATS.get_ptr_mut(backend) {
        // SAFETY: this CPU's copy from a successful per-CPU array lookup; as in `bump`.
        unsafe { (*b).closed_flows += 1 };
    }
}
