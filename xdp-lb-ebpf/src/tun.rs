//! TUN forwarding: IP-in-IP towards the real server, the inner packet untouched, as
//! LVS-TUN does: IPv4 in IPv4 (protocol 4), IPv6 in IPv6 (next header 41), and across
//! families as IPVS offers it (IPv4 in IPv6, next header 4; IPv6 in IPv4, protocol 41):
//! the outer header is of the real server's family. The outer source is the address
//! the LB's kernel would use to reach the real server; the outer DF bit and TOS (IPv4),
//! or traffic class and flow label (IPv6), follow the inner packet's (an IPv6 packet in
//! IPv4 sets DF: IPv6 is never fragmented on the way). A packet that would exceed the
//! egress MTU once encapsulated goes to the kernel (counted) instead of being sent too
//! big.
use aya_ebpf::{bindings::xdp_md, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use xdp_lb_common::{BackendValue, Reason, is_v4_mapped};

use crate::{
    dr,
    parse::{Packet, load_word, ptr_at, ptr_at_mut},
    program::Verdict,
};

const OUTER_LEN: usize = Ipv4Hdr::LEN;
const IPPROTO_IPIP: u8 = 4;
const IP_DF: u16 = 0x4000;

#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &BackendValue,
    stats: crate::counters::ServiceCounters,
) -> Result<Verdict, Verdict> {
    let as_verdict = |reason| match reason {
        Reason::DropNoHeadroom => Verdict::drop(reason),
        _ => Verdict::pass(reason),
    };
    if !is_v4_mapped(&backend.addr) {
        encap_v6(ctx.ctx, pkt.l3, backend, pkt.ipv4).map_err(as_verdict)?;
        return dr::forward(ctx, backend, stats);
    }
    if !pkt.ipv4 {
        encap_v6_in_v4(ctx.ctx, pkt.l3, backend).map_err(as_verdict)?;
        return dr::forward(ctx, backend, stats);
    }
    let vlan = pkt.l3 != EthHdr::LEN;
    let inner: *const Ipv4Hdr = ptr_at(ctx, pkt.l3).map_err(Verdict::pass)?;
    // SAFETY: ptr_at checked that the whole header lies inside the packet, which is
    // valid memory for the run; its fields are byte arrays (alignment 1), read by value.
    let (inner_len, tos, df) = unsafe {
        (
            u16::from_be_bytes((*inner).tot_len),
            (*inner).tos,
            u16::from_be_bytes((*inner).frags) & IP_DF,
        )
    };
    let outer_len = inner_len as u32 + OUTER_LEN as u32;
    if outer_len > u32::from(backend.mtu) {
        return Err(Verdict::pass(Reason::PassTooBig));
    }
    // The VLAN tag (if any) moves with the Ethernet header; read it before the move.
    let tag: u32 = if vlan {
        let p: *const [u8; 4] = ptr_at(ctx, EthHdr::LEN - 2).map_err(Verdict::pass)?;
        // SAFETY: ptr_at checked these 4 bytes (TPID + TCI as on the wire) lie inside
        // the packet; one word load (read_unaligned would read four bytes on BPF).
        unsafe { load_word(p as *const u8) }
    } else {
        0
    };
    // SAFETY: `ctx.ctx` is the live xdp_md this program was called with. The helper
    // invalidates every packet pointer taken so far; none is used after it (all are
    // taken again with fresh bounds checks below).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OUTER_LEN as i32)) } != 0 {
        return Err(Verdict::drop(Reason::DropNoHeadroom));
    }
    // New layout: Ethernet (+ tag) | outer IPv4 | inner packet (where it was).
    // From here on a failed bounds check (impossible: the frame just grew) must not
    // hand the kernel a half-built frame, so it drops.
    let unfinished = |_| Verdict::drop(Reason::DropNoHeadroom);
    let l3 = if vlan {
        let p: *mut u32 = ptr_at_mut(ctx, EthHdr::LEN - 2).map_err(unfinished)?;
        // SAFETY: ptr_at_mut checked these 4 bytes after the move; write_unaligned
        // needs no alignment.
        unsafe { core::ptr::write_unaligned(p, tag) };
        EthHdr::LEN + 4
    } else {
        EthHdr::LEN
    };
    let ethertype: *mut [u8; 2] = ptr_at_mut(ctx, l3 - 2).map_err(unfinished)?;
    let outer: *mut Ipv4Hdr = ptr_at_mut(ctx, l3).map_err(unfinished)?;
    let (src, dst) = (last_word(&backend.tun_src), last_word(&backend.addr));
    // SAFETY: ptr_at_mut checked the ethertype's 2 bytes and the 20-byte outer header
    // after the move.
    unsafe {
        write_outer_v4(
            ethertype,
            outer,
            (outer_len as u16, tos, df, IPPROTO_IPIP),
            src,
            dst,
        )
    };
    dr::forward(ctx, backend, stats)
}

