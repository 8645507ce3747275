//! TUN across address families through BPF_PROG_TEST_RUN, as IPVS offers it: an IPv4
//! VIP's IPv6 real server gets IPv4 in IPv6 (next header 4), an IPv6 VIP's IPv4 real
//! server gets IPv6 in IPv4 (protocol 41). The outer header is of the real server's
//! family and is decoded field by field (etherparse, the IPv4 header checksum
//! recomputed from scratch); the inner packet must be the client's, byte for byte; the
//! MTU rule is the one-family paths'.
mod support;

use support::tun::{self, CLIENT_MAC, GATEWAY_MAC, LB_MAC, v4, v6};

use etherparse::{IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, PacketBuilder};
use support::test_run::{
    run,
    xdp_action::{XDP_PASS, XDP_TX},
};
use xdp_lb::dataplane::Dataplane;
use xdp_lb_common::{IPPROTO_TCP, IPPROTO_UDP, v4_mapped};

/// Backends: 0 the IPv6 server (for the IPv4 VIP), 1 the IPv4 server (for the IPv6
/// VIP), 2 and 3 the same with an egress MTU of 200. Services: v4::VIP:80/tcp → 0,
/// v4::VIP:53/udp → 2, [v6::VIP]:80/tcp → 1, [v6::VIP]:53/udp → 3.
fn mixed_dataplane() -> Dataplane {
    let (server4, lb4) = (v4_mapped(v4::SERVER), v4_mapped(v4::LB_ADDR));
    let (server6, lb6) = (v6::SERVER, v6::LB_ADDR);
    tun::tun_dataplane(
        &[
            (server6, lb6, 1500),
            (server4, lb4, 1500),
            (server6, lb6, 200),
            (server4, lb4, 200),
        ],
        &[
            (v4_mapped(v4::VIP), 80, IPPROTO_TCP, 0),
            (v4_mapped(v4::VIP), 53, IPPROTO_UDP, 2),
            (v6::VIP, 80, IPPROTO_TCP, 1),
            (v6::VIP, 53, IPPROTO_UDP, 3),
        ],
    )
}

/// A TCP frame to v4::VIP:80 with TOS 0xb8 and DF set; `vlan` adds one 802.1Q tag.
fn tcp4(payload: &[u8], vlan: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let builder = if vlan {
        eth.single_vlan(7.try_into().unwrap())
            .ipv4(v4::CLIENT, v4::VIP, 64)
    } else {
        eth.ipv4(v4::CLIENT, v4::VIP, 64)
    };
    builder
        .tcp(40_000, 80, 1, 1000)
        .write(&mut f, payload)
        .unwrap();
    let l3 = if vlan { 18 } else { 14 };
    // TOS 0xb8 (DSCP EF); the header checksum then changes by the same amount.
    f[l3 + 1] = 0xb8;
    let mut header = Ipv4HeaderSlice::from_slice(&f[l3..]).unwrap().to_header();
    header.header_checksum = header.calc_header_checksum();
    f[l3 + 10..l3 + 12].copy_from_slice(&header.header_checksum.to_be_bytes());
    f
}

/// A TCP frame to [v6::VIP]:80 with traffic class 0xb8 and flow label 0x12345.
fn tcp6(payload: &[u8], vlan: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let builder = if vlan {
        eth.single_vlan(7.try_into().unwrap())
            .ipv6(v6::CLIENT, v6::VIP, 64)
    } else {
        eth.ipv6(v6::CLIENT, v6::VIP, 64)
    };
    builder
        .tcp(40_000, 80, 1, 1000)
        .write(&mut f, payload)
        .unwrap();
    let l3 = if vlan { 18 } else { 14 };
    f[l3..l3 + 4].copy_from_slice(&[0x6b, 0x81, 0x23, 0x45]);
    f
}

fn udp4(payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(v4::CLIENT, v4::VIP, 64)
        .udp(5000, 53)
        .write(&mut f, &vec![7; payload_len])
        .unwrap();
    f
}

fn udp6(payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(v6::CLIENT, v6::VIP, 64)
        .udp(5000, 53)
        .write(&mut f, &vec![7; payload_len])
        .unwrap();
    f
}

/// The common part: MACs, tag, and the inner packet byte for byte after `outer_len`.
fn assert_frame(input: &[u8], out: &[u8], l3: usize, outer_len: usize, ethertype: [u8; 2]) {
    assert_eq!(out.len(), input.len() + outer_len, "one outer header added");
    assert_eq!(&out[0..6], &GATEWAY_MAC, "to the next hop");
    assert_eq!(&out[6..12], &LB_MAC, "from the egress interface");
    assert_eq!(&out[12..l3 - 2], &input[12..l3 - 2], "VLAN tag kept");
    assert_eq!(&out[l3 - 2..l3], &ethertype, "the outer header's ethertype");
    assert_eq!(
        &out[l3 + outer_len..],
        &input[l3..],
        "the inner packet is untouched"
    );
}

