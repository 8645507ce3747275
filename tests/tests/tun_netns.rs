//! TUN end to end. This kernel has no ipip module, so the real server cannot
//! decapsulate; instead the frames arriving at the real server's interface are
//! captured and decoded: the outer IPv4 header (LB → real server, protocol 4) must
//! wrap the client's datagram exactly as the client sent it to the VIP.
//!
//! Over IPv6 the real servers do decapsulate, with the lab's XDP stand-in for an
//! `ip6tnl` device (the kernel has no `ip6_tunnel` either), and answer HTTP from the VIP
//! straight to the client; the frames are captured on the way to them (on the
//! switch's ports) and decoded.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use etherparse::{
    InternetSlice, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, SlicedPacket, TransportSlice,
};
use xdp_lb_lab::{
    Capture, DrLab, DrLabOptions, http_get_new_connections, xdp::attach_ip6ip6_decap,
};
use xdp_lb_tests::{IO_TIMEOUT, assert_split, dr_lab, start};

#[test]
fn datagrams_reach_the_real_server_as_ipip_with_the_inner_packet_intact() {
    let lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    let mut config = String::from("[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\n");
    config += &format!(
        "\n[[virtual_server]]\nvip = \"{}\"\nport = 53\nprotocol = \"udp\"\nforwarding = \"tun\"\nscheduler = \"rr\"\n",
        DrLab::VIP
    );
    for b in &lab.backends {
        config += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n",
            b.addr
        );
    }
    let daemon = start(&lab.lb, &config);
    let captures: Vec<Capture> = lab
        .backends
        .iter()
        .map(|b| Capture::start(&b.ns, "eth0").unwrap())
        .collect();

    // Four datagrams from four source ports: round robin sends two to each server.
    let sent: Vec<(u16, Vec<u8>)> = lab
        .client
        .run(|| {
            (0..4)
                .map(|i| {
                    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                    let payload = format!("tun probe {i}").into_bytes();
                    socket.send_to(&payload, (DrLab::VIP, 53)).unwrap();
                    (socket.local_addr().unwrap().port(), payload)
                })
                .collect()
        })
        .unwrap();

    // Gather the IP-in-IP frames each real server received, by inner source port.
    let mut seen = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < sent.len() && std::time::Instant::now() < deadline {
        for (i, capture) in captures.iter().enumerate() {
            if let Ok(frame) = capture.next_matching(Duration::from_millis(50), is_ipip) {
                seen.insert(inner_sport(&frame), (i, frame));
            }
        }
    }
    let mut per_server = vec![0; lab.backends.len()];
    for (sport, payload) in &sent {
        let (index, frame) = seen
            .remove(sport)
            .unwrap_or_else(|| panic!("datagram from port {sport} reached no real server"));
        per_server[index] += 1;
        let server = lab.backends[index].addr.octets();
        let outer = Ipv4HeaderSlice::from_slice(&frame[14..])
            .unwrap()
            .to_header();
        assert_eq!(outer.protocol, IpNumber::IPV4, "IP-in-IP");
        assert_eq!(
            outer.source,
            lab.lb_backend_addr().octets(),
            "outer source: the LB's address towards the server"
        );
        assert_eq!(outer.destination, server);
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        let inner = SlicedPacket::from_ip(&frame[14 + 20..]).expect("inner packet decodes");
        let Some(InternetSlice::Ipv4(ip)) = &inner.net else {
            panic!("inner not IPv4")
        };
        assert_eq!(ip.header().source(), lab.client_addr().octets());
        assert_eq!(
            ip.header().destination(),
            DrLab::VIP.octets(),
            "inner still addressed to the VIP"
        );
        let Some(TransportSlice::Udp(udp)) = &inner.transport else {
            panic!("inner not UDP")
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (*sport, 53));
        assert_eq!(udp.payload(), &payload[..]);
        let header = ip.header().to_header();
        let udp_header = udp.to_header();
        assert_eq!(
            udp_header.checksum,
            udp_header
                .calc_checksum_ipv4(&header, udp.payload())
                .unwrap(),
            "inner checksum intact"
        );
    }
    assert_eq!(
        per_server,
        vec![2, 2],
        "round robin over the two real servers"
    );
    daemon.stop().unwrap();
}

/// An IPv4 frame carrying IP-in-IP with an inner UDP header.
fn is_ipip(frame: &[u8]) -> bool {
    frame.len() >= 14 + 20 + 20 + 8 && frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 4
}

fn inner_sport(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[14 + 20 + 20], frame[14 + 20 + 21]])
}

