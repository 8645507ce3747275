//! The XDP program through BPF_PROG_TEST_RUN: crafted frames in, action and bytes out.
//! A table of fixtures in Katran's style, plus stickiness, scheduling and counter
//! checks. Needs root (CAP_BPF); without it every test fails with that message.
mod support;

use etherparse::{IpNumber, Ipv4Header, Ipv4Options, PacketBuilder};
use xdp_lb::{
    dataplane::{Dataplane, ServiceSpec, filter::FilterEntry, stats::verdicts},
    schedule,
    sync::Install,
};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, FILTER_ALLOW, FILTER_DENY, FWD_DR, FlowCacheSet, FlowKey,
    FlowKeyV4, FlowValue, IPPROTO_TCP, IPPROTO_UDP, NatValue, SELECT_CURSOR, SELECT_HASH_FLOW,
    SELECT_HASH_SRC, ServiceKey, ServiceKeyV4, v4_mapped,
};

use support::test_run::{TEST_RUN_IFINDEX, key, load, run, served, tcp_flow, xdp_action};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const BACKEND_MACS: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0, 0x11],
    [0x02, 0, 0, 0, 0, 0x12],
    [0x02, 0, 0, 0, 0, 0x13],
];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const VIP: [u8; 4] = [192, 0, 2, 100];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
/// Three DR backends with weights 1:2:3 behind VIP:80/tcp, VIP:53/udp and [VIP6]:80/tcp,
/// an inactive service on :81, a service with no usable backend on :82 and one whose
/// backend's egress interface is no redirect target on :83.
fn dataplane() -> Dataplane {
    let mut dp = load();
    for (id, mac) in BACKEND_MACS.iter().enumerate() {
        let backend = BackendValue {
            addr: v4_mapped([192, 0, 2, 11 + id as u8]),
            dst_mac: *mac,
            src_mac: LB_MAC,
            ifindex: TEST_RUN_IFINDEX,
            flags: BACKEND_F_ACTIVE,
            port_be: 80u16.to_be(),
            mtu: 1500,
            tun_src: [0; 16],
        };
        dp.set_backend(id as u32, &backend).unwrap();
    }
    // Backend 3 leaves by an interface that is not a redirect target.
    let elsewhere = BackendValue {
        ifindex: 999,
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(3, &elsewhere).unwrap();
    let wrr = schedule::weighted_round_robin(&[1, 2, 3]).unwrap();
    let services = [
        (
            key(v4_mapped(VIP), 80, IPPROTO_TCP),
            0,
            true,
            wrr.slots.clone(),
        ),
        (
            key(v4_mapped(VIP), 53, IPPROTO_UDP),
            1,
            true,
            wrr.slots.clone(),
        ),
        (key(VIP6, 80, IPPROTO_TCP), 2, true, wrr.slots.clone()),
        (
            key(v4_mapped(VIP), 81, IPPROTO_TCP),
            3,
            false,
            wrr.slots.clone(),
        ),
        (key(v4_mapped(VIP), 82, IPPROTO_TCP), 4, true, Vec::new()),
        (key(v4_mapped(VIP), 83, IPPROTO_TCP), 5, true, vec![3]),
    ];
    for (key, id, active, slots) in services {
        dp.set_service(&ServiceSpec {
            key,
            id,
            forwarding: FWD_DR,
            select: wrr.select,
            active,
            slots,
            ..Default::default()
        })
        .unwrap();
    }
    dp
}

fn tcp4(sport: u16, dport: u16) -> Vec<u8> {
    tcp4_from(CLIENT, sport, dport)
}

fn tcp4_from(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, VIP, 64)
        .tcp(sport, dport, 1000, 64_000)
        .syn()
        .write(&mut frame, b"hello")
        .unwrap();
    frame
}

fn udp4(sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(sport, dport)
        .write(&mut frame, b"query")
        .unwrap();
    frame
}

fn tcp4_vlan(sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(42.try_into().unwrap())
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, dport, 1000, 64_000)
        .write(&mut frame, b"tagged")
        .unwrap();
    frame
}

fn tcp6(sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT6, VIP6, 64)
        .tcp(sport, dport, 1000, 64_000)
        .write(&mut frame, b"six")
        .unwrap();
    frame
}

/// An IPv4 TCP frame whose header carries 4 bytes of options (IHL 6).
fn tcp4_with_ip_options(sport: u16) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, VIP).unwrap();
    ip.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).unwrap(); // NOP NOP NOP EOL
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, 80, 1, 1000)
        .write(&mut frame, b"opts")
        .unwrap();
    assert_eq!(frame[14] & 0x0f, 6, "fixture must have IHL 6");
    frame
}

fn set_ipv4_frag(frame: &mut [u8], flags_offset: u16) {
    frame[14 + 6..14 + 8].copy_from_slice(&flags_offset.to_be_bytes());
}

/// DR: only the MACs change, everything after the Ethernet addresses is untouched.
fn assert_dr_rewrite(input: &[u8], output: &[u8]) -> usize {
    assert_eq!(
        output.len(),
        input.len(),
        "DR must not change the frame length"
    );
    assert_eq!(
        &output[6..12],
        &LB_MAC,
        "source MAC must be the egress interface's"
    );
    assert_eq!(
        &output[12..],
        &input[12..],
        "DR must not touch the IP header or payload"
    );
    BACKEND_MACS
        .iter()
        .position(|m| output[0..6] == *m)
        .unwrap_or_else(|| panic!("destination MAC {:02x?} is no backend's", &output[0..6]))
}

enum Expect {
    /// XDP_TX with MACs rewritten.
    Forward,
    /// XDP_PASS, frame unchanged.
    Pass,
    /// XDP_DROP.
    Drop,
}

#[test]
fn fixtures() {
    let dp = dataplane();
    let truncated_ip = tcp4(4000, 80)[..14 + 12].to_vec();
    let truncated_tcp = tcp4(4001, 80)[..14 + 20 + 10].to_vec();
    let mut first_fragment = tcp4(4002, 80);
    set_ipv4_frag(&mut first_fragment, 0x2000); // MF
    let mut later_fragment = tcp4(4003, 80);
    set_ipv4_frag(&mut later_fragment, 0x0010); // offset 128 bytes
    let mut ihl_too_small = tcp4(4004, 80);
    ihl_too_small[14] = 0x44;
    let mut tot_len_too_big = tcp4(4005, 80);
    tot_len_too_big[16..18].copy_from_slice(&1500u16.to_be_bytes());
    let mut bad_tcp_offset = tcp4(4006, 80);
    bad_tcp_offset[14 + 20 + 12] = 0x40;
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let fixtures: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "tcp to the VIP is forwarded",
            tcp4(5000, 80),
            Expect::Forward,
        ),
        (
            "udp to the VIP is forwarded",
            udp4(5000, 53),
            Expect::Forward,
        ),
        (
            "802.1Q tagged tcp to the VIP is forwarded",
            tcp4_vlan(5001, 80),
            Expect::Forward,
        ),
        (
            "ipv6 tcp to the VIP6 is forwarded",
            tcp6(5002, 80),
            Expect::Forward,
        ),
        (
            "ipv4 options are carried through",
            tcp4_with_ip_options(5003),
            Expect::Forward,
        ),
        (
            "tcp to a non-service port passes",
            tcp4(5004, 8080),
            Expect::Pass,
        ),
        (
            "udp to a tcp-only port passes",
            udp4(5005, 80),
            Expect::Pass,
        ),
        (
            "tcp from elsewhere to another address passes",
            {
                let mut f = tcp4(5006, 80);
                f[14 + 19] = 99; // destination 192.0.2.99
                // Checksum is not the program's business; only the address matters.
                f
            },
            Expect::Pass,
        ),
        ("an inactive service passes", tcp4(5007, 81), Expect::Pass),
        (
            "a service with no backend drops",
            tcp4(5008, 82),
            Expect::Drop,
        ),
        (
            "a backend behind a missing egress drops",
            tcp4(5010, 83),
            Expect::Drop,
        ),
        ("arp passes", arp, Expect::Pass),
        // BPF_PROG_TEST_RUN refuses frames below 14 bytes, so this is the shortest.
        (
            "an ethernet header alone passes",
            tcp4(5009, 80)[..14].to_vec(),
            Expect::Pass,
        ),
        ("a truncated ipv4 header passes", truncated_ip, Expect::Pass),
        ("a truncated tcp header passes", truncated_tcp, Expect::Pass),
        ("a first fragment passes", first_fragment, Expect::Pass),
        ("a later fragment passes", later_fragment, Expect::Pass),
        ("ihl below 5 passes", ihl_too_small, Expect::Pass),
        (
            "tot_len beyond the frame passes",
            tot_len_too_big,
            Expect::Pass,
        ),
        (
            "tcp data offset below 5 passes",
            bad_tcp_offset,
            Expect::Pass,
        ),
    ];
    let mut failures = Vec::new();
    for (what, frame, expect) in fixtures {
        let (action, out) = run(&dp, &frame);
        let ok = match expect {
            Expect::Forward => {
                action == xdp_action::XDP_TX && {
                    assert_dr_rewrite(&frame, &out);
                    true
                }
            }
            Expect::Pass => action == xdp_action::XDP_PASS && out == frame,
            Expect::Drop => action == xdp_action::XDP_DROP,
        };
        if !ok {
            failures.push(format!("{what}: action {action}"));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures failed:\n{}",
        failures.join("\n")
    );

    // `tx` and `redirect` are counted on the real servers (here backends 0 to 3).
    let reasons = verdicts(dp.global_stats().unwrap(), served(&dp, 0..4));
    assert_eq!(reasons["tx"], 5, "{reasons:?}");
    assert_eq!(reasons["redirect"], 0, "{reasons:?}");
    assert_eq!(reasons["pass_not_service"], 3, "{reasons:?}");
    assert_eq!(reasons["pass_inactive"], 1, "{reasons:?}");
    assert_eq!(reasons["drop_no_backend"], 1, "{reasons:?}");
    assert_eq!(reasons["drop_redirect"], 1, "{reasons:?}");
    assert_eq!(dp.service_stats(5).unwrap().drop_redirect, 1);
    assert_eq!(reasons["pass_not_ip"], 1, "{reasons:?}");
    assert_eq!(reasons["pass_truncated"], 4, "{reasons:?}");
    assert_eq!(reasons["pass_fragment"], 2, "{reasons:?}");
    assert_eq!(reasons["pass_malformed"], 2, "{reasons:?}");
}

