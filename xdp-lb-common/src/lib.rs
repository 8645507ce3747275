//! Map keys, map values, limits and codes shared by the XDP program and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding and no `bool`, so the kernel and
//! userspace agree byte for byte. Fields that hold wire values are in network byte order
//! and say so in their name (`_be`). Addresses are 16 bytes: IPv4 is stored IPv4-mapped
//! (`::ffff:a.b.c.d`) so one key layout serves both families.
#![no_std]

use core::mem::offset_of;

/// Capacity of the services hash map.
pub const MAX_SERVICES: u32 = 1024;
/// Number of backend ids; flows and schedules name a backend by its id.
pub const MAX_BACKENDS: u32 = 4096;
/// Copies in the backend value pool (`BACKEND_VALUES`): one live copy per id, and as
/// many again for replaced copies waiting out their grace period.
pub const BACKEND_VALUE_SLOTS: u32 = 2 * MAX_BACKENDS;
/// The pool entry every unset (or removed) backend id points to: all zero, inactive.
/// Userspace never writes it.
pub const BACKEND_VALUE_EMPTY: u32 = 0;
/// Slots in the shared schedule pool. Each service owns a `[base, base+len)` range.
pub const SCHEDULE_POOL_SLOTS: u32 = 1 << 18;
/// Longest schedule a single service may have (a Maglev table of 65537 fits).
pub const MAX_SCHEDULE_LEN: u32 = 65537;
/// Default flow-table capacity (LRU); the daemon may resize it before load.
pub const DEFAULT_MAX_FLOWS: u32 = 1 << 18;
/// Map flags of the connection-state tables (flows, NAT replies, persistence): none,
/// the kernel's common LRU. Its capacity is the whole map whichever CPUs insert.
/// `BPF_F_NO_COMMON_LRU` (an LRU list per CPU) splits it: each possible CPU may hold
/// only `max_entries / CPUs`, so a host whose flows arrive on fewer CPUs than it has
/// (fewer RX queues than cores, or a VM with more possible CPUs than online ones)
/// would evict established flows long before the table is full; it also made new
/// flows slower on this machine kind (see the README's benchmark).
pub const STATE_MAP_FLAGS: u32 = 0;
/// Capacity of the egress-interface devmap.
pub const MAX_EGRESS_IFACES: u32 = 64;
/// The version of what the connection-state maps' entries mean (FLOWS_V4, FLOWS,
/// NAT_REPLIES_V4, NAT_REPLIES, PERSIST: `FlowKeyV4`, `FlowKey`, `FlowValue`, `NatValue`, `PersistKey`,
/// `PersistValue` and their flags). Bump it with any change a same-sized entry could be
/// misread by, or that moves entries between maps: a restart into a build with another
/// version clears the pinned state instead of adopting it.
/// 2: IPv4 flows and NAT replies moved to FLOWS_V4 and NAT_REPLIES_V4.
/// 3: a flow entry holds its NAT client's hop (`FlowValue::client`).
/// 4: a flow entry's service and flags are 16 bits (32-byte entries).
/// 5: a NAT reply entry holds its client's hop as a `ClientHop`.
pub const STATE_VERSION: u32 = 5;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `ServiceValue::flags`: the data plane forwards this service (this node is MASTER).
pub const SERVICE_F_ACTIVE: u32 = 1;
/// `ServiceValue::flags`: a consistent-hash service that keeps no flow entries (Katran's
/// LRU bypass): every packet is hashed to its real server again, which costs less than
/// a flow-table insert and cannot be flooded, but moves a connection when the set of
/// real servers changes.
pub const SERVICE_F_NO_FLOW_TABLE: u32 = 2;
/// `ServiceValue::flags`: this service's flow entries carry a clock and expire after
/// the idle timeouts (as NAT's always do), so its real servers' active connections can
/// be counted (lc, wlc).
pub const SERVICE_F_AGING: u32 = 4;
/// `ServiceValue::flags`: the service has source-filter rules of its own (`allow` /
/// `deny`), looked up in `FILTER_V4` / `FILTER_V6` under [`filter_scope`]`(id + 1, ..)`.
/// A service without this flag and without [`SERVICE_F_FILTER_GLOBAL`] pays for the
/// filter with one flag test.
pub const SERVICE_F_FILTER: u32 = 8;
/// `ServiceValue::flags`: the global deny list is not empty; it is looked up first,
/// under [`filter_scope`]`(FILTER_SCOPE_GLOBAL, ..)`.
pub const SERVICE_F_FILTER_GLOBAL: u32 = 16;
/// `ServiceValue::flags`: the service reads the filter's generation 1 (else 0). The
/// daemon writes a changed rule set into the generation no service reads, then
/// switches each service with its one value write, so a packet never sees half of a
/// reload's rules.
pub const SERVICE_F_FILTER_GEN: u32 = 32;

/// `ServiceValue::forwarding`.
pub const FWD_DR: u8 = 1;
pub const FWD_NAT: u8 = 2;
pub const FWD_TUN: u8 = 3;

/// `ServiceValue::select`: how a new flow picks a slot of its schedule.
/// A per-CPU cursor walks the schedule (rr, wrr).
pub const SELECT_CURSOR: u8 = 0;
/// Hash of the source address (sh).
pub const SELECT_HASH_SRC: u8 = 1;
/// Hash of the 5-tuple (maglev).
pub const SELECT_HASH_FLOW: u8 = 2;
/// Hash of the destination address (dh).
pub const SELECT_HASH_DST: u8 = 3;

/// `BackendValue::flags`: the backend may carry traffic. Flows pinned to a backend
/// without this flag are rescheduled on their next packet.
pub const BACKEND_F_ACTIVE: u32 = 1;
/// `BackendValue::flags`, NAT: a new flow's reply entry is written with it, because
/// the reply path cannot find the flow from a reply (its real server answers for more
/// than `NAT_ORIGIN_VIPS` VIPs; see `NatOrigin`). Without it, the first reply writes
/// the entry.
pub const BACKEND_F_NAT_EAGER: u32 = 2;

