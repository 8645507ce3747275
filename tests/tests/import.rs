//! `xdp-lb import-keepalived`: keepalived.conf → a valid xdp-lb configuration, with
//! every setting left out reported with its line. No privileges needed.

use std::net::IpAddr;
use std::time::Duration;
use xdp_lb_tests::xdp_lb;

use xdp_lb::config::{self, Forwarding, Protocol, Scheduler, TrackedInterface};
use xdp_lb::import::{ImportError, import};
use xdp_lb_checks::CheckSpec;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keepalived");

fn data(name: &str) -> String {
    format!("{DATA}/{name}")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_realistic_config_translates_to_a_valid_one() {
    let file = data("lb1.conf");
    let (code, stdout, stderr) = xdp_lb(&["import-keepalived", &file]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains("not translated"),
        "everything in lb1.conf has a translation:\n{stderr}"
    );
    assert!(
        stderr.contains("interfaces = [\"eth0\", \"eth1\"]"),
        "{stderr}"
    );
    let c = config::parse(&stdout, "out.toml").unwrap_or_else(|e| panic!("{e}\n{stdout}"));

    assert_eq!(c.global.router_id.as_deref(), Some("LB1"));
    assert_eq!(c.dataplane.interfaces, ["eth0", "eth1"]);

    // vrrp_script → [script.NAME]
    assert_eq!(c.scripts.len(), 2);
    let nginx = &c.scripts[0];
    assert_eq!(nginx.name, "chk_nginx");
    assert_eq!(nginx.command, ["/usr/bin/env", "true"]);
    assert_eq!((nginx.interval, nginx.timeout), (secs(2), secs(1)));
    assert_eq!((nginx.weight, nginx.rise, nginx.fall), (-20, 2, 3));
    let port = &c.scripts[1];
    // keepalived runs scripts without a shell: `&&` is an argument of /bin/true.
    assert_eq!(port.command, ["/bin/true", "127.0.0.1", "&&", "/bin/true"]);
    assert_eq!(port.interval, Duration::from_millis(500));

    // vrrp_instance → [vrrp.NAME]
    let ext = c.vrrp.iter().find(|v| v.name == "VI_EXT").unwrap();
    assert_eq!(ext.identity.interface, "eth0");
    assert_eq!(
        (
            ext.identity.vrid,
            ext.tunables.priority,
            ext.identity.version
        ),
        (51, 150, 2)
    );
    assert_eq!(ext.identity.advert_interval, secs(1));
    assert_eq!(ext.identity.auth_pass.as_deref(), Some("s3cret"));
    assert!(ext.tunables.preempt);
    assert_eq!(
        ext.identity.unicast_src_ip,
        Some("192.0.2.2".parse().unwrap())
    );
    assert_eq!(
        ext.identity.unicast_peers,
        [
            "192.0.2.3".parse::<IpAddr>().unwrap(),
            "192.0.2.4".parse().unwrap()
        ]
    );
    assert_eq!(ext.identity.virtual_ipaddresses.len(), 2);
    let vip = &ext.identity.virtual_ipaddresses[0];
    assert_eq!(vip.addr, "192.0.2.100".parse::<IpAddr>().unwrap());
    assert_eq!(vip.prefix, 24);
    assert_eq!(vip.device.as_deref(), Some("eth0"));
    assert_eq!(vip.label.as_deref(), Some("eth0:vip"));
    assert_eq!(ext.identity.track_scripts, ["chk_nginx", "chk_port"]);
    assert_eq!(
        ext.identity.track_interfaces,
        [
            TrackedInterface {
                name: "eth1".into(),
                weight: -30
            },
            TrackedInterface {
                name: "eth2".into(),
                weight: 0
            }
        ]
    );
    assert_eq!(
        ext.tunables.notify.master.as_deref(),
        Some(&["/usr/bin/env".to_owned(), "logger".into(), "master".into()][..])
    );
    assert_eq!(
        ext.tunables.notify.backup.as_deref(),
        Some(&["/bin/true".to_owned()][..])
    );
    // No shell: `>` and `/dev/null` are arguments, as keepalived passes them.
    assert_eq!(
        ext.tunables.notify.fault.as_deref(),
        Some(
            &[
                "/bin/true".to_owned(),
                "fault".into(),
                ">".into(),
                "/dev/null".into()
            ][..]
        )
    );
    assert_eq!(
        (
            ext.tunables.garp_master_delay,
            ext.tunables.garp_master_repeat
        ),
        (secs(2), 3)
    );
    // global_defs' vrrp_garp_* are every instance's defaults.
    assert_eq!(
        (
            ext.tunables.garp_interval,
            ext.tunables.garp_master_refresh_repeat
        ),
        (Duration::from_millis(10), 2)
    );
    // The lower-priority ones follow global_defs' vrrp_garp_master_* unless given
    // (vrrp_garp_lower_prio_repeat 1 comes before vrrp_garp_master_repeat 4 and wins);
    // an instance's own garp_master_* do not move them, as in keepalived.
    assert_eq!(
        (
            ext.tunables.garp_lower_prio_repeat,
            ext.tunables.garp_lower_prio_delay
        ),
        (1, secs(7))
    );
    assert!(ext.tunables.higher_prio_send_advert && !ext.tunables.lower_prio_no_advert);

    let int = c.vrrp.iter().find(|v| v.name == "VI_INT").unwrap();
    assert_eq!(
        (
            int.identity.vrid,
            int.tunables.priority,
            int.identity.version
        ),
        (52, 100, 3)
    );
    assert_eq!(int.identity.advert_interval, Duration::from_millis(100));
    assert!(!int.tunables.preempt);
    assert_eq!(int.identity.auth_pass, None);
    assert_eq!(
        int.identity.unicast_src_ip,
        Some("10.0.0.2".parse().unwrap())
    );
    assert!(
        int.identity.unicast_peers.is_empty(),
        "mcast_src_ip stays multicast"
    );
    assert_eq!(int.identity.virtual_ipaddresses[0].scope, Some(0));
    assert_eq!(
        (
            int.tunables.garp_master_repeat,
            int.tunables.garp_master_delay
        ),
        (4, secs(3))
    );
    assert_eq!(
        (
            int.tunables.garp_lower_prio_repeat,
            int.tunables.garp_lower_prio_delay
        ),
        (1, secs(3))
    );
    assert!(int.tunables.higher_prio_send_advert && int.tunables.lower_prio_no_advert);

    // vrrp_sync_group
    assert_eq!(c.sync_groups.len(), 1);
    assert_eq!(c.sync_groups[0].name, "VG_1");
    assert_eq!(c.sync_groups[0].members, ["VI_EXT", "VI_INT"]);
    assert!(c.sync_groups[0].notify.master.is_some());

    // virtual_server
    assert_eq!(c.virtual_servers.len(), 2);
    let web = &c.virtual_servers[0];
    assert_eq!(web.vip, "192.0.2.100".parse::<IpAddr>().unwrap());
    assert_eq!((web.port, web.protocol), (80, Protocol::Tcp));
    assert_eq!(web.scheduler, Scheduler::Wrr);
    assert_eq!(web.forwarding, Forwarding::Dr);
    assert_eq!(web.sorry_server, Some("192.0.2.250:8080".parse().unwrap()));
    assert_eq!((web.quorum.quorum, web.quorum.hysteresis), (2, 1));
    let weights: Vec<u32> = web.real_servers.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [1, 2, 3, 4]);
    assert!(web.real_servers[1].inhibit_on_failure);
    for rs in &web.real_servers[..3] {
        let check = rs.check.as_ref().unwrap();
        assert_eq!(check.spec, CheckSpec::Tcp);
        assert_eq!(check.params.interval, secs(3), "delay_loop");
    }
    let first = &web.real_servers[0].check.as_ref().unwrap().params;
    assert_eq!(first.connect_timeout, secs(2));
    assert_eq!(first.connect_port, Some(80));
    assert_eq!((first.retry, first.delay_before_retry), (2, secs(1)));
    assert_eq!(
        web.real_servers[2]
            .check
            .as_ref()
            .unwrap()
            .params
            .connect_timeout,
        Duration::from_millis(500)
    );
    let http_rs = &web.real_servers[3];
    assert_eq!(http_rs.port, 8080);
    let http_check = http_rs.check.as_ref().unwrap();
    let CheckSpec::Http(http) = &http_check.spec else {
        panic!("{:?}", http_check.spec);
    };
    assert_eq!(http.path, "/health");
    assert_eq!(http.status, [200]);
    assert!(http.digest.is_some());
    assert_eq!(
        (
            http_check.params.retry,
            http_check.params.delay_before_retry
        ),
        (3, secs(2))
    );

    let dns = &c.virtual_servers[1];
    assert_eq!((dns.port, dns.protocol), (53, Protocol::Udp));
    assert_eq!(dns.scheduler, Scheduler::Sh, "mh becomes sh");
    let CheckSpec::Misc(misc) = &dns.real_servers[0].check.as_ref().unwrap().spec else {
        panic!("a misc check");
    };
    assert_eq!(misc.argv, ["/bin/true", "192.0.2.21"]);
    assert!(misc.dynamic);
    assert_eq!(misc.timeout, Some(secs(5)));
}

