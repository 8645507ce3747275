//! The xdp-lb XDP program. It reads as the packet's path: first look (most packets
//! are for no service and leave here) → parse, from where the first look stopped →
//! service lookup (IPv6; the first look found IPv4's) → source filter → flow lookup →
//! (no entry: validation) → schedule → rewrite → pin and count → verdict.
//!
//! Anything that is not a configured, active virtual service goes to the kernel
//! untouched (`XDP_PASS`); every verdict is counted by reason in `GLOBAL_STATS`, but
//! a forwarded packet's, counted on its real server with its traffic.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Every unsafe block says why it is sound (checked by clippy with -D warnings).
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod csum;
#[cfg(target_arch = "bpf")]
mod dr;
#[cfg(target_arch = "bpf")]
mod early;
#[cfg(target_arch = "bpf")]
mod filter;
#[cfg(target_arch = "bpf")]
mod flow_cache;
#[cfg(target_arch = "bpf")]
mod flows;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod persist;
#[cfg(target_arch = "bpf")]
mod schedule;
#[cfg(target_arch = "bpf")]
mod services;
#[cfg(target_arch = "bpf")]
mod tun;
#[cfg(target_arch = "bpf")]
mod validate;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::helpers::bpf_ktime_get_ns;
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
    use xdp_lb_common::{
        ClientHop, FWD_DR, FWD_NAT, FWD_TUN, Reason, SERVICE_F_ACTIVE, SERVICE_F_AGING,
        SERVICE_F_FILTER, SERVICE_F_FILTER_GLOBAL, ServiceValue,
    };

    use crate::{
        counters, dr, early, filter, flow_cache, icmp, nat, parse, persist, schedule, services,
        tun, validate,
    };

    /// A final action together with the reason it is counted under.
    pub struct Verdict {
        pub action: u32,
        pub reason: Reason,
    }

    impl Verdict {
        #[inline(always)]
        pub const fn pass(reason: Reason) -> Self {
            Verdict {
                action: xdp_action::XDP_PASS,
                reason,
            }
        }
        #[inline(always)]
        pub const fn drop(reason: Reason) -> Self {
            Verdict {
                action: xdp_action::XDP_DROP,
                reason,
            }
        }
    }

    #[xdp]
    #[inline(always)]
    pub fn xdp_lb(ctx: XdpContext) -> u32 {
        let verdict = match process(&ctx) {
            Ok(v) | Err(v) => v,
        };
        // A forwarded packet's verdict was counted on its real server (`account`).
        if !verdict.reason.counted_on_real_server() {
            counters::count_reason(verdict.reason);
        }
        verdict.action
    }

    #[inline(always)]
    fn process(ctx: &XdpContext) -> Result<Verdict, Verdict> {
        // Most packets are for no service: they leave after a first look. The parse of
        // the others starts where the first look stopped.
        let (known, found) = match early::look(ctx) {
            early::First::NotService => return Ok(Verdict::pass(Reason::PassNotService)),
            // SAFETY: a value pointer from a successful lookup, valid for the run and
            // read in place, as in `services::lookup`.
            early::First::Service(svc, at) => (Some(at), Some(unsafe { &*svc })),
            early::First::MaybeReply(at) => (Some(at), None),
            early::First::Other => (None, None),
        };
        let looked_up = known.is_some();
        let pkt = parse::parse(ctx, known).map_err(Verdict::pass)?;
        // ICMP is parsed only for the errors real servers need (path MTU).
        if pkt.flow.proto == icmp::IPPROTO_ICMP || pkt.flow.proto == icmp::IPPROTO_ICMPV6 {
            return icmp::forward(ctx, &pkt);
        }
        // The first look found every IPv4 TCP/UDP packet's service (from the same
        // header bytes); only the others (IPv6) are looked up here.
        let found = if looked_up {
            found
        } else {
            services::lookup_v6(&pkt.flow)
        };
        let svc = match found {
            Some(svc) => svc,
            None => {
                // Only a packet from a port NAT real servers answer from pays for the
                // reply lookup (and the clock, on a hit).
                if nat::may_be_reply(pkt.flow.sport_be)
                    && let Some(verdict) = nat::reply(ctx, &pkt)
                {
                    return verdict;
                }
                return Ok(Verdict::pass(Reason::PassNotService));
            }
        };
        let stats = counters::service(svc.id);
        if svc.flags & SERVICE_F_ACTIVE == 0 {
            counters::bump(stats, |s| &mut s.pass_inactive);
            return Ok(Verdict::pass(Reason::PassInactive));
        }
        // The source filter, before anything costlier: a denied source is dropped here.
        // A service without rules (and no global deny list) pays this one flag test.
        if svc.flags & (SERVICE_F_FILTER | SERVICE_F_FILTER_GLOBAL) != 0
            && filter::denies(&pkt.flow.src, pkt.ipv4, svc.flags, filter::scope_of(svc))
        {
            return Err(Verdict::drop(Reason::DropFiltered));
        }
        let (chosen, now, clock) = match flow_cache::lookup(&pkt, svc).and_then(schedule::cached) {
            // An established flow this CPU forwarded, its pin cached: nothing to
            // validate (as with a flow-table hit), no clock (its service does not age).
            Some(chosen) => (chosen, 0, 0),
            None => established_or_new(ctx, &pkt, svc, stats)?,
        };
        // SAFETY: `chosen.backend` comes from a successful lookup in the BACKEND_VALUES
        // array, whose values live as long as the map (so the whole run), and is only
        // read. Userspace never writes an entry that an id points to, nor one replaced
        // less than a grace period (50 ms) ago, so it does not change under us.
        let backend = unsafe { &*chosen.backend };
        // A NAT flow's entry records the way back to its client.
        let mut client = ClientHop::default();
        let verdict = match svc.forwarding {
            FWD_DR => dr::forward(ctx, backend, stats),
            FWD_NAT => nat::forward(ctx, &pkt, backend, svc.id, stats, now, &chosen, &mut client),
            FWD_TUN => tun::forward(ctx, &pkt, backend, stats),
            _ => Err(Verdict::drop(Reason::DropBadBackend)),
        }?;
        // Only now did the packet really leave for this real server: pin its flow and
        // count it. A pass or drop on the way (too big, no redirect target) returned
        // above and counts only under its reason.
        schedule::commit(&pkt, svc, &chosen, stats, now, &client);
        // A flow the flood guard left unpinned (a spoofed SYN, most likely) is counted
        // as unpinned, not as a new flow: nothing would ever count its end, and lc and
        // wlc take a real server's new flows minus its closed ones as its active
        // connections. A real connection's ACK pins it, and counts it then, once.
        let new_flow = chosen.new_flow && schedule::admitted();
        if svc.persist_secs != 0 {
            // Nor is it a client to remember; it only refreshes an entry, as a known
            // flow does.
            persist::remember(svc, &pkt.flow.src, chosen.backend_id, new_flow, clock);
        }
        let redirected = verdict.reason == Reason::Redirect;
        counters::account(chosen.backend_id, pkt.len, new_flow, redirected);
        Ok(verdict)
    }

    /// The pick of a packet the flow cache did not answer: its flow-table entry, or a
    /// new pick; with the time for aging flows (`now`, 0 for others) and for a
    /// persistent service's memory of its clients (`clock`).
    #[inline(always)]
    fn established_or_new(
        ctx: &XdpContext,
        pkt: &parse::Packet,
        svc: &ServiceValue,
        stats: counters::ServiceCounters,
    ) -> Result<(schedule::Chosen, u64, u64), Verdict> {
        // Only well-formed packets from possible clients get a flow entry: a packet of
        // a flow in the table is not checked again (see `validate` for why), unless
        // it opens a new connection in its place.
        let entry = schedule::entry(pkt, svc);
        // SAFETY: a value pointer from a successful lookup, valid for the run; read
        // in place (a racing update changes whole aligned words, see `select`).
        if entry.is_none_or(|e| schedule::reopens(pkt, unsafe { &*e })) {
            validate::check(ctx, pkt).map_err(Verdict::pass)?;
        }
        // NAT flows age, and those of services that count connections (lc, wlc); other
        // DR and TUN flows only leave by LRU eviction and skip the clock.
        let ages = svc.forwarding == FWD_NAT || svc.flags & SERVICE_F_AGING != 0;
        let clock = if ages || svc.persist_secs != 0 {
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        };
        let now = if ages { clock } else { 0 };
        Ok((
            schedule::select(pkt, svc, entry, stats, now, clock)?,
            now,
            clock,
        ))
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Host builds (`cargo build --workspace`) compile this stub instead of the program.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
