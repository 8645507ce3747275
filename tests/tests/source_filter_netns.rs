//! The source filter with the real binary, real HTTP servers and clients: a denied
//! client's connections fail and are counted by the rule that denies it, an allowed
//! one is served, and a reload (SIGHUP) that changes the rules flips who may connect
//! without a restart and without breaking an allowed client's open connection. The
//! decision logic itself is covered in BPF_PROG_TEST_RUN (`xdp_program::
//! the_source_filter_*`) and the owner's unit tests.
//! Needs root; the lab is torn down on drop, also when an assert fails.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use xdp_lb::{filter::Action, status::Snapshot};
use xdp_lb_lab::{DrLab, DrLabOptions, KeepAlive, http_get_new_connections_from};
use xdp_lb_tests::{IO_TIMEOUT, config, dr_lab, start, status, vip};

/// Allowed throughout (its keep-alive connection spans the reload).
const ALLOWED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 70);
/// Denied by the service's rule, allowed after the reload.
const DENIED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 71);
/// Allowed, then denied by the global list after the reload.
const LATER_DENIED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 72);
/// How long a connection attempt from a denied client is given: its SYNs are dropped,
/// so it can only time out.
const DENIED_TIMEOUT: Duration = Duration::from_secs(1);
const RELOADED: Duration = Duration::from_secs(10);

/// The lab's VIP:80 over b1 and b2, allowing 192.0.2.64/27 but denying `service_deny`,
/// with `global` as `[filter] deny`.
fn filtered(lab: &DrLab, service_deny: &[Ipv4Addr], global: &[Ipv4Addr]) -> String {
    let list = |addrs: &[Ipv4Addr]| {
        let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let rules = format!(
        "scheduler = \"wrr\"\nallow = [\"192.0.2.64/27\"]\ndeny = {}\n",
        list(service_deny)
    );
    format!(
        "[filter]\ndeny = {}\n\n{}",
        list(global),
        config(lab, &[(80, "tcp", &[1, 1])]).replace("scheduler = \"wrr\"\n", &rules)
    )
}

/// Packets counted by the service's rule `action prefix`, or by the global rule.
fn counted(s: &Snapshot, global: bool, action: Action, prefix: &str) -> Option<u64> {
    let rules = if global {
        &s.global_deny
    } else {
        &s.services[0].filter
    };
    rules
        .iter()
        .find(|r| r.action == action && r.prefix.as_deref() == Some(prefix))
        .map(|r| r.packets)
}

fn connect(lab: &DrLab, from: Ipv4Addr, timeout: Duration) -> anyhow::Result<usize> {
    http_get_new_connections_from(&lab.client, Some(IpAddr::V4(from)), vip(80), 3, timeout)
        .map(|tally| tally.values().sum())
}

#[test]
fn denied_clients_are_dropped_and_counted_and_a_reload_flips_them_live() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    for addr in [ALLOWED, DENIED, LATER_DENIED] {
        lab.client
            .ip(["addr", "add", &format!("{addr}/24"), "dev", "eth0"])
            .unwrap();
    }
    let mut daemon = start(&lab.lb, &filtered(&lab, &[DENIED], &[]));

    // The allowed client is served, and keeps one connection open across the reload.
    assert_eq!(connect(&lab, ALLOWED, IO_TIMEOUT).unwrap(), 3);
    let mut open = KeepAlive::open_from(
        &lab.client,
        Some(SocketAddr::new(ALLOWED.into(), 40_070)),
        vip(80),
        IO_TIMEOUT,
    )
    .unwrap();
    let server = open.get().unwrap();
    assert_eq!(connect(&lab, LATER_DENIED, IO_TIMEOUT).unwrap(), 3);
    // The denied one cannot connect, and its rule counts what it dropped.
    let refused = connect(&lab, DENIED, DENIED_TIMEOUT);
    assert!(refused.is_err(), "a denied client connected: {refused:?}");
    let before = status(&lab.lb);
    let dropped = counted(&before, false, Action::Deny, "192.0.2.71/32").unwrap();
    assert!(dropped >= 1, "the deny rule counted nothing: {before:?}");
    let allowed = counted(&before, false, Action::Allow, "192.0.2.64/27").unwrap();
    assert!(allowed > 0, "the allow rule counted nothing: {before:?}");
    assert_eq!(before.services[0].counters.dropped_filtered, dropped);
    let verdicts = before.verdicts.get("drop_filtered").copied().unwrap_or(0);
    assert_eq!(verdicts, dropped, "every drop under its reason too");
    eprintln!(
        "measured: before the reload: deny 192.0.2.71/32 dropped {dropped}, \
         allow 192.0.2.64/27 decided {allowed}"
    );

    // The service's deny leaves, the global list denies another client instead.
    daemon
        .reload(&filtered(&lab, &[], &[LATER_DENIED]))
        .unwrap();
    let line = daemon
        .wait_for_line("configuration reloaded", RELOADED)
        .unwrap();
    assert!(line.contains("source-filter rules (1 new)"), "{line}");
    for _ in 0..20 {
        assert_eq!(
            open.get().unwrap(),
            server,
            "the allowed client's open connection broke or moved"
        );
    }
    assert_eq!(connect(&lab, DENIED, IO_TIMEOUT).unwrap(), 3, "now allowed");
    let refused = connect(&lab, LATER_DENIED, DENIED_TIMEOUT);
    assert!(refused.is_err(), "now denied, yet connected: {refused:?}");
    let after = status(&lab.lb);
    assert_eq!(
        counted(&after, false, Action::Deny, "192.0.2.71/32"),
        None,
        "the removed rule is gone: {:?}",
        after.services[0].filter
    );
    let global = counted(&after, true, Action::Deny, "192.0.2.72/32").unwrap();
    assert!(global >= 1, "the global rule counted nothing: {after:?}");
    let allowed_after = counted(&after, false, Action::Allow, "192.0.2.64/27").unwrap();
    assert!(
        allowed_after > allowed,
        "the kept allow rule keeps counting from where it was: {allowed} then {allowed_after}"
    );
    eprintln!(
        "measured: after the reload: global deny 192.0.2.72/32 dropped {global}, \
         allow 192.0.2.64/27 decided {allowed_after}"
    );
    drop(open);
    daemon.stop().unwrap();
}