/// Rules of the source filter (all services and the global list, each service's
/// implicit default deny included): the size of `FILTER_STATS`, whose index is a
/// rule's number. Each trie holds two generations of them.
pub const MAX_FILTER_RULES: u32 = 4096;
/// Entries of each filter trie (`FILTER_V4`, `FILTER_V6`): two generations.
pub const FILTER_TRIE_ENTRIES: u32 = 2 * MAX_FILTER_RULES;
/// The scope of the global deny list; a service's own rules are in scope `id + 1`.
pub const FILTER_SCOPE_GLOBAL: u32 = 0;
/// Leading bits of a filter key that are its scope: a rule for `addr/len` has prefix
/// length `FILTER_SCOPE_BITS + len`, so the scope is always matched whole (its byte
/// order therefore does not matter, as long as both sides write it alike).
pub const FILTER_SCOPE_BITS: u32 = 32;
/// `FilterValue::action`.
pub const FILTER_ALLOW: u32 = 0;
pub const FILTER_DENY: u32 = 1;

/// The bit of a scope number that is its generation.
pub const FILTER_SCOPE_GENERATION: u32 = 1 << 16;

/// The scope number of `scope` (`FILTER_SCOPE_GLOBAL` or a service's `id + 1`) in
/// filter generation `generation` (0 or 1, see [`SERVICE_F_FILTER_GEN`]).
#[inline(always)]
pub const fn filter_scope(scope: u32, generation: u32) -> u32 {
    scope | (generation * FILTER_SCOPE_GENERATION)
}

/// Data of an IPv4 filter key (the LPM trie key is `{ prefix_len, data }`): a scope and
/// the source address, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FilterKeyV4 {
    pub scope: u32,
    pub addr: [u8; 4],
}

/// Data of an IPv6 filter key: a scope and the source address, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FilterKeyV6 {
    pub scope: u32,
    pub addr: [u8; 16],
}

/// Value of a filter trie: which rule decided (its counter in `FILTER_STATS`) and how.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FilterValue {
    pub rule: u32,
    /// `FILTER_ALLOW` or `FILTER_DENY`.
    pub action: u32,
}

/// Key of the services maps: (VIP, port, protocol). Aligned to 4 so the program can
/// fill its address with word stores rather than sixteen byte stores. IPv4 services are
/// stored in `SERVICES_V4` under a [`ServiceKeyV4`], IPv6 ones in `SERVICES` under this.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    /// The service a client's packet is for: its destination (VIP, port, protocol).
    /// Both keys are word aligned, so the address is copied a word at a time.
    #[inline(always)]
    pub fn of_flow(flow: &FlowKey) -> Self {
        ServiceKey {
            addr: flow.dst,
            port_be: flow.dport_be,
            proto: flow.proto,
            _pad: 0,
        }
    }
}

/// Key of the IPv4 services map (`SERVICES_V4`): an IPv4 service's key in 8 bytes, for
/// the lookup every IPv4 packet makes (the kernel hashes and compares whole keys).
/// Everywhere else a service is named by its [`ServiceKey`]: this is only how the IPv4
/// ones are stored.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKeyV4 {
    pub addr: [u8; 4],
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKeyV4 {
    /// The service an IPv4 flow's packet is for (see [`ServiceKey::of_flow`]).
    #[inline(always)]
    pub fn of_v4_flow(flow: &FlowKey) -> Self {
        ServiceKeyV4 {
            addr: FlowKeyV4::of_v4(flow).dst,
            port_be: flow.dport_be,
            proto: flow.proto,
            _pad: 0,
        }
    }

    /// The map a service key is stored in: `Some` (this form, in SERVICES_V4) for an
    /// IPv4-mapped address, `None` (SERVICES) otherwise; the program decides by the
    /// packet's IP version.
    pub fn stored(key: &ServiceKey) -> Option<Self> {
        let [.., a, b, c, d] = key.addr;
        is_v4_mapped(&key.addr).then_some(ServiceKeyV4 {
            addr: [a, b, c, d],
            port_be: key.port_be,
            proto: key.proto,
            _pad: 0,
        })
    }

    /// The service key this one stores.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            addr: v4_mapped(self.addr),
            port_be: self.port_be,
            proto: self.proto,
            _pad: 0,
        }
    }

    /// The key as one word, as the program builds it from the header fields it read
    /// (the address as a native load of its network-order bytes, the port likewise)
    /// and compares it with an index entry's.
    #[inline(always)]
    pub fn word(&self) -> u64 {
        Self::word_of(u32::from_ne_bytes(self.addr), self.port_be, self.proto)
    }

    /// [`word`](Self::word) from the fields as the program holds them.
    #[inline(always)]
    pub fn word_of(addr_ne: u32, port_be: u16, proto: u8) -> u64 {
        u64::from(addr_ne) | u64::from(port_be) << 32 | u64::from(proto) << 48
    }

    /// The slot of the IPv4 service index a key's word hashes to (a multiplicative
    /// hash: its top bits).
    #[inline(always)]
    pub fn index_slot(word: u64) -> u32 {
        (word.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SERVICE_INDEX_SLOTS.trailing_zeros()))
            as u32
    }
}

/// Slots of the IPv4 service index (`SERVICE_INDEX_V4`): a power of two, four per
/// possible service, so that few services share one. The first look finds an IPv4
/// packet's service there with two array reads, where a hash map lookup spends most
/// of its time hashing the key (jhash, in a profile); `SERVICES_V4` stays the
/// authority, and the daemon derives the index from it.
pub const SERVICE_INDEX_SLOTS: u32 = 4 * MAX_SERVICES;
/// An index slot no IPv4 service hashes to: the packet is for no service.
pub const SERVICE_INDEX_EMPTY: u32 = 0;
/// A slot several services hash to, or one whose service is being changed: the
/// packet's key is looked up in `SERVICES_V4`.
pub const SERVICE_INDEX_SHARED: u32 = 1;
/// Codes from this one name entry `code - SERVICE_INDEX_ENTRY_BASE` of
/// `SERVICE_ENTRIES_V4`: the one service hashing to the slot.
pub const SERVICE_INDEX_ENTRY_BASE: u32 = 2;
/// Entries of `SERVICE_ENTRIES_V4`: one per service, and as many again for replaced
/// ones waiting out their grace period (an entry is never rewritten while a packet
/// may be reading it, as with backend values).
pub const SERVICE_ENTRY_SLOTS: u32 = 2 * MAX_SERVICES;
/// `SERVICE_ENTRIES_V4` also holds, after the pool, one scratch entry per possible CPU
/// (the daemon sizes the map at load): a service of a shared slot is copied into its
/// CPU's, so that every IPv4 service the first look finds is a value of one map.
pub const SERVICE_SCRATCH_BASE: u32 = SERVICE_ENTRY_SLOTS;

/// An IPv4 service as the index holds it: its key's [word](ServiceKeyV4::word), and
/// a copy of its `SERVICES_V4` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceEntryV4 {
    pub key: u64,
    pub value: ServiceValue,
}

