//! A restart under load, with the real daemon as MASTER and a second xdp-lb as its
//! VRRP BACKUP (1 s adverts, so the backup would take over after 3.6 s of silence):
//! 20 keep-alive connections through the VIP (wrr, so only the flow table keeps them
//! on their real servers) and new connections all along. The MASTER, run as systemd
//! runs it (see [`Systemd`]), is restarted three ways, each followed by a new start:
//! `systemctl restart` (SIGTERM while systemd lists the service's job as `restart`),
//! a handover (SIGQUIT), and kill -9. Each time: 0 connections broken, 0 new
//! connections failed, and the backup never left BACKUP. Then `systemctl stop`
//! (SIGTERM with a `stop` job) stops it as keepalived would: the backup takes over.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use xdp_lb_lab::{Daemon, DrLab, DrLabOptions, KeepAlive, Netns, http_get_new_connections};
use xdp_lb_tests::{IO_TIMEOUT, READY_TIMEOUT, binary, dr_lab, start, vip};

/// What systemd gives a service that the daemon looks at when SIGTERM comes: its
/// process in a cgroup named after the unit, `INVOCATION_ID` in its environment, and a
/// `systemctl` that lists the unit's job. Real systemd runs `systemctl restart` as one
/// job that stops the unit and then becomes a start, so during the stop the job's type
/// is `restart`; here a stand-in `systemctl` first in PATH answers what the test sets.
struct Systemd {
    dir: tempfile::TempDir,
    unit: String,
    cgroup: PathBuf,
}

impl Systemd {
    fn new() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let unit = format!("xlb-restart-{}.service", std::process::id());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup2 hierarchy is mounted");
        let cgroup = root.join(&unit);
        std::fs::create_dir_all(&cgroup).unwrap();
        let d = dir.path().display();
        let script = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script(
            "systemctl",
            format!(
                "#!/bin/sh\necho \"$*\" >> '{d}/asked'\necho \"7 {unit} $(cat '{d}/job') running\"\n"
            ),
        );
        script(
            "run",
            format!(
                "#!/bin/sh\nexport INVOCATION_ID=0123456789abcdef0123456789abcdef PATH='{d}':$PATH\nexec '{}' \"$@\"\n",
                binary().display()
            ),
        );
        let systemd = Systemd { dir, unit, cgroup };
        systemd.set_job("stop");
        systemd
    }

    /// The type of the unit's job `systemctl list-jobs` shows from now on.
    fn set_job(&self, kind: &str) {
        std::fs::write(self.dir.path().join("job"), kind).unwrap();
    }

    /// Starts the daemon as the unit's main process.
    fn start(&self, ns: &Netns, config: &str) -> Daemon {
        let daemon =
            Daemon::start(ns, &self.dir.path().join("run"), config, READY_TIMEOUT).unwrap();
        // From outside the namespace: `ip netns exec` mounts its own /sys.
        std::fs::write(self.cgroup.join("cgroup.procs"), daemon.pid().to_string()).unwrap();
        daemon
    }

    /// What the daemon asked `systemctl`.
    fn asked(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("asked")).unwrap_or_default()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// How the running daemon ends before the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    SystemctlRestart,
    Handover,
    Kill9,
}

const CONNECTIONS: usize = 20;

fn config(lab: &DrLab, priority: u8) -> String {
    let mut text = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\nneighbour_timeout = \"10s\"\n\n\
         [[virtual_server]]\nvip = \"{}\"\nport = 80\nscheduler = \"wrr\"\n",
        DrLab::VIP
    );
    for b in &lab.backends {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n",
            b.addr
        );
    }
    text + &format!(
        "\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\n\
         version = 3\nadvert_interval = \"1s\"\nvirtual_ipaddresses = [\"{}/32\"]\n",
        DrLab::VIP
    )
}

