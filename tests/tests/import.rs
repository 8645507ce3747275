//! `xdp-lb import-keepalived`: keepalived.conf → a valid xdp-lb configuration, with
//! every setting left out reported with its line. No privileges needed.

use std::net::IpAddr;
use std::time::Duration;
use xdp_lb_tests::xdp_lb;

use xdp_lb::config::{self, Forwarding, Protocol, Scheduler, TrackedInterface};
use xdp_lb::import::{ImportError, Options, Outcome, import, import_file, import_text};
use xdp_lb_checks::{CheckSpec, DEFAULT_STATUS, Digest, HttpCheck, HttpUrl, TlsCheck, UdpCheck};

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
    assert_eq!(web.members, ["192.0.2.100:80".parse().unwrap()]);
    assert_eq!(web.protocol, Protocol::Tcp);
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
    assert_eq!(
        http.urls,
        [HttpUrl {
            path: "/health".into(),
            status: vec![200],
            digest: Some(Digest::Md5("d41d8cd98f00b204e9800998ecf8427e".into())),
            virtualhost: None,
        }]
    );
    assert_eq!(
        (
            http_check.params.retry,
            http_check.params.delay_before_retry
        ),
        (3, secs(2))
    );

    let dns = &c.virtual_servers[1];
    assert_eq!((dns.members[0].port(), dns.protocol), (53, Protocol::Udp));
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
        ":21: lb_algo lblc: translated (xdp-lb has no `lblc` scheduler: wrr is used instead",
        ":23: persistence_engine sip: not translated (",
        ":26: notify_up /bin/true: not translated (",
        ":33: virtual_server fwmark 1 { ... }: not translated (",
    ] {
        let line = format!("{file}{expected}");
        assert!(stderr.contains(&line), "missing {line:?} in:\n{stderr}");
    }
    assert_eq!(stderr.matches("not translated").count(), 8, "{stderr}");
    // Every note is also a comment in the output, beside what it concerns.
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(": not translated (") || l.contains(": translated ("))
        .collect();
    assert_eq!(notes.len(), 9, "{stderr}");
    for note in &notes {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start() == format!("# {note}")),
            "{note:?} is not a comment in:\n{stdout}"
        );
    }
    let above = |note: &str, key: &str| {
        let lines: Vec<&str> = stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains(note) && l.trim_start().starts_with('#'))
            .unwrap_or_else(|| panic!("no comment {note:?} in:\n{stdout}"));
        let next = lines[at + 1..]
            .iter()
            .find(|l| !l.trim_start().starts_with('#'))
            .unwrap();
        assert!(
            next.trim_start().starts_with(key),
            "the comment {note:?} is not just above `{key}` in:\n{stdout}"
        );
    };
    above(":21: lb_algo lblc:", "scheduler = \"wrr\"");
    above(":14: 198.51.100.10/24 brd", "virtual_ipaddresses = ");
    // Under the table it concerns when its own line has no key; at the top when nothing
    // of it is left.
    above(":26: notify_up", "address = \"198.51.100.21\"");
    above(":23: persistence_engine sip", "vip = ");
    let top = stdout
        .find("# keepalived settings with nothing in the tables below:")
        .unwrap();
    let first_table = stdout.find("\n[").unwrap();
    for note in [
        ":3: notification_email",
        ":7: include",
        ":33: virtual_server fwmark",
    ] {
        let at = stdout
            .find(note)
            .unwrap_or_else(|| panic!("{note} in:\n{stdout}"));
        assert!(
            top < at && at < first_table,
            "{note} is not at the top:\n{stdout}"
        );
    }
    let c = config::parse(&stdout, "out.toml").unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert_eq!(c.virtual_servers.len(), 1, "the fwmark one is left out");
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.scheduler, Scheduler::Wrr, "lblc falls back to wrr");
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
    // The import does not know an instance may be in one sync group only; validation does.
    std::fs::write(
        f.path(),
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n  192.0.2.9\n }\n}\n\
         vrrp_instance VI_2 {\n interface eth0\n virtual_router_id 8\n virtual_ipaddress {\n  192.0.2.10\n }\n}\n\
         vrrp_sync_group G1 {\n group {\n  VI_1\n  VI_2\n }\n}\n\
         vrrp_sync_group G2 {\n group {\n  VI_1\n  VI_2\n }\n}\n",
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
        stderr.contains("is already in [vrrp_sync_group.G1]"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:22 | group {{")),
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
        "k.conf:18: auth_pass toolongpassword: translated (truncated to its first 8 bytes, as keepalived truncates it: auth_pass = \"toolongp\")",
        "k.conf:16: authentication { ... }: not translated (VRRPv3",
        "k.conf:20: 2001:db8::1/64 label x: not translated (",
        "k.conf:21: 192.0.2.1: not translated (mixes",
        "k.conf:23: chk: not translated (there is no (translated) vrrp_script",
        "k.conf:23: chk weight 5: not translated (",
        "k.conf:26: notify \"/usr/bin/env printf %s\\\\n\" root: translated (",
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
fn a_bfd_instance_becomes_a_session_bfdd_runs_with_keepalived_defaults() {
    let text = r#"
bfd_instance to_b {
  neighbor_ip 192.0.2.2
  source_ip 192.0.2.1
  min_rx 20
  multiplier 3
  weight -20
}
bfd_instance defaults {
  neighbour_ip 192.0.2.3
  min_tx 3.5
}
bfd_instance nobody {
  min_rx 10
}
vrrp_instance VI_1 {
  interface eth0
  virtual_router_id 9
  virtual_ipaddress { 192.0.2.100 }
  track_bfd {
    to_b
    defaults weight 7
  }
}
"#;
    let out = import(text, "k.conf", &[]).unwrap();
    let report = out.report().join("\n");
    for expected in [
        "k.conf:11: min_tx 3.5: not translated (bfdd takes whole milliseconds",
        "k.conf:13: bfd_instance nobody { ... }: not translated (it has no `neighbor_ip`",
        "k.conf:22: defaults weight 7: not translated (xdp-lb's weight belongs to the session",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    let names: Vec<&str> = c.bfd.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["defaults", "to_b"]);
    let (defaults, to_b) = (&c.bfd[0], &c.bfd[1]);
    assert_eq!(
        (
            to_b.peer,
            to_b.local,
            to_b.min_rx,
            to_b.min_tx,
            to_b.multiplier
        ),
        (
            "192.0.2.2".parse::<IpAddr>().unwrap(),
            Some("192.0.2.1".parse::<IpAddr>().unwrap()),
            Duration::from_millis(20),
            Duration::from_millis(10),
            3
        )
    );
    // keepalived's defaults, not bfdd's.
    assert_eq!(
        (defaults.min_rx, defaults.min_tx, defaults.multiplier),
        (Duration::from_millis(10), Duration::from_millis(10), 5)
    );
    assert_eq!((to_b.weight, defaults.weight), (-20, 0));
    assert_eq!(c.vrrp[0].identity.track_bfd, ["to_b"]);
    assert!(c.vrrp[0].identity.peer_bfd.is_empty());
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

/// The one real server's check of the only virtual server.
fn only_check(c: &config::Config) -> &xdp_lb::config::Check {
    c.virtual_servers[0].real_servers[0].check.as_ref().unwrap()
}

fn vs(body: &str) -> String {
    format!(
        "virtual_server 192.0.2.1 53 {{\n protocol UDP\n real_server 192.0.2.11 53 {{\n{body}\n }}\n}}\n"
    )
}

#[test]
fn udp_check_translates_with_keepalived_meaning() {
    // No payload, no reply required: up unless an ICMP error comes back, as keepalived.
    let out = import(
        &vs("  UDP_CHECK {\n   connect_timeout 3\n   retry 2\n  }"),
        "k.conf",
        &["eth0".into()],
    )
    .unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    let check = only_check(&c);
    assert_eq!(
        check.spec,
        CheckSpec::Udp(UdpCheck {
            payload: vec![],
            expect: None
        })
    );
    assert_eq!(
        (check.params.connect_timeout, check.params.retry),
        (secs(3), 2)
    );

    // A hex payload, any reply required; lengths keepalived ignores without reply data.
    let text = vs(
        "  UDP_CHECK {\n   payload 48 45 4c4c4f\n   require_reply\n   max_reply_length 10\n   connect_port 5353\n  }",
    );
    let out = import(&text, "k.conf", &["eth0".into()]).unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    let c = out.validate().unwrap();
    assert_eq!(
        only_check(&c).spec,
        CheckSpec::Udp(UdpCheck {
            payload: b"HELLO".to_vec(),
            expect: Some(vec![])
        })
    );
    assert_eq!(only_check(&c).params.connect_port, Some(5353));

    // Reply data: translated as a prefix, with what differs said.
    let text =
        vs("  UDP_CHECK {\n   payload 00ff\n   require_reply 4f4bxx\n   min_reply_length 2\n  }");
    let out = import(&text, "k.conf", &["eth0".into()]).unwrap();
    let report = out.report().join("\n");
    for expected in [
        // Not UTF-8: xdp-lb's payload cannot carry it; nothing else is sent instead.
        "k.conf:5: payload 00ff: not translated (xdp-lb's payload is a text string",
        "k.conf:6: require_reply 4f4bxx: translated (the reply must start with these octets; keepalived also accepted a shorter reply",
        "only the 2 octet(s) before the first wildcard are compared",
        "xdp-lb does not fail a reply longer than max_reply_length (255 unless set)",
        "xdp-lb does not check min_reply_length",
        "k.conf:7: min_reply_length 2: not translated (",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let c = out.validate().unwrap();
    assert_eq!(
        only_check(&c).spec,
        CheckSpec::Udp(UdpCheck {
            payload: vec![],
            expect: Some(b"OK".to_vec())
        })
    );
}

fn http_vs(body: &str) -> String {
    format!(
        "virtual_server 192.0.2.1 80 {{\n protocol TCP\n virtualhost vs.example.test\n \
         real_server 192.0.2.11 80 {{\n{body}\n }}\n}}\n"
    )
}

#[test]
fn every_url_block_translates_with_its_status_digest_and_virtualhost() {
    let text = http_vs(
        "  SSL_GET {\n   url {\n    path /a\n    status_code 200-299 301\n    \
         digest 0123456789ABCDEF0123456789abcdef\n   }\n   url {\n    path /b\n    \
         virtualhost b.example.test\n   }\n   url {\n    path /c\n    status_code 204,404\n   }\n  }",
    );
    let out = import(&text, "k.conf", &["eth0".into()]).unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    // keepalived's own ranges stay ranges in the output.
    assert!(
        out.toml.contains("status = [\"200-299\", 301]"),
        "{}",
        out.toml
    );
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    let mut status: Vec<u16> = DEFAULT_STATUS.collect();
    status.push(301);
    assert_eq!(
        only_check(&c).spec,
        CheckSpec::Https {
            http: HttpCheck {
                urls: vec![
                    HttpUrl {
                        path: "/a".into(),
                        status,
                        digest: Some(Digest::Md5("0123456789abcdef0123456789abcdef".into())),
                        virtualhost: None,
                    },
                    // No status_code: any 2xx, keepalived's default and xdp-lb's.
                    HttpUrl {
                        virtualhost: Some("b.example.test".into()),
                        ..HttpUrl::new("/b")
                    },
                    HttpUrl {
                        status: vec![204, 404],
                        ..HttpUrl::new("/c")
                    },
                ],
                // The virtual server's virtualhost is every other url's.
                virtualhost: Some("vs.example.test".into()),
            },
            tls: TlsCheck::default(),
        }
    );
}

#[test]
fn one_url_is_the_short_form_and_the_checker_s_virtualhost_wins() {
    let text = http_vs(
        "  HTTP_GET {\n   virtualhost chk.example.test\n   url {\n    path /health\n   }\n  }",
    );
    let out = import(&text, "k.conf", &["eth0".into()]).unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    assert!(out.toml.contains("path = \"/health\""), "{}", out.toml);
    assert!(!out.toml.contains("urls"), "{}", out.toml);
    let c = out.validate().unwrap();
    assert_eq!(
        only_check(&c).spec,
        CheckSpec::Http(HttpCheck {
            virtualhost: Some("chk.example.test".into()),
            ..HttpCheck::new("/health")
        })
    );
}

#[test]
fn urls_keepalived_ignores_are_left_out_with_its_reason() {
    // A url without a path is ignored; a checker left with no url is ignored too.
    let text = http_vs(
        "  HTTP_GET {\n   url {\n    status_code 200\n   }\n   url {\n    path /ok\n   }\n  }",
    );
    let out = import(&text, "k.conf", &["eth0".into()]).unwrap();
    let report = out.report().join("\n");
    assert!(
        report.contains("k.conf:6: url { ... }: not translated (this url has no path, and keepalived ignores such a url"),
        "{report}"
    );
    let c = out.validate().unwrap();
    assert_eq!(
        only_check(&c).spec,
        CheckSpec::Http(HttpCheck {
            virtualhost: Some("vs.example.test".into()),
            ..HttpCheck::new("/ok")
        })
    );

    let text = http_vs("  HTTP_GET {\n   connect_timeout 3\n  }");
    let out = import(&text, "k.conf", &["eth0".into()]).unwrap();
    let report = out.report().join("\n");
    assert!(
        report.contains("k.conf:5: HTTP_GET { ... }: not translated (it has no url with a path, and keepalived ignores such a checker"),
        "{report}"
    );
    let c = out.validate().unwrap();
    assert!(c.virtual_servers[0].real_servers[0].check.is_none());
}

#[test]
fn smtp_check_is_a_tcp_check_with_a_note_on_the_missing_dialogue() {
    let text = "virtual_server 192.0.2.1 25 {\n real_server 192.0.2.11 25 {\n  SMTP_CHECK {\n   connect_timeout 10\n   helo_name foo.example\n   host {\n    connect_ip 192.0.2.12\n    connect_port 587\n    bindto 192.0.2.2\n   }\n   host {\n    connect_ip 192.0.2.13\n   }\n  }\n }\n real_server 192.0.2.21 25 {\n  SMTP_CHECK {\n  }\n }\n}\n";
    let out = import(text, "k.conf", &["eth0".into()]).unwrap();
    let report = out.report().join("\n");
    for expected in [
        "k.conf:3: SMTP_CHECK { ... }: translated (as a TCP connect check: xdp-lb has no SMTP dialogue, so the server's 220 greeting, the HELO/250 exchange and QUIT that keepalived checks are not performed",
        "k.conf:5: helo_name foo.example: not translated (",
        "k.conf:11: host { ... }: not translated (xdp-lb runs one check per real server: only the first host is checked",
        "k.conf:17: SMTP_CHECK { ... }: translated (as a TCP connect check",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    let first = c.virtual_servers[0].real_servers[0].check.as_ref().unwrap();
    assert_eq!(first.spec, CheckSpec::Tcp);
    assert_eq!(first.params.connect_ip, Some("192.0.2.12".parse().unwrap()));
    assert_eq!(first.params.connect_port, Some(587));
    assert_eq!(first.params.source, Some("192.0.2.2".parse().unwrap()));
    assert_eq!(first.params.connect_timeout, secs(10));
    // No host block: the real server's own address and port, as keepalived.
    let second = c.virtual_servers[0].real_servers[1].check.as_ref().unwrap();
    assert_eq!(second.spec, CheckSpec::Tcp);
    assert_eq!(
        (second.params.connect_ip, second.params.connect_port),
        (None, None)
    );
    assert_eq!(second.params.target(), "192.0.2.21:25".parse().unwrap());
    // The note is in the output too, above the check it concerns.
    let lines: Vec<&str> = out.toml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("# k.conf:3: SMTP_CHECK"))
        .unwrap();
    assert!(
        lines[at + 1..]
            .iter()
            .find(|l| !l.trim_start().starts_with('#'))
            .unwrap()
            .trim_start()
            .starts_with("check = { type = \"tcp\""),
        "{}",
        out.toml
    );
}

/// keepalived's `track_script { NAME weight N }` overrides the script's weight for
/// that instance: the instance tracks a copy of the script with that weight, and the
/// script's own weight stays for the others.
#[test]
fn a_per_instance_script_weight_keeps_keepalived_meaning() {
    let text = "vrrp_script chk {\n script /bin/true\n}\n\
                vrrp_instance A {\n interface eth0\n virtual_router_id 1\n \
                virtual_ipaddress { 192.0.2.1 }\n track_script {\n  chk weight 2\n }\n}\n\
                vrrp_instance B {\n interface eth0\n virtual_router_id 2\n \
                virtual_ipaddress { 192.0.2.2 }\n track_script {\n  chk\n  chk weight -20\n }\n}\n";
    let out = import(text, "k.conf", &[]).unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    let weight = |name: &str| c.scripts.iter().find(|s| s.name == name).map(|s| s.weight);
    assert_eq!(
        weight("chk"),
        Some(0),
        "keepalived's default: fault on failure"
    );
    assert_eq!(weight("chk_weight_2"), Some(2));
    assert_eq!(weight("chk_weight_minus_20"), Some(-20));
    assert_eq!(c.vrrp[0].identity.track_scripts, ["chk_weight_2"]);
    assert_eq!(c.vrrp[1].identity.track_scripts, ["chk_weight_minus_20"]);
}

#[test]
fn settings_keepalived_treats_as_off_are_not_noted() {
    let text = "virtual_server 192.0.2.1 80 {\n persistence_timeout 0\n persistence_granularity 255.255.255.0\n real_server 192.0.2.11 80 {\n }\n}\n";
    let out = import(text, "k.conf", &["eth0".into()]).unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    assert!(out.settings().iter().all(|s| s.outcome == Outcome::Carried));
    // On, both carry over with IPVS's meaning.
    let on = text.replace("persistence_timeout 0", "persistence_timeout 300");
    let out = import(&on, "k.conf", &["eth0".into()]).unwrap();
    assert!(out.notes.is_empty(), "{:?}", out.report());
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    let p = c.virtual_servers[0].persistence.expect("persistent");
    assert_eq!((p.timeout, p.prefix_len), (secs(300), 24));
}

#[test]
fn includes_are_followed_as_keepalived_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("conf.d/nested")).unwrap();
    std::fs::write(
        root.join("keepalived.conf"),
        "global_defs {\n router_id LB9\n}\ninclude conf.d/*.conf\ninclude {vips,missing}.inc\ninclude none/*.conf\n",
    )
    .unwrap();
    // Sorted: a.conf before b.conf; b.conf includes relative to its own directory.
    std::fs::write(
        root.join("conf.d/a.conf"),
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n use_vmac\n include ../vips.inc\n}\n",
    )
    .unwrap();
    std::fs::write(root.join("conf.d/b.conf"), "include nested/*.conf\n").unwrap();
    std::fs::write(
        root.join("conf.d/nested/vs.conf"),
        "virtual_server 192.0.2.9 80 {\n real_server 192.0.2.11 80 {\n  frobnicate\n }\n}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("vips.inc"),
        "virtual_ipaddress {\n 192.0.2.9\n}\n",
    )
    .unwrap();
    let main = root.join("keepalived.conf");
    let out = import_file(&main, &Options::default()).unwrap();
    let c = out
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    assert_eq!(c.global.router_id.as_deref(), Some("LB9"));
    assert_eq!(
        c.vrrp[0].identity.virtual_ipaddresses[0].addr,
        "192.0.2.9".parse::<IpAddr>().unwrap()
    );
    assert_eq!(c.virtual_servers.len(), 1);
    let report = out.report().join("\n");
    let a = root.join("conf.d/a.conf");
    let vs = root.join("conf.d/nested/vs.conf");
    for expected in [
        // Notes name the file they are in.
        format!("{}:4: use_vmac: not translated (", a.display()),
        format!("{}:3: frobnicate: not translated (", vs.display()),
        // A pattern (or brace alternative) matching nothing is keepalived's warning.
        format!(
            "{}:6: include none/*.conf: not translated (no file matches: keepalived logs \"No config files matched\"",
            main.display()
        ),
    ] {
        assert!(
            report.contains(&expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    // `{vips,missing}.inc` matched vips.inc: followed, so no note for it.
    assert!(!report.contains(":5: include"), "{report}");
    assert!(
        out.toml.contains(&format!("# {}:4: use_vmac", a.display())),
        "{}",
        out.toml
    );
    // A syntax error in an included file names that file and its line.
    std::fs::write(
        root.join("conf.d/b.conf"),
        "vrrp_script x {\n script \"/bin/true\n}\n",
    )
    .unwrap();
    let err = import_file(&main, &Options::default()).unwrap_err();
    let b = root.join("conf.d/b.conf");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2: syntax error: unterminated", b.display())),
        "{err}"
    );
    // An include cycle is reported, not followed forever.
    std::fs::write(root.join("conf.d/b.conf"), "include ../keepalived.conf\n").unwrap();
    let out = import_file(&main, &Options::default()).unwrap();
    assert!(
        out.report().join("\n").contains("an include cycle"),
        "{:?}",
        out.report()
    );
}

#[test]
fn conditional_lines_follow_the_config_id() {
    let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n@high priority 170\n@^high priority 85\n virtual_ipaddress {\n  192.0.2.9\n }\n}\n";
    let for_id = |id: Option<&str>| {
        let options = Options {
            interfaces: vec![],
            config_id: id.map(str::to_owned),
            ..Options::default()
        };
        import_text(text, "k.conf", &options).unwrap()
    };
    let high = for_id(Some("high"));
    assert!(high.notes.is_empty(), "{:?}", high.report());
    assert_eq!(high.validate().unwrap().vrrp[0].tunables.priority, 170);
    let low = for_id(Some("low"));
    assert_eq!(low.validate().unwrap().vrrp[0].tunables.priority, 85);
    let none = for_id(None);
    let report = none.report().join("\n");
    assert!(report.contains("k.conf:4: @high priority 170: not translated (keepalived applies this line only where its config id"), "{report}");
    assert!(
        report.contains("k.conf:5: @^high priority 85: not translated ("),
        "{report}"
    );
}

/// An `include` that matches a FIFO or a device is skipped as keepalived skips it,
/// without reading it (a FIFO would never end, /dev/zero neither).
#[test]
fn an_include_of_a_fifo_or_device_is_skipped_unread() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let main = dir.path().join("keepalived.conf");
    std::fs::write(
        &main,
        format!(
            "include {}\ninclude /dev/zero\nvirtual_server 192.0.2.1 80 {{\n real_server 192.0.2.11 80 {{\n }}\n}}\n",
            fifo.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = xdp_lb(&[
        "import-keepalived",
        main.to_str().unwrap(),
        "--interface",
        "eth0",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("keepalived skips"), "{stderr}");
    assert_eq!(
        stderr.matches("not a regular non-executable file").count(),
        2,
        "{stderr}"
    );
}

#[test]
fn least_connection_and_hashing_schedulers_keep_their_ipvs_meaning() {
    for (algo, want) in [
        ("sh", Scheduler::Sh),
        ("dh", Scheduler::Dh),
        ("lc", Scheduler::Lc),
        ("wlc", Scheduler::Wlc),
        ("sed", Scheduler::Sed),
        ("nq", Scheduler::Nq),
    ] {
        let text = format!(
            "virtual_server 192.0.2.1 80 {{\n lb_algo {algo}\n protocol TCP\n real_server 192.0.2.11 80 {{\n  weight 2\n }}\n}}\n"
        );
        let out = import(&text, "k.conf", &["eth0".into()]).unwrap();
        assert!(out.notes.is_empty(), "{algo}: {:?}", out.report());
        let c = out
            .validate()
            .unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
        assert_eq!(c.virtual_servers[0].scheduler, want, "{}", out.toml);
    }
}

// ----- server groups and fwmark -----

/// Options with the eth0 interface and `rules` as the `--fwmark-rules` files.
fn with_rules(rules: &[&tempfile::NamedTempFile]) -> Options {
    Options {
        interfaces: vec!["eth0".into()],
        fwmark_rules: rules.iter().map(|f| f.path().to_owned()).collect(),
        ..Options::default()
    }
}

fn rules_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

const GROUPS: &str = "\
virtual_server_group WEB {
    192.0.2.100 80
    192.0.2.100 443
    192.0.2.101-103 80
}
virtual_server_group DNS6 {
    2001:db8::53-54 53
}
virtual_server_group UNUSED {
    198.51.100.1 80
}
virtual_server group WEB {
    lb_algo wrr
    lb_kind DR
    persistence_timeout 300
    protocol TCP
    real_server 192.0.2.11 80 {
        TCP_CHECK {
            connect_timeout 3
        }
    }
    real_server 192.0.2.12 80 {
    }
}
virtual_server group DNS6 {
    protocol UDP
    real_server 2001:db8::11 53 {
    }
}
virtual_server group DNS6 {
    protocol TCP
    real_server 2001:db8::11 53 {
    }
}
";

#[test]
fn a_virtual_server_group_becomes_a_group_with_its_ranges() {
    let import = import_text(GROUPS, "k.conf", &with_rules(&[])).unwrap();
    assert!(import.notes.is_empty(), "{:?}", import.report());
    let c = import
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", import.toml));
    assert!(
        import.toml.contains(
            "members = [\"192.0.2.100:80\", \"192.0.2.100:443\", \"192.0.2.101-103:80\"]"
        ),
        "{}",
        import.toml
    );
    assert!(
        !import.toml.contains("UNUSED"),
        "an unused group is left out, as keepalived does"
    );
    let web = &c.virtual_servers[0];
    assert_eq!(web.name(), "group WEB/tcp");
    assert_eq!(web.members.len(), 5);
    assert_eq!(web.real_servers.len(), 2);
    assert!(web.persistence.is_some());
    // One group used with two protocols: a table for each use.
    let names: Vec<String> = c.virtual_servers[1..].iter().map(|v| v.name()).collect();
    assert_eq!(names, ["group DNS6/udp", "group DNS6_tcp/tcp"]);
    assert_eq!(
        c.virtual_servers[1].members,
        [
            "[2001:db8::53]:53".parse().unwrap(),
            "[2001:db8::54]:53".parse().unwrap()
        ]
    );
    // Every setting carried over.
    assert!(
        import
            .settings()
            .iter()
            .all(|s| s.outcome == Outcome::Carried),
        "{:?}",
        import.settings()
    );
}

#[test]
fn group_entries_that_cannot_be_translated_are_noted_one_by_one() {
    let text = "\
virtual_server_group G {
    192.0.2.100 80
    192.0.2.100-300 80
    2001:db8::1 80
    192.0.2.100 80
    fwmark 7
}
virtual_server group G {
    lb_kind NAT
    real_server 192.0.2.11 80 {
    }
}
virtual_server group MISSING {
    real_server 192.0.2.11 80 {
    }
}
";
    let import = import_text(text, "k.conf", &with_rules(&[])).unwrap();
    let report = import.report().join("\n");
    for line in [
        "k.conf:3: 192.0.2.100-300 80: not translated (the end of an IPv4 range is a last octet",
        "k.conf:4: 2001:db8::1 80: not translated (not in the address family of the group's first entry",
        "k.conf:5: 192.0.2.100 80: not translated (192.0.2.100:80 is already an entry of the group; left out)",
        "k.conf:6: fwmark 7: not translated (xdp-lb matches VIP:port pairs before netfilter, not firewall marks, and no rule given with `--fwmark-rules` sets mark 7: give the iptables-save or nft ruleset that sets it (`--fwmark-rules FILE`), or add the VIP:port pairs mark 7 selects to `members` of `[virtual_server_group.G]`",
        "k.conf:13: virtual_server group MISSING { ... }: not translated (there is no virtual_server_group MISSING",
    ] {
        assert!(report.contains(line), "no {line:?} in\n{report}");
    }
    let c = import.validate().unwrap();
    assert_eq!(
        c.virtual_servers[0].members,
        ["192.0.2.100:80".parse().unwrap()]
    );
}

#[test]
fn fwmark_services_translate_from_the_rules_that_set_the_marks() {
    let text = "\
virtual_server fwmark 1 {
    lb_kind DR
    persistence_timeout 600
    protocol TCP
    real_server 192.0.2.11 {
    }
}
virtual_server_group G {
    192.0.2.110 80
    fwmark 2
}
virtual_server group G {
    protocol UDP
    real_server 192.0.2.12 5000 {
    }
}
";
    let iptables = rules_file(
        "*mangle\n\
         -A PREROUTING -d 192.0.2.100/32 -p tcp -m tcp --dport 443 -j MARK --set-xmark 0x1/0xffffffff\n\
         -A PREROUTING -d 192.0.2.101/32 -p tcp -m tcp --dport 443 -j MARK --set-mark 1\n\
         COMMIT\n",
    );
    let nft = rules_file(
        "table ip mangle {\n chain prerouting {\n  ip daddr 192.0.2.120 udp dport 5000-5001 meta mark set 0x00000002\n }\n}\n",
    );
    let import = import_text(text, "k.conf", &with_rules(&[&iptables, &nft])).unwrap();
    assert!(import.notes.is_empty(), "{:?}", import.report());
    let c = import
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", import.toml));
    let marked = &c.virtual_servers[0];
    assert_eq!(marked.name(), "group fwmark_1/tcp");
    assert_eq!(
        marked.members,
        [
            "192.0.2.100:443".parse().unwrap(),
            "192.0.2.101:443".parse().unwrap()
        ]
    );
    assert_eq!(
        marked.real_servers[0].port, 443,
        "one port: IPVS keeps it, so does xdp-lb"
    );
    let group: Vec<String> = c.virtual_servers[1]
        .members
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        group,
        ["192.0.2.110:80", "192.0.2.120:5000", "192.0.2.120:5001"]
    );

    // Without the rules: refused, saying what to write instead.
    let import = import_text(text, "k.conf", &with_rules(&[])).unwrap();
    let report = import.report().join("\n");
    assert!(
        report.contains(
            "k.conf:1: virtual_server fwmark 1 { ... }: not translated (xdp-lb matches VIP:port \
             pairs before netfilter, not firewall marks, and no rule given with `--fwmark-rules` \
             sets mark 1: give the iptables-save or nft ruleset that sets it (`--fwmark-rules \
             FILE`), or write the VIP:port pairs it selects as `[virtual_server_group.fwmark_1] \
             members = [\"VIP:PORT\", ...]` and `group = \"fwmark_1\"` in place of `fwmark 1`"
        ),
        "{report}"
    );
    assert!(
        report.contains("k.conf:10: fwmark 2: not translated ("),
        "{report}"
    );
    // A rule matching more than a VIP and port: its mark is refused with the rule named.
    let source = rules_file(
        "-A PREROUTING -s 198.51.100.0/24 -d 192.0.2.100/32 -p tcp --dport 443 -j MARK --set-mark 1\n",
    );
    let import = import_text(text, "k.conf", &with_rules(&[&source])).unwrap();
    let report = import.report().join("\n");
    assert!(
        report.contains(":1: the rule matches on `-s`, more than a destination, protocol and port"),
        "{report}"
    );
    // Several ports and a real server without one (IPVS's "keep the port"): noted.
    let two = rules_file(
        "-A PREROUTING -d 192.0.2.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 1\n",
    );
    let import = import_text(text, "k.conf", &with_rules(&[&two])).unwrap();
    let report = import.report().join("\n");
    assert!(
        report.contains(
            "k.conf:5: real_server 192.0.2.11 { ... }: not translated (a real server without a \
             port keeps each connection's destination port in IPVS"
        ),
        "{report}"
    );
}

#[test]
fn keepalived_s_group_sample_imports_its_group_whole_given_the_mark_rules() {
    let sample = data("samples/keepalived.conf.virtual_server_group");
    let rules = rules_file(
        "*mangle\n\
         -A PREROUTING -d 10.0.0.3/32 -p tcp --dport 80 -j MARK --set-mark 1\n\
         -A PREROUTING -d 10.0.0.4/32 -p tcp --dport 443 -j MARK --set-mark 2\n\
         COMMIT\n",
    );
    let group_note = |import: &xdp_lb::import::Import| -> Vec<String> {
        import
            .settings()
            .into_iter()
            .filter(|s| (13..=21).contains(&s.line) || s.line == 22)
            .filter(|s| s.outcome != Outcome::Carried)
            .map(|s| format!("{}:{}", s.keyword, s.line))
            .collect()
    };
    let import = import_file(std::path::Path::new(&sample), &with_rules(&[&rules])).unwrap();
    assert!(group_note(&import).is_empty(), "{:?}", import.report());
    let c = import.validate().unwrap();
    let members: Vec<String> = c.virtual_servers[0]
        .members
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(members.len(), 2 + 1 + 8 + 2, "{members:?}");
    assert!(members.contains(&"10.0.0.4:443".to_owned()));
    // Without the rules, only its two fwmark entries are noted.
    let import = import_file(std::path::Path::new(&sample), &with_rules(&[])).unwrap();
    assert_eq!(group_note(&import), ["fwmark:18", "fwmark:19"]);
}

#[test]
fn lvs_sync_daemon_becomes_a_sync_section_with_keepalived_s_meaning() {
    let instance = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n priority 100\n virtual_ipaddress {\n  192.0.2.9\n }\n}\n";
    // keepalived 1.2.20 and later: in global_defs.
    let text = format!(
        "global_defs {{\n lvs_sync_daemon eth1 VI_1 id 3 port 8850 group 224.0.0.82\n}}\n{instance}"
    );
    let import = import_text(&text, "k.conf", &Options::default()).unwrap();
    let c = import.validate().unwrap();
    let sync = c.sync.expect("a [sync] table");
    assert_eq!(
        (sync.instance.as_str(), sync.interface.as_deref(), sync.port),
        ("VI_1", Some("eth1"), 8850)
    );
    assert_eq!(sync.group, Some("224.0.0.82".parse().unwrap()));
    assert!(matches!(sync.secret, config::SyncSecret::File(ref p) if p.ends_with("sync.key")));
    let report = import.report().join("\n");
    assert!(
        report.contains(
            "k.conf:2: lvs_sync_daemon eth1 VI_1 id 3 port 8850 group 224.0.0.82: translated"
        ),
        "{report}"
    );
    assert!(
        report.contains("/etc/xdp-lb/sync.key on every node"),
        "{report}"
    );
    assert!(report.contains("`id`"), "{report}");

    // Before 1.2.20: in the instance, keepalived's multicast group and port.
    let text = instance.replace(
        " interface eth0\n",
        " interface eth0\n lvs_sync_daemon_interface eth1\n",
    );
    let import = import_text(&text, "k.conf", &Options::default()).unwrap();
    let sync = import.validate().unwrap().sync.expect("a [sync] table");
    assert_eq!(
        (sync.instance.as_str(), sync.interface.as_deref(), sync.port),
        ("VI_1", Some("eth1"), 8848)
    );
    assert_eq!(sync.group, Some("224.0.0.81".parse().unwrap()));

    // Not keepalived's form: noted, no table.
    let text = format!("global_defs {{\n lvs_sync_daemon eth1\n}}\n{instance}");
    let import = import_text(&text, "k.conf", &Options::default()).unwrap();
    assert!(import.validate().unwrap().sync.is_none());
    assert!(
        import
            .report()
            .join("\n")
            .contains("not translated (expected `lvs_sync_daemon INTERFACE VRRP_INSTANCE")
    );
}