/// Value of the services maps (`SERVICES_V4`, `SERVICES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// Index into the per-service counters and cursors.
    pub id: u32,
    pub flags: u32,
    pub forwarding: u8,
    pub select: u8,
    pub _pad: [u8; 2],
    /// First slot of this service's schedule in the schedule pool.
    pub sched_base: u32,
    /// Number of slots; 0 means no backend can take new flows.
    pub sched_len: u32,
    /// Persistence (IPVS's `persistence_timeout`): a client's new connections go to
    /// the real server of its last ones for this many seconds after its last packet;
    /// 0: off.
    pub persist_secs: u32,
    /// Persistence: the bits of the (16-byte) client address that make one client
    /// (IPVS's `persistence_granularity`), from [`prefix_mask`].
    pub persist_mask: [u8; 16],
}

/// Key of the persistence map: a service and a client address masked by the
/// service's `persist_prefix`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PersistKey {
    pub service: u32,
    pub client: [u8; 16],
}

/// Value of the persistence map: the client's real server and when it was last seen
/// (`bpf_ktime_get_ns`, refreshed at most every `LAST_SEEN_GRANULARITY_NS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PersistValue {
    pub backend: u32,
    pub _pad: u32,
    pub last_seen_ns: u64,
}

/// `addr` with only the bits set in `mask` (both network order): four word ANDs, no
/// branch, so the verifier sees one path.
#[inline(always)]
pub fn mask_addr(addr: &[u8; 16], mask: &[u8; 16]) -> [u8; 16] {
    let word = |i: usize| {
        let a = u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
        let m = u32::from_ne_bytes([mask[i], mask[i + 1], mask[i + 2], mask[i + 3]]);
        (a & m).to_ne_bytes()
    };
    let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (word(0), word(4));
    let ([c0, c1, c2, c3], [d0, d1, d2, d3]) = (word(8), word(12));
    [
        a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3,
    ]
}

/// The mask of the first `prefix` bits of a 16-byte address.
pub fn prefix_mask(prefix: u8) -> [u8; 16] {
    let mut mask = [0u8; 16];
    for (i, byte) in mask.iter_mut().enumerate() {
        let bits = (i32::from(prefix) - 8 * i as i32).clamp(0, 8);
        *byte = (0xff00u16 >> bits) as u8;
    }
    mask
}

/// The hash a `SELECT_HASH_FLOW` (maglev) service indexes its schedule by: the whole
/// 5-tuple, so one client's connections spread. Shared with the daemon, which
/// predicts with it where a new connection goes (`xdp-lb explain`): one function, so
/// the prediction and the program cannot drift apart.
#[inline(always)]
pub fn flow_hash(flow: &FlowKey) -> u32 {
    let ports = ((flow.sport_be as u32) << 16) | flow.dport_be as u32;
    let h = hash_addr(flow.src_words(), ports ^ flow.proto as u32);
    hash_addr(flow.dst_words(), h)
}

/// Murmur3-style mixing of a 16-byte address into a seed; unrolled, no loops. A
/// `SELECT_HASH_SRC` (sh) service indexes its schedule by `hash_words(src, 0)`, a
/// `SELECT_HASH_DST` (dh) one by `hash_words(dst, 0)`.
/// Words are read little-endian: what the (bpfel) program has always read, and the
/// same on a big-endian host running the daemon's prediction.
#[inline(always)]
pub fn hash_words(addr: &[u8; 16], seed: u32) -> u32 {
    let w = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    hash_addr([w(0), w(4), w(8), w(12)], seed)
}

/// [`hash_words`] of an address given as its four little-endian words (a flow's
/// [`FlowKey::src_words`] or [`FlowKey::dst_words`]).
#[inline(always)]
pub fn hash_addr(w: [u32; 4], seed: u32) -> u32 {
    let mut h = seed ^ 0x9e37_79b9;
    h = mix(h, w[0]);
    h = mix(h, w[1]);
    h = mix(h, w[2]);
    h = mix(h, w[3]);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// A backend: one entry of the value pool `BACKEND_VALUES`. `BACKEND_SLOT[id]` names the
/// entry that is current for backend `id`; an update writes a fresh entry and then
/// switches that index, so a packet sees the old value or the new one, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendValue {
    pub addr: [u8; 16],
    /// Next-hop MAC: the real server's (DR, NAT) or its gateway's (TUN), from the
    /// neighbour table.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC.
    pub src_mac: [u8; 6],
    /// Egress interface; `XDP_TX` when equal to the ingress one, else devmap redirect.
    pub ifindex: u32,
    pub flags: u32,
    pub port_be: u16,
    /// TUN: the egress interface's MTU; bigger encapsulated packets go to the kernel.
    pub mtu: u16,
    /// TUN: the outer source address (IPv4-mapped), the one the kernel would use to
    /// reach the real server.
    pub tun_src: [u8; 16],
}

/// A flow: the 5-tuple of a client's packet, as the program parses it and the daemon
/// names it; the key of the IPv6 flow and NAT reply maps (IPv4 ones are stored as a
/// [`FlowKeyV4`]). Aligned to 8 so the program fills and copies it a word at a time
/// (the size, 40, is already a multiple of 8).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Key of the IPv4 flow map (`FLOWS_V4`): an IPv4 flow's 5-tuple in 16 bytes. The
/// kernel hashes and compares a whole key on every lookup, and 16 bytes cost less than
/// the 40 of a [`FlowKey`]. Everywhere else a flow is a [`FlowKey`]: this is only how
/// the IPv4 ones are stored.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKeyV4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The source address as four little-endian words, read a word at a time: BPF has
    /// no unaligned loads, so the bytes of a `[u8; 16]` would be loaded one by one
    /// (and each spilled, where they outlive a call).
    #[inline(always)]
    pub fn src_words(&self) -> [u32; 4] {
        self.words::<{ offset_of!(FlowKey, src) }>()
    }

    /// The destination address as four little-endian words (see [`Self::src_words`]).
    #[inline(always)]
    pub fn dst_words(&self) -> [u32; 4] {
        self.words::<{ offset_of!(FlowKey, dst) }>()
    }

    #[inline(always)]
    fn words<const OFFSET: usize>(&self) -> [u32; 4] {
        let base = self as *const FlowKey as *const u8;
        // SAFETY: OFFSET is `src`'s or `dst`'s: 16 bytes inside the key at a multiple
        // of 4 in a key aligned to 8, so each read is an aligned u32 within it.
        let word =
            |i: usize| u32::from_le(unsafe { base.add(OFFSET + 4 * i).cast::<u32>().read() });
        [word(0), word(1), word(2), word(3)]
    }
}

