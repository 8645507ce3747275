//! NAT66 through BPF_PROG_TEST_RUN: client → [VIP]:80 becomes client → [real server]:8080
//! and the reply becomes [VIP]:80 → client again. IPv6 has no header checksum; the
//! TCP/UDP checksum covers the 16-byte addresses (pseudo-header) and the ports, so every
//! rewritten frame's checksum is recomputed from scratch (etherparse) and compared with
//! what the program wrote incrementally: TCP and UDP, both directions, odd lengths, the
//! fold boundaries, a VLAN tag, and UDP's two IPv6 rules (a computed 0 goes out as
//! 0xffff; an arriving 0, which IPv6 forbids, is not forwarded).
mod support;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use support::test_run::{
    TEST_RUN_IFINDEX, fib_namespace, key, load, run,
    xdp_action::{XDP_PASS, XDP_REDIRECT, XDP_TX},
};
use xdp_lb::{
    dataplane::{Dataplane, ServiceSpec, nat::NatTimeouts},
    services::nat_origins_of,
};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, FWD_NAT, IPPROTO_TCP, IPPROTO_UDP, SELECT_CURSOR,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const LB_SERVER_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
/// 2001:db8:1::7, 2001:db8::100, 2001:db8:2::11 (documentation range).
const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const VIP: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const SERVER: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
];
const SERVER_PORT: u16 = 8080;

/// One NAT real server behind [VIP]:80/tcp and [VIP]:53/udp (port-mapped to 8080).
fn nat_dataplane() -> Dataplane {
    let mut dp = load();
    let backend = BackendValue {
        addr: SERVER,
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
            key: key(VIP, port, proto),
            id: id as u32,
            forwarding: FWD_NAT,
            select: SELECT_CURSOR,
            active: true,
            slots: vec![0],
            ..Default::default()
        })
        .unwrap();
    }
    let vips = [
        (key(VIP, 80, IPPROTO_TCP), 0),
        (key(VIP, 53, IPPROTO_UDP), 1),
    ];
    dp.set_nat(
        &nat_origins_of(SERVER, SERVER_PORT, &vips),
        &NatTimeouts::default(),
    )
    .unwrap();
    dp
}

/// (src, sport, dst, dport, (source MAC, destination MAC), payload).
type Ends = ([u8; 16], u16, [u8; 16], u16, ([u8; 6], [u8; 6]));

fn tcp((src, sport, dst, dport, macs): Ends, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src, dst, 64)
        .tcp(sport, dport, 7, 1000)
        .ack(99)
        .write(&mut f, payload)
        .unwrap();
    f
}

fn udp((src, sport, dst, dport, macs): Ends, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src, dst, 64)
        .udp(sport, dport)
        .write(&mut f, payload)
        .unwrap();
    f
}

type FrameBuilder = fn(Ends, &[u8]) -> Vec<u8>;

/// What a rewritten frame says, with its L4 checksum recomputed from scratch.
#[derive(Debug)]
struct Seen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
    /// (written, recomputed over the pseudo-header, header and payload).
    l4_check: (u16, u16),
}

fn inspect(frame: &[u8]) -> Seen {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("a parsable frame");
    let Some(NetHeaders::Ipv6(ip, _)) = h.net else {
        panic!("not ipv6")
    };
    let payload = h.payload.slice().to_vec();
    let (sport, dport, l4_check) = match h.transport.expect("tcp or udp") {
        TransportHeader::Tcp(t) => (
            t.source_port,
            t.destination_port,
            (t.checksum, t.calc_checksum_ipv6(&ip, &payload).unwrap()),
        ),
        TransportHeader::Udp(u) => (
            u.source_port,
            u.destination_port,
            (u.checksum, u.calc_checksum_ipv6(&ip, &payload).unwrap()),
        ),
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
        l4_check,
    }
}

