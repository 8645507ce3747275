//! Node death seen through BFD, as a client sees it, beside keepalived's VRRP timers.
//!
//! Two real daemons on one segment ([`ProbeLab`]): `a` (priority 200) MASTER and `b`
//! (priority 100) BACKUP of one VRRP instance at 1 s adverts, each node with its own
//! FRR bfdd (Debian's package, run by the test) holding a session to the other at
//! 20 ms × 3, which xdp-lb asks for over bfdd's control socket and names in
//! `peer_bfd`; the same session is in `track_bfd` with weight 10, so the priority is
//! 10 higher while it is up (keepalived's `track_bfd`). Each node answers UDP probes
//! on the VIP with its name; the client probes every 5 ms.
//!
//! A round crashes `a` as a host dies: its responder, xdp-lb and FRR are killed with
//! SIGKILL and its link goes down inside its own namespace, so `b` sees no carrier
//! change (the bridge port is the one that goes down), only silence. `b` must take over
//! through BFD (its log says so) and the client's outage (its first answer from `b`
//! minus its last from `a`) is measured. Then `a` comes back and takes the VIP again.
//!
//! In the same run, keepalived against keepalived at 100 ms adverts (the fastest
//! setting keepalived users run) is crashed the same way. Everything measured is
//! printed (run with `--nocapture`).
//!
//! Needs root, `ip`, FRR and keepalived; fails (never skips) without them.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use xdp_lb_lab::{Daemon, Frr, Handover, KaConf, Keepalived, Netns, Probe, ProbeLab, Responder};
use xdp_lb_tests::start;

const VIP: &str = "192.0.2.200";
const VRID: u8 = 51;
const PORT: u16 = 7000;
const PROBE_EVERY: Duration = Duration::from_millis(5);
const ROUNDS: usize = 3;
/// What the issue asks of BFD at 20 ms × 3: a client-visible gap at most this long.
const BFD_GAP: Duration = Duration::from_millis(100);
/// No single round may take longer, however loaded the machine: still far below the
/// 3.2 s the same node would wait for VRRP at 1 s adverts.
const BFD_GAP_WORST: Duration = Duration::from_millis(250);

/// The daemon's configuration on `ns`: VRRP at 1 s adverts, a BFD session to `peer`
/// at 20 ms × 3 through the bfdd at `socket`, named in `peer_bfd`.
fn daemon_config(frr: &Frr, own: &str, peer: &str, priority: u8, vip: &str) -> String {
    format!(
        "[global]\napi = \"127.0.0.1:9180\"\nbfdd_socket = \"{}\"\n\n\
         [dataplane]\ninterfaces = [\"eth0\"]\nmax_flows = 1024\n\n\
         [bfd.peer]\npeer = \"{peer}\"\nlocal = \"{own}\"\ninterface = \"eth0\"\n\
         min_rx = \"20ms\"\nmin_tx = \"20ms\"\nmultiplier = 3\nweight = 10\n\n\
         [vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = {VRID}\npriority = {priority}\n\
         version = 3\nadvert_interval = \"1s\"\nvirtual_ipaddresses = [\"{vip}\"]\n\
         peer_bfd = [\"peer\"]\ntrack_bfd = [\"peer\"]\n",
        frr.bfdd_socket().display()
    )
}

/// One xdp-lb node: its bfdd, the daemon and its responder.
struct Node {
    name: &'static str,
    own: String,
    peer: String,
    priority: u8,
    frr: Frr,
    daemon: Daemon,
    responder: Responder,
}

impl Node {
    fn start(ns: &Netns, name: &'static str, own: &str, peer: &str, priority: u8) -> Node {
        Node::start_on(
            ns,
            name,
            own,
            peer,
            priority,
            &format!("{VIP}/24"),
            target(),
        )
    }

    fn start_on(
        ns: &Netns,
        name: &'static str,
        own: &str,
        peer: &str,
        priority: u8,
        vip: &str,
        target: SocketAddr,
    ) -> Node {
        let frr = Frr::start_bfdd(ns, name).expect("FRR's bfdd (apt-get install frr)");
        let responder = Responder::start(ns, target, name).unwrap();
        let daemon = start(ns, &daemon_config(&frr, own, peer, priority, vip));
        Node {
            name,
            own: own.into(),
            peer: peer.into(),
            priority,
            frr,
            daemon,
            responder,
        }
    }