/// Ends `old` as `how` says, starts it again, and checks the connections and new
/// connections made all along through it. Returns the new daemon.
fn restart(
    lab: &DrLab,
    systemd: &Systemd,
    old: Daemon,
    how: End,
    connections: &mut [(KeepAlive, String)],
) -> Daemon {
    let stop = AtomicBool::new(false);
    let made = AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::new());
    let wait_for = |n: usize| {
        let until = Instant::now() + Duration::from_secs(20);
        while made.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < until,
                "the prober stalled: {:?}",
                errors.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let new = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match http_get_new_connections(&lab.client, vip(80), 1, IO_TIMEOUT) {
                    Ok(_) => {
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().unwrap().push(format!("{e:#}")),
                }
            }
        });
        // Some traffic before the restart.
        wait_for(20);
        let began = Instant::now();
        match how {
            End::SystemctlRestart => {
                systemd.set_job("restart");
                old.signal(Signal::SIGTERM).unwrap();
            }
            End::Handover => old.signal(Signal::SIGQUIT).unwrap(),
            End::Kill9 => old.signal(Signal::SIGKILL).unwrap(),
        }
        let (code, log) = old.wait_exit(Duration::from_secs(10)).unwrap();
        if how != End::Kill9 {
            assert_eq!(code, Some(75), "a handover exits with 75:\n{log}");
            assert!(log.contains("handed over"), "{log}");
        }
        if how == End::SystemctlRestart {
            assert!(
                log.contains("while systemd restarts the service: handing over"),
                "{log}"
            );
            assert!(
                systemd.asked().contains(&format!(
                    "list-jobs --no-legend --plain --full -- {}",
                    systemd.unit
                )),
                "asked: {}",
                systemd.asked()
            );
            systemd.set_job("stop");
        }
        let mut new = systemd.start(&lab.lb, &config(lab, 150));
        new.wait_for_line("resuming as MASTER", Duration::from_secs(10))
            .unwrap();
        let resumed = began.elapsed();
        let log = new.log();
        assert!(
            log.contains("connection state taken over from the previous run"),
            "{log}"
        );
        assert!(
            log.contains("XDP taken over from the previous run"),
            "{log}"
        );
        eprintln!("measured: {how:?}: {resumed:?} from the signal to MASTER again");
        // Traffic after it, through the new daemon's program.
        wait_for(made.load(Ordering::Relaxed) + 20);
        stop.store(true, Ordering::Relaxed);
        new
    });
    let errors = errors.into_inner().unwrap();
    eprintln!(
        "measured: {how:?}: {} new connections made during the restart, {} failed",
        made.load(Ordering::Relaxed),
        errors.len()
    );
    assert!(errors.is_empty(), "new connections failed: {errors:?}");
    let mut broken = 0;
    for (c, server) in connections.iter_mut() {
        match c.get() {
            Ok(name) if name == *server => {}
            other => {
                eprintln!("broken: {other:?} (was on {server})");
                broken += 1;
            }
        }
    }
    eprintln!("measured: {how:?}: {broken} of {CONNECTIONS} keep-alive connections broken");
    assert_eq!(broken, 0);
    new
}

#[test]
fn a_restart_and_a_kill_9_then_start_break_no_connection_and_the_peer_sees_nothing() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]).with_standby());
    lab.start_http_backends(80).unwrap();
    let systemd = Systemd::new();
    let mut lb1 = systemd.start(&lab.lb, &config(&lab, 150));
    lb1.wait_for_line("entering MASTER state", Duration::from_secs(10))
        .unwrap();
    let standby = lab.standby.as_ref().unwrap();
    let mut lb2 = start(standby, &config(&lab, 100));
    lb2.wait_for_line("entering BACKUP state", Duration::from_secs(10))
        .unwrap();

    let mut connections: Vec<(KeepAlive, String)> = (0..CONNECTIONS)
        .map(|_| {
            let mut c = KeepAlive::open(&lab.client, vip(80), IO_TIMEOUT).unwrap();
            let server = c.get().unwrap();
            (c, server)
        })
        .collect();
    let spread: std::collections::BTreeSet<&String> = connections.iter().map(|(_, s)| s).collect();
    assert!(spread.len() > 1, "wrr spreads them: {spread:?}");

    let lb1 = restart(&lab, &systemd, lb1, End::SystemctlRestart, &mut connections);
    let lb1 = restart(&lab, &systemd, lb1, End::Handover, &mut connections);
    let lb1 = restart(&lab, &systemd, lb1, End::Kill9, &mut connections);

    // The backup never saw the master go.
    let peer = lb2.log();
    assert!(!peer.contains("entering MASTER state"), "{peer}");
    // `systemctl stop` (a `stop` job) releases everything: priority 0, the backup
    // takes over.
    let log = lb1.stop().unwrap();
    assert!(log.contains("job=stop"), "{log}");
    lb2.wait_for_line("entering MASTER state", Duration::from_secs(5))
        .unwrap();
    lb2.stop().unwrap();
}
