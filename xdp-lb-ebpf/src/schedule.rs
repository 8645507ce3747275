//! Backend selection. A known flow keeps its backend while that backend is active;
//! a new flow takes a slot of the service's precomputed schedule. The kernel only
//! indexes the schedule: weights, interleaving and consistent hashing are built by
//! the daemon, so new schedulers need no change here.
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, CONFIG_NEW_FLOW_RATE, ClientHop, FLOOD_HOLD_NS, FLOW_F_CLOSING,
    FlowKey, FlowValue, IPPROTO_TCP, Reason, SELECT_CURSOR, SELECT_HASH_DST, SELECT_HASH_SRC,
    SERVICE_F_NO_FLOW_TABLE, ServiceValue, flow_hash, hash_addr,
};

use crate::{
    counters, flow_cache, flows,
    maps::{
        ADMITTED, BACKEND_SLOT, BACKEND_VALUES, CONFIG, CURSORS, FLOOD_SEEN, INSERT_BUDGET,
        SCHEDULE,
    },
    nat,
    parse::{Packet, TCP_ACK, TCP_SYN},
    persist,
    program::Verdict,
};

/// The backend picked for a packet. Nothing is recorded yet: the caller pins a new
/// flow and counts a moved one with [`commit`], and only once the packet has really
/// been forwarded.
pub struct Chosen {
    pub backend_id: u32,
    /// Points into the BACKEND_VALUES pool: read in place, never copied. Userspace
    /// never rewrites an entry that an id points to, nor one retired less than a
    /// grace period ago, so it stays unchanged for the rest of this run.
    pub backend: *const BackendValue,
    pub new_flow: bool,
    /// A new pick for a flow whose pinned backend is gone or disabled.
    pub rescheduled: bool,
    /// New, or its aging state changed: NAT refreshes the reply entry then.
    pub refreshed: bool,
}

/// The flow table's entry of the packet's flow, if its service keeps one (for
/// [`select`]).
#[inline(always)]
pub fn entry(pkt: &Packet, svc: &ServiceValue) -> Option<*mut FlowValue> {
    if svc.flags & SERVICE_F_NO_FLOW_TABLE == 0 {
        // Borrowed, not moved: a by-value key would be copied on the 512-byte stack.
        flows::pinned(&pkt.flow, pkt.ipv4)
    } else {
        None
    }
}

/// The pick of a packet whose flow's pin the flow cache held: followed while its real
/// server is active, as a flow-table hit is (`select`); `None` sends the packet the
/// flow table's way.
#[inline(always)]
pub fn cached(backend_id: u32) -> Option<Chosen> {
    match backend(backend_id) {
        Some(b) if b.flags & BACKEND_F_ACTIVE != 0 => Some(Chosen {
            backend_id,
            backend: b,
            new_flow: false,
            rescheduled: false,
            refreshed: false,
        }),
        _ => None,
    }
}

/// A SYN on a flow its client closed (FIN or RST seen) opens a new connection on a
/// reused port: it is validated, scheduled afresh and counted new, as IPVS's
/// conn_reuse_mode does. A retransmitted SYN of a live flow stays.
#[inline(always)]
pub fn reopens(pkt: &Packet, entry: &FlowValue) -> bool {
    entry.flags & FLOW_F_CLOSING != 0 && starts_connection(pkt)
}

