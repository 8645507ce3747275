//! NAT forwarding (IPv4 and IPv6): client → VIP:port becomes client → real server
//! ip:port, and the real server's replies become VIP:port → client again, with
//! incremental checksum updates (IPv4: the header's and TCP/UDP's; IPv6: TCP/UDP's only,
//! whose pseudo-header holds the 16-byte addresses). The reply map remembers how to
//! undo the translation and where the client is (its next-hop MAC and our interface),
//! so replies need nothing from userspace. A new flow writes only its flow entry (with
//! the client's hop): the flow's first reply finds it through `NAT_ORIGINS` and
//! writes the reply entry, so a connection that is never answered costs one insert.
//! Entries carry a coarse last-seen time; the daemon deletes idle ones. Each IP
//! version has its reply map, as it has its flow map (see `flows`). A flow the flood
//! guard forwarded without an entry is answered all the same: its server is the one
//! its hash picks, and the way to its client is the kernel's FIB's (`unpinned_reply`).
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action, xdp_md},
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};
use xdp_lb_common::{
    BACKEND_F_NAT_EAGER, BackendValue, CONFIG_TIMEOUT_TCP_FIN_NS, CONFIG_TIMEOUT_TCP_NS,
    CONFIG_TIMEOUT_UDP_NS, ClientHop, FLOW_F_CLOSING, FWD_NAT, FlowKey, FlowValue, IPPROTO_TCP,
    LAST_SEEN_GRANULARITY_NS, NAT_ORIGIN_VIPS, NatOrigin, NatOriginVip, NatValue, Reason,
    SERVICE_F_ACTIVE, ServiceKey,
};

use crate::{
    csum::{replace16, replace32},
    dr, flows,
    maps::{
        ANSWERED_VIP, CONFIG, EGRESS, FIB_QUERY, NAT_ORIGINS, NAT_PORTS, NAT_REPLIES,
        NAT_REPLIES_V4, SCHEDULE,
    },
    parse::{Packet, TCP_FIN, TCP_RST, ptr_at_mut},
    program::Verdict,
    schedule::{self, Chosen},
};

/// Which end of the packet the rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Src,
    Dst,
}

/// Translates a client's packet towards `backend` and forwards it like DR does, and
/// fills `client` with the way back (for the flow entry, which the first reply writes
/// the reply entry from). A backend flagged `BACKEND_F_NAT_EAGER` (whose replies
/// cannot find their flow) gets its reply entry here instead: when the pick
/// (`chosen`) is a new flow or refreshed its entry, once the packet has left. A flow
/// the flood guard left unpinned gets a new one only within the guard's budget.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &BackendValue,
    service: u32,
    stats: crate::counters::ServiceCounters,
    now: u64,
    chosen: &Chosen,
    client: &mut ClientHop,
) -> Result<Verdict, Verdict> {
    // The client's side of the frame, read before the rewrite replaces the MACs.
    let eth: *const EthHdr = crate::parse::ptr_at(ctx, 0).map_err(Verdict::pass)?;
    // SAFETY: ptr_at checked that the whole header lies inside the packet, which is
    // valid memory for the run; its fields are byte arrays (alignment 1), read by value.
    let (client_mac, lb_mac) = unsafe { ((*eth).src_addr, (*eth).dst_addr) };
    if pkt.ipv4 {
        let addr = [
            backend.addr[12],
            backend.addr[13],
            backend.addr[14],
            backend.addr[15],
        ];
        rewrite_v4(ctx, pkt, End::Dst, addr, backend.port_be).map_err(Verdict::pass)?;
    } else {
        let how = v6_how(pkt, End::Dst);
        rewrite_v6(ctx.ctx, pkt.l3, how, backend.addr.as_ptr(), backend.port_be)
            .map_err(Verdict::pass)?;
    }
    let verdict = dr::forward(ctx, backend, stats)?;
    *client = ClientHop {
        mac: client_mac,
        lb_mac,
        ifindex: ctx.ingress_ifindex() as u32,
    };
    // Only a packet that left can be answered: no reply entry for a dropped one.
    if chosen.refreshed && backend.flags & BACKEND_F_NAT_EAGER != 0 {
        if chosen.new_flow && !schedule::admitted() {
            remember_unpinned_reply(pkt, backend, service, now, client);
        } else {
            remember_reply(pkt, backend, service, now, client, chosen.new_flow);
        }
    }
    Ok(verdict)
}

