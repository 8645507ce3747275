//! Map keys, map values, limits and codes shared by the XDP program and the daemon.
//!
//! Every type is `#[repr(C)]` with explicit padding and no `bool`, so the kernel and
//! userspace agree byte for byte. Fields that hold wire values are in network byte order
//! and say so in their name (`_be`). Addresses are 16 bytes: IPv4 is stored IPv4-mapped
//! (`::ffff:a.b.c.d`) so one key layout serves both families.
#![no_std]

/// Capacity of the services hash map.
pub const MAX_SERVICES: u32 = 1024;
/// Capacity of the backends array; a backend's index is its id.
pub const MAX_BACKENDS: u32 = 4096;
/// Slots in the shared schedule pool. Each service owns a `[base, base+len)` range.
pub const SCHEDULE_POOL_SLOTS: u32 = 1 << 18;
/// Longest schedule a single service may have (a Maglev table of 65537 fits).
pub const MAX_SCHEDULE_LEN: u32 = 65537;
/// Default flow-table capacity (LRU); the daemon may resize it before load.
pub const DEFAULT_MAX_FLOWS: u32 = 1 << 18;
/// Capacity of the egress-interface devmap.
pub const MAX_EGRESS_IFACES: u32 = 64;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `ServiceValue::flags`: the data plane forwards this service (this node is MASTER).
pub const SERVICE_F_ACTIVE: u32 = 1;

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

/// `BackendValue::flags`: the backend may carry traffic. Flows pinned to a backend
/// without this flag are rescheduled on their next packet.
pub const BACKEND_F_ACTIVE: u32 = 1;

/// Key of the services map: (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of the services map.
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
}

/// Value of the backends array (index = backend id).
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

/// Key of the flow map: the 5-tuple of a client's packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of the flow map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub backend: u32,
    pub service: u32,
    /// NAT flows only (`bpf_ktime_get_ns`, refreshed at most once a second): idle
    /// entries expire. DR flows keep 0 and live until the LRU evicts them.
    pub last_seen_ns: u64,
    /// `FLOW_F_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// `FlowValue::flags` / `NatValue::flags`: a FIN or RST was seen; the entry expires
/// after the shorter closing timeout.
pub const FLOW_F_CLOSING: u32 = 1;

/// Value of the NAT reply map, keyed by the reply's 5-tuple as the real server sends
/// it (src = real server, dst = client): how to turn it back into VIP traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatValue {
    pub vip: [u8; 16],
    pub vport_be: u16,
    /// The client's next hop (the original frame's source MAC).
    pub client_mac: [u8; 6],
    /// Our MAC on the client side (the original frame's destination MAC).
    pub lb_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The client-side interface the original frame arrived on.
    pub ifindex: u32,
    pub last_seen_ns: u64,
    pub flags: u32,
    pub service: u32,
}

/// Index of the `CONFIG` array (u64 values set by the daemon).
pub const CONFIG_NAT_ENABLED: u32 = 0;
pub const CONFIG_TIMEOUT_TCP_NS: u32 = 1;
pub const CONFIG_TIMEOUT_TCP_FIN_NS: u32 = 2;
pub const CONFIG_TIMEOUT_UDP_NS: u32 = 3;
pub const CONFIG_SLOTS: u32 = 4;
/// Timestamps are refreshed at most this often, so a busy flow does not dirty its
/// cache line on every packet.
pub const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// Per-service counters (per-CPU array indexed by service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Flows whose pinned backend lost `BACKEND_F_ACTIVE` and were moved.
    pub rescheduled: u64,
    /// Packets passed to the kernel because the service is inactive (not MASTER).
    pub pass_inactive: u64,
    /// Packets dropped because the schedule is empty.
    pub drop_no_backend: u64,
    /// Packets dropped because the redirect to the egress interface failed.
    pub drop_redirect: u64,
}

/// Per-backend counters (per-CPU array indexed by backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
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
    /// Forwarded out of the ingress interface.
    Tx = 8,
    /// Forwarded to another interface.
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
    /// NAT or TUN of this address family is not supported (IPv6): dropped.
    DropNatFamily = 14,
    /// TUN: the encapsulated packet would exceed the egress MTU: passed to the kernel.
    PassTooBig = 15,
    /// TUN: no headroom for the outer header (`bpf_xdp_adjust_head` failed): dropped.
    DropNoHeadroom = 16,
}

pub const REASON_COUNT: u32 = 17;

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
    ];

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
        }
    }
}

/// Builds the 16-byte form of an IPv4 address (IPv4-mapped IPv6).
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

// Layout guards: a size change here must be a deliberate change on both sides.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 20);
const _: () = assert!(core::mem::size_of::<BackendValue>() == 56);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 24);
const _: () = assert!(core::mem::size_of::<NatValue>() == 56);
const _: () = assert!(core::mem::size_of::<ServiceStats>() == 56);
const _: () = assert!(core::mem::size_of::<BackendStats>() == 24);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (checked above).
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for BackendValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for NatValue {}
    unsafe impl aya::Pod for ServiceStats {}
    unsafe impl aya::Pod for BackendStats {}
}
