//! NAT through BPF_PROG_TEST_RUN: client → VIP:80 becomes client → real server:8080
//! and the reply becomes VIP:80 → client again. Every checksum of every rewritten
//! frame is recomputed from scratch (etherparse) and compared with what the program
//! wrote incrementally: TCP and UDP, both directions, odd lengths, UDP zero checksum,
//! and the fold that must be sent as 0xffff.
mod support;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use support::test_run::{
    TEST_RUN_IFINDEX, fib_namespace, key, load, run, tcp_flow,
    xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
};
use xdp_lb::{
    dataplane::{Dataplane, ServiceSpec, nat::NatTimeouts},
    services::{NatOrigins, nat_origins_of},
};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_NAT_EAGER, BackendValue, ClientHop, FWD_NAT, IPPROTO_TCP,
    IPPROTO_UDP, SELECT_CURSOR, flow_hash, v4_mapped,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const LB_SERVER_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const VIP: [u8; 4] = [192, 0, 2, 100];
const SERVER: [u8; 4] = [203, 0, 113, 11];
/// A second real server, where a test needs two.
const SERVER2: [u8; 4] = [203, 0, 113, 12];
const SERVER_PORT: u16 = 8080;

/// One NAT real server behind VIP:80/tcp and VIP:53/udp (port-mapped to 8080).
fn nat_dataplane() -> Dataplane {
    let mut dp = load();
    let backend = BackendValue {
        addr: v4_mapped(SERVER),
        dst_mac: SERVER_MAC,
        src_mac: LB_SERVER_SIDE_MAC,
        ifindex: TEST_RUN_IFINDEX,
        flags: BACKEND_F_ACTIVE,
        port_be: SERVER_PORT.to_be(),
        mtu: 1500,
        tun_src: [0; 16],
    };
    dp.set_backend(0, &backend).unwrap();
    for (id, (port, proto)) in [(80, IPPROTO_TCP), (53, IPPROTO_UDP)]
        .into_iter()
        .enumerate()
    {
        nat_service(&mut dp, key(v4_mapped(VIP), port, proto), id as u32, 0);
    }
    dp.set_nat(&origins(SERVER_PORT), &NatTimeouts::default())
        .unwrap();
    dp
}

/// Installs NAT service `id` under `key`, every new flow to backend `backend`.
fn nat_service(dp: &mut Dataplane, key: xdp_lb_common::ServiceKey, id: u32, backend: u32) {
    dp.set_service(&ServiceSpec {
        key,
        id,
        forwarding: FWD_NAT,
        select: SELECT_CURSOR,
        active: true,
        slots: vec![backend],
        ..Default::default()
    })
    .unwrap();
}

/// The real server, answering from `port` for both services.
fn origins(port: u16) -> NatOrigins {
    let vips = [
        (key(v4_mapped(VIP), 80, IPPROTO_TCP), 0),
        (key(v4_mapped(VIP), 53, IPPROTO_UDP), 1),
    ];
    nat_origins_of(v4_mapped(SERVER), port, &vips)
}

fn tcp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    macs: ([u8; 6], [u8; 6]),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 7, 1000)
        .ack(99)
        .write(&mut f, payload)
        .unwrap();
    f
}

fn udp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    macs: ([u8; 6], [u8; 6]),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut f, payload)
        .unwrap();
    f
}

/// `tcp` or `udp`: (src, sport, dst, dport, (dst MAC, src MAC), payload) → frame.
type FrameBuilder = fn([u8; 4], u16, [u8; 4], u16, ([u8; 6], [u8; 6]), &[u8]) -> Vec<u8>;

/// What a rewritten frame says, with its checksums recomputed from scratch.
#[derive(Debug)]
struct Seen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
    ip_check: (u16, u16),
    l4_check: (u16, u16),
}

fn inspect(frame: &[u8]) -> Seen {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("a parsable frame");
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!("not ipv4")
    };
    let payload = h.payload.slice().to_vec();
    let (sport, dport, l4_check) = match h.transport.expect("tcp or udp") {
        TransportHeader::Tcp(t) => (
            t.source_port,
            t.destination_port,
            (t.checksum, t.calc_checksum_ipv4(&ip, &payload).unwrap()),
        ),
        TransportHeader::Udp(u) => {
            let recomputed = if u.checksum == 0 {
                0
            } else {
                u.calc_checksum_ipv4(&ip, &payload).unwrap()
            };
            (u.source_port, u.destination_port, (u.checksum, recomputed))
        }
        other => panic!("unexpected transport {other:?}"),
    };
    Seen {
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        src: ip.source,
        dst: ip.destination,
        sport,
        dport,
        payload,
        ip_check: (ip.header_checksum, ip.calc_header_checksum()),
        l4_check,
    }
}

fn assert_checksums(s: &Seen) {
    assert_eq!(
        s.ip_check.0, s.ip_check.1,
        "ipv4 header checksum (written, recomputed) in {s:?}"
    );
    assert_eq!(
        s.l4_check.0, s.l4_check.1,
        "l4 checksum (written, recomputed) in {s:?}"
    );
}

/// Forward then reply for one flow; returns both rewritten frames as seen.
fn round_trip(
    dp: &Dataplane,
    make: FrameBuilder,
    sport: u16,
    vport: u16,
    payload: &[u8],
) -> (Seen, Seen) {
    let (action, out) = run(
        dp,
        &make(CLIENT, sport, VIP, vport, (CLIENT_MAC, LB_MAC), payload),
    );
    assert_eq!(action, XDP_TX, "forward");
    let fwd = inspect(&out);
    let reply = make(
        SERVER,
        SERVER_PORT,
        CLIENT,
        sport,
        (SERVER_MAC, LB_SERVER_SIDE_MAC),
        payload,
    );
    let (action, out) = run(dp, &reply);
    assert_eq!(action, XDP_TX, "reply");
    (fwd, inspect(&out))
}