/// Creates or refreshes the reply entry of this flow.
#[inline(always)]
fn remember_reply(
    pkt: &Packet,
    backend: &BackendValue,
    service: u32,
    now: u64,
    client: &ClientHop,
    new_flow: bool,
) {
    let reply = reply_key(pkt, backend);
    // A new flow's entry is written whole (replacing any left by an earlier connection
    // of the same 5-tuple): no lookup first.
    let found = if new_flow {
        None
    } else {
        flows::get_in(&NAT_REPLIES_V4, &NAT_REPLIES, &reply, pkt.ipv4)
    };
    match found {
        // SAFETY: a value pointer from a successful lookup stays valid for the run
        // (elements are freed after an RCU grace period); a concurrent update of the
        // same entry by another CPU can only lose a refresh of these aligned words.
        Some(entry) => refresh_reply(unsafe { &mut *entry }, pkt, now),
        None => write_reply(pkt, &reply, service, now, client),
    }
}

/// `remember_reply` for a flow the flood guard left unpinned (a SYN during a flood,
/// most likely spoofed): it refreshes an entry it already has (rewrites it, if
/// another VIP's), and gets a new one only with a token of the guard's reply budget.
/// So a flood turns the reply table over no faster than the budget allows, instead
/// of in about a second; an established flow whose entry went gets it back from its
/// client's next packet that refreshes its flow entry (one a second, while it sends).
/// A real connection whose SYN got none has its SYN-ACK go to the kernel
/// untranslated, and gets one when a retransmitted SYN finds a token (or with any
/// later packet the guard pins from its budget of other packets).
#[inline(always)]
fn remember_unpinned_reply(
    pkt: &Packet,
    backend: &BackendValue,
    service: u32,
    now: u64,
    client: &ClientHop,
) {
    let reply = reply_key(pkt, backend);
    if let Some(entry) = flows::get_in(&NAT_REPLIES_V4, &NAT_REPLIES, &reply, pkt.ipv4) {
        // SAFETY: as in `remember_reply`.
        let entry = unsafe { &mut *entry };
        if is_reply_of(entry, pkt, service) {
            refresh_reply(entry, pkt, now);
            return;
        }
        // Another VIP's connection from the same client port, which this one ends at
        // the real server: replaced, in its place.
    } else if !schedule::reply_budget(now) {
        return;
    }
    write_reply(pkt, &reply, service, now, client);
}

/// The reply key of `pkt`'s flow forwarded to `backend`: how its replies come.
#[inline(always)]
fn reply_key(pkt: &Packet, backend: &BackendValue) -> FlowKey {
    FlowKey {
        src: backend.addr,
        dst: pkt.flow.src,
        sport_be: backend.port_be,
        dport_be: pkt.flow.sport_be,
        proto: pkt.flow.proto,
        _pad: [0; 3],
    }
}

/// Refreshes the reply entry of `pkt`'s flow: its last-seen time, and a FIN or RST.
#[inline(always)]
fn refresh_reply(entry: &mut NatValue, pkt: &Packet, now: u64) {
    touch(
        &mut entry.last_seen_ns,
        &mut entry.flags,
        now,
        closing_flag(pkt.tcp_flags),
    );
}

/// Writes the whole reply entry of `pkt`'s flow under `reply`.
#[inline(always)]
fn write_reply(pkt: &Packet, reply: &FlowKey, service: u32, now: u64, client: &ClientHop) {
    let entry = reply_entry(
        &pkt.flow.dst,
        pkt.flow.dport_be,
        client,
        service,
        now,
        closing_flag(pkt.tcp_flags),
    );
    // A full LRU evicts the oldest entry; losing one only loses that reply path.
    flows::insert_in(&NAT_REPLIES_V4, &NAT_REPLIES, reply, pkt.ipv4, &entry);
}

/// Whether reply entry `entry` is this packet's flow's (`service`, VIP and port): an
/// entry of an earlier connection of the same client port to another VIP of the
/// real server would translate its replies wrongly.
#[inline(always)]
fn is_reply_of(entry: &NatValue, pkt: &Packet, service: u32) -> bool {
    const _: () = assert!(
        core::mem::offset_of!(NatValue, vip) == 0
            && align_of::<NatValue>() >= 4
            && core::mem::offset_of!(FlowKey, dst) % 4 == 0
            && align_of::<FlowKey>() >= 4
    );
    entry.service == service
        && entry.vport_be == pkt.flow.dport_be
        // SAFETY: 16 readable bytes each, 4-aligned (above).
        && unsafe { same_addr(entry.vip.as_ptr(), pkt.flow.dst.as_ptr()) }
}

