//! The daemon with a VRRP instance: services on the instance's VIP are forwarded by
//! XDP only once this node is MASTER, the VIP is added by VRRP (not by hand), and a
//! stop hands the VIP back (priority 0) and removes it. The status API shows the same:
//! the instance's state and the exact flow counts.
//!
//! The real binary as MASTER and real keepalived as BACKUP on one VRID, measured by a
//! client probing the VIP: `kill -9` of the daemon (keepalived waits out its
//! master-down interval) and SIGTERM (priority 0: keepalived waits only its skew time;
//! the daemon removes its VIP and exits 0), with every notify command configured.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use xdp_lb_lab::{
    Daemon, DrLab, DrLabOptions, Handover, KaConf, KeepAlive, Keepalived, Netns, Probe, ProbeLab,
    Responder, http_get_new_connections,
    probe::{count_from, timeline},
};
use xdp_lb_tests::{IO_TIMEOUT, assert_split, config, dr_lab, start, vip};

/// A DR lab with HTTP real servers whose LB does not hold the VIP: VRRP adds it.
fn vrrp_lab(backends: &[&str]) -> DrLab {
    let mut lab = dr_lab(DrLabOptions::one_arm(backends));
    lab.start_http_backends(80).unwrap();
    lab.lb
        .ip(["addr", "del", &format!("{}/32", DrLab::VIP), "dev", "eth0"])
        .unwrap();
    lab
}

