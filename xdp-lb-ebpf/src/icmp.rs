//! ICMP errors about VIP flows: "fragmentation needed" (IPv4, RFC 1191) and "packet
//! too big" (IPv6, RFC 8201). With DR and TUN the real server answers the client from
//! the VIP, so a router that finds the answer too big for the path sends its error to
//! the VIP, which is the LB. The LB's kernel has no such connection and drops it, and
//! the real server keeps sending too big: a path-MTU black hole. Here the error goes
//! to the real server that holds the connection, found in the flow table by the packet
//! the error quotes (as Katran does), unchanged but for the MACs (DR) or inside the
//! tunnel (TUN). With NAT the real server answered from its own address, which
//! the LB rewrote to the VIP, so the error is translated back as IPVS does: its
//! destination and the quoted packet's source address and port become the real
//! server's, every checksum (outer and quoted IP headers, the quoted TCP/UDP checksum
//! when quoted, the ICMP checksum) updated; NAT66's "packet too big" the same way (no
//! IP header checksum; the ICMPv6 and quoted TCP/UDP checksums cover the addresses in
//! their pseudo-headers). Anything else (no flow entry, other ICMP) goes to the kernel
//! as before.
use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use xdp_lb_common::{
    BackendValue, FWD_DR, FWD_NAT, FWD_TUN, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Reason,
    SERVICE_F_ACTIVE, v4_mapped_words,
};

use crate::{
    counters, csum, dr, flows,
    parse::{Packet, load_addr, load_word, ptr_at, store_addr},
    program::Verdict,
    schedule, services, tun,
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
        // SAFETY: ptr_at checked the 20-byte header; byte fields read by value, the
        // addresses (bytes 12..20) as one word each, as `parse` reads them.
        let (vihl, proto, src, dst) = unsafe {
            (
                (*ip).vihl,
                (*ip).proto,
                load_word((ip as *const u8).add(12)),
                load_word((ip as *const u8).add(16)),
            )
        };
        let ihl = (vihl & 0x0f) as usize * 4;
        if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
            return Err(Verdict::pass(Reason::PassMalformed));
        }
        store_addr(&mut flow.src, v4_mapped_words(dst));
        store_addr(&mut flow.dst, v4_mapped_words(src));
        flow.proto = proto;
        quoted + ihl
    } else {
        let ip: *const Ipv6Hdr = ptr_at(ctx, quoted).map_err(Verdict::pass)?;
        // SAFETY: ptr_at checked the 40-byte header; the addresses (bytes 8..40) as
        // words, as `parse` reads them.
        let (src, dst, next) = unsafe {
            (
                load_addr((ip as *const u8).add(8)),
                load_addr((ip as *const u8).add(24)),
                (*ip).next_hdr,
            )
        };
        store_addr(&mut flow.src, dst);
        store_addr(&mut flow.dst, src);
        flow.proto = next;
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
    let Some(svc) = services::lookup(&flow, pkt.ipv4) else {
        return Err(not_ours);
    };
    let nat = svc.forwarding == FWD_NAT;
    if svc.flags & SERVICE_F_ACTIVE == 0
        || (svc.forwarding != FWD_DR && svc.forwarding != FWD_TUN && !nat)
    {
        return Err(not_ours);
    }
    let pinned = flows::pinned(&flow, pkt.ipv4).map(|v| {
        // SAFETY: a value pointer from a successful lookup, read by value at once; a
        // racing update of the same flow changes whole aligned words (see
        // `schedule::select`).
        unsafe { ((*v).backend, u32::from((*v).service)) }
    });
    let Some((backend_id, service)) = pinned.filter(|&(_, s)| s == svc.id) else {
        return Err(Verdict::pass(Reason::PassIcmpNoFlow));
    };
    let Some(backend) = schedule::backend(backend_id) else {
        return Err(Verdict::pass(Reason::PassIcmpNoFlow));
    };
    let stats = counters::service(service);
    if nat && pkt.ipv4 {
        let vip = u32::from_be_bytes([flow.dst[12], flow.dst[13], flow.dst[14], flow.dst[15]]);
        translate_v4(ctx.ctx, (pkt.l3, pkt.l4), vip, backend).map_err(Verdict::pass)?;
    } else if nat {
        translate_v6(ctx.ctx, pkt.l3, u32::from(flow.proto), backend).map_err(Verdict::pass)?;
    }
    let verdict = if svc.forwarding != FWD_TUN {
        dr::forward(ctx, backend, stats)?
    } else {
        tun::forward(ctx, pkt, backend, stats)?
    };
    Ok(Verdict {
        action: verdict.action,
        reason: Reason::IcmpToRealServer,
    })
}

