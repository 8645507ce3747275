//! Persistence with IPVS's meaning, through the real daemon and real HTTP servers: each
//! of 10 clients sends all of its 200 new connections to one real server (with `rr`,
//! which alone would spread every client's connections over all three), and when a
//! server goes down only its clients move, each again to one server. With a 2 s
//! timeout, the daemon's own `xdp-lb explain` (reading the live persistence map) shows
//! each client's entry followed while fresh and no longer once the client has been
//! quiet for the timeout, and the next connections are scheduled anew (and stick
//! again). The timeout's edges are checked in BPF_PROG_TEST_RUN
//! (`xdp_program::persistence_*`).
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use xdp_lb::explain::{Explanation, Persisted};
use xdp_lb_lab::{DrLab, DrLabOptions, http_get_new_connections_from};
use xdp_lb_tests::{IO_TIMEOUT, config, dr_lab, start, vip};

const CLIENTS: u8 = 10;
const CONNECTIONS: usize = 200;

fn client(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 60 + i))
}

/// Each client's connections: the servers they reached, with counts.
fn round(lab: &xdp_lb_lab::DrLab, n: usize) -> Vec<BTreeMap<String, usize>> {
    (0..CLIENTS)
        .map(|i| {
            http_get_new_connections_from(&lab.client, Some(client(i)), vip(80), n, IO_TIMEOUT)
                .unwrap()
        })
        .collect()
}

fn only(tally: &BTreeMap<String, usize>) -> &str {
    assert_eq!(tally.len(), 1, "one real server per client: {tally:?}");
    tally.keys().next().unwrap()
}

#[test]
fn each_client_sticks_to_one_real_server_and_moves_only_when_it_goes_down() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    for i in 0..CLIENTS {
        lab.client
            .ip(["addr", "add", &format!("{}/24", client(i)), "dev", "eth0"])
            .unwrap();
    }
    let check = "  check = { type = \"tcp\", interval = \"200ms\", warmup = \"0s\", \
                 connect_timeout = \"300ms\", retry = 0, fall = 2, rise = 2 }\n";
    let text = config(&lab, &[(80, "tcp", &[1, 1, 1])])
        .replace(
            "scheduler = \"wrr\"\n",
            "scheduler = \"rr\"\npersistence_timeout = \"5m\"\n",
        )
        .replace("weight = 1\n", &format!("weight = 1\n{check}"));
    let mut daemon = start(&lab.lb, &text);

    let first = round(&lab, CONNECTIONS);
    let home: Vec<String> = first.iter().map(|t| only(t).to_owned()).collect();
    for (i, tally) in first.iter().enumerate() {
        assert_eq!(tally.values().sum::<usize>(), CONNECTIONS, "client {i}");
    }
    // rr picked each client's first server: the clients are spread, not all on one.
    let used: std::collections::BTreeSet<&String> = home.iter().collect();
    assert!(
        used.len() > 1,
        "persistence per client, not one server for all: {home:?}"
    );
    eprintln!("measured: client -> real server: {home:?}");

    // A server goes down: its clients move (each to one server), the others stay.
    let victim = home[0].clone();
    let victim_addr = lab.backend(&victim).unwrap().addr;
    lab.stop_backend_server(&victim).unwrap();
    let line = daemon
        .wait_for_line(
            &format!("real_server={victim_addr}:80"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(line.contains("real server down"), "{line}");
    let second = round(&lab, 20);
    for (i, tally) in second.iter().enumerate() {
        let now = only(tally);
        if home[i] == victim {
            assert_ne!(
                now, victim,
                "client {i} moved off the server that went down"
            );
        } else {
            assert_eq!(now, home[i], "client {i} stayed on its server");
        }
    }
    daemon.stop().unwrap();
}

/// `xdp-lb explain CLIENT VIP:80 tcp --json` in the LB's namespace (the API on its
/// default loopback address there): the client's persistence entry.
fn persisted(lab: &DrLab, client: IpAddr) -> Persisted {
    let json = xdp_lb_tests::run_in(
        &lab.lb,
        &[
            "explain",
            &client.to_string(),
            &vip(80).to_string(),
            "tcp",
            "--json",
            "--api",
            "127.0.0.1:9180",
        ],
    );
    let e: Explanation = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    e.service
        .and_then(|s| s.persisted)
        .expect("a persistent service explains its memory of the client")
}

#[test]
fn after_the_timeout_a_quiet_client_is_scheduled_anew() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    // Three clients, each a /28 (`persistence_granularity = 28`), each round from
    // another address of its /28: the same client to persistence, but new 5-tuples,
    // so no connection can meet a flow entry an earlier round left (a live one would
    // keep it where it is, whatever persistence says).
    let address =
        |client: u8, round: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, 64 + 16 * client + 1 + round));
    for c in 0..3 {
        for r in 0..3 {
            lab.client
                .ip([
                    "addr",
                    "add",
                    &format!("{}/24", address(c, r)),
                    "dev",
                    "eth0",
                ])
                .unwrap();
        }
    }
    let text = config(&lab, &[(80, "tcp", &[1, 1, 1])]).replace(
        "scheduler = \"wrr\"\n",
        "scheduler = \"rr\"\npersistence_timeout = \"2s\"\npersistence_granularity = 28\n",
    );
    let daemon = start(&lab.lb, &text);
    let connect = |c: IpAddr, n: usize| {
        let tally =
            http_get_new_connections_from(&lab.client, Some(c), vip(80), n, IO_TIMEOUT).unwrap();
        only(&tally).to_owned()
    };
    let server = |name: &str| IpAddr::V4(lab.backend(name).unwrap().addr);

    for round in 0..2u8 {
        let clients: Vec<IpAddr> = (0..3).map(|c| address(c, round)).collect();
        // Each client is looked at right after its own connections: on a slow (emulated)
        // machine the next client's 30 take longer than the timeout.
        let mut homes = Vec::new();
        let mut quiet_since = Vec::new();
        for c in &clients {
            let home = connect(*c, 30);
            quiet_since.push(Instant::now());
            let p = persisted(&lab, *c);
            assert!(p.used, "round {round}: {c} is followed while fresh: {p:?}");
            assert_eq!(
                p.real_server.map(|r| r.address),
                Some(server(&home)),
                "round {round}: {c}'s entry names the server its connections reached"
            );
            homes.push(home);
        }
        // Quiet now: each entry stops being followed once the client has been silent
        // for the timeout (the program refreshes it at most once a second), not before.
        let mut expired_after = Vec::new();
        for (c, since) in clients.iter().zip(&quiet_since) {
            let deadline = *since + TIMEOUT * 3;
            while persisted(&lab, *c).used {
                assert!(Instant::now() < deadline, "{c}'s entry never expired");
                std::thread::sleep(Duration::from_millis(50));
            }
            expired_after.push(since.elapsed());
        }
        eprintln!(
            "measured: round {round}: homes {homes:?}, entries no longer followed after {expired_after:?}"
        );
        assert!(
            expired_after[0] >= TIMEOUT - Duration::from_secs(1),
            "not before the timeout (less one refresh period): {expired_after:?}"
        );
    }
    // And the next connections, scheduled anew, stick again.
    for c in (0..3).map(|c| address(c, 2)) {
        connect(c, 10);
        assert!(persisted(&lab, c).used);
    }
    daemon.stop().unwrap();
}