/// `pinned`: the flow's [`entry`]. `now` is 0 for flows that do not age (DR); NAT
/// passes the time so idle pins expire. `clock` is the time for a persistent
/// service's memory of its clients.
#[inline(always)]
pub fn select(
    pkt: &Packet,
    svc: &ServiceValue,
    pinned: Option<*mut FlowValue>,
    stats: counters::ServiceCounters,
    now: u64,
    clock: u64,
) -> Result<Chosen, Verdict> {
    let mut rescheduled = false;
    let mut reopened = false;
    if let Some(pinned) = pinned {
        // SAFETY: a value pointer from a successful lookup stays valid for the whole
        // run (hash map elements are freed only after an RCU grace period). Another
        // CPU may update the same flow's entry at the same time (two packets of one
        // flow on two queues); the fields are aligned words, so that race loses at
        // most a timestamp refresh and never tears a backend id.
        let pinned = unsafe { &mut *pinned };
        let backend_id = pinned.backend;
        let idle = now != 0 && nat::expired(pinned.last_seen_ns, pinned.flags, pkt.flow.proto, now);
        reopened = reopens(pkt, pinned);
        let backend = backend(backend_id);
        if idle || reopened {
            // An idle NAT flow, or a reopened one: whatever comes now is a new
            // connection. Another CPU may have cached the reopened flow's old pin.
            if reopened {
                flow_cache::renew_after_reopen(pkt, svc);
            }
        } else if let Some(backend) = backend
            && backend.flags & BACKEND_F_ACTIVE != 0
            // A reload may give a removed real server's slot to another service's new
            // one: a pin made for another service id is not followed.
            && u32::from(pinned.service) == svc.id
        {
            let was_closing = pinned.flags & FLOW_F_CLOSING;
            let closing = nat::closing_flag(pkt.tcp_flags);
            // Every TCP flow latches its client's FIN or RST (a write only then), so
            // that a SYN reusing its port is told from a retransmission; aging flows
            // refresh their clock too.
            let refreshed = if now != 0 {
                nat::touch(&mut pinned.last_seen_ns, &mut pinned.flags, now, closing)
            } else {
                if closing != 0 && was_closing == 0 {
                    pinned.flags |= closing;
                }
                false
            };
            if was_closing == 0 && pinned.flags & FLOW_F_CLOSING != 0 {
                counters::closed(backend_id);
            } else if pinned.flags & FLOW_F_CLOSING == 0 {
                flow_cache::fill(pkt, svc, backend_id, stats);
            }
            return Ok(Chosen {
                backend_id,
                backend,
                new_flow: false,
                rescheduled: false,
                refreshed,
            });
        } else {
            // Its backend is gone or disabled: reschedule as a new flow.
            rescheduled = true;
        }
    }

    // A reopened flow's entry is replaced in place, taking no new room; left unpinned,
    // its handshake's ACK would follow the closed connection's server.
    let admission = if svc.flags & SERVICE_F_NO_FLOW_TABLE == 0 && !reopened {
        admit(pkt)
    } else {
        Admission::UNGUARDED
    };
    set_admitted(admission.pin);
    // A persistent client goes back to its real server, whatever the schedule says.
    if svc.persist_secs != 0
        && let Some((backend_id, backend)) = persist::remembered(svc, &pkt.flow.src, clock)
    {
        return Ok(Chosen {
            backend_id,
            backend,
            new_flow: true,
            rescheduled,
            refreshed: true,
        });
    }
    if svc.sched_len == 0 {
        counters::bump(stats, |s| &mut s.drop_no_backend);
        return Err(Verdict::drop(Reason::DropNoBackend));
    }
    let slot = if svc.select == SELECT_CURSOR && !admission.by_hash {
        next_cursor(svc.id) % svc.sched_len
    } else {
        hashed_slot(&pkt.flow, svc)
    };
    let backend_id = match SCHEDULE.get(svc.sched_base + slot) {
        Some(id) => *id,
        None => return Err(Verdict::drop(Reason::DropBadBackend)),
    };
    let backend = match backend(backend_id) {
        Some(b) if b.flags & BACKEND_F_ACTIVE != 0 => b as *const BackendValue,
        _ => return Err(Verdict::drop(Reason::DropBadBackend)),
    };
    Ok(Chosen {
        backend_id,
        backend,
        // Without flow entries every packet comes this way: only a connection's first
        // one counts as new.
        new_flow: svc.flags & SERVICE_F_NO_FLOW_TABLE == 0 || starts_connection(pkt),
        rescheduled,
        refreshed: true,
    })
}

/// The schedule slot `flow` takes by hash: what consistent-hash services always pick,
/// and what the flood guard picks for a cursor service's unpinned flow. A NAT reply
/// of such a flow is told by it (`nat::unpinned_reply`). `svc.sched_len` is not 0.
#[inline(always)]
pub fn hashed_slot(flow: &FlowKey, svc: &ServiceValue) -> u32 {
    let hash = match svc.select {
        SELECT_HASH_SRC => hash_addr(flow.src_words(), 0),
        SELECT_HASH_DST => hash_addr(flow.dst_words(), 0),
        _ => flow_hash(flow),
    };
    hash % svc.sched_len
}

