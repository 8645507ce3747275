//! Direct routing end to end: the real `xdp-lb` binary with XDP on a veth in a
//! network namespace, real python HTTP/UDP servers as DR real servers (VIP on lo,
//! arp_ignore/arp_announce), and a client opening real connections to the VIP.
//! Needs root; every lab is torn down on drop, also when an assert fails.

use std::time::Duration;

use xdp_lb_lab::{
    DrLab, DrLabOptions, http_get_from_port, http_get_keepalive, http_get_new_connections,
    udp_query,
};
use xdp_lb_tests::{IO_TIMEOUT, assert_split, config, dr_lab, spawn, start, status, vip};

#[test]
fn six_hundred_connections_split_by_weight_1_2_3() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(80, "tcp", &[1, 2, 3])]));
    let tally = http_get_new_connections(&lab.client, vip(80), 600, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 2), ("b3", 3)], 600, 5.0);
    daemon.stop().unwrap();
}

#[test]
fn a_long_connection_stays_on_one_server() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(80, "tcp", &[1, 1, 1])]));
    for _ in 0..3 {
        let names = http_get_keepalive(&lab.client, vip(80), 200, IO_TIMEOUT).unwrap();
        assert_eq!(names.len(), 200);
        assert!(
            names.iter().all(|n| *n == names[0]),
            "one connection was answered by several servers: {names:?}"
        );
    }
    daemon.stop().unwrap();
}

/// A client that ends a connection (here with an RST) and opens the next from the same
/// source port reaches the next server in rr's turn, and the LB counts two new
/// connections: a SYN on a closed flow's entry opens a new one (IPVS's
/// conn_reuse_mode), where it used to follow the old connection's server.
#[test]
fn a_reused_source_port_opens_a_new_connection() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(80, "tcp", &[1, 1, 1])]));
    let source = "0.0.0.0:45000".parse().unwrap();
    let first = http_get_from_port(&lab.client, source, vip(80), IO_TIMEOUT).unwrap();
    let second = http_get_from_port(&lab.client, source, vip(80), IO_TIMEOUT).unwrap();
    assert_ne!(first, second, "the reused port followed the old connection");
    let snapshot = status(&lab.lb);
    let service = &snapshot.services[0];
    assert_eq!(service.counters.new_flows, 2, "{:?}", service.counters);
    for name in [&first, &second] {
        let addr = lab.backend(name).unwrap().addr;
        let rs = service
            .real_servers
            .iter()
            .find(|r| r.address == std::net::IpAddr::V4(addr))
            .unwrap();
        assert_eq!(rs.new_flows, 1, "{name}: {rs:?}");
    }
    daemon.stop().unwrap();
}

#[test]
fn a_weight_zero_server_gets_no_connections() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(80, "tcp", &[1, 0, 2])]));
    let tally = http_get_new_connections(&lab.client, vip(80), 150, IO_TIMEOUT).unwrap();
    assert!(
        !tally.contains_key("b2"),
        "weight-0 server got connections: {tally:?}"
    );
    assert_split(&tally, &[("b1", 1), ("b3", 2)], 150, 5.0);
    daemon.stop().unwrap();
}

#[test]
fn a_udp_service_is_balanced_too() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_udp_backends(53).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(53, "udp", &[1, 2, 3])]));
    let tally = udp_query(&lab.client, vip(53), 300, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 2), ("b3", 3)], 300, 5.0);
    daemon.stop().unwrap();
}

#[test]
fn two_arm_lb_redirects_to_the_backend_interface() {
    // Client on eth0, real servers behind eth1: every forwarded packet takes the
    // devmap redirect instead of XDP_TX.
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(80, "tcp", &[1, 1])]));
    let tally = http_get_new_connections(&lab.client, vip(80), 100, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 100, 5.0);
    daemon.stop().unwrap();
}

#[test]
fn sigterm_detaches_xdp_and_removes_managed_neighbours() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(80, "tcp", &[1, 1])]));
    let link = lab.lb.ip(["-d", "link", "show", "eth0"]).unwrap();
    assert!(
        link.contains("prog/xdp"),
        "no XDP program while running:\n{link}"
    );
    let neigh = lab.lb.ip(["-d", "neigh", "show", "dev", "eth0"]).unwrap();
    assert!(
        neigh.contains("managed"),
        "no managed neighbour while running:\n{neigh}"
    );
    let log = daemon.stop().unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
    let link = lab.lb.ip(["-d", "link", "show", "eth0"]).unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "XDP left attached after SIGTERM:\n{link}"
    );
    let neigh = lab.lb.ip(["-d", "neigh", "show", "dev", "eth0"]).unwrap();
    assert!(
        !neigh.contains("managed"),
        "managed neighbours left behind:\n{neigh}"
    );
    // And traffic to the VIP is the kernel's again: nothing listens on the LB.
    let err = http_get_new_connections(&lab.client, vip(80), 1, IO_TIMEOUT).unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
}

