//! lc/wlc follow real connection counts, through the real daemon and real HTTP
//! servers: b1 holds 50 long-lived keep-alive connections (opened while b2 and b3 were
//! down), then b2 and b3 come up and 100 short connections arrive one after another.
//! `wlc` sends b1 almost none of them (its 50 × 256 overhead is far above the
//! others'); `wrr`, the control run that proves the test can fail, sends it a third.
use std::collections::BTreeMap;
use std::time::Duration;

use xdp_lb_lab::{DrLabOptions, KeepAlive, http_get_new_connections};
use xdp_lb_tests::{IO_TIMEOUT, config, dr_lab, start, vip};

const LONG_LIVED: usize = 50;
const SHORT: usize = 100;

/// The short connections' tally by real server, with b1 holding the long-lived ones.
fn short_connections_with_b1_loaded(scheduler: &str) -> BTreeMap<String, usize> {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backend("b1", 80).unwrap();
    // Every server starts down (`alpha`) and joins after one good check.
    let check = "  check = { type = \"tcp\", interval = \"200ms\", warmup = \"0s\", \
                 connect_timeout = \"300ms\", retry = 0, fall = 1, rise = 1, alpha = true }\n";
    let text = config(&lab, &[(80, "tcp", &[1, 1, 1])])
        .replace(
            "scheduler = \"wrr\"\n",
            &format!("scheduler = \"{scheduler}\"\n"),
        )
        .replace("weight = 1\n", &format!("weight = 1\n{check}"));
    let mut daemon = start(&lab.lb, &text);
    let up = |daemon: &mut xdp_lb_lab::Daemon, name: &str, lab: &xdp_lb_lab::DrLab| {
        let addr = lab.backend(name).unwrap().addr;
        let line = daemon
            .wait_for_line(&format!("real_server={addr}:80"), Duration::from_secs(10))
            .unwrap();
        assert!(line.contains("real server up"), "{line}");
    };
    up(&mut daemon, "b1", &lab);

    let mut long_lived: Vec<KeepAlive> = (0..LONG_LIVED)
        .map(|_| {
            let mut c = KeepAlive::open(&lab.client, vip(80), IO_TIMEOUT).unwrap();
            assert_eq!(c.get().unwrap(), "b1", "only b1 is up");
            c
        })
        .collect();

    for name in ["b2", "b3"] {
        lab.start_http_backend(name, 80).unwrap();
        up(&mut daemon, name, &lab);
    }
    let tally = http_get_new_connections(&lab.client, vip(80), SHORT, IO_TIMEOUT).unwrap();
    eprintln!(
        "measured: {scheduler}: b1 holds {LONG_LIVED} connections; {SHORT} short ones went \
         {tally:?}"
    );
    if scheduler == "wlc" {
        // `xdp-lb status` shows the counts the schedule followed, as ipvsadm -Ln does.
        let out = lab
            .lb
            .command(xdp_lb_tests::binary())
            .arg("status")
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        let b1 = lab.backend("b1").unwrap().addr;
        assert!(
            status.lines().any(|l| l.contains(&format!("-> {b1}:80"))
                && l.contains(&format!("active {LONG_LIVED} inactive 0"))),
            "{status}"
        );
        eprintln!("measured: xdp-lb status:\n{status}");
    }
    // The long-lived ones were never moved.
    for c in &mut long_lived {
        assert_eq!(c.get().unwrap(), "b1");
    }
    drop(long_lived);
    daemon.stop().unwrap();
    tally
}

#[test]
fn wlc_sends_a_loaded_real_server_fewer_new_connections_and_wrr_does_not() {
    let wlc = short_connections_with_b1_loaded("wlc");
    assert_eq!(wlc.values().sum::<usize>(), SHORT);
    let on_b1 = wlc.get("b1").copied().unwrap_or(0);
    assert!(
        on_b1 <= SHORT / 10,
        "wlc: b1 already holds {LONG_LIVED} connections, yet took {on_b1} of {SHORT}: {wlc:?}"
    );
    // The rest is shared between the idle two.
    let (b2, b3) = (wlc["b2"], wlc["b3"]);
    assert!(b2.abs_diff(b3) <= SHORT / 5, "{wlc:?}");

    let wrr = short_connections_with_b1_loaded("wrr");
    let on_b1 = wrr.get("b1").copied().unwrap_or(0);
    assert!(
        (SHORT / 5..=SHORT / 2).contains(&on_b1),
        "control: wrr ignores connection counts and gives b1 its third, got {on_b1}: {wrr:?}"
    );
}