#[test]
fn tcp_is_translated_both_ways_with_valid_checksums() {
    let dp = nat_dataplane();
    for (i, payload) in [
        &b""[..],
        b"a",
        b"odd!!",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0xff; 1001],
    ]
    .iter()
    .enumerate()
    {
        let (fwd, back) = round_trip(&dp, tcp, 40_000 + i as u16, 80, payload);
        assert_eq!(
            (fwd.src, fwd.sport),
            (CLIENT, 40_000 + i as u16),
            "client side kept"
        );
        assert_eq!(
            (fwd.dst, fwd.dport),
            (SERVER, SERVER_PORT),
            "to the real server, port mapped"
        );
        assert_eq!((fwd.dst_mac, fwd.src_mac), (SERVER_MAC, LB_SERVER_SIDE_MAC));
        assert_eq!(fwd.payload, *payload);
        assert_checksums(&fwd);
        assert_eq!(
            (back.src, back.sport),
            (VIP, 80),
            "reply comes from the VIP again"
        );
        assert_eq!((back.dst, back.dport), (CLIENT, 40_000 + i as u16));
        assert_eq!(
            (back.dst_mac, back.src_mac),
            (CLIENT_MAC, LB_MAC),
            "back to the client's next hop"
        );
        assert_eq!(back.payload, *payload);
        assert_checksums(&back);
    }
    assert_eq!(dp.global_stats().unwrap()["nat_reply"], 5);
}

#[test]
fn udp_is_translated_both_ways_and_a_zero_checksum_stays_zero() {
    let dp = nat_dataplane();
    let (fwd, back) = round_trip(&dp, udp, 50_000, 53, b"query?!");
    assert_eq!(
        (fwd.dst, fwd.dport, back.src, back.sport),
        (SERVER, SERVER_PORT, VIP, 53)
    );
    assert_checksums(&fwd);
    assert_checksums(&back);

    // UDP over IPv4 may carry no checksum (0): the rewrite must not invent one.
    let mut frame = udp(
        CLIENT,
        50_001,
        VIP,
        53,
        (CLIENT_MAC, LB_MAC),
        b"no checksum",
    );
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let (action, out) = run(&dp, &frame);
    assert_eq!(action, XDP_TX);
    let seen = inspect(&out);
    assert_eq!(seen.l4_check.0, 0, "zero UDP checksum must stay zero");
    assert_eq!(seen.ip_check.0, seen.ip_check.1);
}

#[test]
fn a_udp_checksum_that_folds_to_zero_is_sent_as_ffff() {
    let dp = nat_dataplane();
    // Search a 2-byte payload whose translated datagram sums to 0 (sent as 0xffff).
    let probe = |payload: &[u8]| {
        let translated = udp(
            CLIENT,
            50_100,
            SERVER,
            SERVER_PORT,
            (CLIENT_MAC, LB_MAC),
            payload,
        );
        inspect(&translated).l4_check.1
    };
    let payload = (0..=u16::MAX)
        .map(u16::to_be_bytes)
        .find(|p| probe(p) == 0xffff)
        .expect("some payload folds to 0xffff");
    let (action, out) = run(
        &dp,
        &udp(CLIENT, 50_100, VIP, 53, (CLIENT_MAC, LB_MAC), &payload),
    );
    assert_eq!(action, XDP_TX);
    let seen = inspect(&out);
    assert_eq!(
        seen.l4_check.0, 0xffff,
        "computed 0 must go out as 0xffff, never 0 (= no checksum)"
    );
}

#[test]
fn tcp_checksums_stay_valid_across_the_fold_boundaries() {
    let dp = nat_dataplane();
    // Payloads whose original checksum is 0x0000 or 0xffff-adjacent exercise the
    // end-around carry of the incremental update.
    let mut tried = 0;
    for word in (0..=u16::MAX).step_by(97) {
        let payload = word.to_be_bytes();
        let frame = tcp(CLIENT, 41_000, VIP, 80, (CLIENT_MAC, LB_MAC), &payload);
        let original = inspect(&frame).l4_check.0;
        if !(original <= 2 || original >= 0xfffd) && tried > 50 {
            continue;
        }
        tried += 1;
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, XDP_TX);
        assert_checksums(&inspect(&out));
    }
    assert!(tried > 50);
}

#[test]
fn a_reply_without_a_nat_entry_goes_to_the_kernel() {
    let dp = nat_dataplane();
    let stray = tcp(
        SERVER,
        SERVER_PORT,
        CLIENT,
        12_345,
        (SERVER_MAC, LB_SERVER_SIDE_MAC),
        b"x",
    );
    let (action, out) = run(&dp, &stray);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, stray, "untouched");
}

#[test]
fn idle_entries_expire_and_are_collected() {
    let mut dp = nat_dataplane();
    let short = NatTimeouts {
        tcp: std::time::Duration::from_millis(1),
        tcp_fin: std::time::Duration::from_millis(1),
        udp: std::time::Duration::from_millis(1),
    };
    // The program runs with the default (long) timeouts; only the collection below
    // uses the short ones, so a slow moment between forward and reply cannot matter.
    for i in 0..10u16 {
        round_trip(&dp, tcp, 42_000 + i, 80, b"x");
    }
    assert_eq!(dp.table_sizes(), (10, 10));
    // 10 ms later (by the clock the program reads) every entry is idle past 1 ms.
    let later = xdp_lb::dataplane::nat::monotonic_ns() + 10_000_000;
    let gc = dp.expire_idle(&short, later).unwrap().gc;
    assert_eq!((gc.flows_removed, gc.replies_removed), (10, 10));
    assert_eq!(dp.table_sizes(), (0, 0));
}