#[test]
fn an_unknown_interface_is_one_clear_error() {
    let lab = dr_lab(DrLabOptions::one_arm(&["b1"]));
    let text = config(&lab, &[(80, "tcp", &[1])]).replace("\"eth0\"", "\"nope0\"");
    let (code, log) = spawn(&lab.lb, &text)
        .wait_exit(Duration::from_secs(30))
        .unwrap();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("xdp-lb: error: unknown interface `nope0`"),
        "{log}"
    );
}

#[test]
fn a_service_whose_only_server_never_answers_arp_fails_after_the_wait() {
    let lab = dr_lab(DrLabOptions::one_arm(&["b1"]));
    let text = config(&lab, &[(80, "tcp", &[1])])
        .replace("192.0.2.11", "192.0.2.99")
        .replace("\"10s\"", "\"1s\"");
    let (code, log) = spawn(&lab.lb, &text)
        .wait_exit(Duration::from_secs(30))
        .unwrap();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("no real server answered ARP/ND within 1s (192.0.2.99)"),
        "{log}"
    );
    let link = lab.lb.ip(["-d", "link", "show", "eth0"]).unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "XDP left attached after a failed start:\n{link}"
    );
}

#[test]
fn a_silent_server_does_not_stop_the_others_and_joins_when_it_answers() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    // b2's address is taken down before the daemon starts: no ARP answer.
    lab.backends[1]
        .ns
        .ip(["link", "set", "eth0", "down"])
        .unwrap();
    let text = config(&lab, &[(80, "tcp", &[1, 1])]).replace("\"10s\"", "\"1s\"");
    let mut daemon = start(&lab.lb, &text);
    assert!(
        daemon.log().contains("real servers without a MAC yet"),
        "{}",
        daemon.log()
    );
    let tally = http_get_new_connections(&lab.client, vip(80), 20, IO_TIMEOUT).unwrap();
    assert_eq!(tally.get("b1"), Some(&20), "{tally:?}");
    // b2 comes up: the kernel's managed entry resolves and the daemon adds it.
    lab.backends[1]
        .ns
        .ip(["link", "set", "eth0", "up"])
        .unwrap();
    daemon
        .wait_for_line("real server MAC learned", Duration::from_secs(60))
        .unwrap();
    let tally = http_get_new_connections(&lab.client, vip(80), 40, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 40, 5.0);
    daemon.stop().unwrap();
}

#[test]
fn an_ipv6_vip_is_balanced_by_weight_too() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
    lab.start_http_backends(80).unwrap();
    let mut text = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[[virtual_server]]\nvip = \"{}\"\nport = 80\n",
        DrLab::VIP6
    );
    for (i, weight) in [1, 2, 3].iter().enumerate() {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  weight = {weight}\n",
            lab.backend_addr6(i)
        );
    }
    let daemon = start(&lab.lb, &text);
    let vip6 = std::net::SocketAddr::from((DrLab::VIP6, 80));
    let tally = http_get_new_connections(&lab.client, vip6, 300, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 2), ("b3", 3)], 300, 5.0);
    let log = daemon.stop().unwrap();
    // Nothing listens on the LB, so every answer already proves XDP forwarded it; the
    // counters agree: at least SYN, request, FIN and ACKs of 300 connections went out.
    let tx: u64 = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tx="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tx count in the log:\n{log}"));
    assert!(tx >= 4 * 300, "only {tx} packets forwarded");
}

/// The daemon starts a new flow-cache generation every second (each cached flow then
/// looks itself up in the flow table again, keeping its LRU place there), and
/// `xdp-lb status` shows the cache, and each service's fills.
#[test]
fn the_daemon_renews_the_flow_cache_every_second() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &[(80, "tcp", &[1])]));
    let first = status(&lab.lb).flow_cache.expect("the flow cache's state");
    assert_eq!(first.ways, 6);
    assert!(first.sets_per_cpu.is_power_of_two() && first.sets_per_cpu >= 64);
    let started = std::time::Instant::now();
    loop {
        let now = status(&lab.lb).flow_cache.unwrap();
        if now.generation >= first.generation + 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the generation stays at {} from {}",
            now.generation,
            first.generation
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = xdp_lb_tests::run_in(&lab.lb, &["status"]);
    assert!(text.contains("flow cache: "), "{text}");
    // Each connection's first established packet takes the flow table's way and
    // fills the cache: the service counts it.
    let tally = http_get_new_connections(&lab.client, vip(80), 5, IO_TIMEOUT).unwrap();
    assert_eq!(tally.values().sum::<usize>(), 5);
    let fills = status(&lab.lb).services[0].counters.flow_cache_fills;
    assert!(fills >= 5, "{fills} flow-cache fills for 5 connections");
    daemon.stop().unwrap();
}
