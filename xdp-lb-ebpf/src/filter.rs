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
    FILTER_DENY, FILTER_SCOPE_BITS, FILTER_SCOPE_GENERATION, FilterKeyV4, FilterKeyV6,
    SERVICE_F_FILTER, SERVICE_F_FILTER_GEN, SERVICE_F_FILTER_GLOBAL, ServiceValue, filter_scope,
};

use crate::maps::{FILTER_STATS, FILTER_V4, FILTER_V6};

/// Whether the packet's source is denied for the service (counted on the rule that
/// decided either way).
///
/// Not inlined, on purpose: a BPF-to-BPF call gives the tries' key a stack frame of
/// its own, which is gone on return, so the verifier's states after the call differ
/// only in the returned flag and the paths through the filter merge again; inlined,
/// each path (no rule, global hit, service allow, service deny, ...) left different
/// key bytes on the caller's stack and the verifier walked the rest of the program
/// once per path (166,709 → 285,776 instructions processed, against 1 million). The
/// frame must stay small: the caller's takes 480 of the 512 bytes two frames may use,
/// hence one key buffer for both families and both lookups.
#[inline(never)]
pub fn denies(src: &[u8; 16], ipv4: bool, flags: u32, scope: u32) -> bool {
    let mut key = KeyBuf {
        prefix_len: FILTER_SCOPE_BITS + 128,
        // The global list of the service's generation.
        scope: scope & FILTER_SCOPE_GENERATION,
        addr: *src,
    };
    if ipv4 {
        // The IPv4 address is the last word of the IPv4-mapped form; the IPv4 trie
        // reads only the first 12 bytes, so the rest may stay as it is.
        key.prefix_len = FILTER_SCOPE_BITS + 32;
        key.addr[0] = src[12];
        key.addr[1] = src[13];
        key.addr[2] = src[14];
        key.addr[3] = src[15];
    }
    if flags & SERVICE_F_FILTER_GLOBAL != 0 && lookup(&key, ipv4) == DENIED {
        return true;
    }
    if flags & SERVICE_F_FILTER == 0 {
        return false;
    }
    key.scope = scope;
    lookup(&key, ipv4) == DENIED
}

/// The scope of `svc`'s own rules in the generation it reads: worked out by the
/// caller, so the call's frame keeps fewer values across its helper calls (each one
/// past four is a stack slot, and the frame has 32 bytes to spare).
#[inline(always)]
pub fn scope_of(svc: &ServiceValue) -> u32 {
    let generation = (svc.flags & SERVICE_F_FILTER_GEN != 0) as u32;
    filter_scope(svc.id + 1, generation)
}

/// One key for both tries: an IPv6 key (`Key<FilterKeyV6>`, 24 bytes), whose first 12
/// bytes are an IPv4 key (`Key<FilterKeyV4>`) when `addr` starts with the IPv4 address.
#[repr(C)]
struct KeyBuf {
    prefix_len: u32,
    scope: u32,
    addr: [u8; 16],
}

const NO_RULE: u32 = 0;
const ALLOWED: u32 = 1;
const DENIED: u32 = 2;

/// Looks the source up in `key`'s scope: no rule holds it, or the longest one that
/// does allows or denies it (and counts it).
#[inline(always)]
fn lookup(key: &KeyBuf, ipv4: bool) -> u32 {
    let value = if ipv4 {
        // SAFETY: `Key<FilterKeyV4>` is `repr(C, packed)` { u32, u32, [u8; 4] }: the
        // first 12 bytes of `KeyBuf`, which is larger and fully initialised.
        let key = unsafe { &*(key as *const KeyBuf as *const Key<FilterKeyV4>) };
        FILTER_V4.get(key)
    } else {
        // SAFETY: `Key<FilterKeyV6>` is `repr(C, packed)` { u32, u32, [u8; 16] }: the
        // same 24 bytes as `KeyBuf`.
        let key = unsafe { &*(key as *const KeyBuf as *const Key<FilterKeyV6>) };
        FILTER_V6.get(key)
    };
    let Some(value) = value else {
        return NO_RULE;
    };
    let (rule, action) = (value.rule, value.action);
    if let Some(c) = FILTER_STATS.get_ptr_mut(rule) {
        // SAFETY: a per-CPU array value is this CPU's own copy, valid while the map lives
        // (as long as the program); XDP runs one program at a time per CPU with
        // migration disabled, so nothing else writes it meanwhile.
        unsafe { *c += 1 };
    }
    if action == FILTER_DENY {
        DENIED
    } else {
        ALLOWED
    }
}