/// The counters of backend `id`: (packets, bytes, new flows).
fn counted(dp: &Dataplane, id: u32) -> (u64, u64, u64) {
    let s = dp.backend_stats(id).unwrap();
    (s.packets, s.bytes, s.new_flows)
}

/// A NAT real server counts only what is forwarded to it. Packets dropped on the
/// forwarding path (a real server behind an interface that is no redirect target)
/// count under their reason only and leave neither a flow pin nor a reply entry
/// behind.
#[test]
fn nat_counts_a_real_server_only_for_packets_it_forwards() {
    let mut dp = nat_dataplane();
    let frame = tcp(CLIENT, 43_000, VIP, 80, (CLIENT_MAC, LB_MAC), b"counted");
    let (action, _) = run(&dp, &frame);
    assert_eq!(action, XDP_TX);
    assert_eq!(counted(&dp, 0), (1, frame.len() as u64, 1));
    assert_eq!(
        dp.table_sizes(),
        (1, 0),
        "a flow pin; the reply entry waits for the first reply"
    );

    // Backend 1: the same server behind an interface that is no redirect target,
    // for VIP:81.
    let unreachable = BackendValue {
        ifindex: 999,
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(1, &unreachable).unwrap();
    nat_service(&mut dp, key(v4_mapped(VIP), 81, IPPROTO_TCP), 2, 1);
    let to_81 = tcp(CLIENT, 43_001, VIP, 81, (CLIENT_MAC, LB_MAC), b"dropped");
    for frame in [&to_81, &to_81] {
        let (action, _) = run(&dp, frame);
        assert_eq!(action, XDP_DROP);
    }
    assert_eq!(counted(&dp, 1), (0, 0, 0), "a dropped packet was counted");
    let reasons = dp.global_stats().unwrap();
    assert_eq!(reasons["drop_redirect"], 2, "{reasons:?}");
    assert_eq!(dp.service_stats(2).unwrap().drop_redirect, 2);
    assert_eq!(
        dp.table_sizes(),
        (1, 0),
        "a dropped packet left a pin or a reply entry"
    );
}

/// The reply path looks only at packets from the ports NAT real servers answer from:
/// with 8080 not among them, a reply with an entry is the kernel's; with it, it is
/// translated.
#[test]
fn only_packets_from_nat_real_server_ports_are_looked_up_as_replies() {
    let mut dp = nat_dataplane();
    let (action, _) = run(
        &dp,
        &tcp(CLIENT, 40_100, VIP, 80, (CLIENT_MAC, LB_MAC), b"hi"),
    );
    assert_eq!(action, XDP_TX);
    let reply = tcp(
        SERVER,
        SERVER_PORT,
        CLIENT,
        40_100,
        (SERVER_MAC, LB_SERVER_SIDE_MAC),
        b"yo",
    );
    dp.set_nat(&origins(SERVER_PORT + 1), &NatTimeouts::default())
        .unwrap();
    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_PASS, "8080 is no NAT source port now");
    assert_eq!(out, reply, "untouched");
    dp.set_nat(&origins(SERVER_PORT), &NatTimeouts::default())
        .unwrap();
    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_TX);
    assert_eq!(inspect(&out).src, VIP, "translated back");
}

/// What a backup installs from the sync (see `xdp_lb::sync`) is what the program needs:
/// a client's packet follows the installed flow entry (to a real server the schedule
/// would not pick), and the real server's reply, which the backup never saw a packet
/// of, is translated back with the installed next hop and our MAC.
#[test]
fn connections_installed_by_the_sync_are_forwarded_and_their_replies_translated() {
    use xdp_lb::sync::Install;
    use xdp_lb_common::{FlowValue, NatValue};
    const OTHER: [u8; 4] = [203, 0, 113, 12];
    const SYNCED_CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x88];
    let mut dp = nat_dataplane();
    // A second real server, in no schedule slot: only a flow entry leads there.
    dp.set_backend(
        1,
        &BackendValue {
            addr: v4_mapped(OTHER),
            dst_mac: [0x02, 0, 0, 0, 0, 0x12],
            src_mac: LB_SERVER_SIDE_MAC,
            ifindex: TEST_RUN_IFINDEX,
            flags: BACKEND_F_ACTIVE,
            port_be: SERVER_PORT.to_be(),
            mtu: 1500,
            tun_src: [0; 16],
        },
    )
    .unwrap();
    let reply = tcp(
        OTHER,
        SERVER_PORT,
        CLIENT,
        41_000,
        (SERVER_MAC, LB_SERVER_SIDE_MAC),
        b"data",
    );
    assert_eq!(run(&dp, &reply).0, XDP_PASS, "no reply entry yet");
    let last_seen = xdp_lb::dataplane::nat::monotonic_ns() - 2_000_000_000;
    let install = Install {
        flow: (
            tcp_flow(CLIENT, 41_000, VIP, 80),
            FlowValue {
                backend: 1,
                service: 0,
                last_seen_ns: last_seen,
                flags: 0,
                client: ClientHop {
                    mac: SYNCED_CLIENT_MAC,
                    lb_mac: OUR_MAC,
                    ifindex: TEST_RUN_IFINDEX,
                },
            },
        ),
        reply: (
            tcp_flow(OTHER, SERVER_PORT, CLIENT, 41_000),
            NatValue {
                vip: v4_mapped(VIP),
                vport_be: 80u16.to_be(),
                _pad: [0; 2],
                client: ClientHop {
                    mac: SYNCED_CLIENT_MAC,
                    lb_mac: OUR_MAC,
                    ifindex: TEST_RUN_IFINDEX,
                },
                _pad2: 0,
                last_seen_ns: last_seen,
                flags: 0,
                _pad3: 0,
                service: 0,
            },
        ),
    };
    assert_eq!(dp.install_synced(&[install]).unwrap(), 1);

    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_TX, "the installed reply entry translates it");
    let back = inspect(&out);
    assert_eq!(
        (back.src, back.sport, back.dst, back.dport),
        (VIP, 80, CLIENT, 41_000)
    );
    assert_eq!((back.dst_mac, back.src_mac), (SYNCED_CLIENT_MAC, OUR_MAC));
    assert_checksums(&back);

    let (action, out) = run(
        &dp,
        &tcp(CLIENT, 41_000, VIP, 80, (CLIENT_MAC, LB_MAC), b"GET"),
    );
    assert_eq!(action, XDP_TX);
    let fwd = inspect(&out);
    assert_eq!(
        (fwd.dst, fwd.dport),
        (OTHER, SERVER_PORT),
        "the installed flow entry"
    );
    assert_checksums(&fwd);
    // A connection the sync did not carry goes by the schedule.
    let (_, out) = run(
        &dp,
        &tcp(CLIENT, 41_001, VIP, 80, (CLIENT_MAC, LB_MAC), b"GET"),
    );
    assert_eq!(inspect(&out).dst, SERVER);
    // The backup's own collection ages installed connections out as its own: kept
    // while in use, gone once idle past the timeout (900 s for TCP).
    let now = xdp_lb::dataplane::nat::monotonic_ns();
    let t = NatTimeouts::default();
    let gc = dp.expire_idle(&t, now + 10_000_000_000).unwrap().gc;
    assert_eq!((gc.flows_removed, gc.replies_removed), (0, 0));
    let gc = dp.expire_idle(&t, now + 901_000_000_000).unwrap().gc;
    assert_eq!(
        (gc.flows_removed, gc.replies_removed),
        (2, 1),
        "the synced connection's entries, and the flow of the one never answered"
    );
    assert_eq!(dp.table_sizes(), (0, 0));
}

