//! The maps the program shares with the daemon. Names are part of the contract:
//! the daemon opens them by these names.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, bpf_fib_lookup},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use xdp_lb_common::{
    BACKEND_VALUE_SLOTS, BackendStats, BackendValue, CONFIG_SLOTS, DEFAULT_MAX_FLOWS,
    FILTER_TRIE_ENTRIES, FilterKeyV4, FilterKeyV6, FilterValue, FlowCacheSet, FlowKey, FlowKeyV4,
    FlowValue, MAX_BACKENDS, MAX_EGRESS_IFACES, MAX_FILTER_RULES, MAX_SERVICES, NAT_PORT_WORDS,
    NatOrigin, NatValue, PersistKey, PersistValue, REASON_COUNT, SCHEDULE_POOL_SLOTS,
    SERVICE_ENTRY_SLOTS, SERVICE_INDEX_SLOTS, STATE_MAP_FLAGS, ServiceEntryV4, ServiceKey,
    ServiceKeyV4, ServiceStats, ServiceValue,
};

/// IPv4 (VIP, port, proto) → service, under an 8-byte key (see `services`).
#[map]
pub static SERVICES_V4: HashMap<ServiceKeyV4, ServiceValue> =
    HashMap::with_max_entries(MAX_SERVICES, 0);

/// The IPv4 service index: slot (`ServiceKeyV4::index_slot`) → `SERVICE_INDEX_EMPTY`,
/// `SERVICE_INDEX_SHARED` (look in SERVICES_V4), or the code of the entry of
/// `SERVICE_ENTRIES_V4` holding the one service there. Derived by the daemon from
/// SERVICES_V4, which stays the authority; a slot is switched with one u32 write.
#[map]
pub static SERVICE_INDEX_V4: Array<u32> = Array::with_max_entries(SERVICE_INDEX_SLOTS, 0);

/// Pool of index entries: an IPv4 service's key word and a copy of its value. An
/// entry is written before a slot points at it and reused only a grace period after
/// no slot does, so a packet reads a whole one (as `BACKEND_VALUES`). Then one scratch
/// entry per possible CPU, from `SERVICE_SCRATCH_BASE` (see `early`); the daemon
/// sizes the map at load.
#[map]
pub static SERVICE_ENTRIES_V4: Array<ServiceEntryV4> =
    Array::with_max_entries(SERVICE_ENTRY_SLOTS + 1, 0);

/// IPv6 (VIP, port, proto) → service.
#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Backend id → index of its current entry in `BACKEND_VALUES`. Userspace replaces a
/// backend by writing a spare entry and then this one u32, so a packet reads either
/// the old value or the new one, never a half-written mix (an in-place rewrite of the
/// 56-byte value could show, say, a new MAC with an old ifindex).
#[map]
pub static BACKEND_SLOT: Array<u32> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Pool of backend values: where and how to send. Entry 0 stays all zero (inactive):
/// unset ids point there.
#[map]
pub static BACKEND_VALUES: Array<BackendValue> = Array::with_max_entries(BACKEND_VALUE_SLOTS, 0);

/// Shared pool of schedule slots (backend ids); each service indexes its own range.
#[map]
pub static SCHEDULE: Array<u32> = Array::with_max_entries(SCHEDULE_POOL_SLOTS, 0);

/// IPv4 5-tuple → pinned backend, so a connection never changes server while it is
/// active. One table shared by all CPUs (a flow may arrive on any queue), with the
/// common LRU (see `STATE_MAP_FLAGS`). IPv4 flows have their own table for its
/// 16-byte key (see `flows`).
#[map]
pub static FLOWS_V4: LruHashMap<FlowKeyV4, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, STATE_MAP_FLAGS);

/// IPv6 5-tuple → pinned backend, as `FLOWS_V4`.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, STATE_MAP_FLAGS);

/// The flow cache (see `flow_cache`): for each possible CPU id, a run of sets of two
/// ways; the daemon sizes it at load (`flow_cache_bits`). Mmapable, so its values
/// start on a page and each 64-byte set is one cache line.
#[map]
pub static FLOW_CACHE: Array<FlowCacheSet> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// (service, client address masked by its granularity) → the client's real server, for
/// services with persistence (see `persist`). Sized like the flow tables by the daemon.
#[map]
pub static PERSIST: LruHashMap<PersistKey, PersistValue> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, STATE_MAP_FLAGS);

/// Per-CPU round-robin position per service id.
#[map]
pub static CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static SERVICE_STATS: PerCpuArray<ServiceStats> =
    PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<BackendStats> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Verdict counts by `Reason`.
#[map]
pub static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// Egress interfaces for redirects, keyed by ifindex.
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_EGRESS_IFACES, 0);

/// NAT reply 5-tuple (real server → client) → how to translate it back; IPv4 replies
/// under the 16-byte key (see `flows`).
#[map]
pub static NAT_REPLIES_V4: LruHashMap<FlowKeyV4, NatValue> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, STATE_MAP_FLAGS);

/// IPv6 NAT replies, as `NAT_REPLIES_V4`.
#[map]
pub static NAT_REPLIES: LruHashMap<FlowKey, NatValue> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, STATE_MAP_FLAGS);

/// A NAT real server (address, port, protocol) → the VIPs it answers for: how a
/// reply without a reply entry finds its flow (see `NatOrigin`).
#[map]
pub static NAT_ORIGINS: HashMap<ServiceKey, NatOrigin> = HashMap::with_max_entries(MAX_BACKENDS, 0);

/// The ports NAT real servers answer from, one bit each (see `NAT_PORT_WORDS`).
#[map]
pub static NAT_PORTS: Array<u64> = Array::with_max_entries(NAT_PORT_WORDS, 0);

/// The flood guard's per-CPU token buckets (connection attempts, other new flows, NAT
/// reply entries of unpinned flows; see `schedule::admit`): (tokens, last refill in ns).
#[map]
pub static INSERT_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(3, 0);

/// The FIB query of `nat::client_hop`: 64 bytes that do not fit on the stack beside
/// the entry's frame.
#[map]
pub static FIB_QUERY: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

/// Which VIP of its real server's origin a reply without a reply entry answers
/// (`nat::record_answered`), read back as a value the verifier does not know.
#[map]
pub static ANSWERED_VIP: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Whether this run's new flow may be pinned: `schedule::select` decides, `commit`
/// acts (see `schedule::set_admitted`).
#[map]
pub static ADMITTED: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// When a SYN last found its CPU's bucket of connection attempts dry (ns), shared by
/// all CPUs: a flood seen on one is on for all (see `schedule::admit`).
#[map]
pub static FLOOD_SEEN: Array<u64> = Array::with_max_entries(1, 0);

/// Settings written by the daemon (`CONFIG_*` indices).
#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// The source filter, IPv4: (scope, source prefix) → rule (see `filter`). A trie is
/// created without preallocation (the kernel requires it), so it costs memory only
/// for the rules written.
#[map]
pub static FILTER_V4: LpmTrie<FilterKeyV4, FilterValue> =
    LpmTrie::with_max_entries(FILTER_TRIE_ENTRIES, 0);

/// The source filter, IPv6.
#[map]
pub static FILTER_V6: LpmTrie<FilterKeyV6, FilterValue> =
    LpmTrie::with_max_entries(FILTER_TRIE_ENTRIES, 0);

/// Packets each filter rule decided (allowed or dropped), by rule number.
#[map]
pub static FILTER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_FILTER_RULES, 0);
