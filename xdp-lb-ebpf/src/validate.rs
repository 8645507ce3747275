//! What a packet without a flow entry must be before it gets a real server (or a NAT
//! reply its reply entry), beyond what the parser already refused for every packet
//! (truncated headers, fragments, lengths that disagree with each other or with the
//! frame): an IPv4 header's checksum is right, and its source could really have sent
//! it. The kernel checks all this on its own path; XDP runs before it, so this is where
//! a malformed or spoofed packet is stopped from creating state or being forwarded.
//!
//! A packet of a flow in the flow table (or a NAT reply with its reply entry) is not
//! checked again. Its addresses are the entry's key, which the flow's first packet
//! was checked with. A wrong header checksum reaches the flow's real server still
//! wrong, whose kernel drops it as it drops any damaged packet: DR leaves the header
//! as it is, NAT updates checksums incrementally (RFC 1624), which keeps a wrong sum
//! wrong, and TUN carries the header whole inside its own. So the established path
//! saves the sum (about a tenth of its time), and such a packet still never reaches
//! another server than its flow's would.
use aya_ebpf::programs::XdpContext;
use xdp_lb_common::Reason;

use crate::parse::{Packet, load_word, ptr_at};

/// Ok when `pkt` may be forwarded; otherwise the reason it goes to the kernel.
#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet) -> Result<(), Reason> {
    if martian(pkt) {
        return Err(Reason::PassMartian);
    }
    if pkt.ipv4 && !ipv4_checksum_ok(ctx, pkt.l3, pkt.l4)? {
        return Err(Reason::PassBadChecksum);
    }
    Ok(())
}

/// A source no client can have, or the destination itself.
#[inline(always)]
fn martian(pkt: &Packet) -> bool {
    let (src, dst) = (&pkt.flow.src, &pkt.flow.dst);
    if src == dst {
        return true;
    }
    if pkt.ipv4 {
        // 0/8 (this network), 127/8 (loopback), 224/4 and 240/4 (multicast, reserved,
        // broadcast).
        let first = src[12];
        return first == 0 || first == 127 || first >= 224;
    }
    // ::, ::1, ff00::/8, and IPv4-mapped addresses, which never travel as IPv6.
    let unspecified_or_loopback = src[..15].iter().all(|b| *b == 0) && src[15] <= 1;
    unspecified_or_loopback || src[0] == 0xff || xdp_lb_common::is_v4_mapped(src)
}

/// The IPv4 header (options included) sums to 0xffff in one's complement.
#[inline(always)]
fn ipv4_checksum_ok(ctx: &XdpContext, l3: usize, l4: usize) -> Result<bool, Reason> {
    if l4 - l3 == 20 {
        // The common header without options: five 32-bit loads after one bounds check.
        // A one's-complement sum does not depend on the byte order it is taken in, so
        // native words folded to 16 bits give 0xffff exactly when the checksum is right.
        let header: *const [u8; 20] = ptr_at(ctx, l3)?;
        let header = header as *const u8;
        // SAFETY: ptr_at checked the 20 bytes lie inside the packet; `load_word` reads
        // each word with one (unaligned) packet load, where `read_unaligned` would
        // read twenty bytes one by one on BPF.
        let w = unsafe {
            [
                load_word(header),
                load_word(header.add(4)),
                load_word(header.add(8)),
                load_word(header.add(12)),
                load_word(header.add(16)),
            ]
        };
        let mut sum: u64 = w.iter().map(|&x| u64::from(x)).sum();
        sum = (sum & 0xffff_ffff) + (sum >> 32);
        sum = (sum & 0xffff_ffff) + (sum >> 32);
        let mut sum = (sum as u32 & 0xffff) + (sum as u32 >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        return Ok(sum == 0xffff);
    }
    let words = (l4 - l3) / 2;
    let mut sum: u32 = 0;
    // At most 30 words (60 bytes); the bound keeps the verifier's walk short.
    for i in 0..30usize {
        if i >= words {
            break;
        }
        let word: *const [u8; 2] = ptr_at(ctx, l3 + i * 2)?;
        // SAFETY: ptr_at checked these two bytes are inside the packet.
        sum += u32::from(u16::from_be_bytes(unsafe { *word }));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Ok(sum == 0xffff)
}
