//! `cargo xtask bench` (after the data-plane table): VRRP takeover as a client sees it,
//! xdp-lb and keepalived side by side in the same lab.
//!
//! Two nodes and a client share one bridge ([`ProbeLab`]); each node runs a UDP
//! responder on the virtual address and the client probes it every 10 ms. The master
//! (priority 200) is crashed (`kill -9`; its responder stops at the same instant, so
//! the virtual address left configured does not keep answering) or stopped gracefully
//! (SIGTERM: priority 0), and the client's outage is its first reply from the backup
//! (priority 100) minus its last reply from the master. The master then restarts and
//! preempts, and the next repetition begins; repetitions stop the master at phases
//! spread evenly over the advert interval, so a crash's outage ranges from about the
//! backup's master-down interval minus one interval up to that interval. xdp-lb is the
//! real daemon (`xdp-lb --config FILE`), so its `kill -9` is a real crash.
//!
//! Printed: a markdown table of the median outage with min and max, per VRRP setting
//! (v2 1 s with authentication, v3 100 ms) and master -> backup pair.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use xdp_lb_lab::{Daemon, KaConf, Keepalived, Netns, Probe, ProbeLab, Responder, require_root};

const VRID: u8 = 51;
const VIP: &str = "192.0.2.200";
const PORT: u16 = 7000;
const PROBE_EVERY: Duration = Duration::from_millis(10);
const MASTER_PRIORITY: u8 = 200;
const BACKUP_PRIORITY: u8 = 100;
/// What the client hears from each node.
const MASTER: &str = "master";
const BACKUP: &str = "backup";

/// One VRRP setting both implementations are configured with.
struct Setting {
    label: &'static str,
    version: u8,
    interval: Duration,
    /// The same interval as keepalived writes it.
    advert_int: &'static str,
    auth_pass: Option<&'static str>,
    /// Repetitions of each measurement (the median is reported).
    reps: usize,
}

const SETTINGS: [Setting; 2] = [
    Setting {
        label: "v2 1 s auth",
        version: 2,
        interval: Duration::from_secs(1),
        advert_int: "1",
        auth_pass: Some("s3cret"),
        reps: 3,
    },
    Setting {
        label: "v3 100 ms",
        version: 3,
        interval: Duration::from_millis(100),
        advert_int: "0.1",
        auth_pass: None,
        reps: 5,
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Keepalived,
    XdpLb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Keepalived => "keepalived",
            Kind::XdpLb => "xdp-lb",
        }
    }
}

const PAIRS: [(Kind, Kind); 4] = [
    (Kind::Keepalived, Kind::Keepalived),
    (Kind::Keepalived, Kind::XdpLb),
    (Kind::XdpLb, Kind::Keepalived),
    (Kind::XdpLb, Kind::XdpLb),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `kill -9` of the VRRP process with its host's responder: no priority 0.
    Crash,
    /// SIGTERM: priority 0, the virtual address removed.
    Graceful,
}

/// A VRRP node: keepalived or the xdp-lb daemon.
enum Node {
    Keepalived(Keepalived),
    XdpLb(Daemon),
}

impl Node {
    fn start(
        kind: Kind,
        ns: &Netns,
        dir: &Path,
        run: u32,
        setting: &Setting,
        priority: u8,
    ) -> Node {
        match kind {
            Kind::Keepalived => {
                let mut conf = KaConf::new("eth0", VRID, &format!("{VIP}/24"));
                conf.priority = priority;
                conf.version = setting.version;
                conf.advert_int = setting.advert_int.into();
                conf.auth_pass = setting.auth_pass.map(Into::into);
                Node::Keepalived(Keepalived::start(ns, dir, run, &conf).expect("keepalived"))
            }
            Kind::XdpLb => Node::XdpLb(
                Daemon::start(
                    ns,
                    Path::new(env!("CARGO_BIN_EXE_xdp-lb")),
                    &daemon_config(setting, priority),
                    Duration::from_secs(30),
                )
                .expect("the xdp-lb daemon"),
            ),
        }
    }

    /// Waits for the node's next report of entering MASTER (or BACKUP).
    fn wait_state(&mut self, master: bool, within: Duration) {
        match self {
            Node::Keepalived(k) => {
                let line = if master {
                    "Entering MASTER STATE"
                } else {
                    "Entering BACKUP STATE"
                };
                k.wait_line(line, within).unwrap();
            }
            Node::XdpLb(d) => {
                let line = if master {
                    "entering MASTER state"
                } else {
                    "entering BACKUP state"
                };
                d.wait_for_line(line, within).unwrap();
            }
        }
    }

    /// Ends the node as `stop` says; returns the instant just before.
    fn end(self, stop: Stop) -> Instant {
        match (self, stop) {
            (Node::Keepalived(k), Stop::Crash) => k.kill9().unwrap(),
            (Node::Keepalived(k), Stop::Graceful) => k.terminate().unwrap(),
            (Node::XdpLb(d), Stop::Crash) => {
                let at = Instant::now();
                // Dropping the runner kills the process with SIGKILL.
                drop(d);
                at
            }
            (Node::XdpLb(d), Stop::Graceful) => {
                let at = Instant::now();
                d.stop().unwrap();
                at
            }
        }
    }
}

