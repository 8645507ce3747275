//! TUN forwarding: IP-in-IP towards the real server, the inner packet untouched, as
//! LVS-TUN does: IPv4 in IPv4 (protocol 4) and IPv6 in IPv6 (next header 41). The outer
//! source is the address the LB's kernel would use to reach the real server; the outer
//! DF bit and TOS (IPv4), or traffic class and flow label (IPv6), follow the inner
//! packet's. A packet that would exceed the egress MTU once encapsulated goes to the
//! kernel (counted) instead of being sent too big.
use aya_ebpf::{bindings::xdp_md, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use xdp_lb_common::{BackendValue, Reason, ServiceStats};

use crate::{
    dr,
    parse::{Packet, ptr_at, ptr_at_mut},
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
    stats: Option<*mut ServiceStats>,
) -> Result<Verdict, Verdict> {
    if !pkt.ipv4 {
        encap_v6(ctx.ctx, pkt.l3, backend).map_err(|reason| match reason {
            Reason::DropNoHeadroom => Verdict::drop(reason),
            _ => Verdict::pass(reason),
        })?;
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
        let p: *const u32 = ptr_at(ctx, EthHdr::LEN - 2).map_err(Verdict::pass)?;
        // SAFETY: ptr_at checked these 4 bytes (TPID + TCI as on the wire) lie inside
        // the packet; read_unaligned needs no alignment.
        unsafe { core::ptr::read_unaligned(p) }
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
    let src = [
        backend.tun_src[12],
        backend.tun_src[13],
        backend.tun_src[14],
        backend.tun_src[15],
    ];
    let dst = [
        backend.addr[12],
        backend.addr[13],
        backend.addr[14],
        backend.addr[15],
    ];
    let header = OuterHeader {
        len: outer_len as u16,
        tos,
        df,
        src,
        dst,
    };
    // SAFETY: ptr_at_mut checked the ethertype's 2 bytes and the 20-byte outer header
    // after the move; all fields are bytes or byte arrays (alignment 1).
    unsafe {
        *ethertype = 0x0800u16.to_be_bytes();
        (*outer).vihl = 0x45;
        (*outer).tos = tos;
        (*outer).tot_len = header.len.to_be_bytes();
        (*outer).id = [0, 0];
        (*outer).frags = df.to_be_bytes();
        (*outer).ttl = 64;
        (*outer).proto = IPPROTO_IPIP;
        (*outer).check = header.checksum().to_be_bytes();
        (*outer).src_addr = src;
        (*outer).dst_addr = dst;
    }
    dr::forward(ctx, backend, stats)
}

struct OuterHeader {
    len: u16,
    tos: u8,
    df: u16,
    src: [u8; 4],
    dst: [u8; 4],
}

impl OuterHeader {
    /// The full header checksum of the 20-byte outer header (id 0, TTL 64, proto 4).
    #[inline(always)]
    fn checksum(&self) -> u16 {
        let word = |a: u8, b: u8| u32::from(u16::from_be_bytes([a, b]));
        let mut sum = 0x4500 | u32::from(self.tos);
        sum += u32::from(self.len);
        sum += u32::from(self.df);
        sum += (64 << 8) | u32::from(IPPROTO_IPIP);
        sum += word(self.src[0], self.src[1]) + word(self.src[2], self.src[3]);
        sum += word(self.dst[0], self.dst[1]) + word(self.dst[2], self.dst[3]);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }
}

const IPPROTO_IPV6: u8 = 41;
const ETH_P_IPV6: u16 = 0x86DD;

/// Puts an outer IPv6 header (LB → real server, next header 41, hop limit 64) before
/// the IPv6 packet at `l3`; the caller then sends the frame as DR does. The outer
/// header's first word (version, traffic class, flow label) is the inner's, so the
/// class and the flow's label (ECMP hashing on the way) carry over. IPv6 routers never
/// fragment, so the MTU rule is the IPv4 path's: a packet that would exceed the egress
/// MTU once encapsulated goes to the kernel (`PassTooBig`).
///
/// Not inlined, on purpose: the entry's frame is at the limit (see `filter::denies`)
/// and this call's frame stays small. `backend` is a raw pointer into its map value,
/// read as the header is written: as a reference (which nothing may write) the
/// compiler would load both addresses first and spill them.
#[inline(never)]
fn encap_v6(ctx: *mut xdp_md, l3: usize, backend: *const BackendValue) -> Result<(), Reason> {
    let ctx = XdpContext::new(ctx);
    let vlan = l3 != EthHdr::LEN;
    // The parser's offsets (with or without one tag); bounded for the verifier.
    if vlan && l3 != EthHdr::LEN + 4 {
        return Err(Reason::PassMalformed);
    }
    let inner: *const Ipv6Hdr = ptr_at(&ctx, l3)?;
    // SAFETY: ptr_at checked the 40-byte header (byte-array fields, read by value);
    // `backend` points into a map value that lives for the run.
    let (payload_len, mtu) = unsafe { (u16::from_be_bytes((*inner).payload_len), (*backend).mtu) };
    let inner_len = u32::from(payload_len) + Ipv6Hdr::LEN as u32;
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
    // Ethernet header and tag are now 40 bytes in, read from there (nothing is kept
    // across the helper call, which would cost stack). From here on a failed bounds
    // check (impossible: the frame just grew) must not hand the kernel a half-built
    // frame, so it drops.
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
    let inner: *const Ipv6Hdr = ptr_at(&ctx, l3 + moved).map_err(unfinished)?;
    // SAFETY: ptr_at(_mut) checked the ethertype's 2 bytes, the 40-byte outer header
    // and the inner header after the move. The first word and the addresses are copied
    // as u16 words at even offsets of headers at even offsets of a 2-byte aligned frame
    // (see `dr::write_macs`), so those accesses are aligned; `backend`'s fields are
    // read byte by byte.
    unsafe {
        *ethertype = ETH_P_IPV6.to_be_bytes();
        *(outer as *mut [u16; 2]) = *(inner as *const [u16; 2]);
        let len = u16::from_be_bytes((*inner).payload_len) + Ipv6Hdr::LEN as u16;
        (*outer).payload_len = len.to_be_bytes();
        (*outer).next_hdr = IPPROTO_IPV6;
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
