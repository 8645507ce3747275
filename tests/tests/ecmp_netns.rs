//! Active-active xdp-lb behind an ECMP router, the VIP announced by each node's FRR
//! (Debian's frr, bgpd + zebra) from the address xdp-lb's `announce = true` puts on
//! `lo` while the service has quorum. Three LBs (DR, Maglev), three real servers, a
//! router running bgpd with `maximum-paths` and the L4 multipath hash, a client with
//! many source ports ([`xdp_lb_lab::ecmp`]).
//!
//! Measured and asserted (figures printed with `--nocapture`):
//! - every LB's announcement reaches the router, and new connections spread over the
//!   three LBs (each LB's own counters);
//! - `xdp-lb drain` on one LB: its route leaves the router, 0 of 300 open keep-alive
//!   connections break (those through it continue through the others, on the same
//!   real server: Maglev), and the time until it carries no traffic; then it resumes;
//! - a real server goes down: only its connections break, every LB stops sending to
//!   it, the others' connections carry on;
//! - a host crash of one LB (off the wire, `kill -9` of xdp-lb and FRR): the router
//!   drops the route once BFD (20 ms × 3, FRR's bfdd on both sides) finds the LB
//!   silent; connections through the dead LB continue on another one with the same
//!   real server, the others are unaffected; the gap is measured.
//!
//! Needs root and FRR; fails (never skips) without them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use xdp_lb::status::Snapshot;
use xdp_lb_lab::{
    Daemon, KeepAlive,
    ecmp::{EcmpLab, VIP, lb_addr, xdp_lb_config},
    http_get_new_connections,
};
use xdp_lb_tests::{binary, start};

const LBS: usize = 3;
const LONG_LIVED: usize = 300;
/// Per request: a connection whose LB died waits for TCP to retransmit through another.
const IO: Duration = Duration::from_secs(10);
/// Generous: BGP on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(20);

fn vip() -> SocketAddr {
    SocketAddr::from((VIP, 80))
}

