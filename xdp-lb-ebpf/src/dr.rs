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
    // SAFETY: bounds checked by ptr_at_mut.
    unsafe {
        (*eth).dst_addr = backend.dst_mac;
        (*eth).src_addr = backend.src_mac;
    }
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
            counters::bump(stats.map(|s| unsafe { &mut (*s).drop_redirect }));
            Err(Verdict::drop(Reason::DropRedirect))
        }
    }
}