/// The 2-byte payloads whose frame's checksum comes within `margin` of the fold
/// (0x0000 and 0xffff, one's complement's two zeros), given `base`, the same frame's
/// checksum with payload [0, 0]. The sum is linear in the payload word (which sits at
/// an even offset), so they are found by arithmetic rather than by building 65,536
/// frames; callers confirm each on a real frame.
fn payload_words_near_fold(base: u16, margin: u16) -> impl Iterator<Item = [u8; 2]> {
    let ones_add = |a: u16, b: u16| {
        let sum = u32::from(a) + u32::from(b);
        ((sum & 0xffff) + (sum >> 16)) as u16
    };
    (0..=u16::MAX)
        .filter(move |&word| {
            let checksum = !ones_add(!base, word);
            checksum <= margin || checksum >= 0xffff - margin
        })
        .map(u16::to_be_bytes)
}

fn assert_checksum(s: &Seen) {
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
        &make((CLIENT, sport, VIP, vport, (CLIENT_MAC, LB_MAC)), payload),
    );
    assert_eq!(action, XDP_TX, "forward");
    let fwd = inspect(&out);
    let reply = make(
        (
            SERVER,
            SERVER_PORT,
            CLIENT,
            sport,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
        ),
        payload,
    );
    let (action, out) = run(dp, &reply);
    assert_eq!(action, XDP_TX, "reply");
    (fwd, inspect(&out))
}

fn check_round_trip(fwd: &Seen, back: &Seen, sport: u16, vport: u16, payload: &[u8]) {
    assert_eq!((fwd.src, fwd.sport), (CLIENT, sport), "client side kept");
    assert_eq!(
        (fwd.dst, fwd.dport),
        (SERVER, SERVER_PORT),
        "to the real server, port mapped"
    );
    assert_eq!((fwd.dst_mac, fwd.src_mac), (SERVER_MAC, LB_SERVER_SIDE_MAC));
    assert_eq!(fwd.payload, payload);
    assert_checksum(fwd);
    assert_eq!(
        (back.src, back.sport),
        (VIP, vport),
        "reply comes from the VIP again"
    );
    assert_eq!((back.dst, back.dport), (CLIENT, sport));
    assert_eq!(
        (back.dst_mac, back.src_mac),
        (CLIENT_MAC, LB_MAC),
        "back to the client's next hop"
    );
    assert_eq!(back.payload, payload);
    assert_checksum(back);
}

const PAYLOADS: [&[u8]; 5] = [
    b"",
    b"a",
    b"odd!!",
    b"GET / HTTP/1.1\r\n\r\n",
    &[0xff; 1001],
];

#[test]
fn tcp_is_translated_both_ways_with_valid_checksums() {
    let dp = nat_dataplane();
    for (i, payload) in PAYLOADS.iter().enumerate() {
        let sport = 40_000 + i as u16;
        let (fwd, back) = round_trip(&dp, tcp, sport, 80, payload);
        check_round_trip(&fwd, &back, sport, 80, payload);
    }
    assert_eq!(dp.global_stats().unwrap()["nat_reply"], 5);
    assert_eq!(
        dp.table_sizes(),
        (5, 5),
        "a flow pin and a reply entry each"
    );
}

#[test]
fn udp_is_translated_both_ways_with_valid_checksums() {
    let dp = nat_dataplane();
    for (i, payload) in PAYLOADS.iter().enumerate() {
        let sport = 50_000 + i as u16;
        let (fwd, back) = round_trip(&dp, udp, sport, 53, payload);
        check_round_trip(&fwd, &back, sport, 53, payload);
    }
    assert_eq!(dp.global_stats().unwrap()["nat_reply"], 5);
}

/// UDP over IPv6 must carry a checksum (RFC 8200 §8.1): a datagram with 0 cannot be
/// updated, and the receiver would drop it anyway; it goes to the kernel untouched.
#[test]
fn a_udp_datagram_without_checksum_is_left_to_the_kernel() {
    let dp = nat_dataplane();
    let mut frame = udp(
        (CLIENT, 50_100, VIP, 53, (CLIENT_MAC, LB_MAC)),
        b"no checksum",
    );
    frame[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
    let (action, out) = run(&dp, &frame);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, frame, "untouched");
    assert_eq!(dp.global_stats().unwrap()["pass_malformed"], 1);
}