/// Whether the 16-byte addresses at `a` and `b` are equal, compared a word at a time:
/// as byte arrays the compiler loads all 32 bytes one by one (BPF has no unaligned
/// loads), and keeps and spills a packet's 16.
///
/// # Safety
///
/// `a` and `b` each point to 16 readable bytes at a 4-aligned address (callers assert
/// the layout of the structs they come from).
#[inline(always)]
unsafe fn same_addr(a: *const u8, b: *const u8) -> bool {
    // SAFETY: by the caller's contract, read as plain integers.
    let (a, b) = unsafe { (&*(a as *const [u32; 4]), &*(b as *const [u32; 4])) };
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// The reply entry of a flow to `vip`:`vport_be` whose client is at `client`.
#[inline(always)]
fn reply_entry(
    vip: &[u8; 16],
    vport_be: u16,
    client: &ClientHop,
    service: u32,
    now: u64,
    flags: u16,
) -> NatValue {
    NatValue {
        vip: *vip,
        vport_be,
        _pad: [0; 2],
        client: *client,
        _pad2: 0,
        last_seen_ns: now,
        flags,
        _pad3: 0,
        service,
    }
}

/// Whether a packet from `sport_be` may be a NAT real server's reply: its port's bit
/// in `NAT_PORTS`. One array read instead of hashing the 40-byte reply key, for every
/// packet of the host that is not for a VIP.
#[inline(always)]
pub fn may_be_reply(sport_be: u16) -> bool {
    let port = u32::from(u16::from_be(sport_be));
    NAT_PORTS
        .get(port >> 6)
        .is_some_and(|word| *word & (1u64 << (port & 63)) != 0)
}

/// A real server's reply to a NAT flow, translated back; `None` if it is not one.
/// The reply entry says how; a flow's first reply has none yet and finds its flow
/// instead (see `first_reply`), then writes the entry.
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &Packet) -> Option<Result<Verdict, Verdict>> {
    let entry = flows::get_in(&NAT_REPLIES_V4, &NAT_REPLIES, &pkt.flow, pkt.ipv4);
    // The clock only for a reply: every other packet of the host passes without it.
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // An entry idle past its timeout is no answer: only replies refresh it, so its
    // flow may still be live (a server quiet for long), and is looked for below.
    // SAFETY: as in `remember_reply`: valid for the run; the fields used are copied
    // out below, and a racing writer can only lose a refresh of aligned words.
    let live = entry
        .map(|e| unsafe { &mut *e })
        .filter(|nat| !expired(nat.last_seen_ns, nat.flags, pkt.flow.proto, now));
    let closing = closing_flag(pkt.tcp_flags);
    let (vip, vport, client) = match live {
        Some(nat) => {
            // A known reply is not checked again (see `validate`): the first one was.
            touch(&mut nat.last_seen_ns, &mut nat.flags, now, closing);
            (nat.vip.as_ptr(), nat.vport_be, nat.client)
        }
        None => {
            let origin = origin_of(pkt)?;
            let pinned = first_reply(pkt, origin, now);
            if pinned.is_none() && !unpinned_reply(pkt, origin, now) {
                return None;
            }
            let vip = answered_vip(origin)?;
            // A reply is forwarded too: only a well-formed one from a possible source
            // gets a reply entry, or is translated without one.
            if let Err(reason) = crate::validate::check(ctx, pkt) {
                return Some(Err(Verdict::pass(reason)));
            }
            let client = match pinned {
                Some(flow) => {
                    let entry = reply_entry(
                        &vip.vip,
                        vip.vport_be,
                        &flow.client,
                        vip.service,
                        now,
                        closing,
                    );
                    // Written before the packet leaves, so its next reply takes the
                    // short way; should the send fail, the entry only ages out.
                    flows::insert_in(&NAT_REPLIES_V4, &NAT_REPLIES, &pkt.flow, pkt.ipv4, &entry);
                    flow.client
                }
                // No reply entry: a flood's answers would fill the table, and the
                // client's next packet pins the flow, which the next reply then finds.
                None => {
                    let mut client = ClientHop::default();
                    if let Err(reason) =
                        client_hop(ctx.ctx, pkt, vip.vip.as_ptr(), vip.vport_be, &mut client)
                    {
                        return Some(Err(Verdict::pass(reason)));
                    }
                    client
                }
            };
            (vip.vip.as_ptr(), vip.vport_be, client)
        }
    };
    let rewritten = if pkt.ipv4 {
        // SAFETY: `vip` points to a map value's 16-byte address (the reply entry's or
        // the origin's), valid for the run.
        let v4 = unsafe { [*vip.add(12), *vip.add(13), *vip.add(14), *vip.add(15)] };
        rewrite_v4(ctx, pkt, End::Src, v4, vport)
    } else {
        // The VIP is read from the map value by the callee: no 16-byte copy on our stack.
        let how = v6_how(pkt, End::Src);
        rewrite_v6(ctx.ctx, pkt.l3, how, vip, vport)
    };
    if let Err(reason) = rewritten {
        return Some(Err(Verdict::pass(reason)));
    }
    Some(send_reply(ctx, &client.mac, &client.lb_mac, client.ifindex))
}

