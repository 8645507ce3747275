//! A reload that waits for a new real server's MAC (one that never answers ARP) does
//! not hold the daemon: while it waits, a health check's verdict still reaches the maps
//! (new connections stop going to the failed server at once), and SIGTERM stops the
//! daemon within a second. Needs root; the lab is torn down on drop.

use std::time::{Duration, Instant};

use xdp_lb_lab::{DrLab, DrLabOptions, http_get_new_connections};
use xdp_lb_tests::{IO_TIMEOUT, start, vip};

/// The reload's MAC wait: long, so everything below happens inside it.
const NEIGHBOUR_TIMEOUT: &str = "6s";
/// On the lab's segment, and nobody has it: ARP for it is never answered.
const SILENT: &str = "192.0.2.77";

/// b1 and b2 checked every 200 ms; with `silent`, a third real server without a host.
fn config(lab: &DrLab, silent: bool) -> String {
    let mut text = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\nneighbour_timeout = \"{NEIGHBOUR_TIMEOUT}\"\n\n\
         [[virtual_server]]\nvip = \"{}\"\nport = 80\n",
        DrLab::VIP
    );
    for b in &lab.backends {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  check = {{ type = \"http\", \
             path = \"/\", interval = \"200ms\", warmup = \"0s\", connect_timeout = \"300ms\", \
             retry = 0, fall = 1, rise = 1 }}\n",
            b.addr
        );
    }
    if silent {
        text += &format!("  [[virtual_server.real_server]]\n  address = \"{SILENT}\"\n");
    }
    text
}

#[test]
fn health_verdicts_reach_the_maps_while_a_reload_waits_for_a_mac() {
    let mut lab = xdp_lb_tests::dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let mut daemon = start(&lab.lb, &config(&lab, false));
    let before = http_get_new_connections(&lab.client, vip(80), 20, IO_TIMEOUT).unwrap();
    assert_eq!(before.len(), 2, "both real servers answer: {before:?}");

    daemon.reload(&config(&lab, true)).unwrap();
    daemon
        .wait_for_line("reload: resolving routes", Duration::from_secs(5))
        .unwrap();
    let reload_started = Instant::now();
    lab.stop_backend_server("b1").unwrap();
    let b1 = lab.backend("b1").unwrap().addr;
    let line = daemon
        .wait_for_line(&format!("real_server={b1}:80"), Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("real server down"), "{line}");
    let seen = reload_started.elapsed();
    assert!(
        !daemon.log().contains("configuration reloaded"),
        "the reload was meant to be still waiting; log:\n{}",
        daemon.log()
    );
    let tally = http_get_new_connections(&lab.client, vip(80), 30, IO_TIMEOUT).unwrap();
    assert_eq!(
        tally.keys().collect::<Vec<_>>(),
        ["b2"],
        "b1 failed during the reload's wait: only b2 may take connections: {tally:?}"
    );
    eprintln!("measured: health verdict applied {seen:?} into the reload's MAC wait");

    // The reload ends at its timeout with the silent server unresolved, and b1 stays
    // down in the new table (its verdict carried over).
    let line = daemon
        .wait_for_line("configuration reloaded", Duration::from_secs(15))
        .unwrap();
    assert!(line.contains("(1 new, 0 removed"), "{line}");
    let tally = http_get_new_connections(&lab.client, vip(80), 30, IO_TIMEOUT).unwrap();
    assert_eq!(tally.keys().collect::<Vec<_>>(), ["b2"], "{tally:?}");
    daemon.stop().unwrap();
}

#[test]
fn sigterm_during_a_reloads_mac_wait_stops_the_daemon_at_once() {
    let mut lab = xdp_lb_tests::dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let mut daemon = start(&lab.lb, &config(&lab, false));
    daemon.reload(&config(&lab, true)).unwrap();
    daemon
        .wait_for_line("reload: resolving routes", Duration::from_secs(5))
        .unwrap();
    let signalled = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let (code, log) = daemon.wait_exit(Duration::from_secs(5)).unwrap();
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("configuration reloaded"), "{log}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM took {took:?} to stop the daemon during a reload's MAC wait; log:\n{log}"
    );
    eprintln!("measured: SIGTERM to exit during a reload's MAC wait: {took:?}");
}