/// keepalived's IPv6 sample: its virtual server is NAT over IPv6 (NAT66), which xdp-lb
/// forwards, so it translates whole with its real server; only the SMTP dialogue,
/// which xdp-lb's TCP check does not hold, is noted.
#[test]
fn keepalived_s_ipv6_sample_translates_its_nat_virtual_server() {
    let sample = data("samples/keepalived.conf.IPv6");
    let import = import_file(std::path::Path::new(&sample), &with_rules(&[])).unwrap();
    let c = import
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", import.toml));
    assert_eq!(c.virtual_servers.len(), 1, "{}", import.toml);
    let vs = &c.virtual_servers[0];
    assert_eq!(
        vs.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        ["[ae00::1]:80"]
    );
    assert_eq!(vs.forwarding, Forwarding::Nat);
    assert_eq!(vs.scheduler, Scheduler::Rr);
    assert_eq!(
        vs.persistence.as_ref().map(|p| p.timeout),
        Some(secs(50)),
        "persistence_timeout 50"
    );
    let rs = &vs.real_servers[0];
    assert_eq!((rs.address, rs.port), ("ae00::10".parse().unwrap(), 25));
    let noted: Vec<String> = import
        .settings()
        .into_iter()
        .filter(|s| s.outcome != Outcome::Carried)
        .map(|s| format!("{}:{}", s.keyword, s.line))
        .collect();
    assert_eq!(
        noted,
        ["SMTP_CHECK:24", "helo_name:27"],
        "{:?}",
        import.report()
    );
}