impl FlowKeyV4 {
    /// The stored form of an IPv4 flow (both addresses IPv4-mapped): four words (its
    /// addresses' last words, the ports, the protocol with its zero padding), each
    /// written with one store: no byte moves, no memset call on BPF. The ports and the
    /// protocol are read field by field and joined in registers, not read as words:
    /// the parse has just stored them field by field, and a load spanning several
    /// smaller stores still on their way to the cache cannot be served from them
    /// (through veth, that wait was 14% of the program's time).
    #[inline(always)]
    pub fn of_v4(flow: &FlowKey) -> Self {
        let base = flow as *const FlowKey as *const u8;
        // SAFETY: both offsets are inside the 40-byte key and multiples of 4 in a key
        // aligned to 8, so each read is an aligned u32 within it.
        let word = |offset: usize| unsafe { base.add(offset).cast::<u32>().read() };
        // The ports' word in memory order: the source port's two bytes, then the
        // destination port's. (Joined as four bytes, LLVM masked and rejoined each.)
        let (sport, dport) = (u32::from(flow.sport_be), u32::from(flow.dport_be));
        let ports = if cfg!(target_endian = "little") {
            sport | dport << 16
        } else {
            sport << 16 | dport
        };
        let words = [
            word(offset_of!(FlowKey, src) + 12),
            word(offset_of!(FlowKey, dst) + 12),
            ports,
            u32::from_ne_bytes([flow.proto, 0, 0, 0]),
        ];
        // SAFETY: FlowKeyV4 is 16 bytes of integers with align 4 (`layout!` below), so
        // any four words are a valid value; their order is its fields' order.
        unsafe { core::mem::transmute::<[u32; 4], FlowKeyV4>(words) }
    }

    /// The map a flow is stored in: `Some` (this form, in FLOWS_V4) when both its
    /// addresses are IPv4-mapped, `None` (FLOWS) otherwise. The program decides by the
    /// packet's IP version; the same thing, as the program drops IPv6 packets from
    /// IPv4-mapped sources before they reach the flow table.
    pub fn stored(flow: &FlowKey) -> Option<Self> {
        (is_v4_mapped(&flow.src) && is_v4_mapped(&flow.dst)).then(|| Self::of_v4(flow))
    }

