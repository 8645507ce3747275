//! A restart under load, with the real daemon as MASTER and a second xdp-lb as its
//! VRRP BACKUP (1 s adverts, so the backup would take over after 3.6 s of silence):
//! 20 keep-alive connections through the VIP (wrr, so only the flow table keeps them
//! on their real servers) and new connections all along. The MASTER hands over
//! (SIGQUIT, exit code 75, as `xdp-lb restart` asks) and starts again; then it is
//! killed with -9 and started again. Each time: 0 connections broken, 0 new
//! connections failed, and the backup never left BACKUP.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use xdp_lb_lab::{Daemon, DrLab, DrLabOptions, KeepAlive, http_get_new_connections};
use xdp_lb_tests::{IO_TIMEOUT, dr_lab, start, vip};

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

/// Ends `old` (SIGQUIT or SIGKILL), starts it again, and checks the connections and
/// new connections made all along through it. Returns the new daemon.
fn restart(
    lab: &DrLab,
    old: Daemon,
    how: Signal,
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
        old.signal(how).unwrap();
        let (code, log) = old.wait_exit(Duration::from_secs(10)).unwrap();
        if how == Signal::SIGQUIT {
            assert_eq!(code, Some(75), "a handover exits with 75:\n{log}");
            assert!(log.contains("handed over"), "{log}");
        }
        let mut new = start(&lab.lb, &config(lab, 150));
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
    let mut lb1 = start(&lab.lb, &config(&lab, 150));
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

    let lb1 = restart(&lab, lb1, Signal::SIGQUIT, &mut connections);
    let lb1 = restart(&lab, lb1, Signal::SIGKILL, &mut connections);

    // The backup never saw the master go.
    let peer = lb2.log();
    assert!(!peer.contains("entering MASTER state"), "{peer}");
    // A clean stop releases everything: priority 0, the backup takes over.
    lb1.stop().unwrap();
    lb2.wait_for_line("entering MASTER state", Duration::from_secs(5))
        .unwrap();
    lb2.stop().unwrap();
}
