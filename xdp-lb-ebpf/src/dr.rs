//! Direct routing: only the Ethernet addresses change; IP header and payload are
//! untouched, and the real server answers the client itself from the VIP.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use network_types::eth::EthHdr;
use xdp_lb_common::{BackendValue, Reason, ServiceStats};

use crate::{counters, maps::EGRESS, parse::ptr_at_mut, program::Verdict};

#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    backend: &BackendValue,
    stats: Option<*mut ServiceStats>,
) -> Result<Verdict, Verdict> {
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0).map_err(Verdict::pass)?;
    // SAFETY: ptr_at_mut checked that the 14-byte Ethernet header lies inside the
    // packet; the frame starts 2-byte aligned (see `write_macs`).
    unsafe { write_macs(eth as *mut u16, &backend.dst_mac, &backend.src_mac) };
    if backend.ifindex == ctx.ingress_ifindex() as u32 {
        return Ok(Verdict {
            action: xdp_action::XDP_TX,
            reason: Reason::Tx,
        });
    }
    match EGRESS.redirect(backend.ifindex, 0) {
        Ok(action) => Ok(Verdict {
            action,
            reason: Reason::Redirect,
        }),
        Err(_) => {
            counters::bump(stats, |s| &mut s.drop_redirect);
            Err(Verdict::drop(Reason::DropRedirect))
        }
    }
}

/// Writes both MACs as six 16-bit stores. A plain array assignment compiles to two
/// byte-wise `memmove` calls on BPF; the packet start is 2-byte aligned, so half-words
/// are safe and several times cheaper.
///
/// # Safety
///
/// `eth` must point to 12 writable packet bytes, 2-byte aligned: true of an XDP
/// frame's start (drivers leave 256 bytes of headroom and `bpf_xdp_adjust_head` here
/// only moves it by 20) once the caller checked 14 bytes with `ptr_at_mut`.
#[inline(always)]
pub unsafe fn write_macs(eth: *mut u16, dst: &[u8; 6], src: &[u8; 6]) {
    let half = |m: &[u8; 6], i: usize| u16::from_ne_bytes([m[2 * i], m[2 * i + 1]]);
    // SAFETY: six aligned u16 stores within the 12 bytes the caller vouches for.
    unsafe {
        *eth = half(dst, 0);
        *eth.add(1) = half(dst, 1);
        *eth.add(2) = half(dst, 2);
        *eth.add(3) = half(src, 0);
        *eth.add(4) = half(src, 1);
        *eth.add(5) = half(src, 2);
    }
}