#[test]
fn a_udp_checksum_that_folds_to_zero_is_sent_as_ffff() {
    let dp = nat_dataplane();
    // A 2-byte payload whose translated datagram sums to 0 (sent as 0xffff).
    let probe = |payload: &[u8]| {
        let translated = udp(
            (CLIENT, 50_200, SERVER, SERVER_PORT, (CLIENT_MAC, LB_MAC)),
            payload,
        );
        inspect(&translated).l4_check.1
    };
    let payload = payload_words_near_fold(probe(&[0, 0]), 0)
        .find(|p| probe(p) == 0xffff)
        .expect("some payload folds to 0xffff");
    let (action, out) = run(
        &dp,
        &udp((CLIENT, 50_200, VIP, 53, (CLIENT_MAC, LB_MAC)), &payload),
    );
    assert_eq!(action, XDP_TX);
    let seen = inspect(&out);
    assert_eq!(
        seen.l4_check.0, 0xffff,
        "computed 0 must go out as 0xffff, never 0 (= no checksum)"
    );
    // And the reply direction: a reply whose translation folds to 0.
    let probe_back = |payload: &[u8]| {
        let translated = udp(
            (VIP, 53, CLIENT, 50_200, (SERVER_MAC, LB_SERVER_SIDE_MAC)),
            payload,
        );
        inspect(&translated).l4_check.1
    };
    let payload = payload_words_near_fold(probe_back(&[0, 0]), 0)
        .find(|p| probe_back(p) == 0xffff)
        .expect("some payload folds to 0xffff");
    let reply = udp(
        (
            SERVER,
            SERVER_PORT,
            CLIENT,
            50_200,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
        ),
        &payload,
    );
    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_TX);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.sport), (VIP, 53));
    assert_eq!(seen.l4_check.0, 0xffff, "the reply's computed 0 too");
}

#[test]
fn checksums_stay_valid_across_the_fold_boundaries() {
    let dp = nat_dataplane();
    // Payloads where a checksum before or after either translation is 0x0000..0x0002
    // or 0xfffd..0xffff exercise the end-around carry of the incremental update.
    let near_edge = |c: u16| c <= 2 || c >= 0xfffd;
    for (make, sport, vport) in [(tcp as FrameBuilder, 41_000, 80), (udp, 41_001, 53)] {
        let client_side = |to: [u8; 16], port: u16, p: &[u8]| {
            inspect(&make((CLIENT, sport, to, port, (CLIENT_MAC, LB_MAC)), p)).l4_check
        };
        let server_side = |from: [u8; 16], port: u16, p: &[u8]| {
            let ends = (from, port, CLIENT, sport, (SERVER_MAC, LB_SERVER_SIDE_MAC));
            inspect(&make(ends, p)).l4_check
        };
        // Before and after each translation, as sent and as recomputed.
        let checksums = |p: &[u8]| {
            [
                client_side(VIP, vport, p).0,
                client_side(SERVER, SERVER_PORT, p).1,
                server_side(SERVER, SERVER_PORT, p).0,
                server_side(VIP, vport, p).1,
            ]
        };
        let mut edges: Vec<[u8; 2]> = checksums(&[0, 0])
            .into_iter()
            .flat_map(|base| payload_words_near_fold(base, 2))
            .filter(|p| checksums(p).into_iter().any(near_edge))
            .collect();
        edges.sort();
        edges.dedup();
        assert!(edges.len() >= 10, "few payloads near the fold: {edges:?}");
        for payload in &edges {
            let (fwd, back) = round_trip(&dp, make, sport, vport, payload);
            check_round_trip(&fwd, &back, sport, vport, payload);
        }
    }
}

