//! `cargo xtask bench` (after the BPF_PROG_TEST_RUN table): packets per second through
//! veth end to end, xdp-lb beside the minimal DR reference in the same run.
//!
//! Two veth pairs between a generator namespace and an LB namespace: xdp-lb (native
//! XDP, one DR service over three real servers, their frames sent back out of the same
//! veth; and a Maglev service over the same servers that keeps no flow entries) on
//! one, the DR reference on the other. In the generator namespace `xdp_loop` runs on
//! both pairs' ends: a burst of 64-byte TCP frames to the VIP, put on the wire once
//! from an AF_PACKET socket, goes round between the LB program and `xdp_loop` in the
//! kernel, `xdp_loop` sending each frame back as the next of 1 or 20,000 flows (its
//! source port counting through them, the source address's last two bytes a hash of
//! the count: scattered clients). (BPF_PROG_TEST_RUN's live-frames mode, a faster generator, is refused
//! on some kernels: this loop needs nothing but XDP on veth.) Each measurement counts
//! the frames `xdp_loop` saw come back over a wall-clock window, so the figure is the
//! whole loop's rate on one CPU (LB program, veth, `xdp_loop`, veth), of which the LB
//! program is the part that differs. Rounds alternate the two LB programs and the flow
//! counts.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use etherparse::PacketBuilder;
use xdp_lb::{
    config,
    dataplane::{Dataplane, ServiceSpec, load_dr_ref, load_traffic},
    schedule,
};
use xdp_lb_common::{BACKEND_F_ACTIVE, BackendValue, FWD_DR, IPPROTO_TCP, ServiceKey, v4_mapped};
use xdp_lb_lab::{Netns, require_root};

const CLIENT: [u8; 4] = [198, 51, 100, 7];
const VIP: [u8; 4] = [192, 0, 2, 100];
const ROUNDS: usize = 7;
/// The port of the Maglev service without flow entries (the wrr one is on 80).
const BYPASS_PORT: u16 = 81;
/// Frames put in the loop: half a veth ring (256), so none is lost to a full one.
const IN_FLIGHT: usize = 128;
/// How long the loop runs before it is counted, and how long it is counted.
const SETTLE: Duration = Duration::from_millis(30);
const WINDOW: Duration = Duration::from_millis(250);
/// The CPU the loop runs on (its softirq), and the one the benchmark waits on.
const LOOP_CPU: usize = 0;
const WAIT_CPU: usize = 1;

fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).unwrap_or_else(|e| panic!("no interface {name}: {e}"))
}

