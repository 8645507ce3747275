//! The flow table, one map per IP version: an IPv4 flow is stored under its 16-byte
//! [`FlowKeyV4`] in FLOWS_V4, an IPv6 one under its [`FlowKey`] in FLOWS. Every lookup
//! hashes and compares the whole key, and the IPv4 one costs less than half.
use xdp_lb_common::{FlowKey, FlowKeyV4, FlowValue};

use crate::maps::{FLOWS, FLOWS_V4};

/// The entry of `flow` (`ipv4`: the packet's IP version), to read and refresh in place.
#[inline(always)]
pub fn pinned(flow: &FlowKey, ipv4: bool) -> Option<*mut FlowValue> {
    if ipv4 {
        // Borrowed, not moved: a by-value key would be copied on the stack again.
        let key = FlowKeyV4::of_v4(flow);
        let key_ref = &key;
        FLOWS_V4.get_ptr_mut(key_ref)
    } else {
        FLOWS.get_ptr_mut(flow)
    }
}

/// Pins `flow` to `value`, replacing any entry (a full table evicts its oldest one).
/// Returns whether the entry was written.
#[inline(always)]
pub fn pin(flow: &FlowKey, ipv4: bool, value: &FlowValue) -> bool {
    if ipv4 {
        let key = FlowKeyV4::of_v4(flow);
        let key_ref = &key;
        FLOWS_V4.insert(key_ref, value, 0).is_ok()
    } else {
        FLOWS.insert(flow, value, 0).is_ok()
    }
}
