//! TUN through BPF_PROG_TEST_RUN: the frame leaves as Ethernet | outer IPv4 (proto 4)
//! | the original IP packet byte for byte. The outer header is checked field by field
//! and its checksum recomputed from scratch; too-big packets go to the kernel.
mod support;

use support::tun::{self, CLIENT_MAC, GATEWAY_MAC, LB_MAC, v4::*};

use etherparse::{Ipv4HeaderSlice, PacketBuilder};
use support::test_run::{
    key, run,
    xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
};
use xdp_lb::dataplane::{Dataplane, ServiceSpec};
use xdp_lb_common::{BackendValue, FWD_TUN, IPPROTO_TCP, IPPROTO_UDP, SELECT_CURSOR, v4_mapped};

/// One TUN real server (behind a gateway) for VIP:80/tcp; VIP:53/udp goes to a second
/// entry of the same server whose egress MTU is tiny.
fn tun_dataplane() -> Dataplane {
    let (server, lb, vip) = (v4_mapped(SERVER), v4_mapped(LB_ADDR), v4_mapped(VIP));
    tun::tun_dataplane(
        &[(server, lb, 1500), (server, lb, 100)],
        &[(vip, 80, IPPROTO_TCP, 0), (vip, 53, IPPROTO_UDP, 1)],
    )
}

fn tcp(payload: &[u8], vlan: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    if vlan {
        eth.single_vlan(7.try_into().unwrap())
            .ipv4(CLIENT, VIP, 64)
            .tcp(40_000, 80, 1, 1000)
            .write(&mut f, payload)
            .unwrap();
    } else {
        eth.ipv4(CLIENT, VIP, 64)
            .tcp(40_000, 80, 1, 1000)
            .write(&mut f, payload)
            .unwrap();
    }
    f
}

/// Checks an encapsulated frame against its input; `l3` is 14, or 18 with a tag.
fn assert_encapsulated(input: &[u8], out: &[u8], l3: usize) {
    assert_eq!(
        out.len(),
        input.len() + 20,
        "exactly one outer IPv4 header added"
    );
    assert_eq!(&out[0..6], &GATEWAY_MAC, "to the next hop");
    assert_eq!(&out[6..12], &LB_MAC, "from the egress interface");
    assert_eq!(&out[12..l3 - 2], &input[12..l3 - 2], "VLAN tag kept");
    assert_eq!(&out[l3 - 2..l3], &[0x08, 0x00], "ethertype IPv4");
    let outer = Ipv4HeaderSlice::from_slice(&out[l3..])
        .expect("outer IPv4 header")
        .to_header();
    let inner = &input[l3..];
    assert_eq!(outer.protocol, etherparse::IpNumber::IPV4, "IP-in-IP");
    assert_eq!(outer.source, LB_ADDR);
    assert_eq!(outer.destination, SERVER);
    assert_eq!(outer.time_to_live, 64);
    assert_eq!(usize::from(outer.total_len), inner.len() + 20);
    assert_eq!(
        outer.dont_fragment,
        inner[6] & 0x40 != 0,
        "DF follows the inner packet"
    );
    assert_eq!(
        outer.header_checksum,
        outer.calc_header_checksum(),
        "outer checksum"
    );
    assert_eq!(&out[l3 + 20..], inner, "the inner packet is untouched");
}

#[test]
fn packets_are_encapsulated_in_ipip() {
    let dp = tun_dataplane();
    for payload in [&b""[..], b"x", b"odd length!", &[0xaa; 1400]] {
        let frame = tcp(payload, false);
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, XDP_TX);
        assert_encapsulated(&frame, &out, 14);
    }
}

#[test]
fn a_vlan_tag_stays_in_front_of_the_outer_header() {
    let dp = tun_dataplane();
    let frame = tcp(b"tagged", true);
    let (action, out) = run(&dp, &frame);
    assert_eq!(action, XDP_TX);
    assert_encapsulated(&frame, &out, 18);
}