/// The VIPs the reply's source answers for, if it is a NAT real server
/// (`NAT_ORIGINS`).
#[inline(always)]
fn origin_of(pkt: &Packet) -> Option<&'static NatOrigin> {
    let origin_key = ServiceKey {
        addr: pkt.flow.src,
        port_be: pkt.flow.sport_be,
        proto: pkt.flow.proto,
        _pad: 0,
    };
    let key_ref = &origin_key;
    // SAFETY: a value from a successful lookup, valid for the run; the daemon replaces
    // an origin whole (one map update), and each candidate is checked by the callers.
    unsafe { NAT_ORIGINS.get(key_ref) }
}

/// A reply without a reply entry: the flow it answers, found from the VIPs its real
/// server answers for (`origin`). The client's flow to each is looked up; the one
/// pinned (live, by NAT) to this very real server is the reply's, and its VIP is
/// recorded (see `answered_vip`). `None` if none is: the packet is not a NAT reply,
/// its flow is gone, or it has none (see `unpinned_reply`).
#[inline(always)]
fn first_reply(pkt: &Packet, origin: &'static NatOrigin, now: u64) -> Option<&'static FlowValue> {
    for i in 0..NAT_ORIGIN_VIPS {
        if i as u32 >= origin.count {
            break;
        }
        let vip = &origin.vips[i];
        let forward = forward_flow(pkt, vip);
        let Some(flow) = flows::pinned(&forward, pkt.ipv4) else {
            continue;
        };
        // SAFETY: as in `reply`: valid for the run, only read.
        let flow: &'static FlowValue = unsafe { &*flow };
        if u32::from(flow.service) == vip.service
            && flow.client.ifindex != 0
            && !expired(flow.last_seen_ns, flow.flags, pkt.flow.proto, now)
            && crate::schedule::backend(flow.backend).is_some_and(|b| answers(pkt, b))
            && record_answered(i)
        {
            return Some(flow);
        }
    }
    None
}

/// A reply without a pinned flow, while the flood guard is on: its flow may be one
/// the guard forwarded without an entry. It is, for the first VIP of `origin` whose
/// service would send it to this very real server (`sent_unpinned`), which is
/// recorded (see `answered_vip`); `false` if none would, or the guard is off (every
/// NAT flow is pinned then). (A client's one port to two VIPs of one real server
/// would be one connection at that server: which VIP comes first cannot matter.)
#[inline(always)]
fn unpinned_reply(pkt: &Packet, origin: &'static NatOrigin, now: u64) -> bool {
    if crate::schedule::guard_rate() == 0 {
        return false;
    }
    for i in 0..NAT_ORIGIN_VIPS {
        if i as u32 >= origin.count {
            break;
        }
        let vip = &origin.vips[i];
        if sent_unpinned(pkt, &forward_flow(pkt, vip), vip, now) {
            return record_answered(i);
        }
    }
    false
}

/// Records that the reply answers its origin's VIP `index` (in `ANSWERED_VIP`);
/// whether it could.
#[inline(always)]
fn record_answered(index: usize) -> bool {
    let Some(slot) = ANSWERED_VIP.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's copy from a successful per-CPU array lookup, written and read
    // by this run only (see `counters::bump`).
    unsafe { *slot = index as u32 };
    true
}

/// The VIP of `origin` that [`record_answered`] recorded. Read back from the map, the
/// index is a value the verifier does not know, so it walks the translation after
/// this once, not once for each VIP it could be.
#[inline(always)]
fn answered_vip(origin: &'static NatOrigin) -> Option<&'static NatOriginVip> {
    // SAFETY: as in `record_answered`.
    let index = unsafe { *ANSWERED_VIP.get_ptr(0)? };
    origin.vips.get(index as usize)
}

/// The client's flow to `vip` that the reply `pkt` would answer.
#[inline(always)]
fn forward_flow(pkt: &Packet, vip: &NatOriginVip) -> FlowKey {
    FlowKey {
        src: pkt.flow.dst,
        dst: vip.vip,
        sport_be: pkt.flow.dport_be,
        dport_be: vip.vport_be,
        proto: pkt.flow.proto,
        _pad: [0; 3],
    }
}

/// Whether `pkt` comes from `backend`: its address and port (see `same_addr`).
#[inline(always)]
fn answers(pkt: &Packet, backend: &BackendValue) -> bool {
    // Both addresses open 4-aligned structs (asserted below).
    const _: () = assert!(
        core::mem::offset_of!(BackendValue, addr) == 0
            && align_of::<BackendValue>() >= 4
            && core::mem::offset_of!(FlowKey, src) == 0
            && align_of::<FlowKey>() >= 4
    );
    backend.port_be == pkt.flow.sport_be
        // SAFETY: 16 readable bytes each, 4-aligned (above).
        && unsafe { same_addr(backend.addr.as_ptr(), pkt.flow.src.as_ptr()) }
}

/// Whether `vip`'s service would send `forward`, the flow the reply `pkt` answers, to
/// `pkt`'s source without a flow entry: by the flow's hash (`schedule::hashed_slot`,
/// as the flood guard picks), or by a persistent service's memory of the client. Not
/// inlined: the keys it builds get a frame of their own, off the entry's (see
/// `rewrite_v6`), and it reads the flow's words through the pointer.
#[inline(never)]
fn sent_unpinned(pkt: &Packet, forward: &FlowKey, vip: &NatOriginVip, now: u64) -> bool {
    let Some(svc) = crate::services::lookup(forward, pkt.ipv4) else {
        return false;
    };
    if svc.id != vip.service
        || svc.forwarding != FWD_NAT
        || svc.flags & SERVICE_F_ACTIVE == 0
        || svc.sched_len == 0
    {
        return false;
    }
    let hashed = SCHEDULE
        .get(svc.sched_base + crate::schedule::hashed_slot(forward, svc))
        .and_then(|id| crate::schedule::backend(*id));
    if hashed.is_some_and(|b| answers(pkt, b)) {
        return true;
    }
    svc.persist_secs != 0
        && crate::persist::remembered(svc, &forward.src, now)
            // SAFETY: a backend value pointer from `remembered`'s successful lookup,
            // valid for the run and only read.
            .is_some_and(|(_, remembered)| answers(pkt, unsafe { &*remembered }))
}

/// The way to the client of a reply translated without a reply entry: the kernel's
/// FIB lookup from the VIP (`vip`, 16 bytes in a map value; `vport_be`) to the client,
/// as the kernel would forward it, into `hop`. The query lives in a map (`FIB_QUERY`):
/// the entry's frame leaves no room for its 64 bytes.
#[inline(never)]
fn client_hop(
    ctx: *mut xdp_md,
    pkt: &Packet,
    vip: *const u8,
    vport_be: u16,
    hop: &mut ClientHop,
) -> Result<(), Reason> {
    let ctx = XdpContext::new(ctx);
    let query = FIB_QUERY.get_ptr_mut(0).ok_or(Reason::PassNoClientHop)?;
    // SAFETY: this CPU's copy from a successful per-CPU array lookup, used by this run
    // only (see `counters::bump`); `vip` points to 16 readable bytes (see above); the
    // query's fields are plain integers, each union written whole.
    unsafe {
        let q = &mut *query;
        *q = core::mem::zeroed();
        q.l4_protocol = pkt.flow.proto;
        q.sport = vport_be;
        q.dport = pkt.flow.dport_be;
        q.ifindex = ctx.ingress_ifindex() as u32;
        let word = |p: *const u8, i: usize| {
            u32::from_ne_bytes([
                *p.add(4 * i),
                *p.add(4 * i + 1),
                *p.add(4 * i + 2),
                *p.add(4 * i + 3),
            ])
        };
        let client = pkt.flow.dst.as_ptr();
        if pkt.ipv4 {
            q.family = AF_INET;
            q.__bindgen_anon_3.ipv4_src = word(vip, 3);
            q.__bindgen_anon_4.ipv4_dst = word(client, 3);
        } else {
            q.family = AF_INET6;
            q.__bindgen_anon_3.ipv6_src = [word(vip, 0), word(vip, 1), word(vip, 2), word(vip, 3)];
            q.__bindgen_anon_4.ipv6_dst = [
                word(client, 0),
                word(client, 1),
                word(client, 2),
                word(client, 3),
            ];
        }
        // The helper reads and writes the query, whose size is passed.
        let rc = bpf_fib_lookup(ctx.ctx as *mut _, q, size_of::<bpf_fib_lookup>() as i32, 0);
        if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
            return Err(Reason::PassNoClientHop);
        }
        *hop = ClientHop {
            mac: q.dmac,
            lb_mac: q.smac,
            ifindex: q.ifindex,
        };
    }
    Ok(())
}

/// `AF_INET` and `AF_INET6`, as the FIB lookup takes them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Sends a translated reply to the client: its next hop's MAC, out of the interface
/// the client's packets came in by.
#[inline(always)]
fn send_reply(
    ctx: &XdpContext,
    client_mac: &[u8; 6],
    lb_mac: &[u8; 6],
    ifindex: u32,
) -> Result<Verdict, Verdict> {
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0).map_err(Verdict::pass)?;
    // SAFETY: ptr_at_mut checked the 14-byte Ethernet header; the frame starts 2-byte
    // aligned (see `dr::write_macs`).
    unsafe { dr::write_macs(eth as *mut u16, dr::mac_words(client_mac, lb_mac)) };
    if ifindex == ctx.ingress_ifindex() as u32 {
        return Ok(Verdict {
            action: xdp_action::XDP_TX,
            reason: Reason::NatReply,
        });
    }
    match EGRESS.redirect(ifindex, 0) {
        Ok(action) => Ok(Verdict {
            action,
            reason: Reason::NatReply,
        }),
        Err(_) => Err(Verdict::drop(Reason::DropRedirect)),
    }
}