#[test]
fn a_vlan_tagged_flow_is_translated_both_ways() {
    let dp = nat_dataplane();
    let tagged = |(src, sport, dst, dport, macs): Ends, payload: &[u8]| {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(macs.0, macs.1)
            .single_vlan(42.try_into().unwrap())
            .ipv6(src, dst, 64)
            .tcp(sport, dport, 7, 1000)
            .write(&mut f, payload)
            .unwrap();
        f
    };
    let (action, out) = run(
        &dp,
        &tagged((CLIENT, 44_000, VIP, 80, (CLIENT_MAC, LB_MAC)), b"tagged"),
    );
    assert_eq!(action, XDP_TX);
    let fwd = inspect(&out);
    let reply = tagged(
        (
            SERVER,
            SERVER_PORT,
            CLIENT,
            44_000,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
        ),
        b"tagged",
    );
    let (action, out) = run(&dp, &reply);
    assert_eq!(action, XDP_TX);
    check_round_trip(&fwd, &inspect(&out), 44_000, 80, b"tagged");
    assert_eq!(&out[12..16], &[0x81, 0x00, 0, 42], "the tag stays");
}

#[test]
fn a_reply_without_a_nat_entry_goes_to_the_kernel() {
    let dp = nat_dataplane();
    let stray = tcp(
        (
            SERVER,
            SERVER_PORT,
            CLIENT,
            12_345,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
        ),
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
    for i in 0..10u16 {
        round_trip(&dp, tcp, 42_000 + i, 80, b"x");
        round_trip(&dp, udp, 42_000 + i, 53, b"x");
    }
    assert_eq!(dp.table_sizes(), (20, 20));
    // 10 ms later (by the clock the program reads) every entry is idle past 1 ms.
    let later = xdp_lb::dataplane::nat::monotonic_ns() + 10_000_000;
    let gc = dp.expire_idle(&short, later).unwrap().gc;
    assert_eq!((gc.flows_removed, gc.replies_removed), (20, 20));
    assert_eq!(dp.table_sizes(), (0, 0));
}

const ROUTER: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
];

/// A "packet too big" (MTU 1280) from a router on the client's path about `quote`
/// bytes of the packet `src`:`sport` → CLIENT:`cport` (TCP, or UDP if `udp`),
/// addressed to `src`.
fn too_big_about(
    src: ([u8; 16], u16),
    cport: u16,
    udp: bool,
    quote: usize,
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut answer = Vec::new();
    let ip = PacketBuilder::ipv6(src.0, CLIENT, 63);
    if udp {
        ip.udp(src.1, cport)
            .write(&mut answer, &[0x5a; 1400])
            .unwrap();
    } else {
        ip.tcp(src.1, cport, 5000, 64_000)
            .ack(1001)
            .write(&mut answer, &[0x5a; 1400])
            .unwrap();
    }
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(ROUTER, src.0, 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut frame, &answer[..quote])
        .unwrap();
    frame
}