/// A packet for no service leaves at the first look, before the full parse: what
/// else is wrong with it (here: it is a fragment) is not looked at, and it counts as
/// `pass_not_service`; the same defect in a packet for a VIP keeps its own reason.
#[test]
fn a_packet_for_no_service_leaves_at_the_first_look() {
    let dp = dataplane();
    let mut to_vip = tcp4(4100, 80);
    set_ipv4_frag(&mut to_vip, 0x2000); // MF
    let mut elsewhere = tcp4(4101, 9999);
    set_ipv4_frag(&mut elsewhere, 0x2000);
    for frame in [&to_vip, &elsewhere] {
        let (action, out) = run(&dp, frame);
        assert_eq!(action, xdp_action::XDP_PASS);
        assert_eq!(&out, frame, "passed untouched");
    }
    let reasons = dp.global_stats().unwrap();
    assert_eq!(reasons["pass_fragment"], 1, "{reasons:?}");
    assert_eq!(reasons["pass_not_service"], 1, "{reasons:?}");
}

/// IPv4 services are found through a direct-mapped index that the daemon derives from
/// SERVICES_V4: a slot two services share sends their packets to that map, a port
/// hashing to a slot another service holds is no service, a removed service's packets
/// go to the kernel, and a changed service is seen changed.
#[test]
fn services_sharing_an_index_slot_are_each_found_and_a_removed_one_is_gone() {
    let mut dp = dataplane();
    let slot = |port| {
        let key = ServiceKeyV4::stored(&key(v4_mapped(VIP), port, IPPROTO_TCP)).unwrap();
        ServiceKeyV4::index_slot(key.word())
    };
    // Two free ports whose keys share a slot, and one that hashes to :80's slot.
    let free = 1000..u16::MAX;
    let (p, q) = free
        .clone()
        .flat_map(|p| (p + 1..p + 2000).map(move |q| (p, q)))
        .find(|&(p, q)| slot(p) == slot(q))
        .unwrap();
    let r = free.clone().find(|&r| slot(r) == slot(80)).unwrap();
    let spec = |port, id, active| ServiceSpec {
        key: key(v4_mapped(VIP), port, IPPROTO_TCP),
        id,
        forwarding: FWD_DR,
        select: SELECT_CURSOR,
        active,
        slots: vec![0],
        ..Default::default()
    };
    dp.set_service(&spec(p, 6, true)).unwrap();
    dp.set_service(&spec(q, 7, true)).unwrap();
    let verdict = |dp: &Dataplane, port| run(dp, &tcp4(5000, port)).0;
    // Both services' only real server is backend 0.
    let to_0 = |dp: &Dataplane| dp.backend_stats(0).unwrap().packets;
    assert_eq!(verdict(&dp, p), xdp_action::XDP_TX);
    assert_eq!(verdict(&dp, q), xdp_action::XDP_TX);
    assert_eq!(to_0(&dp), 2);
    assert_eq!(
        verdict(&dp, r),
        xdp_action::XDP_PASS,
        "port {r} is no service"
    );
    assert_eq!(verdict(&dp, 80), xdp_action::XDP_TX, "its slot's holder");

    dp.remove_service(&key(v4_mapped(VIP), p, IPPROTO_TCP))
        .unwrap();
    assert_eq!(verdict(&dp, p), xdp_action::XDP_PASS, "removed");
    let before = to_0(&dp);
    assert_eq!(verdict(&dp, q), xdp_action::XDP_TX, "alone in the slot now");
    assert_eq!(to_0(&dp), before + 1);
    // A change of the service that now holds the slot alone reaches its entry.
    dp.set_service(&spec(q, 7, false)).unwrap();
    assert_eq!(verdict(&dp, q), xdp_action::XDP_PASS, "inactive");
    assert_eq!(dp.service_stats(7).unwrap().pass_inactive, 1);
    dp.remove_service(&key(v4_mapped(VIP), q, IPPROTO_TCP))
        .unwrap();
    assert_eq!(verdict(&dp, q), xdp_action::XDP_PASS);
    assert_eq!(
        dp.service_stats(7).unwrap().pass_inactive,
        1,
        "no service now"
    );
    let reasons = dp.global_stats().unwrap();
    assert_eq!(reasons["pass_not_service"], 3, "{reasons:?}");
    assert_eq!(reasons["pass_inactive"], 1, "{reasons:?}");
}

#[test]
fn new_flows_follow_the_interleaved_schedule_exactly() {
    let dp = dataplane();
    let picked: Vec<usize> = (0..12u16)
        .map(|i| {
            let frame = tcp4(10_000 + i, 80);
            let (action, out) = run(&dp, &frame);
            assert_eq!(action, xdp_action::XDP_TX);
            assert_dr_rewrite(&frame, &out)
        })
        .collect();
    // Two walks of the smooth 1:2:3 sequence [2, 1, 0, 2, 1, 2].
    assert_eq!(picked, vec![2, 1, 0, 2, 1, 2, 2, 1, 0, 2, 1, 2]);
    let per_backend: Vec<u64> = (0..3)
        .map(|b| dp.backend_stats(b).unwrap().new_flows)
        .collect();
    assert_eq!(per_backend, vec![2, 4, 6]);
}

#[test]
fn a_flow_sticks_to_its_backend() {
    let dp = dataplane();
    let flows: Vec<Vec<u8>> = (0..6u16).map(|i| tcp4(20_000 + i, 80)).collect();
    let first: Vec<usize> = flows
        .iter()
        .map(|f| assert_dr_rewrite(f, &run(&dp, f).1))
        .collect();
    for _ in 0..5 {
        let again: Vec<usize> = flows
            .iter()
            .map(|f| assert_dr_rewrite(f, &run(&dp, f).1))
            .collect();
        assert_eq!(again, first, "a known flow changed backend");
    }
    let stats = served(&dp, 0..3);
    assert_eq!(stats.packets, 36);
    assert_eq!(stats.new_flows, 6);
    assert_eq!(stats.bytes, 36 * flows[0].len() as u64);
}

/// The flow table is two maps (IPv4 flows under a 16-byte key, IPv6 ones under the
/// full one): an entry the daemon writes (as the NAT sync does) is the one the program
/// finds, and an entry the program writes is listed under its whole 5-tuple.
#[test]
fn each_family_s_flows_are_pinned_where_the_daemon_reads_and_writes_them() {
    let mut dp = dataplane();
    let flow = |src: [u8; 16], dst: [u8; 16], sport: u16| FlowKey {
        src,
        dst,
        sport_be: sport.to_be(),
        dport_be: 80u16.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    // Written by the daemon, to backend 0: a followed pin makes no new flow, so the
    // counters below tell whether the program found them.
    let pin = |key: FlowKey, service: u16| Install {
        flow: (
            key,
            FlowValue {
                backend: 0,
                service,
                ..Default::default()
            },
        ),
        reply: (key, NatValue::default()),
    };
    let written4 = flow(v4_mapped(CLIENT), v4_mapped(VIP), 30_000);
    let written6 = flow(CLIENT6, VIP6, 30_000);
    dp.install_synced(&[pin(written4, 0), pin(written6, 2)])
        .unwrap();
    for _ in 0..3 {
        let f4 = tcp4(30_000, 80);
        assert_eq!(assert_dr_rewrite(&f4, &run(&dp, &f4).1), 0);
        let f6 = tcp6(30_000, 80);
        assert_eq!(assert_dr_rewrite(&f6, &run(&dp, &f6).1), 0);
    }
    assert_eq!(
        served(&dp, 0..3).new_flows,
        0,
        "the IPv4 and IPv6 pins were followed"
    );

    // Written by the program: listed with their addresses, ports and backend.
    let f4 = tcp4(30_001, 80);
    let b4 = assert_dr_rewrite(&f4, &run(&dp, &f4).1) as u32;
    let f6 = tcp6(30_001, 80);
    let b6 = assert_dr_rewrite(&f6, &run(&dp, &f6).1) as u32;
    let listed: std::collections::HashMap<FlowKey, u32> = dp
        .flows()
        .map(|e| e.map(|(k, v)| (k, v.backend)).unwrap())
        .collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(listed[&written4], 0);
    assert_eq!(listed[&written6], 0);
    assert_eq!(listed[&flow(v4_mapped(CLIENT), v4_mapped(VIP), 30_001)], b4);
    assert_eq!(listed[&flow(CLIENT6, VIP6, 30_001)], b6);
    assert_eq!(dp.table_sizes().0, 4);
}

/// The flow table's capacity is the whole table whichever CPU inserts (the common
/// LRU, `STATE_MAP_FLAGS`): flows arriving on one CPU of several are all kept. With
/// an LRU list per CPU, one CPU could hold only its share (4096 / CPUs here) and
/// would evict established flows, as on a host with fewer RX queues than cores.
#[test]
fn new_flows_on_one_cpu_may_fill_the_whole_flow_table() {
    let dp = dataplane();
    // Three quarters of the 4096 entries of `load`: beyond one CPU's share on two
    // CPUs or more (on one, both flavours keep them all).
    let flows = 4096 * 3 / 4;
    for i in 0..flows as u16 {
        let frame = tcp4_from([10, 9, (i >> 8) as u8, i as u8], 40_000, 80);
        assert_eq!(run(&dp, &frame).0, xdp_action::XDP_TX);
    }
    assert_eq!(
        dp.flows().count(),
        flows,
        "flows evicted before the table was full"
    );
}

#[test]
fn a_flow_on_a_disabled_backend_is_rescheduled_and_others_stay() {
    let mut dp = dataplane();
    let flows: Vec<Vec<u8>> = (0..6u16).map(|i| tcp4(30_000 + i, 80)).collect();
    let first: Vec<usize> = flows
        .iter()
        .map(|f| assert_dr_rewrite(f, &run(&dp, f).1))
        .collect();
    // Disable backend 2 and remove it from the schedule, as a failed check would.
    let mut b2 = dp.backend(2).unwrap();
    b2.flags = 0;
    dp.set_backend(2, &b2).unwrap();
    let k = reweight_tcp_service(&mut dp, &[1, 2, 0]);
    assert_eq!(dp.schedule_of(&k).unwrap(), vec![1, 0, 1]);
    for (f, before) in flows.iter().zip(&first) {
        let now = assert_dr_rewrite(f, &run(&dp, f).1);
        if *before == 2 {
            assert_ne!(now, 2, "flow stayed on the disabled backend");
        } else {
            assert_eq!(now, *before, "a flow on a healthy backend moved");
        }
    }
    assert_eq!(dp.service_stats(0).unwrap().rescheduled, 3);
}

/// After a reload gave the service key to a service with another id (the old one was
/// removed and its slots handed on), flows pinned under the old id start afresh.
#[test]
fn a_pin_made_for_another_service_id_is_not_followed() {
    let mut dp = dataplane();
    let f = tcp4(31_000, 80);
    let before = assert_dr_rewrite(&f, &run(&dp, &f).1);
    // The same key under id 1, whose schedule holds only the other backends.
    let k = key(v4_mapped(VIP), 80, IPPROTO_TCP);
    let others: Vec<u32> = (0..3).filter(|b| *b != before as u32).collect();
    dp.set_service(&ServiceSpec {
        key: k,
        id: 1,
        forwarding: FWD_DR,
        select: SELECT_CURSOR,
        active: true,
        slots: others.clone(),
        ..Default::default()
    })
    .unwrap();
    let now = assert_dr_rewrite(&f, &run(&dp, &f).1);
    assert!(
        others.contains(&(now as u32)),
        "the flow followed a pin made under service id 0 to backend {now}"
    );
    assert_eq!(dp.service_stats(1).unwrap().rescheduled, 1);
    // Pinned again, under id 1: it stays.
    assert_eq!(assert_dr_rewrite(&f, &run(&dp, &f).1), now);
}

#[test]
fn weight_zero_backend_gets_no_new_flows() {
    let mut dp = dataplane();
    reweight_tcp_service(&mut dp, &[1, 0, 3]);
    for i in 0..40u16 {
        let f = tcp4(40_000 + i, 80);
        assert_ne!(assert_dr_rewrite(&f, &run(&dp, &f).1), 1);
    }
    assert_eq!(dp.backend_stats(1).unwrap().new_flows, 0);
    assert_eq!(dp.backend_stats(0).unwrap().new_flows, 10);
    assert_eq!(dp.backend_stats(2).unwrap().new_flows, 30);
}

/// Replaces the VIP:80/tcp schedule with one for these weights, as a health-check or
/// weight change would; returns the service key.
fn reweight_tcp_service(dp: &mut Dataplane, weights: &[u32]) -> ServiceKey {
    let k = key(v4_mapped(VIP), 80, IPPROTO_TCP);
    let wrr = schedule::weighted_round_robin(weights).unwrap();
    dp.set_service(&ServiceSpec {
        key: k,
        id: 0,
        forwarding: FWD_DR,
        select: wrr.select,
        active: true,
        slots: wrr.slots,
        ..Default::default()
    })
    .unwrap();
    k
}

/// The fixture data plane with VIP:80/tcp on a weighted (1:2:3) Maglev table hashed by
/// `select`, as the daemon builds it for `scheduler = "maglev"` (flow) or `"sh"` (source).
fn hashed(select: u8) -> Dataplane {
    let mut dp = dataplane();
    let keys: Vec<u64> = (0..3u8)
        .map(|i| schedule::backend_key([192, 0, 2, 11 + i].into(), 80))
        .collect();
    let table = schedule::maglev(&keys, &[1, 2, 3], select);
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(VIP), 80, IPPROTO_TCP),
        id: 0,
        forwarding: FWD_DR,
        select: table.select,
        active: true,
        slots: table.slots,
        ..Default::default()
    })
    .unwrap();
    dp
}