/// Rewrites one end's IPv4 address and port, updating the IP and L4 checksums.
#[inline(always)]
fn rewrite_v4(
    ctx: &XdpContext,
    pkt: &Packet,
    end: End,
    addr: [u8; 4],
    port_be: u16,
) -> Result<(), Reason> {
    let ip: *mut Ipv4Hdr = ptr_at_mut(ctx, pkt.l3)?;
    // SAFETY: ptr_at_mut checked that the IPv4 header lies inside the packet (valid,
    // writable memory for the run); its fields are byte arrays (alignment 1).
    let old_addr = unsafe {
        let old = if end == End::Dst {
            (*ip).dst_addr
        } else {
            (*ip).src_addr
        };
        (*ip).check = replace32(u16::from_be_bytes((*ip).check), old, addr).to_be_bytes();
        if end == End::Dst {
            (*ip).dst_addr = addr;
        } else {
            (*ip).src_addr = addr;
        }
        old
    };
    let new_port = u16::from_be(port_be);
    if pkt.flow.proto == IPPROTO_TCP {
        let tcp: *mut TcpHdr = ptr_at_mut(ctx, pkt.l4)?;
        // SAFETY: ptr_at_mut checked the TCP header; byte-array fields, and the one
        // reference made (`field`) is the only access to those two bytes meanwhile.
        unsafe {
            let field = if end == End::Dst {
                &mut (*tcp).dest
            } else {
                &mut (*tcp).source
            };
            let old_port = u16::from_be_bytes(*field);
            *field = new_port.to_be_bytes();
            let c = replace32(u16::from_be_bytes((*tcp).check), old_addr, addr);
            (*tcp).check = replace16(c, old_port, new_port).to_be_bytes();
        }
    } else {
        let udp: *mut UdpHdr = ptr_at_mut(ctx, pkt.l4)?;
        // SAFETY: as for TCP above, with the UDP header.
        unsafe {
            let field = if end == End::Dst {
                &mut (*udp).dst
            } else {
                &mut (*udp).src
            };
            let old_port = u16::from_be_bytes(*field);
            *field = new_port.to_be_bytes();
            let check = u16::from_be_bytes((*udp).check);
            // 0 means "no checksum" for UDP over IPv4: keep it that way.
            if check != 0 {
                let c = replace16(replace32(check, old_addr, addr), old_port, new_port);
                // A computed 0 is sent as 0xffff (RFC 768).
                (*udp).check = if c == 0 { 0xffff } else { c }.to_be_bytes();
            }
        }
    }
    Ok(())
}

