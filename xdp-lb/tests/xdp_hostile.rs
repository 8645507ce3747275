//! Hostile frames through BPF_PROG_TEST_RUN: the program forwards only packets whose
//! headers agree with each other and with the frame, from sources that could send
//! them; every other one goes to the kernel under a named reason. A fixture per
//! flaw, then a campaign of a million mutated and random frames against DR, NAT and
//! TUN services that checks the invariant "forwarded => well-formed, non-martian,
//! to an active real server" with an independent parser (etherparse); the one flaw a
//! forwarded packet may have is a wrong IPv4 header checksum, and only on its way to
//! the server of its flow, pinned by a well-formed packet before. Needs root.
mod support;

use std::collections::HashMap;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use xdp_lb::{
    config::NatTimeouts,
    dataplane::ServiceSpec,
    services::{NatOrigins, nat_origins_of},
};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, FWD_DR, FWD_NAT, FWD_TUN, IPPROTO_TCP, IPPROTO_UDP, Reason,
    SELECT_CURSOR, v4_mapped,
};

use support::test_run::{TEST_RUN_IFINDEX, key, load, run, xdp_action};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// DR, DR, NAT, TUN real servers' MACs (IPv4), then NAT and TUN (IPv6): a forwarded
/// frame goes to one of these.
const SERVER_MACS: [[u8; 6]; 6] = [
    [0x02, 0, 0, 0, 0, 0x11],
    [0x02, 0, 0, 0, 0, 0x12],
    [0x02, 0, 0, 0, 0, 0x13],
    [0x02, 0, 0, 0, 0, 0x14],
    [0x02, 0, 0, 0, 0, 0x15],
    [0x02, 0, 0, 0, 0, 0x16],
];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const VIP: [u8; 4] = [192, 0, 2, 100];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
];

/// VIP:80/tcp and VIP:53/udp and [VIP6]:80/tcp by DR, VIP:81/tcp and [VIP6]:81/tcp by
/// NAT, VIP:82/udp and [VIP6]:82/udp by TUN.
fn dataplane() -> xdp_lb::dataplane::Dataplane {
    let mut dp = load();
    for (slot, mac) in SERVER_MACS.iter().enumerate() {
        let (addr, tun_src) = if slot < 4 {
            (
                v4_mapped([203, 0, 113, 11 + slot as u8]),
                v4_mapped([192, 0, 2, 2]),
            )
        } else {
            let mut server = VIP6;
            server[15] = 0x11 + slot as u8;
            let mut lb = VIP6;
            lb[15] = 2;
            (server, lb)
        };
        let backend = BackendValue {
            addr,
            dst_mac: *mac,
            src_mac: LB_MAC,
            ifindex: TEST_RUN_IFINDEX,
            flags: BACKEND_F_ACTIVE,
            port_be: 8080u16.to_be(),
            mtu: 1500,
            tun_src,
        };
        dp.set_backend(slot as u32, &backend).unwrap();
    }
    let services = [
        (key(v4_mapped(VIP), 80, IPPROTO_TCP), FWD_DR, vec![0, 1]),
        (key(v4_mapped(VIP), 53, IPPROTO_UDP), FWD_DR, vec![0, 1]),
        (key(VIP6, 80, IPPROTO_TCP), FWD_DR, vec![0, 1]),
        (key(v4_mapped(VIP), 81, IPPROTO_TCP), FWD_NAT, vec![2]),
        (key(v4_mapped(VIP), 82, IPPROTO_UDP), FWD_TUN, vec![3]),
        (key(VIP6, 81, IPPROTO_TCP), FWD_NAT, vec![4]),
        (key(VIP6, 82, IPPROTO_UDP), FWD_TUN, vec![5]),
    ];
    for (id, (key, forwarding, slots)) in services.iter().cloned().enumerate() {
        dp.set_service(&ServiceSpec {
            key,
            id: id as u32,
            forwarding,
            select: SELECT_CURSOR,
            active: true,
            slots,
            ..Default::default()
        })
        .unwrap();
    }
    // The NAT services' real servers (slots 2 and 4).
    let mut origins = NatOrigins::new();
    for (id, slot) in [(3u32, 2u32), (5, 4)] {
        let server = dp.backend(slot).unwrap().addr;
        origins.extend(nat_origins_of(
            server,
            8080,
            &[(services[id as usize].0, id)],
        ));
    }
    dp.set_nat(&origins, &NatTimeouts::default()).unwrap();
    dp
}

