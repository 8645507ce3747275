//! Direct routing: only the Ethernet addresses change; IP header and payload are
//! untouched, and the real server answers the client itself from the VIP.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use core::mem::offset_of;
use network_types::eth::EthHdr;
use xdp_lb_common::{BackendValue, Reason};

use crate::{counters, maps::EGRESS, parse::ptr_at_mut, program::Verdict};

#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    backend: &BackendValue,
    stats: counters::ServiceCounters,
) -> Result<Verdict, Verdict> {
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0).map_err(Verdict::pass)?;
    // SAFETY: ptr_at_mut checked that the 14-byte Ethernet header lies inside the
    // packet; the frame starts 2-byte aligned (see `write_macs`).
    unsafe { write_macs(eth as *mut u16, backend_mac_words(backend)) };
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

/// The backend's next-hop and own MACs, in frame order, as six half-word loads (its
/// 12 bytes of byte arrays would be read one by one and shifted together).
#[inline(always)]
fn backend_mac_words(backend: &BackendValue) -> [u16; 6] {
    const DST: usize = offset_of!(BackendValue, dst_mac);
    const _: () = assert!(
        DST.is_multiple_of(2) && offset_of!(BackendValue, src_mac) == DST + 6,
        "the two MACs must be 12 contiguous bytes at an even offset"
    );
    let p = (backend as *const BackendValue as *const u8).wrapping_add(DST) as *const u16;
    // SAFETY: the 12 bytes at DST are the two MACs of `backend` (asserted above), at
    // an even offset of a struct aligned to 4 (it holds u32 fields), so the loads are
    // aligned and inside the value.
    unsafe { [*p, *p.add(1), *p.add(2), *p.add(3), *p.add(4), *p.add(5)] }
}

/// A destination and a source MAC held as byte arrays (of unknown alignment), in
/// frame order as the half-words [`write_macs`] stores.
#[inline(always)]
pub fn mac_words(dst: &[u8; 6], src: &[u8; 6]) -> [u16; 6] {
    let half = |m: &[u8; 6], i: usize| u16::from_ne_bytes([m[2 * i], m[2 * i + 1]]);
    [
        half(dst, 0),
        half(dst, 1),
        half(dst, 2),
        half(src, 0),
        half(src, 1),
        half(src, 2),
    ]
}

/// Writes both MACs (`words`, in frame order) as six 16-bit stores. A plain array
/// assignment compiles to two byte-wise `memmove` calls on BPF; the packet start is
/// 2-byte aligned, so half-words are safe and several times cheaper.
///
/// # Safety
///
/// `eth` must point to 12 writable packet bytes, 2-byte aligned: true of an XDP
/// frame's start (drivers leave 256 bytes of headroom and `bpf_xdp_adjust_head` here
/// only moves it by 20) once the caller checked 14 bytes with `ptr_at_mut`.
#[inline(always)]
pub unsafe fn write_macs(eth: *mut u16, words: [u16; 6]) {
    for (i, word) in words.into_iter().enumerate() {
        // SAFETY: six aligned u16 stores within the 12 bytes the caller vouches for.
        unsafe { *eth.add(i) = word };
    }
}