/// `rewrite_v6`'s second argument: the L4 protocol and which end changes, in one
/// register (a BPF-to-BPF call takes at most five).
#[inline(always)]
fn v6_how(pkt: &Packet, end: End) -> u32 {
    u32::from(pkt.flow.proto) | if end == End::Dst { V6_DST } else { 0 }
}

const V6_DST: u32 = 1 << 8;

/// Rewrites one end's IPv6 address (to the 16 bytes at `addr`) and port (`port_be`,
/// network order), and updates the TCP or UDP checksum for both: IPv6 has no header
/// checksum, but the addresses are part of the L4 checksum's pseudo-header. `how` is
/// [`v6_how`]'s; `l3` the IPv6 header's offset (the TCP/UDP header follows it: the
/// parser passes no extension header).
///
/// RFC 1624's update, HC' = ~(~HC + Σ~m + Σm'), over the eight address words and the
/// port. The sum is taken on the words as they lie in memory (native order): a one's
/// complement sum commutes with swapping the bytes of every word (RFC 1071), so the
/// result, stored back the same way, is right on either endianness without a swap.
/// UDP over IPv6 must carry a checksum (RFC 8200 §8.1): a datagram that arrives with
/// 0 cannot be updated and goes to the kernel (which drops it), and a computed 0 is
/// sent as 0xffff.
///
/// Not inlined, on purpose: the entry's frame is at the limit (see `filter::denies`),
/// and a call gets a frame of its own (this one needs none); the verifier walks it
/// once per call site (the forward path and the reply path). `addr` points into a map
/// value (the backend, or the reply entry's VIP), so no address is copied to a stack;
/// it is a raw pointer on purpose: as a `&[u8; 16]` (which nothing may write) the
/// compiler loads all 16 bytes and the 8 packet words first and spills them (a
/// 144-byte frame); as a pointer that may alias the packet, each word is read,
/// summed and written in turn, in registers.
#[inline(never)]
fn rewrite_v6(
    ctx: *mut xdp_md,
    l3: usize,
    how: u32,
    addr: *const u8,
    port_be: u16,
) -> Result<(), Reason> {
    let ctx = XdpContext::new(ctx);
    // The parser's offsets (with or without one tag); bounded for the verifier.
    if l3 > EthHdr::LEN + 4 {
        return Err(Reason::PassMalformed);
    }
    let tcp = how & 0xff == u32::from(IPPROTO_TCP);
    let dst = how & V6_DST != 0;
    // Every packet access must be a constant offset from a pointer checked against the
    // packet's end: adding a variable offset to a checked pointer makes the verifier
    // forget the check. Hence one instance per (protocol, end), each with its own
    // bounds check over the IPv6 header and the TCP (20 bytes) or UDP (8) header after
    // it (which the parser checked too). The offsets are from the IPv6 header: the
    // source address at 8, the destination at 24; the ports at 40 and 42; the TCP
    // checksum at 40 + 16, UDP's at 40 + 6.
    const TCP_V6: usize = Ipv6Hdr::LEN + TcpHdr::LEN;
    const UDP_V6: usize = Ipv6Hdr::LEN + UdpHdr::LEN;
    match (tcp, dst) {
        (true, true) => {
            let ip = ptr_at_mut::<[u8; TCP_V6]>(&ctx, l3)? as *mut u8;
            // SAFETY: the offsets (with 16, 2 and 2 bytes) end inside the 60 checked.
            unsafe { rewrite_v6_at::<24, 42, 56>(ip, addr, port_be, false) }
        }
        (true, false) => {
            let ip = ptr_at_mut::<[u8; TCP_V6]>(&ctx, l3)? as *mut u8;
            // SAFETY: as above.
            unsafe { rewrite_v6_at::<8, 40, 56>(ip, addr, port_be, false) }
        }
        (false, true) => {
            let ip = ptr_at_mut::<[u8; UDP_V6]>(&ctx, l3)? as *mut u8;
            // SAFETY: the offsets (with 16, 2 and 2 bytes) end inside the 48 checked.
            unsafe { rewrite_v6_at::<24, 42, 46>(ip, addr, port_be, true) }
        }
        (false, false) => {
            let ip = ptr_at_mut::<[u8; UDP_V6]>(&ctx, l3)? as *mut u8;
            // SAFETY: as above.
            unsafe { rewrite_v6_at::<8, 40, 46>(ip, addr, port_be, true) }
        }
    }
}