fn tcp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, dst, 64)
        .tcp(40000, dport, 1, 64_000)
        .write(&mut frame, b"hello, world")
        .unwrap();
    frame
}

fn udp4(src: [u8; 4], dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src, VIP, 64)
        .udp(40000, dport)
        .write(&mut frame, b"query!")
        .unwrap();
    frame
}

fn tcp6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src, dst, 64)
        .tcp(40000, 80, 1, 64_000)
        .write(&mut frame, b"six")
        .unwrap();
    frame
}

fn udp6(src: [u8; 16], dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src, VIP6, 64)
        .udp(40000, dport)
        .write(&mut frame, b"six?")
        .unwrap();
    frame
}

/// Recomputes the IPv4 header checksum at `l3`, so a fixture has one flaw only.
fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let sum = ones_complement_sum(&frame[l3..l3 + ihl]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&(!sum).to_be_bytes());
}

fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[test]
fn each_flaw_goes_to_the_kernel_under_its_reason() {
    let dp = dataplane();
    let set_u16 = |frame: &mut Vec<u8>, at: usize, v: u16| {
        frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
    };
    let mut cases: Vec<(&str, Vec<u8>, Reason)> = Vec::new();
    // IPv4 total length that leaves the TCP header outside the datagram.
    let mut f = tcp4(CLIENT, VIP, 80);
    set_u16(&mut f, 14 + 2, 20 + 10);
    fix_ipv4_checksum(&mut f, 14);
    cases.push(("tcp header outside the datagram", f, Reason::PassMalformed));
    // TCP data offset 15 (60 bytes) with a 20-byte header and 12 bytes of data.
    let mut f = tcp4(CLIENT, VIP, 80);
    f[14 + 20 + 12] = 0xf0 | (f[14 + 20 + 12] & 0x0f);
    cases.push(("tcp data offset 15", f, Reason::PassMalformed));
    // UDP length 0, and larger than the datagram.
    let mut f = udp4(CLIENT, 53);
    set_u16(&mut f, 14 + 20 + 4, 0);
    cases.push(("udp length 0", f, Reason::PassMalformed));
    let mut f = udp4(CLIENT, 53);
    set_u16(&mut f, 14 + 20 + 4, 500);
    cases.push(("udp length beyond the datagram", f, Reason::PassMalformed));
    // A bad IPv4 header checksum.
    let mut f = tcp4(CLIENT, VIP, 80);
    f[14 + 10] ^= 0x55;
    cases.push(("bad ipv4 checksum", f, Reason::PassBadChecksum));
    // IPv6 payload length 0 with TCP.
    let mut f = tcp6(CLIENT6, VIP6);
    set_u16(&mut f, 14 + 4, 0);
    cases.push(("ipv6 payload length 0", f, Reason::PassMalformed));
    // Martian sources, IPv4 and IPv6, and the VIP itself.
    for (what, src) in [
        ("127.0.0.1", [127, 0, 0, 1]),
        ("0.0.0.0", [0, 0, 0, 0]),
        ("255.255.255.255", [255, 255, 255, 255]),
        ("224.0.0.1", [224, 0, 0, 1]),
        ("240.0.0.1", [240, 0, 0, 1]),
        ("the vip", VIP),
    ] {
        cases.push((what, tcp4(src, VIP, 80), Reason::PassMartian));
    }
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&CLIENT);
    let mut loopback = [0u8; 16];
    loopback[15] = 1;
    let mut multicast = [0u8; 16];
    multicast[0] = 0xff;
    multicast[1] = 0x02;
    multicast[15] = 1;
    for (what, src) in [
        ("::1", loopback),
        ("::", [0; 16]),
        ("ff02::1", multicast),
        ("::ffff:198.51.100.7", mapped),
        ("the ipv6 vip", VIP6),
    ] {
        cases.push((what, tcp6(src, VIP6), Reason::PassMartian));
    }
    for (what, frame, reason) in cases {
        let before = dp.global_stats().unwrap()[reason.name()];
        let (action, _) = run(&dp, &frame);
        let after = dp.global_stats().unwrap()[reason.name()];
        assert_eq!(action, xdp_action::XDP_PASS, "{what}: not passed");
        assert_eq!(
            after,
            before + 1,
            "{what}: not counted as {}",
            reason.name()
        );
    }
    // The unmutated frames are forwarded (the fixtures' flaws are what stop them).
    for frame in [tcp4(CLIENT, VIP, 80), udp4(CLIENT, 53), tcp6(CLIENT6, VIP6)] {
        assert_eq!(run(&dp, &frame).0, xdp_action::XDP_TX);
    }
}