/// The full checksum of a 20-byte IPv4 header (id 0, TTL 64) with these fields;
/// `src` and `dst` are in wire order.
#[inline(always)]
fn ipv4_checksum(len: u16, tos: u8, df: u16, proto: u8, src: u32, dst: u32) -> u16 {
    let words = |a: u32| {
        let b = a.to_ne_bytes();
        u32::from(u16::from_be_bytes([b[0], b[1]])) + u32::from(u16::from_be_bytes([b[2], b[3]]))
    };
    let mut sum = 0x4500 | u32::from(tos);
    sum += u32::from(len);
    sum += u32::from(df);
    sum += (64 << 8) | u32::from(proto);
    sum += words(src) + words(dst);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The IPv4 address of a mapped map address, as a u32 in wire order.
#[inline(always)]
fn last_word(addr: &[u8; 16]) -> u32 {
    u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]])
}

/// Writes an outer IPv4 header (id 0, TTL 64) and the ethertype before it, for both
/// paths with an IPv4 outer header; `(len, tos, df, proto)` are its fields, `src` and
/// `dst` in wire order.
///
/// # Safety
///
/// `ethertype` and `outer` point to packet bytes checked to hold 2 and 20 bytes; all
/// fields are bytes or byte arrays (alignment 1).
#[inline(always)]
unsafe fn write_outer_v4(
    ethertype: *mut [u8; 2],
    outer: *mut Ipv4Hdr,
    (len, tos, df, proto): (u16, u8, u16, u8),
    src: u32,
    dst: u32,
) {
    let check = ipv4_checksum(len, tos, df, proto, src, dst);
    // SAFETY: what the caller vouches for.
    unsafe {
        *ethertype = ETH_P_IP.to_be_bytes();
        (*outer).vihl = 0x45;
        (*outer).tos = tos;
        (*outer).tot_len = len.to_be_bytes();
        (*outer).id = [0, 0];
        (*outer).frags = df.to_be_bytes();
        (*outer).ttl = 64;
        (*outer).proto = proto;
        (*outer).check = check.to_be_bytes();
        (*outer).src_addr = src.to_ne_bytes();
        (*outer).dst_addr = dst.to_ne_bytes();
    }
}

const IPPROTO_IPV6: u8 = 41;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_IP: u16 = 0x0800;