#[test]
fn services_follow_the_vrrp_state_of_their_vip() {
    let lab = vrrp_lab(&["b1", "b2"]);
    let text = format!(
        "[global]\napi = \"127.0.0.1:9180\"\n{}\n[vrrp.VI_1]\ninterface = \"eth0\"\n\
         virtual_router_id = 51\nversion = 3\nadvert_interval = \"100ms\"\n\
         virtual_ipaddresses = [\"{}/32\"]\n",
        config(&lab, &[(80, "tcp", &[1, 1])]),
        DrLab::VIP
    );
    let mut daemon = start(&lab.lb, &text);
    // Alone on the segment, it becomes MASTER after the master-down interval.
    let line = daemon
        .wait_for_line("data plane follows vrrp", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("forwarding=true"), "{line}");
    let addrs = lab.lb.ip(["addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        addrs.contains(&format!("inet {}/32", DrLab::VIP)),
        "VRRP added the VIP:\n{addrs}"
    );
    let tally = http_get_new_connections(&lab.client, vip(80), 40, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 40, 5.0);

    // The status API, from inside the LB's namespace.
    // (body, status code)
    let get = |path: &str| {
        let out = lab
            .lb
            .sh(&format!(
                "curl -sS -w '\\n%{{http_code}}' http://127.0.0.1:9180{path}"
            ))
            .unwrap();
        let (body, code) = out
            .rsplit_once('\n')
            .expect("curl prints the status code last");
        (body.to_string(), code.to_string())
    };
    let (metrics, code) = get("/metrics");
    assert_eq!(code, "200");
    let service = "service=\"192.0.2.100:80/tcp\"";
    for line in [
        format!("xdp_lb_service_new_flows_total{{{service}}} 40"),
        format!("xdp_lb_service_active{{{service}}} 1"),
        "xdp_lb_vrrp_state{instance=\"VI_1\",state=\"MASTER\"} 1".to_string(),
        "xdp_lb_vrrp_state{instance=\"VI_1\",state=\"BACKUP\"} 0".to_string(),
        "xdp_lb_vrrp_dropped_total{instance=\"VI_1\",reason=\"bad_ttl\"} 0".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in /metrics:\n{metrics}"
        );
    }
    // The classic text format for curl; OpenMetrics (with its # EOF) when asked for.
    assert!(!metrics.contains("# EOF"), "{metrics}");
    assert!(
        metrics.contains("# TYPE xdp_lb_service_new_flows_total counter"),
        "{metrics}"
    );
    let openmetrics = lab
        .lb
        .sh("curl -sS -H 'Accept: application/openmetrics-text; version=1.0.0' http://127.0.0.1:9180/metrics")
        .unwrap();
    assert!(openmetrics.trim_end().ends_with("# EOF"), "{openmetrics}");
    let per_server: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("xdp_lb_real_server_new_flows_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        per_server, 40,
        "new flows per real server add up:\n{metrics}"
    );

    let (json, code) = get("/status");
    assert_eq!(code, "200");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["vrrp"][0]["name"], "VI_1");
    assert_eq!(status["vrrp"][0]["state"], "MASTER");
    assert_eq!(status["vrrp"][0]["priority"], 100);
    assert_eq!(status["services"][0]["active"], true);
    assert_eq!(status["services"][0]["counters"]["new_flows"], 40);
    let servers = status["services"][0]["real_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert!(
        servers
            .iter()
            .all(|s| s["healthy"] == true && s["reachable"] == true)
    );
    assert_eq!(get("/nope").1, "404");
    let post = lab
        .lb
        .sh("curl -sS -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:9180/status")
        .unwrap();
    assert_eq!(post, "405");
    // `xdp-lb status` reads the same, for people.
    let shown = lab
        .lb
        .command(xdp_lb_tests::binary())
        .args(["status", "--api", "127.0.0.1:9180"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    for needle in [
        "  VI_1         eth0     vrid 51  MASTER  priority 100/100",
        "  192.0.2.100:80/tcp dr wrr  forwarding",
        "    -> 192.0.2.11:80          up     weight 1/1",
    ] {
        assert!(
            shown.contains(needle),
            "no {needle:?} in `xdp-lb status`:\n{shown}"
        );
    }

    let log = daemon.stop().unwrap();
    assert!(
        log.contains("forwarding=false"),
        "the service stopped with the instance:\n{log}"
    );
    let addrs = lab.lb.ip(["addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        !addrs.contains(&format!("inet {}/32", DrLab::VIP)),
        "VIP left behind:\n{addrs}"
    );
}

/// keepalived in its own namespace plugged into the lab's bridge (VRID 51, v3, 100 ms,
/// the lab's VIP).
struct KeepalivedPeer {
    keepalived: xdp_lb_lab::Keepalived,
    _dir: tempfile::TempDir,
    _ns: xdp_lb_lab::Netns,
}

impl KeepalivedPeer {
    fn start(lab: &DrLab, priority: u8) -> KeepalivedPeer {
        let ns = xdp_lb_lab::Netns::new("xlbka").unwrap();
        ns.ip([
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "pka",
            "netns",
            lab.switch.name(),
        ])
        .unwrap();
        lab.switch
            .ip(["link", "set", "pka", "master", "br0", "up"])
            .unwrap();
        ns.ip(["link", "set", "eth0", "up"]).unwrap();
        ns.ip(["addr", "add", "192.0.2.3/24", "dev", "eth0"])
            .unwrap();
        let mut conf = KaConf::new("eth0", 51, &format!("{}/32", DrLab::VIP));
        conf.priority = priority;
        conf.version = 3;
        conf.advert_int = "0.1".into();
        let dir = tempfile::tempdir().unwrap();
        let keepalived = xdp_lb_lab::Keepalived::start(&ns, dir.path(), 0, &conf).unwrap();
        KeepalivedPeer {
            keepalived,
            _dir: dir,
            _ns: ns,
        }
    }

    fn wait_for(&self, needle: &str, timeout: Duration) {
        self.keepalived.wait_line(needle, timeout).unwrap();
    }
}

fn expect_forwarding(daemon: &mut xdp_lb_lab::Daemon, forwarding: bool) {
    let line = daemon
        .wait_for_line("data plane follows vrrp", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains(&format!("forwarding={forwarding}")), "{line}");
}

/// Tracking took 50 off our priority (100 -> 50 < keepalived's 90): keepalived takes
/// the VIP and our service stops forwarding.
fn expect_handover_to_keepalived(daemon: &mut xdp_lb_lab::Daemon, keepalived: &KeepalivedPeer) {
    let line = daemon
        .wait_for_line("vrrp tracking changed", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("adjust=-50"), "{line}");
    keepalived.wait_for("Entering MASTER STATE", Duration::from_secs(10));
    expect_forwarding(daemon, false);
}

/// Tracking is back to 0: we preempt, keepalived goes back to BACKUP.
fn expect_takeover_from_keepalived(daemon: &mut xdp_lb_lab::Daemon, keepalived: &KeepalivedPeer) {
    expect_forwarding(daemon, true);
    keepalived.wait_for("Entering BACKUP STATE", Duration::from_secs(10));
}

#[test]
fn losing_a_tracked_quorum_hands_the_vip_to_keepalived_and_back() {
    let mut lab = vrrp_lab(&["b1", "b2"]);
    let check = "check = { type = \"http\", interval = \"200ms\", warmup = \"0s\", \
                 connect_timeout = \"300ms\", retry = 0 }";
    let text = format!(
        "{}\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\nversion = 3\n\
         advert_interval = \"100ms\"\nvirtual_ipaddresses = [\"{vip}/32\"]\n\
         track_virtual_servers = [{{ vip = \"{vip}\", port = 80, weight = -50 }}]\n",
        config(&lab, &[(80, "tcp", &[1, 1])])
            .replace("  weight = 1\n", &format!("  weight = 1\n  {check}\n")),
        vip = DrLab::VIP
    );
    let keepalived = KeepalivedPeer::start(&lab, 90);
    keepalived.wait_for("Entering BACKUP STATE", Duration::from_secs(10));
    let mut daemon = start(&lab.lb, &text);
    // Priority 100 beats keepalived's 90.
    expect_forwarding(&mut daemon, true);
    let tally = http_get_new_connections(&lab.client, vip(80), 20, IO_TIMEOUT).unwrap();
    assert_eq!(tally.values().sum::<usize>(), 20, "{tally:?}");

    // Both real servers fail: quorum lost, priority 100 - 50 = 50 < 90, keepalived preempts.
    lab.stop_backend_server("b1").unwrap();
    lab.stop_backend_server("b2").unwrap();
    daemon
        .wait_for_line("quorum lost", Duration::from_secs(10))
        .unwrap();
    expect_handover_to_keepalived(&mut daemon, &keepalived);

    // One comes back: quorum regained, priority 100 again, we preempt back.
    lab.start_http_backend("b1", 80).unwrap();
    daemon
        .wait_for_line("quorum gained", Duration::from_secs(10))
        .unwrap();
    expect_takeover_from_keepalived(&mut daemon, &keepalived);
    let tally = http_get_new_connections(&lab.client, vip(80), 10, IO_TIMEOUT).unwrap();
    assert_eq!(tally.get("b1"), Some(&10), "{tally:?}");
    daemon.stop().unwrap();
}

#[test]
fn a_failing_track_script_hands_the_vip_to_keepalived_and_back() {
    let lab = vrrp_lab(&["b1"]);
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, b"").unwrap();
    let text = format!(
        "{}\n[script.chk_flag]\ncommand = [\"/bin/sh\", \"-c\", \"test -e {}\"]\ninterval = \"100ms\"\n\
         weight = -50\n\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\n\
         version = 3\nadvert_interval = \"100ms\"\nvirtual_ipaddresses = [\"{}/32\"]\n\
         track_scripts = [\"chk_flag\"]\n",
        config(&lab, &[(80, "tcp", &[1])]),
        flag.display(),
        DrLab::VIP
    );
    let keepalived = KeepalivedPeer::start(&lab, 90);
    keepalived.wait_for("Entering BACKUP STATE", Duration::from_secs(10));
    let mut daemon = start(&lab.lb, &text);
    expect_forwarding(&mut daemon, true);

    // The script fails: priority 100 - 50 = 50 < 90, keepalived takes over.
    std::fs::remove_file(&flag).unwrap();
    daemon
        .wait_for_line("track script fails", Duration::from_secs(10))
        .unwrap();
    expect_handover_to_keepalived(&mut daemon, &keepalived);

    // It succeeds again: we preempt back.
    std::fs::write(&flag, b"").unwrap();
    daemon
        .wait_for_line("track script succeeds again", Duration::from_secs(10))
        .unwrap();
    expect_takeover_from_keepalived(&mut daemon, &keepalived);
    daemon.stop().unwrap();
}

/// The maintenance move keepalived users make: lower the MASTER's priority in its
/// config and reload. The instance is reconfigured in place (no restart, no priority 0),
/// keepalived sees the lower priority in our adverts and preempts; reloading the old
/// priority takes the VIP back. A reload that changes a key that cannot apply in place
/// is refused and names it, and the instance carries on as it was.
#[test]
fn a_reload_lowering_the_priority_hands_the_vip_to_keepalived_and_back() {
    let lab = vrrp_lab(&["b1"]);
    let text = |priority: u8, extra: &str| {
        format!(
            "{}\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\n\
             version = 3\nadvert_interval = \"100ms\"\nvirtual_ipaddresses = [\"{}/32\"]\n{extra}",
            config(&lab, &[(80, "tcp", &[1])]),
            DrLab::VIP
        )
    };
    let keepalived = KeepalivedPeer::start(&lab, 90);
    keepalived.wait_for("Entering BACKUP STATE", Duration::from_secs(10));
    let mut daemon = start(&lab.lb, &text(100, ""));
    expect_forwarding(&mut daemon, true);

    // Reloads with `priority` and waits for the instance to take it, still in `state`.
    let reload_priority = |daemon: &mut xdp_lb_lab::Daemon, priority: u8, state: &str| {
        daemon.reload(&text(priority, "")).unwrap();
        let line = daemon
            .wait_for_line("vrrp instance reconfigured", Duration::from_secs(10))
            .unwrap();
        assert!(
            line.contains(&format!("priority={priority}"))
                && line.contains(&format!("state={state}")),
            "{line}"
        );
    };
    reload_priority(&mut daemon, 50, "MASTER");
    keepalived.wait_for("Entering MASTER STATE", Duration::from_secs(10));
    expect_forwarding(&mut daemon, false);
    let holds_vip = || {
        lab.lb
            .ip(["-o", "addr", "show", "dev", "eth0"])
            .unwrap()
            .contains(&format!(" {}/", DrLab::VIP))
    };
    // Removed before the data plane was told, so already gone.
    assert!(!holds_vip(), "the VIP left with the MASTER role");

    // Not in place: refused, named, and nothing changes.
    daemon
        .reload(&text(100, "unicast_peers = [\"192.0.2.3\"]\n"))
        .unwrap();
    let line = daemon
        .wait_for_line("reload refused", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("[vrrp.VI_1] unicast_peers"), "{line}");

    reload_priority(&mut daemon, 100, "BACKUP");
    expect_takeover_from_keepalived(&mut daemon, &keepalived);
    assert!(holds_vip(), "the VIP is back");
    let tally = http_get_new_connections(&lab.client, vip(80), 10, IO_TIMEOUT).unwrap();
    assert_eq!(tally.get("b1"), Some(&10), "{tally:?}");
    daemon.stop().unwrap();
}

/// A reload that waits for a new real server's MAC does not hold VRRP back: keepalived
/// takes the VIP during the wait, our service stops forwarding then (not after the
/// wait), and the reloaded table keeps it stopped.
#[test]
fn a_takeover_during_a_reload_is_applied_at_once_and_kept() {
    let lab = vrrp_lab(&["b1", "b2"]);
    // b2 never answers ARP: a reload adding it waits out neighbour_timeout.
    lab.backends[1]
        .ns
        .ip(["link", "set", "eth0", "down"])
        .unwrap();
    let text = |weights: &[u32]| {
        format!(
            "[global]\napi = \"127.0.0.1:9181\"\n{}\n[vrrp.VI_1]\ninterface = \"eth0\"\n\
             virtual_router_id = 51\npriority = 100\nversion = 3\nadvert_interval = \"100ms\"\n\
             virtual_ipaddresses = [\"{}/32\"]\n",
            config(&lab, &[(80, "tcp", weights)]).replace("\"10s\"", "\"6s\""),
            DrLab::VIP
        )
    };
    let mut daemon = start(&lab.lb, &text(&[1]));
    expect_forwarding(&mut daemon, true);

    daemon.reload(&text(&[1, 1])).unwrap();
    let keepalived = KeepalivedPeer::start(&lab, 200);
    keepalived.wait_for("Entering MASTER STATE", Duration::from_secs(10));
    // Both lines would come, in the other order, if the wait held the loop.
    expect_forwarding(&mut daemon, false);
    let line = daemon
        .wait_for_line("configuration reloaded", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("1 new"), "{line}");
    let status = lab.lb.sh("curl -sS http://127.0.0.1:9181/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["vrrp"][0]["state"], "BACKUP");
    assert_eq!(
        status["services"][0]["active"], false,
        "the reloaded table follows the takeover: {status}"
    );
    daemon.stop().unwrap();
}

/// Two LBs share the VIP over VRRP with `scheduler = "maglev"`: both compute the same
/// table (the backup lists the real servers in another order), so when the MASTER's
/// host dies (daemon killed, link down) in the middle of a keep-alive connection, the
/// backup sends the connection's next packets to the same real server and the
/// connection carries on. (With wrr the backup would pick anew, from its own cursor.)
#[test]
fn a_connection_survives_a_failover_between_lbs_with_maglev() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]).with_standby());
    lab.start_http_backends(80).unwrap();
    let text = |priority: u8, order: [usize; 3]| {
        let mut text = format!(
            "[dataplane]\ninterfaces = [\"eth0\"]\n\n[[virtual_server]]\nvip = \"{}\"\n\
             port = 80\nscheduler = \"maglev\"\n",
            DrLab::VIP
        );
        for i in order {
            text += &format!(
                "  [[virtual_server.real_server]]\n  address = \"{}\"\n  weight = {}\n",
                lab.backends[i].addr,
                i + 1
            );
        }
        text + &format!(
            "[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
             priority = {priority}\nversion = 3\nadvert_interval = \"100ms\"\n\
             virtual_ipaddresses = [\"{}/32\"]\n",
            DrLab::VIP
        )
    };
    let mut lb1 = start(&lab.lb, &text(150, [0, 1, 2]));
    expect_forwarding(&mut lb1, true);
    let standby = lab.standby.as_ref().unwrap();
    let mut lb2 = start(standby, &text(100, [2, 0, 1]));
    lb2.wait_for_line("entering BACKUP state", Duration::from_secs(10))
        .unwrap();

    // Other flows first, so nothing lines up by chance between the two LBs.
    http_get_new_connections(&lab.client, vip(80), 5, IO_TIMEOUT).unwrap();
    let mut connection = KeepAlive::open(&lab.client, vip(80), IO_TIMEOUT).unwrap();
    let server = connection.get().unwrap();
    for _ in 0..3 {
        assert_eq!(connection.get().unwrap(), server);
    }
    // lb1's host dies: no priority 0, and nothing reaches it any more.
    drop(lb1);
    lab.lb.ip(["link", "set", "eth0", "down"]).unwrap();
    expect_forwarding(&mut lb2, true);
    for i in 0..5 {
        let answer = connection
            .get()
            .unwrap_or_else(|e| panic!("request {i} after the failover: {e:#}"));
        assert_eq!(
            answer, server,
            "the connection moved to another real server"
        );
    }
    let log = lb2.stop().unwrap();
    let new_flows: u64 = log
        .lines()
        .find(|l| l.contains("service counters"))
        .and_then(|l| l.split("new_flows=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no service counters in lb2's log:\n{log}"));
    assert_eq!(
        new_flows, 1,
        "lb2 scheduled the connection as a new flow of its own"
    );
}

