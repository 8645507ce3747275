//! Configuration reload (SIGHUP) of the real `xdp-lb` binary while clients use it: a
//! real server removed, one added, a weight changed and a UDP service added take
//! effect for new connections, while an open keep-alive connection to a real server
//! that stays carries on; an invalid file or a change that needs a restart is refused
//! with its reason and changes nothing.
//! Needs root; every lab is torn down on drop, also when an assert fails.

use std::time::Duration;

use xdp_lb_lab::{DrLab, DrLabOptions, KeepAlive, http_get_new_connections, udp_query};
use xdp_lb_tests::{IO_TIMEOUT, assert_split, config, dr_lab, start, vip};

/// How long a reload may take to be logged (it re-reads routes and neighbours).
const RELOADED: Duration = Duration::from_secs(10);

/// The lab's config with VIP:80/tcp on these (backend index, weight) pairs, and
/// VIP:53/udp on every backend if `udp`.
fn services(lab: &DrLab, http: &[(usize, u32)], udp: bool) -> String {
    let mut text = config(lab, &[]);
    text += &format!(
        "\n[[virtual_server]]\nvip = \"{}\"\nport = 80\nprotocol = \"tcp\"\n",
        DrLab::VIP
    );
    for (i, w) in http {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  weight = {w}\n",
            lab.backends[*i].addr
        );
    }
    if udp {
        text += &format!(
            "\n[[virtual_server]]\nvip = \"{}\"\nport = 53\nprotocol = \"udp\"\n",
            DrLab::VIP
        );
        for b in &lab.backends {
            text += &format!(
                "  [[virtual_server.real_server]]\n  address = \"{}\"\n",
                b.addr
            );
        }
    }
    text
}

#[test]
fn a_reload_changes_real_servers_and_keeps_open_connections() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    lab.start_udp_backends(53).unwrap();
    let mut daemon = start(&lab.lb, &services(&lab, &[(0, 1), (1, 1)], false));
    let mut open = KeepAlive::open(&lab.client, vip(80), IO_TIMEOUT).unwrap();
    let kept = open.get().unwrap();
    let (stays, leaves) = if kept == "b1" { (0, 1) } else { (1, 0) };
    assert_eq!(lab.backends[stays].name, kept);
    assert!(
        udp_query(&lab.client, vip(53), 1, Duration::from_millis(500)).is_err(),
        "no UDP service yet: the query must go unanswered"
    );

    // The connection's server stays with weight 2, the other leaves, b3 joins with 3.
    daemon
        .reload(&services(&lab, &[(stays, 2), (2, 3)], true))
        .unwrap();
    let line = daemon
        .wait_for_line("configuration reloaded", RELOADED)
        .unwrap();
    assert!(
        line.contains("(1 new, 0 removed)")
            && line.contains("(4 new, 1 removed; 1 kept their health)"),
        "{line}"
    );

    for _ in 0..50 {
        assert_eq!(
            open.get().unwrap(),
            kept,
            "the open connection moved off its real server"
        );
    }
    let tally = http_get_new_connections(&lab.client, vip(80), 250, IO_TIMEOUT).unwrap();
    let leaver = &lab.backends[leaves].name;
    assert!(
        !tally.contains_key(leaver.as_str()),
        "{leaver} was removed but got connections: {tally:?}"
    );
    assert_split(&tally, &[(kept.as_str(), 2), ("b3", 3)], 250, 6.0);
    let udp = udp_query(&lab.client, vip(53), 30, IO_TIMEOUT).unwrap();
    assert_eq!(
        udp.values().sum::<usize>(),
        30,
        "the added UDP service: {udp:?}"
    );

    // An invalid file: refused at its line and column; everything keeps working.
    let broken = services(&lab, &[(stays, 2), (2, 3)], true).replace("weight = 3", "weight = -3");
    daemon.reload(&broken).unwrap();
    let line = daemon.wait_for_line("reload refused", RELOADED).unwrap();
    let path = daemon.config_path().display().to_string();
    assert!(line.contains(&format!("{path}:")), "names the file: {line}");
    assert!(line.contains("weight"), "says what is wrong: {line}");
    // A change that needs a restart: refused, naming the table.
    let restart = services(&lab, &[(stays, 2), (2, 3)], true)
        .replace("neighbour_timeout = \"10s\"", "neighbour_timeout = \"20s\"");
    daemon.reload(&restart).unwrap();
    let line = daemon.wait_for_line("reload refused", RELOADED).unwrap();
    assert!(
        line.contains("[dataplane] neighbour_timeout changed"),
        "{line}"
    );
    let tally = http_get_new_connections(&lab.client, vip(80), 100, IO_TIMEOUT).unwrap();
    assert!(!tally.contains_key(leaver.as_str()), "{tally:?}");
    assert_eq!(open.get().unwrap(), kept);

    // Reloading the same virtual servers is a no-op.
    daemon
        .reload(&services(&lab, &[(stays, 2), (2, 3)], true))
        .unwrap();
    daemon
        .wait_for_line("configuration reloaded: nothing changed", RELOADED)
        .unwrap();
    daemon.stop().unwrap();
}
