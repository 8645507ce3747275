//! The tables keyed by a flow's 5-tuple, one map per IP version: an IPv4 flow is
//! stored under its 16-byte [`FlowKeyV4`] (FLOWS_V4, NAT_REPLIES_V4), an IPv6 one
//! under its [`FlowKey`] (FLOWS, NAT_REPLIES). Every lookup hashes and compares the
//! whole key, and the IPv4 one costs less than half.
use aya_ebpf::maps::LruHashMap;
use xdp_lb_common::{FlowKey, FlowKeyV4, FlowValue};

use crate::maps::{FLOWS, FLOWS_V4};

/// The entry of `flow` (`ipv4`: the packet's IP version) in one of the pairs, to
/// read and refresh in place.
#[inline(always)]
pub fn get_in<V>(
    v4: &LruHashMap<FlowKeyV4, V>,
    v6: &LruHashMap<FlowKey, V>,
    flow: &FlowKey,
    ipv4: bool,
) -> Option<*mut V> {
    if ipv4 {
        // Borrowed, not moved: a by-value key would be copied on the stack again.
        let key = FlowKeyV4::of_v4(flow);
        let key_ref = &key;
        v4.get_ptr_mut(key_ref)
    } else {
        v6.get_ptr_mut(flow)
    }
}

/// Writes the entry of `flow` in one of the pairs, replacing any (a full table evicts
/// its oldest entry). Returns whether it was written.
#[inline(always)]
pub fn insert_in<V>(
    v4: &LruHashMap<FlowKeyV4, V>,
    v6: &LruHashMap<FlowKey, V>,
    flow: &FlowKey,
    ipv4: bool,
    value: &V,
) -> bool {
    if ipv4 {
        let key = FlowKeyV4::of_v4(flow);
        let key_ref = &key;
        v4.insert(key_ref, value, 0).is_ok()
    } else {
        v6.insert(flow, value, 0).is_ok()
    }
}

/// The flow table's entry of `flow`.
#[inline(always)]
pub fn pinned(flow: &FlowKey, ipv4: bool) -> Option<*mut FlowValue> {
    get_in(&FLOWS_V4, &FLOWS, flow, ipv4)
}

/// Pins `flow` to `value` in the flow table; whether the entry was written.
#[inline(always)]
pub fn pin(flow: &FlowKey, ipv4: bool, value: &FlowValue) -> bool {
    insert_in(&FLOWS_V4, &FLOWS, flow, ipv4, value)
}
