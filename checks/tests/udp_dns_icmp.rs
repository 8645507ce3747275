//! UDP_CHECK, DNS_CHECK and PING_CHECK against real sockets in a fresh network namespace:
//! an echo server, a closed port, a silent server, a tiny DNS responder answering crafted
//! replies, the kernel's own ICMP echo on loopback, and an address where packets vanish.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{SILENT, addr, blackhole, in_netns, in_netns_with, params, probe};
use tokio::net::UdpSocket;
use xdp_lb_checks::{CheckSpec, Checker, DnsCheck, Phase, QType, Reason, UdpCheck, Up};

const TIMEOUT: Duration = Duration::from_millis(500);

/// A UDP server on 127.0.0.1 answering each datagram with `answer(datagram)` (nothing
/// when it returns `None`).
async fn udp_server(answer: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
            for reply in answer(&buf[..len]) {
                socket.send_to(&reply, peer).await.unwrap();
            }
        }
    });
    server
}

/// A port on 127.0.0.1 where no UDP socket is bound.
fn closed_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

fn udp(payload: &[u8], expect: Option<&[u8]>) -> CheckSpec {
    CheckSpec::Udp(UdpCheck {
        payload: payload.to_vec(),
        expect: expect.map(<[u8]>::to_vec),
    })
}

fn pong(datagram: &[u8]) -> Vec<Vec<u8>> {
    let mut reply = b"pong:".to_vec();
    reply.extend_from_slice(datagram);
    vec![reply]
}

#[test]
fn udp_reply_matching_the_expected_start_is_up() {
    in_netns(|| async {
        let server = udp_server(pong).await;
        assert_eq!(
            probe(server, udp(b"ping", Some(b"pong:ping"))).await,
            Ok(Up::default())
        );
        // Any reply will do when the expectation is empty.
        assert_eq!(probe(server, udp(b"x", Some(b""))).await, Ok(Up::default()));
    });
}

#[test]
fn udp_reply_not_matching_is_down() {
    in_netns(|| async {
        let server = udp_server(pong).await;
        let outcome = probe(server, udp(b"ping", Some(b"PONG"))).await;
        assert_eq!(
            outcome,
            Err(Reason::UnexpectedReply {
                expected: b"PONG".to_vec(),
                got: b"pong:ping".to_vec()
            })
        );
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "reply does not match: expected 504f4e47 at the start, got 706f6e673a70696e67"
        );
    });
}

#[test]
fn udp_closed_port_is_port_unreachable() {
    in_netns(|| async {
        let server = addr("127.0.0.1", closed_udp_port());
        assert_eq!(
            probe(server, udp(b"ping", None)).await,
            Err(Reason::PortUnreachable)
        );
        assert_eq!(
            probe(server, udp(b"ping", Some(b"pong"))).await,
            Err(Reason::PortUnreachable)
        );
    });
}

/// A host (not loopback, which is exempt) sends ICMP errors at most about once a
/// second after a short burst (net.ipv4.icmp_ratelimit): the silences between them
/// must not make a closed port look open.
#[test]
fn udp_closed_port_stays_down_through_the_icmp_rate_limit() {
    let target = xdp_lb_lab::Netns::new("xlbudp").unwrap();
    let peer = target.name().to_owned();
    let outcomes = in_netns_with(
        |ns| {
            ns.ip([
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer,
            ])
            .unwrap();
            ns.ip(["addr", "add", "10.9.0.1/24", "dev", "eth0"])
                .unwrap();
            ns.ip(["link", "set", "eth0", "up"]).unwrap();
            target
                .ip(["addr", "add", "10.9.0.2/24", "dev", "eth0"])
                .unwrap();
            target.ip(["link", "set", "eth0", "up"]).unwrap();
        },
        || async {
            let spec = udp(b"ping", None);
            let mut p = params(addr("10.9.0.2", 9), &spec);
            p.connect_timeout = Duration::from_millis(50);
            let checker = Checker::new(&spec, &p).unwrap();
            let mut outcomes = Vec::new();
            for _ in 0..30 {
                outcomes.push(checker.probe().await);
            }
            outcomes
        },
    );
    let up = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(
        up, 0,
        "a closed port looked open {up} times of 30: {outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| *o == Err(Reason::PortUnreachable)),
        "{outcomes:?}"
    );
}

#[test]
fn udp_silence_is_up_without_expectation_and_a_timeout_with_one() {
    in_netns(|| async {
        let server = udp_server(|_| vec![]).await;
        assert_eq!(probe(server, udp(b"ping", None)).await, Ok(Up::default()));
        assert_eq!(
            probe(server, udp(b"ping", Some(b"pong"))).await,
            Err(Reason::Timeout {
                phase: Phase::Reply,
                after: TIMEOUT
            })
        );
    });
}

