//! The real daemon's VRRP configured from TOML, on two nodes joined by two segments
//! (each through a bridge, so one node's link can go down while the other keeps its
//! carrier): sync groups whose members sit on different interfaces, tracked interfaces
//! with weights, and VIPs on a device and scope of their own; and a sync group shared
//! with real keepalived.
//!
//! Needs root and `ip`; fails (never skips) without them.

use std::time::{Duration, Instant};

use xdp_lb_lab::{Daemon, Keepalived, Netns, require_root};
use xdp_lb_tests::spawn;

/// Generous bound for a state change at 100 ms adverts.
const CHANGE: Duration = Duration::from_secs(10);

/// Nodes `a` (.1) and `b` (.2) on two segments: eth0 on 192.0.2.0/24 and eth1 on
/// 198.51.100.0/24, each a bridge in the switch namespace.
fn two_segments(tag: &str) -> (Netns, Netns, Netns) {
    require_root().expect("these tests need root");
    let sw = Netns::new(&format!("xlbsy{tag}s")).unwrap();
    let a = Netns::new(&format!("xlbsy{tag}a")).unwrap();
    let b = Netns::new(&format!("xlbsy{tag}b")).unwrap();
    for br in ["br0", "br1"] {
        sw.ip(["link", "add", br, "type", "bridge"]).unwrap();
        sw.ip(["link", "set", br, "up"]).unwrap();
    }
    for (ns, host) in [(&a, 1), (&b, 2)] {
        for (eth, br, net) in [("eth0", "br0", "192.0.2"), ("eth1", "br1", "198.51.100")] {
            let port = format!("p{}{}", ns.name().chars().last().unwrap(), &eth[3..]);
            sw.ip([
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                eth,
                "netns",
                ns.name(),
            ])
            .unwrap();
            sw.ip(["link", "set", &port, "master", br, "up"]).unwrap();
            ns.ip(["link", "set", eth, "up"]).unwrap();
            ns.ip(["addr", "add", &format!("{net}.{host}/24"), "dev", eth])
                .unwrap();
        }
    }
    (a, b, sw)
}

/// A daemon config with `vrrp` appended to a data plane on eth0 (no virtual servers:
/// these nodes only run VRRP).
fn node_config(vrrp: &str) -> String {
    format!("[dataplane]\ninterfaces = [\"eth0\"]\n\n{vrrp}")
}

/// One `[vrrp.NAME]` table at 100 ms adverts.
fn instance(name: &str, iface: &str, vrid: u8, priority: u8, vips: &str, extra: &str) -> String {
    format!(
        "[vrrp.{name}]\ninterface = \"{iface}\"\nvirtual_router_id = {vrid}\npriority = {priority}\n\
         version = 3\nadvert_interval = \"100ms\"\nvirtual_ipaddresses = {vips}\n{extra}\n"
    )
}

/// Waits until the daemon has logged, in any order, each `(instance, state)` change
/// (only lines not read before count).
fn wait_states(daemon: &mut Daemon, changes: &[(&str, &str)]) {
    let mut pending: Vec<(&str, &str)> = changes.to_vec();
    let until = Instant::now() + CHANGE;
    while !pending.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        let line = daemon
            .wait_for_line("vrrp instance entering", left)
            .unwrap_or_else(|e| panic!("still waiting for {pending:?}: {e:#}"));
        pending.retain(|(instance, state)| !entered(&line, instance, state));
    }
}

fn wait_state(daemon: &mut Daemon, instance: &str, state: &str) {
    wait_states(daemon, &[(instance, state)]);
}

/// Whether `log` says `instance` entered `state`.
fn entered(log: &str, instance: &str, state: &str) -> bool {
    log.lines().any(|l| {
        l.contains(&format!("instance={instance} "))
            && l.contains(&format!("entering {state} state"))
    })
}

/// `ip -o addr show dev IFACE` in `ns`.
fn addrs(ns: &Netns, iface: &str) -> String {
    ns.ip(["-o", "addr", "show", "dev", iface]).unwrap()
}

