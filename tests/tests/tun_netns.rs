//! TUN end to end. This kernel has no ipip module, so the real server cannot
//! decapsulate; instead the frames arriving at the real server's interface are
//! captured and decoded: the outer IPv4 header (LB → real server, protocol 4) must
//! wrap the client's datagram exactly as the client sent it to the VIP.
//!
//! Over IPv6, and across families (an IPv4 VIP's IPv6 real servers: IPv4 in IPv6; an
//! IPv6 VIP's IPv4 real servers: IPv6 in IPv4), the real servers do decapsulate, with
//! the lab's XDP stand-ins for `ip6tnl` and `sit` devices (the kernel has neither
//! `ip6_tunnel` nor `sit`), and answer HTTP from the VIP straight to the client; the
//! frames are captured on the way to them (on the switch's ports) and decoded.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use etherparse::{
    InternetSlice, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, SlicedPacket, TransportSlice,
};
use xdp_lb_lab::{
    Capture, DrLab, DrLabOptions, http_get_new_connections,
    xdp::{Tunnel, attach_decap},
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
    // The program keeps one rr cursor per CPU, so the sender stays on one CPU: a
    // thread that moved between two would meet two cursors (a 3/1 split, seen on 2 CPUs).
    let sent: Vec<(u16, Vec<u8>)> = lab
        .client
        .run(|| {
            xdp_lb_lab::cpu::stay_on_this_cpu().unwrap();
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
    // Only frames to the server's own MAC: the lab's switch floods a frame to every
    // port until it has learnt where its destination is.
    let macs: Vec<[u8; 6]> = lab
        .backends
        .iter()
        .map(|b| b.mac_bytes().unwrap())
        .collect();
    let mut seen = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < sent.len() && std::time::Instant::now() < deadline {
        for (i, capture) in captures.iter().enumerate() {
            let to_this_server = |frame: &[u8]| is_ipip(frame) && frame[..6] == macs[i];
            if let Ok(frame) = capture.next_matching(Duration::from_millis(50), to_this_server) {
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

#[test]
fn http_through_an_ipv6_tun_vip_is_tunnelled_to_each_real_server_and_answered() {
    http_through_a_tunnel(Tunnel::Ip6InIp6);
}

/// IPVS's IPv4 in IPv6: an IPv4 VIP served by real servers reached over IPv6.
#[test]
fn http_through_an_ipv4_vip_to_ipv6_real_servers_goes_ipv4_in_ipv6() {
    http_through_a_tunnel(Tunnel::Ip4InIp6);
}

/// IPVS's IPv6 in IPv4: an IPv6 VIP served by real servers reached over IPv4.
#[test]
fn http_through_an_ipv6_vip_to_ipv4_real_servers_goes_ipv6_in_ipv4() {
    http_through_a_tunnel(Tunnel::Ip6InIp4);
}

/// The addresses one kind of tunnel is tested with.
struct Ends {
    client: IpAddr,
    vip: IpAddr,
    /// The LB's address towards the real servers: the outer source.
    lb: IpAddr,
    servers: Vec<IpAddr>,
}

fn ends(lab: &DrLab, tunnel: Tunnel) -> Ends {
    let v4_servers = lab.backends.iter().map(|b| IpAddr::V4(b.addr)).collect();
    let v6_servers = (0..lab.backends.len())
        .map(|i| IpAddr::V6(lab.backend_addr6(i)))
        .collect();
    let (v4_side, v6_side) = (
        (IpAddr::V4(lab.client_addr()), IpAddr::V4(DrLab::VIP)),
        (IpAddr::V6(lab.client_addr6()), IpAddr::V6(DrLab::VIP6)),
    );
    let ((client, vip), (lb, servers)) = match tunnel {
        Tunnel::Ip6InIp6 => (v6_side, (IpAddr::V6(lab.lb_backend_addr6()), v6_servers)),
        Tunnel::Ip4InIp6 => (v4_side, (IpAddr::V6(lab.lb_backend_addr6()), v6_servers)),
        Tunnel::Ip6InIp4 => (v6_side, (IpAddr::V4(lab.lb_backend_addr()), v4_servers)),
    };
    Ends {
        client,
        vip,
        lb,
        servers,
    }
}

/// 150 new HTTP connections through a TUN VIP with weights 1:2, the real servers
/// ending `tunnel`: the answers split by weight, and every connection's SYN was seen in
/// the tunnel to the server that answered it, outer and inner headers decoded.
fn http_through_a_tunnel(tunnel: Tunnel) {
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    for b in &lab.backends {
        attach_decap(&b.ns, "eth0", tunnel).unwrap();
    }
    let ends = ends(&lab, tunnel);
    let mut config = String::from("[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\n");
    config += &format!(
        "\n[[virtual_server]]\nvip = \"{}\"\nport = 80\nforwarding = \"tun\"\nscheduler = \"wrr\"\n",
        ends.vip
    );
    for (i, server) in ends.servers.iter().enumerate() {
        config += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{server}\"\n  weight = {}\n",
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

    let vip = SocketAddr::new(ends.vip, 80);
    let tally = http_get_new_connections(&lab.client, vip, 150, IO_TIMEOUT).unwrap();
    println!("TUN {tunnel:?}, 150 new connections, weights 1:2: {tally:?}");
    assert_split(&tally, &[("b1", 1), ("b2", 2)], 150, 5.0);

    // Every connection's SYN went through the tunnel to the server that answered it:
    // collect the inner SYNs' source ports per server until all 150 are seen.
    let mut syns: Vec<BTreeSet<u16>> = vec![BTreeSet::new(); lab.backends.len()];
    let mut frames = vec![0usize; lab.backends.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    // IP in IP (4) or IPv6 in IP (41); the segment also carries ND and MLD.
    let tunnelled = |frame: &[u8]| outer(frame).is_some_and(|(_, proto)| proto == 4 || proto == 41);
    while syns.iter().map(BTreeSet::len).sum::<usize>() < 150 && Instant::now() < deadline {
        for (i, capture) in captures.iter().enumerate() {
            while let Ok(frame) = capture.next_matching(Duration::from_millis(20), tunnelled) {
                frames[i] += 1;
                if let Some(sport) = check_tunnelled(&ends, i, &frame) {
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

/// An untagged IP frame's outer header length and protocol (next header).
fn outer(frame: &[u8]) -> Option<(usize, u8)> {
    match frame.get(12..14)? {
        [0x08, 0x00] => Some((20, *frame.get(14 + 9)?)),
        [0x86, 0xdd] => Some((40, *frame.get(14 + 6)?)),
        _ => None,
    }
}

/// Decodes a frame sent to real server `index`: the outer header from the LB to it
/// (of the server's family, carrying the VIP's), the inner packet the client's to the
/// VIP with its TCP checksum intact. Returns the inner source port if it is a SYN.
fn check_tunnelled(ends: &Ends, index: usize, frame: &[u8]) -> Option<u16> {
    let (outer_len, proto) = outer(frame).expect("an IP frame");
    let inner_len = frame.len() - 14 - outer_len;
    let (source, destination) = if outer_len == 20 {
        let outer = Ipv4HeaderSlice::from_slice(&frame[14..])
            .unwrap()
            .to_header();
        assert_eq!(usize::from(outer.total_len), 20 + inner_len);
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        (IpAddr::from(outer.source), IpAddr::from(outer.destination))
    } else {
        let outer = Ipv6HeaderSlice::from_slice(&frame[14..])
            .unwrap()
            .to_header();
        assert_eq!(usize::from(outer.payload_length), inner_len);
        (IpAddr::from(outer.source), IpAddr::from(outer.destination))
    };
    assert_eq!(
        proto,
        if ends.vip.is_ipv4() { 4 } else { 41 },
        "the protocol names the inner family"
    );
    assert_eq!(
        source, ends.lb,
        "outer source: the LB's address towards the server"
    );
    assert_eq!(destination, ends.servers[index]);
    let inner = SlicedPacket::from_ip(&frame[14 + outer_len..]).expect("inner packet decodes");
    let Some(TransportSlice::Tcp(tcp)) = &inner.transport else {
        panic!("inner not TCP")
    };
    let (from, to, checksum) = match &inner.net {
        Some(InternetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            let sum = tcp.to_header().calc_checksum_ipv4(&h, tcp.payload());
            (
                IpAddr::from(h.source),
                IpAddr::from(h.destination),
                sum.unwrap(),
            )
        }
        Some(InternetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            let sum = tcp.to_header().calc_checksum_ipv6(&h, tcp.payload());
            (
                IpAddr::from(h.source),
                IpAddr::from(h.destination),
                sum.unwrap(),
            )
        }
        _ => panic!("inner not IP"),
    };
    assert_eq!(
        (from, to),
        (ends.client, ends.vip),
        "the client's packet to the VIP"
    );
    assert_eq!(tcp.destination_port(), 80);
    // One's complement has two zeros: a sum the client's kernel wrote as 0xffff is the
    // one etherparse computes as 0x0000, and a receiver accepts either.
    let written = tcp.checksum();
    assert!(
        written == checksum || (written | checksum == 0xffff && written & checksum == 0),
        "inner checksum intact: written {written:#06x}, computed {checksum:#06x}"
    );
    (tcp.syn() && !tcp.ack()).then_some(tcp.source_port())
}