/// Answers DNS queries by their name, with replies built by hand here (not with the
/// checker's encoder): `ok.test` → one A record; `alias.test` → CNAME then A;
/// `nx.test` → NXDOMAIN; `fail.test` → SERVFAIL; `empty.test` → NOERROR without
/// answers; `late.test` → first a reply with another id, then the right one; `.` → SOA.
fn dns_answer(query: &[u8]) -> Vec<Vec<u8>> {
    let question = &query[12..];
    let name_end = question.iter().position(|&b| b == 0).unwrap() + 1;
    let name = &question[..name_end];
    let reply = |rcode: u8, answers: &[(u16, &[u8])]| {
        let mut r = query[..2].to_vec(); // id
        r.extend_from_slice(&[0x81, 0x80 | rcode]); // QR RD RA, rcode
        r.extend_from_slice(&[0, 1, 0, answers.len() as u8, 0, 0, 0, 0]);
        r.extend_from_slice(question);
        for (rtype, rdata) in answers {
            // Owner name: a pointer to the question's name at offset 12.
            r.extend_from_slice(&[0xc0, 0x0c]);
            r.extend_from_slice(&rtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(rdata);
        }
        r
    };
    match name {
        b"\x02ok\x04test\x00" => vec![reply(0, &[(1, &[192, 0, 2, 10])])],
        b"\x05alias\x04test\x00" => vec![reply(
            0,
            &[(5, b"\x02ok\x04test\x00"), (1, &[192, 0, 2, 10])],
        )],
        b"\x02nx\x04test\x00" => vec![reply(3, &[])],
        b"\x04fail\x04test\x00" => vec![reply(2, &[])],
        b"\x05empty\x04test\x00" => vec![reply(0, &[])],
        b"\x04late\x04test\x00" => {
            let mut wrong = reply(0, &[(1, &[192, 0, 2, 66])]);
            wrong[0] ^= 0xff;
            vec![wrong, reply(0, &[(1, &[192, 0, 2, 10])])]
        }
        b"\x00" => {
            // Root SOA: mname/rname "." and five 32-bit numbers.
            let soa: &[u8] = &[
                0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5,
            ];
            vec![reply(0, &[(6, soa)])]
        }
        _ => vec![reply(5, &[])],
    }
}

fn dns(name: &str, qtype: QType) -> CheckSpec {
    CheckSpec::Dns(DnsCheck {
        name: name.into(),
        qtype,
    })
}

#[test]
fn dns_answer_is_up() {
    in_netns(|| async {
        let server = udp_server(dns_answer).await;
        assert_eq!(
            probe(server, dns("ok.test", QType::A)).await,
            Ok(Up::default())
        );
        assert_eq!(
            probe(server, dns("alias.test.", QType::A)).await,
            Ok(Up::default())
        );
        // keepalived's default: SOA of the root.
        assert_eq!(
            probe(server, CheckSpec::Dns(DnsCheck::default())).await,
            Ok(Up::default())
        );
        // A reply with another id is not ours: the right one that follows counts.
        assert_eq!(
            probe(server, dns("late.test", QType::A)).await,
            Ok(Up::default())
        );
    });
}

#[test]
fn dns_error_rcodes_and_empty_answers_are_down() {
    in_netns(|| async {
        let server = udp_server(dns_answer).await;
        let nx = probe(server, dns("nx.test", QType::A)).await;
        assert_eq!(nx, Err(Reason::DnsRcode { rcode: 3 }));
        assert_eq!(nx.unwrap_err().to_string(), "dns rcode nxdomain");
        assert_eq!(
            probe(server, dns("fail.test", QType::A)).await,
            Err(Reason::DnsRcode { rcode: 2 })
        );
        let empty = probe(server, dns("empty.test", QType::Aaaa)).await;
        assert_eq!(
            empty.unwrap_err().to_string(),
            "dns reply has no aaaa answer for empty.test"
        );
        // An answer of another type is no answer.
        assert_eq!(
            probe(server, dns("ok.test", QType::Mx)).await,
            Err(Reason::DnsNoAnswer {
                name: "ok.test".into(),
                qtype: QType::Mx
            })
        );
    });
}

#[test]
fn dns_closed_port_and_silence() {
    in_netns(|| async {
        let closed = addr("127.0.0.1", closed_udp_port());
        assert_eq!(
            probe(closed, dns("ok.test", QType::A)).await,
            Err(Reason::PortUnreachable)
        );
        let silent = udp_server(|_| vec![]).await;
        assert_eq!(
            probe(silent, dns("ok.test", QType::A)).await,
            Err(Reason::Timeout {
                phase: Phase::Reply,
                after: TIMEOUT
            })
        );
    });
}

#[test]
fn icmp_echo_to_loopback_is_up_over_raw_sockets() {
    // A fresh namespace allows no ping sockets (ping_group_range "1 0"): raw it is,
    // which needs root.
    in_netns(|| async {
        assert_eq!(
            probe(addr("127.0.0.1", 0), CheckSpec::Icmp).await,
            Ok(Up::default())
        );
        assert_eq!(
            probe(addr("::1", 0), CheckSpec::Icmp).await,
            Ok(Up::default())
        );
    });
}

#[test]
fn icmp_echo_to_loopback_is_up_over_ping_sockets() {
    in_netns_with(
        |ns| {
            ns.sysctl(&[("net/ipv4/ping_group_range", "0 2147483647")])
                .unwrap_or_else(|e| panic!("{e:#}"))
        },
        || async {
            assert_eq!(
                probe(addr("127.0.0.1", 0), CheckSpec::Icmp).await,
                Ok(Up::default())
            );
            assert_eq!(
                probe(addr("::1", 0), CheckSpec::Icmp).await,
                Ok(Up::default())
            );
        },
    );
}

#[test]
fn icmp_without_a_route_is_down() {
    in_netns(|| async {
        let outcome = probe(addr("203.0.113.1", 0), CheckSpec::Icmp).await;
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "connecting: network is unreachable"
        );
    });
}

#[test]
fn icmp_without_a_reply_times_out() {
    in_netns_with(blackhole, || async {
        assert_eq!(
            probe(addr(SILENT, 0), CheckSpec::Icmp).await,
            Err(Reason::Timeout {
                phase: Phase::Reply,
                after: TIMEOUT
            })
        );
    });
}
