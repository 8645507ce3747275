//! The first look at a packet, before the full parse. Most packets an edge host
//! receives are for no virtual service; an IPv4 TCP or UDP one (with or without a
//! VLAN tag) is recognised from a few fixed fields (EtherType, version and header
//! length, protocol, destination address and port) and the service index (two array
//! reads; a hash lookup only where services share a slot), and goes
//! to the kernel without the rest (building the flow key, the checks that only matter
//! for what is forwarded). Every IPv4 TCP/UDP packet's service is found here, once:
//! the full path looks up only IPv6 ones, so the verifier walks no third way.
//!
//! The price: a packet for no service is counted as `pass_not_service` whatever else
//! is wrong with it (a fragment, a lying length); its action, to the kernel, is the
//! same either way.
use aya_ebpf::{helpers::bpf_get_smp_processor_id, programs::XdpContext};
use xdp_lb_common::{
    IPPROTO_TCP, IPPROTO_UDP, SERVICE_INDEX_EMPTY, SERVICE_INDEX_ENTRY_BASE, SERVICE_INDEX_SHARED,
    SERVICE_SCRATCH_BASE, ServiceKeyV4, ServiceValue,
};

use crate::{
    maps::{SERVICE_ENTRIES_V4, SERVICE_INDEX_V4, SERVICES_V4},
    nat,
    parse::{Ipv4At, load_word},
};

/// What the first look found.
pub enum First {
    /// IPv4 TCP/UDP for no service, and no NAT reply: to the kernel.
    NotService,
    /// IPv4 TCP/UDP for a service: its value (a pointer into SERVICE_ENTRIES_V4, a
    /// pool entry or this CPU's scratch copy, valid for the run), and where its IPv4
    /// header is.
    Service(*const ServiceValue, Ipv4At),
    /// IPv4 TCP/UDP for no service, from a port NAT real servers answer from: maybe a
    /// NAT reply, which the full path looks up.
    MaybeReply(Ipv4At),
    /// Not an IPv4 TCP/UDP packet whose ports lie inside the frame: the full path
    /// decides (IPv6, ICMP, ARP, a truncated header, ...).
    Other,
}

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// EtherTypes as a native-endian load of their two bytes gives them.
const ETH_P_IP_NE: u16 = u16::from_ne_bytes([0x08, 0x00]);
const ETH_P_8021Q_NE: u16 = u16::from_ne_bytes([0x81, 0x00]);

#[inline(always)]
pub fn look(ctx: &XdpContext) -> First {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_HLEN + VLAN_HLEN > end {
        return First::Other;
    }
    let p = start as *const u8;
    // SAFETY: the Ethernet header and a tag's length after it are inside the packet.
    let tagged = unsafe { read_u16(p.add(12)) } == ETH_P_8021Q_NE;
    let l3 = if tagged {
        ETH_HLEN + VLAN_HLEN
    } else {
        ETH_HLEN
    };
    if start + l3 + 20 > end {
        return First::Other;
    }
    // SAFETY: the EtherType before `l3` and 20 bytes from `l3` were checked to be
    // inside the packet; the EtherType and the address are read with one load each.
    let (ether_type, vihl, proto, dst) = unsafe {
        (
            read_u16(p.add(l3 - 2)),
            *p.add(l3),
            *p.add(l3 + 9),
            load_word(p.add(l3 + 16)),
        )
    };
    let ihl = (vihl & 0x0f) as usize * 4;
    if ether_type != ETH_P_IP_NE
        || vihl >> 4 != 4
        || ihl < 20
        || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
    {
        return First::Other;
    }
    let l4 = l3 + ihl;
    if start + l4 + 4 > end {
        return First::Other;
    }
    // SAFETY: the four port bytes at `l4` were just checked to be inside the packet.
    let [s0, s1, d0, d1] = unsafe { load_word(p.add(l4)) }.to_ne_bytes();
    let port_be = u16::from_ne_bytes([d0, d1]);
    let at = Ipv4At { l3, l4 };
    match service(dst, port_be, proto) {
        Some(svc) => First::Service(svc, at),
        None if nat::may_be_reply(u16::from_ne_bytes([s0, s1])) => First::MaybeReply(at),
        None => First::NotService,
    }
}

/// The IPv4 service of (address, port, protocol), from the service index: an empty
/// slot is no service, a slot held by one service is that one if the key matches,
/// and a shared slot sends the key to SERVICES_V4.
#[inline(always)]
fn service(dst: u32, port_be: u16, proto: u8) -> Option<*const ServiceValue> {
    let word = ServiceKeyV4::word_of(dst, port_be, proto);
    match *SERVICE_INDEX_V4.get(ServiceKeyV4::index_slot(word))? {
        SERVICE_INDEX_EMPTY => None,
        SERVICE_INDEX_SHARED => {
            let key = ServiceKeyV4 {
                addr: dst.to_ne_bytes(),
                port_be,
                proto,
                _pad: 0,
            };
            // Borrowed, not moved: a by-value key would be copied on the stack again.
            let key_ref = &key;
            in_scratch(word, SERVICES_V4.get_ptr(key_ref)?)
        }
        code => {
            let entry = SERVICE_ENTRIES_V4.get_ptr(code - SERVICE_INDEX_ENTRY_BASE)?;
            // SAFETY: a value pointer from a successful array lookup, valid for the
            // run; the daemon does not rewrite an entry a slot points at, nor one
            // unpointed less than a grace period ago, so it is whole.
            let entry = unsafe { &*entry };
            (entry.key == word).then_some(&entry.value as *const ServiceValue)
        }
    }
}

/// A service found in SERVICES_V4 (for a shared slot), copied into this CPU's scratch
/// entry of SERVICE_ENTRIES_V4: so every IPv4 service the first look finds is a value
/// of that one map. The verifier tells values of two maps apart, and walked the rest
/// of the program once for each (about 140,000 of its 500,000 instructions); the copy
/// costs only the packets of shared slots, which a hash lookup costs more anyway.
#[inline(always)]
fn in_scratch(word: u64, value: *const ServiceValue) -> Option<*const ServiceValue> {
    // SAFETY: bpf_get_smp_processor_id has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // The map holds an entry for every possible CPU id: this lookup does not fail.
    let scratch = SERVICE_ENTRIES_V4.get_ptr_mut(SERVICE_SCRATCH_BASE + cpu)?;
    // SAFETY: `value` is a SERVICES_V4 value from a successful lookup (valid for the
    // run), and `scratch` this CPU's own scratch entry, which the daemon never writes.
    // XDP runs in softirq context (bottom halves disabled, which PREEMPT_RT serialises
    // per CPU too), so no other run on this CPU writes it before this run is done
    // reading it.
    unsafe {
        (*scratch).key = word;
        (*scratch).value = *value;
        Some(&(*scratch).value as *const ServiceValue)
    }
}

/// Two packet bytes with one load, in memory order.
///
/// # Safety
/// `p` must point at 2 bytes checked to lie inside the packet (see `load_word`).
#[inline(always)]
unsafe fn read_u16(p: *const u8) -> u16 {
    // SAFETY: inside the packet, by the caller's contract.
    unsafe { core::ptr::read_volatile(p as *const u16) }
}