// ---------------------------------------------------------------------------------
// The real daemon as MASTER, real keepalived as BACKUP, measured by a client
// ---------------------------------------------------------------------------------

/// The probed VIP (on [`ProbeLab`]'s segment: the daemon in `a`, keepalived in `b`).
const PROBED_VIP: &str = "192.0.2.200";
const PROBED_VRID: u8 = 51;
/// The UDP port each node's responder answers on.
const PROBED_PORT: u16 = 7000;
/// How often the client probes the VIP.
const PROBE_EVERY: Duration = Duration::from_millis(10);
const XLB_PRIORITY: u8 = 200;
const KA_PRIORITY: u8 = 100;
/// Added to VRRP's timers in the upper bounds: the gratuitous ARP reaching the client,
/// the next probe, and scheduling on a loaded 2-core machine (as in failover_netns).
const MARGIN: Duration = Duration::from_millis(300);
/// Taken off the lower bound after a kill: the last advert before it may have been
/// sent a little late, or timers fire a little early.
const JITTER: Duration = Duration::from_millis(100);
/// How long after a handover the client must hear only the new node.
const SETTLE: Duration = Duration::from_millis(300);
/// What the client hears from each node.
const XLB: &str = "xdp-lb";
const KA: &str = "keepalived";

/// One VRRP setting both sides are configured with.
struct Setting {
    label: &'static str,
    version: u8,
    interval: Duration,
    /// The same interval as keepalived writes it.
    advert_int: &'static str,
    auth_pass: Option<&'static str>,
}

