//! Header parsing: Ethernet (with at most one 802.1Q tag), IPv4 (options allowed),
//! IPv6 (no extension headers), TCP and UDP; ICMP and ICMPv6 with ports 0 (for
//! `icmp`, which reads the rest). Produces the flow key or the reason the
//! packet is left to the kernel: among them every length that lies (IP, TCP data
//! offset, UDP length), checked where it is read. Nothing here writes to the packet.
use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use xdp_lb_common::{FlowKey, IPPROTO_TCP, IPPROTO_UDP, Reason, v4_mapped_words};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_FRAGMENT: u8 = 44;

/// What the rest of the program needs to know about a packet.
pub struct Packet {
    pub flow: FlowKey,
    /// Frame length in bytes, for the byte counters.
    pub len: u64,
    /// Offsets of the IP and TCP/UDP headers, for the NAT rewrite.
    pub l3: usize,
    pub l4: usize,
    pub ipv4: bool,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Reason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Reason::PassTruncated);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Reason> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}

/// One 4-byte load of packet bytes, kept in memory (network) order.
///
/// # Safety
/// `p` must point at 4 bytes checked to lie inside the packet. Packet addresses are
/// only 2-byte aligned behind Ethernet; the verifier accepts unaligned packet loads
/// (alignment is enforced only under `BPF_F_STRICT_ALIGNMENT`, which we never set)
/// and x86-64 and arm64 perform them, as every C XDP program reading `iph->saddr`
/// does. A volatile load keeps LLVM from splitting it into the byte loads it emits
/// for an align-1 read on BPF.
#[inline(always)]
pub unsafe fn load_word(p: *const u8) -> u32 {
    // SAFETY: inside the packet, by the caller's contract.
    unsafe { core::ptr::read_volatile(p as *const u32) }
}

/// The big-endian 16-bit field at `p`, as a length to add to a packet offset.
/// Verifiers before Linux 6.6 know nothing of a byte swap's result, not even that it
/// is not negative, and refuse a program that adds a swapped field to a packet
/// pointer (seen on Debian 12's 6.1). So the swapped value goes through a 2-byte
/// stack slot: every verifier bounds a 2-byte load below 65,536. Volatile, so LLVM
/// keeps the round trip (two instructions) rather than the swap it knows is bounded.
///
/// # Safety
/// `p` must point at 2 bytes checked to lie inside the packet.
#[inline(always)]
pub unsafe fn load_be16(p: *const u8) -> usize {
    let mut slot = 0u16;
    // SAFETY: `p` is inside the packet by the caller's contract (a 2-byte packet
    // load, unaligned allowed as in `load_word`); `slot` is an aligned local.
    unsafe {
        let value = u16::from_be(core::ptr::read_volatile(p as *const u16));
        core::ptr::write_volatile(&mut slot, value);
        core::ptr::read_volatile(&slot) as usize
    }
}

/// A 16-byte packet address as four word loads (see [`load_word`]).
///
/// # Safety
/// `p` must point at 16 bytes checked to lie inside the packet.
#[inline(always)]
pub unsafe fn load_addr(p: *const u8) -> [u32; 4] {
    // SAFETY: the four words are inside the 16 bytes the caller checked.
    unsafe {
        [
            load_word(p),
            load_word(p.add(4)),
            load_word(p.add(8)),
            load_word(p.add(12)),
        ]
    }
}

/// Stores an address given as four words (memory order) into a key's address field,
/// with four word stores. Every key type holding an address (`FlowKey`, `ServiceKey`)
/// is aligned to at least 4 and places its addresses at multiples of 4, so the field
/// is word aligned, which the verifier requires of stack stores.
#[inline(always)]
pub fn store_addr(field: &mut [u8; 16], words: [u32; 4]) {
    let p = field.as_mut_ptr() as *mut u32;
    debug_assert!(p.is_aligned());
    // SAFETY: `field` is 16 writable bytes, word aligned as above.
    unsafe {
        p.write(words[0]);
        p.add(1).write(words[1]);
        p.add(2).write(words[2]);
        p.add(3).write(words[3]);
    }
}