/// Asserts each backend's share of `picked` is within 30 % of its 1:2:3 weight share.
#[track_caller]
fn assert_one_two_three(picked: &[usize]) {
    for (b, weight) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        let got = picked.iter().filter(|p| **p == b).count() as f64;
        let expected = picked.len() as f64 * weight / 6.0;
        assert!(
            (got - expected).abs() <= expected * 0.3,
            "backend {b}: {got} of {} new flows, expected about {expected}",
            picked.len()
        );
    }
}

/// Two load balancers (two loaded programs, separate maps) with the same Maglev table
/// send every connection to the same real server, so a connection survives a failover
/// between them; the shares follow the weights.
#[test]
fn maglev_sends_a_connection_to_the_same_backend_on_every_lb() {
    let (lb_a, lb_b) = (hashed(SELECT_HASH_FLOW), hashed(SELECT_HASH_FLOW));
    let picked: Vec<usize> = (0..600u16)
        .map(|i| {
            let f = tcp4(50_000 + i, 80);
            let on_a = assert_dr_rewrite(&f, &run(&lb_a, &f).1);
            let on_b = assert_dr_rewrite(&f, &run(&lb_b, &f).1);
            assert_eq!(
                on_a,
                on_b,
                "source port {} went to different backends",
                50_000 + i
            );
            on_a
        })
        .collect();
    assert_one_two_three(&picked);
    assert!(
        picked.windows(2).any(|w| w[0] != w[1]),
        "one client's connections spread over the backends"
    );
}

/// Source hashing: every connection of one client goes to one real server (on every
/// load balancer); many clients spread by the weights.
#[test]
fn sh_keeps_a_client_on_one_backend_and_spreads_clients() {
    let (lb_a, lb_b) = (hashed(SELECT_HASH_SRC), hashed(SELECT_HASH_SRC));
    let first = assert_dr_rewrite(&tcp4(1_000, 80), &run(&lb_a, &tcp4(1_000, 80)).1);
    for port in 1_001..1_050u16 {
        let f = tcp4(port, 80);
        assert_eq!(assert_dr_rewrite(&f, &run(&lb_a, &f).1), first);
        assert_eq!(assert_dr_rewrite(&f, &run(&lb_b, &f).1), first);
    }
    let picked: Vec<usize> = (0..600u16)
        .map(|i| {
            let f = tcp4_from([10, 0, (i >> 8) as u8, i as u8], 40_000, 80);
            let on_a = assert_dr_rewrite(&f, &run(&lb_a, &f).1);
            assert_eq!(on_a, assert_dr_rewrite(&f, &run(&lb_b, &f).1));
            on_a
        })
        .collect();
    assert_one_two_three(&picked);
}

/// `xdp-lb explain` predicts a new connection's bucket with `xdp_lb_common`'s hashes,
/// the functions the program itself calls: for many 5-tuples (maglev) and clients
/// (sh), the program's pick is the real server in the predicted bucket of the live
/// schedule.
#[test]
fn the_shared_hashes_predict_the_program_s_pick() {
    use xdp_lb_common::{flow_hash, hash_words};
    for select in [SELECT_HASH_FLOW, SELECT_HASH_SRC] {
        let dp = hashed(select);
        let service = key(v4_mapped(VIP), 80, IPPROTO_TCP);
        let schedule = dp.schedule_of(&service).unwrap();
        let mut picked = std::collections::BTreeSet::new();
        for i in 0..300u16 {
            let (src, sport) = ([10, 1, (i >> 8) as u8, i as u8], 30_000 + i);
            let flow = tcp_flow(src, sport, VIP, 80);
            let hash = if select == SELECT_HASH_SRC {
                hash_words(&flow.src, 0)
            } else {
                flow_hash(&flow)
            };
            let predicted = schedule[(hash % schedule.len() as u32) as usize] as usize;
            let f = tcp4_from(src, sport, 80);
            let got = assert_dr_rewrite(&f, &run(&dp, &f).1);
            assert_eq!(
                got, predicted,
                "select {select}, {src:?}:{sport}: predicted backend {predicted}, the program \
                 picked {got}"
            );
            picked.insert(got);
        }
        assert_eq!(picked.len(), 3, "the picks spread over every backend");
    }
}

/// dh: a server group of 64 VIPs (one service, one schedule). Every connection to one
/// VIP goes to one real server, whoever the client; the VIPs spread over all three by
/// weight; the shared hash predicts each pick.
#[test]
fn dh_sends_each_destination_to_one_backend() {
    use xdp_lb_common::{SELECT_HASH_DST, hash_words};
    let mut dp = dataplane();
    let keys: Vec<u64> = (0..3u8)
        .map(|i| schedule::backend_key([192, 0, 2, 11 + i].into(), 80))
        .collect();
    let table = schedule::maglev(&keys, &[1, 2, 3], SELECT_HASH_DST);
    assert_eq!(table.select, SELECT_HASH_DST);
    let vips: Vec<[u8; 4]> = (0..64u8).map(|i| [203, 0, 113, i]).collect();
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(vips[0]), 80, IPPROTO_TCP),
        group_keys: vips[1..]
            .iter()
            .map(|v| (key(v4_mapped(*v), 80, IPPROTO_TCP), true))
            .collect(),
        id: 9,
        forwarding: FWD_DR,
        select: table.select,
        active: true,
        slots: table.slots.clone(),
        ..Default::default()
    })
    .unwrap();
    let mut homes = Vec::new();
    for vip in &vips {
        let mut seen = std::collections::BTreeSet::new();
        for client in 1..=8u8 {
            let mut frame = Vec::new();
            PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
                .ipv4([198, 51, 100, client], *vip, 64)
                .tcp(40_000 + u16::from(client), 80, 1, 1000)
                .syn()
                .write(&mut frame, b"dh")
                .unwrap();
            seen.insert(assert_dr_rewrite(&frame, &run(&dp, &frame).1));
        }
        assert_eq!(seen.len(), 1, "{vip:?} went to {seen:?}");
        let home = *seen.first().unwrap();
        let hash = hash_words(&v4_mapped(*vip), 0);
        let predicted = table.slots[(hash % table.slots.len() as u32) as usize] as usize;
        assert_eq!(home, predicted, "{vip:?}: predicted backend {predicted}");
        homes.push(home);
    }
    let count = |b| homes.iter().filter(|h| **h == b).count();
    assert!(
        count(0) < count(1) && count(1) < count(2) && count(0) > 0,
        "64 VIPs by weight 1:2:3: {:?}",
        (count(0), count(1), count(2))
    );
}

/// Backends are replaced copy-on-write: each update takes a fresh entry of the value
/// pool, and replaced entries wait out a grace period before reuse. Far more updates
/// in a row than the pool has entries must neither fail nor stall for long, and
/// traffic follows the last one.
#[test]
fn a_burst_of_backend_updates_waits_for_free_copies_and_the_last_one_wins() {
    let mut dp = dataplane();
    let started = std::time::Instant::now();
    let n = 3 * xdp_lb_common::BACKEND_VALUE_SLOTS;
    for i in 0..n {
        let mac = [0x02, 0xee, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let b = BackendValue {
            dst_mac: mac,
            ..dp.backend(0).unwrap()
        };
        dp.set_backend(0, &b).unwrap();
    }
    let took = started.elapsed();
    let last = n - 1;
    let want = [
        0x02,
        0xee,
        0,
        (last >> 16) as u8,
        (last >> 8) as u8,
        last as u8,
    ];
    assert_eq!(dp.backend(0).unwrap().dst_mac, want);
    // Only backend 0 on the schedule: every new flow must carry the last MAC.
    reweight_tcp_service(&mut dp, &[1, 0, 0]);
    for i in 0..4u16 {
        let (action, out) = run(&dp, &tcp4(60_000 + i, 80));
        assert_eq!(action, xdp_action::XDP_TX);
        assert_eq!(&out[0..6], &want);
    }
    // Each pool's worth of updates waits at most one grace period (50 ms).
    assert!(
        took < std::time::Duration::from_secs(10),
        "{n} updates took {took:?}"
    );
    // Removing a backend (all-zero value) needs no copy and stops its new flows.
    dp.set_backend(0, &BackendValue::default()).unwrap();
    let (action, _) = run(&dp, &tcp4(61_000, 80));
    assert_eq!(
        action,
        xdp_action::XDP_DROP,
        "a removed backend took a flow"
    );
}

/// A real server counts a packet (packets, bytes, new flow) only when the packet is
/// forwarded to it. A packet dropped on the forwarding path (here: its egress
/// interface is no redirect target) counts only under its reason, on the service's
/// drop counter, and pins no flow, so it cannot be counted later as a known flow.
#[test]
fn dr_counts_a_real_server_only_for_packets_it_forwards() {
    let dp = dataplane();
    let frame = tcp4(62_000, 80);
    let (action, out) = run(&dp, &frame);
    assert_eq!(action, xdp_action::XDP_TX);
    let b = assert_dr_rewrite(&frame, &out) as u32;
    let len = frame.len() as u64;
    let got = dp.backend_stats(b).unwrap();
    assert_eq!((got.packets, got.bytes, got.new_flows), (1, len, 1));
    let svc = served(&dp, 0..4);
    assert_eq!(
        (svc.packets, svc.bytes, svc.new_flows),
        (1, len, 1),
        "only {b}"
    );
    assert_eq!(dp.table_sizes().0, 1, "the forwarded flow is pinned");

    // Service :83 sends to backend 3, whose interface is no redirect target.
    for sport in [62_001, 62_001, 62_002] {
        let (action, _) = run(&dp, &tcp4(sport, 83));
        assert_eq!(action, xdp_action::XDP_DROP);
    }
    let dropped = dp.backend_stats(3).unwrap();
    assert_eq!(
        (dropped.packets, dropped.bytes, dropped.new_flows),
        (0, 0, 0),
        "a dropped packet counted for the real server"
    );
    let svc = dp.service_stats(5).unwrap();
    assert_eq!(svc.drop_redirect, 3, "{svc:?}");
    assert_eq!(dp.global_stats().unwrap()["drop_redirect"], 3);
    assert_eq!(dp.table_sizes().0, 1, "a dropped packet pinned its flow");
}

/// The fixture with VIP:80/tcp round robin over the three backends and persistence
/// (`secs`, client prefix `prefix` of the IPv4-mapped address).
fn persistent(secs: u32, prefix: u8) -> Dataplane {
    let mut dp = dataplane();
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(VIP), 80, IPPROTO_TCP),
        id: 0,
        forwarding: FWD_DR,
        select: SELECT_CURSOR,
        persist_secs: secs,
        persist_prefix: prefix,
        active: true,
        slots: vec![0, 1, 2],
        ..Default::default()
    })
    .unwrap();
    dp
}