/// A packet of a pinned flow is not checked again (see the program's `validate`): with
/// a wrong IPv4 header checksum it still goes to its flow's server, and its sum stays
/// wrong (DR leaves the header alone, NAT updates it incrementally, TUN carries it
/// inside), so that server's kernel drops it. A NAT reply with an entry likewise.
#[test]
fn a_pinned_flows_packet_with_a_wrong_header_checksum_reaches_its_server_still_wrong() {
    let dp = dataplane();
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(SERVER_MACS[2], LB_MAC)
        .ipv4([203, 0, 113, 13], CLIENT, 64)
        .tcp(8080, 40000, 1, 64_000)
        .write(&mut reply, b"hello, client")
        .unwrap();
    // (what, frame, where its IPv4 header is in the frame that leaves)
    let cases = [
        ("DR", tcp4(CLIENT, VIP, 80), 14),
        ("NAT", tcp4(CLIENT, VIP, 81), 14),
        ("NAT reply", reply, 14),
        ("TUN", udp4(CLIENT, 82), 14 + 20),
    ];
    for (what, good, inner) in cases {
        let (action, out) = run(&dp, &good);
        assert_eq!(action, xdp_action::XDP_TX, "{what}: the well-formed packet");
        let server = out[..6].to_vec();
        let mut bad = good.clone();
        bad[14 + 10] ^= 0x55;
        let before = dp.global_stats().unwrap();
        let (action, out) = run(&dp, &bad);
        let after = dp.global_stats().unwrap();
        assert_eq!(action, xdp_action::XDP_TX, "{what}: not forwarded");
        assert_eq!(out[..6], server[..], "{what}: not to its flow's server");
        let ihl = usize::from(out[inner] & 0x0f) * 4;
        assert_ne!(
            ones_complement_sum(&out[inner..inner + ihl]),
            0xffff,
            "{what}: the wrong sum became right"
        );
        assert_eq!(
            after["pass_bad_checksum"], before["pass_bad_checksum"],
            "{what}: counted as refused"
        );
    }
    // Without a pin, the same damage is refused.
    let mut unpinned = tcp4(CLIENT, VIP, 80);
    unpinned[14 + 20 + 1] ^= 1; // another source port: another flow
    unpinned[14 + 10] ^= 0x55;
    let before = dp.global_stats().unwrap()["pass_bad_checksum"];
    assert_eq!(run(&dp, &unpinned).0, xdp_action::XDP_PASS);
    assert_eq!(dp.global_stats().unwrap()["pass_bad_checksum"], before + 1);
}

/// A small, fast, seeded generator: the campaign is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A frame's flow as the flow table keys it: addresses, protocol, ports.
type Flow = (Vec<u8>, Vec<u8>, u8, u16, u16);

/// An independent reading of a frame that may be forwarded: its flow, and whether its
/// IPv4 header checksum is right (always for IPv6, which has none).
struct Forwardable {
    flow: Flow,
    checksum_right: bool,
}

