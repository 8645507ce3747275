//! NAT66 end to end: the two-arm lab over IPv6 (client on 2001:db8:1::/64, real servers
//! on 2001:db8::/64 behind eth1 with the LB as their default gateway), the real `xdp-lb`
//! binary, python real servers listening on other ports than the VIP's (port mapping),
//! real client connections. Nothing listens on the VIP's ports anywhere, and the
//! client's UDP socket is connected to [VIP]:53: every answer proves both translations.

use std::net::SocketAddr;

use xdp_lb_lab::{DrLab, DrLabOptions, http_get_keepalive, http_get_new_connections, udp_query};
use xdp_lb_tests::{IO_TIMEOUT, assert_split, dr_lab, start};

fn vip6(port: u16) -> SocketAddr {
    SocketAddr::from((DrLab::VIP6, port))
}

/// [VIP6]:80/tcp → :8080 and [VIP6]:53/udp → :5353 on every backend, NAT, weights 1:2.
fn nat6_config(lab: &DrLab) -> String {
    let mut text = String::from(
        "[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\nneighbour_timeout = \"10s\"\n",
    );
    for (vport, proto, rport) in [(80, "tcp", 8080), (53, "udp", 5353)] {
        text += &format!(
            "\n[[virtual_server]]\nvip = \"{}\"\nport = {vport}\nprotocol = \"{proto}\"\nforwarding = \"nat\"\nscheduler = \"wrr\"\n",
            DrLab::VIP6
        );
        for i in 0..lab.backends.len() {
            text += &format!(
                "  [[virtual_server.real_server]]\n  address = \"{}\"\n  port = {rport}\n  weight = {}\n",
                lab.backend_addr6(i),
                i + 1
            );
        }
    }
    text
}

/// The verdict count `name=N` in the daemon's log (its last report, e.g.
/// `verdicts=nat_reply=1245 redirect=1379`).
fn count(log: &str, name: &str) -> u64 {
    let prefix = format!("{name}=");
    log.match_indices(prefix.as_str())
        .filter_map(|(at, _)| {
            let digits: String = log[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .last()
        .unwrap_or_else(|| panic!("no {name} count in the log:\n{log}"))
}

#[test]
fn http_and_udp_through_an_ipv6_nat_vip_reach_each_server_on_its_mapped_port() {
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]));
    lab.start_http_backends(8080).unwrap();
    lab.start_udp_backends(5353).unwrap();
    let daemon = start(&lab.lb, &nat6_config(&lab));

    let tally = http_get_new_connections(&lab.client, vip6(80), 150, IO_TIMEOUT).unwrap();
    println!("NAT66 HTTP, 150 new connections, weights 1:2: {tally:?}");
    assert_split(&tally, &[("b1", 1), ("b2", 2)], 150, 5.0);
    let names = http_get_keepalive(&lab.client, vip6(80), 100, IO_TIMEOUT).unwrap();
    assert_eq!(names.len(), 100);
    assert!(
        names.iter().all(|n| *n == names[0]),
        "keep-alive connection moved: {names:?}"
    );

    let tally = udp_query(&lab.client, vip6(53), 150, IO_TIMEOUT).unwrap();
    println!("NAT66 UDP, 150 queries from new ports, weights 1:2: {tally:?}");
    assert_split(&tally, &[("b1", 1), ("b2", 2)], 150, 5.0);

    let log = daemon.stop().unwrap();
    // Each connection's answer came back through XDP's reply path: SYN-ACK, response
    // and FIN at least for each of the 150, and one datagram per query.
    let replies = count(&log, "nat_reply");
    println!("nat_reply={replies}");
    assert!(
        replies >= 3 * 150 + 150,
        "only {replies} NAT replies translated"
    );
    // The way in: from the client's arm to the servers', every packet redirected
    // (counted on its real server, the verdict derived from there), none sent back out.
    let redirected = count(&log, "redirect");
    assert!(
        redirected >= 3 * 150 + 150,
        "only {redirected} packets redirected to the servers"
    );
    assert!(
        !log.contains(" tx=") && !log.contains("verdicts=tx="),
        "packets left by the arm they came in on:\n{log}"
    );
}
