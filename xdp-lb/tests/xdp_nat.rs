//! NAT through BPF_PROG_TEST_RUN: client → VIP:80 becomes client → real server:8080
//! and the reply becomes VIP:80 → client again. Every checksum of every rewritten
//! frame is recomputed from scratch (etherparse) and compared with what the program
//! wrote incrementally: TCP and UDP, both directions, odd lengths, UDP zero checksum,
//! and the fold that must be sent as 0xffff.
mod support;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use support::test_run::{
    TEST_RUN_IFINDEX, key, load, run,
    xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
};
use xdp_lb::dataplane::{Dataplane, ServiceSpec, nat::NatTimeouts};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, FWD_NAT, IPPROTO_TCP, IPPROTO_UDP, SELECT_CURSOR, v4_mapped,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const LB_SERVER_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const VIP: [u8; 4] = [192, 0, 2, 100];
const SERVER: [u8; 4] = [203, 0, 113, 11];
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
        dp.set_service(&ServiceSpec {
            key: key(v4_mapped(VIP), port, proto),
            id: id as u32,
            forwarding: FWD_NAT,
            select: SELECT_CURSOR,
            active: true,
            slots: vec![0],
            ..Default::default()
        })
        .unwrap();
    }
    dp.set_nat(&[SERVER_PORT].into(), &NatTimeouts::default())
        .unwrap();
    dp
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
    assert_eq!(dp.table_sizes(), (1, 1), "flow pin and reply entry");

    // Backend 1: the same server behind an interface that is no redirect target,
    // for VIP:81.
    let unreachable = BackendValue {
        ifindex: 999,
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(1, &unreachable).unwrap();
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(VIP), 81, IPPROTO_TCP),
        id: 2,
        forwarding: FWD_NAT,
        select: SELECT_CURSOR,
        active: true,
        slots: vec![1],
        ..Default::default()
    })
    .unwrap();
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
        (1, 1),
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
    dp.set_nat(&[SERVER_PORT + 1].into(), &NatTimeouts::default())
        .unwrap();
    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_PASS, "8080 is no NAT source port now");
    assert_eq!(out, reply, "untouched");
    dp.set_nat(&[SERVER_PORT].into(), &NatTimeouts::default())
        .unwrap();
    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_TX);
    assert_eq!(inspect(&out).src, VIP, "translated back");
}