    /// Waits until the daemon's status API shows its BFD session up (polled: bfdd's
    /// notifications reach the daemon, not the test).
    fn wait_session_up(&self, ns: &Netns) {
        let up = format!(
            "xdp_lb_bfd_session_up{{session=\"peer\",peer=\"{}\"}} 1",
            self.peer
        );
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let shown = metrics(ns);
            if shown.lines().any(|l| l == up) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{}: the bfd session did not come up within 10 s; metrics:\n{shown}\nbfdd:\n{}",
                self.name,
                self.frr.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host dies: responder, daemon and FRR killed, its link down on its side.
    /// Returns when.
    fn crash(self, ns: &Netns) -> (Instant, String, String, u8) {
        self.responder.stop().unwrap();
        let at = Instant::now();
        self.daemon.signal(Signal::SIGKILL).unwrap();
        let mut frr = self.frr;
        frr.kill9();
        ns.ip(["link", "set", "eth0", "down"]).unwrap();
        let (code, _) = self.daemon.wait_exit(Duration::from_secs(5)).unwrap();
        assert_eq!(code, None, "kill -9 ends the daemon by the signal");
        (at, self.own, self.peer, self.priority)
    }
}

fn target() -> SocketAddr {
    SocketAddr::new(VIP.parse::<IpAddr>().unwrap(), PORT)
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// `b`'s metrics, from inside its namespace.
fn metrics(ns: &Netns) -> String {
    ns.sh("curl -sS http://127.0.0.1:9180/metrics").unwrap()
}

/// Waits until `ns`'s metrics have `line` (polled, as [`Node::wait_session_up`]).
fn wait_metric(ns: &Netns, line: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = metrics(ns);
        if shown.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < until,
            "no {line:?} within 10 s in:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const PRIORITY_TRACKED: &str = "xdp_lb_vrrp_priority{instance=\"VI_1\"} 110";
const PRIORITY_BASE: &str = "xdp_lb_vrrp_priority{instance=\"VI_1\"} 100";

/// xdp-lb with BFD: `ROUNDS` crashes of the MASTER; returns each client outage.
fn xdp_lb_rounds(lab: &ProbeLab, probe: &Probe) -> Vec<Duration> {
    let mut a = Node::start(&lab.a, "a", "192.0.2.1", "192.0.2.2", 200);
    let mut b = Node::start(&lab.b, "b", "192.0.2.2", "192.0.2.1", 100);
    a.daemon
        .wait_for_line(
            "vrrp instance entering MASTER state",
            Duration::from_secs(10),
        )
        .unwrap();
    b.daemon
        .wait_for_line(
            "vrrp instance entering BACKUP state",
            Duration::from_secs(10),
        )
        .unwrap();
    let mut outages = Vec::new();
    for round in 1..=ROUNDS {
        b.wait_session_up(&lab.b);
        // track_bfd: weight 10 while the session is up.
        wait_metric(&lab.b, PRIORITY_TRACKED);
        probe
            .wait_from("a", Instant::now(), Duration::from_secs(10))
            .unwrap();
        let (crashed, own, peer, priority) = a.crash(&lab.a);
        let line = b
            .daemon
            .wait_for_line("vrrp takeover at once", Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("round {round}: b did not take over through BFD: {e}"));
        assert!(line.contains("session=peer"), "{line}");
        let h: Handover = probe
            .handover("a", "b", crashed, Duration::from_secs(3))
            .unwrap();
        println!(
            "round {round}: xdp-lb with BFD 20 ms x 3 (1 s adverts): client outage {}, b \
             answered {} after the crash, {} probes lost",
            ms(h.outage()),
            ms(h.after_event()),
            h.lost.map_or("?".into(), |l| l.to_string())
        );
        outages.push(h.outage());
        // The session left up: the weight is gone.
        wait_metric(&lab.b, PRIORITY_BASE);
        // a comes back: its link, bfdd, responder and daemon; it takes the VIP back
        // (priority 200 over 100) and b steps down.
        lab.a.ip(["link", "set", "eth0", "up"]).unwrap();
        let back = Instant::now();
        a = Node::start(&lab.a, "a", &own, &peer, priority);
        b.daemon
            .wait_for_line(
                "vrrp instance entering BACKUP state",
                Duration::from_secs(10),
            )
            .unwrap();
        probe.wait_from("a", back, Duration::from_secs(10)).unwrap();
    }
    // Every death was counted, on the status API's metrics.
    let shown = metrics(&lab.b);
    let line =
        format!("xdp_lb_bfd_peer_down_total{{session=\"peer\",peer=\"192.0.2.1\"}} {ROUNDS}");
    assert!(shown.lines().any(|l| l == line), "no {line:?} in:\n{shown}");
    b.wait_session_up(&lab.b);
    a.daemon.stop().unwrap();
    b.daemon.stop().unwrap();
    outages
}

/// keepalived against keepalived at 100 ms adverts: `ROUNDS` crashes of the MASTER.
fn keepalived_rounds(lab: &ProbeLab, probe: &Probe) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let conf = |priority| {
        let mut c = KaConf::new("eth0", VRID, &format!("{VIP}/24"));
        c.priority = priority;
        c.version = 3;
        c.advert_int = "0.1".into();
        c
    };
    let _b_answers = Responder::start(&lab.b, target(), "ka-b").unwrap();
    let b = Keepalived::start(&lab.b, dir.path(), 0, &conf(100)).unwrap();
    let mut outages = Vec::new();
    for round in 1..=ROUNDS {
        let a_answers = Responder::start(&lab.a, target(), "ka-a").unwrap();
        let a = Keepalived::start(&lab.a, dir.path(), round as u32, &conf(200)).unwrap();
        a.wait_line("Entering MASTER STATE", Duration::from_secs(10))
            .unwrap();
        probe
            .wait_from("ka-a", Instant::now(), Duration::from_secs(10))
            .unwrap();
        // Let a settle as MASTER for a few adverts, as the xdp-lb rounds do.
        let settled = Instant::now() + Duration::from_millis(500);
        probe
            .wait_from("ka-a", settled, Duration::from_secs(5))
            .unwrap();
        a_answers.stop().unwrap();
        let crashed = a.kill9().unwrap();
        lab.a.ip(["link", "set", "eth0", "down"]).unwrap();
        let h = probe
            .handover("ka-a", "ka-b", crashed, Duration::from_secs(3))
            .unwrap();
        println!(
            "round {round}: keepalived (100 ms adverts): client outage {}, b answered {} \
             after the crash, {} probes lost",
            ms(h.outage()),
            ms(h.after_event()),
            h.lost.map_or("?".into(), |l| l.to_string())
        );
        outages.push(h.outage());
        lab.a.ip(["link", "set", "eth0", "up"]).unwrap();
    }
    drop(b);
    outages
}

#[test]
fn bfd_sees_the_master_die_in_tens_of_milliseconds_beside_keepalived() {
    xdp_lb_lab::require_root().expect("this test builds network namespaces");
    let lab = ProbeLab::build("xlbbfd").expect("build the probe lab");
    let probe = Probe::start(&lab.client, target(), PROBE_EVERY).unwrap();
    let ours = xdp_lb_rounds(&lab, &probe);
    let theirs = keepalived_rounds(&lab, &probe);
    println!(
        "client outage after a crash of the MASTER, median of {ROUNDS}: xdp-lb with BFD \
         20 ms x 3 {} (each: {}); keepalived at 100 ms adverts {} (each: {})",
        ms(median(&ours)),
        ours.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(median(&theirs)),
        theirs.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
    );
    assert!(
        median(&ours) <= BFD_GAP,
        "median outage with BFD {} over {}",
        ms(median(&ours)),
        ms(BFD_GAP)
    );
    assert!(
        ours.iter().all(|d| *d <= BFD_GAP_WORST),
        "an outage with BFD over {}: {ours:?}",
        ms(BFD_GAP_WORST)
    );
    assert!(
        median(&ours) * 2 < median(&theirs),
        "BFD must be clearly faster than keepalived's 100 ms adverts: {ours:?} vs {theirs:?}"
    );
}

/// The same over IPv6: VRRPv3 adverts come from the nodes' link-local addresses, so
/// the BFD sessions run between those (bound to the interface); one crash, the client
/// probing the IPv6 VIP.
#[test]
fn bfd_between_link_locals_replaces_an_ipv6_master_too() {
    xdp_lb_lab::require_root().expect("this test builds network namespaces");
    let lab = ProbeLab::build("xlbbfd6").expect("build the probe lab");
    let vip = "2001:db8::200";
    let target = SocketAddr::new(vip.parse::<IpAddr>().unwrap(), PORT);
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    let a = Node::start_on(
        &lab.a,
        "a",
        "fe80::a",
        "fe80::b",
        200,
        &format!("{vip}/64"),
        target,
    );
    let mut b = Node::start_on(
        &lab.b,
        "b",
        "fe80::b",
        "fe80::a",
        100,
        &format!("{vip}/64"),
        target,
    );
    b.wait_session_up(&lab.b);
    probe
        .wait_from("a", Instant::now(), Duration::from_secs(10))
        .unwrap();
    let (crashed, ..) = a.crash(&lab.a);
    b.daemon
        .wait_for_line("vrrp takeover at once", Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("b did not take over through BFD: {e}"));
    let h = probe
        .handover("a", "b", crashed, Duration::from_secs(3))
        .unwrap();
    println!(
        "IPv6, BFD 20 ms x 3 between link-locals: client outage {}",
        ms(h.outage())
    );
    assert!(h.outage() <= BFD_GAP_WORST, "outage {}", ms(h.outage()));
}
