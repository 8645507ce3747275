//! The daemon with a VRRP instance: services on the instance's VIP are forwarded by
//! XDP only once this node is MASTER, the VIP is added by VRRP (not by hand), and a
//! stop hands the VIP back (priority 0) and removes it. The status API shows the same:
//! the instance's state and the exact flow counts.
mod support;

use std::time::Duration;

use support::{IO_TIMEOUT, assert_split, config, dr_lab, start, vip};
use xdp_lb_lab::{DrLab, DrLabOptions, KaConf, KeepAlive, http_get_new_connections};

#[test]
fn services_follow_the_vrrp_state_of_their_vip() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    // VRRP owns the VIP now: take away the one the lab put on the LB.
    lab.lb
        .ip(["addr", "del", &format!("{}/32", DrLab::VIP), "dev", "eth0"])
        .unwrap();
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
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
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
        .command(env!("CARGO_BIN_EXE_xdp-lb"))
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
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    lab.lb
        .ip(["addr", "del", &format!("{}/32", DrLab::VIP), "dev", "eth0"])
        .unwrap();
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
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1"]));
    lab.start_http_backends(80).unwrap();
    lab.lb
        .ip(["addr", "del", &format!("{}/32", DrLab::VIP), "dev", "eth0"])
        .unwrap();
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