/// A daemon configuration with one VRRP instance and nothing to forward (the
/// `[dataplane]` table is required; the XDP program passes everything).
fn daemon_config(setting: &Setting, priority: u8) -> String {
    let mut s = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\nmax_flows = 1024\n\n\
         [vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = {VRID}\npriority = {priority}\n\
         version = {}\nadvert_interval = \"{}ms\"\nvirtual_ipaddresses = [\"{VIP}/24\"]\n",
        setting.version,
        setting.interval.as_millis()
    );
    if let Some(pass) = setting.auth_pass {
        s += &format!("auth_pass = \"{pass}\"\n");
    }
    s
}

/// Outages of `reps` crashes and `reps` graceful stops of the master of `pair`.
fn measure(setting: &Setting, pair: (Kind, Kind), tag: usize) -> (Vec<Duration>, Vec<Duration>) {
    let lab = ProbeLab::build(&format!("xlbbf{tag}")).expect("the lab");
    let dir = tempfile::tempdir().unwrap();
    let target = SocketAddr::new(VIP.parse::<IpAddr>().unwrap(), PORT);
    let mut master_answers = Some(Responder::start(&lab.a, target, MASTER).unwrap());
    let _backup_answers = Responder::start(&lab.b, target, BACKUP).unwrap();
    let mut runs = 0..;
    let mut master = Node::start(
        pair.0,
        &lab.a,
        dir.path(),
        runs.next().unwrap(),
        setting,
        MASTER_PRIORITY,
    );
    let mut backup = Node::start(
        pair.1,
        &lab.b,
        dir.path(),
        runs.next().unwrap(),
        setting,
        BACKUP_PRIORITY,
    );
    let within = setting.interval * 5 + Duration::from_secs(5);
    master.wait_state(true, within);
    backup.wait_state(false, within);
    let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
    probe.wait_from(MASTER, Instant::now(), within).unwrap();

    let mut outages = (Vec::new(), Vec::new());
    for stop in [Stop::Crash, Stop::Graceful] {
        for rep in 0..setting.reps {
            // The client has just heard the master, i.e. it has just sent its first
            // adverts: the event lands at a phase of the advert interval spread evenly
            // over the repetitions, as a crash would land anywhere between two adverts.
            // (A deliberate offset, not a wait for anything.)
            std::thread::sleep(phase(setting, rep));
            if stop == Stop::Crash {
                master_answers.take().unwrap().stop().unwrap();
            }
            let at = master.end(stop);
            backup.wait_state(true, within);
            let h = probe.handover(MASTER, BACKUP, at, within).unwrap();
            eprintln!(
                "  {} {} -> {} {}: outage {:?} (first answer {:?} after the event)",
                setting.label,
                pair.0.name(),
                pair.1.name(),
                match stop {
                    Stop::Crash => "kill -9",
                    Stop::Graceful => "graceful",
                },
                h.outage(),
                h.after_event()
            );
            match stop {
                Stop::Crash => outages.0.push(h.outage()),
                Stop::Graceful => outages.1.push(h.outage()),
            }
            // The master comes back and preempts; the client follows it.
            if master_answers.is_none() {
                master_answers = Some(Responder::start(&lab.a, target, MASTER).unwrap());
            }
            let restarted = Instant::now();
            master = Node::start(
                pair.0,
                &lab.a,
                dir.path(),
                runs.next().unwrap(),
                setting,
                MASTER_PRIORITY,
            );
            master.wait_state(true, within);
            backup.wait_state(false, within);
            probe.wait_from(MASTER, restarted, within).unwrap();
        }
    }
    outages
}

/// How far into the advert interval repetition `rep` stops the master: the middles
/// of `reps` equal slices of the interval.
fn phase(setting: &Setting, rep: usize) -> Duration {
    setting
        .interval
        .mul_f64((rep as f64 + 0.5) / setting.reps as f64)
}

/// `median [min, max]` in milliseconds.
fn summary(samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let median = if ms.len() % 2 == 1 {
        ms[ms.len() / 2]
    } else {
        (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
    };
    format!("{median:.0} ms [{:.0}, {:.0}]", ms[0], ms[ms.len() - 1])
}

/// RFC 5798's timers for the backup: (master-down interval, skew time).
fn timers(interval: Duration) -> (Duration, Duration) {
    let skew = interval.mul_f64(f64::from(256 - u32::from(BACKUP_PRIORITY)) / 256.0);
    (interval * 3 + skew, skew)
}

fn main() {
    require_root().expect("the failover benchmark builds network namespaces");
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut tag = 0;
    for setting in &SETTINGS {
        for pair in PAIRS {
            tag += 1;
            let (crash, graceful) = measure(setting, pair, tag);
            rows.push(format!(
                "| {} | {} -> {} | {} | {} |",
                setting.label,
                pair.0.name(),
                pair.1.name(),
                summary(&crash),
                summary(&graceful)
            ));
        }
    }
    println!();
    println!(
        "VRRP takeover measured by a client probing the virtual address every {PROBE_EVERY:?} \
         (outage = first reply from the backup - last reply from the master; median [min, max])"
    );
    for setting in &SETTINGS {
        let (down, skew) = timers(setting.interval);
        println!(
            "- {}: {} repetitions; backup priority {BACKUP_PRIORITY}: master-down interval \
             {down:?} (the kills land at phases spread over one interval after the last \
             advert), skew time {skew:?}",
            setting.label, setting.reps
        );
    }
    println!();
    println!("| VRRP | master -> backup | kill -9 (host crash) | graceful stop (priority 0) |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!("({:.0} s)", started.elapsed().as_secs_f64());
}