/// What a MASTER's sync round costs in the daemon: the walk of the NAT reply table and
/// the encoding of what is due, for 2,048 connections (half this test's map size: an
/// LRU map evicts before it is full), all new. Printed, not asserted.
#[test]
fn a_sync_round_over_a_full_table_is_measured() {
    use std::collections::HashMap;
    use xdp_lb::sync::{Install, Key, SendContext, Sender};
    use xdp_lb_common::{FlowValue, NatValue};
    let mut dp = nat_dataplane();
    let now = xdp_lb::dataplane::nat::monotonic_ns();
    let installs: Vec<Install> = (0..2048u32)
        .map(|i| {
            let client = [198, 51, (i >> 8) as u8, i as u8];
            let sport = 10_000 + (i % 50_000) as u16;
            Install {
                flow: (
                    tcp_flow(client, sport, VIP, 80),
                    FlowValue {
                        backend: 0,
                        service: 0,
                        last_seen_ns: now,
                        flags: 0,
                        client: ClientHop {
                            mac: CLIENT_MAC,
                            lb_mac: LB_MAC,
                            ifindex: TEST_RUN_IFINDEX,
                        },
                    },
                ),
                reply: (
                    tcp_flow(SERVER, SERVER_PORT, client, sport),
                    NatValue {
                        vip: v4_mapped(VIP),
                        vport_be: 80u16.to_be(),
                        _pad: [0; 2],
                        client: ClientHop {
                            mac: CLIENT_MAC,
                            lb_mac: LB_MAC,
                            ifindex: TEST_RUN_IFINDEX,
                        },
                        _pad2: 0,
                        last_seen_ns: now,
                        flags: 0,
                        _pad3: 0,
                        service: 0,
                    },
                ),
            }
        })
        .collect();
    let started = std::time::Instant::now();
    dp.install_synced(&installs).unwrap();
    let install = started.elapsed();
    let started = std::time::Instant::now();
    let replies = dp.nat_reply_entries();
    let walk = started.elapsed();
    let n = replies.len();
    assert!(n > 1900, "{n} of 2,048 left in the LRU");
    let mut sender = Sender::new(
        Key::new(b"0123456789abcdef"),
        1,
        std::time::Duration::from_secs(30),
        1_000_000,
        std::time::Duration::from_secs(1),
    );
    let interfaces = HashMap::from([(TEST_RUN_IFINDEX, "eth0".to_owned())]);
    let backends = HashMap::from([((0, std::net::Ipv4Addr::from(SERVER), SERVER_PORT), 0)]);
    let cx = SendContext {
        fingerprint: 1,
        interfaces: &interfaces,
        backends: &backends,
        now_ns: now,
    };
    let started = std::time::Instant::now();
    let round = sender.round(&replies, &cx);
    let encode = started.elapsed();
    assert_eq!((round.entries, round.datagrams.len()), (n, n.div_ceil(32)));
    let started = std::time::Instant::now();
    let again = sender.round(&replies, &cx);
    let idle = started.elapsed();
    assert_eq!(again.entries, 0);
    eprintln!(
        "measured: {n} NAT connections: installed in {install:?}, reply table walked in \
         {walk:?}, {} messages encoded and signed in {encode:?}, a round with nothing due \
         {idle:?}",
        round.datagrams.len()
    );
}

/// A "fragmentation needed" from a router on the client's path (MTU 1280) about
/// `quote` bytes of the packet `src`:`sport` → CLIENT:`cport` (TCP, or UDP with
/// `udp_check`), addressed to `src`.
fn frag_needed_about(
    src: ([u8; 4], u16),
    cport: u16,
    udp_check: Option<bool>,
    quote: usize,
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut answer = Vec::new();
    let ip = PacketBuilder::ipv4(src.0, CLIENT, 63);
    match udp_check {
        None => ip
            .tcp(src.1, cport, 5000, 64_000)
            .ack(1001)
            .write(&mut answer, &[0x5a; 1400])
            .unwrap(),
        Some(_) => ip
            .udp(src.1, cport)
            .write(&mut answer, &[0x5a; 1400])
            .unwrap(),
    }
    if udp_check == Some(false) {
        answer[20 + 6..20 + 8].copy_from_slice(&[0, 0]);
    }
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(ROUTER, src.0, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1280 },
        ))
        .write(&mut frame, &answer[..quote])
        .unwrap();
    frame
}

