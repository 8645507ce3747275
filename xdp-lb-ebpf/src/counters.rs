//! Per-CPU counters: no atomics needed, userspace sums the CPUs.
use xdp_lb_common::{Reason, ServiceStats};

use crate::maps::{BACKEND_STATS, GLOBAL_STATS, SERVICE_STATS};

#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(c) = GLOBAL_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn service(id: u32) -> Option<*mut ServiceStats> {
    SERVICE_STATS.get_ptr_mut(id)
}

#[inline(always)]
pub fn bump(counter: Option<&mut u64>) {
    if let Some(c) = counter {
        *c += 1;
    }
}

/// Counts a forwarded packet on its service and backend.
#[inline(always)]
pub fn account(svc: Option<*mut ServiceStats>, backend: u32, len: u64, new_flow: bool) {
    let new = new_flow as u64;
    if let Some(s) = svc {
        // SAFETY: per-CPU slot.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += len;
            (*s).new_flows += new;
        }
    }
    if let Some(b) = BACKEND_STATS.get_ptr_mut(backend) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*b).packets += 1;
            (*b).bytes += len;
            (*b).new_flows += new;
        }
    }
}
