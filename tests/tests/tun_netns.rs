//! TUN end to end. This kernel has no ipip module, so the real server cannot
//! decapsulate; instead the frames arriving at the real server's interface are
//! captured and decoded: the outer IPv4 header (LB → real server, protocol 4) must
//! wrap the client's datagram exactly as the client sent it to the VIP.

use std::{net::UdpSocket, time::Duration};

use etherparse::{InternetSlice, IpNumber, Ipv4HeaderSlice, SlicedPacket, TransportSlice};
use xdp_lb_lab::{Capture, DrLab, DrLabOptions};
use xdp_lb_tests::{dr_lab, start};

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