/// rr alone sends a client's connections to every backend in turn; with persistence
/// they all go to its first one, and each client has its own.
#[test]
fn persistence_sends_a_clients_new_connections_to_one_backend() {
    let dp = persistent(300, 128);
    let mut homes = Vec::new();
    for client in 1..=3u8 {
        let src = [198, 51, 100, client];
        let first = assert_dr_rewrite(
            &tcp4_from(src, 10_000, 80),
            &run(&dp, &tcp4_from(src, 10_000, 80)).1,
        );
        for sport in 10_001..10_030u16 {
            let f = tcp4_from(src, sport, 80);
            assert_eq!(
                assert_dr_rewrite(&f, &run(&dp, &f).1),
                first,
                "client {client} port {sport}"
            );
        }
        homes.push(first);
    }
    homes.sort();
    homes.dedup();
    assert_eq!(
        homes.len(),
        3,
        "rr gave each client's first connection its own backend"
    );
    // Without persistence the same connections follow rr.
    let dp = persistent(0, 0);
    let picks: std::collections::BTreeSet<usize> = (20_000..20_006u16)
        .map(|sport| {
            let f = tcp4_from([198, 51, 100, 1], sport, 80);
            assert_dr_rewrite(&f, &run(&dp, &f).1)
        })
        .collect();
    assert_eq!(picks.len(), 3, "{picks:?}");
}

/// A server group: two keys (VIP:8080 and VIP:8443) with one value (id, schedule,
/// persistence). A client's connections to either member go to one backend, since the
/// persistence entry is keyed by the service id, and both members' packets count
/// under that id. Taking one key out leaves the other forwarding.
#[test]
fn a_group_s_keys_share_persistence_and_counters() {
    let mut dp = dataplane();
    let spec = ServiceSpec {
        key: key(v4_mapped(VIP), 8080, IPPROTO_TCP),
        active: true,
        group_keys: vec![(key(v4_mapped(VIP), 8443, IPPROTO_TCP), true)],
        id: 7,
        forwarding: FWD_DR,
        select: SELECT_CURSOR,
        persist_secs: 300,
        persist_prefix: 128,
        slots: vec![0, 1, 2],
        ..Default::default()
    };
    dp.set_service(&spec).unwrap();
    let mut homes = Vec::new();
    for client in 1..=3u8 {
        let src = [198, 51, 100, client];
        let mut seen = std::collections::BTreeSet::new();
        for sport in 40_000..40_020u16 {
            let port = if sport % 2 == 0 { 8080 } else { 8443 };
            let f = tcp4_from(src, sport, port);
            seen.insert(assert_dr_rewrite(&f, &run(&dp, &f).1));
        }
        assert_eq!(
            seen.len(),
            1,
            "client {client} went to {seen:?} over both members"
        );
        homes.extend(seen);
    }
    let first_home = homes[0];
    homes.sort();
    homes.dedup();
    assert_eq!(
        homes.len(),
        3,
        "rr gave each client its own backend: {homes:?}"
    );
    let stats = served(&dp, 0..3);
    assert_eq!((stats.packets, stats.new_flows), (60, 60), "{stats:?}");

    // The group loses VIP:8443: it goes to the kernel, VIP:8080 still forwards to
    // the client's backend.
    dp.remove_service(&key(v4_mapped(VIP), 8443, IPPROTO_TCP))
        .unwrap();
    let f = tcp4_from([198, 51, 100, 1], 41_001, 8443);
    assert_eq!(run(&dp, &f).0, xdp_action::XDP_PASS);
    let f = tcp4_from([198, 51, 100, 1], 41_002, 8080);
    assert_eq!(assert_dr_rewrite(&f, &run(&dp, &f).1), first_home);
}

/// keepalived's `persistence_granularity 255.255.255.0`: a /24 is one client.
#[test]
fn persistence_granularity_groups_a_network() {
    let dp = persistent(300, 96 + 24);
    let first = {
        let f = tcp4_from([198, 51, 100, 1], 30_000, 80);
        assert_dr_rewrite(&f, &run(&dp, &f).1)
    };
    for host in 2..20u8 {
        let f = tcp4_from([198, 51, 100, host], 30_000 + u16::from(host), 80);
        assert_eq!(
            assert_dr_rewrite(&f, &run(&dp, &f).1),
            first,
            "host .{host}"
        );
    }
    // Another /24 is another client: rr moves on.
    let f = tcp4_from([198, 51, 101, 1], 30_100, 80);
    assert_ne!(assert_dr_rewrite(&f, &run(&dp, &f).1), first);
}

/// Past the timeout since the client's last packet, its next connection is scheduled
/// afresh; a backend taken out (not active) is not followed either.
#[test]
fn persistence_ends_after_the_timeout_and_with_the_backend() {
    let mut dp = persistent(1, 128);
    let src = [198, 51, 100, 9];
    let first = {
        let f = tcp4_from(src, 40_000, 80);
        assert_dr_rewrite(&f, &run(&dp, &f).1)
    };
    // The time passing is what is tested here.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let f = tcp4_from(src, 40_001, 80);
    let after = assert_dr_rewrite(&f, &run(&dp, &f).1);
    assert_ne!(after, first, "rr moved on once the memory expired");
    let f = tcp4_from(src, 40_002, 80);
    assert_eq!(
        assert_dr_rewrite(&f, &run(&dp, &f).1),
        after,
        "and remembers the new one"
    );

    // Its backend goes out of service (inactive, and out of the schedule, as the
    // daemon does it): the client's next connection goes elsewhere.
    let mut gone = dp.backend(after as u32).unwrap();
    gone.flags = 0;
    dp.set_backend(after as u32, &gone).unwrap();
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(VIP), 80, IPPROTO_TCP),
        id: 0,
        forwarding: FWD_DR,
        select: SELECT_CURSOR,
        persist_secs: 1,
        persist_prefix: 128,
        active: true,
        slots: (0..3).filter(|b| *b != after as u32).collect(),
        ..Default::default()
    })
    .unwrap();
    let f = tcp4_from(src, 40_003, 80);
    let moved = assert_dr_rewrite(&f, &run(&dp, &f).1);
    assert!(moved != after, "a backend out of service is not followed");
}

/// `flow_table = false` (Katran's LRU bypass) on a Maglev service: no flow entry is
/// made, every packet of a connection is hashed to the same backend again, and only a
/// connection's first packet (a SYN) counts as a new flow.
#[test]
fn a_service_without_flow_entries_hashes_every_packet_and_counts_syns_only() {
    let mut dp = hashed(SELECT_HASH_FLOW);
    let k = key(v4_mapped(VIP), 80, IPPROTO_TCP);
    let spec_service = |dp: &mut Dataplane, no_flow_table| {
        let keys: Vec<u64> = (0..3u8)
            .map(|i| schedule::backend_key([192, 0, 2, 11 + i].into(), 80))
            .collect();
        let table = schedule::maglev(&keys, &[1, 2, 3], SELECT_HASH_FLOW);
        dp.set_service(&ServiceSpec {
            key: k,
            id: 0,
            forwarding: FWD_DR,
            select: table.select,
            active: true,
            slots: table.slots,
            no_flow_table,
            ..Default::default()
        })
        .unwrap();
    };
    spec_service(&mut dp, true);
    let syn = tcp4(50_000, 80);
    let first = assert_dr_rewrite(&syn, &run(&dp, &syn).1);
    // The same connection's later packets (ACK set): same backend, not new.
    let mut ack = tcp4(50_000, 80);
    ack[47] = 0x10;
    for _ in 0..5 {
        assert_eq!(assert_dr_rewrite(&ack, &run(&dp, &ack).1), first);
    }
    assert_eq!(dp.flows().count(), 0, "no flow entry was made");
    assert_eq!(served(&dp, 0..3).new_flows, 1, "one SYN, one new flow");
    // With the table (the default) the first packet pins the flow.
    spec_service(&mut dp, false);
    let other = tcp4(50_001, 80);
    assert_dr_rewrite(&other, &run(&dp, &other).1);
    assert_eq!(dp.flows().count(), 1);
}