fn has(ns: &Netns, iface: &str, cidr: &str) -> bool {
    addrs(ns, iface).contains(&format!("inet {cidr} "))
}

/// VI_EXT (eth0, VRID 51) and VI_INT (eth1, VRID 52) at `priority`, in
/// `[vrrp_sync_group.VG_1]`, whose table ends with `group_extra`.
fn group_tables(priority: u8, group_extra: &str) -> String {
    let mut text = instance("VI_EXT", "eth0", 51, priority, "[\"192.0.2.200/24\"]", "");
    text += &instance(
        "VI_INT",
        "eth1",
        52,
        priority,
        "[\"198.51.100.200/24\"]",
        "",
    );
    text + "[vrrp_sync_group.VG_1]\ngroup = [\"VI_EXT\", \"VI_INT\"]\n" + group_extra
}

/// The group's VIPs: VI_EXT's on eth0, VI_INT's on eth1.
const GROUP_VIPS: [(&str, &str); 2] = [("eth0", "192.0.2.200/24"), ("eth1", "198.51.100.200/24")];

/// Asserts that `ns` holds both group VIPs (`held`) or neither.
#[track_caller]
fn assert_group_vips(ns: &Netns, held: bool) {
    for (iface, cidr) in GROUP_VIPS {
        assert_eq!(
            has(ns, iface, cidr),
            held,
            "{} should {}hold {cidr} on {iface}:\n{}",
            ns.name(),
            if held { "" } else { "not " },
            addrs(ns, iface)
        );
    }
}

/// A sync group across eth0 and eth1: when the master's eth1 goes down, its eth1
/// instance enters FAULT and takes the eth0 instance with it, so the other node holds
/// both VIPs (an instance outside the group stays where it is); when eth1 returns,
/// both come back together. The group's notify command sees each group state.
#[test]
fn a_sync_group_fails_over_together_across_interfaces() {
    let (a, b, _sw) = two_segments("g");
    let dir = tempfile::tempdir().unwrap();
    let notified = dir.path().join("group-notify");
    let config = |priority: u8, notify: bool| {
        let notify = if notify {
            format!(
                "notify = [\"/bin/sh\", \"-c\", \"echo \\\"$@\\\" >> {}\", \"sh\"]\n",
                notified.display()
            )
        } else {
            String::new()
        };
        let solo = instance("VI_SOLO", "eth0", 53, priority, "[\"192.0.2.201/24\"]", "");
        node_config(&(group_tables(priority, &notify) + &solo))
    };
    let mut node_a = spawn(&a, &config(200, true));
    wait_states(
        &mut node_a,
        &[
            ("VI_EXT", "MASTER"),
            ("VI_INT", "MASTER"),
            ("VI_SOLO", "MASTER"),
        ],
    );
    let mut node_b = spawn(&b, &config(100, false));
    wait_states(
        &mut node_b,
        &[
            ("VI_EXT", "BACKUP"),
            ("VI_INT", "BACKUP"),
            ("VI_SOLO", "BACKUP"),
        ],
    );
    assert_group_vips(&a, true);

    a.ip(["link", "set", "eth1", "down"]).unwrap();
    wait_states(&mut node_a, &[("VI_INT", "FAULT"), ("VI_EXT", "FAULT")]);
    wait_states(&mut node_b, &[("VI_EXT", "MASTER"), ("VI_INT", "MASTER")]);
    assert_group_vips(&b, true);
    // Also VI_EXT's, although a's eth0 is up: the group took it along.
    assert_group_vips(&a, false);
    assert!(
        has(&a, "eth0", "192.0.2.201/24"),
        "VI_SOLO is not in the group and stays MASTER on a:\n{}",
        addrs(&a, "eth0")
    );

    a.ip(["link", "set", "eth1", "up"]).unwrap();
    wait_states(&mut node_a, &[("VI_EXT", "MASTER"), ("VI_INT", "MASTER")]);
    wait_states(&mut node_b, &[("VI_EXT", "BACKUP"), ("VI_INT", "BACKUP")]);
    assert_group_vips(&a, true);
    assert_group_vips(&b, false);
    let log_b = node_b.stop().unwrap();
    assert!(
        !entered(&log_b, "VI_SOLO", "MASTER"),
        "VI_SOLO never moved to b:\n{log_b}"
    );
    node_a.stop().unwrap();

    let calls = std::fs::read_to_string(&notified).unwrap_or_default();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls,
        [
            "GROUP VG_1 BACKUP 0",
            "GROUP VG_1 MASTER 0",
            "GROUP VG_1 FAULT 0",
            "GROUP VG_1 BACKUP 0",
            "GROUP VG_1 MASTER 0",
            "GROUP VG_1 STOP 0"
        ],
        "the group's notify command, once per group state"
    );
}