/// Puts an outer IPv6 header (LB → real server, hop limit 64) before the packet at
/// `l3`: IPv6 in IPv6 (next header 41) or, with `inner_v4`, IPv4 in IPv6 (next header
/// 4); the caller then sends the frame as DR does. The outer header's first word
/// (version, traffic class, flow label) is an inner IPv6 packet's, so the class and the
/// flow's label (ECMP hashing on the way) carry over; an inner IPv4 packet gives its TOS
/// as the class. IPv6 routers never fragment, so the MTU rule is the IPv4 path's: a
/// packet that would exceed the egress MTU once encapsulated goes to the kernel
/// (`PassTooBig`).
///
/// Not inlined, on purpose: the entry's frame is at the limit (see `filter::denies`)
/// and this call's frame stays small. `backend` is a raw pointer into its map value,
/// read as the header is written: as a reference (which nothing may write) the
/// compiler would load both addresses first and spill them.
#[inline(never)]
fn encap_v6(
    ctx: *mut xdp_md,
    l3: usize,
    backend: *const BackendValue,
    inner_v4: bool,
) -> Result<(), Reason> {
    let ctx = XdpContext::new(ctx);
    let vlan = l3 != EthHdr::LEN;
    // The parser's offsets (with or without one tag); bounded for the verifier.
    if vlan && l3 != EthHdr::LEN + 4 {
        return Err(Reason::PassMalformed);
    }
    // The inner datagram's length and the outer header's first word, in wire order.
    let (inner_len, first_word) = if inner_v4 {
        let inner: *const Ipv4Hdr = ptr_at(&ctx, l3)?;
        // SAFETY: ptr_at checked the 20-byte header; byte-array fields read by value.
        let (len, tos) = unsafe { (u16::from_be_bytes((*inner).tot_len), (*inner).tos) };
        (
            u32::from(len),
            (0x6000_0000u32 | u32::from(tos) << 20).to_be(),
        )
    } else {
        let inner: *const Ipv6Hdr = ptr_at(&ctx, l3)?;
        // SAFETY: ptr_at checked the 40-byte header; byte-array fields read by value.
        let (payload_len, vcf) =
            unsafe { (u16::from_be_bytes((*inner).payload_len), (*inner).vcf) };
        (
            u32::from(payload_len) + Ipv6Hdr::LEN as u32,
            u32::from_ne_bytes(vcf),
        )
    };
    // SAFETY: `backend` points into a map value that lives for the run.
    let mtu = unsafe { (*backend).mtu };
    if inner_len + Ipv6Hdr::LEN as u32 > u32::from(mtu) {
        return Err(Reason::PassTooBig);
    }
    // SAFETY: `ctx.ctx` is the live xdp_md this program was called with. The helper
    // invalidates every packet pointer taken so far; none is used after it (all are
    // taken again with fresh bounds checks below).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(Ipv6Hdr::LEN as i32)) } != 0 {
        return Err(Reason::DropNoHeadroom);
    }
    // New layout: Ethernet (+ tag) | outer IPv6 | inner packet (where it was); the old
    // Ethernet header and tag are now 40 bytes in, read from there. From here on a
    // failed bounds check (impossible: the frame just grew) must not hand the kernel a
    // half-built frame, so it drops.
    let unfinished = |_| Reason::DropNoHeadroom;
    let moved = Ipv6Hdr::LEN;
    if vlan {
        let tag: *mut [u16; 2] = ptr_at_mut(&ctx, EthHdr::LEN - 2).map_err(unfinished)?;
        let old: *const [u16; 2] = ptr_at(&ctx, moved + EthHdr::LEN - 2).map_err(unfinished)?;
        // SAFETY: ptr_at(_mut) checked both 4-byte places (TPID + TCI as on the wire)
        // after the move; they sit at even offsets of a 2-byte aligned frame (see
        // `dr::write_macs`), so the u16 accesses are aligned.
        unsafe { *tag = *old };
    }
    let ethertype: *mut [u8; 2] = ptr_at_mut(&ctx, l3 - 2).map_err(unfinished)?;
    let outer: *mut Ipv6Hdr = ptr_at_mut(&ctx, l3).map_err(unfinished)?;
    // SAFETY: ptr_at_mut checked the ethertype's 2 bytes and the 40-byte outer header
    // after the move; its fields are byte arrays (alignment 1), and the addresses are
    // written as u16 words at even offsets of a header at an even offset of a 2-byte
    // aligned frame (see `dr::write_macs`), so those stores are aligned; `backend`'s
    // fields are read byte by byte.
    unsafe {
        *ethertype = ETH_P_IPV6.to_be_bytes();
        (*outer).vcf = first_word.to_ne_bytes();
        (*outer).payload_len = (inner_len as u16).to_be_bytes();
        (*outer).next_hdr = if inner_v4 { IPPROTO_IPIP } else { IPPROTO_IPV6 };
        (*outer).hop_limit = 64;
        let src = (*backend).tun_src.as_ptr();
        let dst = (*backend).addr.as_ptr();
        let words = (outer as *mut u8).add(8) as *mut u16;
        for i in 0..8 {
            *words.add(i) = u16::from_ne_bytes([*src.add(2 * i), *src.add(2 * i + 1)]);
            *words.add(8 + i) = u16::from_ne_bytes([*dst.add(2 * i), *dst.add(2 * i + 1)]);
        }
    }
    Ok(())
}