/// The flood guard: at most `new_flow_rate` flow-table inserts per second per CPU. A
/// burst of new flows beyond it is forwarded without entries (counted), so the
/// established flows in the table are not evicted and keep their backend.
#[test]
fn the_flood_guard_forwards_new_flows_beyond_its_rate_without_entries() {
    let mut dp = dataplane();
    dp.set_new_flow_rate(5).unwrap();
    let established: Vec<(Vec<u8>, usize)> = (0..5u16)
        .map(|i| {
            let f = tcp4(60_000 + i, 80);
            let backend = assert_dr_rewrite(&f, &run(&dp, &f).1);
            (f, backend)
        })
        .collect();
    // The bucket is empty now: a burst of 20 more new flows is forwarded, unpinned.
    for i in 0..20u16 {
        let f = tcp4_from([203, 0, 113, (i % 250) as u8], 61_000 + i, 80);
        assert_dr_rewrite(&f, &run(&dp, &f).1);
    }
    assert_eq!(dp.flows().count(), 5, "only the first five were pinned");
    let stats = dp.service_stats(0).unwrap();
    assert_eq!(stats.unpinned, 20);
    let traffic = served(&dp, 0..3);
    assert_eq!(traffic.packets, 25, "every one forwarded");
    assert_eq!(traffic.new_flows, 5, "an unpinned flow is no new flow");
    for (f, backend) in &established {
        assert_eq!(
            assert_dr_rewrite(f, &run(&dp, f).1),
            *backend,
            "established flows keep their backend"
        );
    }
    // Without a rate (the default) every new flow is pinned.
    dp.set_new_flow_rate(0).unwrap();
    let f = tcp4(62_000, 80);
    assert_dr_rewrite(&f, &run(&dp, &f).1);
    assert_eq!(dp.flows().count(), 6);
}

/// A TCP segment of an open connection (ACK, no SYN) from `src`.
fn tcp4_ack_from(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, VIP, 64)
        .tcp(sport, dport, 1001, 64_000)
        .ack(1)
        .write(&mut frame, b"GET /")
        .unwrap();
    frame
}

/// Runs SYNs from fresh sources until the flood guard's bucket of connection attempts
/// is dry (`rate` + 1 of them: the first `rate` are pinned).
fn run_dry(dp: &Dataplane, rate: u16) {
    for i in 0..=rate {
        let f = tcp4_from([203, 0, 113, 200], 40_000 + i, 80);
        assert_dr_rewrite(&f, &run(dp, &f).1);
    }
}

/// Once a flood is on, a SYN is not pinned even when a token came back meanwhile:
/// however long a flood of spoofed SYNs lasts, it inserts no more than the bucket
/// held when it began. A second after the last SYN found the bucket dry, SYNs are
/// pinned again. (The sleeps are the refill and the flood's hold being timed, not
/// waits for an event.)
#[test]
fn a_syn_flood_pins_nothing_more_once_the_bucket_ran_dry() {
    let mut dp = dataplane();
    dp.set_new_flow_rate(5).unwrap();
    run_dry(&dp, 5);
    assert_eq!(dp.flows().count(), 5, "a bucketful pinned, then none");
    // At 5 a second, a token is back after 200 ms; the flood holds for a second.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let f = tcp4_from([203, 0, 113, 201], 50_000, 80);
    assert_dr_rewrite(&f, &run(&dp, &f).1);
    assert_eq!(dp.flows().count(), 5, "no SYN is pinned during a flood");
    assert_eq!(dp.service_stats(0).unwrap().unpinned, 2);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let f = tcp4_from([203, 0, 113, 202], 50_001, 80);
    assert_dr_rewrite(&f, &run(&dp, &f).1);
    assert_eq!(
        dp.flows().count(),
        6,
        "the flood is over: SYNs are pinned again"
    );
}

/// A connection opened during a flood: its SYN is left unpinned and picked by its
/// flow's hash (wrr would send its next packet to the next server in turn), so a
/// retransmission and the handshake's ACK reach the same real server; the ACK is
/// pinned from a bucket of its own, which the SYNs do not drain.
#[test]
fn a_connection_opened_during_a_syn_flood_keeps_its_server_and_is_pinned_by_its_ack() {
    let mut dp = dataplane();
    dp.set_new_flow_rate(5).unwrap();
    run_dry(&dp, 5);
    let mut servers = std::collections::BTreeSet::new();
    for i in 0..5u8 {
        let src = [198, 51, 100, 10 + i];
        let syn = tcp4_from(src, 33_000, 80);
        let server = assert_dr_rewrite(&syn, &run(&dp, &syn).1);
        assert_eq!(
            dp.flows().count(),
            5 + usize::from(i),
            "SYN {i} left unpinned"
        );
        assert_eq!(
            assert_dr_rewrite(&syn, &run(&dp, &syn).1),
            server,
            "a retransmitted SYN reaches the same server"
        );
        let ack = tcp4_ack_from(src, 33_000, 80);
        assert_eq!(
            assert_dr_rewrite(&ack, &run(&dp, &ack).1),
            server,
            "client {i}"
        );
        assert_eq!(
            dp.flows().count(),
            6 + usize::from(i),
            "the ACK pins the flow"
        );
        assert_eq!(assert_dr_rewrite(&ack, &run(&dp, &ack).1), server);
        servers.insert(server);
    }
    assert!(servers.len() > 1, "hashed picks spread: {servers:?}");
    // 6 SYNs over the bucket, two per client.
    let stats = dp.service_stats(0).unwrap();
    assert_eq!(stats.unpinned, 1 + 2 * 5);
    // New flows: the bucketful of SYNs, then each connection once, at its ACK. So a
    // real server's new flows minus its closed ones (lc's and wlc's active
    // connections) count no spoofed SYN.
    let by_servers: u64 = (0..3).map(|b| dp.backend_stats(b).unwrap().new_flows).sum();
    assert_eq!(by_servers, 5 + 5);
}

/// A handshake in flight when the guard is turned off (a reload during a flood): its
/// SYN went unpinned, picked by hash; its ACK, finding no entry and no guard, is
/// picked by hash too, not by wrr's turn, so it reaches the SYN's server and pins the
/// flow there.
#[test]
fn a_handshake_in_flight_keeps_its_server_when_the_guard_is_turned_off() {
    let mut dp = dataplane();
    dp.set_new_flow_rate(5).unwrap();
    run_dry(&dp, 5);
    let mut syn_servers = Vec::new();
    for i in 0..6u8 {
        let syn = tcp4_from([198, 51, 100, 20 + i], 34_000, 80);
        syn_servers.push(assert_dr_rewrite(&syn, &run(&dp, &syn).1));
    }
    assert_eq!(dp.flows().count(), 5, "the six SYNs went unpinned");
    dp.set_new_flow_rate(0).unwrap();
    for (i, server) in syn_servers.iter().enumerate() {
        let src = [198, 51, 100, 20 + i as u8];
        let ack = tcp4_ack_from(src, 34_000, 80);
        assert_eq!(
            assert_dr_rewrite(&ack, &run(&dp, &ack).1),
            *server,
            "client {i}'s ACK"
        );
        // Pinned now: later segments stay, whatever the hash says.
        assert_eq!(assert_dr_rewrite(&ack, &run(&dp, &ack).1), *server);
    }
    assert_eq!(dp.flows().count(), 5 + 6, "each ACK pinned its flow");
    // A SYN is still scheduled by wrr's turn: six in a row (one turn of weights 1, 2
    // and 3) land in exactly those shares.
    let mut shares = [0; 3];
    for i in 0..6u16 {
        let syn = tcp4_from([198, 51, 100, 40], 35_000 + i, 80);
        shares[assert_dr_rewrite(&syn, &run(&dp, &syn).1)] += 1;
    }
    assert_eq!(shares, [1, 2, 3]);
}