/// A TCP SYN without ACK: how a service without flow entries tells a new connection
/// (for its counters; UDP has no such start).
#[inline(always)]
pub fn starts_connection(pkt: &Packet) -> bool {
    pkt.flow.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Records a pick whose packet was forwarded: a new flow is pinned to its backend
/// (replacing a stale pin) and a moved one counted. A packet passed or dropped on the
/// forwarding path leaves no pin, so the flow's next packet picks afresh and is
/// counted as new when it really reaches a server. `client` is where a NAT flow's
/// replies go (zero for other flows).
#[inline(always)]
pub fn commit(
    pkt: &Packet,
    svc: &ServiceValue,
    chosen: &Chosen,
    stats: counters::ServiceCounters,
    now: u64,
    client: &ClientHop,
) {
    if !chosen.new_flow || svc.flags & SERVICE_F_NO_FLOW_TABLE != 0 {
        return;
    }
    let pin = FlowValue {
        backend: chosen.backend_id,
        // Service ids are below MAX_SERVICES (checked against 16 bits in the common
        // crate).
        service: svc.id as u16,
        last_seen_ns: now,
        flags: nat::closing_flag(pkt.tcp_flags),
        client: *client,
    };
    if !admitted() {
        // Forwarded unpinned: its next packet, with no entry either, is picked by the
        // flow's hash again, so it reaches the same server (see `admit`).
        counters::bump(stats, |s| &mut s.unpinned);
        return;
    }
    // A full LRU evicts the oldest flow; an insert failure only costs stickiness.
    if flows::pin(&pkt.flow, pkt.ipv4, &pin) && pin.flags != 0 {
        // Born closing (a lone FIN or RST): it never counts as active.
        counters::closed(chosen.backend_id);
    }
    if chosen.rescheduled {
        counters::bump(stats, |s| &mut s.rescheduled);
    }
}

/// What the flood guard lets a packet without a flow entry do.
struct Admission {
    /// Its flow may be pinned.
    pin: bool,
    /// A cursor service picks its server by the flow's hash instead, as consistent-hash
    /// services always do: the pick of an unpinned flow is the same at every packet.
    by_hash: bool,
}

impl Admission {
    /// A service without flow entries: nothing to guard, and its pick is a hash anyway.
    /// And a reopened flow: pinned in its entry's place, picked by the schedule.
    const UNGUARDED: Admission = Admission {
        pin: true,
        by_hash: false,
    };
}

/// The flood guard (`CONFIG_NEW_FLOW_RATE` per second and CPU; off at 0). Two token
/// buckets per CPU, holding at most a second's worth each:
/// - connection attempts (bare TCP SYNs): a SYN takes a token and is pinned. When a
///   CPU's bucket runs dry a flood is on, on every CPU, until a second after a SYN
///   last found a bucket dry; during a flood no SYN is pinned, token or not, so a
///   flood of spoofed SYNs, however long, inserts about a bucketful per CPU (those
///   taken before it was seen) and evicts no one. Such a SYN is picked by its flow's
///   hash, and so is its connection's next packet (below). A NAT real server's answer
///   to one is told by that hash too (`nat::unpinned_reply`).
/// - other packets without an entry (a handshake's last ACK, a flow whose entry was
///   evicted, UDP): pinned while its own bucket has tokens, which a SYN flood does not
///   drain. A TCP one is picked by hash, where its SYN was, with the guard off too;
///   an unpinned UDP one too.
#[inline(always)]
fn admit(pkt: &Packet) -> Admission {
    let rate = guard_rate();
    if rate == 0 {
        // A TCP segment with no entry that does not open a connection may be the
        // handshake's ACK of a SYN the guard left unpinned just before it was turned
        // off: picked by hash, it reaches that SYN's server. (Any other such segment,
        // its entry evicted, has no better pick.)
        return Admission {
            pin: true,
            by_hash: pkt.flow.proto == IPPROTO_TCP && !starts_connection(pkt),
        };
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    if starts_connection(pkt) {
        let taken = take_token(BUDGET_ATTEMPTS, rate, now);
        // Asked even without a token: that is how a flood is marked.
        let flood = flood_on(taken, now);
        let pin = taken && !flood;
        return Admission { pin, by_hash: !pin };
    }
    let pin = take_token(BUDGET_OTHERS, rate, now);
    Admission {
        pin,
        by_hash: !pin || pkt.flow.proto == IPPROTO_TCP,
    }
}

/// The flood guard's rate (`CONFIG_NEW_FLOW_RATE`); 0 when it is off.
#[inline(always)]
pub fn guard_rate() -> u64 {
    CONFIG.get(CONFIG_NEW_FLOW_RATE).copied().unwrap_or(0)
}

/// Records whether this run's new flow may be pinned, for [`admitted`]. Kept in a map
/// word rather than in [`Chosen`]: read back, it is a value the verifier does not
/// know, so it walks the forwarding paths between once, not once for each decision
/// (the walk grew by half when it was a field).
#[inline(always)]
fn set_admitted(pin: bool) {
    if let Some(slot) = ADMITTED.get_ptr_mut(0) {
        // SAFETY: this CPU's copy from a successful per-CPU array lookup, written and
        // read by this run only (see `counters::bump`).
        unsafe { *slot = u32::from(pin) };
    }
}

/// Whether the flood guard let this run's new flow be pinned ([`select`] decided).
#[inline(always)]
pub fn admitted() -> bool {
    // SAFETY: as in `set_admitted`.
    ADMITTED.get_ptr(0).is_none_or(|slot| unsafe { *slot } != 0)
}

/// `INSERT_BUDGET`'s buckets: bare SYNs, the other packets without an entry, and the
/// NAT reply entries of flows left unpinned (`reply_budget`).
const BUDGET_ATTEMPTS: u32 = 0;
const BUDGET_OTHERS: u32 = 1;
const BUDGET_REPLIES: u32 = 2;
/// `FLOOD_SEEN` is rewritten at most this often: during a flood every SYN finds its
/// bucket dry, and one shared word written by all of them would bounce between CPUs.
const FLOOD_SEEN_GRANULARITY_NS: u64 = 10_000_000;

/// Whether a flood is on, for a SYN that found a token (`taken`) or none; one that
/// found none marks the flood for every CPU.
#[inline(always)]
fn flood_on(taken: bool, now: u64) -> bool {
    let Some(seen) = FLOOD_SEEN.get_ptr_mut(0) else {
        return !taken;
    };
    // SAFETY: a value pointer from a successful array lookup, valid for the run. CPUs
    // race on this aligned word: the worst is an older time written over a newer one,
    // which ends a flood at most FLOOD_SEEN_GRANULARITY_NS early.
    let seen = unsafe { &mut *seen };
    if !taken {
        if now.saturating_sub(*seen) >= FLOOD_SEEN_GRANULARITY_NS {
            *seen = now;
        }
        return true;
    }
    *seen != 0 && now.saturating_sub(*seen) < FLOOD_HOLD_NS
}

/// Whether a flow the flood guard left unpinned may have a NAT reply entry written:
/// one of `CONFIG_NEW_FLOW_RATE` per second and CPU, like the flows it pins. Only
/// `BACKEND_F_NAT_EAGER` real servers' flows need one (see
/// `nat::remember_unpinned_reply`).
#[inline(always)]
pub fn reply_budget(now: u64) -> bool {
    take_token(BUDGET_REPLIES, guard_rate(), now)
}

/// Takes a token from this CPU's bucket `which`, refilled at `rate` per second:
/// whether one was left.
#[inline(always)]
fn take_token(which: u32, rate: u64, now: u64) -> bool {
    let Some(bucket) = INSERT_BUDGET.get_ptr_mut(which) else {
        return true;
    };
    // SAFETY: this CPU's copy from a successful per-CPU array lookup, written by no one
    // else during the run.
    let [tokens, last] = unsafe { &mut *bucket };
    if *last == 0 {
        // First use on this CPU: a full bucket.
        (*tokens, *last) = (rate, now);
    } else {
        // At most a second counts (the bucket holds no more), which also keeps the
        // product in 64 bits (rate <= 1e8): no 128-bit multiply for BPF.
        let elapsed = now.saturating_sub(*last).min(1_000_000_000);
        let refill = elapsed.wrapping_mul(rate) / 1_000_000_000;
        if refill > 0 {
            (*tokens, *last) = (tokens.saturating_add(refill).min(rate), now);
        }
    }
    if *tokens == 0 {
        return false;
    }
    *tokens -= 1;
    true
}

/// The current value of backend `id`: one more array lookup than reading it by id,
/// the price of replacing it in one step.
#[inline(always)]
pub fn backend(id: u32) -> Option<&'static BackendValue> {
    let index = *BACKEND_SLOT.get(id)?;
    BACKEND_VALUES.get(index)
}

/// Per-CPU round robin over the schedule: no shared cache line between CPUs, and each
/// CPU still walks the whole interleaved sequence, so the split follows the weights.
#[inline(always)]
fn next_cursor(service_id: u32) -> u32 {
    match CURSORS.get_ptr_mut(service_id) {
        // SAFETY: this CPU's copy from a successful per-CPU array lookup, written by
        // no one else during the run (see `counters::bump`).
        Some(c) => unsafe {
            let v = *c;
            *c = v.wrapping_add(1);
            v
        },
        None => 0,
    }
}
