//! The services map, one per IP version (as the flow table, see `flows`): an IPv4
//! packet's service is looked up under its 8-byte [`ServiceKeyV4`] in SERVICES_V4, an
//! IPv6 one's under its [`ServiceKey`] in SERVICES. Every packet makes this lookup,
//! and the kernel hashes and compares the whole key.
use xdp_lb_common::{FlowKey, ServiceKey, ServiceKeyV4, ServiceValue};

use crate::maps::{SERVICES, SERVICES_V4};

/// The service `flow`'s packet is for (`ipv4`: the packet's IP version), read in
/// place: copying its 40 bytes out cost more than the rest of the lookup.
///
/// A hash map value stays allocated for the whole run (RCU), but the kernel may
/// recycle a replaced element for a later update, so two reads of it could in theory
/// see two updates; every field is only used as an index that is bounds checked
/// again (SCHEDULE, counters) or as a flag, so nothing reads out of bounds: at worst
/// one packet takes a wrong but valid pick.
#[inline(always)]
pub fn lookup(flow: &FlowKey, ipv4: bool) -> Option<&'static ServiceValue> {
    if ipv4 {
        let key = ServiceKeyV4::of_v4_flow(flow);
        // Borrowed, not moved: a by-value key would be copied on the stack again.
        let key_ref = &key;
        // SAFETY: the value lives for the run; its fields are read as above.
        unsafe { SERVICES_V4.get(key_ref) }
    } else {
        lookup_v6(flow)
    }
}

/// [`lookup`] of an IPv6 packet's service.
#[inline(always)]
pub fn lookup_v6(flow: &FlowKey) -> Option<&'static ServiceValue> {
    let key = ServiceKey::of_flow(flow);
    let key_ref = &key;
    // SAFETY: as in `lookup`.
    unsafe { SERVICES.get(key_ref) }
}