/// NAT66: a router finds a translated answer ([VIP] → client) too big and tells the
/// VIP. The LB translates the error back into exactly the one the real server's own
/// path would have sent it (router → real server, quoting [real server]:8080 → client;
/// the ICMPv6 checksum covers its pseudo-header, so the new destination, and the quoted
/// TCP/UDP checksum the quoted source): compared byte for byte with that error built
/// from scratch. A quote too short to hold the TCP checksum goes to the kernel.
#[test]
fn a_packet_too_big_about_a_nat66_reply_is_translated_for_the_real_server() {
    let dp = nat_dataplane();
    for (i, (udp_proto, quote)) in [(false, 1232), (false, 60), (true, 1232), (true, 49)]
        .into_iter()
        .enumerate()
    {
        // Many client ports, so the checksums cross the fold boundaries.
        for cport in (0..40).map(|k| 1_024 + i as u16 * 8_000 + k * 197) {
            let vport = if udp_proto { 53 } else { 80 };
            let ends = (CLIENT, cport, VIP, vport, (CLIENT_MAC, LB_MAC));
            let open = if udp_proto {
                udp(ends, b"q")
            } else {
                tcp(ends, b"")
            };
            assert_eq!(run(&dp, &open).0, XDP_TX, "the connection's first packet");

            let error = too_big_about((VIP, vport), cport, udp_proto, quote, (CLIENT_MAC, LB_MAC));
            let (action, out) = run(&dp, &error);
            assert_eq!(action, XDP_TX, "case {i}: to the real server");
            let expected = too_big_about(
                (SERVER, SERVER_PORT),
                cport,
                udp_proto,
                quote,
                (LB_SERVER_SIDE_MAC, SERVER_MAC),
            );
            assert_eq!(
                out, expected,
                "case {i} (udp {udp_proto}, quote {quote}): the error as the real server's path would send it"
            );
        }
    }
    assert_eq!(dp.global_stats().unwrap()["icmp_to_real_server"], 4 * 40);
    // A quote that stops inside the TCP header, about a connection of ours: the
    // kernel's, untouched (the checksum it would need to update is not there).
    let short = too_big_about((VIP, 80), 1_024, false, 50, (CLIENT_MAC, LB_MAC));
    assert_eq!(run(&dp, &short), (XDP_PASS, short.clone()));
    assert_eq!(dp.global_stats().unwrap()["icmp_to_real_server"], 4 * 40);
}

/// With the flood guard's bucket for packets other than SYNs dry, a UDP flow goes
/// unpinned (picked by its hash); its real server's answer has no entry to be
/// translated by, and is translated all the same, and sent where the kernel's IPv6
/// FIB says the client is. With forwarding off the FIB answers nothing: the answer
/// goes to the kernel as it came, and is counted.
#[test]
fn an_unpinned_nat66_flows_answer_is_translated_and_sent_by_the_fib() {
    let (ns, d0, d0_mac) = fib_namespace("2001:db8:1::1/64", "2001:db8:1::7", CLIENT_MAC);
    let mut dp = nat_dataplane();
    dp.add_egress(d0).unwrap();
    dp.set_new_flow_rate(5).unwrap();
    let query = |sport: u16| udp((CLIENT, sport, VIP, 53, (CLIENT_MAC, LB_MAC)), b"query");
    // Five datagrams of five flows take the bucket's tokens and are pinned.
    for sport in 50_000..50_005 {
        assert_eq!(run(&dp, &query(sport)).0, XDP_TX);
    }
    assert_eq!(dp.table_sizes(), (5, 0));
    let (action, out) = run(&dp, &query(50_005));
    assert_eq!(action, XDP_TX);
    assert_eq!(inspect(&out).dst, SERVER);
    assert_eq!(dp.table_sizes(), (5, 0), "the sixth flow found no token");

    let answer = udp(
        (
            SERVER,
            SERVER_PORT,
            CLIENT,
            50_005,
            (SERVER_MAC, LB_SERVER_SIDE_MAC),
        ),
        b"answer",
    );
    let (action, out) = run(&dp, &answer);
    assert_eq!(action, XDP_REDIRECT, "out of the FIB's interface, d0");
    let back = inspect(&out);
    assert_checksum(&back);
    assert_eq!((back.src, back.sport), (VIP, 53));
    assert_eq!((back.dst, back.dport), (CLIENT, 50_005));
    assert_eq!(
        (back.dst_mac, back.src_mac),
        (CLIENT_MAC, d0_mac),
        "the FIB's neighbour and d0's own MAC"
    );
    assert_eq!(dp.table_sizes(), (5, 0), "nothing written for it");

    ns.sysctl(&[("net/ipv6/conf/all/forwarding", "0")]).unwrap();
    let before = dp.global_stats().unwrap()["pass_no_client_hop"];
    let (action, out) = run(&dp, &answer);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, answer, "passed untouched");
    assert_eq!(dp.global_stats().unwrap()["pass_no_client_hop"] - before, 1);
}
