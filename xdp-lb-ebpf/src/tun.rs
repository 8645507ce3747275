//! TUN forwarding: IP-in-IP (IPv4 in IPv4, protocol 4) towards the real server, the
//! inner packet untouched, as LVS-TUN does. The outer source is the address the LB's
//! kernel would use to reach the real server; the outer DF bit and TOS follow the inner
//! packet's. A packet that would exceed the egress MTU once encapsulated goes to the
//! kernel (counted) instead of being sent too big.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
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
        return Err(Verdict::drop(Reason::DropNatFamily));
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