#[test]
fn unsupported_settings_are_reported_with_their_lines() {
    let file = data("unsupported.conf");
    let (code, stdout, stderr) = xdp_lb(&["import-keepalived", &file]);
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        ":3: notification_email { ... }: not translated (",
        ":7: include /etc/keepalived/extra.conf: not translated (",
        ":14: 198.51.100.10/24 brd 198.51.100.255: not translated (",
        ":16: use_vmac: not translated (",
        ":17: frobnicate yes: not translated (",
        ":21: lb_algo lc: not translated (",
        ":23: persistence_timeout 300: not translated (",
        ":26: notify_up /bin/true: not translated (",
        ":33: virtual_server fwmark 1 { ... }: not translated (",
    ] {
        let line = format!("{file}{expected}");
        assert!(stderr.contains(&line), "missing {line:?} in:\n{stderr}");
    }
    assert_eq!(stderr.matches("not translated").count(), 9, "{stderr}");
    let c = config::parse(&stdout, "out.toml").unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert_eq!(c.virtual_servers.len(), 1, "the fwmark one is left out");
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.scheduler, Scheduler::Wrr, "lc falls back to wrr");
    assert_eq!(vs.forwarding, Forwarding::Nat);
    assert_eq!(c.vrrp[0].identity.virtual_ipaddresses.len(), 1);
}