/// NAT: rewrites a "fragmentation needed" about a connection's reply (quoted from VIP
/// to client) into the one the real server's path would have sent it: the outer
/// destination, the quoted source address and the quoted source port become the real
/// server's. The outer header sits at `l3`, the ICMP header at `icmp`, the quoted IPv4
/// header (already checked by the caller) after it; `vip` is the quoted source (as a
/// big-endian number). Each checksum is updated incrementally (RFC 1624): the outer
/// header's for its destination; the quoted header's for its source; the quoted
/// TCP/UDP checksum, if the error quotes it (UDP: unless 0), for the address and the
/// port; the ICMP checksum for the quoted words that changed (the quoted IP header's
/// own sum does not change: its checksum moves with its source).
///
/// Four calls that are not inlined, each with a frame of a few words: the entry's is
/// near the stack limit.
#[inline(always)]
fn translate_v4(
    ctx: *mut xdp_md,
    (l3, icmp): (usize, usize),
    vip: u32,
    backend: *const BackendValue,
) -> Result<(), Reason> {
    // The parser's offsets, bounded for the verifier (a tag, IPv4 options: ≤ 60 bytes).
    if l3 > 18 || icmp > l3 + 60 {
        return Err(Reason::PassMalformed);
    }
    nat_outer_v4(ctx, l3, vip, backend)?;
    let l4 = nat_quoted_ip_v4(ctx, icmp + ICMP_HDR, vip, backend)?;
    let changed = nat_quoted_port_v4(ctx, l4, vip, backend)?;
    nat_icmp_sum(ctx, icmp, changed)
}

/// `ptr_at_mut` for the calls below, reading the context's packet bounds with volatile
/// loads: otherwise the compiler moves those loads into the caller and passes the
/// 32-bit values, which the verifier rejects once widened back to pointers.
#[inline(always)]
fn field<T>(ctx: *mut xdp_md, offset: usize) -> Result<*mut T, Reason> {
    // SAFETY: `ctx` is the live xdp_md this program was called with; its `data` and
    // `data_end` fields are plain u32 reads.
    let (start, end) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx).data_end) as usize,
        )
    };
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Reason::PassTruncated);
    }
    Ok((start + offset) as *mut T)
}

/// The real server's address, as a big-endian number.
#[inline(always)]
fn real_v4(backend: *const BackendValue) -> u32 {
    // SAFETY: `backend` points into a map value that lives for the run.
    let a = unsafe { &(*backend).addr };
    u32::from_be_bytes([a[12], a[13], a[14], a[15]])
}

/// The outer header: destination VIP -> real server, and its checksum.
#[inline(never)]
fn nat_outer_v4(
    ctx: *mut xdp_md,
    l3: usize,
    vip: u32,
    backend: *const BackendValue,
) -> Result<(), Reason> {
    let real = real_v4(backend);
    let outer: *mut Ipv4Hdr = field(ctx, l3 & 0x1f)?;
    // SAFETY: `field` checked the 20-byte header; byte-array fields by value.
    unsafe {
        (*outer).dst_addr = real.to_be_bytes();
        let check = u16::from_be_bytes((*outer).check);
        (*outer).check = csum::replace32_be(check, vip, real).to_be_bytes();
    }
    Ok(())
}