/// IPVS tunnels across families, so keepalived accepts an IPv4 virtual server with an
/// IPv6 real server under `lb_kind TUN`: it translates; under NAT it is left out, saying
/// that only TUN crosses families.
#[test]
fn a_tun_virtual_server_keeps_its_real_servers_of_the_other_family() {
    let conf = |kind: &str| {
        format!(
            "virtual_server 192.0.2.100 80 {{\n lb_kind {kind}\n protocol TCP\n \
             real_server 2001:db8::11 80 {{\n  TCP_CHECK {{\n  }}\n }}\n \
             real_server 192.0.2.12 80 {{\n  TCP_CHECK {{\n  }}\n }}\n}}\n"
        )
    };
    let import = import_text(&conf("TUN"), "k.conf", &with_rules(&[])).unwrap();
    let c = import
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", import.toml));
    let addresses: Vec<String> = c.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(addresses, ["2001:db8::11", "192.0.2.12"]);
    assert_eq!(c.virtual_servers[0].forwarding, Forwarding::Tun);

    let import = import_text(&conf("NAT"), "k.conf", &with_rules(&[])).unwrap();
    let c = import.validate().unwrap();
    assert_eq!(c.virtual_servers[0].real_servers.len(), 1);
    let report = import.report().join("\n");
    assert!(
        report.contains("k.conf:4: real_server 2001:db8::11 80 { ... }: not translated (not in the virtual server's address family, which only TUN crosses"),
        "{report}"
    );
}