/// `rewrite_v6`'s work at constant offsets from the IPv6 header `ip`: the address at
/// `ADDR` (16 bytes), the port at `PORT` and the checksum at `CHECK`.
///
/// # Safety
///
/// `ip` points to writable packet bytes checked to reach past all three fields, at an
/// even offset of a frame that starts 2-byte aligned (see `dr::write_macs`), so the
/// u16 accesses are aligned; `addr` to 16 readable bytes (a map value's field, valid
/// for the run, read a byte at a time).
#[inline(always)]
unsafe fn rewrite_v6_at<const ADDR: usize, const PORT: usize, const CHECK: usize>(
    ip: *mut u8,
    addr: *const u8,
    port_be: u16,
    udp: bool,
) -> Result<(), Reason> {
    // SAFETY: what the caller vouches for.
    unsafe {
        let check = ip.add(CHECK) as *mut u16;
        let port = ip.add(PORT) as *mut u16;
        let words = ip.add(ADDR) as *mut u16;
        let old_check = *check;
        if udp && old_check == 0 {
            return Err(Reason::PassMalformed);
        }
        // Folded after every word: the fold keeps the compiler from re-associating
        // the 18 additions into a tree, whose partial sums would not fit in registers.
        let mut sum = u32::from(!old_check);
        for i in 0..8 {
            let new = u16::from_ne_bytes([*addr.add(2 * i), *addr.add(2 * i + 1)]);
            sum = fold_add(sum, u32::from(!*words.add(i)) + u32::from(new));
            *words.add(i) = new;
        }
        sum = fold_add(sum, u32::from(!*port) + u32::from(port_be));
        *port = port_be;
        let folded = !(fold_add(sum, 0) as u16);
        *check = if udp && folded == 0 { 0xffff } else { folded };
    }
    Ok(())
}