#[test]
fn unbalanced_braces_are_a_syntax_error_with_the_line() {
    let file = data("unbalanced.conf");
    let (code, stdout, stderr) = xdp_lb(&["import-keepalived", &file]);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{file}:5: syntax error:")) && stderr.contains("never closed"),
        "{stderr}"
    );

    let err = import("global_defs {\n router_id a\n}\n}\n", "k.conf", &[]).unwrap_err();
    let ImportError::Syntax { error, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(error.line, 4);
    assert!(
        err.to_string().starts_with("k.conf:4: syntax error: `}`"),
        "{err}"
    );
    let err = import("vrrp_script x {\n script \"/bin/true\n}\n", "k.conf", &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("k.conf:2: syntax error: unterminated"),
        "{err}"
    );
}

#[test]
fn without_vrrp_an_interface_must_be_given() {
    let text = "virtual_server 192.0.2.1 80 {\n  real_server 192.0.2.11 80 {\n  }\n}\n";
    let err = import(text, "k.conf", &[]).unwrap_err();
    assert!(matches!(err, ImportError::NoInterface { .. }));
    assert!(err.to_string().contains("--interface"), "{err}");
    let out = import(text, "k.conf", &["ens3".into()]).unwrap();
    let c = out.validate().unwrap();
    assert_eq!(c.dataplane.interfaces, ["ens3"]);
    assert!(c.virtual_servers[0].real_servers[0].check.is_none());
}

