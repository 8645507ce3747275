//! `cargo xtask bench`: ns/packet of the XDP program under BPF_PROG_TEST_RUN, measured
//! side by side with a trivial MAC-swap `XDP_TX` program (the floor) in the same run.
//!
//! Packets whose flow must be new on every run cannot use the kernel's repeat loop
//! (it reuses one packet), so those rows time single runs in a loop and compare them
//! with the floor timed the same way.
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;
use xdp_lb::{
    dataplane::{Dataplane, ServiceSpec, load_floor, nat::NatTimeouts},
    schedule,
};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, FWD_DR, FWD_NAT, FWD_TUN, IPPROTO_TCP, SELECT_CURSOR,
    ServiceKey, v4_mapped,
};

/// Repeat-loop rows: ROUNDS rounds, each timing every case once with REPEAT runs, so
/// a slow moment of the machine hits all cases alike; the median round is reported.
const ROUNDS: usize = 21;
const REPEAT: u32 = 200_000;
const SINGLE_RUNS: u16 = 20_000;

const CLIENT: [u8; 4] = [198, 51, 100, 7];
const VIP: [u8; 4] = [192, 0, 2, 100];
const NAT_SERVER: [u8; 4] = [203, 0, 113, 11];

fn frame(sport: u16, dport: u16) -> Vec<u8> {
    tcp(CLIENT, sport, VIP, dport)
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64_000)
        .write(&mut f, &[0u8; 64])
        .unwrap();
    f
}

fn time(program: &Xdp, frame: &[u8], repeat: u32) -> Duration {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    program.test_run(opts).expect("BPF_PROG_TEST_RUN").duration
}

/// Median ns of single runs, each on a frame from `make(i)`.
fn median_single(program: &Xdp, make: impl Fn(u16) -> Vec<u8>) -> f64 {
    let mut ns: Vec<u128> = (0..SINGLE_RUNS)
        .map(|i| time(program, &make(i), 1).as_nanos())
        .collect();
    ns.sort_unstable();
    ns[ns.len() / 2] as f64
}