/// Sends `frame` `count` times out of interface `ifindex` (of the calling thread's
/// namespace) from an AF_PACKET socket.
fn inject(ifindex: u32, frame: &[u8], count: usize) {
    // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
    unsafe {
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(raw);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        assert_eq!(libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len), 0);
        for _ in 0..count {
            let sent = libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0);
            assert_eq!(
                sent,
                frame.len() as isize,
                "send: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    require_root().expect("the benchmark attaches XDP programs: run as root");
    xdp_lb_lab::cpu::pin_to_cpu(0).expect("keep the benchmark on CPU 0");
    let gen_ns = Netns::new("xlbbvg").expect("generator namespace");
    let lb_ns = Netns::new("xlbbvl").expect("LB namespace");
    for (g, l) in [("ga", "la"), ("gb", "lb")] {
        gen_ns
            .ip([
                "link",
                "add",
                g,
                "type",
                "veth",
                "peer",
                "name",
                l,
                "netns",
                lb_ns.name(),
            ])
            .unwrap();
        gen_ns.ip(["link", "set", g, "up"]).unwrap();
        lb_ns.ip(["link", "set", l, "up"]).unwrap();
    }

    // The LB side: xdp-lb on `la`, the reference on `lb`.
    lb_ns.enter().expect("enter the LB namespace");
    let la = ifindex("la");
    let macs = [
        [2, 0, 0, 0, 0, 0x11],
        [2, 0, 0, 0, 0, 0x12],
        [2, 0, 0, 0, 0, 0x13],
    ];
    let mut dp = Dataplane::load(1 << 18).expect("load xdp-lb");
    for (id, mac) in macs.iter().enumerate() {
        let b = BackendValue {
            addr: v4_mapped([192, 0, 2, 11 + id as u8]),
            dst_mac: *mac,
            src_mac: [2, 0, 0, 0, 0, 2],
            ifindex: la,
            flags: BACKEND_F_ACTIVE,
            port_be: 80u16.to_be(),
            mtu: 1500,
            tun_src: [0; 16],
        };
        dp.set_backend(id as u32, &b).unwrap();
    }
    let wrr = schedule::weighted_round_robin(&[1, 2, 3]).unwrap();
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            addr: v4_mapped(VIP),
            port_be: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: 0,
        },
        id: 0,
        forwarding: FWD_DR,
        select: wrr.select,
        active: true,
        slots: wrr.slots,
        ..Default::default()
    })
    .unwrap();
    // The same real servers behind a Maglev service that keeps no flow entries (Katran's
    // LRU bypass, `flow_table = false`): every packet is hashed again, no table touched.
    let keys: Vec<u64> = (0..3u8)
        .map(|i| schedule::backend_key([192, 0, 2, 11 + i].into(), 80))
        .collect();
    let maglev = schedule::maglev(&keys, &[1, 2, 3], xdp_lb_common::SELECT_HASH_FLOW);
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            addr: v4_mapped(VIP),
            port_be: BYPASS_PORT.to_be(),
            proto: IPPROTO_TCP,
            _pad: 0,
        },
        id: 1,
        forwarding: FWD_DR,
        select: maglev.select,
        active: true,
        slots: maglev.slots,
        no_flow_table: true,
        ..Default::default()
    })
    .unwrap();
    dp.attach("la", config::XdpMode::Driver)
        .expect("attach xdp-lb");
    let mut reference_ebpf = load_dr_ref(VIP, 80, &macs).expect("load the DR reference");
    let reference: &mut Xdp = reference_ebpf
        .program_mut("xdp_dr_ref")
        .unwrap()
        .try_into()
        .unwrap();
    reference
        .attach("lb", XdpMode::Driver)
        .expect("attach the reference");

    // The generator side.
    gen_ns.enter().expect("enter the generator namespace");
    let (ga, gb) = (ifindex("ga"), ifindex("gb"));
    let mut traffic = load_traffic().expect("load the traffic program");
    {
        let looper: &mut Xdp = traffic.program_mut("xdp_loop").unwrap().try_into().unwrap();
        for iface in ["ga", "gb"] {
            looper
                .attach(iface, XdpMode::Driver)
                .expect("attach the loop");
        }
    }
    let mut flows: Array<_, u32> = Array::try_from(traffic.take_map("GEN_FLOWS").unwrap()).unwrap();
    let mut loop_on: Array<_, u32> = Array::try_from(traffic.take_map("LOOP_ON").unwrap()).unwrap();
    let seen: PerCpuArray<_, u64> =
        PerCpuArray::try_from(traffic.take_map("SINK_COUNT").unwrap()).unwrap();
    let dropped: PerCpuArray<_, u64> =
        PerCpuArray::try_from(traffic.take_map("LOOP_DROPPED").unwrap()).unwrap();
    let frame_to = |port: u16| {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(CLIENT, VIP, 64)
            .tcp(10_000, port, 1, 64_000)
            .ack(1)
            .write(&mut frame, &[0u8; 10])
            .unwrap();
        frame
    };
    // The reference serves port 80 only; xdp-lb both.
    let (frame, bypass_frame) = (frame_to(80), frame_to(BYPASS_PORT));
    let sum = |counter: &PerCpuArray<_, u64>| -> u64 { counter.get(&0, 0).unwrap().iter().sum() };
    // (Mpps, frames still going round when the loop was stopped).
    let mut mpps = |target: u32, frame: &[u8], n: u32| -> (f64, u64) {
        flows.set(0, n, 0).unwrap();
        loop_on.set(0, 1, 0).unwrap();
        // The loop runs where its first frames were sent: on LOOP_CPU, in softirq.
        xdp_lb_lab::cpu::pin_to_cpu(LOOP_CPU).unwrap();
        inject(target, frame, IN_FLIGHT);
        xdp_lb_lab::cpu::pin_to_cpu(WAIT_CPU).unwrap();
        std::thread::sleep(SETTLE);
        let (before, start) = (sum(&seen), Instant::now());
        std::thread::sleep(WINDOW);
        let (after, took) = (sum(&seen), start.elapsed());
        // Stop the loop and wait until no frame is left going round.
        let dropped_before = sum(&dropped);
        loop_on.set(0, 0, 0).unwrap();
        let mut last = sum(&seen);
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let now = sum(&seen);
            if now == last {
                break;
            }
            last = now;
        }
        let left = sum(&dropped) - dropped_before;
        ((after - before) as f64 / took.as_secs_f64() / 1e6, left)
    };
    // One warm-up loop each, so the 20,000 flows are in xdp-lb's table.
    for target in [ga, gb] {
        mpps(target, &frame, 20_000);
    }
    let cases = [
        (ga, &frame, 1),
        (gb, &frame, 1),
        (ga, &bypass_frame, 1),
        (ga, &frame, 20_000),
        (gb, &frame, 20_000),
        (ga, &bypass_frame, 20_000),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut fewest_left = IN_FLIGHT as u64;
    for _ in 0..ROUNDS {
        for (i, &(target, frame, n)) in cases.iter().enumerate() {
            let (rate, left) = mpps(target, frame, n);
            results[i].push(rate);
            fewest_left = fewest_left.min(left);
        }
    }
    // Each round's ratio of a case to the reference's burst right after or before it
    // (the machine's speed drifts between rounds; see the dataplane bench).
    let paired = |ours: usize, reference: usize| -> f64 {
        median(
            results[ours]
                .iter()
                .zip(&results[reference])
                .map(|(a, b)| a / b)
                .collect(),
        )
    };
    let ratios = [[paired(0, 1), paired(2, 1)], [paired(3, 4), paired(5, 4)]];
    let m: Vec<f64> = results.into_iter().map(median).collect();
    println!();
    println!(
        "| veth end to end (Mpps, one CPU) | xdp-lb | DR ref | ratio | xdp-lb, maglev, no flow table | ratio |"
    );
    println!("|---|--:|--:|--:|--:|--:|");
    for (label, [ours, reference, bypass], [ratio, bypass_ratio]) in [
        ("1 flow", [m[0], m[1], m[2]], ratios[0]),
        ("20,000 flows", [m[3], m[4], m[5]], ratios[1]),
    ] {
        println!(
            "| {label} | {ours:.2} | {reference:.2} | {ratio:.2} | {bypass:.2} | {bypass_ratio:.2} |"
        );
    }
    println!(
        "every loop: at least {fewest_left} of its {IN_FLIGHT} frames still going round when \
         it was stopped (the rest lost to a full veth ring)"
    );
    println!(
        "median of {ROUNDS} rounds of {} ms, {} bytes a frame, {IN_FLIGHT} frames in the loop; \
         frames that came back over the window's wall time; a ratio is the median of the \
         rounds' own",
        WINDOW.as_millis(),
        frame.len()
    );
    drop(dp);
}