/// LB `i`'s `/status`, through the real `xdp-lb status --json` in its namespace.
fn status(lab: &EcmpLab, i: usize) -> Snapshot {
    let out = lab.lbs[i]
        .command(binary())
        .args(["status", "--json", "--api", "127.0.0.1:9180"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xdp-lb status on lb{}: {}",
        i + 1,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each LB's new flows and packets for the VIP.
fn counters(lab: &EcmpLab) -> Vec<(u64, u64)> {
    (0..LBS)
        .map(|i| {
            let c = &status(lab, i).services[0].counters;
            (c.new_flows, c.packets)
        })
        .collect()
}

/// What else each LB counted, for a count that does not add up: flows moved off a
/// real server (counted new again), flows left unpinned, health transitions.
fn details(lab: &EcmpLab) -> String {
    (0..LBS)
        .map(|i| {
            let s = &status(lab, i).services[0];
            let transitions: Vec<u64> = s
                .real_servers
                .iter()
                .map(|r| r.health_transitions)
                .collect();
            format!(
                "lb{}: rescheduled {}, unpinned {}, health transitions {transitions:?}",
                i + 1,
                s.counters.rescheduled_flows,
                s.counters.unpinned_flows
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Open keep-alive connections and the real server each answered first.
struct Connections {
    open: Vec<(KeepAlive, String)>,
}

impl Connections {
    fn open(lab: &EcmpLab, n: usize) -> Connections {
        let open = (0..n)
            .map(|_| {
                let mut c = KeepAlive::open(&lab.client, vip(), IO).unwrap();
                let name = c.get().unwrap();
                (c, name)
            })
            .collect();
        Connections { open }
    }

    /// One GET on every connection: (broken connections with their error, moved ones).
    /// Broken ones are closed.
    fn round(&mut self) -> (Vec<String>, Vec<String>) {
        let (mut broken, mut moved) = (Vec::new(), Vec::new());
        self.open.retain_mut(|(c, name)| match c.get() {
            Ok(now) if now == *name => true,
            Ok(now) => {
                moved.push(format!("{name} -> {now}"));
                true
            }
            Err(e) => {
                broken.push(format!("{name}: {e:#}"));
                false
            }
        });
        (broken, moved)
    }

    fn on(&self, name: &str) -> usize {
        self.open.iter().filter(|(_, n)| n == name).count()
    }
}

fn tally(lab: &EcmpLab, n: usize) -> BTreeMap<String, usize> {
    http_get_new_connections(&lab.client, vip(), n, IO).unwrap()
}

#[test]
fn three_lbs_behind_ecmp_spread_drain_and_survive_failures() {
    let mut lab = EcmpLab::build(LBS, 3).expect("build the ECMP lab (root and frr needed)");
    for b in &mut lab.backends {
        b.start_http(80).unwrap();
    }
    let addrs: Vec<_> = lab.backends.iter().map(|b| b.addr).collect();
    let frr_version = lab.router_frr.vtysh("show version").unwrap();
    eprintln!(
        "measured: FRR {}",
        frr_version.lines().next().unwrap_or("?").trim()
    );

    // Every LB starts, and with quorum announces: the router installs three paths.
    let started = Instant::now();
    let mut daemons: Vec<Option<Daemon>> = (0..LBS)
        .map(|i| Some(start(&lab.lbs[i], &xdp_lb_config(i, &addrs))))
        .collect();
    for d in daemons.iter_mut().flatten() {
        d.wait_for_line("VIP announced", Duration::from_secs(10))
            .unwrap();
    }
    lab.wait_next_hops(&[0, 1, 2], CONVERGE).unwrap();
    eprintln!(
        "measured: 3 LBs started and announced, the router holds 3 paths after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let s = status(&lab, 0);
    assert_eq!(s.announcements.len(), 1);
    assert!(s.announcements[0].announced, "{:?}", s.announcements);

    // Spread of new connections over the LBs (each LB's own count) and real servers.
    let before = counters(&lab);
    let servers = tally(&lab, 600);
    let after = counters(&lab);
    let per_lb: Vec<u64> = (0..LBS).map(|i| after[i].0 - before[i].0).collect();
    eprintln!("measured: 600 new connections: per LB {per_lb:?}, per real server {servers:?}");
    // Each connection is new to one LB, a reused source port's too: the real servers
    // close these connections, so the client keeps no TIME_WAIT and may reuse a port
    // whose flow entry is still in the LB's table; its SYN reopens that flow as new.
    let counted = per_lb.iter().sum::<u64>();
    assert_eq!(
        counted,
        600,
        "connections counted as new: {per_lb:?}; {}",
        details(&lab)
    );
    for (i, n) in per_lb.iter().enumerate() {
        assert!(
            (100..=300).contains(n),
            "lb{} took {n} of 600 new connections: {per_lb:?}",
            i + 1
        );
    }
    for (name, n) in &servers {
        assert!((100..=300).contains(n), "{name}: {n} of 600: {servers:?}");
    }

    // Drain lb1 under 300 open keep-alive connections.
    let mut conns = Connections::open(&lab, LONG_LIVED);
    let via_lb1_before = counters(&lab)[0].1;
    let drain_start = Instant::now();
    let drain = lab.lbs[0]
        .command(binary())
        .args(["drain", "--api", "127.0.0.1:9180", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut route_gone = None;
    let mut rounds = 0;
    let drain_out = {
        let mut drain = drain;
        loop {
            let (broken, moved) = conns.round();
            rounds += 1;
            assert!(
                broken.is_empty() && moved.is_empty(),
                "while draining lb1: broken {broken:?}, moved {moved:?}"
            );
            if route_gone.is_none() && lab.next_hops().unwrap() == [lb_addr(1), lb_addr(2)] {
                route_gone = Some(drain_start.elapsed());
            }
            if drain.try_wait().unwrap().is_some() {
                break drain.wait_with_output().unwrap();
            }
            assert!(
                drain_start.elapsed() < Duration::from_secs(60),
                "drain hangs"
            );
        }
    };
    let drain_took = drain_start.elapsed();
    let text = String::from_utf8_lossy(&drain_out.stdout).into_owned();
    assert!(
        drain_out.status.success() && text.contains("drained"),
        "xdp-lb drain: {:?}\n{text}\n{}",
        drain_out.status,
        String::from_utf8_lossy(&drain_out.stderr)
    );
    let route_gone = match route_gone {
        Some(t) => t,
        None => lab.wait_next_hops(&[1, 2], CONVERGE).unwrap() + drain_start.elapsed(),
    };
    let (broken, moved) = conns.round();
    assert!(
        broken.is_empty() && moved.is_empty(),
        "{broken:?} {moved:?}"
    );
    let s = status(&lab, 0);
    assert!(!s.announcements[0].announced);
    let last = s.drain.last_traffic_after_seconds.unwrap();
    eprintln!(
        "measured: drain of lb1 under {LONG_LIVED} keep-alive connections ({rounds} rounds \
         of requests): 0 broken, 0 moved; route gone from the router after {:.2} s; last \
         packet through lb1 {last:.2} s after the withdrawal; `xdp-lb drain` returned after \
         {:.2} s (drain_idle 1 s); lb1 saw {} packets since the drain began",
        route_gone.as_secs_f64(),
        drain_took.as_secs_f64(),
        counters(&lab)[0].1 - via_lb1_before,
    );
    // Drained: new connections avoid lb1.
    let before = counters(&lab);
    tally(&lab, 150);
    let after = counters(&lab);
    assert_eq!(after[0], before[0], "lb1 carries nothing once drained");
    // Resumed: announced again, traffic returns, the open connections carry on.
    let out = lab.lbs[0]
        .command(binary())
        .args(["resume", "--api", "127.0.0.1:9180"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let back = lab.wait_next_hops(&[0, 1, 2], CONVERGE).unwrap();
    let (broken, moved) = conns.round();
    assert!(
        broken.is_empty() && moved.is_empty(),
        "{broken:?} {moved:?}"
    );
    eprintln!(
        "measured: resumed, the router holds 3 paths again after {:.2} s",
        back.as_secs_f64()
    );

    // A real server goes down: only its connections break, on every LB.
    let victim = lab.backends[0].name.clone();
    let on_victim = conns.on(&victim);
    lab.backends[0].stop_servers();
    for (i, d) in daemons.iter_mut().enumerate() {
        let line = d
            .as_mut()
            .unwrap()
            .wait_for_line(
                &format!("real_server={}:80", addrs[0]),
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(line.contains("real server down"), "lb{}: {line}", i + 1);
    }
    let total = conns.open.len();
    let (broken, moved) = conns.round();
    assert!(moved.is_empty(), "{moved:?}");
    assert_eq!(
        broken.len(),
        on_victim,
        "exactly the connections on {victim} break: {broken:?}"
    );
    assert!(broken.iter().all(|b| b.starts_with(&format!("{victim}:"))));
    let servers = tally(&lab, 300);
    assert!(!servers.contains_key(&victim), "{servers:?}");
    eprintln!(
        "measured: {victim} down: {} of {total} open connections broke (all of them its \
         own), the other {} carried on; 300 new connections: {servers:?}",
        broken.len(),
        total - broken.len()
    );

    // b1 comes back: every LB's Maglev table is the one the open connections started
    // with again. (With a real server missing, a flow arriving at an LB that holds no
    // entry for it is hashed by the smaller table, which moves some flows of the other
    // servers too: Maglev's disruption, measured apart.)
    lab.backends[0].start_http(80).unwrap();
    for (i, d) in daemons.iter_mut().enumerate() {
        let line = d
            .as_mut()
            .unwrap()
            .wait_for_line(
                &format!("real_server={}:80", addrs[0]),
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(line.contains("real server up"), "lb{}: {line}", i + 1);
    }

    // lb3's host crashes: off the wire first (a dead host sends no BGP notification,
    // no FIN, no RST), then kill -9 of xdp-lb and FRR. The router keeps the path until
    // BFD finds lb3 silent (3 × 20 ms; the BGP hold time, 3 s, is the fallback); the
    // flows hashed to lb3 stall meanwhile (TCP retransmits), then go to lb1 and lb2,
    // which send them to the same real servers.
    let survivors = conns.open.len();
    let killed = Instant::now();
    lab.lbs[2].ip(["link", "set", "eth0", "down"]).unwrap();
    daemons[2]
        .take()
        .unwrap()
        .signal(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    if let Some(mut frr) = lab.lb_frr[2].take() {
        frr.kill9();
    }
    let mut gap_rounds = 0;
    let mut broken_total = Vec::new();
    let mut longest_round = Duration::ZERO;
    let gone = loop {
        let round = Instant::now();
        let (broken, moved) = conns.round();
        longest_round = longest_round.max(round.elapsed());
        gap_rounds += 1;
        broken_total.extend(broken);
        assert!(moved.is_empty(), "{moved:?}");
        if lab.next_hops().unwrap() == [lb_addr(0), lb_addr(1)] {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < CONVERGE,
            "lb3's path stays on the router"
        );
    };
    let settled = Instant::now();
    let (broken, moved) = conns.round();
    broken_total.extend(broken);
    assert!(moved.is_empty(), "{moved:?}");
    eprintln!(
        "measured: lb3's host crashed (link down, kill -9 of xdp-lb and FRR): path gone \
         from the router after {:.2} s (BFD 20 ms x 3); {} of {survivors} open connections \
         broke; a round of requests on every connection took up to {:.2} s during the gap \
         (the stalled ones wait for TCP to retransmit through lb1 or lb2; {gap_rounds} \
         rounds), one after it {:.2} s: {broken_total:?}",
        gone.as_secs_f64(),
        broken_total.len(),
        longest_round.as_secs_f64(),
        settled.elapsed().as_secs_f64()
    );
    assert!(
        broken_total.is_empty(),
        "connections through the dead LB continue on another once the route is gone: {broken_total:?}"
    );
    assert!(
        gone < Duration::from_secs(1),
        "BFD drops lb3's path well before the BGP hold time (3 s): {gone:?}"
    );
    for d in daemons.into_iter().flatten() {
        d.stop().unwrap();
    }
}