/// Puts an outer IPv4 header (LB → real server, protocol 41, TTL 64, DF) before the
/// IPv6 packet at `l3`: IPv6 in IPv4, for an IPv6 VIP's IPv4 real server. The TOS is
/// the inner traffic class; the MTU rule is the other paths'. Not inlined, as
/// `encap_v6`.
#[inline(never)]
fn encap_v6_in_v4(ctx: *mut xdp_md, l3: usize, backend: *const BackendValue) -> Result<(), Reason> {
    let ctx = XdpContext::new(ctx);
    let vlan = l3 != EthHdr::LEN;
    if vlan && l3 != EthHdr::LEN + 4 {
        return Err(Reason::PassMalformed);
    }
    let inner: *const Ipv6Hdr = ptr_at(&ctx, l3)?;
    // SAFETY: ptr_at checked the 40-byte header; byte-array fields read by value.
    let (payload_len, vcf) = unsafe { (u16::from_be_bytes((*inner).payload_len), (*inner).vcf) };
    let tos = (vcf[0] << 4) | (vcf[1] >> 4);
    let outer_len = u32::from(payload_len) + (Ipv6Hdr::LEN + OUTER_LEN) as u32;
    // SAFETY: `backend` points into a map value that lives for the run.
    if outer_len > u32::from(unsafe { (*backend).mtu }) {
        return Err(Reason::PassTooBig);
    }
    // SAFETY: as in `encap_v6`: no packet pointer taken before is used after it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OUTER_LEN as i32)) } != 0 {
        return Err(Reason::DropNoHeadroom);
    }
    let unfinished = |_| Reason::DropNoHeadroom;
    if vlan {
        let tag: *mut [u16; 2] = ptr_at_mut(&ctx, EthHdr::LEN - 2).map_err(unfinished)?;
        let old: *const [u16; 2] = ptr_at(&ctx, OUTER_LEN + EthHdr::LEN - 2).map_err(unfinished)?;
        // SAFETY: as in `encap_v6`: both 4-byte places checked, aligned u16 accesses.
        unsafe { *tag = *old };
    }
    let ethertype: *mut [u8; 2] = ptr_at_mut(&ctx, l3 - 2).map_err(unfinished)?;
    let outer: *mut Ipv4Hdr = ptr_at_mut(&ctx, l3).map_err(unfinished)?;
    // The addresses read only now: kept across the helper call they would be spilled
    // to the stack, and this frame must stay small (the entry's is near the limit).
    // SAFETY: `backend` points into a map value that lives for the run; ptr_at_mut
    // checked the ethertype's 2 bytes and the 20-byte outer header after the move.
    unsafe {
        let b = &*backend;
        let (src, dst) = (last_word(&b.tun_src), last_word(&b.addr));
        write_outer_v4(
            ethertype,
            outer,
            (outer_len as u16, tos, IP_DF, IPPROTO_IPV6),
            src,
            dst,
        );
    }
    Ok(())
}
