//! The failover runtime on real sockets, in network namespaces: xdp-lb against xdp-lb,
//! and xdp-lb against real keepalived sharing one VRID (v3 and v2 with authentication,
//! multicast and unicast, IPv4 and IPv6).
//!
//! Takeovers are measured by a client: both nodes and a client namespace sit on one
//! bridge, each node runs a UDP responder on the virtual address, and the client probes
//! it every 10 ms ([`xdp_lb_lab::probe`]). The client's outage (its first answer from
//! the new node minus its last from the old one) is asserted against VRRP's timers:
//! after a `kill -9` or crash (no priority-0 advert) below 3 x interval + skew plus a
//! margin, and no earlier than the master-down interval minus one interval (the
//! backup's timer started at the last advert it heard); after a graceful stop
//! (priority 0) below one interval plus a margin. A crash is a host crash: the old
//! node's responder stops with it (the virtual address a killed VRRP daemon leaves
//! configured would otherwise keep answering). The state-event gaps (stop or kill to
//! the other side reporting MASTER) are checked as before. Everything measured is
//! printed (run with `--nocapture`).
//!
//! Needs root, `ip` and `/usr/sbin/keepalived`; fails (never skips) without them.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use xdp_lb::{
    config::{VrrpAddress, VrrpInstance},
    failover::{FailoverEvent, InstanceStatus, StatusBoard, run_tracked},
    netlink::Netlink,
};
use xdp_lb_lab::{
    Capture, Handover, KaConf, Keepalived, Netns, Probe, ProbeLab, Responder, probe::timeline,
    veth_pair,
};
use xdp_lb_vrrp::{State, Version};

const VIP: &str = "192.0.2.200";
const VRID: u8 = 51;
const A_ADDR: &str = "192.0.2.1";
const B_ADDR: &str = "192.0.2.2";

/// The UDP port the nodes' responders answer on.
const PROBE_PORT: u16 = 7000;
/// How often the client probes the virtual address.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Added to VRRP's timers in the upper bounds: the gratuitous ARP or unsolicited NA
/// reaching the client, the next probe, and scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(300);
/// Taken off the lower bound after a kill: the last advert before the kill may have
/// been sent a little late, or timers fire a little early.
const JITTER: Duration = Duration::from_millis(100);
/// How long after a handover the client must hear only the new node.
const SETTLE: Duration = Duration::from_millis(300);
/// Responder names: what the client hears from each kind of node.
const XLB: &str = "xdp-lb";
const KA: &str = "keepalived";

/// Every log line of this test binary, so tests can look for the warnings they expect.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Writes log output to the test's captured stdout and to [`LOG`].
struct Tee;

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        print!("{text}");
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text.into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "xdp_lb=info".into()),
        )
        .with_ansi(false)
        .with_writer(|| Tee)
        .try_init();
}

/// Waits for a log line containing every one of `needles`.
fn wait_log(needles: &[&str], within: Duration) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let found = LOG
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| needles.iter().all(|n| l.contains(n)));
        if found {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("expected a log line with {needles:?} within {within:?}");
}

/// Two namespaces, `a` (192.0.2.1) and `b` (192.0.2.2), joined by a veth named `eth0`
/// on both sides.
fn pair(tag: &str) -> (Netns, Netns) {
    init_tracing();
    let (a, b) = veth_pair(&format!("xlbfo{tag}")).expect("these tests need root");
    for (ns, addr) in [(&a, A_ADDR), (&b, B_ADDR)] {
        ns.ip(["addr", "add", &format!("{addr}/24"), "dev", "eth0"])
            .unwrap();
    }
    (a, b)
}

/// Nodes `a` (192.0.2.1, fe80::a) and `b` (192.0.2.2, fe80::b) and a client
/// (192.0.2.9, 2001:db8::9) on a bridge in a fourth namespace: the client sees a
/// takeover as any host on the segment would, and one node's link can go down while
/// the other keeps its carrier.
fn probed(tag: &str) -> ProbeLab {
    init_tracing();
    ProbeLab::build(&format!("xlbfo{tag}")).expect("these tests need root")
}

/// Where the client probes: the instance's first virtual address.
fn probe_target(spec: &VrrpInstance) -> SocketAddr {
    SocketAddr::new(spec.identity.virtual_ipaddresses[0].addr, PROBE_PORT)
}

/// RFC 5798's master-down interval of a backup with `priority`: 3 x interval + skew.
fn master_down(interval: Duration, priority: u8) -> Duration {
    interval * 3 + interval.mul_f64(f64::from(256 - u32::from(priority)) / 256.0)
}

/// After a `kill -9` or crash: the client's outage stays below the backup's
/// master-down interval plus [`MARGIN`], and the new node answers no earlier than
/// that interval minus one advert interval after the kill.
fn check_crash_handover(what: &str, h: &Handover, probe: &Probe, interval: Duration) {
    let down = master_down(interval, 100);
    println!(
        "{what}: client outage {:?}, new node answered {:?} after the kill, {} probes lost \
         (master-down interval {down:?})",
        h.outage(),
        h.after_event(),
        h.lost.map_or("?".into(), |l| l.to_string())
    );
    let trace = || timeline(&probe.replies(), h.event);
    assert!(
        h.outage() < down + MARGIN,
        "{what}: the client had no answer for {:?}, more than the master-down interval \
         {down:?} + {MARGIN:?}; replies (seconds from the kill): {}",
        h.outage(),
        trace()
    );
    assert!(
        h.after_event() + JITTER >= down - interval,
        "{what}: the new node answered {:?} after the kill, before its master-down interval \
         {down:?} minus one advert interval could have run out; replies (seconds from the \
         kill): {}",
        h.after_event(),
        trace()
    );
}

/// After a graceful stop (priority 0): the client's outage stays below one advert
/// interval plus [`MARGIN`] (the backup waits only its skew time).
fn check_graceful_handover(what: &str, h: &Handover, probe: &Probe, interval: Duration) {
    println!(
        "{what}: client outage {:?}, new node answered {:?} after the stop, {} probes lost",
        h.outage(),
        h.after_event(),
        h.lost.map_or("?".into(), |l| l.to_string())
    );
    assert!(
        h.outage() < interval + MARGIN,
        "{what}: the client had no answer for {:?}, more than one interval {interval:?} + \
         {MARGIN:?}; replies (seconds from the stop): {}",
        h.outage(),
        timeline(&probe.replies(), h.event)
    );
}