const V3_100MS: Setting = Setting {
    label: "v3 100 ms",
    version: 3,
    interval: Duration::from_millis(100),
    advert_int: "0.1",
    auth_pass: None,
};

const V2_1S_AUTH: Setting = Setting {
    label: "v2 1 s auth",
    version: 2,
    interval: Duration::from_secs(1),
    advert_int: "1",
    auth_pass: Some("s3cret"),
};

/// RFC 5798's skew time of a backup with `priority`: (256 - priority) / 256 x interval.
fn skew(interval: Duration, priority: u8) -> Duration {
    interval.mul_f64(f64::from(256 - u32::from(priority)) / 256.0)
}

/// RFC 5798's master-down interval of a backup with `priority`: 3 x interval + skew.
fn master_down(interval: Duration, priority: u8) -> Duration {
    interval * 3 + skew(interval, priority)
}

fn has_vip(ns: &Netns) -> bool {
    ns.ip(["-o", "addr", "show", "dev", "eth0"])
        .unwrap()
        .contains(&format!(" {PROBED_VIP}/"))
}

/// Polls `ip addr` until the VIP is (or is not) on `ns`'s eth0.
fn wait_vip(ns: &Netns, present: bool, within: Duration) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if has_vip(ns) == present {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "expected {PROBED_VIP} {} on eth0 in {} within {within:?}; ip addr shows:\n{}",
        if present { "present" } else { "absent" },
        ns.name(),
        ns.ip(["addr", "show", "dev", "eth0"]).unwrap_or_default()
    );
}