    /// The flow this key stores.
    pub fn flow(&self) -> FlowKey {
        FlowKey {
            src: v4_mapped(self.src),
            dst: v4_mapped(self.dst),
            sport_be: self.sport_be,
            dport_be: self.dport_be,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Value of the flow maps (`FLOWS_V4`, `FLOWS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub backend: u32,
    /// The service's id (below `MAX_SERVICES`, so 16 bits hold it; a 32-byte entry).
    pub service: u16,
    /// `FLOW_F_*`.
    pub flags: u16,
    /// NAT flows only (`bpf_ktime_get_ns`, refreshed at most once a second): idle
    /// entries expire. DR flows keep 0 and live until the LRU evicts them.
    pub last_seen_ns: u64,
    /// NAT flows only: the way back to the client, for the first reply to write the
    /// reply entry from (see `NatOrigin`).
    pub client: ClientHop,
}

/// Where a NAT flow's client is, as its first packet showed: the way its replies
/// leave.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientHop {
    /// The client's next hop (the original frame's source MAC).
    pub mac: [u8; 6],
    /// Our MAC on the client side (the original frame's destination MAC).
    pub lb_mac: [u8; 6],
    /// The client-side interface the original frame arrived on (0: none recorded).
    pub ifindex: u32,
}

/// How many VIPs a `NatOrigin` lists.
pub const NAT_ORIGIN_VIPS: usize = 4;

/// Value of `NAT_ORIGINS`, keyed by a NAT real server's address, port and protocol
/// (in a `ServiceKey`): the VIPs it answers for. A reply with no reply entry is
/// looked up here, and each VIP's flow table entry for the client is tried; the one
/// pinned to this real server gives the translation, and the reply entry is written
/// then. A real server that answers for more VIPs has no entry here: its backends
/// carry `BACKEND_F_NAT_EAGER` instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatOrigin {
    pub vips: [NatOriginVip; NAT_ORIGIN_VIPS],
    /// How many of `vips` are used.
    pub count: u32,
}

/// One VIP a NAT real server answers for, and the service whose flows go there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct NatOriginVip {
    pub vip: [u8; 16],
    pub vport_be: u16,
    pub _pad: u16,
    pub service: u32,
}

/// `FlowValue::flags` / `NatValue::flags`: a FIN or RST was seen; an aging entry
/// expires after the shorter closing timeout, and a SYN on a flow entry opens a new
/// connection (a reused port), scheduled afresh.
pub const FLOW_F_CLOSING: u16 = 1;

/// Value of the NAT reply map, keyed by the reply's 5-tuple as the real server sends
/// it (src = real server, dst = client): how to turn it back into VIP traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatValue {
    pub vip: [u8; 16],
    pub vport_be: u16,
    pub _pad: [u8; 2],
    /// Where the client is: the way the translated reply leaves.
    pub client: ClientHop,
    /// Aligns `last_seen_ns` to 8 bytes.
    pub _pad2: u32,
    pub last_seen_ns: u64,
    /// `FLOW_F_*`.
    pub flags: u16,
    pub _pad3: u16,
    pub service: u32,
}

/// Index of the `CONFIG` array (u64 values set by the daemon).
pub const CONFIG_TIMEOUT_TCP_NS: u32 = 1;
pub const CONFIG_TIMEOUT_TCP_FIN_NS: u32 = 2;
pub const CONFIG_TIMEOUT_UDP_NS: u32 = 3;
/// The flood guard's rate per second on each CPU (0: off): SYNs before a SYN flood is
/// on, during which no SYN is pinned (its connection is pinned by its first ACK,
/// picked by the same hash; a NAT server's answer to it is told by that hash), and
/// other new flows pinned at most.
pub const CONFIG_NEW_FLOW_RATE: u32 = 4;
/// How long the flood guard holds a SYN flood on after a SYN last found its CPU's
/// bucket dry (`FLOOD_SEEN`, in `bpf_ktime_get_ns` time: CLOCK_MONOTONIC).
pub const FLOOD_HOLD_NS: u64 = 1_000_000_000;
/// The flow cache (`FLOW_CACHE`): its generation in the low 32 bits (0: cache off) and
/// log2 of its sets per CPU in the high 32. A set is valid only under the generation it
/// was written in, so one write of this word forgets every CPU's cache: the daemon
/// bumps it every second (so each cached flow looks itself up in the flow table, and
/// keeps its LRU place, once a second), whenever it removes flow entries and whenever
/// it rewrites a real server; the program bumps it when it reopens a flow.
pub const CONFIG_FLOW_CACHE: u32 = 5;
pub const CONFIG_SLOTS: u32 = 6;

/// The `CONFIG_FLOW_CACHE` word, as the program reads it and the daemon writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCacheConfig {
    /// 0: the cache is off.
    pub generation: u32,
    /// log2 of the sets per CPU.
    pub bits: u32,
}

impl FlowCacheConfig {
    #[inline(always)]
    pub const fn of(word: u64) -> Self {
        FlowCacheConfig {
            generation: word as u32,
            bits: (word >> 32) as u32 & 31,
        }
    }

    pub const fn word(self) -> u64 {
        (self.bits as u64) << 32 | self.generation as u64
    }

    /// The next generation (0, the cache off, is skipped when it wraps).
    pub const fn renewed(self) -> Self {
        let next = self.generation.wrapping_add(1);
        FlowCacheConfig {
            generation: if next == 0 { 1 } else { next },
            bits: self.bits,
        }
    }

    /// Sets per CPU.
    pub const fn sets_per_cpu(self) -> u32 {
        1 << self.bits
    }

    /// Where CPU `cpu`'s set for `key` lies in `FLOW_CACHE`: each CPU has a run of
    /// sets of its own. The program places flows by it and the daemon finds them by it.
    #[inline(always)]
    pub fn set_index(self, cpu: u32, key: u64) -> u32 {
        (cpu << self.bits) | FlowCacheSet::index_in_cpu(key, self.bits)
    }
}

/// A set of the flow cache: six established IPv4 flows' keys and real servers in one
/// cache line, in the order they were filled (see the program's `flow_cache::fill`:
/// the last way turns over once the set is full). An established flow's packet finds
/// its real server here with one memory access, where the flow table's lookup walks a
/// bucket and an element (two or three lines, which miss the caches once the flows
/// outgrow them). A key is one word (see [`FlowCacheSet::key`]), so six flows share a
/// line and a CPU's cached flows touch few lines. A set holds flows only of its
/// `generation` (see `CONFIG_FLOW_CACHE`); an empty way's key is zero, which no flow's
/// is (its service tag is the service id + 1).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCacheSet {
    pub keys: [u64; FLOW_CACHE_WAYS as usize],
    /// Way `i`'s real server: its backend id (16 bits hold it, asserted below).
    pub backends: [u16; FLOW_CACHE_WAYS as usize],
    pub generation: u32,
}

/// Ways to a flow-cache set.
pub const FLOW_CACHE_WAYS: u32 = 6;

impl FlowCacheSet {
    /// A cached IPv4 flow's key: its source address and port and its service's id + 1
    /// (in memory order: address, port, tag). The service stands for the destination
    /// address, port and protocol, which a service key matches exactly; the tag is
    /// never 0, so no key is an empty way's. The program and the daemon both build it
    /// here.
    #[inline(always)]
    pub fn key(flow: &FlowKey, service: u32) -> u64 {
        let base = flow as *const FlowKey as *const u8;
        // SAFETY: the source address's last word is inside the 40-byte key at a
        // multiple of 4 in a key aligned to 8: an aligned u32 read within it.
        let src = unsafe { base.add(offset_of!(FlowKey, src) + 12).cast::<u32>().read() };
        // The port as the parse stored it (a field, not part of a word: see `of_v4`).
        let (sport, tag) = (u64::from(flow.sport_be), u64::from(service as u16) + 1);
        if cfg!(target_endian = "little") {
            u64::from(src) | sport << 32 | tag << 48
        } else {
            u64::from(src) << 32 | sport << 16 | tag
        }
    }

    /// Which of a CPU's `2^bits` sets holds the flow of `key`: a multiplicative hash,
    /// top bits first. The program places flows by it and the daemon finds them by it.
    /// A collision only costs a flow its cached copy.
    #[inline(always)]
    pub fn index_in_cpu(key: u64, bits: u32) -> u32 {
        let hash = (key ^ key >> 29).wrapping_mul(0xff51_afd7_ed55_8ccd);
        (hash >> 32) as u32 & ((1u32 << (bits & 31)) - 1)
    }
}

/// Sets per CPU of the flow cache, as log2: at most `max_flows / 32` sets, and at most
/// `max_flows / 8` over all possible CPUs (8 bytes a flow entry); at least 2^6. At the
/// default that is 512 KiB a CPU, within a core's L2 cache here (1 MiB): a cached
/// packet's one line then rarely misses it. Twice as many sets, 1 MiB a CPU, spread
/// 20,000 flows over more lines and was slower through veth (0.66–0.89 of the
/// reference against 0.84–0.97 in the same runs), though fewer overflowed their set.
/// So each CPU's sets fill at about 2.5 flows a set at 20,000 flows; a set holds six
/// (3/16 of the flow table's entries a CPU, if the flows were spread evenly).
pub fn flow_cache_bits(max_flows: u32, cpus: u32) -> u32 {
    let per_cpu = (max_flows / 32).min(max_flows / 8 / cpus.max(1)).max(64);
    // The largest power of two not above it.
    31 - per_cpu.leading_zeros()
}

/// `NAT_PORTS`: one bit per port (port / 64 is the word, port % 64 the bit) that a NAT
/// real server answers from. A packet to no VIP is looked up in the reply table only
/// if its source port has its bit set; none set means no NAT service.
pub const NAT_PORT_WORDS: u32 = 1024;
/// Timestamps are refreshed at most this often, so a busy flow does not dirty its
/// cache line on every packet.
pub const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// Per-service counters (per-CPU array indexed by service id) of the events that
/// belong to no real server. A service's packets, bytes and new flows are not here:
/// they are the sums of its real servers' [`BackendStats`], so a forwarded packet
/// updates one counter line, not two.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceStats {
    /// Flows whose pinned backend lost `BACKEND_F_ACTIVE` and were moved.
    pub rescheduled: u64,
    /// Packets passed to the kernel because the service is inactive (not MASTER).
    pub pass_inactive: u64,
    /// Packets dropped because the schedule is empty.
    pub drop_no_backend: u64,
    /// Packets dropped because the redirect to the egress interface failed.
    pub drop_redirect: u64,
    /// Packets without a flow entry that the flood guard forwarded unpinned (SYNs
    /// during a flood, most of them spoofed); not counted in `new_flows`.
    pub unpinned: u64,
    /// Established packets the flow cache could have answered but did not: they took
    /// the flow table's way and cached their pin (a flow's first established packet on
    /// a CPU, one a second after each new generation, and every packet of a flow that
    /// overflows its set). Counted off the hot path, on the flow table's way only.
    pub flow_cache_fills: u64,
}

/// Per-backend counters (per-CPU array indexed by backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Flows that saw their first FIN or RST from the client: for aging services (NAT,
    /// lc, wlc), new flows minus these is the change in active connections since a
    /// count.
    pub closed_flows: u64,
    /// Of `packets`, those that left by `XDP_REDIRECT` (the others by `XDP_TX`). The
    /// `tx` and `redirect` verdicts are counted here only, so that a forwarded packet
    /// updates one counter line: userspace derives them (see `Reason::Tx`).
    pub redirected: u64,
}

/// Reasons counted in the global per-CPU counter array (index = reason).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed.
    PassNotIp = 0,
    /// Not TCP or UDP: passed.
    PassNotL4 = 1,
    /// No service for (dst, port, proto): passed.
    PassNotService = 2,
    /// An IPv4 fragment or IPv6 fragment header: passed, ports unknown.
    PassFragment = 3,
    /// A header shorter than it claims (or than its minimum): passed, never forwarded.
    PassTruncated = 4,
    /// Service exists but is inactive: passed.
    PassInactive = 5,
    /// Service has no backend for a new flow: dropped.
    DropNoBackend = 6,
    /// Backend entry unusable (missing, corrupt): dropped.
    DropBadBackend = 7,
    /// Forwarded out of the ingress interface. Counted on the real server only (its
    /// `packets` minus its `redirected`), never in `GLOBAL_STATS`: userspace derives it.
    Tx = 8,
    /// Forwarded to another interface. Counted as `Tx` is (a real server's `redirected`).
    Redirect = 9,
    /// Redirect helper failed: dropped.
    DropRedirect = 10,
    /// A header whose fields contradict each other (IPv4 IHL < 5, TCP offset < 5,
    /// IP version mismatch): passed, never forwarded.
    PassMalformed = 11,
    /// IPv6 with an extension header before TCP/UDP: passed.
    PassIpv6Ext = 12,
    /// A NAT reply translated back to the VIP and forwarded.
    NatReply = 13,
    /// NAT or TUN of this address family is not supported: dropped. No longer
    /// produced (NAT and TUN forward IPv6 too); kept so the counter indices and metric
    /// names of the others stay.
    DropNatFamily = 14,
    /// TUN: the encapsulated packet would exceed the egress MTU: passed to the kernel.
    PassTooBig = 15,
    /// TUN: no headroom for the outer header (`bpf_xdp_adjust_head` failed): dropped.
    DropNoHeadroom = 16,
    /// A source that can never send to a service: loopback, unspecified, multicast,
    /// broadcast or reserved (IPv4 0/8, 127/8, 224/4, 240/4; IPv6 ::, ::1, ff00::/8,
    /// IPv4-mapped), or the destination itself: passed (the kernel drops martians).
    PassMartian = 17,
    /// An IPv4 header whose checksum is wrong, of a packet without a flow entry (or a
    /// NAT reply without a reply entry): passed (the kernel drops it). A packet of a
    /// flow in the table goes to its flow's server, whose kernel drops it.
    PassBadChecksum = 18,
    /// The source filter denied the source (a global `deny`, a service's `deny`, or
    /// no `allow` of a service that has some): dropped, and counted by its rule in
    /// `FILTER_STATS`.
    DropFiltered = 19,
    /// An ICMP "fragmentation needed" / "packet too big" about a VIP flow with no flow
    /// entry (never seen, evicted, or a service without a flow table): passed.
    PassIcmpNoFlow = 20,
    /// An ICMP "fragmentation needed" / "packet too big" about a VIP flow, forwarded to
    /// the flow's real server (DR, TUN) for its path-MTU discovery.
    IcmpToRealServer = 21,
    /// A NAT real server's answer to a flow the flood guard left unpinned, for whose
    /// client the kernel's FIB gave no next hop (no route or neighbour, or forwarding
    /// off on the interface it came in by): passed untranslated.
    PassNoClientHop = 22,
}

pub const REASON_COUNT: u32 = 23;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::PassNotIp,
        Reason::PassNotL4,
        Reason::PassNotService,
        Reason::PassFragment,
        Reason::PassTruncated,
        Reason::PassInactive,
        Reason::DropNoBackend,
        Reason::DropBadBackend,
        Reason::Tx,
        Reason::Redirect,
        Reason::DropRedirect,
        Reason::PassMalformed,
        Reason::PassIpv6Ext,
        Reason::NatReply,
        Reason::DropNatFamily,
        Reason::PassTooBig,
        Reason::DropNoHeadroom,
        Reason::PassMartian,
        Reason::PassBadChecksum,
        Reason::DropFiltered,
        Reason::PassIcmpNoFlow,
        Reason::IcmpToRealServer,
        Reason::PassNoClientHop,
    ];

    /// Counted on the packet's real server (`BackendStats`), not in `GLOBAL_STATS`.
    pub const fn counted_on_real_server(self) -> bool {
        matches!(self, Reason::Tx | Reason::Redirect)
    }

    /// Stable snake_case name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotL4 => "pass_not_l4",
            Reason::PassNotService => "pass_not_service",
            Reason::PassFragment => "pass_fragment",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassInactive => "pass_inactive",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropBadBackend => "drop_bad_backend",
            Reason::Tx => "tx",
            Reason::Redirect => "redirect",
            Reason::DropRedirect => "drop_redirect",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassIpv6Ext => "pass_ipv6_ext",
            Reason::NatReply => "nat_reply",
            Reason::DropNatFamily => "drop_nat_family",
            Reason::PassTooBig => "pass_too_big",
            Reason::DropNoHeadroom => "drop_no_headroom",
            Reason::PassMartian => "pass_martian",
            Reason::PassBadChecksum => "pass_bad_checksum",
            Reason::DropFiltered => "drop_filtered",
            Reason::PassIcmpNoFlow => "pass_icmp_no_flow",
            Reason::IcmpToRealServer => "icmp_to_real_server",
            Reason::PassNoClientHop => "pass_no_client_hop",
        }
    }
}

/// Whether a 16-byte address is the IPv4-mapped form [`v4_mapped`] builds.
#[inline(always)]
pub fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff
}

/// The 16-byte form of an IPv4 address given as the word a 4-byte load of its header
/// field gives (memory order, as on the wire), as four such words: one store each
/// into an aligned key instead of sixteen byte stores.
#[inline(always)]
pub const fn v4_mapped_words(addr: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr]
}

/// Builds the 16-byte form of an IPv4 address (IPv4-mapped IPv6).
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// Pins a shared type's layout: its size, and for every field its type and offset.
/// The field sizes must add up to the size, so there is no implicit padding anywhere,
/// and a field added, moved, retyped or dropped is a compile error on both sides.
macro_rules! layout {
    ($t:ty, $size:literal, { $($field:ident: $ty:ty = $offset:literal),+ $(,)? }) => {
        const _: () = {
            assert!(core::mem::size_of::<$t>() == $size);
            assert!(0 $(+ core::mem::size_of::<$ty>())+ == $size, "implicit padding");
            $(
                assert!(core::mem::offset_of!($t, $field) == $offset);
                // The field has the type written here.
                let _: fn(&$t) -> &$ty = |v| &v.$field;
            )+
        };
    };
}

layout!(ServiceKey, 20, {
    addr: [u8; 16] = 0,
    port_be: u16 = 16,
    proto: u8 = 18,
    _pad: u8 = 19,
});
layout!(ServiceValue, 40, {
    id: u32 = 0,
    flags: u32 = 4,
    forwarding: u8 = 8,
    select: u8 = 9,
    _pad: [u8; 2] = 10,
    sched_base: u32 = 12,
    sched_len: u32 = 16,
    persist_secs: u32 = 20,
    persist_mask: [u8; 16] = 24,
});
layout!(ServiceEntryV4, 48, {
    key: u64 = 0,
    value: ServiceValue = 8,
});
layout!(PersistKey, 20, {
    service: u32 = 0,
    client: [u8; 16] = 4,
});
layout!(PersistValue, 16, {
    backend: u32 = 0,
    _pad: u32 = 4,
    last_seen_ns: u64 = 8,
});
layout!(BackendValue, 56, {
    addr: [u8; 16] = 0,
    dst_mac: [u8; 6] = 16,
    src_mac: [u8; 6] = 22,
    ifindex: u32 = 28,
    flags: u32 = 32,
    port_be: u16 = 36,
    mtu: u16 = 38,
    tun_src: [u8; 16] = 40,
});
layout!(FlowKey, 40, {
    src: [u8; 16] = 0,
    dst: [u8; 16] = 16,
    sport_be: u16 = 32,
    dport_be: u16 = 34,
    proto: u8 = 36,
    _pad: [u8; 3] = 37,
});
layout!(ServiceKeyV4, 8, {
    addr: [u8; 4] = 0,
    port_be: u16 = 4,
    proto: u8 = 6,
    _pad: u8 = 7,
});
layout!(FlowKeyV4, 16, {
    src: [u8; 4] = 0,
    dst: [u8; 4] = 4,
    sport_be: u16 = 8,
    dport_be: u16 = 10,
    proto: u8 = 12,
    _pad: [u8; 3] = 13,
});
layout!(FlowCacheSet, 64, {
    keys: [u64; 6] = 0,
    backends: [u16; 6] = 48,
    generation: u32 = 60,
});
// A backend id fits a cached way's 16 bits (a service id fits a key's, see below).
const _: () = assert!(MAX_BACKENDS <= 1 << 16);
layout!(FlowValue, 32, {
    backend: u32 = 0,
    service: u16 = 4,
    flags: u16 = 6,
    last_seen_ns: u64 = 8,
    client: ClientHop = 16,
});
// A service id fits a flow entry's 16 bits.
const _: () = assert!(MAX_SERVICES <= 1 << 16);
layout!(ClientHop, 16, {
    mac: [u8; 6] = 0,
    lb_mac: [u8; 6] = 6,
    ifindex: u32 = 12,
});
layout!(NatOrigin, 100, {
    vips: [NatOriginVip; NAT_ORIGIN_VIPS] = 0,
    count: u32 = 96,
});
layout!(NatOriginVip, 24, {
    vip: [u8; 16] = 0,
    vport_be: u16 = 16,
    _pad: u16 = 18,
    service: u32 = 20,
});
layout!(NatValue, 56, {
    vip: [u8; 16] = 0,
    vport_be: u16 = 16,
    _pad: [u8; 2] = 18,
    client: ClientHop = 20,
    _pad2: u32 = 36,
    last_seen_ns: u64 = 40,
    flags: u16 = 48,
    _pad3: u16 = 50,
    service: u32 = 52,
});
layout!(ServiceStats, 48, {
    rescheduled: u64 = 0,
    pass_inactive: u64 = 8,
    drop_no_backend: u64 = 16,
    drop_redirect: u64 = 24,
    unpinned: u64 = 32,
    flow_cache_fills: u64 = 40,
});
layout!(FilterKeyV4, 8, {
    scope: u32 = 0,
    addr: [u8; 4] = 4,
});
layout!(FilterKeyV6, 20, {
    scope: u32 = 0,
    addr: [u8; 16] = 4,
});
layout!(FilterValue, 8, {
    rule: u32 = 0,
    action: u32 = 4,
});
layout!(BackendStats, 40, {
    packets: u64 = 0,
    bytes: u64 = 8,
    new_flows: u64 = 16,
    closed_flows: u64 = 24,
    redirected: u64 = 32,
});

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // Every impl below: each type is `#[repr(C)]`, made only of integers and integer
    // arrays (any bit pattern is valid), and has no implicit padding (the `layout!`
    // asserts above), so it can be copied to and from the kernel as bytes.
    // SAFETY: as said above.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceEntryV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowCacheSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PersistKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PersistValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NatOrigin {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FilterKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FilterKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FilterValue {}
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    #[test]
    fn prefix_masks_keep_exactly_the_leading_bits() {
        assert_eq!(prefix_mask(0), [0; 16]);
        assert_eq!(prefix_mask(128), [0xff; 16]);
        let v4_24 = prefix_mask(96 + 24);
        assert_eq!(v4_24[..15], [0xff; 15]);
        assert_eq!(v4_24[15], 0);
        let odd = prefix_mask(96 + 21);
        assert_eq!(&odd[12..], &[0xff, 0xff, 0xf8, 0]);
        let addr = v4_mapped([198, 51, 100, 77]);
        assert_eq!(mask_addr(&addr, &odd), v4_mapped([198, 51, 96, 0]));
        assert_eq!(mask_addr(&addr, &prefix_mask(128)), addr);
    }
}

#[cfg(test)]
mod flow_key_tests {
    use super::*;

    /// 192.0.2.1:41000 → 192.0.2.100:80, TCP.
    fn ipv4_flow() -> FlowKey {
        FlowKey {
            src: v4_mapped([192, 0, 2, 1]),
            dst: v4_mapped([192, 0, 2, 100]),
            sport_be: 41_000u16.to_be(),
            dport_be: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        }
    }

    /// Pinned values: a changed hash moves connections between real servers when
    /// load balancers of two versions share the traffic (a rolling upgrade), so a
    /// change must be a decision, not an accident.
    #[test]
    fn the_schedule_hashes_keep_their_values() {
        assert_eq!(flow_hash(&ipv4_flow()), 0xb36d_e029);
        assert_eq!(hash_words(&v4_mapped([192, 0, 2, 1]), 0), 0x871d_c6b6);
    }

    #[test]
    fn the_flow_cache_takes_a_32nd_of_the_flow_table_s_count_per_cpu_and_an_8th_in_all() {
        // 2 CPUs: 2^13 sets each (6 ways, 49,152 flows a CPU); 512 KiB a CPU.
        assert_eq!(flow_cache_bits(1 << 18, 2), 13);
        // 64 CPUs share an eighth of the table's count of sets: 2^9 each.
        assert_eq!(flow_cache_bits(1 << 18, 64), 9);
        // Not a power of two: the one below.
        assert_eq!(flow_cache_bits(100_000, 1), 11);
        assert_eq!(flow_cache_bits(1, 4), 6, "at least 64 sets");
        assert_eq!(flow_cache_bits(u32::MAX, 0), 26);
    }

    #[test]
    fn the_flow_cache_word_holds_its_generation_and_size_and_never_renews_to_off() {
        let config = FlowCacheConfig {
            generation: 7,
            bits: 15,
        };
        assert_eq!(FlowCacheConfig::of(config.word()), config);
        assert_eq!(config.renewed().generation, 8);
        assert_eq!(config.renewed().bits, 15);
        let last = FlowCacheConfig {
            generation: u32::MAX,
            ..config
        };
        assert_eq!(last.renewed().generation, 1, "0 is the cache off");
        assert_eq!(config.sets_per_cpu(), 32_768);
    }

    #[test]
    fn the_flow_cache_spreads_flows_over_its_sets() {
        const BITS: u32 = 13;
        let crowded = |flows: &mut dyn Iterator<Item = FlowKey>| {
            let mut seen = [0u8; 1 << BITS];
            for flow in flows {
                seen[FlowCacheSet::index_in_cpu(FlowCacheSet::key(&flow, 3), BITS) as usize] += 1;
            }
            seen.iter()
                .filter(|&&n| n > 6)
                .map(|&n| u32::from(n))
                .sum::<u32>()
        };
        // One client's 20,000 consecutive ports (as the veth bench's): the
        // multiplicative hash deals them out evenly, none to a set of more than six.
        let mut ports = (10_000..30_000u16).map(|port| FlowKey {
            sport_be: port.to_be(),
            ..ipv4_flow()
        });
        assert_eq!(crowded(&mut ports), 0);
        // 20,000 flows of scattered clients and ports: about 4% land in a set of more
        // than six (Poisson, mean 2.44); a poor hash piles far more up.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut scattered = (0..20_000).map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let mut flow = ipv4_flow();
            flow.src[12..].copy_from_slice(&((state >> 32) as u32).to_be_bytes());
            flow.sport_be = (state >> 16) as u16;
            flow
        });
        let n = crowded(&mut scattered);
        assert!(n < 1_200, "{n} flows in sets of more than six");
    }

    #[test]
    fn a_flow_cache_key_is_its_source_and_its_service_and_never_an_empty_way_s() {
        let flow = ipv4_flow();
        let key = FlowCacheSet::key(&flow, 0);
        assert_ne!(key, 0, "service 0's tag is 1");
        let bytes = key.to_ne_bytes();
        assert_eq!(bytes[..4], flow.src[12..]);
        assert_eq!(bytes[4..6], flow.sport_be.to_ne_bytes());
        assert_eq!(bytes[6..], 1u16.to_ne_bytes());
        // The destination is the service's: another service, another key.
        assert_ne!(FlowCacheSet::key(&flow, 1), key);
        let other_port = FlowKey {
            sport_be: flow.sport_be ^ 1,
            ..flow
        };
        assert_ne!(FlowCacheSet::key(&other_port, 0), key);
    }

    #[test]
    fn an_ipv4_flow_is_stored_in_16_bytes_and_read_back_whole() {
        let flow = ipv4_flow();
        let stored = FlowKeyV4::stored(&flow).expect("an IPv4 flow");
        assert_eq!(stored.src, [192, 0, 2, 1]);
        assert_eq!(stored.dst, [192, 0, 2, 100]);
        assert_eq!(stored.flow(), flow);
        let v6 = FlowKey {
            src: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ..flow
        };
        assert_eq!(FlowKeyV4::stored(&v6), None);
        // One IPv4-mapped address is not an IPv4 flow.
        let mixed = FlowKey {
            dst: [
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 1,
            ],
            ..flow
        };
        assert_eq!(FlowKeyV4::stored(&mixed), None);
    }

    #[test]
    fn an_ipv4_service_is_stored_in_8_bytes_and_read_back_whole() {
        let key = ServiceKey {
            addr: v4_mapped([192, 0, 2, 100]),
            port_be: 443u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: 0,
        };
        let stored = ServiceKeyV4::stored(&key).expect("an IPv4 service");
        assert_eq!(stored.addr, [192, 0, 2, 100]);
        assert_eq!(stored.key(), key);
        // The program's form, from a packet's flow, is the same key.
        let flow = FlowKey {
            dst: key.addr,
            dport_be: key.port_be,
            ..ipv4_flow()
        };
        assert_eq!(ServiceKeyV4::of_v4_flow(&flow), stored);
        let v6 = ServiceKey {
            addr: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ..key
        };
        assert_eq!(ServiceKeyV4::stored(&v6), None);
    }
}