/// Once the new node answers, the old one must not any more: waits [`SETTLE`] worth of
/// answers from `new` and checks that `old` answered no datagram sent after `new`'s
/// first (a reply to an earlier one may arrive late on a slow host).
fn check_settled(what: &str, h: &Handover, probe: &Probe, old: &str, new: &str) {
    let until = h.first_new + SETTLE;
    let heard = probe
        .wait_from(new, until, SETTLE + Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{what}: the client lost {new} again: {e:#}"));
    let replies = probe.replies();
    assert_eq!(
        h.answered_by_old_after(&replies, old, heard),
        0,
        "{what}: {old} still answered after {new} took over; replies (seconds from the \
         event): {}",
        timeline(&replies, h.event)
    );
}

fn vip_spec(name: &str, priority: u8, version: Version, interval: Duration) -> VrrpInstance {
    let vip = VrrpAddress::new(VIP.parse().unwrap(), 24);
    let mut spec = VrrpInstance::new(name, "eth0", VRID, vec![vip]);
    spec.tunables.priority = priority;
    spec.identity.version = version.number();
    spec.identity.advert_interval = interval;
    spec.tunables.garp_master_repeat = 2;
    spec
}

fn has_vip(ns: &Netns, vip: &str) -> bool {
    ns.ip(["-o", "addr", "show", "dev", "eth0"])
        .unwrap()
        .contains(&format!(" {vip}/"))
}

/// Polls `ip addr` until the VIP is (or is not) on `ns`'s eth0.
fn wait_vip(ns: &Netns, vip: &str, present: bool, within: Duration) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if has_vip(ns, vip) == present {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "expected {vip} {} on eth0 in {} within {within:?}; ip addr shows:\n{}",
        if present { "present" } else { "absent" },
        ns.name(),
        ns.ip(["addr", "show", "dev", "eth0"]).unwrap_or_default()
    );
}

/// An xdp-lb failover runner on its own runtime inside a namespace.
struct Node {
    name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    events: mpsc::Receiver<(Instant, FailoverEvent)>,
    seen: Vec<(Instant, FailoverEvent)>,
    /// What the engine publishes for the status API and metrics (the counters).
    status: StatusBoard,
    thread: Option<thread::JoinHandle<anyhow::Result<anyhow::Result<()>>>>,
}

impl Node {
    fn start(ns: &Netns, specs: Vec<VrrpInstance>) -> Node {
        Node::start_with(ns, specs, true)
    }

    /// `applies`: whether the state events are acknowledged at once, as a data plane
    /// that follows them would (otherwise the test does, with `applied.done()`).
    fn start_with(ns: &Netns, specs: Vec<VrrpInstance>, applies: bool) -> Node {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
        let (std_tx, events) = mpsc::channel();
        let status = StatusBoard::default();
        let board = status.clone();
        let thread = ns
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let netlink = Netlink::connect()?;
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<FailoverEvent>(64);
                    let forward = tokio::spawn(async move {
                        while let Some(ev) = rx.recv().await {
                            // No data plane here: it follows at once.
                            if applies {
                                ev.applied.done();
                            }
                            let _ = std_tx.send((Instant::now(), ev));
                        }
                    });
                    // No tracking: the handle is dropped, the engine stops listening.
                    let (_, controls) = xdp_lb::failover::controls();
                    let running =
                        run_tracked(specs, Vec::new(), netlink, tx, controls, board, async {
                            let _ = stop_rx.await;
                        });
                    tokio::select! {
                        result = running => {
                            let _ = forward.await;
                            result
                        }
                        // The crash of a process: every task dropped with the runtime,
                        // no priority-0 advert, the VIPs left behind.
                        Ok(()) = crash_rx => Ok(()),
                    }
                })
            })
            .unwrap();
        Node {
            name: ns.name().to_string(),
            stop: Some(stop_tx),
            crash: Some(crash_tx),
            events,
            seen: Vec::new(),
            status,
            thread: Some(thread),
        }
    }

    /// Waits for the next report of `state`; returns when it happened.
    fn wait_state(&mut self, state: State, within: Duration) -> Instant {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((at, ev)) => {
                    self.seen.push((at, ev.clone()));
                    if ev.state == state {
                        return at;
                    }
                }
                Err(_) => panic!(
                    "xdp-lb in {}: expected {state} within {within:?}; events so far: {:?}",
                    self.name,
                    self.seen.iter().map(|(_, e)| e.state).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits until instance `name`'s published status satisfies `ok`; returns it.
    fn wait_status(
        &self,
        name: &str,
        within: Duration,
        ok: impl Fn(&InstanceStatus) -> bool,
    ) -> InstanceStatus {
        let until = Instant::now() + within;
        loop {
            let now = self.status.snapshot().into_iter().find(|s| s.name == name);
            match now {
                Some(s) if ok(&s) => return s,
                _ if Instant::now() >= until => panic!(
                    "xdp-lb in {}: status of {name} not as expected within {within:?}; \
                     last: {now:?}",
                    self.name
                ),
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Events reported so far without waiting.
    fn drain(&mut self) -> Vec<State> {
        while let Ok((at, ev)) = self.events.try_recv() {
            self.seen.push((at, ev));
        }
        self.seen.iter().map(|(_, e)| e.state).collect()
    }

    fn state(&mut self) -> Option<State> {
        self.drain().last().copied()
    }

    /// Completes the shutdown future and waits for `run` to return; returns when the
    /// shutdown was asked for.
    fn stop(mut self) -> Instant {
        let at = Instant::now();
        self.shutdown();
        at
    }

    /// Drops the runner as `kill -9` would end a daemon; returns when.
    fn crash(mut self) -> Instant {
        let at = Instant::now();
        if let Some(crash) = self.crash.take() {
            let _ = crash.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        at
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join().expect("runner thread");
            if !thread::panicking() {
                result
                    .expect("setns")
                    .expect("failover::run returned an error");
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------
// xdp-lb against xdp-lb
// ---------------------------------------------------------------------------------

/// Two xdp-lb runners: election, gratuitous ARP, a graceful stop (priority 0), the
/// preemption back, and a crash (no priority 0), the handovers measured by the client.
/// A new MASTER adds and announces its VIPs only once its receiver says the data plane
/// forwards their services: a client sent here by the gratuitous ARP before that would
/// meet the kernel, which resets its connection.
#[test]
fn a_new_master_holds_its_vips_until_the_data_plane_follows() {
    let (a, _b) = pair("ack");
    let spec = vip_spec("VI_ACK", 200, Version::V3, Duration::from_millis(100));
    let mut node = Node::start_with(&a, vec![spec], false);
    node.wait_state(State::Master, Duration::from_secs(5));
    // The engine sent the event, then waits (up to APPLY_WAIT, 500 ms): had it gone
    // on, the VIP would be there before the event crossed to this thread.
    assert!(
        !has_vip(&a, VIP),
        "the VIP was added before the data plane followed"
    );
    let acked = Instant::now();
    node.seen.last().unwrap().1.applied.done();
    wait_vip(&a, VIP, true, Duration::from_secs(2));
    eprintln!(
        "measured: the VIP was added {:?} after the acknowledgment",
        acked.elapsed()
    );
    node.shutdown();
}

#[test]
fn xdp_lb_pair_elects_fails_over_and_preempts_back() {
    let lab = probed("x");
    let (a, b) = (&lab.a, &lab.b);
    let vip = VIP;
    let dir = tempfile::tempdir().unwrap();
    let notified = dir.path().join("notify");
    let interval = Duration::from_secs(1);

    let mut spec_a = vip_spec("VI_A", 200, Version::V3, interval);
    spec_a.tunables.notify.generic = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo \"$@\" >> {}", notified.display()),
        "sh".into(),
    ]);
    spec_a.tunables.garp_master_refresh = Some(Duration::from_millis(500));
    let spec_b = vip_spec("VI_B", 100, Version::V3, interval);
    let target = probe_target(&spec_a);
    let answers_a = Responder::start(a, target, "a").unwrap();
    let _answers_b = Responder::start(b, target, "b").unwrap();

    let capture = Capture::start(b, "eth0").unwrap();
    let mut node_a = Node::start(a, vec![spec_a.clone()]);
    let mut node_b = Node::start(b, vec![spec_b]);
    node_a.wait_state(State::Master, Duration::from_secs(10));
    // Two rounds of gratuitous ARP from a's MAC, then the periodic refresh.
    let mac_a: Vec<u8> = a
        .mac("eth0")
        .unwrap()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let vip_octets = VIP.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let garp = |f: &[u8]| {
        f.len() >= 42
            && f[6..12] == mac_a[..]
            && f[12..14] == [0x08, 0x06]
            && f[28..32] == vip_octets
    };
    for n in 1..=3 {
        capture
            .next_matching(Duration::from_secs(3), garp)
            .unwrap_or_else(|e| panic!("gratuitous ARP number {n}: {e}"));
    }
    drop(capture);
    node_b.wait_state(State::Backup, Duration::from_secs(5));
    wait_vip(a, vip, true, Duration::from_secs(2));
    assert!(!has_vip(b, vip), "the backup must not hold the VIP");
    assert!(
        !node_b.drain().contains(&State::Master),
        "the lower priority never became MASTER"
    );
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    probe
        .wait_from("a", Instant::now(), Duration::from_secs(5))
        .unwrap();

    // Graceful stop of the master: priority 0, the backup takes over after its skew.
    let stopped = node_a.stop();
    wait_vip(a, vip, false, Duration::from_secs(1));
    let took_over = node_b.wait_state(State::Master, Duration::from_secs(3));
    let gap = took_over - stopped;
    println!("xdp-lb -> xdp-lb graceful takeover (v3, 1 s): MASTER after {gap:?}");
    assert!(
        gap < Duration::from_millis(2500),
        "graceful takeover took {gap:?}"
    );
    let what = "xdp-lb -> xdp-lb after a graceful stop (v3, 1 s)";
    let h = probe
        .handover("a", "b", stopped, Duration::from_secs(3))
        .unwrap();
    check_graceful_handover(what, &h, &probe, interval);
    check_settled(what, &h, &probe, "a", "b");
    wait_vip(b, vip, true, Duration::from_secs(2));

    // The higher priority returns and preempts once its master-down timer runs out.
    let restarted = Instant::now();
    let mut node_a = Node::start(a, vec![spec_a]);
    node_a.wait_state(State::Backup, Duration::from_secs(2));
    let back = node_a.wait_state(State::Master, Duration::from_secs(8));
    node_b.wait_state(State::Backup, Duration::from_secs(3));
    println!(
        "preemption back: MASTER again {:?} after restart",
        back - restarted
    );
    wait_vip(a, vip, true, Duration::from_secs(2));
    wait_vip(b, vip, false, Duration::from_secs(2));
    let what = "xdp-lb -> xdp-lb preemption (v3, 1 s)";
    let h = probe
        .handover("b", "a", restarted, Duration::from_secs(3))
        .unwrap();
    println!(
        "{what}: client outage {:?}, a answered {:?} after its restart",
        h.outage(),
        h.after_event()
    );
    check_settled(what, &h, &probe, "b", "a");

    // A crash of the master's host: no priority 0, the VIP left behind; the backup
    // waits out its master-down interval.
    answers_a.stop().unwrap();
    let crashed = node_a.crash();
    let took_over = node_b.wait_state(State::Master, Duration::from_secs(6));
    println!(
        "xdp-lb -> xdp-lb after a crash (v3, 1 s): MASTER after {:?}",
        took_over - crashed
    );
    let what = "xdp-lb -> xdp-lb after a crash (v3, 1 s)";
    let h = probe
        .handover("a", "b", crashed, Duration::from_secs(6))
        .unwrap();
    check_crash_handover(what, &h, &probe, interval);
    check_settled(what, &h, &probe, "a", "b");
    wait_vip(b, vip, true, Duration::from_secs(2));
    drop(node_b);

    let log = std::fs::read_to_string(&notified).unwrap_or_default();
    assert!(
        log.contains("INSTANCE VI_A MASTER 200") && log.contains("INSTANCE VI_A STOP 200"),
        "generic notify called with keepalived's arguments; got:\n{log}"
    );
}

// ---------------------------------------------------------------------------------
// xdp-lb against keepalived
// ---------------------------------------------------------------------------------

/// How long to watch a BACKUP stay BACKUP: a few master-down intervals.
fn observe(interval: Duration) -> Duration {
    interval * 4 + Duration::from_millis(500)
}

/// A scenario's label in the printed measurements, e.g. `v3 1s auth unicast`.
fn label(ours: &VrrpInstance) -> String {
    format!(
        "v{} {:?}{}{}{}",
        ours.identity.version,
        ours.identity.advert_interval,
        if ours.identity.is_ipv6() { " ipv6" } else { "" },
        if ours.identity.auth_pass.is_some() {
            " auth"
        } else {
            ""
        },
        if ours.identity.is_unicast() {
            " unicast"
        } else {
            ""
        }
    )
}

/// keepalived (priority 200) MASTER, xdp-lb (priority 100) BACKUP; then keepalived's
/// host crashes (`kill -9`, its responder stopped: xdp-lb takes over after its
/// master-down interval), keepalived comes back and preempts, and is stopped with
/// SIGTERM (xdp-lb takes over after its skew time). Both takeovers are measured by
/// the client.
fn keepalived_master_then_xdp_lb(tag: &str, ka: KaConf, ours: VrrpInstance) {
    let lab = probed(tag);
    let (a, b) = (&lab.a, &lab.b);
    let vip = &ours.identity.virtual_ipaddresses[0].addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let interval = ours.identity.advert_interval;
    let label = label(&ours);
    let target = probe_target(&ours);
    let _xlb_answers = Responder::start(a, target, XLB).unwrap();
    let ka_answers = Responder::start(b, target, KA).unwrap();

    let keepalived = Keepalived::start(b, dir.path(), 0, &ka).unwrap();
    keepalived
        .wait_line("Entering MASTER STATE", Duration::from_secs(15))
        .unwrap();
    wait_vip(b, vip, true, Duration::from_secs(2));
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    probe
        .wait_from(KA, Instant::now(), Duration::from_secs(5))
        .unwrap();

    let mut node = Node::start(a, vec![ours]);
    node.wait_state(State::Backup, Duration::from_secs(5));
    // The backup must stay BACKUP while keepalived advertises.
    let until = Instant::now() + observe(interval);
    while Instant::now() < until {
        assert_eq!(
            node.state(),
            Some(State::Backup),
            "xdp-lb must stay BACKUP under a higher-priority keepalived ({label})"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(!has_vip(a, vip));

    // kill -9 of keepalived's host: no priority 0; we wait 3 x interval + skew.
    ka_answers.stop().unwrap();
    let killed = keepalived.kill9().unwrap();
    let took_over = node.wait_state(State::Master, interval * 3 + Duration::from_secs(3));
    let gap = took_over - killed;
    // The master-down timer runs from the last advert heard, up to one interval
    // before the kill.
    let down = master_down(interval, 100);
    println!(
        "keepalived -> xdp-lb after kill -9 ({label}): MASTER after {gap:?} \
         (master-down interval {down:?}, minus up to one interval)"
    );
    assert!(
        gap + interval + JITTER >= down && gap < down + Duration::from_secs(2),
        "takeover after kill -9 took {gap:?}; expected between {:?} and {down:?}",
        down - interval
    );
    let what = format!("keepalived -> xdp-lb after kill -9 ({label})");
    let h = probe
        .handover(KA, XLB, killed, Duration::from_secs(3))
        .unwrap();
    check_crash_handover(&what, &h, &probe, interval);
    check_settled(&what, &h, &probe, KA, XLB);
    wait_vip(a, vip, true, Duration::from_secs(2));

    // keepalived's host returns with the higher priority and preempts us.
    let _ka_answers = Responder::start(b, target, KA).unwrap();
    let restarted = Instant::now();
    let keepalived = Keepalived::start(b, dir.path(), 1, &ka).unwrap();
    keepalived
        .wait_line("Entering MASTER STATE", Duration::from_secs(15))
        .unwrap();
    node.wait_state(State::Backup, Duration::from_secs(5));
    wait_vip(a, vip, false, Duration::from_secs(2));
    let h = probe
        .handover(XLB, KA, restarted, Duration::from_secs(3))
        .unwrap();
    check_settled(
        &format!("keepalived preempting xdp-lb ({label})"),
        &h,
        &probe,
        XLB,
        KA,
    );

    keepalived_stops_xdp_lb_takes_over(&label, keepalived, &mut node, &probe, &lab, vip, interval);
    drop(node);
}

/// SIGTERM to the MASTER keepalived on `b`: it sends priority 0, the BACKUP xdp-lb on
/// `a` takes over after its skew time; the client follows.
fn keepalived_stops_xdp_lb_takes_over(
    label: &str,
    keepalived: Keepalived,
    node: &mut Node,
    probe: &Probe,
    lab: &ProbeLab,
    vip: &str,
    interval: Duration,
) {
    let stopped = keepalived.terminate().unwrap();
    let took_over = node.wait_state(State::Master, interval * 2 + Duration::from_secs(2));
    let gap = took_over - stopped;
    println!("keepalived -> xdp-lb after SIGTERM ({label}): MASTER after {gap:?}");
    assert!(
        gap < interval + Duration::from_secs(1),
        "takeover after SIGTERM took {gap:?}"
    );
    let what = format!("keepalived -> xdp-lb after SIGTERM ({label})");
    let h = probe
        .handover(KA, XLB, stopped, Duration::from_secs(3))
        .unwrap();
    check_graceful_handover(&what, &h, probe, interval);
    check_settled(&what, &h, probe, KA, XLB);
    wait_vip(&lab.a, vip, true, Duration::from_secs(2));
    wait_vip(&lab.b, vip, false, Duration::from_secs(2));
}

/// xdp-lb (priority 200) MASTER, keepalived (priority 100) BACKUP; then our runner is
/// stopped (keepalived takes over after its skew time), returns and preempts, and its
/// host crashes (keepalived waits out its master-down interval). Both takeovers are
/// measured by the client.
fn xdp_lb_master_then_keepalived(tag: &str, ka: KaConf, ours: VrrpInstance) {
    let lab = probed(tag);
    let (a, b) = (&lab.a, &lab.b);
    let vip = &ours.identity.virtual_ipaddresses[0].addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let interval = ours.identity.advert_interval;
    let label = label(&ours);
    let target = probe_target(&ours);
    let xlb_answers = Responder::start(a, target, XLB).unwrap();
    let _ka_answers = Responder::start(b, target, KA).unwrap();

    let mut node = Node::start(a, vec![ours.clone()]);
    node.wait_state(State::Master, Duration::from_secs(15));
    wait_vip(a, vip, true, Duration::from_secs(2));
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    probe
        .wait_from(XLB, Instant::now(), Duration::from_secs(5))
        .unwrap();

    let keepalived = Keepalived::start(b, dir.path(), 0, &ka).unwrap();
    keepalived
        .wait_line("Entering BACKUP STATE", Duration::from_secs(10))
        .unwrap();
    thread::sleep(observe(interval));
    assert!(
        !keepalived.saw("Entering MASTER STATE"),
        "keepalived must stay BACKUP under a higher-priority xdp-lb ({label}); log:\n{}",
        keepalived.log()
    );
    assert!(!has_vip(b, vip));
    assert_eq!(node.state(), Some(State::Master));

    xdp_lb_stops_keepalived_takes_over(&label, node, &keepalived, &probe, &lab, vip, interval);

    // We come back with the higher priority and preempt keepalived.
    let restarted = Instant::now();
    let mut node = Node::start(a, vec![ours]);
    node.wait_state(State::Master, interval * 4 + Duration::from_secs(3));
    keepalived
        .wait_line("Entering BACKUP STATE", Duration::from_secs(5))
        .unwrap();
    wait_vip(a, vip, true, Duration::from_secs(2));
    wait_vip(b, vip, false, Duration::from_secs(2));
    let h = probe
        .handover(KA, XLB, restarted, Duration::from_secs(3))
        .unwrap();
    check_settled(
        &format!("xdp-lb preempting keepalived ({label})"),
        &h,
        &probe,
        KA,
        XLB,
    );

    // Our host crashes: no priority 0; keepalived waits out its master-down interval.
    xlb_answers.stop().unwrap();
    let crashed = node.crash();
    let took_over = keepalived
        .wait_line(
            "Entering MASTER STATE",
            interval * 4 + Duration::from_secs(3),
        )
        .unwrap();
    let gap = took_over.saturating_duration_since(crashed);
    let down = master_down(interval, 100);
    println!(
        "xdp-lb -> keepalived after crash ({label}): MASTER after {gap:?} \
         (master-down interval {down:?}, minus up to one interval)"
    );
    assert!(
        gap + interval + JITTER >= down && gap < down + Duration::from_secs(2),
        "keepalived took {gap:?} after our crash"
    );
    let what = format!("xdp-lb -> keepalived after crash ({label})");
    let h = probe
        .handover(XLB, KA, crashed, Duration::from_secs(3))
        .unwrap();
    check_crash_handover(&what, &h, &probe, interval);
    check_settled(&what, &h, &probe, XLB, KA);
    wait_vip(b, vip, true, Duration::from_secs(2));
    drop(keepalived);
}

/// Our graceful stop on `a`: priority 0, the BACKUP keepalived on `b` takes over after
/// its skew time; the client follows.
fn xdp_lb_stops_keepalived_takes_over(
    label: &str,
    node: Node,
    keepalived: &Keepalived,
    probe: &Probe,
    lab: &ProbeLab,
    vip: &str,
    interval: Duration,
) {
    let stopped = node.stop();
    let took_over = keepalived
        .wait_line(
            "Entering MASTER STATE",
            interval * 2 + Duration::from_secs(2),
        )
        .unwrap();
    let gap = took_over.saturating_duration_since(stopped);
    println!("xdp-lb -> keepalived after graceful stop ({label}): MASTER after {gap:?}");
    assert!(
        gap < interval + Duration::from_secs(1),
        "keepalived took {gap:?}"
    );
    let what = format!("xdp-lb -> keepalived after graceful stop ({label})");
    let h = probe
        .handover(XLB, KA, stopped, Duration::from_secs(3))
        .unwrap();
    check_graceful_handover(&what, &h, probe, interval);
    check_settled(&what, &h, probe, XLB, KA);
    wait_vip(&lab.a, vip, false, Duration::from_secs(1));
    wait_vip(&lab.b, vip, true, Duration::from_secs(2));
}

/// Watches for [`observe`]`(interval)` that nothing moves: `holder` keeps the VIP,
/// `other` never gets it, `steady` (the VRRP states) holds at every poll, and the
/// client hears only `holder`'s responder, without a gap longer than [`MARGIN`].
/// Returns (replies heard, longest gap) for the printout.
fn check_holds(
    what: &str,
    probe: &Probe,
    (holder, holder_name): (&Netns, &str),
    (other, other_name): (&Netns, &str),
    vip: &str,
    interval: Duration,
    mut steady: impl FnMut() -> Result<(), String>,
) -> (usize, Duration) {
    let start = Instant::now();
    let until = start + observe(interval);
    while Instant::now() < until {
        if let Err(why) = steady() {
            panic!("{what}: {why} after {:?}", start.elapsed());
        }
        assert!(
            has_vip(holder, vip) && !has_vip(other, vip),
            "{what}: the VIP moved after {:?} (on {}: {}, on {}: {})",
            start.elapsed(),
            holder.name(),
            has_vip(holder, vip),
            other.name(),
            has_vip(other, vip)
        );
        thread::sleep(Duration::from_millis(50));
    }
    let replies = probe.replies();
    let heard: Vec<Instant> = replies
        .iter()
        .filter(|r| r.at >= start && r.at < until)
        .map(|r| {
            assert_eq!(
                r.from,
                holder_name,
                "{what}: the client heard {other_name}; replies (seconds from the start of \
                 the window): {}",
                timeline(&replies, start)
            );
            r.at
        })
        .collect();
    let gap = std::iter::once(start)
        .chain(heard.iter().copied())
        .chain(std::iter::once(until))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        gap < MARGIN,
        "{what}: the client heard nothing for {gap:?}; replies (seconds from the start of \
         the window): {}",
        timeline(&replies, start)
    );
    (heard.len(), gap)
}

/// How many log lines so far contain `needle` (keepalived logs its initial BACKUP too).
fn ka_count(keepalived: &Keepalived, needle: &str) -> usize {
    keepalived
        .log()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Unicast between `a` and `b` on both sides.
fn unicast(ours: &mut VrrpInstance, conf: &mut KaConf) {
    ours.identity.unicast_src_ip = Some(A_ADDR.parse::<IpAddr>().unwrap());
    ours.identity.unicast_peers = vec![B_ADDR.parse().unwrap()];
    conf.unicast = Some((B_ADDR.into(), A_ADDR.into()));
}

fn ka(priority: u8, version: Version, advert_int: &str) -> KaConf {
    let mut conf = KaConf::new("eth0", VRID, "192.0.2.200/24");
    conf.priority = priority;
    conf.version = version.number();
    conf.advert_int = advert_int.to_owned();
    conf
}

#[test]
fn keepalived_master_v3_1s_xdp_lb_takes_over() {
    let ours = vip_spec("VI_1", 100, Version::V3, Duration::from_secs(1));
    keepalived_master_then_xdp_lb("k31", ka(200, Version::V3, "1"), ours);
}

#[test]
fn keepalived_master_v3_100ms_xdp_lb_takes_over() {
    let ours = vip_spec("VI_1", 100, Version::V3, Duration::from_millis(100));
    keepalived_master_then_xdp_lb("k3f", ka(200, Version::V3, "0.1"), ours);
}

#[test]
fn keepalived_master_v2_auth_1s_xdp_lb_takes_over() {
    let mut ours = vip_spec("VI_1", 100, Version::V2, Duration::from_secs(1));
    ours.identity.auth_pass = Some("s3cret".into());
    let mut conf = ka(200, Version::V2, "1");
    conf.auth_pass = Some("s3cret".into());
    keepalived_master_then_xdp_lb("k21", conf, ours);
}

#[test]
fn xdp_lb_master_v3_1s_keepalived_backup() {
    let ours = vip_spec("VI_1", 200, Version::V3, Duration::from_secs(1));
    xdp_lb_master_then_keepalived("x31", ka(100, Version::V3, "1"), ours);
}

#[test]
fn xdp_lb_master_v2_auth_1s_keepalived_backup() {
    let mut ours = vip_spec("VI_1", 200, Version::V2, Duration::from_secs(1));
    ours.identity.auth_pass = Some("s3cret".into());
    let mut conf = ka(100, Version::V2, "1");
    conf.auth_pass = Some("s3cret".into());
    xdp_lb_master_then_keepalived("x21", conf, ours);
}

#[test]
fn keepalived_master_v3_unicast_xdp_lb_takes_over() {
    let mut ours = vip_spec("VI_1", 100, Version::V3, Duration::from_secs(1));
    let mut conf = ka(200, Version::V3, "1");
    unicast(&mut ours, &mut conf);
    keepalived_master_then_xdp_lb("k3u", conf, ours);
}

#[test]
fn xdp_lb_master_v3_unicast_keepalived_backup() {
    let mut ours = vip_spec("VI_1", 200, Version::V3, Duration::from_secs(1));
    let mut conf = ka(100, Version::V3, "1");
    unicast(&mut ours, &mut conf);
    xdp_lb_master_then_keepalived("x3u", conf, ours);
}

#[test]
fn xdp_lb_master_v2_auth_unicast_keepalived_backup() {
    let mut ours = vip_spec("VI_1", 200, Version::V2, Duration::from_secs(1));
    ours.identity.auth_pass = Some("s3cret".into());
    let mut conf = ka(100, Version::V2, "1");
    conf.auth_pass = Some("s3cret".into());
    unicast(&mut ours, &mut conf);
    xdp_lb_master_then_keepalived("x2u", conf, ours);
}

/// keepalived with `nopreempt` and the higher priority joins while xdp-lb is MASTER:
/// it stays BACKUP and the client stays on xdp-lb; our graceful stop then hands over.
#[test]
fn keepalived_nopreempt_joins_and_xdp_lb_stays_master() {
    let lab = probed("knp");
    let (a, b) = (&lab.a, &lab.b);
    let interval = Duration::from_secs(1);
    let ours = vip_spec("VI_1", 100, Version::V3, interval);
    let label = format!("{} keepalived nopreempt", label(&ours));
    let mut conf = ka(200, Version::V3, "1");
    conf.nopreempt = true;
    let dir = tempfile::tempdir().unwrap();
    let target = probe_target(&ours);
    let _xlb_answers = Responder::start(a, target, XLB).unwrap();
    let _ka_answers = Responder::start(b, target, KA).unwrap();

    let mut node = Node::start(a, vec![ours]);
    node.wait_state(State::Master, Duration::from_secs(15));
    wait_vip(a, VIP, true, Duration::from_secs(2));
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    probe
        .wait_from(XLB, Instant::now(), Duration::from_secs(5))
        .unwrap();

    let started = Instant::now();
    let keepalived = Keepalived::start(b, dir.path(), 0, &conf).unwrap();
    let backup = keepalived
        .wait_line("Entering BACKUP STATE", Duration::from_secs(10))
        .unwrap();
    // The window outlasts keepalived's master-down interval: had it not heard us (or
    // preempted), it would have become MASTER within it.
    let (heard, gap) = check_holds(&label, &probe, (a, XLB), (b, KA), VIP, interval, || {
        if node.state() != Some(State::Master) {
            return Err(format!("xdp-lb left MASTER: {:?}", node.drain()));
        }
        if keepalived.saw("Entering MASTER STATE") {
            return Err(format!(
                "keepalived preempted despite nopreempt; log:\n{}",
                keepalived.log()
            ));
        }
        Ok(())
    });
    println!(
        "{label}: keepalived BACKUP {:?} after its start; xdp-lb kept MASTER for {:?} \
         ({heard} replies, longest gap {gap:?})",
        backup - started,
        observe(interval)
    );
    assert_eq!(node.drain(), vec![State::Backup, State::Master]);

    xdp_lb_stops_keepalived_takes_over(&label, node, &keepalived, &probe, &lab, VIP, interval);
}

/// xdp-lb with `preempt = false` and the higher priority joins while keepalived is
/// MASTER: it stays BACKUP and the client stays on keepalived; keepalived's SIGTERM
/// then hands over.
#[test]
fn xdp_lb_nopreempt_joins_and_keepalived_stays_master() {
    let lab = probed("xnp");
    let (a, b) = (&lab.a, &lab.b);
    let interval = Duration::from_secs(1);
    let mut ours = vip_spec("VI_1", 200, Version::V3, interval);
    ours.tunables.preempt = false;
    let label = format!("{} xdp-lb nopreempt", label(&ours));
    let dir = tempfile::tempdir().unwrap();
    let target = probe_target(&ours);
    let _xlb_answers = Responder::start(a, target, XLB).unwrap();
    let _ka_answers = Responder::start(b, target, KA).unwrap();

    let keepalived = Keepalived::start(b, dir.path(), 0, &ka(100, Version::V3, "1")).unwrap();
    keepalived
        .wait_line("Entering MASTER STATE", Duration::from_secs(15))
        .unwrap();
    wait_vip(b, VIP, true, Duration::from_secs(2));
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    probe
        .wait_from(KA, Instant::now(), Duration::from_secs(5))
        .unwrap();

    let started = Instant::now();
    let mut node = Node::start(a, vec![ours]);
    let backup = node.wait_state(State::Backup, Duration::from_secs(5));
    let ka_backups = ka_count(&keepalived, "Entering BACKUP STATE");
    // Longer than our master-down interval: had we not heard keepalived (or
    // preempted), we would have become MASTER within it.
    let (heard, gap) = check_holds(&label, &probe, (b, KA), (a, XLB), VIP, interval, || {
        if node.state() != Some(State::Backup) {
            return Err(format!("xdp-lb left BACKUP: {:?}", node.drain()));
        }
        if ka_count(&keepalived, "Entering BACKUP STATE") != ka_backups {
            return Err(format!(
                "keepalived gave way to a nopreempt xdp-lb; log:\n{}",
                keepalived.log()
            ));
        }
        Ok(())
    });
    println!(
        "{label}: xdp-lb BACKUP {:?} after its start; keepalived kept MASTER for {:?} \
         ({heard} replies, longest gap {gap:?})",
        backup - started,
        observe(interval)
    );
    assert_eq!(node.drain(), vec![State::Backup]);

    keepalived_stops_xdp_lb_takes_over(&label, keepalived, &mut node, &probe, &lab, VIP, interval);
    drop(node);
}

#[test]
fn xdp_lb_master_v3_100ms_keepalived_backup() {
    let ours = vip_spec("VI_1", 200, Version::V3, Duration::from_millis(100));
    xdp_lb_master_then_keepalived("x3f", ka(100, Version::V3, "0.1"), ours);
}

/// VRRP from `a` is dropped on `b`'s ingress: `b` never hears the higher priority and
/// claims MASTER too; `a` hears it, reports the split brain (naming `b`'s priority)
/// and counts `b`'s adverts in its status.
#[test]
fn split_brain_is_reported_by_the_master_that_hears_the_other() {
    let (a, b) = pair("sb");
    let vip = VIP;
    // B stops hearing A: protocol 112 dropped on B's input by nftables.
    b.sh("nft add table inet xlb && \
          nft 'add chain inet xlb input { type filter hook input priority 0; policy accept; }' && \
          nft add rule inet xlb input meta l4proto vrrp counter drop")
        .expect("nftables (cargo xtask setup installs it)");
    let interval = Duration::from_millis(200);
    let mut node_a = Node::start(&a, vec![vip_spec("SB_A", 200, Version::V3, interval)]);
    let mut node_b = Node::start(&b, vec![vip_spec("SB_B", 100, Version::V3, interval)]);
    let a_master = node_a.wait_state(State::Master, Duration::from_secs(5));
    node_b.wait_state(State::Master, Duration::from_secs(5));
    wait_log(
        &[
            "split brain",
            "SB_A",
            "192.0.2.2",
            "filtered",
            "with priority 100 while we are MASTER with priority 200",
            "peer_priority=100",
        ],
        Duration::from_secs(10),
    );
    let reported = Instant::now();
    // The counter keeps counting b's adverts after the (rate-limited) warning.
    let first = node_a.wait_status("SB_A", Duration::from_secs(5), |s| {
        s.split_brain_adverts > 0
    });
    let later = node_a.wait_status("SB_A", interval * 10, |s| {
        s.split_brain_adverts > first.split_brain_adverts
    });
    println!(
        "split brain (v3 200 ms): warned {:?} after a became MASTER; split_brain_adverts \
         {} then {} ({:?} after the warning)",
        reported - a_master,
        first.split_brain_adverts,
        later.split_brain_adverts,
        reported.elapsed()
    );
    assert_eq!(
        (later.state.as_ref(), later.master_priority),
        ("MASTER", Some(200)),
        "a stays MASTER with its own priority: {later:?}"
    );
    // b hears nothing from a, so it has nothing to count.
    let b_status = node_b.wait_status("SB_B", Duration::from_secs(1), |s| s.state == "MASTER");
    assert_eq!(b_status.split_brain_adverts, 0, "{b_status:?}");
    assert!(
        has_vip(&a, vip) && has_vip(&b, vip),
        "both sides hold the VIP in a split brain"
    );
}

/// VRRP blocked both ways (protocol 112 dropped on each node's input): both become
/// MASTER and neither hears an advert, yet each names the other's MAC for the VIP,
/// from ARP (the other's gratuitous ARP, and its answer to our probe), within two
/// advert intervals of both being MASTER. When the block lifts, one MASTER remains
/// within two intervals.
#[test]
fn split_brain_with_vrrp_blocked_both_ways_is_seen_through_arp() {
    split_brain_both_ways("sbb", VrrpAddress::new(VIP.parse().unwrap(), 24));
}

/// The same over IPv6: neighbour discovery (solicitation to the VIP's solicited-node
/// group, the other's advertisement) names the other MASTER.
#[test]
fn split_brain_with_vrrp_blocked_both_ways_is_seen_through_ndp() {
    split_brain_both_ways(
        "sb6",
        VrrpAddress::new("2001:db8::200".parse().unwrap(), 64),
    );
}

fn block_vrrp(ns: &Netns) {
    ns.sh("nft add table inet xlb && \
           nft 'add chain inet xlb input { type filter hook input priority 0; policy accept; }' && \
           nft add rule inet xlb input meta l4proto vrrp counter drop")
        .expect("nftables (cargo xtask setup installs it)");
}

fn split_brain_both_ways(tag: &str, vip: VrrpAddress) {
    let (a, b) = pair(tag);
    block_vrrp(&a);
    block_vrrp(&b);
    let interval = Duration::from_millis(200);
    let spec = |name: &str, priority| {
        let mut spec = vip_spec(name, priority, Version::V3, interval);
        spec.identity.virtual_ipaddresses = vec![vip.clone()];
        spec
    };
    let (name_a, name_b) = (format!("{tag}_A"), format!("{tag}_B"));
    let mut node_a = Node::start(&a, vec![spec(&name_a, 200)]);
    let mut node_b = Node::start(&b, vec![spec(&name_b, 100)]);
    let a_master = node_a.wait_state(State::Master, Duration::from_secs(5));
    let b_master = node_b.wait_state(State::Master, Duration::from_secs(5));
    let both = a_master.max(b_master);
    let (mac_a, mac_b) = (a.mac("eth0").unwrap(), b.mac("eth0").unwrap());
    let seen_a = node_a.wait_status(&name_a, Duration::from_secs(5), |s| s.vip_conflicts > 0);
    let seen_b = node_b.wait_status(&name_b, Duration::from_secs(5), |s| s.vip_conflicts > 0);
    let named = both.elapsed();
    let conflict = |mac: &str| {
        Some(xdp_lb::failover::VipConflict {
            vip: vip.addr,
            mac: mac.to_owned(),
        })
    };
    assert_eq!(seen_a.last_vip_conflict, conflict(&mac_b), "{seen_a:?}");
    assert_eq!(seen_b.last_vip_conflict, conflict(&mac_a), "{seen_b:?}");
    for (instance, mac) in [(&name_a, &mac_b), (&name_b, &mac_a)] {
        wait_log(
            &["vip conflict", instance, mac, "ip protocol 112 is filtered"],
            Duration::from_secs(2),
        );
    }
    // Neither heard the other's adverts: ARP or ND alone told them.
    assert_eq!((seen_a.adverts_received, seen_b.adverts_received), (0, 0));
    println!(
        "split brain blocked both ways ({}, v3 200 ms): both sides named the other's MAC \
         {named:?} after both were MASTER",
        vip.addr
    );
    assert!(
        named <= interval * 2 + MARGIN,
        "named after {named:?}, more than two advert intervals (+{MARGIN:?})"
    );

    // The block lifts: one MASTER remains (the higher priority) within two intervals.
    for ns in [&a, &b] {
        ns.sh("nft delete table inet xlb").unwrap();
    }
    let lifted = Instant::now();
    let b_backup = node_b.wait_state(State::Backup, Duration::from_secs(5));
    let healed = b_backup.saturating_duration_since(lifted);
    println!("block lifted: b BACKUP after {healed:?}");
    assert!(healed <= interval * 2 + MARGIN, "healed after {healed:?}");
    let a_now = node_a.wait_status(&name_a, Duration::from_secs(1), |s| s.state == "MASTER");
    assert_eq!(
        a_now.became_master, 1,
        "a stayed MASTER throughout: {a_now:?}"
    );
}

/// Healing as a client sees it: in a split brain the client's ARP entry points at the
/// node that announced last (b), and stays there (neither side takes the clients back
/// and forth while the other still claims the VIP). When the block lifts b steps down,
/// a announces again once b is quiet (and past the client's 1 s ARP `locktime`), and
/// the client's probes reach a: the loss is measured and bounded.
#[test]
fn a_client_follows_the_one_master_left_when_a_split_brain_heals() {
    let lab = probed("sbc");
    let (a, b) = (&lab.a, &lab.b);
    block_vrrp(a);
    block_vrrp(b);
    let interval = Duration::from_millis(200);
    let spec_a = vip_spec("SBC_A", 200, Version::V3, interval);
    let target = probe_target(&spec_a);
    let _answers_a = Responder::start(a, target, "a").unwrap();
    let _answers_b = Responder::start(b, target, "b").unwrap();
    let mut node_a = Node::start(a, vec![spec_a]);
    node_a.wait_state(State::Master, Duration::from_secs(5));
    // b becomes MASTER after a, so its gratuitous ARP is the client's last word.
    let mut node_b = Node::start(b, vec![vip_spec("SBC_B", 100, Version::V3, interval)]);
    node_b.wait_state(State::Master, Duration::from_secs(5));
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    probe
        .wait_from("b", Instant::now(), Duration::from_secs(3))
        .expect("in the split brain the client follows b's announcement");
    // A lasting split brain: the client stays with b, no ping-pong.
    std::thread::sleep(Duration::from_secs(2));
    let settled = Instant::now() - Duration::from_secs(1);
    let last_second: Vec<String> = probe
        .replies()
        .into_iter()
        .filter(|r| r.at >= settled)
        .map(|r| r.from)
        .collect();
    assert!(
        !last_second.is_empty() && last_second.iter().all(|f| f == "b"),
        "the client stays with b while both claim the VIP: {last_second:?}"
    );

    for ns in [a, b] {
        ns.sh("nft delete table inet xlb").unwrap();
    }
    let lifted = Instant::now();
    let back = probe
        .wait_from("a", lifted, Duration::from_secs(3))
        .expect("the client reaches a once the split brain heals");
    std::thread::sleep(interval * 3);
    let replies = probe.stop().unwrap();
    let after_a: Vec<&str> = replies
        .iter()
        .filter(|r| r.at >= back)
        .map(|r| r.from.as_str())
        .collect();
    assert!(
        after_a.iter().all(|f| *f == "a"),
        "only a answers after: {after_a:?}"
    );
    let gap = back.duration_since(lifted);
    println!(
        "split brain healed: the client reached a {gap:?} after the block lifted \
         (about {} probes at {PROBE_EVERY:?} lost)",
        gap.as_millis() / PROBE_EVERY.as_millis()
    );
    // a waits for b to be quiet for the client's locktime (1.1 s), then announces.
    assert!(
        gap <= Duration::from_millis(1100) + interval * 2 + MARGIN,
        "the client was cut off for {gap:?}"
    );
}

/// The same block between xdp-lb and keepalived: both MASTER; xdp-lb names
/// keepalived's MAC for the VIP (keepalived itself has no such check).
#[test]
fn split_brain_with_keepalived_blocked_both_ways_is_named_by_xdp_lb() {
    let (a, b) = pair("sbk");
    block_vrrp(&a);
    block_vrrp(&b);
    let interval = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let keepalived = Keepalived::start(&b, dir.path(), 0, &ka(100, Version::V3, "0.2")).unwrap();
    let mut node_a = Node::start(&a, vec![vip_spec("SBK_A", 200, Version::V3, interval)]);
    let a_master = node_a.wait_state(State::Master, Duration::from_secs(5));
    keepalived
        .wait_line("Entering MASTER STATE", Duration::from_secs(5))
        .unwrap();
    let mac_b = b.mac("eth0").unwrap();
    let seen = node_a.wait_status("SBK_A", Duration::from_secs(5), |s| s.vip_conflicts > 0);
    assert_eq!(
        seen.last_vip_conflict,
        Some(xdp_lb::failover::VipConflict {
            vip: VIP.parse().unwrap(),
            mac: mac_b.clone(),
        }),
        "{seen:?}"
    );
    wait_log(&["vip conflict", "SBK_A", &mac_b], Duration::from_secs(2));
    println!(
        "split brain with keepalived blocked both ways: named {:?} after xdp-lb became MASTER",
        a_master.elapsed()
    );
}

/// Two clusters on one VRID with different VIPs: each warns about the other, ignores
/// its adverts and stays MASTER of its own VIP without flapping.
#[test]
fn vrid_clash_is_reported_without_flapping() {
    let (a, b) = pair("vc");
    let interval = Duration::from_millis(200);
    let spec_a = vip_spec("VC_A", 200, Version::V3, interval);
    let mut spec_b = vip_spec("VC_B", 100, Version::V3, interval);
    spec_b.identity.virtual_ipaddresses =
        vec![VrrpAddress::new("192.0.2.201".parse().unwrap(), 24)];
    let mut node_a = Node::start(&a, vec![spec_a]);
    let mut node_b = Node::start(&b, vec![spec_b]);
    node_a.wait_state(State::Master, Duration::from_secs(5));
    node_b.wait_state(State::Master, Duration::from_secs(5));
    wait_log(
        &["vrid clash", "VC_A", "192.0.2.2", "address list"],
        Duration::from_secs(5),
    );
    wait_log(
        &["vrid clash", "VC_B", "192.0.2.1", "address list"],
        Duration::from_secs(5),
    );
    thread::sleep(interval * 10);
    for node in [&mut node_a, &mut node_b] {
        assert_eq!(
            node.drain(),
            vec![State::Backup, State::Master],
            "{} must not flap",
            node.name
        );
    }
}

/// With `preempt = false` a returning higher priority stays BACKUP.
#[test]
fn nopreempt_leaves_the_current_master_in_place() {
    let (a, b) = pair("np");
    let vip = VIP;
    let interval = Duration::from_millis(200);
    let mut spec_a = vip_spec("NP_A", 200, Version::V3, interval);
    spec_a.tunables.preempt = false;
    let mut node_b = Node::start(&b, vec![vip_spec("NP_B", 100, Version::V3, interval)]);
    node_b.wait_state(State::Master, Duration::from_secs(5));
    let mut node_a = Node::start(&a, vec![spec_a]);
    node_a.wait_state(State::Backup, Duration::from_secs(2));
    thread::sleep(interval * 10);
    assert_eq!(
        node_a.drain(),
        vec![State::Backup],
        "nopreempt must not take over"
    );
    assert_eq!(node_b.drain(), vec![State::Backup, State::Master]);
    assert!(has_vip(&b, vip) && !has_vip(&a, vip));
}

#[test]
fn keepalived_master_v3_ipv6_xdp_lb_takes_over() {
    let vip = VrrpAddress::new("2001:db8::200".parse().unwrap(), 64);
    let mut ours = vip_spec("VI_1", 100, Version::V3, Duration::from_secs(1));
    ours.identity.virtual_ipaddresses = vec![vip];
    let mut conf = ka(200, Version::V3, "1");
    conf.vip = "2001:db8::200/64".into();
    keepalived_master_then_xdp_lb("k36", conf, ours);
}

#[test]
fn xdp_lb_master_v3_ipv6_keepalived_backup() {
    let vip = VrrpAddress::new("2001:db8::200".parse().unwrap(), 64);
    let mut ours = vip_spec("VI_1", 200, Version::V3, Duration::from_secs(1));
    ours.identity.virtual_ipaddresses = vec![vip];
    let mut conf = ka(100, Version::V3, "1");
    conf.vip = "2001:db8::200/64".into();
    xdp_lb_master_then_keepalived("x36", conf, ours);
}

/// The MASTER's interface goes down: FAULT (VIP removed), the backup takes over; the
/// interface returns: BACKUP, then MASTER again by preemption.
#[test]
fn interface_down_means_fault_and_the_backup_takes_over() {
    let lab = probed("if");
    let (a, b) = (&lab.a, &lab.b);
    let vip = VIP;
    let interval = Duration::from_millis(200);
    let mut node_a = Node::start(a, vec![vip_spec("IF_A", 200, Version::V3, interval)]);
    let mut node_b = Node::start(b, vec![vip_spec("IF_B", 100, Version::V3, interval)]);
    node_a.wait_state(State::Master, Duration::from_secs(5));
    node_b.wait_state(State::Backup, Duration::from_secs(5));
    wait_vip(a, vip, true, Duration::from_secs(2));

    let down = Instant::now();
    a.ip(["link", "set", "eth0", "down"]).unwrap();
    let fault = node_a.wait_state(State::Fault, Duration::from_secs(3));
    wait_vip(a, vip, false, Duration::from_secs(2));
    let took_over = node_b.wait_state(State::Master, Duration::from_secs(5));
    println!(
        "interface down: FAULT after {:?}, backup MASTER after {:?} (v3 200 ms)",
        fault - down,
        took_over - down
    );
    wait_vip(b, vip, true, Duration::from_secs(2));

    a.ip(["link", "set", "eth0", "up"]).unwrap();
    node_a.wait_state(State::Backup, Duration::from_secs(3));
    node_a.wait_state(State::Master, Duration::from_secs(5));
    node_b.wait_state(State::Backup, Duration::from_secs(3));
    wait_vip(a, vip, true, Duration::from_secs(2));
    wait_vip(b, vip, false, Duration::from_secs(2));
}