const ROUTER: [u8; 4] = [198, 51, 100, 254];

/// NAT: a router finds a translated answer (VIP → client) too big and tells the VIP.
/// The LB translates the error back, as IPVS does, into exactly the one the real
/// server's own path would have sent it (router → real server, quoting real server:8080
/// → client), so the server learns the path MTU: compared byte for byte with that
/// error built from scratch (every checksum computed by etherparse), for a quote of the
/// IP header and 8 bytes, a long one holding the TCP checksum, and UDP with and without
/// a checksum.
#[test]
fn a_fragmentation_needed_about_a_nat_reply_is_translated_for_the_real_server() {
    let dp = nat_dataplane();
    for (i, (udp_check, quote)) in [
        (None, 28),
        (None, 576),
        (Some(true), 28),
        (Some(true), 300),
        (Some(false), 300),
    ]
    .into_iter()
    .enumerate()
    {
        // Many client ports, so the checksums cross the fold boundaries.
        for cport in (0..40).map(|k| 1_024 + i as u16 * 8_000 + k * 197) {
            let vport = if udp_check.is_some() { 53 } else { 80 };
            let open = if udp_check.is_some() {
                udp(CLIENT, cport, VIP, vport, (CLIENT_MAC, LB_MAC), b"q")
            } else {
                tcp(CLIENT, cport, VIP, vport, (CLIENT_MAC, LB_MAC), b"")
            };
            assert_eq!(run(&dp, &open).0, XDP_TX, "the connection's first packet");

            let error =
                frag_needed_about((VIP, vport), cport, udp_check, quote, (CLIENT_MAC, LB_MAC));
            let (action, out) = run(&dp, &error);
            assert_eq!(action, XDP_TX, "case {i}: to the real server");
            let expected = frag_needed_about(
                (SERVER, SERVER_PORT),
                cport,
                udp_check,
                quote,
                (LB_SERVER_SIDE_MAC, SERVER_MAC),
            );
            assert_eq!(
                out, expected,
                "case {i} ({udp_check:?}, quote {quote}): the error as the real server's path would send it"
            );
        }
    }
    assert_eq!(dp.global_stats().unwrap()["icmp_to_real_server"], 5 * 40);
    // An error about no connection of ours still goes to the kernel, untouched.
    let stray = frag_needed_about((VIP, 80), 9, None, 28, (CLIENT_MAC, LB_MAC));
    assert_eq!(run(&dp, &stray), (XDP_PASS, stray.clone()));
    assert_eq!(dp.global_stats().unwrap()["pass_icmp_no_flow"], 1);
}

/// During a flood the guard leaves a NAT service's SYN unpinned, as a DR service's:
/// a flood must not turn the flow table over. The real server's answer has no entry
/// to be translated by; it is translated all the same, and nothing is written for it,
/// when the service would send that flow to this very server by its hash (two real
/// servers here, so the other one's answer is not), and it goes where the kernel's
/// FIB says the client is. The client's ACK pins the flow; a client the FIB has no
/// neighbour for gets its answer passed untranslated, and counted.
#[test]
fn during_a_syn_flood_a_nat_syn_goes_unpinned_and_its_answer_is_translated_by_the_fib() {
    // The FIB of a namespace of the test's own: this thread runs the program there.
    let (_ns, d0, d0_mac) = fib_namespace("198.51.100.1/24", "198.51.100.7", CLIENT_MAC);
    let mut dp = nat_dataplane();
    let second = BackendValue {
        addr: v4_mapped(SERVER2),
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(1, &second).unwrap();
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(VIP), 80, IPPROTO_TCP),
        id: 0,
        forwarding: FWD_NAT,
        select: SELECT_CURSOR,
        active: true,
        slots: vec![0, 1],
        ..Default::default()
    })
    .unwrap();
    let mut both = origins(SERVER_PORT);
    both.extend(nat_origins_of(
        v4_mapped(SERVER2),
        SERVER_PORT,
        &[(key(v4_mapped(VIP), 80, IPPROTO_TCP), 0)],
    ));
    dp.set_nat(&both, &NatTimeouts::default()).unwrap();
    dp.add_egress(d0).unwrap();
    dp.set_new_flow_rate(5).unwrap();

    let syn = |src: [u8; 4], sport: u16| segment(src, sport, VIP, 80, (CLIENT_MAC, LB_MAC), SYN);
    // Six SYNs: five pinned, the sixth finds the bucket dry and starts a flood.
    for i in 0..6u16 {
        assert_eq!(run(&dp, &syn([203, 0, 113, 200], 40_000 + i)).0, XDP_TX);
    }
    assert_eq!(dp.table_sizes(), (5, 0));
    // The server each client port's flow goes to by its hash, as the guard picks.
    let by_hash = |sport: u16| {
        let slot = flow_hash(&tcp_flow(CLIENT, sport, VIP, 80)) % 2;
        [SERVER, SERVER2][slot as usize]
    };
    let sport = 44_001;
    let (action, out) = run(&dp, &syn(CLIENT, sport));
    assert_eq!(action, XDP_TX);
    assert_eq!(
        inspect(&out).dst,
        by_hash(sport),
        "picked by the flow's hash"
    );
    assert_eq!(dp.table_sizes(), (5, 0), "left unpinned during the flood");

    let answer = |server: [u8; 4], client: [u8; 4], sport: u16, flags: u8| {
        segment(
            server,
            SERVER_PORT,
            client,
            sport,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
            flags,
        )
    };
    let other = if by_hash(sport) == SERVER {
        SERVER2
    } else {
        SERVER
    };
    let before = dp.global_stats().unwrap();
    let (action, _) = run(&dp, &answer(other, CLIENT, sport, SYN | ACK));
    assert_eq!(
        action, XDP_PASS,
        "the other server's answer is no answer of this flow"
    );
    let (action, out) = run(&dp, &answer(by_hash(sport), CLIENT, sport, SYN | ACK));
    assert_eq!(action, XDP_REDIRECT, "out of the FIB's interface, d0");
    let back = inspect(&out);
    assert_checksums(&back);
    assert_eq!((back.src, back.sport), (VIP, 80));
    assert_eq!((back.dst, back.dport), (CLIENT, sport));
    assert_eq!(
        (back.dst_mac, back.src_mac),
        (CLIENT_MAC, d0_mac),
        "the FIB's neighbour and d0's own MAC"
    );
    assert_eq!(dp.table_sizes(), (5, 0), "nothing written for it");
    let after = dp.global_stats().unwrap();
    assert_eq!(after["nat_reply"] - before["nat_reply"], 1);
    assert_eq!(after["pass_not_service"] - before["pass_not_service"], 1);

    // The client's ACK pins the flow, to the same server; the next answer finds it.
    let ack = segment(CLIENT, sport, VIP, 80, (CLIENT_MAC, LB_MAC), ACK);
    let (action, out) = run(&dp, &ack);
    assert_eq!(action, XDP_TX);
    assert_eq!(inspect(&out).dst, by_hash(sport), "the ACK follows its SYN");
    assert_eq!(dp.table_sizes(), (6, 0), "the ACK is pinned");
    let (action, _) = run(&dp, &answer(by_hash(sport), CLIENT, sport, ACK));
    assert_eq!(action, XDP_TX, "back the way the ACK came, from its entry");
    assert_eq!(dp.table_sizes(), (6, 1), "its reply entry written now");

    // A client without a neighbour entry: the answer goes to the kernel as it came.
    let lonely = [198, 51, 100, 9];
    let (action, out) = run(&dp, &syn(lonely, 44_002));
    assert_eq!(action, XDP_TX);
    let server = inspect(&out).dst;
    let answer_lonely = answer(server, lonely, 44_002, SYN | ACK);
    let before = dp.global_stats().unwrap()["pass_no_client_hop"];
    let (action, out) = run(&dp, &answer_lonely);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, answer_lonely, "passed untouched");
    assert_eq!(dp.global_stats().unwrap()["pass_no_client_hop"] - before, 1);
}

