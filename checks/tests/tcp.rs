//! TCP_CHECK against real sockets in a fresh network namespace.

mod common;

use std::time::Duration;

use common::{SILENT, addr, blackhole, closed_port, in_netns, in_netns_with, params, probe};
use tokio::net::TcpListener;
use xdp_lb_checks::{CheckSpec, Phase, Reason, Up};

#[test]
fn up_when_a_listener_accepts() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        assert_eq!(probe(server, CheckSpec::Tcp).await, Ok(Up::default()));
    });
}

#[test]
fn up_over_ipv6() {
    in_netns(|| async {
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        assert_eq!(probe(server, CheckSpec::Tcp).await, Ok(Up::default()));
    });
}

#[test]
fn refused_on_a_closed_port() {
    in_netns(|| async {
        let server = addr("127.0.0.1", closed_port());
        assert_eq!(probe(server, CheckSpec::Tcp).await, Err(Reason::Refused));
    });
}

#[test]
fn timeout_when_nobody_answers() {
    in_netns_with(blackhole, || async {
        let server = addr(SILENT, 80);
        let started = tokio::time::Instant::now();
        let outcome = probe(server, CheckSpec::Tcp).await;
        assert_eq!(
            outcome,
            Err(Reason::Timeout {
                phase: Phase::Connect,
                after: Duration::from_millis(500)
            })
        );
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "timeout after 500ms connecting"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    });
}

#[test]
fn unreachable_network_is_named() {
    in_netns(|| async {
        // The namespace has only `lo`: no route to the documentation range.
        let outcome = probe(addr("203.0.113.1", 80), CheckSpec::Tcp).await;
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "connecting: network is unreachable"
        );
    });
}

#[test]
fn source_address_is_used() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let mut p = params(server, &CheckSpec::Tcp);
        p.source = Some("127.0.0.2".parse().unwrap());
        let (outcome, accepted) =
            tokio::join!(common::probe_with(p, CheckSpec::Tcp), listener.accept());
        assert_eq!(outcome, Ok(Up::default()));
        assert_eq!(accepted.unwrap().1.ip(), addr("127.0.0.2", 0).ip());
    });
}

#[test]
fn connect_ip_and_port_override_the_server() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The real server's own port is closed; the check goes elsewhere.
        let server = addr("127.0.0.1", closed_port());
        let mut p = params(server, &CheckSpec::Tcp);
        p.connect_ip = Some("127.0.0.3".parse().unwrap());
        p.connect_port = Some(port);
        assert_eq!(
            common::probe_with(p.clone(), CheckSpec::Tcp).await,
            Ok(Up::default())
        );
        assert_eq!(
            CheckSpec::Tcp.describe(&p),
            format!("tcp_check 127.0.0.3:{port}")
        );
    });
}