/// An IPv6 frame carrying IPv6 in IPv6 (next header 41) with an inner TCP header.
fn is_ip6ip6(frame: &[u8]) -> bool {
    frame.len() >= 14 + 40 + 40 + 20 && frame[12..14] == [0x86, 0xdd] && frame[14 + 6] == 41
}

#[test]
fn http_through_an_ipv6_tun_vip_is_tunnelled_to_each_real_server_and_answered() {
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    for b in &lab.backends {
        attach_ip6ip6_decap(&b.ns, "eth0").unwrap();
    }
    let mut config = String::from("[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\n");
    config += &format!(
        "\n[[virtual_server]]\nvip = \"{}\"\nport = 80\nforwarding = \"tun\"\nscheduler = \"wrr\"\n",
        DrLab::VIP6
    );
    for i in 0..lab.backends.len() {
        config += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  weight = {}\n",
            lab.backend_addr6(i),
            i + 1
        );
    }
    let daemon = start(&lab.lb, &config);
    // What goes out of the backend switch towards each real server, outer header and all.
    let switch = lab.backend_switch.as_ref().expect("two-arm");
    let captures: Vec<Capture> = lab
        .backends
        .iter()
        .map(|b| Capture::start(switch, &format!("b-{}", b.name)).unwrap())
        .collect();

    let vip6 = SocketAddr::from((DrLab::VIP6, 80));
    let tally = http_get_new_connections(&lab.client, vip6, 150, IO_TIMEOUT).unwrap();
    println!("TUN over IPv6, 150 new connections, weights 1:2: {tally:?}");
    assert_split(&tally, &[("b1", 1), ("b2", 2)], 150, 5.0);

    // Every connection's SYN went through the tunnel to the server that answered it:
    // collect the inner SYNs' source ports per server until all 150 are seen.
    let mut syns: Vec<BTreeSet<u16>> = vec![BTreeSet::new(); lab.backends.len()];
    let mut frames = vec![0usize; lab.backends.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while syns.iter().map(BTreeSet::len).sum::<usize>() < 150 && Instant::now() < deadline {
        for (i, capture) in captures.iter().enumerate() {
            while let Ok(frame) = capture.next_matching(Duration::from_millis(20), is_ip6ip6) {
                frames[i] += 1;
                if let Some(sport) = check_ip6ip6(&lab, i, &frame) {
                    syns[i].insert(sport);
                }
            }
        }
    }
    let seen: BTreeMap<String, usize> = lab
        .backends
        .iter()
        .zip(&syns)
        .map(|(b, s)| (b.name.clone(), s.len()))
        .collect();
    println!("SYNs seen in the tunnel per real server: {seen:?}; frames {frames:?}");
    assert_eq!(
        seen, tally,
        "tunnelled SYNs per real server against the answers"
    );
    daemon.stop().unwrap();
}

/// Decodes a frame sent to real server `index`: the outer IPv6 header from the LB to
/// it, the inner packet the client's to the VIP. Returns the inner source port if it
/// is a SYN.
fn check_ip6ip6(lab: &DrLab, index: usize, frame: &[u8]) -> Option<u16> {
    let outer = Ipv6HeaderSlice::from_slice(&frame[14..])
        .unwrap()
        .to_header();
    assert_eq!(outer.next_header, IpNumber::IPV6, "IPv6 in IPv6");
    assert_eq!(
        outer.source,
        lab.lb_backend_addr6().octets(),
        "outer source: the LB's address towards the server"
    );
    assert_eq!(outer.destination, lab.backend_addr6(index).octets());
    assert_eq!(usize::from(outer.payload_length), frame.len() - 14 - 40);
    let inner = SlicedPacket::from_ip(&frame[14 + 40..]).expect("inner packet decodes");
    let Some(InternetSlice::Ipv6(ip)) = &inner.net else {
        panic!("inner not IPv6")
    };
    assert_eq!(ip.header().source_addr(), lab.client_addr6());
    assert_eq!(
        ip.header().destination_addr(),
        DrLab::VIP6,
        "inner still addressed to the VIP"
    );
    let Some(TransportSlice::Tcp(tcp)) = &inner.transport else {
        panic!("inner not TCP")
    };
    assert_eq!(tcp.destination_port(), 80);
    let header = ip.header().to_header();
    assert_eq!(
        tcp.checksum(),
        tcp.to_header()
            .calc_checksum_ipv6(&header, tcp.payload())
            .unwrap(),
        "inner checksum intact"
    );
    (tcp.syn() && !tcp.ack()).then_some(tcp.source_port())
}
