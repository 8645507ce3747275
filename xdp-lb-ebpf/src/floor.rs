//! The benchmark floor: swap the Ethernet addresses and bounce the frame (`XDP_TX`).
//! `cargo xtask bench` times it beside xdp-lb in the same run.
//!
//! Also the veth benchmark's traffic: `xdp_loop`, on the generator's end of a veth
//! pair whose other end runs the program measured, counts each frame that program sent
//! back and, while `LOOP_ON` is set, sends it over again as the next of `GEN_FLOWS`
//! flows: the TCP source port counts through them, and the source address's last two
//! bytes are a hash of the count, so the flows come from scattered clients (as an edge
//! host's do), not from one client's consecutive ports, which a multiplicative hash
//! deals out more evenly than real traffic. A few frames put on the wire once keep
//! going round the loop, in the kernel, until it is turned off.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        macros::{map, xdp},
        maps::{Array, PerCpuArray},
        programs::XdpContext,
    };

    /// How many distinct source ports `xdp_loop` cycles through.
    #[map]
    static GEN_FLOWS: Array<u32> = Array::with_max_entries(1, 0);
    /// Each CPU's position in the cycle.
    #[map]
    static GEN_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
    /// Non-zero: `xdp_loop` sends what comes back out again; zero: it drops it.
    #[map]
    static LOOP_ON: Array<u32> = Array::with_max_entries(1, 0);
    /// Frames `xdp_loop` saw come back (sent on or dropped), per CPU.
    #[map]
    static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
    /// Frames `xdp_loop` dropped (the loop off), per CPU.
    #[map]
    static LOOP_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Ethernet + IPv4 without options: the TCP source port's offset.
    const SPORT: usize = 14 + 20;
    /// The IPv4 header checksum's offset.
    const IP_CHECKSUM: usize = 14 + 10;
    /// The last two bytes of the IPv4 source address.
    const SADDR_LOW: usize = 14 + 14;

    /// murmur3's 32-bit finalizer: consecutive counts to unrelated values.
    #[inline(always)]
    fn scatter(n: u32) -> u16 {
        let mut h = n ^ n >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        (h ^ h >> 16) as u16
    }

    /// RFC 1624's incremental update of a header checksum for one 16-bit word changed
    /// from `old` to `new`: HC' = ~(~HC + ~m + m').
    #[inline(always)]
    fn checksum_after(checksum: u16, old: u16, new: u16) -> u16 {
        let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }

    /// Adds one to this CPU's element of a per-CPU counter.
    #[inline(always)]
    fn bump(counter: &PerCpuArray<u64>) {
        if let Some(count) = counter.get_ptr_mut(0) {
            // SAFETY: this CPU's element of a per-CPU array, from a successful lookup.
            unsafe { *count += 1 };
        }
    }

    #[xdp]
    pub fn xdp_loop(ctx: XdpContext) -> u32 {
        bump(&SINK_COUNT);
        let start = ctx.data();
        if LOOP_ON.get(0).copied().unwrap_or(0) == 0 || start + SPORT + 2 > ctx.data_end() {
            bump(&LOOP_DROPPED);
            return xdp_action::XDP_DROP;
        }
        let flows = GEN_FLOWS.get(0).copied().unwrap_or(1).max(1);
        let Some(next) = GEN_NEXT.get_ptr_mut(0) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: this CPU's element of a per-CPU array, from a successful lookup.
        let n = unsafe {
            let n = *next % flows;
            *next = n + 1;
            n
        };
        let port = (10_000 + n as u16).to_be_bytes();
        let saddr_low = scatter(n);
        // SAFETY: the check above keeps every byte up to the source port's inside the
        // packet (the checksum's and the address's come before it); [u8; 2] has
        // alignment 1.
        unsafe {
            *((start + SPORT) as *mut [u8; 2]) = port;
            let low = (start + SADDR_LOW) as *mut [u8; 2];
            let checksum = (start + IP_CHECKSUM) as *mut [u8; 2];
            let updated = checksum_after(
                u16::from_be_bytes(*checksum),
                u16::from_be_bytes(*low),
                saddr_low,
            );
            *low = saddr_low.to_be_bytes();
            *checksum = updated.to_be_bytes();
        }
        xdp_action::XDP_TX
    }

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
