//! The labs themselves, without xdp-lb: both DR shapes come up, every backend
//! answers HTTP and UDP on its own address from the client namespace, ARP for
//! the VIP is answered by the LB only, nothing is left behind after drop, and
//! a stand-in XDP program on the LB really delivers to a backend.
//!
//! Needs root; without it these tests fail with a clear message (no skipping).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use xdp_lb_lab::xdp::{XDP_PASS, XDP_TX, attach_xdp_bytecode, bpf_insn, detach_xdp};
use xdp_lb_lab::{
    DrLab, DrLabOptions, Netns, http_get_keepalive, http_get_new_connections,
    namespaces_with_prefix, require_root, udp_query,
};

const TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_PORT: u16 = 80;
const UDP_PORT: u16 = 5353;

fn root() {
    if let Err(e) = require_root() {
        panic!("{e:#}");
    }
}

fn check_lab(opts: DrLabOptions) {
    root();
    let two_arm = opts.two_arm;
    let names = opts.backends.clone();
    let mut lab = DrLab::build(opts).expect("build lab");
    let prefix = lab.prefix().to_owned();

    let present = namespaces_with_prefix(&prefix).unwrap();
    let mut expected = lab.namespace_names();
    expected.sort();
    let mut seen = present.clone();
    seen.sort();
    assert_eq!(seen, expected, "namespaces of lab {prefix}");
    assert_eq!(
        lab.lb_interfaces(),
        if two_arm {
            vec!["eth0", "eth1"]
        } else {
            vec!["eth0"]
        }
    );

    lab.start_http_backends(HTTP_PORT)
        .expect("start http backends");
    lab.start_udp_backends(UDP_PORT)
        .expect("start udp backends");

    for b in &lab.backends {
        let http = SocketAddr::from((b.addr, HTTP_PORT));
        let tally = http_get_new_connections(&lab.client, http, 3, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            tally.into_iter().collect::<Vec<_>>(),
            vec![(b.name.clone(), 3)],
            "HTTP answers from {http}"
        );

        let answers =
            http_get_keepalive(&lab.client, http, 5, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            answers,
            vec![b.name.clone(); 5],
            "keep-alive answers from {http}"
        );

        let udp = SocketAddr::from((b.addr, UDP_PORT));
        let tally = udp_query(&lab.client, udp, 4, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            tally.into_iter().collect::<Vec<_>>(),
            vec![(b.name.clone(), 4)],
            "UDP answers from {udp}"
        );
    }

    // The backend servers listen on the VIP too (it is on their lo) ...
    let b0 = &lab.backends[0];
    let out = b0
        .ns
        .sh(&format!(
            "ip -4 addr show dev lo | grep -c 'inet {}/32'",
            DrLab::VIP
        ))
        .unwrap();
    assert_eq!(out.trim(), "1", "VIP on {}'s lo", b0.name);

    // ... but on the wire only the LB owns it: without XDP, a connection to
    // the VIP reaches the LB's kernel, where nothing listens.
    let vip = SocketAddr::from((DrLab::VIP, HTTP_PORT));
    let refused = lab
        .client
        .run(move || TcpStream::connect_timeout(&vip, TIMEOUT).map(|_| ()))
        .unwrap();
    match refused {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("expected the LB to refuse {vip} (nothing listens there), got {other:?}"),
    }
    // The client's next hop for the VIP is the LB's eth0: the VIP itself
    // (one-arm, answered by ARP) or the LB's address (two-arm, routed).
    let next_hop = if two_arm { lab.lb_addr() } else { DrLab::VIP };
    let neigh = lab
        .client
        .ip(["neigh", "show", &next_hop.to_string(), "dev", "eth0"])
        .unwrap();
    let lb_mac = lab.lb.mac("eth0").unwrap();
    assert!(
        neigh.contains(&lb_mac),
        "client's neighbour entry for {next_hop} should be the LB's eth0 ({lb_mac}): {neigh}"
    );

    // A stopped backend refuses connections; restarting it brings it back.
    let first = names[0].clone();
    let addr = SocketAddr::from((lab.backend(&first).unwrap().addr, HTTP_PORT));
    lab.stop_backend_server(&first).unwrap();
    let err = http_get_new_connections(&lab.client, addr, 1, TIMEOUT).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("connection 1 of 1") && msg.contains("refused"),
        "error should name the attempt and the refusal: {msg}"
    );
    lab.start_http_backend(&first, HTTP_PORT).unwrap();
    let tally = http_get_new_connections(&lab.client, addr, 1, TIMEOUT).unwrap();
    assert_eq!(tally.get(&first), Some(&1));

    drop(lab);
    let left = namespaces_with_prefix(&prefix).unwrap();
    assert!(left.is_empty(), "namespaces left after drop: {left:?}");
}