#[test]
fn a_packet_too_big_for_the_egress_mtu_goes_to_the_kernel() {
    let dp = tun_dataplane();
    let mut fits = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(5000, 53)
        .write(&mut fits, &[0; 52]) // 80-byte packet + 20 = the 100-byte MTU
        .unwrap();
    let (action, out) = run(&dp, &fits);
    assert_eq!(action, XDP_TX, "100 bytes fit an MTU of 100");
    assert_encapsulated(&fits, &out, 14);
    let mut too_big = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(5001, 53)
        .write(&mut too_big, &[0; 53])
        .unwrap();
    let (action, out) = run(&dp, &too_big);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, too_big, "passed untouched");
    assert_eq!(dp.global_stats().unwrap()["pass_too_big"], 1);
}

/// The counters of backend `id`: (packets, bytes, new flows).
fn counted(dp: &Dataplane, id: u32) -> (u64, u64, u64) {
    let s = dp.backend_stats(id).unwrap();
    (s.packets, s.bytes, s.new_flows)
}

fn udp(sport: u16, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(sport, 53)
        .write(&mut f, &vec![7; payload_len])
        .unwrap();
    f
}

/// Five datagrams that fit and one too big for the egress MTU, in one flow: the real
/// server counts the five (the capture on its side shows five), the sixth counts as
/// pass_too_big only. A too-big first packet pins nothing, so the flow's first
/// forwarded packet is the one counted as its new flow.
#[test]
fn tun_counts_a_real_server_only_for_packets_it_forwards() {
    let dp = tun_dataplane();
    let small = udp(5100, 20);
    let big = udp(5100, 53); // 81-byte packet + 20 > the 100-byte MTU of backend 1
    for frame in [&small, &small, &small, &big, &small, &small] {
        run(&dp, frame);
    }
    assert_eq!(counted(&dp, 1), (5, 5 * small.len() as u64, 1));
    assert_eq!(dp.global_stats().unwrap()["pass_too_big"], 1);

    let (big, small) = (udp(5101, 53), udp(5101, 20));
    let (action, _) = run(&dp, &big);
    assert_eq!(action, XDP_PASS);
    assert_eq!(counted(&dp, 1), (5, 5 * small.len() as u64, 1));
    assert_eq!(dp.table_sizes().0, 1, "the passed packet pinned its flow");
    let (action, _) = run(&dp, &small);
    assert_eq!(action, XDP_TX);
    assert_eq!(counted(&dp, 1), (6, 6 * small.len() as u64, 2));
}

/// A TUN packet encapsulated but then not sent (no redirect target for the egress
/// interface) is dropped and counts only under drop_redirect.
#[test]
fn a_tun_packet_that_cannot_be_redirected_is_not_counted_for_the_server() {
    let mut dp = tun_dataplane();
    let unreachable = BackendValue {
        ifindex: 999,
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(2, &unreachable).unwrap();
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(VIP), 80, IPPROTO_TCP),
        id: 0,
        forwarding: FWD_TUN,
        select: SELECT_CURSOR,
        active: true,
        slots: vec![2],
        ..Default::default()
    })
    .unwrap();
    let (action, _) = run(&dp, &tcp(b"x", false));
    assert_eq!(action, XDP_DROP);
    assert_eq!(counted(&dp, 2), (0, 0, 0));
    assert_eq!(dp.global_stats().unwrap()["drop_redirect"], 1);
    assert_eq!(dp.table_sizes().0, 0);
}

#[test]
fn a_too_big_error_about_a_tun_flow_goes_to_its_real_server_in_the_tunnel() {
    let dp = tun_dataplane();
    let (action, _) = run(&dp, &tcp(b"hello", false));
    assert_eq!(action, XDP_TX);
    // The real server's answer (VIP:80 → CLIENT:40000) was too big for a router on the
    // client's path, which tells the VIP.
    let mut answer = Vec::new();
    PacketBuilder::ipv4(VIP, CLIENT, 63)
        .tcp(80, 40_000, 5000, 64_000)
        .write(&mut answer, &[0u8; 1400])
        .unwrap();
    let mut error = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4([198, 51, 100, 254], VIP, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut error, &answer[..28])
        .unwrap();
    let (action, out) = run(&dp, &error);
    assert_eq!(action, XDP_TX);
    assert_encapsulated(&error, &out, 14);
}