/// `sum + x` (at most 17 bits each) folded to 17 bits: one's complement addition with
/// the end-around carry done as it goes; the final `fold_add(sum, 0)` fits 16 bits.
#[inline(always)]
pub fn fold_add(sum: u32, x: u32) -> u32 {
    let s = sum + x;
    (s & 0xffff) + (s >> 16)
}

/// `FLOW_F_CLOSING` for a packet carrying FIN or RST, else 0: what a flow or reply
/// entry latches.
#[inline(always)]
pub fn closing_flag(tcp_flags: u8) -> u16 {
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        FLOW_F_CLOSING
    } else {
        0
    }
}

/// Refreshes a last-seen time at most once per granularity and latches FIN/RST;
/// says whether anything changed.
#[inline(always)]
pub fn touch(last_seen: &mut u64, flags: &mut u16, now: u64, closing: u16) -> bool {
    let mut changed = false;
    if now.wrapping_sub(*last_seen) > LAST_SEEN_GRANULARITY_NS {
        *last_seen = now;
        changed = true;
    }
    if closing != 0 && *flags & closing == 0 {
        *flags |= closing;
        changed = true;
    }
    changed
}

/// Idle longer than the timeout for its protocol and state.
#[inline(always)]
pub fn expired(last_seen: u64, flags: u16, proto: u8, now: u64) -> bool {
    let slot = if proto != IPPROTO_TCP {
        CONFIG_TIMEOUT_UDP_NS
    } else if flags & FLOW_F_CLOSING != 0 {
        CONFIG_TIMEOUT_TCP_FIN_NS
    } else {
        CONFIG_TIMEOUT_TCP_NS
    };
    match CONFIG.get(slot) {
        Some(timeout) if *timeout > 0 => now.wrapping_sub(last_seen) > *timeout,
        _ => false,
    }
}
