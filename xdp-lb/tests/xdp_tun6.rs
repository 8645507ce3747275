//! TUN over IPv6 through BPF_PROG_TEST_RUN: the frame leaves as Ethernet | outer IPv6
//! (next header 41, LB → real server) | the original IPv6 packet byte for byte. The
//! outer header is decoded field by field (etherparse); a packet too big for the egress
//! MTU once encapsulated goes to the kernel, as on the IPv4 path.
mod support;

use support::tun::{self, CLIENT_MAC, GATEWAY_MAC, LB_MAC, v6::*};

use etherparse::{IpNumber, Ipv6HeaderSlice, PacketBuilder};
use support::test_run::{
    run,
    xdp_action::{XDP_PASS, XDP_TX},
};
use xdp_lb::dataplane::Dataplane;
use xdp_lb_common::{IPPROTO_TCP, IPPROTO_UDP};

/// One TUN real server (behind a gateway) for [VIP]:80/tcp; [VIP]:53/udp goes to a
/// second entry of the same server whose egress MTU is 200.
fn tun_dataplane() -> Dataplane {
    tun::tun_dataplane(
        &[(SERVER, LB_ADDR, 1500), (SERVER, LB_ADDR, 200)],
        &[(VIP, 80, IPPROTO_TCP, 0), (VIP, 53, IPPROTO_UDP, 1)],
    )
}

/// A TCP frame to [VIP]:80 with traffic class 0xb8 and flow label 0x12345 (which the
/// outer header must carry over); `vlan` adds one 802.1Q tag.
fn tcp(payload: &[u8], vlan: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    if vlan {
        eth.single_vlan(7.try_into().unwrap())
            .ipv6(CLIENT, VIP, 64)
            .tcp(40_000, 80, 1, 1000)
            .write(&mut f, payload)
            .unwrap();
    } else {
        eth.ipv6(CLIENT, VIP, 64)
            .tcp(40_000, 80, 1, 1000)
            .write(&mut f, payload)
            .unwrap();
    }
    let l3 = if vlan { 18 } else { 14 };
    // Version 6, traffic class 0xb8, flow label 0x12345 (not in the TCP checksum).
    f[l3..l3 + 4].copy_from_slice(&[0x6b, 0x81, 0x23, 0x45]);
    f
}

fn udp(sport: u16, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT, VIP, 64)
        .udp(sport, 53)
        .write(&mut f, &vec![7; payload_len])
        .unwrap();
    f
}

/// Checks an encapsulated frame against its input; `l3` is 14, or 18 with a tag.
fn assert_encapsulated(input: &[u8], out: &[u8], l3: usize) {
    assert_eq!(
        out.len(),
        input.len() + 40,
        "exactly one outer IPv6 header added"
    );
    assert_eq!(&out[0..6], &GATEWAY_MAC, "to the next hop");
    assert_eq!(&out[6..12], &LB_MAC, "from the egress interface");
    assert_eq!(&out[12..l3 - 2], &input[12..l3 - 2], "VLAN tag kept");
    assert_eq!(&out[l3 - 2..l3], &[0x86, 0xdd], "ethertype IPv6");
    let outer = Ipv6HeaderSlice::from_slice(&out[l3..])
        .expect("outer IPv6 header")
        .to_header();
    let inner = &input[l3..];
    let inner_header = Ipv6HeaderSlice::from_slice(inner).unwrap().to_header();
    assert_eq!(outer.next_header, IpNumber::IPV6, "IPv6 in IPv6 (41)");
    assert_eq!(outer.source, LB_ADDR, "from the LB's address");
    assert_eq!(outer.destination, SERVER);
    assert_eq!(outer.hop_limit, 64);
    assert_eq!(usize::from(outer.payload_length), inner.len());
    assert_eq!(
        (outer.traffic_class, outer.flow_label),
        (inner_header.traffic_class, inner_header.flow_label),
        "traffic class and flow label follow the inner packet"
    );
    assert_eq!(&out[l3 + 40..], inner, "the inner packet is untouched");
}

#[test]
fn packets_are_encapsulated_in_ipv6() {
    let dp = tun_dataplane();
    for payload in [&b""[..], b"x", b"odd length!", &[0xaa; 1400]] {
        let frame = tcp(payload, false);
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, XDP_TX);
        assert_encapsulated(&frame, &out, 14);
        let inner = Ipv6HeaderSlice::from_slice(&frame[14..])
            .unwrap()
            .to_header();
        assert_eq!(
            (inner.traffic_class, inner.flow_label.value()),
            (0xb8, 0x12345)
        );
    }
    assert_eq!(dp.backend_stats(0).unwrap().packets, 4);
}

#[test]
fn a_vlan_tag_stays_in_front_of_the_outer_header() {
    let dp = tun_dataplane();
    let frame = tcp(b"tagged", true);
    let (action, out) = run(&dp, &frame);
    assert_eq!(action, XDP_TX);
    assert_encapsulated(&frame, &out, 18);
}

/// The IPv4 path's rule: the packet and the 40-byte outer header must fit the egress
/// MTU; a bigger one goes to the kernel untouched and is counted.
#[test]
fn a_packet_too_big_for_the_egress_mtu_goes_to_the_kernel() {
    let dp = tun_dataplane();
    // 40 + 8 + 112 = a 160-byte packet, + 40 = the 200-byte MTU.
    let fits = udp(5000, 112);
    let (action, out) = run(&dp, &fits);
    assert_eq!(action, XDP_TX, "200 bytes fit an MTU of 200");
    assert_encapsulated(&fits, &out, 14);
    let too_big = udp(5001, 113);
    let (action, out) = run(&dp, &too_big);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, too_big, "passed untouched");
    assert_eq!(dp.global_stats().unwrap()["pass_too_big"], 1);
    assert_eq!(
        dp.backend_stats(1).unwrap().packets,
        1,
        "only the one that fit"
    );
}

/// An ICMPv6 "packet too big" about a TUN flow (a router on the client's path found the
/// real server's answer too big and told the VIP) goes to the flow's real server inside
/// the tunnel, for its path-MTU discovery.
#[test]
fn a_too_big_error_about_a_tun_flow_goes_to_its_real_server_in_the_tunnel() {
    let dp = tun_dataplane();
    let (action, _) = run(&dp, &tcp(b"hello", false));
    assert_eq!(action, XDP_TX);
    let mut answer = Vec::new();
    PacketBuilder::ipv6(VIP, CLIENT, 63)
        .tcp(80, 40_000, 5000, 64_000)
        .write(&mut answer, &[0u8; 1400])
        .unwrap();
    let router = [
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
    ];
    let mut error = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(router, VIP, 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut error, &answer[..1232])
        .unwrap();
    let (action, out) = run(&dp, &error);
    assert_eq!(action, XDP_TX);
    assert_encapsulated(&error, &out, 14);
    assert_eq!(dp.global_stats().unwrap()["icmp_to_real_server"], 1);
}