/// TCP flags for [`segment`].
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// An empty TCP segment with `flags` (SYN, ACK or both).
fn segment(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    macs: ([u8; 6], [u8; 6]),
    flags: u8,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 7, 1000);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(99);
    }
    let mut f = Vec::new();
    b.write(&mut f, b"").unwrap();
    f
}

/// A new NAT flow writes only its flow entry, with the way back to its client; the
/// first reply finds that flow through the real server's origin, is translated, and
/// writes the reply entry, which the next reply uses: the same translation both ways.
#[test]
fn the_first_reply_finds_its_flow_and_writes_the_reply_entry() {
    let dp = nat_dataplane();
    let (action, _) = run(
        &dp,
        &tcp(CLIENT, 44_000, VIP, 80, (CLIENT_MAC, LB_MAC), b"GET"),
    );
    assert_eq!(action, XDP_TX);
    assert_eq!(dp.table_sizes(), (1, 0), "one insert for a new flow");
    let (_, flow) = dp.flows().next().unwrap().unwrap();
    assert_eq!(
        flow.client,
        ClientHop {
            mac: CLIENT_MAC,
            lb_mac: LB_MAC,
            ifindex: TEST_RUN_IFINDEX
        },
        "the way back, from the client's frame"
    );
    let reply = tcp(
        SERVER,
        SERVER_PORT,
        CLIENT,
        44_000,
        (SERVER_MAC, LB_SERVER_SIDE_MAC),
        b"200 OK",
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (action, out) = run(&dp, &reply);
        assert_eq!(action, XDP_TX);
        let back = inspect(&out);
        assert_checksums(&back);
        seen.push(back);
        assert_eq!(dp.table_sizes(), (1, 1), "the first reply wrote its entry");
    }
    for back in &seen {
        assert_eq!((back.src, back.sport), (VIP, 80));
        assert_eq!((back.dst, back.dport), (CLIENT, 44_000));
        assert_eq!((back.dst_mac, back.src_mac), (CLIENT_MAC, LB_MAC));
    }
    let replies = dp.nat_reply_entries();
    let (_, entry) = replies[0];
    assert_eq!(
        (
            entry.vip,
            entry.vport_be,
            entry.client.mac,
            entry.client.lb_mac,
            entry.client.ifindex,
            entry.service
        ),
        (
            v4_mapped(VIP),
            80u16.to_be(),
            CLIENT_MAC,
            LB_MAC,
            TEST_RUN_IFINDEX,
            0
        )
    );
    assert_eq!(dp.global_stats().unwrap()["nat_reply"], 2);
}