/// The quoted header: source VIP -> real server, and its checksum. Returns the quoted
/// TCP/UDP header's offset with the protocol in the low byte.
#[inline(never)]
fn nat_quoted_ip_v4(
    ctx: *mut xdp_md,
    quoted: usize,
    vip: u32,
    backend: *const BackendValue,
) -> Result<usize, Reason> {
    let real = real_v4(backend);
    let quoted = quoted & 0xff;
    let inner: *mut Ipv4Hdr = field(ctx, quoted)?;
    // SAFETY: `field` checked the 20-byte header; byte-array fields by value.
    unsafe {
        (*inner).src_addr = real.to_be_bytes();
        let check = u16::from_be_bytes((*inner).check);
        (*inner).check = csum::replace32_be(check, vip, real).to_be_bytes();
        let l4 = quoted + ((*inner).vihl & 0x0f) as usize * 4;
        Ok(l4 << 8 | (*inner).proto as usize)
    }
}

/// The quoted source port VIP's -> real server's, and the quoted TCP/UDP checksum if
/// quoted. Returns the changed words for the ICMP checksum: (old, new) of the port in
/// the high half, of the checksum (or 0, 0) in the low half.
#[inline(never)]
fn nat_quoted_port_v4(
    ctx: *mut xdp_md,
    l4: usize,
    vip: u32,
    backend: *const BackendValue,
) -> Result<u64, Reason> {
    let proto = l4 as u8;
    let l4 = (l4 >> 8) & 0xff;
    // SAFETY: `backend` points into a map value that lives for the run.
    let real_port = u16::from_be(unsafe { (*backend).port_be });
    let sport: *mut [u8; 2] = field(ctx, l4)?;
    // SAFETY: `field` checked the two bytes.
    let vport = unsafe { u16::from_be_bytes(*sport) };
    // SAFETY: as above.
    unsafe { *sport = real_port.to_be_bytes() };
    let port = u64::from(vport) << 48 | u64::from(real_port) << 32;
    let at = if proto == IPPROTO_TCP {
        l4 + 16
    } else {
        l4 + 6
    };
    let Ok(c) = field::<[u8; 2]>(ctx, at) else {
        return Ok(port);
    };
    // SAFETY: `field` checked the two bytes.
    let old = u16::from_be_bytes(unsafe { *c });
    if proto == IPPROTO_UDP && old == 0 {
        return Ok(port);
    }
    let mut new = csum::replace32_be(old, vip, real_v4(backend));
    new = csum::replace16(new, vport, real_port);
    if proto == IPPROTO_UDP && new == 0 {
        new = 0xffff;
    }
    // SAFETY: as above.
    unsafe { *c = new.to_be_bytes() };
    Ok(port | u64::from(old) << 16 | u64::from(new))
}

/// The ICMP checksum over the changed quoted words `nat_quoted_port_v4` returned.
#[inline(never)]
fn nat_icmp_sum(ctx: *mut xdp_md, icmp: usize, changed: u64) -> Result<(), Reason> {
    let check: *mut [u8; 2] = field(ctx, (icmp & 0x7f) + 2)?;
    // SAFETY: `field` checked the two bytes.
    unsafe {
        let mut sum = u16::from_be_bytes(*check);
        sum = csum::replace16(sum, (changed >> 48) as u16, (changed >> 32) as u16);
        sum = csum::replace16(sum, (changed >> 16) as u16, changed as u16);
        *check = sum.to_be_bytes();
    }
    Ok(())
}