/// lc and wlc services' DR flows carry a clock, and each real server counts the flows
/// that saw their first FIN or RST; a walk of the table counts active and inactive
/// connections by real server, leaves out other services' unstamped flows, and
/// collects the idle ones.
/// VIP:84/tcp, a service that counts connections (its flows carry a clock), on
/// backend 0 alone.
fn add_aging_service(dp: &mut Dataplane) {
    dp.set_service(&ServiceSpec {
        key: key(v4_mapped(VIP), 84, IPPROTO_TCP),
        id: 6,
        forwarding: FWD_DR,
        select: SELECT_CURSOR,
        active: true,
        ages: true,
        slots: vec![0],
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn aging_services_stamp_their_flows_and_count_closes_per_real_server() {
    let mut dp = dataplane();
    let timeouts = xdp_lb::config::NatTimeouts::default();
    dp.set_nat(&Default::default(), &timeouts).unwrap();
    // :84 counts connections, on backend 0 alone; :80 (wrr) does not.
    add_aging_service(&mut dp);
    let with_flags = |sport: u16, dport: u16, flags: u8| {
        let mut f = tcp4(sport, dport);
        f[47] = flags;
        f
    };
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;
    const RST: u8 = 0x04;
    for sport in 40_000..40_005 {
        let (action, _) = run(&dp, &tcp4(sport, 84));
        assert_eq!(action, xdp_action::XDP_TX);
    }
    let (action, _) = run(&dp, &tcp4(40_100, 80));
    assert_eq!(action, xdp_action::XDP_TX);
    let stamped: Vec<bool> = dp
        .flows()
        .map(|e| {
            let (k, v) = e.unwrap();
            assert_eq!(v.last_seen_ns != 0, u16::from_be(k.dport_be) == 84, "{k:?}");
            v.last_seen_ns != 0
        })
        .collect();
    assert_eq!(stamped.len(), 6);

    // One connection closes (FIN twice, counted once), one ends with an RST, one is
    // born with an RST; the others keep sending ACKs.
    for frame in [
        with_flags(40_000, 84, FIN_ACK),
        with_flags(40_000, 84, FIN_ACK),
        with_flags(40_001, 84, RST),
        with_flags(40_009, 84, RST),
        with_flags(40_002, 84, ACK),
        // The wrr service's FIN: counted on its own real server (not 0), and not in
        // any load below (its flow carries no clock).
        with_flags(40_100, 80, FIN_ACK),
    ] {
        assert_eq!(run(&dp, &frame).0, xdp_action::XDP_TX);
    }
    let counters = dp.backend_counters([0]).unwrap()[&0];
    assert_eq!((counters.new_flows, counters.closed_flows), (6, 3));
    let wrr_closed: u64 = (1..3)
        .map(|b| dp.backend_stats(b).unwrap().closed_flows)
        .sum();
    assert_eq!(wrr_closed, 1);

    let now = xdp_lb::dataplane::nat::monotonic_ns();
    let sweep = dp.expire_idle(&timeouts, now).unwrap();
    assert_eq!(sweep.gc.flows_removed, 0);
    assert_eq!(sweep.gc.flows_left, 7);
    let load = sweep.loads[&0];
    assert_eq!((load.active, load.inactive), (3, 3));
    assert_eq!(sweep.loads.len(), 1, "only the aging service's backend");
    // Past the TCP timeout the established ones go; past the FIN timeout, all.
    let later = now + timeouts.tcp.as_nanos() as u64 + 1;
    let sweep = dp.expire_idle(&timeouts, later).unwrap();
    assert_eq!(sweep.gc.flows_removed, 6);
    assert_eq!(sweep.gc.flows_left, 1, "the wrr flow is left to the LRU");
    assert!(sweep.loads.is_empty());
}

fn tcp6_from(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src, dst, 64)
        .tcp(sport, dport, 1000, 64_000)
        .write(&mut frame, b"six")
        .unwrap();
    frame
}

fn v6(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// One filter entry: `addr/len` in `scope` decided by rule `rule`.
fn rule(scope: u32, addr: &str, len: u8, rule: u32, action: u32) -> FilterEntry {
    FilterEntry {
        scope,
        addr: addr.parse().unwrap(),
        prefix_len: len,
        rule,
        action,
    }
}

/// `dataplane()` with source-filter rules: global deny 198.51.100.64/26 (rule 0),
/// 203.0.113.0/24 (0) and 2001:db8:bad::/48 (5); VIP:80 (id 0) allows 198.51.100.0/24
/// (1), denies 198.51.100.128/25 (2), allows 198.51.100.200/32 (3), default deny (4);
/// [VIP6]:80 (id 2) allows 2001:db8::/32 (6), denies 2001:db8:1::/48 (7), allows
/// 2001:db8:1:7::/64 (8), default deny (9); VIP:84 (id 6) only denies 198.51.100.0/24
/// (10). VIP:53/udp (id 1) has no rules of its own. All in `generation`.
fn filtered(generation: u32) -> Dataplane {
    let mut dp = dataplane();
    let (allow, deny) = (FILTER_ALLOW, FILTER_DENY);
    let entries = [
        rule(0, "198.51.100.64", 26, 0, deny),
        rule(0, "203.0.113.0", 24, 0, deny),
        rule(0, "2001:db8:bad::", 48, 5, deny),
        rule(1, "198.51.100.0", 24, 1, allow),
        rule(1, "198.51.100.128", 25, 2, deny),
        rule(1, "198.51.100.200", 32, 3, allow),
        rule(1, "0.0.0.0", 0, 4, deny),
        rule(1, "::", 0, 4, deny),
        rule(3, "2001:db8::", 32, 6, allow),
        rule(3, "2001:db8:1::", 48, 7, deny),
        rule(3, "2001:db8:1:7::", 64, 8, allow),
        rule(3, "0.0.0.0", 0, 9, deny),
        rule(3, "::", 0, 9, deny),
        rule(7, "198.51.100.0", 24, 10, deny),
    ];
    dp.set_filter(generation, &entries).unwrap();
    let wrr = schedule::weighted_round_robin(&[1, 2, 3]).unwrap();
    for (key, id, filtered) in [
        (key(v4_mapped(VIP), 80, IPPROTO_TCP), 0, true),
        (key(v4_mapped(VIP), 53, IPPROTO_UDP), 1, false),
        (key(VIP6, 80, IPPROTO_TCP), 2, true),
        (key(v4_mapped(VIP), 84, IPPROTO_TCP), 6, true),
    ] {
        dp.set_service(&ServiceSpec {
            key,
            id,
            forwarding: FWD_DR,
            select: wrr.select,
            active: true,
            filtered,
            global_filter: true,
            filter_generation: generation,
            slots: wrr.slots.clone(),
            ..Default::default()
        })
        .unwrap();
    }
    dp
}

/// The source filter through BPF_PROG_TEST_RUN: each frame's action, then the rule
/// that decided it by its counter.
#[test]
fn the_source_filter_allows_and_denies_by_the_longest_prefix_after_the_global_list() {
    let dp = filtered(0);
    let from = |src: [u8; 4], dport| tcp4_from(src, 7000, dport);
    let udp_from = |src: [u8; 4]| {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ipv4(src, VIP, 64)
            .udp(7000, 53)
            .write(&mut frame, b"query")
            .unwrap();
        frame
    };
    let to_vip6 = |src: &str| tcp6_from(v6(src), VIP6, 7000, 80);
    // (what, frame, expected action, the rule that decides it)
    let fixtures: Vec<(&str, Vec<u8>, Expect, Option<u32>)> = vec![
        (
            "ipv4: an allowed source is forwarded",
            from([198, 51, 100, 7], 80),
            Expect::Forward,
            Some(1),
        ),
        (
            "ipv4: a denied /25 inside the allowed /24 drops (longest prefix wins)",
            from([198, 51, 100, 130], 80),
            Expect::Drop,
            Some(2),
        ),
        (
            "ipv4: an allowed /32 inside that denied /25 is forwarded",
            from([198, 51, 100, 200], 80),
            Expect::Forward,
            Some(3),
        ),
        (
            "ipv4: a source no allow holds drops (the default deny)",
            from([192, 0, 2, 50], 80),
            Expect::Drop,
            Some(4),
        ),
        (
            "ipv4: the global deny drops a source its service allows",
            from([198, 51, 100, 70], 80),
            Expect::Drop,
            Some(0),
        ),
        (
            "ipv4: a service that only denies drops what it denies",
            from([198, 51, 100, 7], 84),
            Expect::Drop,
            Some(10),
        ),
        (
            "ipv4: a service that only denies forwards everyone else",
            from([192, 0, 2, 50], 84),
            Expect::Forward,
            None,
        ),
        (
            "a service without rules forwards a source another service denies",
            udp_from([192, 0, 2, 50]),
            Expect::Forward,
            None,
        ),
        (
            "a service without rules still meets the global deny",
            udp_from([203, 0, 113, 9]),
            Expect::Drop,
            Some(0),
        ),
        (
            "traffic to no VIP from a globally denied source passes",
            from([203, 0, 113, 9], 8080),
            Expect::Pass,
            None,
        ),
        (
            "ipv6: an allowed source is forwarded",
            to_vip6("2001:db8:2::7"),
            Expect::Forward,
            Some(6),
        ),
        (
            "ipv6: a denied /48 inside the allowed /32 drops",
            to_vip6("2001:db8:1::7"),
            Expect::Drop,
            Some(7),
        ),
        (
            "ipv6: an allowed /64 inside that /48 is forwarded",
            to_vip6("2001:db8:1:7::9"),
            Expect::Forward,
            Some(8),
        ),
        (
            "ipv6: a source no allow holds drops",
            to_vip6("2001:db9::7"),
            Expect::Drop,
            Some(9),
        ),
        (
            "ipv6: the global deny drops first",
            to_vip6("2001:db8:bad::1"),
            Expect::Drop,
            Some(5),
        ),
        (
            // An IPv4 service is looked up by IPv4 packets only (its own map).
            "ipv6 to the ipv4 service's mapped address is no service's: to the kernel",
            tcp6_from(v6("2001:db8:2::7"), v4_mapped(VIP), 7000, 80),
            Expect::Pass,
            None,
        ),
    ];
    let rules =
        |dp: &Dataplane| -> Vec<u64> { (0..11).map(|r| dp.rule_packets(r).unwrap()).collect() };
    let mut failures = Vec::new();
    let mut drops = 0;
    for (what, frame, expect, decided_by) in fixtures {
        let before = rules(&dp);
        let (action, out) = run(&dp, &frame);
        let ok = match expect {
            Expect::Forward => {
                action == xdp_action::XDP_TX && {
                    assert_dr_rewrite(&frame, &out);
                    true
                }
            }
            Expect::Pass => action == xdp_action::XDP_PASS && out == frame,
            Expect::Drop => {
                drops += 1;
                action == xdp_action::XDP_DROP
            }
        };
        let after = rules(&dp);
        let counted: Vec<u32> = (0..11u32)
            .filter(|&r| after[r as usize] != before[r as usize])
            .collect();
        let wanted: Vec<u32> = decided_by.into_iter().collect();
        if !ok || counted != wanted {
            failures.push(format!(
                "{what}: action {action}, counted by rules {counted:?}, expected {wanted:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures failed:\n{}",
        failures.join("\n")
    );
    let reasons = dp.global_stats().unwrap();
    assert_eq!(reasons["drop_filtered"], drops, "{reasons:?}");
    assert_eq!(reasons["pass_not_service"], 2, "{reasons:?}");
}

/// A changed rule set is written into the generation no service reads: packets keep
/// the old rules until their service's value switches, then take the new ones whole.
#[test]
fn the_source_filter_switches_generations_with_the_service_value() {
    let mut dp = filtered(0);
    let allowed = tcp4_from([198, 51, 100, 7], 7100, 80);
    assert_eq!(run(&dp, &allowed).0, xdp_action::XDP_TX);
    // Generation 1: the same service now denies that /24.
    dp.set_filter(1, &[rule(1, "198.51.100.0", 24, 11, FILTER_DENY)])
        .unwrap();
    assert_eq!(
        run(&dp, &allowed).0,
        xdp_action::XDP_TX,
        "the service still reads generation 0"
    );
    let spec = |generation| ServiceSpec {
        key: key(v4_mapped(VIP), 80, IPPROTO_TCP),
        id: 0,
        forwarding: FWD_DR,
        select: SELECT_CURSOR,
        active: true,
        filtered: true,
        filter_generation: generation,
        slots: vec![0],
        ..Default::default()
    };
    dp.set_service(&spec(1)).unwrap();
    assert_eq!(run(&dp, &allowed).0, xdp_action::XDP_DROP);
    assert_eq!(dp.rule_packets(11).unwrap(), 1);
    // Generation 0 emptied; back on it with no rules the service forwards again.
    dp.set_filter(0, &[]).unwrap();
    dp.set_service(&ServiceSpec {
        filtered: false,
        ..spec(0)
    })
    .unwrap();
    assert_eq!(run(&dp, &allowed).0, xdp_action::XDP_TX);
    dp.set_service(&spec(0)).unwrap();
    assert_eq!(
        run(&dp, &allowed).0,
        xdp_action::XDP_TX,
        "generation 0 holds nothing any more: no rule, allowed"
    );
}

/// The daemon's model of the filter (`xdp_lb::filter::decide`) names the rule the
/// program counts, for a grid of sources over a configuration's rules written as the
/// daemon writes them (`ServiceTable::filter_entries`, `ServiceTable::spec`).
#[test]
fn the_filter_model_predicts_the_rule_the_program_counts() {
    let text = r#"
[dataplane]
interfaces = ["eth0"]

[filter]
deny = ["198.51.100.64/26", "2001:db8:bad::/48"]

[[virtual_server]]
vip = "192.0.2.100"
port = 80
allow = ["198.51.100.0/24", "198.51.100.200"]
deny = ["198.51.100.128/25"]
  [[virtual_server.real_server]]
  address = "192.0.2.11"

[[virtual_server]]
vip = "2001:db8::64"
port = 80
deny = ["2001:db8:1::/48"]
allow = ["2001:db8:1:7::/64"]
  [[virtual_server.real_server]]
  address = "2001:db8::11"
"#;
    let config = xdp_lb::config::parse(text, "filter.toml").unwrap();
    let table = xdp_lb::services::ServiceTable::from_config(&config).unwrap();
    let mut dp = load();
    dp.set_filter(0, &table.filter_entries()).unwrap();
    for index in 0..table.services.len() {
        let mut spec = table.spec(index, &|_| true).unwrap();
        spec.slots = vec![0];
        dp.set_service(&spec).unwrap();
    }
    let counters = |dp: &Dataplane| -> Vec<u64> {
        table
            .filter
            .iter()
            .map(|r| dp.rule_packets(r.number).unwrap())
            .collect()
    };
    let mut sources: Vec<std::net::IpAddr> = (0..=255u8)
        .step_by(5)
        .map(|last| std::net::Ipv4Addr::new(198, 51, 100, last).into())
        .collect();
    sources.push("192.0.2.50".parse().unwrap());
    for text in [
        "2001:db8:1::5",
        "2001:db8:1:7::5",
        "2001:db8:2::5",
        "2001:db8:bad::5",
    ] {
        sources.push(text.parse().unwrap());
    }
    for src in sources {
        let (index, frame) = match src {
            std::net::IpAddr::V4(a) => (0, tcp4_from(a.octets(), 7200, 80)),
            std::net::IpAddr::V6(a) => (1, tcp6_from(a.octets(), v6("2001:db8::64"), 7200, 80)),
        };
        let before = counters(&dp);
        run(&dp, &frame);
        let after = counters(&dp);
        let counted: Vec<u32> = table
            .filter
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a != b)
            .map(|(r, _)| r.number)
            .collect();
        let predicted: Vec<u32> =
            xdp_lb::filter::decide(&table.filter, &table.services[index].members[0].key, src)
                .map(|r| r.number)
                .into_iter()
                .collect();
        assert_eq!(counted, predicted, "source {src}");
    }
}

/// A router on the client's path found the real server's answer (VIP:`vport` →
/// CLIENT:`cport`, DF) too big and tells the VIP: ICMP "fragmentation needed" quoting
/// its IP header and first 8 bytes.
fn frag_needed(cport: u16, vport: u16) -> Vec<u8> {
    let mut answer = Vec::new();
    PacketBuilder::ipv4(VIP, CLIENT, 63)
        .tcp(vport, cport, 5000, 64_000)
        .ack(1001)
        .write(&mut answer, &[0u8; 1400])
        .unwrap();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4([203, 0, 113, 1], VIP, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut frame, &answer[..28])
        .unwrap();
    frame
}

/// The IPv6 form: "packet too big" quoting [VIP6]:`vport` → [CLIENT6]:`cport`.
fn packet_too_big(cport: u16, vport: u16) -> Vec<u8> {
    let mut answer = Vec::new();
    PacketBuilder::ipv6(VIP6, CLIENT6, 63)
        .tcp(vport, cport, 5000, 64_000)
        .write(&mut answer, &[0u8; 1400])
        .unwrap();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(
            [
                0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
            VIP6,
            64,
        )
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut frame, &answer[..48 + 100])
        .unwrap();
    frame
}

#[test]
fn a_too_big_error_about_a_flow_goes_to_the_flows_real_server() {
    let dp = dataplane();
    let before = dp.global_stats().unwrap();
    // Connections on several backends, so reaching the right one is not luck.
    let mut held = Vec::new();
    for cport in 41_000..41_006u16 {
        let (action, out) = run(&dp, &tcp4(cport, 80));
        assert_eq!(action, xdp_action::XDP_TX);
        held.push((cport, assert_dr_rewrite(&tcp4(cport, 80), &out)));
    }
    assert!(held.iter().any(|&(_, b)| b != held[0].1), "{held:?}");
    for &(cport, backend) in &held {
        let error = frag_needed(cport, 80);
        let (action, out) = run(&dp, &error);
        assert_eq!(action, xdp_action::XDP_TX, "the error about port {cport}");
        assert_eq!(
            assert_dr_rewrite(&error, &out),
            backend,
            "the error about port {cport} goes to its connection's real server"
        );
    }
    // IPv6: "packet too big".
    let (action, out) = run(&dp, &tcp6(42_000, 80));
    assert_eq!(action, xdp_action::XDP_TX);
    let backend6 = assert_dr_rewrite(&tcp6(42_000, 80), &out);
    let error6 = packet_too_big(42_000, 80);
    let (action, out) = run(&dp, &error6);
    assert_eq!(action, xdp_action::XDP_TX);
    assert_eq!(assert_dr_rewrite(&error6, &out), backend6);

    // No connection, another kind of ICMP, an error about a VIP it is not sent to, or
    // about an inactive service: the kernel's, untouched.
    let mut to_other = frag_needed(41_000, 80);
    to_other[14 + 16..14 + 20].copy_from_slice(&[192, 0, 2, 99]);
    let mut echo = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut echo, b"ping")
        .unwrap();
    for (what, frame) in [
        ("no connection", frag_needed(49_999, 80)),
        ("an echo request", echo),
        ("addressed to another address", to_other),
        ("an inactive service", frag_needed(41_000, 81)),
    ] {
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, xdp_action::XDP_PASS, "{what}");
        assert_eq!(out, frame, "{what}: untouched");
    }
    let after = dp.global_stats().unwrap();
    let delta = |r: &str| after[r] - before[r];
    assert_eq!(delta("icmp_to_real_server"), 7);
    assert_eq!(delta("pass_icmp_no_flow"), 1);
}

/// The verifier's limit (instructions it may process for one program) since Linux 5.2.
const VERIFIER_LIMIT: u32 = 1_000_000;

#[test]
fn the_verifier_accepts_the_program_with_room_to_spare() {
    let dp = load();
    let info = dp.program().info().expect("program info");
    let verified = info
        .verified_instruction_count()
        .expect("the kernel reports the verifier's count (Linux 5.16 and later)");
    let size = info
        .size_translated()
        .map_or("?".into(), |bytes| (bytes / 8).to_string());
    println!(
        "kernel {}: the verifier processed {verified} instructions ({}% of its limit); \
         {size} instructions after loading",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim(),
        verified as u64 * 100 / VERIFIER_LIMIT as u64
    );
    // A change that takes the walk near the limit fails here, on each kernel the
    // tests run on, before some host's verifier refuses it.
    assert!(
        verified < VERIFIER_LIMIT * 7 / 10,
        "the verifier processed {verified} instructions, over 70% of its limit"
    );
}

/// A client that closed a connection (FIN or RST) and opens another from the same
/// port (a reused port): its SYN finds the old flow's entry. It is scheduled afresh
/// and counted new, as IPVS's conn_reuse_mode does, and its ACK follows it. A SYN
/// retransmitted on a live flow stays with its server; during a SYN flood the
/// reopened flow is pinned in its entry's place all the same.
#[test]
fn a_syn_on_a_flow_its_client_closed_opens_a_new_connection() {
    let mut dp = dataplane();
    let src = [198, 51, 100, 60];
    let with_flags = |flags: u8| {
        let mut f = tcp4_from(src, 36_000, 80);
        f[47] = flags;
        f
    };
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;
    const RST: u8 = 0x04;
    let send = |dp: &Dataplane, flags: u8| {
        let f = with_flags(flags);
        assert_dr_rewrite(&f, &run(dp, &f).1)
    };
    let new_flows = |dp: &Dataplane| served(dp, 0..3).new_flows;
    let closed = |dp: &Dataplane| -> u64 {
        (0..3)
            .map(|b| dp.backend_stats(b).unwrap().closed_flows)
            .sum()
    };
    // wrr's turn over weights 1, 2 and 3 is [2, 1, 0, 2, 1, 2].
    let first = send(&dp, SYN);
    assert_eq!(first, 2);
    assert_eq!(send(&dp, SYN), first, "a retransmitted SYN stays");
    assert_eq!(send(&dp, ACK), first);
    assert_eq!(new_flows(&dp), 1, "a retransmission is no new flow");
    assert_eq!(send(&dp, FIN_ACK), first);
    assert_eq!(send(&dp, FIN_ACK), first, "a FIN ends the flow once");
    assert_eq!(closed(&dp), 1);

    // A new connection is checked as any: a SYN with a wrong IPv4 header checksum
    // goes to the kernel and leaves the closed flow's entry as it was.
    let mut bad = with_flags(SYN);
    bad[14 + 10] ^= 0xff;
    assert_eq!(run(&dp, &bad).0, xdp_action::XDP_PASS);
    assert_eq!(dp.global_stats().unwrap()["pass_bad_checksum"], 1);
    assert_eq!(new_flows(&dp), 1);

    let second = send(&dp, SYN);
    assert_eq!(second, 1, "the next in wrr's turn, not the old server");
    assert_eq!(new_flows(&dp), 2, "the reopened flow counts as new");
    assert_eq!(send(&dp, ACK), second, "its ACK follows the new pin");
    assert_eq!(dp.flows().count(), 1, "replaced in place");

    // Ended by an RST; reopened during a flood: pinned all the same, so its ACK
    // does not go back to the closed connection's server.
    assert_eq!(send(&dp, RST), second);
    assert_eq!(closed(&dp), 2);
    dp.set_new_flow_rate(5).unwrap();
    run_dry(&dp, 5);
    let flows = dp.flows().count();
    let third = send(&dp, SYN);
    assert_eq!(
        dp.service_stats(0).unwrap().unpinned,
        1,
        "only run_dry's SYN after the bucket went unpinned"
    );
    assert_eq!(dp.flows().count(), flows, "replaced, not added");
    let pinned_to = dp
        .flows()
        .map(|e| e.unwrap())
        .find(|(k, _)| k.src[12..] == src)
        .map(|(_, v)| v.backend);
    assert_eq!(pinned_to, Some(third as u32));
    assert_eq!(send(&dp, ACK), third);
}

/// Removes `flow`'s flow-table entry behind the daemon's back (no new flow-cache
/// generation), through the map itself.
fn remove_flow_entry_only(dp: &Dataplane, flow: &FlowKey) {
    let info = dp.program().info().unwrap();
    for id in info.map_ids().unwrap().unwrap() {
        let data = aya::maps::MapData::from_id(id).unwrap();
        if data.info().unwrap().name_as_str() == Some("FLOWS_V4") {
            let mut table: aya::maps::HashMap<_, FlowKeyV4, FlowValue> =
                aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).unwrap();
            table.remove(&FlowKeyV4::stored(flow).unwrap()).unwrap();
            return;
        }
    }
    panic!("no FLOWS_V4 map");
}

/// An established IPv4 flow's packets are forwarded from this CPU's flow cache: its
/// first established packet copies its pin there, and later ones follow that copy
/// without the flow table, until a new generation (every second, and after the daemon
/// removes flow entries) sends them the flow table's way again. A cached pin whose
/// real server is disabled is not followed.
#[test]
fn an_established_flow_is_forwarded_from_the_flow_cache_until_its_generation_ends() {
    let mut dp = dataplane();
    let flow = tcp_flow(CLIENT, 37_000, VIP, 80);
    let (syn, ack) = (tcp4(37_000, 80), tcp4_ack_from(CLIENT, 37_000, 80));
    let send = |dp: &Dataplane, f: &[u8]| assert_dr_rewrite(f, &run(dp, f).1);
    let first = send(&dp, &syn);
    assert_eq!(
        dp.cached_pin(&flow, 0).unwrap(),
        None,
        "a new flow is not cached"
    );
    assert_eq!(send(&dp, &ack), first);
    let pin = dp.cached_pin(&flow, 0).unwrap().expect("cached when found");
    assert_eq!((usize::from(pin.backend), pin.service), (first, 0));
    let fills = |dp: &Dataplane| dp.service_stats(0).unwrap().flow_cache_fills;
    assert_eq!(
        fills(&dp),
        1,
        "the ACK took the flow table's way and filled"
    );

    // Its flow-table entry gone without a new generation: the cache still answers,
    // and its packets neither pin the flow again nor count it new.
    remove_flow_entry_only(&dp, &flow);
    for _ in 0..3 {
        assert_eq!(send(&dp, &ack), first);
    }
    assert_eq!(
        dp.flows().count(),
        0,
        "a cached packet leaves the flow table alone"
    );
    assert_eq!(served(&dp, 0..3).new_flows, 1);
    assert_eq!(fills(&dp), 1, "cached packets fill nothing");

    // A new generation: the flow table's way, where the flow has no entry now, so its
    // ACK is picked afresh (by its hash) and pinned, and counts as new.
    dp.renew_flow_cache().unwrap();
    assert_eq!(dp.cached_pin(&flow, 0).unwrap(), None);
    let second = send(&dp, &ack);
    assert_eq!(served(&dp, 0..3).new_flows, 2);
    assert_eq!(dp.flows().count(), 1);
    assert_eq!(send(&dp, &ack), second);
    assert_eq!(
        fills(&dp),
        2,
        "a new pick fills nothing; its next packet does"
    );
    assert_eq!(
        dp.cached_pin(&flow, 0)
            .unwrap()
            .map(|p| usize::from(p.backend)),
        Some(second)
    );

    // Its real server disabled (and out of the schedule, as a failed check does):
    // rewriting a real server starts a new generation, and the flow is moved.
    let mut down = dp.backend(second as u32).unwrap();
    down.flags = 0;
    dp.set_backend(second as u32, &down).unwrap();
    let mut weights = [1, 2, 3];
    weights[second] = 0;
    reweight_tcp_service(&mut dp, &weights);
    assert_eq!(dp.cached_pin(&flow, 0).unwrap(), None);
    let third = send(&dp, &ack);
    assert_ne!(third, second);
    assert_eq!(dp.service_stats(0).unwrap().rescheduled, 1);
    assert_eq!(send(&dp, &ack), third);

    // Clearing the connection state starts a new generation too.
    dp.clear_connection_state();
    assert_eq!(dp.cached_pin(&flow, 0).unwrap(), None);
}

/// Only flows whose entry the packet path never rewrites are cached: not those of
/// aging services (their entries carry a clock), nor of persistent ones (each packet
/// refreshes its client's entry), nor IPv6 ones; UDP flows are.
#[test]
fn only_flows_whose_entries_packets_never_rewrite_are_cached() {
    let mut dp = dataplane();
    add_aging_service(&mut dp);
    let udp = FlowKey {
        proto: IPPROTO_UDP,
        ..tcp_flow(CLIENT, 5_300, VIP, 53)
    };
    for _ in 0..3 {
        assert_eq!(
            run(&dp, &tcp4_ack_from(CLIENT, 38_000, 84)).0,
            xdp_action::XDP_TX
        );
        assert_eq!(run(&dp, &udp4(5_300, 53)).0, xdp_action::XDP_TX);
    }
    assert_eq!(
        dp.cached_pin(&tcp_flow(CLIENT, 38_000, VIP, 84), 0)
            .unwrap(),
        None
    );
    assert!(dp.cached_pin(&udp, 0).unwrap().is_some());
    let dp = persistent(300, 32);
    for _ in 0..3 {
        assert_eq!(
            run(&dp, &tcp4_ack_from(CLIENT, 38_001, 80)).0,
            xdp_action::XDP_TX
        );
    }
    assert_eq!(
        dp.cached_pin(&tcp_flow(CLIENT, 38_001, VIP, 80), 0)
            .unwrap(),
        None
    );
}

/// A set's first five flows of a generation stay in it; the flows beyond them take
/// turns in its last way. So flows that overflow a set and come round in turn (a busy
/// service's) miss only in that way, not in all six.
#[test]
fn a_full_set_keeps_its_first_five_flows_and_turns_over_its_last_way() {
    let dp = dataplane();
    let bits = dp.flow_cache_state().unwrap().sets_per_cpu.trailing_zeros();
    let set_of = |port: u16| {
        let flow = tcp_flow(CLIENT, port, VIP, 80);
        FlowCacheSet::index_in_cpu(FlowCacheSet::key(&flow, 0), bits)
    };
    // Seven of the client's ports whose flows share one set.
    let ports: Vec<u16> = (40_001..60_000)
        .filter(|&p| set_of(p) == set_of(40_000))
        .chain([40_000])
        .take(7)
        .collect();
    assert_eq!(ports.len(), 7, "too few ports share a set");
    let cached = |dp: &Dataplane, port: u16| {
        dp.cached_pin(&tcp_flow(CLIENT, port, VIP, 80), 0)
            .unwrap()
            .map(|pin| usize::from(pin.backend))
    };
    let mut servers = Vec::new();
    for &port in &ports {
        let (syn, ack) = (tcp4(port, 80), tcp4_ack_from(CLIENT, port, 80));
        let server = assert_dr_rewrite(&syn, &run(&dp, &syn).1);
        assert_eq!(assert_dr_rewrite(&ack, &run(&dp, &ack).1), server);
        assert_eq!(cached(&dp, port), Some(server), "port {port} cached");
        servers.push(server);
    }
    // The sixth flow's way went to the seventh; the first five stayed.
    for (i, &port) in ports.iter().enumerate() {
        let expected = (i != 5).then_some(servers[i]);
        assert_eq!(cached(&dp, port), expected, "flow {i}");
    }
    // The sixth comes round again: the last way is its again, from the flow table.
    let ack = tcp4_ack_from(CLIENT, ports[5], 80);
    assert_eq!(assert_dr_rewrite(&ack, &run(&dp, &ack).1), servers[5]);
    assert_eq!(cached(&dp, ports[5]), Some(servers[5]));
    assert_eq!(cached(&dp, ports[6]), None);
    assert_eq!(cached(&dp, ports[0]), Some(servers[0]));
    // The first five come round from the cache; the seventh fills again.
    for &port in &ports[..5] {
        let ack = tcp4_ack_from(CLIENT, port, 80);
        run(&dp, &ack);
    }
    run(&dp, &tcp4_ack_from(CLIENT, ports[6], 80));
    assert_eq!(dp.service_stats(0).unwrap().flow_cache_fills, 7 + 1 + 1);
}

/// Scattered clients' flows, four to a set on average, overflow some sets. Going round
/// them all again, the program misses exactly where the fill policy says: in a set of
/// k > 6 flows, only the k − 5 beyond its first five (which take turns in its last
/// way), counted as fills. Pushing the oldest out would miss all k.
#[test]
fn flows_that_overflow_their_sets_miss_only_beyond_the_first_five() {
    let dp = dataplane();
    let sets = dp.flow_cache_state().unwrap().sets_per_cpu;
    let bits = sets.trailing_zeros();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let flows: Vec<([u8; 4], u16)> = (0..4 * sets)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let [a, b, c, d, e, f, ..] = state.to_be_bytes();
            (
                [198, 18 | (a & 1), b, c.max(1)],
                u16::from_be_bytes([d | 0x80, e ^ f]),
            )
        })
        .collect();
    // What the policy predicts, from the set each flow lands in.
    let mut per_set = vec![0u32; sets as usize];
    for &(src, port) in &flows {
        let key = FlowCacheSet::key(&tcp_flow(src, port, VIP, 80), 0);
        per_set[FlowCacheSet::index_in_cpu(key, bits) as usize] += 1;
    }
    let beyond_five: u32 = per_set.iter().filter(|&&k| k > 6).map(|&k| k - 5).sum();
    let all_overflowing: u32 = per_set.iter().filter(|&&k| k > 6).sum();
    assert!(beyond_five > 0, "no set overflows: the test shows nothing");

    let fills = |dp: &Dataplane| dp.service_stats(0).unwrap().flow_cache_fills;
    for &(src, port) in &flows {
        run(&dp, &tcp4_from(src, port, 80));
        run(&dp, &tcp4_ack_from(src, port, 80));
    }
    assert_eq!(fills(&dp), u64::from(4 * sets), "each flow's ACK filled");
    for &(src, port) in &flows {
        let ack = tcp4_ack_from(src, port, 80);
        assert_eq!(run(&dp, &ack).0, xdp_action::XDP_TX);
    }
    let missed = fills(&dp) - u64::from(4 * sets);
    assert_eq!(
        missed,
        u64::from(beyond_five),
        "of {} flows, {all_overflowing} in overflowing sets",
        flows.len()
    );
}

