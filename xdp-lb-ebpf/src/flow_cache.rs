//! The flow cache: each CPU's memo of the established IPv4 flows it forwarded, in a
//! set-associative array (`FLOW_CACHE`, six ways to a 64-byte set). A cached flow's
//! packet finds its real server with one memory access instead of the flow table's
//! bucket walk (bucket, element header and key, value: two or three cache lines, all
//! missing the caches once there are tens of thousands of flows) and the kernel call
//! around it. A way is a word of key (source address and port, service) and 16 bits of
//! backend id, so six flows share a line: the fewer lines a CPU's flows touch, the
//! more of them stay in its L2 cache.
//!
//! The flow table stays the authority; the cache only copies a pin that an ordinary
//! lookup found, and a set counts only under the generation it was written in
//! (`CONFIG_FLOW_CACHE`), which the daemon bumps every second and whenever it removes
//! flow entries (a set of an older generation counts as empty). So:
//! - each cached flow looks itself up in the flow table at least once a second, which
//!   keeps its LRU place as a lookup on every packet did (the flood guard keeps the
//!   table's turnover far slower than that);
//! - a pin is followed only while its real server is active, under the packet's
//!   service (part of the key; as a flow-table hit is); otherwise the packet takes the
//!   flow table's way;
//! - a connection's first and last packets (a bare SYN, a FIN or RST) take the flow
//!   table's way: a FIN or RST latches there and a closing flow is not cached, and a
//!   SYN on a closed entry reopens it there (see `schedule::reopens`); a reopen starts
//!   a new generation from the program itself, since another CPU may hold the flow's
//!   old pin (a flow's packets may arrive on several CPUs: veth and generic XDP run on
//!   the sender's);
//! - the daemon also starts a new generation whenever it rewrites a real server, so a
//!   server that comes back does not draw the flows cached before it went away.
//!
//! A set keeps the first five flows filled in a generation and turns over its last way
//! (see `fill`). Earlier versions had two and then three ways of 16-byte keys, each
//! filled at the front: at 20,000 flows two ways missed one packet in eight (a cycle
//! of flows through sets that got more than two), three one in forty, over 2 MiB of
//! sets a CPU that the flows spread across; six ways in 512 KiB a CPU were faster.
//!
//! Only flows whose pin the packet path never writes are cached: IPv4, DR or TUN, not
//! aging (NAT, lc, wlc refresh a clock) and without persistence (which refreshes its
//! client's entry). Each CPU has its own sets (CPU id × sets per CPU), written only by
//! itself. What is left: a flow whose entry the LRU evicted keeps its cached pin on
//! the CPUs that hold one until the next generation (its next packet elsewhere is a
//! new flow, as without the cache); and a fill racing a reopen of the same flow on
//! another CPU can keep the old pin there until the next generation.
use aya_ebpf::helpers::bpf_get_smp_processor_id;
use xdp_lb_common::{
    CONFIG_FLOW_CACHE, FLOW_CACHE_WAYS, FWD_NAT, FlowCacheConfig, FlowCacheSet, IPPROTO_TCP,
    SERVICE_F_AGING, SERVICE_F_NO_FLOW_TABLE, ServiceValue,
};

use crate::{
    counters::{self, ServiceCounters},
    maps::{CONFIG, FLOW_CACHE},
    nat,
    parse::Packet,
    schedule,
};

/// Ways to a set.
const WAYS: usize = FLOW_CACHE_WAYS as usize;

/// Whether `svc`'s flows may be cached (see the module's doc).
#[inline(always)]
pub fn serves(svc: &ServiceValue) -> bool {
    svc.forwarding != FWD_NAT
        && svc.flags & (SERVICE_F_AGING | SERVICE_F_NO_FLOW_TABLE) == 0
        && svc.persist_secs == 0
}

/// The packet's flow key under `svc`, and its set with the current generation; `None`
/// when the cache is off.
#[inline(always)]
fn place(pkt: &Packet, svc: &ServiceValue) -> Option<(u64, *mut FlowCacheSet, u32)> {
    let config = FlowCacheConfig::of(*CONFIG.get(CONFIG_FLOW_CACHE)?);
    if config.generation == 0 {
        return None;
    }
    let key = FlowCacheSet::key(&pkt.flow, svc.id);
    // SAFETY: bpf_get_smp_processor_id has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let set = FLOW_CACHE.get_ptr_mut(config.set_index(cpu, key))?;
    Some((key, set, config.generation))
}