/// NAT66: rewrites a "packet too big" about a connection's reply (quoted from VIP to
/// client) into the one the real server's path would have sent it, as
/// `translate_v4` does: the outer destination, the quoted source address and port
/// become the real server's. IPv6 has no header checksum; the quoted TCP/UDP checksum
/// is updated for the quoted address (its pseudo-header) and port, and the ICMPv6
/// checksum for the outer destination (its pseudo-header) and every quoted word that
/// changed. The parser passed no extension header, so every field is at a constant
/// offset from the outer header at `l3`: the outer destination at 24, the ICMPv6
/// checksum at 42, the quoted header at 48 (its source at 56), the quoted TCP/UDP
/// header at 88. A quote too short to hold the TCP/UDP checksum (a "packet too big"
/// quotes up to 1,232 bytes), or a quoted UDP checksum of 0, goes to the kernel
/// untouched.
///
/// Not inlined: the entry's frame is near the stack limit; this one works in
/// registers, a word at a time, as `nat::rewrite_v6` does.
#[inline(never)]
fn translate_v6(
    ctx: *mut xdp_md,
    l3: usize,
    proto: u32,
    backend: *const BackendValue,
) -> Result<(), Reason> {
    if l3 > 18 {
        return Err(Reason::PassMalformed);
    }
    const TCP_END: usize = 88 + 20;
    const UDP_END: usize = 88 + 8;
    // SAFETY: `backend` points into a map value that lives for the run; its address
    // and port are read a byte at a time.
    let (addr, port_be) = unsafe { ((*backend).addr.as_ptr(), (*backend).port_be) };
    let udp = proto != u32::from(IPPROTO_TCP);
    // One bounds check per protocol, then one body for both (a copy each would cost
    // this frame the registers it needs).
    let (ip, check) = if udp {
        (field::<[u8; UDP_END]>(ctx, l3)? as *mut u8, 94)
    } else {
        (field::<[u8; TCP_END]>(ctx, l3)? as *mut u8, 104)
    };
    // SAFETY: `check` + 2 and every offset `translate_v6_at` uses end inside the bytes
    // checked for the protocol (96 for UDP, 108 for TCP).
    unsafe { translate_v6_at(ip, check, addr, port_be, udp) }
}

/// `translate_v6`'s work, the quoted TCP/UDP checksum at `check`.
///
/// # Safety
///
/// `ip` points to writable packet bytes checked to reach past `check` + 2, at an even
/// offset of a frame that starts 2-byte aligned (see `dr::write_macs`), so the u16
/// accesses are aligned; `addr` to 16 readable bytes of a map value.
#[inline(never)]
unsafe fn translate_v6_at(
    ip: *mut u8,
    check: usize,
    addr: *const u8,
    port_be: u16,
    udp: bool,
) -> Result<(), Reason> {
    use crate::nat::fold_add;
    // SAFETY: what the caller vouches for.
    unsafe {
        let l4_check = ip.add(check) as *mut u16;
        let icmp_check = ip.add(42) as *mut u16;
        let outer_dst = ip.add(24) as *mut u16;
        let quoted_src = ip.add(56) as *mut u16;
        let port = ip.add(88) as *mut u16;
        let old_l4 = *l4_check;
        if udp && old_l4 == 0 {
            return Err(Reason::PassMalformed);
        }
        // RFC 1624 over native-order words (see `nat::rewrite_v6`). With A the address
        // words' change and P the port's: the quoted TCP/UDP sum grows by A + P (its
        // pseudo-header's source and its port), so its checksum shrinks by as much;
        // the ICMPv6 sum sees A twice (its pseudo-header's destination and the quoted
        // source), P, and the quoted checksum's -(A + P): A in all. One accumulator, a
        // word at a time (volatile, so the compiler cannot load all 48 bytes first and
        // spill them past the stack's limit).
        use core::ptr::{read_volatile as get, write_volatile as put};
        let mut a = 0u32;
        for i in 0..8 {
            let new = u16::from_ne_bytes(get(addr.add(2 * i) as *const [u8; 2]));
            a = fold_add(a, u32::from(!get(quoted_src.add(i))) + u32::from(new));
            put(quoted_src.add(i), new);
            put(outer_dst.add(i), new);
        }
        let p = u32::from(!get(port)) + u32::from(port_be);
        put(port, port_be);
        let mut new_l4 = !(fold_add(fold_add(fold_add(u32::from(!old_l4), a), p), 0) as u16);
        if udp && new_l4 == 0 {
            new_l4 = 0xffff;
        }
        put(l4_check, new_l4);
        let icmp = fold_add(u32::from(!get(icmp_check)), a);
        put(icmp_check, !(fold_add(icmp, 0) as u16));
    }
    Ok(())
}