/// Where an IPv4 header with a valid version and header length starts (`l3`) and
/// ends (`l4`): what the first look already read, so the parse starts there.
pub struct Ipv4At {
    pub l3: usize,
    pub l4: usize,
}

/// The whole parse; `known`: the IPv4 header the first look already found, whose
/// link layer and IP version need no second reading.
#[inline(always)]
pub fn parse(ctx: &XdpContext, known: Option<Ipv4At>) -> Result<Packet, Reason> {
    let at = match known {
        Some(at) => at,
        None => match link(ctx)? {
            (ETH_P_IP, l3) => Ipv4At {
                l3,
                l4: ipv4_header_end(ctx, l3)?,
            },
            (ETH_P_IPV6, l3) => return parse_ipv6(ctx, l3),
            _ => return Err(Reason::PassNotIp),
        },
    };
    parse_ipv4(ctx, at)
}

/// The EtherType (behind at most one 802.1Q tag) and the offset of what follows.
#[inline(always)]
fn link(ctx: &XdpContext) -> Result<(u16, usize), Reason> {
    // A frame too short for Ethernet is not ours to judge: the kernel drops it.
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|_| Reason::PassNotIp)?;
    // SAFETY: ptr_at checked that the whole header lies inside the packet, which is
    // valid memory for the run; its fields are byte arrays (alignment 1), read by value.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type != ETH_P_8021Q {
        return Ok((ether_type, EthHdr::LEN));
    }
    let vlan: *const VlanHdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: ptr_at checked the 4-byte tag; a byte-array field read by value.
    let inner = u16::from_be(unsafe { (*vlan).ether_type });
    Ok((inner, EthHdr::LEN + VlanHdr::LEN))
}

/// The end of the IPv4 header at `l3`, once its version and length are plausible.
#[inline(always)]
fn ipv4_header_end(ctx: &XdpContext, l3: usize) -> Result<usize, Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
    // SAFETY: ptr_at checked the 20-byte IPv4 header; a byte field read by value.
    let vihl = unsafe { (*ip).vihl };
    let ihl = (vihl & 0x0f) as usize * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Err(Reason::PassMalformed);
    }
    // ihl ≤ 60, so the offset stays bounded for the verifier.
    Ok(l3 + ihl)
}

/// An IPv4 packet whose header's version and length were checked (`at`).
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, at: Ipv4At) -> Result<Packet, Reason> {
    let Ipv4At { l3, l4 } = at;
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
    // SAFETY: ptr_at checked the 20-byte IPv4 header; byte-array fields read by value,
    // the addresses (bytes 12..20) as one word each.
    let (frags, tot_len, proto, src, dst) = unsafe {
        (
            u16::from_be_bytes((*ip).frags),
            load_be16((ip as *const u8).add(2)),
            (*ip).proto,
            load_word((ip as *const u8).add(12)),
            load_word((ip as *const u8).add(16)),
        )
    };
    if l3 + tot_len < l4 {
        return Err(Reason::PassMalformed);
    }
    // Ethernet padding may make the frame longer than tot_len, never shorter.
    if ctx.data() + l3 + tot_len > ctx.data_end() {
        return Err(Reason::PassTruncated);
    }
    // MF set or a non-zero offset: ports are unknown (or absent), leave it to the kernel.
    if frags & 0x3fff != 0 {
        return Err(Reason::PassFragment);
    }
    let mut flow = FlowKey::default();
    store_addr(&mut flow.src, v4_mapped_words(src));
    store_addr(&mut flow.dst, v4_mapped_words(dst));
    flow.proto = proto;
    transport(ctx, flow, l3, l4, l3 + tot_len, true)
}

