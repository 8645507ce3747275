//! The source filter for VIP traffic: XDP runs before netfilter, so the host's
//! firewall never sees a packet this program forwards; this is where a VIP's sources
//! are allowed or denied.
//!
//! Two LPM tries (IPv4, IPv6) keyed by `{ prefix_len, scope, source }`: the global deny
//! list is scope 0, a service's own rules scope `id + 1`, so one trie serves every
//! service and a rule for `addr/len` is a prefix of 32 + len bits. The daemon decides
//! everything else: a service with `allow` rules gets a `/0` deny of its own (its
//! implicit default), and a reload writes the other generation of scopes before the
//! services switch to it.
//!
//! Order: the global deny list first (a hit drops, whatever the service says), then the
//! service's longest matching prefix decides; no match allows.
use aya_ebpf::maps::lpm_trie::Key;
use xdp_lb_common::{
    FILTER_DENY, FILTER_SCOPE_BITS, FILTER_SCOPE_GLOBAL, FilterKeyV4, FilterKeyV6, FilterValue,
    Reason, SERVICE_F_FILTER, SERVICE_F_FILTER_GEN, SERVICE_F_FILTER_GLOBAL, ServiceValue,
    filter_scope,
};

use crate::{
    maps::{FILTER_STATS, FILTER_V4, FILTER_V6},
    parse::Packet,
    program::Verdict,
};

/// Ok when the packet's source may reach the service; otherwise the drop.
#[inline(always)]
pub fn check(pkt: &Packet, svc: &ServiceValue) -> Result<(), Verdict> {
    let generation = (svc.flags & SERVICE_F_FILTER_GEN != 0) as u32;
    if svc.flags & SERVICE_F_FILTER_GLOBAL != 0
        && let Some(rule) = lookup(pkt, filter_scope(FILTER_SCOPE_GLOBAL, generation))
        && decide(&rule)
    {
        return Err(Verdict::drop(Reason::DropFiltered));
    }
    if svc.flags & SERVICE_F_FILTER != 0
        && let Some(rule) = lookup(pkt, filter_scope(svc.id + 1, generation))
        && decide(&rule)
    {
        return Err(Verdict::drop(Reason::DropFiltered));
    }
    Ok(())
}

/// The longest prefix of `scope` that holds the packet's source, copied out.
#[inline(always)]
fn lookup(pkt: &Packet, scope: u32) -> Option<FilterValue> {
    let src = &pkt.flow.src;
    if pkt.ipv4 {
        // The IPv4 address is the last word of the IPv4-mapped form.
        let key = Key::new(
            FILTER_SCOPE_BITS + 32,
            FilterKeyV4 {
                scope,
                addr: [src[12], src[13], src[14], src[15]],
            },
        );
        FILTER_V4.get(&key).copied()
    } else {
        let key = Key::new(FILTER_SCOPE_BITS + 128, FilterKeyV6 { scope, addr: *src });
        FILTER_V6.get(&key).copied()
    }
}

/// Counts the packet on the rule that decided it; true when that rule denies.
#[inline(always)]
fn decide(rule: &FilterValue) -> bool {
    if let Some(c) = FILTER_STATS.get_ptr_mut(rule.rule) {
        // SAFETY: a per-CPU array value is this CPU's own copy, valid while the map lives
        // (as long as the program); XDP runs one program at a time per CPU with
        // migration disabled, so nothing else writes it meanwhile.
        unsafe { *c += 1 };
    }
    rule.action == FILTER_DENY
}