/// The backend id cached for the packet's flow under `svc`, if its service may be
/// cached and the packet neither opens nor closes a connection.
#[inline(always)]
pub fn lookup(pkt: &Packet, svc: &ServiceValue) -> Option<u32> {
    if !takes(pkt, svc) {
        return None;
    }
    let (key, set, generation) = place(pkt, svc)?;
    // SAFETY: a value pointer from a successful array lookup, valid for the run; this
    // CPU's sets are written only by this CPU, and XDP runs one at a time per CPU.
    let set = unsafe { &*set };
    if set.generation != generation {
        return None;
    }
    for i in 0..WAYS {
        if set.keys[i] == key {
            return Some(u32::from(set.backends[i]));
        }
    }
    None
}

/// Caches the real server the flow table gave an established flow of `svc` (its entry
/// not closing): in the first way that holds the flow or is empty, else in the last
/// way. So a set's first five flows of a generation stay, and only the flows beyond
/// them take turns in the last way: flows that overflow a set and come round in turn
/// (as the flows of a busy service do) would all miss if each pushed out the oldest.
#[inline(always)]
pub fn fill(pkt: &Packet, svc: &ServiceValue, backend: u32, stats: ServiceCounters) {
    if !takes(pkt, svc) {
        return;
    }
    let Some((key, set, generation)) = place(pkt, svc) else {
        return;
    };
    // SAFETY: as in `lookup`; written by this CPU only.
    let set = unsafe { &mut *set };
    if set.generation != generation {
        // What an older generation left counts as nothing.
        *set = FlowCacheSet {
            generation,
            ..Default::default()
        };
    }
    let mut at = WAYS - 1;
    for i in 0..WAYS - 1 {
        if set.keys[i] == key || set.keys[i] == 0 {
            at = i;
            break;
        }
    }
    set.keys[at] = key;
    // Backend ids fit 16 bits (asserted in the common crate).
    set.backends[at] = backend as u16;
    counters::bump(stats, |s| &mut s.flow_cache_fills);
}

/// Starts a new generation from the program itself, for every CPU: a flow of `svc`
/// was reopened (a SYN on its closed entry) and pinned afresh, and any CPU may still
/// hold its old pin (a flow's packets may arrive on several CPUs: veth and generic
/// XDP run on the sender's). Reopens are rarer than packets by far; each makes every
/// cached flow look itself up once more.
#[inline(always)]
pub fn renew_after_reopen(pkt: &Packet, svc: &ServiceValue) {
    if !pkt.ipv4 || !serves(svc) {
        return;
    }
    let Some(word) = CONFIG.get_ptr_mut(CONFIG_FLOW_CACHE) else {
        return;
    };
    // SAFETY: a value pointer from a successful array lookup, valid for the run. CPUs
    // and the daemon race on this aligned word: two renewals may become one, which
    // still leaves every set written before either out of date.
    unsafe {
        let config = FlowCacheConfig::of(*word);
        if config.generation != 0 {
            *word = config.renewed().word();
        }
    }
}

/// Whether the cache answers for (and fills from) this packet of `svc`: an IPv4
/// packet of a service it serves that neither opens nor closes a connection.
#[inline(always)]
fn takes(pkt: &Packet, svc: &ServiceValue) -> bool {
    pkt.ipv4 && serves(svc) && !opens_or_closes(pkt)
}

/// A bare TCP SYN (it may reopen a closed flow: the flow table decides, see
/// `schedule::reopens`), or a FIN or RST (it changes the flow's entry): either takes
/// the flow table's way.
#[inline(always)]
fn opens_or_closes(pkt: &Packet) -> bool {
    pkt.flow.proto == IPPROTO_TCP
        && (nat::closing_flag(pkt.tcp_flags) != 0 || schedule::starts_connection(pkt))
}