/// IPv4 in IPv6: outer IPv6 from the LB's IPv6 address to the server, next header 4,
/// the inner TOS as traffic class, hop limit 64.
fn assert_v4_in_v6(input: &[u8], out: &[u8], l3: usize) {
    assert_frame(input, out, l3, 40, [0x86, 0xdd]);
    let outer = Ipv6HeaderSlice::from_slice(&out[l3..])
        .expect("outer IPv6 header")
        .to_header();
    assert_eq!(outer.next_header, IpNumber::IPV4, "IPv4 in IPv6 (4)");
    assert_eq!((outer.source, outer.destination), (v6::LB_ADDR, v6::SERVER));
    assert_eq!(outer.hop_limit, 64);
    assert_eq!(usize::from(outer.payload_length), input.len() - l3);
    let inner = Ipv4HeaderSlice::from_slice(&input[l3..]).unwrap();
    assert_eq!(
        outer.traffic_class,
        inner.dcp().value() << 2 | inner.ecn().value()
    );
    assert_eq!(outer.flow_label.value(), 0);
}

/// IPv6 in IPv4: outer IPv4 from the LB's IPv4 address to the server, protocol 41,
/// the inner traffic class as TOS, DF, TTL 64, a correct header checksum.
fn assert_v6_in_v4(input: &[u8], out: &[u8], l3: usize) {
    assert_frame(input, out, l3, 20, [0x08, 0x00]);
    let slice = Ipv4HeaderSlice::from_slice(&out[l3..]).expect("outer IPv4 header");
    let outer = slice.to_header();
    assert_eq!(outer.protocol, IpNumber::IPV6, "IPv6 in IPv4 (41)");
    assert_eq!((outer.source, outer.destination), (v4::LB_ADDR, v4::SERVER));
    assert_eq!(outer.time_to_live, 64);
    assert!(outer.dont_fragment, "IPv6 is not fragmented on the way");
    assert_eq!(usize::from(outer.total_len), input.len() - l3 + 20);
    assert_eq!(
        outer.header_checksum,
        outer.calc_header_checksum(),
        "outer checksum computed from scratch"
    );
    let inner = Ipv6HeaderSlice::from_slice(&input[l3..]).unwrap();
    assert_eq!(
        outer.dscp.value() << 2 | outer.ecn.value(),
        inner.traffic_class()
    );
}

#[test]
fn an_ipv4_vip_s_ipv6_real_server_gets_ipv4_in_ipv6() {
    let dp = mixed_dataplane();
    for payload in [&b""[..], b"x", b"odd length!", &[0xaa; 1400]] {
        let frame = tcp4(payload, false);
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, XDP_TX);
        assert_v4_in_v6(&frame, &out, 14);
    }
    let frame = tcp4(b"tagged", true);
    let (action, out) = run(&dp, &frame);
    assert_eq!(action, XDP_TX);
    assert_v4_in_v6(&frame, &out, 18);
    assert_eq!(dp.backend_stats(0).unwrap().packets, 5);
}

#[test]
fn an_ipv6_vip_s_ipv4_real_server_gets_ipv6_in_ipv4() {
    let dp = mixed_dataplane();
    for payload in [&b""[..], b"x", b"odd length!", &[0xaa; 1400]] {
        let frame = tcp6(payload, false);
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, XDP_TX);
        assert_v6_in_v4(&frame, &out, 14);
    }
    let frame = tcp6(b"tagged", true);
    let (action, out) = run(&dp, &frame);
    assert_eq!(action, XDP_TX);
    assert_v6_in_v4(&frame, &out, 18);
    assert_eq!(dp.backend_stats(1).unwrap().packets, 5);
}

/// The packet and its outer header must fit the egress MTU (200 here); a bigger one
/// goes to the kernel untouched and is counted, in both directions.
#[test]
fn the_mtu_rule_holds_across_families() {
    let dp = mixed_dataplane();
    // IPv4 in IPv6: 20 + 8 + 132 = 160, + 40 = 200.
    let fits = udp4(132);
    let (action, out) = run(&dp, &fits);
    assert_eq!(action, XDP_TX, "200 bytes fit an MTU of 200");
    assert_v4_in_v6(&fits, &out, 14);
    let too_big = udp4(133);
    assert_eq!(run(&dp, &too_big), (XDP_PASS, too_big.clone()));
    // IPv6 in IPv4: 40 + 8 + 132 = 180, + 20 = 200.
    let fits = udp6(132);
    let (action, out) = run(&dp, &fits);
    assert_eq!(action, XDP_TX, "200 bytes fit an MTU of 200");
    assert_v6_in_v4(&fits, &out, 14);
    let too_big = udp6(133);
    assert_eq!(run(&dp, &too_big), (XDP_PASS, too_big.clone()));
    assert_eq!(dp.global_stats().unwrap()["pass_too_big"], 2);
    assert_eq!(dp.backend_stats(2).unwrap().packets, 1);
    assert_eq!(dp.backend_stats(3).unwrap().packets, 1);
}
