//! The first look at a packet, before the full parse. Most packets an edge host
//! receives are for no virtual service; an untagged IPv4 TCP or UDP one is recognised
//! from four fixed fields (EtherType, version and header length, protocol, and the
//! destination address and port) and one service lookup, and goes to the kernel
//! without the rest (building the flow key, the checks that only matter for what is
//! forwarded). Anything else, and every packet for a service, takes the full path.
//!
//! The price: a packet for no service is counted as `pass_not_service` whatever else
//! is wrong with it (a fragment, a lying length); its action, to the kernel, is the
//! same either way.
use aya_ebpf::programs::XdpContext;
use xdp_lb_common::{IPPROTO_TCP, IPPROTO_UDP, ServiceKeyV4, ServiceValue};

use crate::{maps::SERVICES_V4, nat, parse::load_word};

/// What the first look found.
pub enum First {
    /// For no service, and no NAT reply: to the kernel.
    NotService,
    /// The packet's IPv4 service (a pointer into SERVICES_V4, valid for the run: hash
    /// map values are freed after an RCU grace period), so the full path need not
    /// look it up again.
    Service(*const ServiceValue),
    /// Not an untagged IPv4 TCP/UDP packet whose fields could be read here, or maybe a
    /// NAT reply: the full path decides.
    Unknown,
}

const ETH_HLEN: usize = 14;
/// The EtherType field as a native-endian load of its bytes gives it for IPv4.
const ETH_P_IP_NE: u16 = u16::from_ne_bytes([0x08, 0x00]);

#[inline(always)]
pub fn look(ctx: &XdpContext) -> First {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_HLEN + 20 > end {
        return First::Unknown;
    }
    let p = start as *const u8;
    // SAFETY: the Ethernet header and 20 bytes after it were checked to be inside the
    // packet; the EtherType and the address are read with one load each.
    let (ether_type, vihl, proto, dst) = unsafe {
        (
            core::ptr::read_volatile(p.add(12) as *const u16),
            *p.add(ETH_HLEN),
            *p.add(ETH_HLEN + 9),
            load_word(p.add(ETH_HLEN + 16)),
        )
    };
    let ihl = (vihl & 0x0f) as usize * 4;
    if ether_type != ETH_P_IP_NE
        || vihl >> 4 != 4
        || ihl < 20
        || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
    {
        return First::Unknown;
    }
    let l4 = ETH_HLEN + ihl;
    if start + l4 + 4 > end {
        return First::Unknown;
    }
    // SAFETY: the four port bytes at `l4` were just checked to be inside the packet.
    let [s0, s1, d0, d1] = unsafe { load_word(p.add(l4)) }.to_ne_bytes();
    let key = ServiceKeyV4 {
        addr: dst.to_ne_bytes(),
        port_be: u16::from_ne_bytes([d0, d1]),
        proto,
        _pad: 0,
    };
    // Borrowed, not moved: a by-value key would be copied on the stack again.
    let key_ref = &key;
    match SERVICES_V4.get_ptr(key_ref) {
        Some(svc) => First::Service(svc),
        None if nat::may_be_reply(u16::from_ne_bytes([s0, s1])) => First::Unknown,
        None => First::NotService,
    }
}
