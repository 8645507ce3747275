//! NAT end to end: two-arm lab (client segment on eth0, real servers behind eth1 with
//! the LB as their default gateway), the real `xdp-lb` binary, python real servers
//! listening on other ports than the VIP's (port mapping), real client connections.

use std::time::Duration;

use xdp_lb_lab::{DrLab, DrLabOptions, http_get_keepalive, http_get_new_connections, udp_query};
use xdp_lb_tests::{IO_TIMEOUT, assert_split, dr_lab, start, vip};

/// VIP:80/tcp → :8080 and VIP:53/udp → :5353 on every backend, NAT.
fn nat_config(lab: &DrLab, extra: &str) -> String {
    nat_services(lab, extra, &[(80, "tcp", 8080), (53, "udp", 5353)])
}

/// NAT services (VIP port, protocol, real servers' port), every backend behind each.
fn nat_services(lab: &DrLab, extra: &str, services: &[(u16, &str, u16)]) -> String {
    let mut text = format!(
        "[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\nneighbour_timeout = \"10s\"\n{extra}\n"
    );
    for (vport, proto, rport) in services {
        text += &format!(
            "\n[[virtual_server]]\nvip = \"{}\"\nport = {vport}\nprotocol = \"{proto}\"\nforwarding = \"nat\"\n",
            DrLab::VIP
        );
        for b in &lab.backends {
            text += &format!(
                "  [[virtual_server.real_server]]\n  address = \"{}\"\n  port = {rport}\n",
                b.addr
            );
        }
    }
    text
}

#[test]
fn http_through_the_vip_reaches_each_server_on_its_mapped_port() {
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_http_backends(8080).unwrap();
    let daemon = start(&lab.lb, &nat_config(&lab, ""));
    let tally = http_get_new_connections(&lab.client, vip(80), 100, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 100, 5.0);
    let names = http_get_keepalive(&lab.client, vip(80), 100, IO_TIMEOUT).unwrap();
    assert!(
        names.iter().all(|n| *n == names[0]),
        "keep-alive connection moved: {names:?}"
    );
    // Nothing listens on 80 anywhere: answers prove both translations happened.
    daemon.stop().unwrap();
}

#[test]
fn a_udp_service_is_translated_both_ways() {
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_udp_backends(5353).unwrap();
    let daemon = start(&lab.lb, &nat_config(&lab, ""));
    // The client only accepts answers from VIP:53, so each name proves the reverse path.
    let tally = udp_query(&lab.client, vip(53), 100, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 100, 5.0);
    daemon.stop().unwrap();
}

/// A real server port behind more VIPs than a NAT origin lists (six services here,
/// VIP:80..=85, all to :8080; an origin lists four): its replies cannot tell their VIP,
/// so its flows write their reply entries when forwarded (eager). The client accepts
/// only answers from the VIP and port it called, so every port answering proves
/// each reply left from its own service, the two past the origin's four included.
#[test]
fn a_real_server_behind_more_vips_than_an_origin_lists_answers_each_from_its_own() {
    const PORTS: std::ops::RangeInclusive<u16> = 80..=85;
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_http_backends(8080).unwrap();
    let services: Vec<(u16, &str, u16)> = PORTS.map(|vport| (vport, "tcp", 8080)).collect();
    let daemon = start(&lab.lb, &nat_services(&lab, "", &services));
    for vport in PORTS {
        let tally = http_get_new_connections(&lab.client, vip(vport), 20, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("VIP:{vport}: {e:#}"));
        assert_eq!(tally.values().sum::<usize>(), 20, "VIP:{vport}: {tally:?}");
        assert_eq!(tally.len(), 2, "VIP:{vport}: both real servers: {tally:?}");
    }
    daemon.stop().unwrap();
}

#[test]
fn ten_thousand_short_connections_leave_the_tables_bounded_and_they_expire() {
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_http_backends(8080).unwrap();
    let extra = "max_flows = 2048\nnat_tcp_fin_timeout = \"1s\"\nnat_tcp_timeout = \"3s\"";
    let mut daemon = start(&lab.lb, &nat_config(&lab, extra));
    // Five times the table size, one after another: the LRU bounds the tables, and
    // every connection still completes.
    let tally = http_get_new_connections(&lab.client, vip(80), 10_000, IO_TIMEOUT).unwrap();
    assert_eq!(tally.values().sum::<usize>(), 10_000);
    // Then, with no traffic, the collector empties both tables.
    daemon
        .wait_for_line("flows_left=0 replies_left=0", Duration::from_secs(30))
        .unwrap();
    let log = daemon.stop().unwrap();
    for line in log
        .lines()
        .filter(|l| l.contains("expired idle NAT entries"))
    {
        let left: usize = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("flows_left="))
            .and_then(|n| n.parse().ok())
            .expect("flows_left in the log line");
        assert!(left <= 2048, "flow table above its bound: {line}");
    }
}