/// An independent reading of `frame`: why it must not be forwarded, if it does. A
/// wrong IPv4 header checksum is no such reason by itself: a packet of a pinned flow
/// goes to its flow's server unchecked (the caller knows which flows are pinned).
fn must_not_forward(frame: &[u8]) -> Result<Forwardable, String> {
    let sliced = SlicedPacket::from_ethernet(frame).map_err(|e| format!("etherparse: {e}"))?;
    let (src, dst, ipv4, checksum_right): (Vec<u8>, Vec<u8>, bool, bool) = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            if h.is_fragmenting_payload() {
                return Err("fragment".into());
            }
            let right = ones_complement_sum(h.slice()) == 0xffff;
            (h.source().to_vec(), h.destination().to_vec(), true, right)
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            if h.payload_length() == 0 {
                return Err("ipv6 payload length 0".into());
            }
            if !ip.extensions().is_empty() {
                return Err("ipv6 extension headers".into());
            }
            (h.source().to_vec(), h.destination().to_vec(), false, true)
        }
        _ => return Err("not ip".into()),
    };
    let (proto, sport, dport) = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => (IPPROTO_TCP, tcp.source_port(), tcp.destination_port()),
        Some(TransportSlice::Udp(udp)) => {
            if udp.length() < 8 {
                return Err("udp length".into());
            }
            (IPPROTO_UDP, udp.source_port(), udp.destination_port())
        }
        _ => return Err("not tcp or udp".into()),
    };
    if src == dst {
        return Err("source is the destination".into());
    }
    let martian = if ipv4 {
        src[0] == 0 || src[0] == 127 || src[0] >= 224
    } else {
        let loopback_or_any = src[..15].iter().all(|b| *b == 0) && src[15] <= 1;
        let mapped = src[..10].iter().all(|b| *b == 0) && src[10] == 0xff && src[11] == 0xff;
        loopback_or_any || src[0] == 0xff || mapped
    };
    if martian {
        return Err("martian source".into());
    }
    Ok(Forwardable {
        flow: (src, dst, proto, sport, dport),
        checksum_right,
    })
}