#[test]
fn one_arm_lab_backends_answer_directly() {
    check_lab(DrLabOptions::one_arm(&["b1", "b2", "b3"]));
}

#[test]
fn two_arm_lab_backends_answer_through_lb_routing() {
    check_lab(DrLabOptions::two_arm(&["b1", "b2"]));
}

#[test]
fn netns_runs_code_and_commands_and_cleans_up() {
    root();
    let ns = Netns::new("xlbt").unwrap();
    let name = ns.name().to_owned();
    assert!(namespaces_with_prefix(&name).unwrap().contains(&name));

    // Commands and closures both see the namespace (only lo, no eth0).
    let links = ns.sh("ip -o link show | wc -l").unwrap();
    assert_eq!(links.trim(), "1", "a fresh namespace has only lo");
    let ifaces = ns
        .run(|| std::fs::read_dir("/proc/sys/net/ipv4/conf").map(|d| d.count()))
        .unwrap()
        .unwrap();
    assert_eq!(ifaces, 3, "all, default and lo");
    let err = ns.sh("echo oops >&2; exit 3").unwrap_err();
    assert!(format!("{err:#}").contains("oops"), "{err:#}");
    let err = ns.run(|| panic!("boom")).unwrap_err();
    assert!(format!("{err:#}").contains("boom"), "{err:#}");

    // A process left running inside is killed by drop, even one spawned just
    // before (still inside `ip netns exec`, not yet in the namespace).
    let mut child = ns.command("sleep").arg("600").spawn().unwrap();
    drop(ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`sleep 600` spawned in {name} survived its namespace");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success(), "sleep should have been killed");
    assert!(namespaces_with_prefix(&name).unwrap().is_empty());
}

/// A hand-assembled XDP program standing in for xdp-lb: TCP to VIP:80 goes to
/// the backend with MAC `dst` (source MAC `src`), by `XDP_TX` or, with an
/// ifindex, by `bpf_redirect`; everything else passes.
fn steer_program(dst: [u8; 6], src: [u8; 6], redirect_ifindex: Option<u32>) -> Vec<[u8; 8]> {
    const TO_PASS: i16 = i16::MIN; // patched below
    let vip = u32::from_le_bytes(DrLab::VIP.octets()) as i32;
    let port = u16::from_le_bytes(HTTP_PORT.to_be_bytes()) as i32;
    let mut p = vec![
        bpf_insn(0x61, 2, 1, 4, 0),          // r2 = ctx->data_end
        bpf_insn(0x61, 1, 1, 0, 0),          // r1 = ctx->data
        bpf_insn(0xbf, 3, 1, 0, 0),          // r3 = r1
        bpf_insn(0x07, 3, 0, 0, 38),         // r3 += 38 (eth + ip + ports)
        bpf_insn(0x2d, 3, 2, TO_PASS, 0),    // if r3 > r2 goto pass
        bpf_insn(0x69, 2, 1, 12, 0),         // r2 = ethertype
        bpf_insn(0x56, 2, 0, TO_PASS, 8),    // if w2 != htons(0x0800) goto pass
        bpf_insn(0x71, 2, 1, 23, 0),         // r2 = ip protocol
        bpf_insn(0x56, 2, 0, TO_PASS, 6),    // if w2 != TCP goto pass
        bpf_insn(0x61, 2, 1, 30, 0),         // r2 = ip daddr
        bpf_insn(0x56, 2, 0, TO_PASS, vip),  // if w2 != VIP goto pass
        bpf_insn(0x69, 2, 1, 36, 0),         // r2 = tcp dport
        bpf_insn(0x56, 2, 0, TO_PASS, port), // if w2 != htons(80) goto pass
    ];
    for (i, b) in dst.iter().chain(&src).enumerate() {
        p.push(bpf_insn(0x72, 1, 0, i as i16, *b as i32)); // *(u8 *)(r1 + i) = b
    }
    match redirect_ifindex {
        None => p.push(bpf_insn(0xb7, 0, 0, 0, XDP_TX)),
        Some(ifindex) => {
            p.push(bpf_insn(0xb7, 1, 0, 0, ifindex as i32)); // r1 = ifindex
            p.push(bpf_insn(0xb7, 2, 0, 0, 0)); // r2 = 0
            p.push(bpf_insn(0x85, 0, 0, 0, 23)); // call bpf_redirect
        }
    }
    p.push(bpf_insn(0x95, 0, 0, 0, 0)); // exit
    let pass = p.len();
    p.push(bpf_insn(0xb7, 0, 0, 0, XDP_PASS));
    p.push(bpf_insn(0x95, 0, 0, 0, 0));
    for (i, insn) in p.iter_mut().enumerate() {
        if i16::from_le_bytes([insn[2], insn[3]]) == TO_PASS {
            insn[2..4].copy_from_slice(&((pass - i - 1) as i16).to_le_bytes());
        }
    }
    p
}

/// What xdp-lb relies on: native XDP on the LB's interfaces can hand client
/// packets to a backend (XDP_TX one-arm, redirect eth0 -> eth1 two-arm), and
/// the backend's direct reply reaches the client.
fn check_xdp_path(opts: DrLabOptions) {
    root();
    let two_arm = opts.two_arm;
    let mut lab = DrLab::build(opts).expect("build lab");
    lab.start_http_backends(HTTP_PORT).unwrap();
    let vip = SocketAddr::from((DrLab::VIP, HTTP_PORT));
    let target = lab.backend("b2").unwrap();
    let program = steer_program(
        target.mac_bytes().unwrap(),
        lab.lb.mac_bytes(lab.lb_backend_interface()).unwrap(),
        two_arm.then(|| lab.lb.ifindex("eth1").unwrap()),
    );
    attach_xdp_bytecode(&lab.lb, "eth0", "lab_steer", &program).unwrap_or_else(|e| panic!("{e:#}"));

    let tally =
        http_get_new_connections(&lab.client, vip, 10, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        tally.into_iter().collect::<Vec<_>>(),
        vec![("b2".to_string(), 10)],
        "every connection to {vip} should reach b2 through XDP"
    );
    let answers =
        http_get_keepalive(&lab.client, vip, 20, TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(answers.iter().all(|a| a == "b2"), "{answers:?}");

    // Without the program, the VIP is the LB's own address again.
    detach_xdp(&lab.lb, "eth0").unwrap();
    let err = http_get_new_connections(&lab.client, vip, 1, TIMEOUT).unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
}

#[test]
fn one_arm_xdp_tx_reaches_backends() {
    check_xdp_path(DrLabOptions::one_arm(&["b1", "b2"]));
}

#[test]
fn two_arm_xdp_redirect_reaches_backends() {
    check_xdp_path(DrLabOptions::two_arm(&["b1", "b2"]));
}

/// A fresh veth pair comes back up with its carrier; with its peer down, an end is not
/// up, and the wait says so once its time is out; set up again, the wait returns.
#[test]
fn veth_pair_returns_links_with_carrier_and_the_wait_tells_down_from_up() {
    root();
    let (a, b) = xdp_lb_lab::veth_pair("xlblw").unwrap();
    for ns in [&a, &b] {
        let link = ns.ip(["-o", "link", "show", "dev", "eth0"]).unwrap();
        assert!(link.contains(" state UP "), "{link}");
    }
    b.ip(["link", "set", "eth0", "down"]).unwrap();
    let err = a
        .wait_oper_up("eth0", Duration::from_millis(300))
        .unwrap_err();
    assert!(format!("{err:#}").contains("eth0 not up"), "{err:#}");
    // Set up again (while the wait runs, or just before it looks): Ok, where a peer
    // still down would make it an error after 10 s.
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| a.wait_oper_up("eth0", Duration::from_secs(10)));
        b.ip(["link", "set", "eth0", "up"]).unwrap();
        waiter.join().unwrap().unwrap()
    });
}
