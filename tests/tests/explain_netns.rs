//! `xdp-lb explain` against where real connections went, with the real binary in a DR
//! lab: for fresh source ports the predicted real server (maglev: the 5-tuple's
//! bucket) is where the connection then really goes, and while (and after) it is open
//! the answer is its flow entry, naming the real server that answered. For sh the
//! source address alone is enough: every connection of the client goes where
//! `explain` without a port said. Needs root; the lab is torn down on drop.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use xdp_lb::explain::{Explanation, FlowLookup, NewConnection};
use xdp_lb_lab::{DrLab, DrLabOptions, KeepAlive};
use xdp_lb_tests::{dr_lab, start, vip};

const API: &str = "127.0.0.1:9180";
const TIMEOUT: Duration = Duration::from_secs(5);

/// :80 maglev and :8080 sh over the lab's three backends, the API on loopback.
fn config(lab: &DrLab) -> String {
    let mut text = format!(
        "[global]\napi = \"{API}\"\n\n[dataplane]\ninterfaces = [\"eth0\"]\nneighbour_timeout = \"10s\"\n"
    );
    for (port, scheduler) in [(80, "maglev"), (8080, "sh")] {
        text += &format!(
            "\n[[virtual_server]]\nvip = \"{}\"\nport = {port}\nscheduler = \"{scheduler}\"\n",
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

/// Runs `xdp-lb explain ARGS --api API` in the LB namespace: its stdout.
fn explain_text(lab: &DrLab, args: &[&str]) -> String {
    let args: Vec<&str> = ["explain"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--api", API])
        .collect();
    xdp_lb_tests::run_in(&lab.lb, &args)
}

/// `xdp-lb explain SRC DST tcp --json`, parsed.
fn explain(lab: &DrLab, src: &str, dst: SocketAddr) -> Explanation {
    let json = explain_text(lab, &[src, &dst.to_string(), "tcp", "--json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The real server a new connection is predicted to take (sh or maglev).
fn predicted(e: &Explanation) -> SocketAddr {
    let m = e
        .service
        .as_ref()
        .unwrap_or_else(|| panic!("no service: {e:?}"));
    match &m.new_connection {
        NewConnection::Hash {
            real_server: Some(rs),
            ..
        } => {
            assert!(rs.active && rs.healthy, "{e:?}");
            rs.addr()
        }
        other => panic!("no hash pick: {other:?}"),
    }
}

/// The real server of the flow entry, if there is one that is followed.
fn pinned(e: &Explanation) -> Option<SocketAddr> {
    match &e.service.as_ref()?.flow {
        FlowLookup::Pinned {
            real_server: Some(rs),
            followed: true,
            ..
        } => Some(rs.addr()),
        _ => None,
    }
}

#[test]
fn explain_predicts_where_connections_go_and_names_their_flow_entries() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    lab.start_http_backends(8080).unwrap();
    let daemon = start(&lab.lb, &config(&lab));
    let client = lab.client_addr();
    let backend_of = |name: &str, port: u16| -> SocketAddr {
        SocketAddr::from((lab.backend(name).unwrap().addr, port))
    };

    // maglev: fresh source ports, each predicted first, then really connected.
    let mut went = BTreeSet::new();
    let mut example = String::new();
    for port in 41_000..41_012u16 {
        let src = SocketAddr::from((client, port));
        let before = explain(&lab, &src.to_string(), vip(80));
        assert_eq!(
            before.service.as_ref().map(|m| &m.flow),
            Some(&FlowLookup::None),
            "a fresh source port has no flow entry: {before:?}"
        );
        let expected = predicted(&before);

        let mut connection = KeepAlive::open_from(&lab.client, Some(src), vip(80), TIMEOUT)
            .unwrap_or_else(|e| panic!("connect from {src}: {e:#}"));
        assert_eq!(connection.local_addr().unwrap(), src);
        let answered = backend_of(&connection.get().unwrap(), 80);
        assert_eq!(
            answered, expected,
            "from {src}: explain predicted {expected}, {answered} answered"
        );
        went.insert(answered);

        // While it is open: its flow entry, to the server that answered.
        let during = explain(&lab, &src.to_string(), vip(80));
        assert_eq!(pinned(&during), Some(answered), "{during:?}");
        assert_eq!(
            during.verdict,
            format!("forwarded to {answered} by its flow entry")
        );
        if example.is_empty() {
            example = explain_text(&lab, &[&src.to_string(), &vip(80).to_string(), "tcp"]);
        }
        connection.get().unwrap();
        drop(connection);
        // After it: a DR entry stays until the LRU evicts it.
        let after = explain(&lab, &src.to_string(), vip(80));
        assert_eq!(pinned(&after), Some(answered), "{after:?}");
    }
    assert!(
        went.len() >= 2,
        "12 source ports all went to {went:?}: the prediction was never put to the test"
    );
    eprintln!("xdp-lb explain (during the connection):\n{example}");
    let pinned_line = example
        .lines()
        .find(|l| l.starts_with("flow entry   pinned to "))
        .unwrap_or_else(|| panic!("{example}"));
    assert!(
        pinned_line.contains("(up, weight 1/1, active)"),
        "{example}"
    );
    assert!(
        example.contains("gate         forwarded by XDP (its VIP is no VRRP address)"),
        "{example}"
    );

    // maglev without a source port: said to be needed.
    let no_port = explain_text(&lab, &[&client.to_string(), &vip(80).to_string(), "tcp"]);
    assert!(no_port.contains("give the source port"), "{no_port}");

    // sh: the source address alone; every connection of the client goes there.
    let e = explain(&lab, &client.to_string(), vip(8080));
    let expected = predicted(&e);
    let tally = xdp_lb_lab::http_get_new_connections(&lab.client, vip(8080), 6, TIMEOUT).unwrap();
    let answered: BTreeSet<SocketAddr> = tally.keys().map(|n| backend_of(n, 8080)).collect();
    assert_eq!(
        answered,
        BTreeSet::from([expected]),
        "sh: explain predicted {expected}; {tally:?} answered"
    );
    let sh_text = explain_text(&lab, &[&client.to_string(), &vip(8080).to_string(), "tcp"]);
    eprintln!("xdp-lb explain (sh, no source port):\n{sh_text}");

    // No such service: why, and what the VIP has.
    let none = explain_text(&lab, &[&client.to_string(), &vip(81).to_string(), "tcp"]);
    assert!(
        none.contains("no virtual service 192.0.2.100:81/tcp")
            && none.contains("192.0.2.100:80/tcp, 192.0.2.100:8080/tcp"),
        "{none}"
    );

    // A malformed question is the asker's error, named.
    let answer = lab
        .lb
        .run(|| {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect(API).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.write_all(
                b"GET /explain?src=nope&dst=192.0.2.100&dport=80&proto=tcp HTTP/1.1\r\n\
                  Host: x\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        })
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400")
            && answer.contains("`src`: \"nope\" is not an IP address"),
        "{answer}"
    );
    daemon.stop().unwrap();
}