#[test]
fn a_million_hostile_frames_forward_only_well_formed_packets_to_active_servers() {
    let dp = dataplane();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let sources = [CLIENT, [127, 0, 0, 1], VIP, [10, 1, 2, 3], [224, 1, 1, 1]];
    // Fewer where each run costs more: `cargo xtask older-kernel` runs this under
    // emulation, about a hundred times slower per frame.
    let frames: u64 = std::env::var("XDP_LB_HOSTILE_FRAMES")
        .map(|v| {
            v.parse()
                .expect("XDP_LB_HOSTILE_FRAMES: a number of frames")
        })
        .unwrap_or(1_000_000);
    let (mut forwarded, mut passed, mut dropped, mut violations) = (0u64, 0u64, 0u64, Vec::new());
    // The server each flow was forwarded to by a well-formed packet (so pinned), and
    // how many packets with a wrong header checksum followed their flow there.
    let mut pinned: HashMap<Flow, Vec<u8>> = HashMap::new();
    let mut unchecked_to_their_server = 0u64;
    let mut n = 0;
    while forwarded + passed + dropped < frames {
        n += 1;
        let mut frame = match rng.below(6) {
            0 => tcp4(
                sources[rng.below(sources.len())],
                VIP,
                80 + rng.below(3) as u16,
            ),
            1 => udp4(sources[rng.below(sources.len())], [53, 82][rng.below(2)]),
            2 => {
                let src = if rng.below(4) == 0 { VIP6 } else { CLIENT6 };
                match rng.below(3) {
                    0 => tcp6(src, VIP6),
                    1 => {
                        // To the NAT66 service (the TCP checksum is not the XDP
                        // program's to check).
                        let mut f = tcp6(src, VIP6);
                        f[14 + 40 + 3] = 81;
                        f
                    }
                    _ => udp6(src, 82),
                }
            }
            3 => {
                // A VLAN-tagged copy of an IPv4 frame.
                let mut f = tcp4(CLIENT, VIP, 80);
                f.splice(12..12, [0x81, 0x00, 0x00, 0x2a]);
                f
            }
            4 => {
                // Random bytes behind a valid Ethernet + IPv4 start.
                let mut f = tcp4(CLIENT, VIP, 80);
                let len = 14 + rng.below(80);
                f.truncate(len.max(15));
                for b in f.iter_mut().skip(14 + rng.below(20)) {
                    *b = rng.next() as u8;
                }
                f
            }
            _ => (0..rng.below(120)).map(|_| rng.next() as u8).collect(),
        };
        // 1 to 4 mutations: a byte, a length, a truncation.
        for _ in 0..1 + rng.below(4) {
            if frame.is_empty() {
                break;
            }
            match rng.below(4) {
                0 | 1 => {
                    let at = rng.below(frame.len());
                    frame[at] = rng.next() as u8;
                }
                2 => {
                    let cut = rng.below(frame.len() + 1);
                    frame.truncate(cut);
                }
                _ => {
                    // Fix the IPv4 checksum after a mutation now and then, so flaws
                    // deeper than the header are reached too.
                    if frame.len() >= 34 && frame[12] == 0x08 && frame[13] == 0 {
                        let ihl = usize::from(frame[14] & 0x0f) * 4;
                        if ihl >= 20 && frame.len() >= 14 + ihl {
                            fix_ipv4_checksum(&mut frame, 14);
                        }
                    }
                }
            }
        }
        // The kernel hands XDP no frame shorter than an Ethernet header (and
        // BPF_PROG_TEST_RUN refuses one).
        if frame.len() < 14 {
            continue;
        }
        let (action, out) = run(&dp, &frame);
        match action {
            xdp_action::XDP_TX | xdp_action::XDP_REDIRECT => {
                forwarded += 1;
                let to_server = out.len() >= 6 && SERVER_MACS.iter().any(|m| out[..6] == *m);
                let flaw = match must_not_forward(&frame) {
                    Err(flaw) => Some(flaw),
                    Ok(_) if !to_server => Some("not to an active real server".into()),
                    Ok(Forwardable {
                        flow,
                        checksum_right: true,
                    }) => {
                        pinned.insert(flow, out[..6].to_vec());
                        None
                    }
                    Ok(Forwardable { flow, .. }) => match pinned.get(&flow) {
                        Some(server) if server[..] == out[..6] => {
                            unchecked_to_their_server += 1;
                            None
                        }
                        Some(_) => Some("ipv4 checksum, to another server than its flow's".into()),
                        None => Some("ipv4 checksum, and its flow was never pinned".into()),
                    },
                };
                if let Some(flaw) = flaw {
                    if violations.len() < 5 {
                        violations.push(format!("frame {n} forwarded ({flaw}): {frame:02x?}"));
                    } else {
                        violations.push(String::new());
                    }
                }
            }
            xdp_action::XDP_PASS => passed += 1,
            _ => dropped += 1,
        }
    }
    let stats = dp.global_stats().unwrap();
    let reasons: Vec<String> = stats
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    eprintln!(
        "measured: {frames} frames: forwarded {forwarded}, passed {passed}, dropped {dropped}; \
         by reason: {}; wrong IPv4 header checksum, forwarded to their pinned flow's server: \
         {unchecked_to_their_server}; invariant violations: {}",
        reasons.join(" "),
        violations.len()
    );
    assert!(
        unchecked_to_their_server > 0,
        "the campaign must reach pinned flows' packets with a wrong header checksum"
    );
    assert!(
        forwarded > frames / 100,
        "the campaign must reach the forwarding paths"
    );
    // Every forwarding path, by its real servers: DR (slots 0 and 1), NAT and TUN over
    // IPv4 (2, 3) and over IPv6 (4, 5).
    for slot in 0..6 {
        let packets = dp.backend_stats(slot).unwrap().packets;
        assert!(
            packets > frames / 1_000,
            "real server {slot} forwarded only {packets}"
        );
    }
    assert!(
        violations.is_empty(),
        "{} forwarded frames broke the invariant, e.g.\n{}",
        violations.len(),
        violations.join("\n")
    );
}
