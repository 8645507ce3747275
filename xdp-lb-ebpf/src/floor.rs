//! Helper programs beside the load balancer:
//! - `xdp_floor`, the benchmark floor: swap the Ethernet addresses and bounce the frame
//!   (`XDP_TX`); `cargo xtask bench` times it beside xdp-lb in the same run.
//! - `xdp_pass`, for test labs: a veth only flushes frames another veth sent it with
//!   `XDP_TX` when it has an XDP program of its own, so lab peers get this one.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

    #[xdp]
    pub fn xdp_floor(ctx: XdpContext) -> u32 {
        let start = ctx.data();
        if start + 14 > ctx.data_end() {
            return xdp_action::XDP_PASS;
        }
        let eth = start as *mut [u8; 6];
        // SAFETY: 14 bytes checked above.
        unsafe {
            let dst = *eth;
            *eth = *eth.add(1);
            *eth.add(1) = dst;
        }
        xdp_action::XDP_TX
    }

    #[xdp]
    pub fn xdp_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
