//! A server group through the real daemon and real HTTP servers: one
//! `[virtual_server_group]` of two ports (VIP:80 and VIP:8080) on one pool with
//! persistence. Each client reaches one real server whichever member it connects to
//! (the persistence entry belongs to the group's one service id), the group's one
//! health check per real server fails once when a server goes down, and only that
//! server's clients move, again to one server on both ports.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use xdp_lb_lab::{DrLab, DrLabOptions, http_get_new_connections_from};
use xdp_lb_tests::{IO_TIMEOUT, dr_lab, start, vip};

const CLIENTS: u8 = 6;

fn client(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 60 + i))
}

/// Each client's connections, `n` to each member in turn (80, 8080, 80): the real
/// servers they reached, with counts.
fn round(lab: &DrLab, n: usize) -> Vec<BTreeMap<String, usize>> {
    (0..CLIENTS)
        .map(|i| {
            let mut tally = BTreeMap::new();
            for port in [80, 8080, 80] {
                let got = http_get_new_connections_from(
                    &lab.client,
                    Some(client(i)),
                    vip(port),
                    n,
                    IO_TIMEOUT,
                )
                .unwrap();
                for (server, count) in got {
                    *tally.entry(server).or_default() += count;
                }
            }
            tally
        })
        .collect()
}

fn only(i: usize, tally: &BTreeMap<String, usize>) -> &str {
    assert_eq!(
        tally.len(),
        1,
        "client {i}: one real server over both members: {tally:?}"
    );
    tally.keys().next().unwrap()
}

#[test]
fn a_group_of_two_ports_keeps_each_client_on_one_server_and_checks_once() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    lab.start_http_backends(8080).unwrap();
    for i in 0..CLIENTS {
        lab.client
            .ip(["addr", "add", &format!("{}/24", client(i)), "dev", "eth0"])
            .unwrap();
    }
    let ifaces: Vec<String> = lab
        .lb_interfaces()
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect();
    let mut text = format!(
        "[dataplane]\ninterfaces = [{}]\nneighbour_timeout = \"10s\"\n\n\
         [virtual_server_group.web]\nmembers = [\"{vip}:80\", \"{vip}:8080\"]\n\n\
         [[virtual_server]]\ngroup = \"web\"\nscheduler = \"rr\"\npersistence_timeout = \"5m\"\n",
        ifaces.join(", "),
        vip = DrLab::VIP,
    );
    for b in &lab.backends {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  port = 80\n  \
             check = {{ type = \"tcp\", interval = \"200ms\", warmup = \"0s\", \
             connect_timeout = \"300ms\", retry = 0, fall = 2, rise = 2 }}\n",
            b.addr
        );
    }
    let mut daemon = start(&lab.lb, &text);

    let first = round(&lab, 10);
    let home: Vec<String> = first
        .iter()
        .enumerate()
        .map(|(i, t)| only(i, t).to_owned())
        .collect();
    for (i, tally) in first.iter().enumerate() {
        assert_eq!(tally.values().sum::<usize>(), 30, "client {i}");
    }
    let used: std::collections::BTreeSet<&String> = home.iter().collect();
    assert!(
        used.len() > 1,
        "persistence per client, not one server for all: {home:?}"
    );
    eprintln!("measured: client -> real server over :80 and :8080: {home:?}");

    // A server goes down: its one check (for the group) fails once; its clients move,
    // each to one server on both members, and the others stay.
    let victim = home[0].clone();
    let victim_addr = lab.backend(&victim).unwrap().addr;
    lab.stop_backend_server(&victim).unwrap();
    let needle = format!("real_server={victim_addr}:80");
    let line = daemon
        .wait_for_line(&needle, Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("real server down"), "{line}");
    assert!(line.contains("group web/tcp"), "the group named: {line}");
    let second = round(&lab, 4);
    for (i, tally) in second.iter().enumerate() {
        let now = only(i, tally);
        if home[i] == victim {
            assert_ne!(
                now, victim,
                "client {i} moved off the server that went down"
            );
        } else {
            assert_eq!(now, home[i], "client {i} stayed on its server");
        }
    }
    let log = daemon.stop().unwrap();
    let downs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("real server down") && l.contains(&needle))
        .collect();
    assert_eq!(
        downs.len(),
        1,
        "one check for the group's two members:\n{log}"
    );
}
