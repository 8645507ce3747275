//! The benchmark's minimal DR reference: parse Ethernet / IPv4 / TCP, one hash lookup
//! of the (VIP, port), pick a backend by a hash of the client's address and port from
//! an array, rewrite the MACs, `XDP_TX`. No flow table, no counters, no validation:
//! what any XDP DR balancer must at least do. `cargo xtask bench` times xdp-lb against
//! it in the same run.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        macros::{map, xdp},
        maps::{Array, HashMap},
        programs::XdpContext,
    };

    /// (VIP in network order, port in network order, protocol) → (first backend, count).
    #[map]
    static REF_SERVICES: HashMap<u64, [u32; 2]> = HashMap::with_max_entries(64, 0);

    /// Backend MACs (the last two bytes unused).
    #[map]
    static REF_BACKENDS: Array<[u8; 8]> = Array::with_max_entries(64, 0);

    #[xdp]
    pub fn xdp_dr_ref(ctx: XdpContext) -> u32 {
        run(&ctx).unwrap_or(xdp_action::XDP_PASS)
    }

    #[inline(always)]
    fn run(ctx: &XdpContext) -> Option<u32> {
        let (start, end) = (ctx.data(), ctx.data_end());
        // Ethernet (14) + IPv4 without options (20) + TCP ports (4).
        if start + 38 > end {
            return None;
        }
        let p = start as *mut u8;
        // SAFETY: the 38 bytes read below were checked to be in the packet.
        unsafe {
            if *p.add(12) != 0x08 || *p.add(13) != 0x00 || *p.add(14) != 0x45 || *p.add(23) != 6 {
                return None;
            }
            let word = |at: usize| {
                u32::from_ne_bytes([*p.add(at), *p.add(at + 1), *p.add(at + 2), *p.add(at + 3)])
            };
            let (saddr, daddr, ports) = (word(26), word(30), word(34));
            let dport = ports >> 16;
            let key = u64::from(daddr) | u64::from(dport) << 32 | 6u64 << 48;
            let [base, count] = *REF_SERVICES.get(key)?;
            if count == 0 {
                return None;
            }
            let mut h = saddr ^ ports.rotate_left(16);
            h = h.wrapping_mul(0x9e37_79b1);
            h ^= h >> 15;
            let mac = REF_BACKENDS.get(base + h % count)?;
            // Source MAC = the frame's destination (ours), destination = the backend.
            for (i, byte) in mac.iter().take(6).enumerate() {
                *p.add(6 + i) = *p.add(i);
                *p.add(i) = *byte;
            }
        }
        Some(xdp_action::XDP_TX)
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