/// The daemon's configuration: one VRRP instance `VI_1` on the probed VIP, nothing to
/// forward (the XDP program passes the probe to the kernel), and every notify command,
/// each appending its own line to `notified`.
fn daemon_config(setting: &Setting, notified: &Path) -> String {
    let file = notified.display();
    let append = |word: &str| format!("[\"/bin/sh\", \"-c\", \"echo {word} >> '{file}'\"]");
    let mut text = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\nmax_flows = 1024\n\n\
         [vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = {PROBED_VRID}\n\
         priority = {XLB_PRIORITY}\nversion = {}\nadvert_interval = \"{}ms\"\n\
         virtual_ipaddresses = [\"{PROBED_VIP}/24\"]\n\
         notify_master = {}\nnotify_backup = {}\nnotify_fault = {}\nnotify_stop = {}\n\
         notify = [\"/bin/sh\", \"-c\", \"echo generic $* >> '{file}'\", \"sh\"]\n",
        setting.version,
        setting.interval.as_millis(),
        append("master"),
        append("backup"),
        append("fault"),
        append("stop"),
    );
    if let Some(pass) = setting.auth_pass {
        text += &format!("auth_pass = \"{pass}\"\n");
    }
    text
}

/// The lines the notify commands of [`daemon_config`] write for `states` in order: the
/// state's own command, then the generic one with keepalived's arguments.
fn notify_lines(states: &[&str]) -> Vec<String> {
    states
        .iter()
        .flat_map(|state| {
            [
                state.to_lowercase(),
                format!("generic INSTANCE VI_1 {state} {XLB_PRIORITY}"),
            ]
        })
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls the notify file until it has as many lines as `expected` (or `within` runs
/// out), then asserts they are exactly those.
fn expect_notified(what: &str, path: &Path, expected: &[String], within: Duration) {
    let until = Instant::now() + within;
    let mut lines = read_lines(path);
    while lines.len() < expected.len() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        lines = read_lines(path);
    }
    assert_eq!(
        lines, expected,
        "{what}: the notify commands' lines (waited up to {within:?})"
    );
}

/// The real daemon (priority 200) MASTER in `a` and keepalived (priority 100) BACKUP
/// in `b`, each with a responder on the VIP, and the client hearing the daemon.
struct MasterAndBackup {
    lab: ProbeLab,
    daemon: Daemon,
    keepalived: Keepalived,
    probe: Probe,
    xlb_answers: Responder,
    _ka_answers: Responder,
    notified: PathBuf,
    _dir: tempfile::TempDir,
}

impl MasterAndBackup {
    fn start(tag: &str, setting: &Setting) -> MasterAndBackup {
        xdp_lb_lab::require_root().expect("these tests build network namespaces");
        let lab = ProbeLab::build(&format!("xlbvd{tag}")).expect("build the probe lab");
        let dir = tempfile::tempdir().unwrap();
        let notified = dir.path().join("notified");
        let interval = setting.interval;
        let target = SocketAddr::new(PROBED_VIP.parse::<IpAddr>().unwrap(), PROBED_PORT);
        let xlb_answers = Responder::start(&lab.a, target, XLB).unwrap();
        let ka_answers = Responder::start(&lab.b, target, KA).unwrap();

        // Alone on the segment, the daemon becomes MASTER after its master-down interval.
        let mut daemon = start(&lab.a, &daemon_config(setting, &notified));
        daemon
            .wait_for_line(
                "vrrp instance entering MASTER state",
                master_down(interval, XLB_PRIORITY) + Duration::from_secs(5),
            )
            .unwrap();
        wait_vip(&lab.a, true, Duration::from_secs(2));
        let probe = Probe::start(&lab.client, target, PROBE_EVERY).unwrap();
        probe
            .wait_from(XLB, Instant::now(), Duration::from_secs(5))
            .unwrap();

        let mut conf = KaConf::new("eth0", PROBED_VRID, &format!("{PROBED_VIP}/24"));
        conf.priority = KA_PRIORITY;
        conf.version = setting.version;
        conf.advert_int = setting.advert_int.into();
        conf.auth_pass = setting.auth_pass.map(Into::into);
        let keepalived = Keepalived::start(&lab.b, dir.path(), 0, &conf).unwrap();
        let backup = keepalived
            .wait_line("Entering BACKUP STATE", Duration::from_secs(10))
            .unwrap();
        // keepalived's master-down timer runs from its start: had it not heard (or not
        // accepted) our adverts, it would be MASTER well before the client's next
        // answer from us after this.
        let watched = master_down(interval, KA_PRIORITY) + MARGIN;
        let heard = probe
            .wait_from(XLB, backup + watched, watched + Duration::from_secs(2))
            .unwrap();
        assert!(
            !keepalived.saw("Entering MASTER STATE"),
            "keepalived must stay BACKUP under a higher-priority xdp-lb ({}); log:\n{}",
            setting.label,
            keepalived.log()
        );
        let replies = probe.replies();
        assert_eq!(
            count_from(&replies, KA, backup, heard),
            0,
            "keepalived answered while BACKUP ({}); replies (seconds from its BACKUP): {}",
            setting.label,
            timeline(&replies, backup)
        );
        assert!(!has_vip(&lab.b), "the BACKUP must not hold the VIP");
        // Started as BACKUP, then MASTER; nothing else yet.
        expect_notified(
            &format!("xdp-lb MASTER ({})", setting.label),
            &notified,
            &notify_lines(&["BACKUP", "MASTER"]),
            Duration::from_secs(5),
        );
        MasterAndBackup {
            lab,
            daemon,
            keepalived,
            probe,
            xlb_answers,
            _ka_answers: ka_answers,
            notified,
            _dir: dir,
        }
    }
}

fn lost(h: &Handover) -> String {
    h.lost.map_or("?".into(), |l| l.to_string())
}

/// `kill -9` of the real daemon (its host's responder stopped at the same instant, as
/// a host crash): no priority 0, so keepalived waits out its master-down interval and
/// takes the VIP; the client's outage is within it plus a margin, and no shorter than
/// two intervals. No STOP notify runs, and the killed daemon's VIP stays behind.
#[test]
fn kill_9_of_the_daemon_hands_the_vip_to_keepalived_after_master_down() {
    let setting = &V3_100MS;
    let interval = setting.interval;
    // Bound whole (not destructured), so the responders and the temp dir live on.
    let run = MasterAndBackup::start("k", setting);
    let (lab, probe, keepalived, notified) = (&run.lab, &run.probe, &run.keepalived, &run.notified);
    let (daemon, xlb_answers) = (run.daemon, run.xlb_answers);

    xlb_answers.stop().unwrap();
    let killed = Instant::now();
    daemon.signal(Signal::SIGKILL).unwrap();
    let (code, log) = daemon.wait_exit(Duration::from_secs(5)).unwrap();
    assert_eq!(
        code, None,
        "kill -9 ends the daemon by the signal, not an exit code; log:\n{log}"
    );
    let took_over = keepalived
        .wait_line(
            "Entering MASTER STATE",
            master_down(interval, KA_PRIORITY) + Duration::from_secs(3),
        )
        .unwrap();
    let gap = took_over.saturating_duration_since(killed);
    let down = master_down(interval, KA_PRIORITY);
    let h = probe
        .handover(XLB, KA, killed, Duration::from_secs(3))
        .unwrap();
    let trace = || timeline(&probe.replies(), killed);
    println!(
        "xdp-lb (real daemon) -> keepalived after kill -9 ({}): keepalived MASTER after \
         {gap:?}; client outage {:?}, keepalived answered {:?} after the kill, {} probes \
         lost (master-down interval {down:?})",
        setting.label,
        h.outage(),
        h.after_event(),
        lost(&h)
    );
    assert!(
        gap + interval + JITTER >= down && gap < down + MARGIN,
        "keepalived became MASTER {gap:?} after the kill; expected between {:?} (its \
         master-down interval minus one interval and {JITTER:?}) and {:?}",
        down - interval - JITTER,
        down + MARGIN
    );
    assert!(
        h.outage() < down + MARGIN,
        "the client had no answer for {:?}, more than the master-down interval {down:?} + \
         {MARGIN:?}; replies (seconds from the kill): {}",
        h.outage(),
        trace()
    );
    assert!(
        h.outage() > interval * 2,
        "the client had no answer for only {:?}, less than two intervals ({:?}): nothing \
         said goodbye, so keepalived cannot have taken over that soon; replies (seconds \
         from the kill): {}",
        h.outage(),
        interval * 2,
        trace()
    );
    assert!(
        h.after_event() + JITTER >= down - interval,
        "keepalived answered {:?} after the kill, before its master-down interval {down:?} \
         minus one interval could have run out; replies (seconds from the kill): {}",
        h.after_event(),
        trace()
    );
    assert!(
        !keepalived.saw("priority 0"),
        "nothing sent priority 0 on a kill -9; keepalived's log:\n{}",
        keepalived.log()
    );
    wait_vip(&lab.b, true, Duration::from_secs(2));
    // Nobody removed the killed daemon's VIP.
    assert!(has_vip(&lab.a), "a killed daemon cannot remove its VIP");
    // The process is gone, so nothing more can run: exactly BACKUP and MASTER.
    assert_eq!(
        read_lines(notified),
        notify_lines(&["BACKUP", "MASTER"]),
        "no STOP (or FAULT) notify after a kill -9"
    );
}

/// SIGTERM of the real daemon as MASTER: it sends priority 0, removes its VIP, runs
/// its STOP notify commands and exits 0; keepalived takes over after its skew time.
fn sigterm_hands_the_vip_to_keepalived(tag: &str, setting: &Setting) {
    // Bound whole (not destructured), so the responders and the temp dir live on.
    let run = MasterAndBackup::start(tag, setting);
    let (lab, probe, keepalived, notified) = (&run.lab, &run.probe, &run.keepalived, &run.notified);
    let daemon = run.daemon;

    let stopped = Instant::now();
    daemon.signal(Signal::SIGTERM).unwrap();
    let (code, log) = daemon.wait_exit(Duration::from_secs(30)).unwrap();
    let exited = stopped.elapsed();
    assert_eq!(code, Some(0), "exit status on SIGTERM; log:\n{log}");
    assert!(
        log.contains("vrrp instance entering STOP state"),
        "no STOP in the daemon's log:\n{log}"
    );
    // Checked at once: the daemon removes its VIP before it exits.
    assert!(
        !has_vip(&lab.a),
        "the daemon left its VIP behind:\n{}",
        lab.a.ip(["addr", "show", "dev", "eth0"]).unwrap()
    );
    // And it lets its notify commands finish before it exits.
    assert_eq!(
        read_lines(notified),
        notify_lines(&["BACKUP", "MASTER", "STOP"]),
        "the notify commands' lines once the daemon exited"
    );
    let skew = skew(setting.interval, KA_PRIORITY);
    keepalived
        .wait_line(
            "Backup received priority 0 advertisement",
            Duration::from_secs(3),
        )
        .unwrap();
    let took_over = keepalived
        .wait_line("Entering MASTER STATE", Duration::from_secs(3))
        .unwrap();
    let gap = took_over.saturating_duration_since(stopped);
    let h = probe
        .handover(XLB, KA, stopped, Duration::from_secs(3))
        .unwrap();
    println!(
        "xdp-lb (real daemon) -> keepalived after SIGTERM ({}): daemon exited after \
         {exited:?}, keepalived MASTER after {gap:?}; client outage {:?}, keepalived \
         answered {:?} after the signal, {} probes lost (skew time {skew:?})",
        setting.label,
        h.outage(),
        h.after_event(),
        lost(&h)
    );
    assert!(
        gap < skew + MARGIN,
        "keepalived became MASTER {gap:?} after the SIGTERM, more than its skew time \
         {skew:?} + {MARGIN:?}"
    );
    assert!(
        h.outage() < skew + MARGIN,
        "the client had no answer for {:?}, more than keepalived's skew time {skew:?} + \
         {MARGIN:?}; replies (seconds from the signal): {}",
        h.outage(),
        timeline(&probe.replies(), stopped)
    );
    // Once keepalived answers, the stopped node's responder (still running) must not:
    // the VIP is gone from its host.
    let until = h.first_new + SETTLE;
    let heard = probe
        .wait_from(KA, until, SETTLE + Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("the client lost keepalived again: {e:#}"));
    let replies = probe.replies();
    assert_eq!(
        h.answered_by_old_after(&replies, XLB, heard),
        0,
        "xdp-lb's host still answered after keepalived took over; replies (seconds from \
         the signal): {}",
        timeline(&replies, stopped)
    );
    wait_vip(&lab.b, true, Duration::from_secs(2));
}

#[test]
fn sigterm_of_the_daemon_hands_the_vip_to_keepalived_v3_100ms() {
    sigterm_hands_the_vip_to_keepalived("t3", &V3_100MS);
}

#[test]
fn sigterm_of_the_daemon_hands_the_vip_to_keepalived_v2_1s_auth() {
    sigterm_hands_the_vip_to_keepalived("t2", &V2_1S_AUTH);
}

/// kill -9 leaves the VIP on the dead daemon's interface (nothing ran to remove it);
/// the next start (systemd's Restart=on-failure, or by hand) removes it at once,
/// before the instance's first step, and adds it back only as MASTER.
#[test]
fn a_vip_left_by_kill_9_goes_away_by_itself() {
    let lab = vrrp_lab(&["b1", "b2"]);
    let text = format!(
        "{}\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\nversion = 3\n\
         advert_interval = \"1s\"\nvirtual_ipaddresses = [\"{}/32\"]\n",
        config(&lab, &[(80, "tcp", &[1, 1])]),
        DrLab::VIP
    );
    let shown = || lab.lb.ip(["addr", "show", "dev", "eth0"]).unwrap();
    let held = |addrs: &str| addrs.contains(&format!("inet {}/32", DrLab::VIP));
    let mut daemon = start(&lab.lb, &text);
    daemon
        .wait_for_line("entering MASTER state", Duration::from_secs(10))
        .unwrap();
    // Held for a few seconds at a time, renewed every second.
    let addrs = shown();
    assert!(held(&addrs), "{addrs}");
    let lifetime = addrs
        .lines()
        .skip_while(|l| !l.contains(&format!("inet {}/32", DrLab::VIP)))
        .nth(1)
        .unwrap_or_default();
    assert!(
        lifetime.contains("valid_lft") && !lifetime.contains("forever"),
        "the VIP has a lifetime: {addrs}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(held(&shown()), "renewed while MASTER");
    let killed = Instant::now();
    daemon.signal(Signal::SIGKILL).unwrap();
    daemon.wait_exit(Duration::from_secs(5)).unwrap();
    // No restart: the kernel drops it once the lease runs out.
    while held(&shown()) {
        assert!(
            killed.elapsed() < Duration::from_secs(8),
            "the VIP outlived its 5 s lease after kill -9"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "measured: the VIP left the interface {:?} after kill -9",
        killed.elapsed()
    );
}

/// A start within the lease of a VIP that kill -9 left resumes as MASTER without
/// letting go of it (a restart the peers need not notice); a VIP on the interface
/// without a lease (put there by hand, or left longer ago than any lease) is not
/// ours: the start removes it and adds it back only as MASTER.
#[test]
fn a_vip_left_by_kill_9_is_resumed_within_its_lease_and_a_static_one_removed() {
    let lab = vrrp_lab(&["b1", "b2"]);
    // 1 s adverts: a BACKUP start would wait 3.6 s, long enough to look.
    let text = format!(
        "{}\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\nversion = 3\n\
         advert_interval = \"1s\"\nvirtual_ipaddresses = [\"{}/32\"]\n",
        config(&lab, &[(80, "tcp", &[1, 1])]),
        DrLab::VIP
    );
    let vip_held = || {
        lab.lb
            .ip(["addr", "show", "dev", "eth0"])
            .unwrap()
            .contains(&format!("inet {}/32", DrLab::VIP))
    };
    let mut first = start(&lab.lb, &text);
    first
        .wait_for_line("entering MASTER state", Duration::from_secs(10))
        .unwrap();
    assert!(vip_held(), "MASTER holds the VIP");
    first.signal(Signal::SIGKILL).unwrap();
    first.wait_exit(Duration::from_secs(5)).unwrap();
    assert!(vip_held(), "kill -9 leaves the VIP behind, leased");

    let mut second = start(&lab.lb, &text);
    second
        .wait_for_line("resuming as MASTER", Duration::from_secs(5))
        .unwrap();
    second
        .wait_for_line("entering MASTER state", Duration::from_secs(5))
        .unwrap();
    assert!(vip_held());
    assert!(
        !second.log().contains("entering BACKUP state"),
        "{}",
        second.log()
    );
    second.stop().unwrap();
    assert!(!vip_held(), "a clean stop releases the VIP");

    // By hand, without a lifetime: stale, whatever put it there.
    lab.lb
        .ip(["addr", "add", &format!("{}/32", DrLab::VIP), "dev", "eth0"])
        .unwrap();
    let mut third = start(&lab.lb, &text);
    let line = third
        .wait_for_line("left by an earlier run", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains(&DrLab::VIP.to_string()), "{line}");
    third
        .wait_for_line("entering BACKUP state", Duration::from_secs(5))
        .unwrap();
    assert!(!vip_held(), "a BACKUP must not hold the VIP");
    third
        .wait_for_line("entering MASTER state", Duration::from_secs(10))
        .unwrap();
    assert!(vip_held(), "MASTER again: the VIP is back");
    third.stop().unwrap();
}
