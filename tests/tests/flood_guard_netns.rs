//! The flood guard against a real SYN flood: 100 long-lived keep-alive connections
//! through the VIP (wrr over three real servers, a flow table of 1,024 entries), then
//! 200,000 SYNs from spoofed sources, each sent twice. Without the guard the flood
//! evicts the connections' flow entries and wrr sends their next packets elsewhere
//! (the control run, which proves the test can fail); with `new_flow_rate` none
//! breaks.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use xdp_lb_lab::{DrLab, DrLabOptions, KeepAlive};
use xdp_lb_tests::{IO_TIMEOUT, config, dr_lab, start, vip};

const CONNECTIONS: usize = 100;
const FLOOD: u32 = 200_000;

/// 200,000 TCP SYNs to VIP:80 from 198.18.0.0/15 (a different source and port each),
/// each sent twice, through a raw socket in the client's namespace.
fn syn_flood(lab: &DrLab) -> Duration {
    lab.client
        .run(|| {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
            )
            .expect("raw socket");
            let to = SocketAddrV4::new(DrLab::VIP, 0).into();
            let started = Instant::now();
            for i in 0..FLOOD {
                let src = Ipv4Addr::new(198, 18 + (i >> 16) as u8 % 2, (i >> 8) as u8, i as u8);
                let mut p = [0u8; 40];
                p[0] = 0x45;
                p[8] = 64;
                p[9] = 6;
                p[12..16].copy_from_slice(&src.octets());
                p[16..20].copy_from_slice(&DrLab::VIP.octets());
                p[20..22].copy_from_slice(&(1024 + (i % 60_000) as u16).to_be_bytes());
                p[22..24].copy_from_slice(&80u16.to_be_bytes());
                p[32] = 0x50;
                p[33] = 0x02; // SYN
                p[34..36].copy_from_slice(&64_000u16.to_be_bytes());
                // The kernel fills in the IP checksum and length (raw(7)); the TCP
                // checksum stays wrong, the real servers drop these anyway. Each SYN
                // goes twice, as a client's retransmission would: its flow's second
                // packet marks the entry used, so the LRU's second chance (which
                // spares used entries from a flood of one-packet flows) does not
                // spare the idle established ones in the control run either.
                for _ in 0..2 {
                    while socket.send_to(&p, &to).is_err() {
                        std::thread::yield_now();
                    }
                }
            }
            started.elapsed()
        })
        .unwrap()
}

/// Opens the connections, floods, then asks on each again: how many broke or moved.
fn broken_by_a_flood(new_flow_rate: u64) -> usize {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    let text = config(&lab, &[(80, "tcp", &[1, 1, 1])]).replace(
        "neighbour_timeout = \"10s\"\n",
        &format!(
            "neighbour_timeout = \"10s\"\nmax_flows = 1024\nnew_flow_rate = {new_flow_rate}\n"
        ),
    );
    let daemon = start(&lab.lb, &text);
    let mut connections: Vec<(KeepAlive, String)> = (0..CONNECTIONS)
        .map(|_| {
            let mut c = KeepAlive::open(&lab.client, vip(80), IO_TIMEOUT).unwrap();
            let first = c.get().unwrap();
            (c, first)
        })
        .collect();
    let took = syn_flood(&lab);
    let broken = connections
        .iter_mut()
        .map(|(c, first)| !matches!(c.get(), Ok(name) if name == *first))
        .filter(|broke| *broke)
        .count();
    eprintln!(
        "measured: new_flow_rate {new_flow_rate}: {FLOOD} SYNs in {took:?}, {broken} of \
         {CONNECTIONS} connections broken"
    );
    drop(connections);
    daemon.stop().unwrap();
    broken
}

#[test]
fn the_flood_guard_keeps_established_connections_through_a_syn_flood() {
    assert!(
        broken_by_a_flood(0) > 0,
        "control: without the guard the flood should evict established flows"
    );
    assert_eq!(
        broken_by_a_flood(100),
        0,
        "with the guard no connection breaks"
    );
}