/// Reads the ports (and TCP flags) of the TCP/UDP header at `l4` into the packet;
/// ICMP of the packet's own IP version keeps ports 0.
#[inline(always)]
fn transport(
    ctx: &XdpContext,
    mut flow: FlowKey,
    l3: usize,
    l4: usize,
    l3_end: usize,
    ipv4: bool,
) -> Result<Packet, Reason> {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let mut tcp_flags = 0;
    match flow.proto {
        IPPROTO_TCP => {
            let tcp: *const TcpHdr = ptr_at(ctx, l4)?;
            // Data offset (high nibble of byte 12) below 5 words is impossible, and the
            // header with its options ends inside the datagram.
            // SAFETY: ptr_at checked the 20-byte TCP header, so bytes 12 and 13 (and
            // the byte-array port fields below) are inside the packet.
            let doff = unsafe { *((tcp as *const u8).add(12)) } >> 4;
            if doff < 5 || l4 + doff as usize * 4 > l3_end {
                return Err(Reason::PassMalformed);
            }
            // SAFETY: as above, inside the checked TCP header.
            let (source, dest, flags) =
                unsafe { ((*tcp).source, (*tcp).dest, *((tcp as *const u8).add(13))) };
            flow.sport_be = u16::from_ne_bytes(source);
            flow.dport_be = u16::from_ne_bytes(dest);
            tcp_flags = flags;
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = ptr_at(ctx, l4)?;
            // SAFETY: ptr_at checked the 8-byte UDP header; byte-array fields by value.
            let (src, dst, len) =
                unsafe { ((*udp).src, (*udp).dst, load_be16((udp as *const u8).add(4))) };
            // The datagram's own length covers its header and ends inside the IP one.
            if len < UdpHdr::LEN || l4 + len > l3_end {
                return Err(Reason::PassMalformed);
            }
            flow.sport_be = u16::from_ne_bytes(src);
            flow.dport_be = u16::from_ne_bytes(dst);
        }
        crate::icmp::IPPROTO_ICMP if ipv4 => {}
        crate::icmp::IPPROTO_ICMPV6 if !ipv4 => {}
        _ => return Err(Reason::PassNotL4),
    }
    Ok(Packet {
        flow,
        len,
        l3,
        l4,
        ipv4,
        tcp_flags,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Result<Packet, Reason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3)?;
    // SAFETY: ptr_at checked the 40-byte IPv6 header; byte-array fields read by value.
    let (version, payload_len, next) = unsafe {
        (
            (*ip).vcf[0] >> 4,
            load_be16((ip as *const u8).add(4)),
            (*ip).next_hdr,
        )
    };
    // Payload length 0 is a jumbogram (or a lie): not for us.
    if version != 6 || payload_len == 0 {
        return Err(Reason::PassMalformed);
    }
    if ctx.data() + l3 + Ipv6Hdr::LEN + payload_len > ctx.data_end() {
        return Err(Reason::PassTruncated);
    }
    match next {
        IPPROTO_TCP | IPPROTO_UDP | crate::icmp::IPPROTO_ICMPV6 => {}
        IPPROTO_FRAGMENT => return Err(Reason::PassFragment),
        0 | 43 | 50 | 51 | 60 | 135 | 139 | 140 => return Err(Reason::PassIpv6Ext),
        _ => return Err(Reason::PassNotL4),
    }
    // SAFETY: the same checked IPv6 header as above (addresses at bytes 8..40).
    let (src, dst) = unsafe {
        (
            load_addr((ip as *const u8).add(8)),
            load_addr((ip as *const u8).add(24)),
        )
    };
    let mut flow = FlowKey::default();
    store_addr(&mut flow.src, src);
    store_addr(&mut flow.dst, dst);
    flow.proto = next;
    let l4 = l3 + Ipv6Hdr::LEN;
    transport(ctx, flow, l3, l4, l4 + payload_len, false)
}
