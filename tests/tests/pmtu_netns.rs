//! Path-MTU discovery through the load balancer (DR, and NAT): a client behind a router whose
//! link towards it is narrower (1400 bytes) than the real servers' (1500) downloads
//! 1 MB files through the VIP. The real servers' answers leave with DF set; the router
//! sends "fragmentation needed" to their source, the VIP, which is the LB. Without the
//! LB handing it to the real server holding the connection, that server never learns
//! the path MTU and the download stalls (a PMTU black hole; Linux probes for it only
//! with `tcp_mtu_probing`, off by default). Checked: every download completes, each
//! real server's kernel learnt the path MTU for the client, and the LB counted the
//! errors it forwarded. With NAT the real servers answer from their own addresses,
//! which the LB rewrites to the VIP, so the LB translates each error back for the
//! real server (destination, quoted source address and port, checksums).
//!
//! ```text
//!   DR:  far client eth0 198.51.100.1/24 (MTU 1500)
//!          └── router (the DR lab's client namespace) eth1 198.51.100.254/24, MTU 1400
//!              router eth0 192.0.2.1/24 ── br0 ── lb (VIP) ── b1, b2 (VIP on lo)
//!   NAT: far client eth0 203.0.113.1/24
//!          └── router (the two-arm lab's client) eth1 203.0.113.254/24, MTU 1400
//!              router eth0 198.51.100.1/24 ── lb (VIP, NAT) ── b1, b2 (via the lb)
//! ```
//!
//! Needs root; fails (never skips) without it.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use xdp_lb_lab::{DrLab, DrLabOptions, Netns, wait_tcp_listening};
use xdp_lb_tests::{config, dr_lab, start};

const PORT: u16 = 8080;
const SIZE: usize = 1 << 20;
const DOWNLOADS: usize = 4;

/// A plain file server in a real server's namespace, killed on drop.
struct FileServer(Child);

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fragmentation_needed_for_a_vip_reaches_the_real_server_and_downloads_complete() {
    path_mtu_through_the_vip(false);
}

#[test]
fn fragmentation_needed_for_a_nat_vip_is_translated_and_downloads_complete() {
    path_mtu_through_the_vip(true);
}

fn path_mtu_through_the_vip(nat: bool) {
    let lab = dr_lab(if nat {
        DrLabOptions::two_arm(&["b1", "b2"])
    } else {
        DrLabOptions::one_arm(&["b1", "b2"])
    });
    // The far client's subnet and the router's address on it.
    let (far_net, far_addr, router_addr) = if nat {
        ("203.0.113.0/24", "203.0.113.1", "203.0.113.254")
    } else {
        ("198.51.100.0/24", "198.51.100.1", "198.51.100.254")
    };
    // The far client, behind the lab's client namespace turned router.
    let far = Netns::new(if nat { "xlbpmtun" } else { "xlbpmtuf" }).unwrap();
    lab.client
        .ip([
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            far.name(),
        ])
        .unwrap();
    lab.client
        .ip(["link", "set", "eth1", "mtu", "1400"])
        .unwrap();
    lab.client
        .ip(["addr", "add", &format!("{router_addr}/24"), "dev", "eth1"])
        .unwrap();
    lab.client.ip(["link", "set", "eth1", "up"]).unwrap();
    lab.client.sysctl(&[("net/ipv4/ip_forward", "1")]).unwrap();
    far.ip(["addr", "add", &format!("{far_addr}/24"), "dev", "eth0"])
        .unwrap();
    far.ip(["link", "set", "eth0", "up"]).unwrap();
    far.ip(["link", "set", "lo", "up"]).unwrap();
    far.ip(["route", "add", "default", "via", router_addr])
        .unwrap();
    if nat {
        // The LB's kernel routes towards the far client too (XDP answers with the
        // next hop it saw; the kernel needs the route for its own checks).
        lab.lb
            .ip(["route", "add", far_net, "via", "198.51.100.1"])
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &body).unwrap();
    let mut servers = Vec::new();
    for b in &lab.backends {
        if !nat {
            b.ns.ip(["route", "add", far_net, "via", "192.0.2.1"])
                .unwrap();
        }
        let child =
            b.ns.command("python3")
                .args(["-m", "http.server", &PORT.to_string(), "--bind", "0.0.0.0"])
                .arg("--directory")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        servers.push(FileServer(child));
        let own = SocketAddr::from((b.addr, PORT));
        // Listening, not only reachable: python takes seconds to start under
        // emulation, and a download sent before would be refused.
        wait_tcp_listening(
            if nat { &lab.lb } else { &lab.client },
            &[own],
            Duration::from_secs(20),
        )
        .unwrap();
    }
    let mut services = config(&lab, &[(PORT, "tcp", &[1, 1])]);
    if nat {
        services = services.replace(
            "scheduler = \"wrr\"\n",
            "scheduler = \"wrr\"\nforwarding = \"nat\"\n",
        );
    }
    let text = format!("[global]\napi = \"127.0.0.1:9180\"\n{services}");
    let _daemon = start(&lab.lb, &text);

    for i in 0..DOWNLOADS {
        let got = far
            .sh(&format!(
                "curl -sS --max-time 20 -o /dev/null -w '%{{size_download}}' \
                 http://{}:{PORT}/big.bin",
                DrLab::VIP
            ))
            .unwrap_or_else(|e| {
                // What the data plane did with the packets, by reason.
                let verdicts = lab
                    .lb
                    .sh("curl -sS http://127.0.0.1:9180/metrics | grep '^xdp_lb_verdicts_total'")
                    .unwrap_or_else(|e| format!("(no metrics: {e:#})"));
                panic!("download {i} through the VIP: {e:#}\nverdicts:\n{verdicts}")
            });
        assert_eq!(got.trim(), SIZE.to_string(), "download {i}");
    }
    // Each real server's kernel has the path MTU the router told it.
    for b in &lab.backends {
        let route = b.ns.ip(["route", "get", far_addr]).unwrap();
        assert!(
            route.contains("mtu 1400"),
            "{}: no learnt path MTU: {route}",
            b.name
        );
    }
    let metrics = lab.lb.sh("curl -sS http://127.0.0.1:9180/metrics").unwrap();
    let forwarded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("xdp_lb_verdicts_total{reason=\"icmp_to_real_server\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no icmp_to_real_server count in:\n{metrics}"));
    assert!(
        forwarded >= 2,
        "one error per real server at least: {forwarded}"
    );
    let how = if nat {
        "translated and handed"
    } else {
        "handed"
    };
    println!(
        "measured: {}: {DOWNLOADS} downloads of {SIZE} bytes through a 1400-byte link \
         completed; the LB {how} {forwarded} fragmentation-needed errors to the real servers",
        if nat { "NAT" } else { "DR" }
    );
}
