//! The benchmark floor: swap the Ethernet addresses and bounce the frame (`XDP_TX`).
//! `cargo xtask bench` times it beside xdp-lb in the same run.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
#![warn(clippy::undocumented_unsafe_blocks)]

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
        // SAFETY: the 14-byte check above keeps both 6-byte arrays inside the packet,
        // which is valid, writable memory for the run; [u8; 6] has alignment 1.
        unsafe {
            let dst = *eth;
            *eth = *eth.add(1);
            *eth.add(1) = dst;
        }
        xdp_action::XDP_TX
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
