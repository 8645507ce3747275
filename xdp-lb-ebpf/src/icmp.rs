//! ICMP errors about VIP flows: "fragmentation needed" (IPv4, RFC 1191) and "packet
//! too big" (IPv6, RFC 8201). With DR and TUN the real server answers the client from
//! the VIP, so a router that finds the answer too big for the path sends its error to
//! the VIP, which is the LB. The LB's kernel has no such connection and drops it, and
//! the real server keeps sending too big: a path-MTU black hole. Here the error goes
//! to the real server that holds the connection, found in the flow table by the packet
//! the error quotes (as Katran does), unchanged but for the MACs (DR) or inside the
//! tunnel (TUN). Anything else (no flow entry, a NAT service, other ICMP) goes to the
//! kernel as before.
use aya_ebpf::programs::XdpContext;
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use xdp_lb_common::{
    FWD_DR, FWD_TUN, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Reason, SERVICE_F_ACTIVE, ServiceKey,
    v4_mapped,
};

use crate::{
    counters, dr,
    maps::{FLOWS, SERVICES},
    parse::{Packet, ptr_at},
    program::Verdict,
    schedule, tun,
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// The ICMP header before the quoted packet.
const ICMP_HDR: usize = 8;

/// Sends a "fragmentation needed" / "packet too big" about a VIP flow to the flow's
/// real server; any other ICMP goes to the kernel.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet) -> Result<Verdict, Verdict> {
    let not_ours = Verdict::pass(Reason::PassNotL4);
    let head: *const [u8; 2] = ptr_at(ctx, pkt.l4).map_err(Verdict::pass)?;
    // SAFETY: ptr_at checked the two bytes (type, code) lie inside the packet.
    let [kind, code] = unsafe { *head };
    let about_size = if pkt.ipv4 {
        kind == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED
    } else {
        kind == ICMPV6_PACKET_TOO_BIG
    };
    if !about_size {
        return Err(not_ours);
    }
    // The quoted packet went from the VIP to the client: its reverse is the flow.
    let quoted = pkt.l4 + ICMP_HDR;
    let mut flow = FlowKey::default();
    let l4 = if pkt.ipv4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, quoted).map_err(Verdict::pass)?;
        // SAFETY: ptr_at checked the 20-byte header; byte-array fields read by value.
        let (vihl, proto, src, dst) =
            unsafe { ((*ip).vihl, (*ip).proto, (*ip).src_addr, (*ip).dst_addr) };
        let ihl = (vihl & 0x0f) as usize * 4;
        if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
            return Err(Verdict::pass(Reason::PassMalformed));
        }
        flow.src = v4_mapped(dst);
        flow.dst = v4_mapped(src);
        flow.proto = proto;
        quoted + ihl
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, quoted).map_err(Verdict::pass)?;
        // SAFETY: ptr_at checked the 40-byte header; byte-array fields read by value.
        unsafe {
            flow.src = (*ip).dst_addr;
            flow.dst = (*ip).src_addr;
            flow.proto = (*ip).next_hdr;
        }
        quoted + Ipv6Hdr::LEN
    };
    if flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP {
        return Err(not_ours);
    }
    // The error must be addressed to the VIP whose packet it quotes.
    if flow.dst != pkt.flow.dst {
        return Err(not_ours);
    }
    // TCP and UDP both start with the two ports; the error quotes at least 8 bytes.
    let ports: *const [u8; 4] = ptr_at(ctx, l4).map_err(Verdict::pass)?;
    // SAFETY: ptr_at checked the four bytes lie inside the packet.
    let [s0, s1, d0, d1] = unsafe { *ports };
    flow.sport_be = u16::from_ne_bytes([d0, d1]);
    flow.dport_be = u16::from_ne_bytes([s0, s1]);
    let key = ServiceKey {
        addr: flow.dst,
        port_be: flow.dport_be,
        proto: flow.proto,
        _pad: 0,
    };
    // Borrowed, not moved, as in the main path: a by-value key is a stack copy.
    let key_ref = &key;
    // SAFETY: copied out at once, as in the main path (see `program::process`).
    let Some(svc) = (unsafe { SERVICES.get(key_ref) }).copied() else {
        return Err(not_ours);
    };
    if svc.flags & SERVICE_F_ACTIVE == 0 || (svc.forwarding != FWD_DR && svc.forwarding != FWD_TUN)
    {
        return Err(not_ours);
    }
    let flow_ref = &flow;
    // SAFETY: read by value at once; a racing update of the same flow changes whole
    // aligned words (see `schedule::select`).
    let pinned = unsafe { FLOWS.get(flow_ref) }.map(|v| (v.backend, v.service));
    let Some((backend_id, service)) = pinned.filter(|&(_, s)| s == svc.id) else {
        return Err(Verdict::pass(Reason::PassIcmpNoFlow));
    };
    let Some(backend) = schedule::backend(backend_id) else {
        return Err(Verdict::pass(Reason::PassIcmpNoFlow));
    };
    let stats = counters::service(service);
    let verdict = if svc.forwarding == FWD_DR {
        dr::forward(ctx, backend, stats)?
    } else {
        tun::forward(ctx, pkt, backend, stats)?
    };
    Ok(Verdict {
        action: verdict.action,
        reason: Reason::IcmpToRealServer,
    })
}