/// A reply is translated only for the flow pinned to the real server that sends it:
/// from another real server of the same VIP, from a port the flow does not use, or
/// for a flow that is gone or idle past its timeout, it is the kernel's, untouched
/// and without a reply entry.
#[test]
fn a_reply_finds_only_a_live_flow_pinned_to_its_real_server() {
    const OTHER: [u8; 4] = [203, 0, 113, 12];
    let mut dp = nat_dataplane();
    let other = BackendValue {
        addr: v4_mapped(OTHER),
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(1, &other).unwrap();
    // Both real servers answer for VIP:80 (the schedule holds only the first).
    let vip = [(key(v4_mapped(VIP), 80, IPPROTO_TCP), 0)];
    let mut origins = origins(SERVER_PORT);
    origins.extend(nat_origins_of(v4_mapped(OTHER), SERVER_PORT, &vip));
    dp.set_nat(&origins, &NatTimeouts::default()).unwrap();
    let (action, _) = run(
        &dp,
        &tcp(CLIENT, 44_100, VIP, 80, (CLIENT_MAC, LB_MAC), b"GET"),
    );
    assert_eq!(action, XDP_TX);
    let not_ours = [
        (OTHER, SERVER_PORT, 44_100, "another real server of the VIP"),
        (SERVER, SERVER_PORT, 44_101, "a client port with no flow"),
    ];
    for (src, sport, dport, what) in not_ours {
        let reply = tcp(
            src,
            sport,
            CLIENT,
            dport,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
            b"x",
        );
        let (action, out) = run(&dp, &reply);
        assert_eq!((action, out == reply), (XDP_PASS, true), "{what}");
    }
    assert_eq!(dp.table_sizes(), (1, 0), "no reply entry written");
    // Idle past the TCP timeout (1 ns now): the flow no longer answers for its
    // replies; with the timeout back, the same reply is translated.
    let reply = tcp(
        SERVER,
        SERVER_PORT,
        CLIENT,
        44_100,
        (SERVER_MAC, LB_SERVER_SIDE_MAC),
        b"x",
    );
    let idle = NatTimeouts {
        tcp: std::time::Duration::from_nanos(1),
        ..NatTimeouts::default()
    };
    dp.set_nat(&origins, &idle).unwrap();
    let (action, _) = run(&dp, &reply);
    assert_eq!(action, XDP_PASS, "an idle flow's reply");
    assert_eq!(dp.table_sizes(), (1, 0));
    dp.set_nat(&origins, &NatTimeouts::default()).unwrap();
    let (action, _) = run(&dp, &reply);
    assert_eq!(action, XDP_TX, "the live flow's reply");
}

/// A real server answering for two VIPs: each reply finds the flow of its own VIP
/// (the client's port tells them apart) and leaves from that VIP.
#[test]
fn a_real_server_of_two_vips_sends_each_reply_from_its_own_vip() {
    const VIP2: [u8; 4] = [192, 0, 2, 101];
    let mut dp = nat_dataplane();
    let second = key(v4_mapped(VIP2), 80, IPPROTO_TCP);
    nat_service(&mut dp, second, 2, 0);
    let vips = [(key(v4_mapped(VIP), 80, IPPROTO_TCP), 0), (second, 2)];
    dp.set_nat(
        &nat_origins_of(v4_mapped(SERVER), SERVER_PORT, &vips),
        &NatTimeouts::default(),
    )
    .unwrap();
    for (vip, sport) in [(VIP, 44_200), (VIP2, 44_201)] {
        let (action, _) = run(
            &dp,
            &tcp(CLIENT, sport, vip, 80, (CLIENT_MAC, LB_MAC), b"GET"),
        );
        assert_eq!(action, XDP_TX);
    }
    for (vip, sport) in [(VIP2, 44_201), (VIP, 44_200)] {
        let reply = tcp(
            SERVER,
            SERVER_PORT,
            CLIENT,
            sport,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
            b"ok",
        );
        let (action, out) = run(&dp, &reply);
        assert_eq!(action, XDP_TX);
        let back = inspect(&out);
        assert_eq!((back.src, back.sport, back.dport), (vip, 80, sport));
        assert_checksums(&back);
    }
    let mut services: Vec<u32> = dp
        .nat_reply_entries()
        .iter()
        .map(|(_, v)| v.service)
        .collect();
    services.sort();
    assert_eq!(services, vec![0, 2]);
}

/// `nat_dataplane` with its backend flagged `BACKEND_F_NAT_EAGER` and no origin of its
/// own: the ports stay, the origin is another real server's, so only reply entries
/// translate this server's answers.
fn eager_dataplane() -> Dataplane {
    let mut dp = nat_dataplane();
    let eager = BackendValue {
        flags: BACKEND_F_ACTIVE | BACKEND_F_NAT_EAGER,
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(0, &eager).unwrap();
    dp.set_nat(
        &nat_origins_of(
            v4_mapped([203, 0, 113, 99]),
            SERVER_PORT,
            &[(key(v4_mapped(VIP), 80, IPPROTO_TCP), 0)],
        ),
        &NatTimeouts::default(),
    )
    .unwrap();
    dp
}

/// A backend flagged `BACKEND_F_NAT_EAGER` (its real server answers for more VIPs than
/// an origin lists) writes its reply entry with the flow, and its replies are
/// translated without any origin.
#[test]
fn an_eager_backend_writes_its_reply_entry_with_the_flow() {
    let dp = eager_dataplane();
    let (fwd, back) = round_trip(&dp, tcp, 44_300, 80, b"GET");
    assert_eq!(fwd.dst, SERVER);
    assert_eq!((back.src, back.sport), (VIP, 80));
    assert_eq!(dp.table_sizes(), (1, 1));
    let (action, _) = run(
        &dp,
        &tcp(CLIENT, 44_301, VIP, 80, (CLIENT_MAC, LB_MAC), b"GET"),
    );
    assert_eq!(action, XDP_TX);
    assert_eq!(
        dp.table_sizes(),
        (2, 2),
        "the reply entry is written with the flow"
    );
}

/// During a flood the guard leaves SYNs unpinned, and an eager backend's would each
/// write a reply entry: a flood of spoofed SYNs would turn the reply table over and
/// take established flows' ways back with it. An unpinned SYN gets a new reply entry
/// only within the guard's budget (`new_flow_rate` a second, a bucketful here); it
/// refreshes one it has, and rewrites one another VIP's connection of its ports left.
/// A connection whose SYN got none gets one with any later packet the guard pins
/// (here its ACK; without an entry the SYN-ACK could not have reached it, and its
/// SYN's retransmission would have tried again).
#[test]
fn during_a_syn_flood_an_eager_backend_writes_reply_entries_only_within_the_budget() {
    const VIP2: [u8; 4] = [192, 0, 2, 101];
    let mut dp = eager_dataplane();
    nat_service(&mut dp, key(v4_mapped(VIP2), 80, IPPROTO_TCP), 2, 0);
    dp.set_new_flow_rate(5).unwrap();
    let answer = |sport: u16| {
        tcp(
            SERVER,
            SERVER_PORT,
            CLIENT,
            sport,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
            b"ok",
        )
    };
    let answered_from = |sport: u16| {
        let (action, out) = run(&dp, &answer(sport));
        assert_eq!(action, XDP_TX, "the answer to client port {sport}");
        let back = inspect(&out);
        assert_eq!((back.dst, back.dport), (CLIENT, sport));
        back.src
    };
    // Two established connections, each with its reply entry.
    for sport in [44_300, 44_400] {
        let (action, _) = run(
            &dp,
            &tcp(CLIENT, sport, VIP, 80, (CLIENT_MAC, LB_MAC), b"GET"),
        );
        assert_eq!(action, XDP_TX);
    }
    assert_eq!(dp.table_sizes(), (2, 2));

    // A flood of 20 SYNs: five pinned with their entries (the bucket of attempts),
    // then five unpinned ones given an entry (the bucket of replies), then none.
    let flood = |i: u8| segment([203, 0, 113, i], 40_000, VIP, 80, (CLIENT_MAC, LB_MAC), SYN);
    for i in 0..20 {
        assert_eq!(run(&dp, &flood(i)).0, XDP_TX, "flood SYN {i}");
    }
    assert_eq!(dp.table_sizes(), (2 + 5, 2 + 5 + 5));
    assert_eq!(dp.service_stats(0).unwrap().unpinned, 15);
    // Retransmitted, a SYN with an entry refreshes it, one without still gets none.
    for i in [5, 19] {
        assert_eq!(run(&dp, &flood(i)).0, XDP_TX);
    }
    assert_eq!(dp.table_sizes(), (7, 12));
    assert_eq!(
        answered_from(44_300),
        VIP,
        "the established flow's way back"
    );

    // The client reuses port 44400 for VIP2 on the same real server: the server sees
    // one connection, and the entry is rewritten for VIP2 in its place.
    let (action, _) = run(
        &dp,
        &segment(CLIENT, 44_400, VIP2, 80, (CLIENT_MAC, LB_MAC), SYN),
    );
    assert_eq!(action, XDP_TX);
    assert_eq!(dp.table_sizes(), (7, 12));
    assert_eq!(answered_from(44_400), VIP2);

    // A real connection during the flood: its SYN gets no entry, its ACK does.
    let (action, _) = run(
        &dp,
        &segment(CLIENT, 44_500, VIP, 80, (CLIENT_MAC, LB_MAC), SYN),
    );
    assert_eq!(action, XDP_TX);
    assert_eq!(dp.table_sizes(), (7, 12), "no budget left for its SYN");
    let (action, _) = run(
        &dp,
        &tcp(CLIENT, 44_500, VIP, 80, (CLIENT_MAC, LB_MAC), b"GET"),
    );
    assert_eq!(action, XDP_TX);
    assert_eq!(
        dp.table_sizes(),
        (8, 13),
        "the ACK pins it and writes its entry"
    );
    assert_eq!(answered_from(44_500), VIP);
}

/// Only replies refresh a reply entry, so a server quiet for longer than the timeout
/// leaves an idle entry behind a live flow: its next reply finds the flow again and
/// renews the entry, instead of going to the kernel.
#[test]
fn a_reply_past_an_idle_entry_of_a_live_flow_is_translated_and_renews_it() {
    use xdp_lb::sync::Install;
    use xdp_lb_common::{FlowValue, NatValue};
    let mut dp = nat_dataplane();
    // A 2 s TCP timeout, so that an entry idle past it lies after the boot of a
    // machine that has just started (such as `cargo xtask older-kernel`'s guest).
    let timeouts = NatTimeouts {
        tcp: std::time::Duration::from_secs(2),
        ..NatTimeouts::default()
    };
    dp.set_nat(&origins(SERVER_PORT), &timeouts).unwrap();
    let now = xdp_lb::dataplane::nat::monotonic_ns();
    let long_ago = now
        .checked_sub(3_000_000_000)
        .expect("the machine has been up for 3 s");
    let forward = tcp_flow(CLIENT, 44_400, VIP, 80);
    let reply_key = tcp_flow(SERVER, SERVER_PORT, CLIENT, 44_400);
    let client = ClientHop {
        mac: CLIENT_MAC,
        lb_mac: LB_MAC,
        ifindex: TEST_RUN_IFINDEX,
    };
    let install = Install {
        flow: (
            forward,
            FlowValue {
                backend: 0,
                service: 0,
                flags: 0,
                last_seen_ns: now,
                client,
            },
        ),
        reply: (
            reply_key,
            NatValue {
                vip: v4_mapped(VIP),
                vport_be: 80u16.to_be(),
                client,
                last_seen_ns: long_ago,
                ..Default::default()
            },
        ),
    };
    assert_eq!(dp.install_synced(&[install]).unwrap(), 1);
    let reply = tcp(
        SERVER,
        SERVER_PORT,
        CLIENT,
        44_400,
        (SERVER_MAC, LB_SERVER_SIDE_MAC),
        b"late",
    );
    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_TX, "the live flow's reply");
    assert_eq!((inspect(&out).src, inspect(&out).sport), (VIP, 80));
    let entries = dp.nat_reply_entries();
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].1.last_seen_ns >= now,
        "the idle entry was renewed: {} < {now}",
        entries[0].1.last_seen_ns
    );
}
