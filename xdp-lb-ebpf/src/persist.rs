//! Persistence, IPVS's `persistence_timeout` / `persistence_granularity`: a client's
//! new connections to a service go to the real server of its earlier ones while the
//! client was seen within the timeout and that server is still in the pool (a server
//! taken out by its health check is not followed; one kept with weight 0 by
//! `inhibit_on_failure` is, as in IPVS). One LRU entry per service and client address
//! masked by the granularity, refreshed by the client's traffic.
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, LAST_SEEN_GRANULARITY_NS, PersistKey, PersistValue,
    ServiceValue, mask_addr,
};

use crate::maps::PERSIST;

#[inline(always)]
fn key(svc: &ServiceValue, src: &[u8; 16]) -> PersistKey {
    PersistKey {
        service: svc.id,
        client: mask_addr(src, &svc.persist_mask),
    }
}

#[inline(always)]
fn fresh(last_seen_ns: u64, svc: &ServiceValue, now: u64) -> bool {
    now.saturating_sub(last_seen_ns) < u64::from(svc.persist_secs) * 1_000_000_000
}

/// The real server this client's new connection goes to, if it has a fresh one that
/// is still active: (backend id, its value).
#[inline(always)]
pub fn remembered(
    svc: &ServiceValue,
    src: &[u8; 16],
    now: u64,
) -> Option<(u32, *const BackendValue)> {
    // Borrowed, not moved: a by-value key would be copied on the 512-byte stack.
    let key = &key(svc, src);
    // SAFETY: the value is copied out at once; a concurrent update of the same client
    // can at worst give the previous backend id, which is checked below like any.
    let entry = unsafe { *PERSIST.get(key)? };
    if !fresh(entry.last_seen_ns, svc, now) {
        return None;
    }
    let backend = crate::schedule::backend(entry.backend)?;
    (backend.flags & BACKEND_F_ACTIVE != 0).then_some((entry.backend, backend as *const _))
}

/// After a forwarded packet: a new connection (re)sets the client's real server; any
/// other packet to that server keeps the entry fresh, at most once per second.
#[inline(always)]
pub fn remember(svc: &ServiceValue, src: &[u8; 16], backend: u32, new_flow: bool, now: u64) {
    let key = &key(svc, src);
    if !new_flow {
        if let Some(entry) = PERSIST.get_ptr_mut(key) {
            // SAFETY: a value pointer from a successful lookup stays valid for the run;
            // the fields are aligned words, so a race with another CPU loses at most a
            // timestamp refresh.
            let entry = unsafe { &mut *entry };
            if entry.backend == backend
                && now.saturating_sub(entry.last_seen_ns) >= LAST_SEEN_GRANULARITY_NS
            {
                entry.last_seen_ns = now;
            }
        }
        return;
    }
    let value = &PersistValue {
        backend,
        _pad: 0,
        last_seen_ns: now,
    };
    // A full LRU evicts the oldest client; an insert failure only costs persistence.
    let _ = PERSIST.insert(key, value, 0);
}