fn main() {
    // SAFETY: geteuid has no preconditions; a zeroed cpu_set_t with one bit set is valid.
    unsafe {
        assert_eq!(
            libc::geteuid(),
            0,
            "the benchmark loads XDP programs: run as root"
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let mut dp = Dataplane::load(1 << 18).expect("load xdp-lb");
    for id in 0..3u32 {
        let b = BackendValue {
            addr: v4_mapped([192, 0, 2, 11 + id as u8]),
            dst_mac: [2, 0, 0, 0, 0, 0x11 + id as u8],
            src_mac: [2, 0, 0, 0, 0, 2],
            ifindex: 1,
            flags: BACKEND_F_ACTIVE,
            port_be: 80u16.to_be(),
            mtu: 1500,
            tun_src: [0; 16],
        };
        dp.set_backend(id, &b).unwrap();
    }
    let wrr = schedule::weighted_round_robin(&[1, 2, 3]).unwrap();
    let key = ServiceKey {
        addr: v4_mapped([192, 0, 2, 100]),
        port_be: 80u16.to_be(),
        proto: IPPROTO_TCP,
        _pad: 0,
    };
    dp.set_service(&ServiceSpec {
        key,
        id: 0,
        forwarding: FWD_DR,
        select: wrr.select,
        active: true,
        slots: wrr.slots,
        ..Default::default()
    })
    .unwrap();
    // A NAT service on :81 with one real server (port 8080).
    let nat_backend = BackendValue {
        addr: v4_mapped(NAT_SERVER),
        port_be: 8080u16.to_be(),
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(3, &nat_backend).unwrap();
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            port_be: 81u16.to_be(),
            ..key
        },
        id: 1,
        forwarding: FWD_NAT,
        select: SELECT_CURSOR,
        active: true,
        slots: vec![3],
        ..Default::default()
    })
    .unwrap();
    // A TUN service on :82 with one real server.
    let tun_backend = BackendValue {
        addr: v4_mapped(NAT_SERVER),
        mtu: 1500,
        tun_src: v4_mapped([192, 0, 2, 2]),
        ..dp.backend(0).unwrap()
    };
    dp.set_backend(4, &tun_backend).unwrap();
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            port_be: 82u16.to_be(),
            ..key
        },
        id: 2,
        forwarding: FWD_TUN,
        select: SELECT_CURSOR,
        active: true,
        slots: vec![4],
        ..Default::default()
    })
    .unwrap();
    let floor_ebpf = load_floor().expect("load the floor program");
    let floor: &Xdp = floor_ebpf.program("xdp_floor").unwrap().try_into().unwrap();
    let lb = dp.program();
    let established_frame = frame(2, 80);
    time(lb, &established_frame, 1); // create the flow
    let (floor_frame, non_vip_frame) = (frame(1, 80), frame(1, 8080));
    let mut rounds: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(time(floor, &floor_frame, REPEAT).as_nanos() as f64);
        rounds[1].push(time(lb, &non_vip_frame, REPEAT).as_nanos() as f64);
        rounds[2].push(time(lb, &established_frame, REPEAT).as_nanos() as f64);
    }
    let [floor_repeat, non_vip, established] = rounds.map(|mut r| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    });
    let floor_single = median_single(floor, |i| frame(i, 80));
    // Distinct source ports from 10_000: every run is a new flow.
    let new_flow = median_single(lb, |i| frame(10_000u16.wrapping_add(i), 80));
    // The 20 000 flows the previous row created, each seen again: a realistic spread
    // over the table rather than one hot entry.
    let established_single = median_single(lb, |i| frame(10_000u16.wrapping_add(i), 80));

    // TUN grows the frame, so single runs as well; the same 20 000 flows twice.
    let tun_new = median_single(lb, |i| frame(30_000u16.wrapping_add(i), 82));
    let tun_established = median_single(lb, |i| frame(30_000u16.wrapping_add(i), 82));

    // NAT on: non-VIP packets now also try the reply table.
    dp.set_nat(true, &NatTimeouts::default()).unwrap();
    let lb = dp.program();
    let mut nat_rounds = Vec::new();
    for _ in 0..ROUNDS {
        nat_rounds.push(time(lb, &non_vip_frame, REPEAT).as_nanos() as f64);
    }
    nat_rounds.sort_by(f64::total_cmp);
    let non_vip_nat_on = nat_rounds[ROUNDS / 2];
    // NAT rewrites addresses, so a repeat loop would feed the rewritten frame back in:
    // single runs only. The forward rows first create 20 000 flows, then reuse them.
    let nat_new = median_single(lb, |i| frame(30_000u16.wrapping_add(i), 81));
    let nat_established = median_single(lb, |i| frame(30_000u16.wrapping_add(i), 81));
    let nat_reply = median_single(lb, |i| {
        tcp(NAT_SERVER, 8080, CLIENT, 30_000u16.wrapping_add(i))
    });

    println!("xdp-lb data plane, BPF_PROG_TEST_RUN on one CPU (64-byte TCP payload)");
    println!();
    println!(
        "| case                           | timing              | xdp-lb ns/pkt | floor ns/pkt | ratio |"
    );
    println!(
        "|--------------------------------|---------------------|--------------:|-------------:|------:|"
    );
    let row = |case: &str, how: &str, ours: f64, floor: f64| {
        println!(
            "| {case:<30} | {how:<19} | {ours:>13.1} | {floor:>12.1} | {:>5.2} |",
            ours / floor
        );
    };
    row(
        "non-VIP packet (XDP_PASS)",
        &format!("median {ROUNDS}x{REPEAT}"),
        non_vip,
        floor_repeat,
    );
    row(
        "established flow (XDP_TX)",
        &format!("median {ROUNDS}x{REPEAT}"),
        established,
        floor_repeat,
    );
    row(
        "established flows (XDP_TX)",
        &format!("median {SINGLE_RUNS}x1"),
        established_single,
        floor_single,
    );
    row(
        "new flow (XDP_TX)",
        &format!("median {SINGLE_RUNS}x1"),
        new_flow,
        floor_single,
    );
    let single = format!("median {SINGLE_RUNS}x1");
    row(
        "non-VIP packet, NAT enabled",
        &format!("median {ROUNDS}x{REPEAT}"),
        non_vip_nat_on,
        floor_repeat,
    );
    row("NAT forward, new flow", &single, nat_new, floor_single);
    row(
        "NAT forward, established",
        &single,
        nat_established,
        floor_single,
    );
    row("NAT reply (reverse)", &single, nat_reply, floor_single);
    row(
        "TUN encapsulation, new flow",
        &single,
        tun_new,
        floor_single,
    );
    row(
        "TUN encapsulation, established",
        &single,
        tun_established,
        floor_single,
    );
    println!();
    println!(
        "floor = trivial MAC-swap XDP_TX program; single runs include the kernel's per-call timer cost."
    );
    println!(
        "repeat rows reuse one hot flow; x1 rows walk 20 000 distinct flows (new, then seen again)."
    );
}