#[test]
fn an_invalid_result_names_the_generated_line_and_its_origin() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        f.path(),
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n  192.0.2.9\n }\n notify_master \"/nonexistent/notify master\"\n}\n",
    )
    .unwrap();
    let path = f.path().to_str().unwrap();
    let (code, stdout, stderr) = xdp_lb(&["import-keepalived", path, "--interface", "ens3"]);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("the translated configuration is not valid: generated:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/notify does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:7 | notify_master")),
        "{stderr}"
    );
}

#[test]
fn partial_translations_are_reported_and_strings_are_escaped() {
    let text = r#"
global_defs {
  vrrp_version 3
}
vrrp_script chk {
  script /bin/true
  weight 10 reverse
}
vrrp_script chk_ok {
  script "/bin/true 'a\b' $HOME"
}
vrrp_instance "VI one" {
  interface eth0
  virtual_router_id 9
  advert_int 0.05
  authentication {
    auth_type PASS
    auth_pass toolongpassword
  }
  virtual_ipaddress { 2001:db8::1/64 label x
    192.0.2.1 }
  track_script {
    chk weight 5
    chk_ok
  }
  notify "/usr/bin/env printf %s\\n" root
}
"#;
    let out = import(text, "k.conf", &[]).unwrap();
    let report = out.report().join("\n");
    for expected in [
        "k.conf:7: weight 10 reverse: not translated (",
        "k.conf:18: auth_pass toolongpassword: not translated (",
        "k.conf:16: authentication { ... }: not translated (VRRPv3",
        "k.conf:20: 2001:db8::1/64 label x: not translated (",
        "k.conf:21: 192.0.2.1: not translated (mixes",
        "k.conf:23: chk: not translated (there is no (translated) vrrp_script",
        "k.conf:23: chk weight 5: not translated (",
        "k.conf:26: notify \"/usr/bin/env printf %s\\\\n\" root: not translated (",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    // Split as keepalived splits it: quotes group and go, no shell expands $HOME.
    assert_eq!(c.scripts[0].command, ["/bin/true", "a\\b", "$HOME"]);
    let vi = &c.vrrp[0];
    assert_eq!(vi.name, "VI one");
    assert_eq!(
        (vi.identity.version, vi.identity.auth_pass.as_deref()),
        (3, None)
    );
    assert_eq!(vi.identity.advert_interval, Duration::from_millis(50));
    assert_eq!(vi.identity.track_scripts, ["chk_ok"]);
    assert_eq!(
        vi.tunables.notify.generic.as_ref().unwrap(),
        &["/usr/bin/env", "printf", "%s\\\\n"]
    );
}

#[test]
fn old_unicast_checksum_is_carried_over() {
    let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n version 3\n unicast_peer {\n  192.0.2.3\n }\n old_unicast_checksum\n virtual_ipaddress {\n  192.0.2.9\n }\n}\n";
    let out = import(text, "k.conf", &[]).unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    assert!(
        out.validate().unwrap().vrrp[0]
            .identity
            .old_unicast_checksum
    );
    let never = text.replace("old_unicast_checksum", "old_unicast_checksum never");
    let out = import(&never, "k.conf", &[]).unwrap();
    assert_eq!(
        out.report(),
        [
            "k.conf:8: old_unicast_checksum never: not translated (xdp-lb accepts the old checksum form and answers in kind once a peer uses it; it cannot be refused)"
        ]
    );
    assert!(
        !out.validate().unwrap().vrrp[0]
            .identity
            .old_unicast_checksum
    );
}