/// A flow whose packets arrive on two CPUs (veth and generic XDP run on the sender's
/// CPU): its client closes it on one, and its SYN reusing the port on the other, which
/// had cached its pin, still opens a new connection (a bare SYN takes the flow table's
/// way), and the new connection's packets on the first CPU follow the new pin (the
/// reopen started a new generation).
#[test]
fn a_flow_closed_on_one_cpu_reopens_on_another_that_had_cached_it() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs two CPUs, the machine has {cpus}"
    );
    let dp = dataplane();
    let src = [198, 51, 100, 61];
    let flow = tcp_flow(src, 36_100, VIP, 80);
    let send = |flags: u8| {
        let mut f = tcp4_from(src, 36_100, 80);
        f[47] = flags;
        assert_dr_rewrite(&f, &run(&dp, &f).1)
    };
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const RST: u8 = 0x04;
    // wrr's turn over weights 1, 2 and 3 is [2, 1, 0, 2, 1, 2], one cursor per CPU:
    // another flow takes CPU 1's first turn, so its next pick differs from CPU 0's.
    xdp_lb_lab::cpu::pin_to_cpu(1).unwrap();
    let other = tcp4_from(src, 36_101, 80);
    assert_eq!(assert_dr_rewrite(&other, &run(&dp, &other).1), 2);
    support::test_run::pin_to_cpu0();
    let first = send(SYN);
    assert_eq!(first, 2);
    // Cached on both CPUs.
    for cpu in [1, 0] {
        xdp_lb_lab::cpu::pin_to_cpu(cpu).unwrap();
        assert_eq!(send(ACK), first);
        assert!(dp.cached_pin(&flow, cpu as u32).unwrap().is_some());
    }
    // Closed on CPU 0, reopened on CPU 1.
    assert_eq!(send(RST), first);
    xdp_lb_lab::cpu::pin_to_cpu(1).unwrap();
    let second = send(SYN);
    assert_eq!(second, 1, "the reused port followed the closed connection");
    assert_eq!(served(&dp, 0..3).new_flows, 3);
    assert_eq!(send(ACK), second);
    // CPU 0's copy of the old pin is out of date: its next packet takes the new pin.
    support::test_run::pin_to_cpu0();
    assert_eq!(dp.cached_pin(&flow, 0).unwrap(), None);
    assert_eq!(
        send(ACK),
        second,
        "CPU 0 followed the closed connection's pin"
    );
}
