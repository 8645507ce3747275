//! BPF_PROG_TEST_RUN helpers: load the program, pin the thread, run a frame.
use aya::programs::{TestRun, TestRunOptions};
use xdp_lb::dataplane::Dataplane;
use xdp_lb_common::{FlowKey, IPPROTO_TCP, ServiceKey, v4_mapped};

/// `enum xdp_action` from the kernel UAPI.
pub mod xdp_action {
    pub const XDP_DROP: u32 = 1;
    pub const XDP_PASS: u32 = 2;
    pub const XDP_TX: u32 = 3;
    pub const XDP_REDIRECT: u32 = 4;
}

/// BPF_PROG_TEST_RUN runs XDP as if received on the loopback device.
pub const TEST_RUN_IFINDEX: u32 = 1;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load XDP programs and need root (CAP_BPF, CAP_NET_ADMIN)"
    );
}

/// Keeps per-CPU state (round-robin cursors, counters) on one CPU so results are exact.
pub fn pin_to_cpu0() {
    xdp_lb_lab::cpu::pin_to_cpu(0).unwrap();
}

/// A loaded program on a pinned, privileged thread.
pub fn load() -> Dataplane {
    require_root();
    pin_to_cpu0();
    Dataplane::load(4096).expect("load the XDP program")
}

pub fn key(addr: [u8; 16], port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        addr,
        port_be: port.to_be(),
        proto,
        _pad: 0,
    }
}

/// The flow key of an IPv4 TCP packet from `src:sport` to `dst:dport`, as the program
/// builds it (addresses IPv4-mapped).
pub fn tcp_flow(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> FlowKey {
    FlowKey {
        src: v4_mapped(src),
        dst: v4_mapped(dst),
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    }
}

/// Enters `ns` for the calling thread, and so for the programs it test-runs: their
/// FIB lookups see `ns`'s routes and neighbours, not the host's.
pub fn enter(ns: &xdp_lb_lab::Netns) {
    ns.enter().unwrap();
}

/// What a NAT gateway's kernel knows of a client: a namespace of the test's own,
/// entered by the calling thread, with `lb_addr` (with its prefix) on `d0` (a veth:
/// this kernel has no dummy devices), `client` on-link there at `client_mac`, and
/// forwarding on. Returns it with d0's ifindex and MAC.
pub fn fib_namespace(
    lb_addr: &str,
    client: &str,
    client_mac: [u8; 6],
) -> (xdp_lb_lab::Netns, u32, [u8; 6]) {
    let ns = xdp_lb_lab::Netns::new("xlbfib").unwrap();
    enter(&ns);
    let family = if client.contains(':') { "-6" } else { "-4" };
    let mac: Vec<String> = client_mac.iter().map(|b| format!("{b:02x}")).collect();
    ns.ip(["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .unwrap();
    ns.ip(["link", "set", "d1", "up"]).unwrap();
    ns.ip(["link", "set", "d0", "up"]).unwrap();
    ns.ip([family, "addr", "add", lb_addr, "dev", "d0", "nodad"])
        .unwrap();
    let lladdr = mac.join(":");
    ns.ip([
        family,
        "neigh",
        "add",
        client,
        "lladdr",
        &lladdr,
        "dev",
        "d0",
        "nud",
        "permanent",
    ])
    .unwrap();
    // The FIB answers only for interfaces that forward, as a NAT gateway's do.
    ns.sysctl(&[
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv6/conf/all/forwarding", "1"),
    ])
    .unwrap();
    let d0 = ns.ifindex("d0").unwrap();
    let d0_mac = ns.mac_bytes("d0").unwrap();
    (ns, d0, d0_mac)
}

/// Runs one frame; returns the action and the frame as the program left it.
pub fn run(dp: &Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let result = dp.program().test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// What the real servers in `slots` forwarded, summed: their service's traffic when
/// they are its only ones (the data plane counts a forwarded packet only on its real
/// server; the daemon sums a service's).
pub fn served(dp: &Dataplane, slots: std::ops::Range<u32>) -> xdp_lb::dataplane::stats::Traffic {
    slots
        .map(|slot| dp.backend_stats(slot).unwrap().into())
        .sum()
}