/// A tracked interface with a negative weight lowers the priority while it is down
/// (here below the peer's, which then takes over: BACKUP, not FAULT), and restores it
/// when it returns (preemption back). A VIP with its own `dev`, `scope` and `label` is
/// added there as configured.
#[test]
fn a_tracked_interface_weight_hands_over_and_vips_take_dev_and_scope() {
    let (a, b, _sw) = two_segments("t");
    // A device of its own for one VIP (this kernel has no dummy module: a veth pair).
    a.ip([
        "link", "add", "vip0", "type", "veth", "peer", "name", "vip0p",
    ])
    .unwrap();
    a.ip(["link", "set", "vip0p", "up"]).unwrap();
    a.ip(["link", "set", "vip0", "up"]).unwrap();
    let vips_a = "[\"192.0.2.210/24\", \"203.0.113.10/32 dev vip0 scope host label vip0:vip\"]";
    let mut node_a = spawn(
        &a,
        &node_config(&instance(
            "VI_1",
            "eth0",
            61,
            200,
            vips_a,
            "track_interfaces = [{ name = \"eth1\", weight = -150 }]",
        )),
    );
    wait_state(&mut node_a, "VI_1", "MASTER");
    let dummy = addrs(&a, "vip0");
    // `dynamic`: the VIP's lifetime (renewed while MASTER, gone after a kill -9).
    assert!(
        dummy.contains("inet 203.0.113.10/32 scope host dynamic vip0:vip"),
        "the VIP is on vip0 with scope host and its label:\n{dummy}"
    );
    assert!(has(&a, "eth0", "192.0.2.210/24"));
    let mut node_b = spawn(
        &b,
        &node_config(&instance(
            "VI_1",
            "eth0",
            61,
            100,
            "[\"192.0.2.210/24\", \"203.0.113.10/32\"]",
            "",
        )),
    );
    wait_state(&mut node_b, "VI_1", "BACKUP");

    a.ip(["link", "set", "eth1", "down"]).unwrap();
    let line = node_a
        .wait_for_line("vrrp tracking changed", CHANGE)
        .unwrap();
    assert!(
        line.contains("adjust=-150") && line.contains("fault=false") && line.contains("eth1"),
        "{line}"
    );
    wait_state(&mut node_b, "VI_1", "MASTER");
    wait_state(&mut node_a, "VI_1", "BACKUP");
    assert!(
        !addrs(&a, "vip0").contains("203.0.113.10"),
        "the VIP left vip0 with MASTER:\n{}",
        addrs(&a, "vip0")
    );

    a.ip(["link", "set", "eth1", "up"]).unwrap();
    wait_state(&mut node_a, "VI_1", "MASTER");
    wait_state(&mut node_b, "VI_1", "BACKUP");
    let log_a = node_a.stop().unwrap();
    assert!(
        !entered(&log_a, "VI_1", "FAULT"),
        "a weight is not a fault:\n{log_a}"
    );
    node_b.stop().unwrap();
}

/// keepalived on `ns` with the same two instances in a `vrrp_sync_group VG_1`.
fn keepalived_group(ns: &Netns, dir: &std::path::Path, run: u32, priority: u8) -> Keepalived {
    let instance = |name: &str, iface: &str, vrid: u8, vip: &str| {
        format!(
            "vrrp_instance {name} {{\n    state BACKUP\n    interface {iface}\n    \
             virtual_router_id {vrid}\n    priority {priority}\n    advert_int 0.1\n    \
             version 3\n    virtual_ipaddress {{\n        {vip}\n    }}\n}}\n"
        )
    };
    let text = format!(
        "global_defs {{\n    router_id ka_peer\n}}\n\
         vrrp_sync_group VG_1 {{\n    group {{\n        VI_EXT\n        VI_INT\n    }}\n}}\n{}{}",
        instance("VI_EXT", "eth0", 51, "192.0.2.200/24"),
        instance("VI_INT", "eth1", 52, "198.51.100.200/24"),
    );
    Keepalived::start_config(ns, dir, run, &text).unwrap()
}

/// The same sync group on xdp-lb and on real keepalived, sharing both VRIDs. Either
/// side, when MASTER, hands the whole group over when its eth1 goes down, and the
/// other side takes both VIPs together.
#[test]
fn a_sync_group_shared_with_keepalived_moves_together_both_ways() {
    let (a, b, _sw) = two_segments("k");
    let dir = tempfile::tempdir().unwrap();
    let group_config = |priority: u8| node_config(&group_tables(priority, ""));
    fn both(state: &str) -> [(&'static str, &str); 2] {
        [("VI_EXT", state), ("VI_INT", state)]
    }
    let ka_both = |state: &str| {
        [
            format!("(VI_EXT) Entering {state} STATE"),
            format!("(VI_INT) Entering {state} STATE"),
        ]
    };
    let wait_ka = |ka: &Keepalived, state: &str| {
        let lines = ka_both(state);
        let needles: Vec<&str> = lines.iter().map(String::as_str).collect();
        ka.wait_lines(&needles, CHANGE).unwrap();
    };

    // xdp-lb MASTER (200), keepalived BACKUP (100); xdp-lb's eth1 fails.
    let mut ours = spawn(&a, &group_config(200));
    wait_states(&mut ours, &both("MASTER"));
    let keepalived = keepalived_group(&b, dir.path(), 0, 100);
    wait_ka(&keepalived, "BACKUP");
    a.ip(["link", "set", "eth1", "down"]).unwrap();
    wait_states(&mut ours, &both("FAULT"));
    wait_ka(&keepalived, "MASTER");
    assert_group_vips(&b, true);
    assert_group_vips(&a, false);
    a.ip(["link", "set", "eth1", "up"]).unwrap();
    wait_states(&mut ours, &both("MASTER"));
    wait_ka(&keepalived, "BACKUP");
    ours.stop().unwrap();
    wait_ka(&keepalived, "MASTER");

    // Roles swapped: keepalived MASTER (100), xdp-lb BACKUP (50); keepalived's eth1
    // fails, its group goes to FAULT, and xdp-lb takes both VIPs.
    let mut ours = spawn(&a, &group_config(50));
    wait_states(&mut ours, &both("BACKUP"));
    b.ip(["link", "set", "eth1", "down"]).unwrap();
    keepalived
        .wait_line("(VI_INT) Entering FAULT STATE", CHANGE)
        .unwrap();
    wait_states(&mut ours, &both("MASTER"));
    assert_group_vips(&a, true);
    // keepalived's group released VI_EXT too, although its eth0 is up.
    assert_group_vips(&b, false);
    b.ip(["link", "set", "eth1", "up"]).unwrap();
    wait_ka(&keepalived, "MASTER");
    wait_states(&mut ours, &both("BACKUP"));
    let log = ours.stop().unwrap();
    assert!(
        !log.contains("split brain") && !log.contains("vrid clash"),
        "no diagnostics between matching configurations:\n{log}"
    );
}
