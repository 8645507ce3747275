//! `cargo xtask bench` (after the BPF_PROG_TEST_RUN table): packets per second through
//! veth end to end, xdp-lb beside the minimal DR reference in the same run.
//!
//! Two veth pairs between a generator namespace and an LB namespace: xdp-lb (native
//! XDP, one DR service over three real servers, their frames sent back out of the same
//! veth; and a Maglev service over the same servers that keeps no flow entries) on
//! one, the DR reference on the other. In the generator namespace,
//! `xdp_gen` runs under BPF_PROG_TEST_RUN in live-frames mode and sends 64-byte TCP
//! frames to the VIP out of one pair's end, its source port cycling over 1 or 20,000
//! values; `xdp_sink` on that end drops and counts what the LB sends back. Rounds
//! alternate the two LB programs and the flow counts; each measures a burst's frames
//! that made it back over its wall time, so the figure is the whole path's rate on one
//! CPU (generator, veth, LB program, veth, sink), of which the LB program is the part
//! that differs.
use std::time::{Duration, Instant};

use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
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
/// Frames per burst.
const BURST: u32 = 2_000_000;
/// Frames the kernel hands to the generator at a time.
const BATCH: u32 = 64;

fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).unwrap_or_else(|e| panic!("no interface {name}: {e}"))
}

/// `struct xdp_md` for live frames: the frame's bounds and the interface it "arrived"
/// on, which is where XDP_TX sends it.
fn xdp_md(frame_len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(frame_len as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    md
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
    let mut traffic = load_traffic().expect("load the traffic programs");
    {
        let sink: &mut Xdp = traffic.program_mut("xdp_sink").unwrap().try_into().unwrap();
        for iface in ["ga", "gb"] {
            sink.attach(iface, XdpMode::Driver)
                .expect("attach the sink");
        }
    }
    let mut flows: Array<_, u32> = Array::try_from(traffic.take_map("GEN_FLOWS").unwrap()).unwrap();
    let sink_count: PerCpuArray<_, u64> =
        PerCpuArray::try_from(traffic.take_map("SINK_COUNT").unwrap()).unwrap();
    let generator: &Xdp = traffic.program("xdp_gen").unwrap().try_into().unwrap();
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
    let counted = || -> u64 { sink_count.get(&0, 0).unwrap().iter().sum() };
    // (Mpps, share of the burst that came back).
    let mut mpps = |target: u32, frame: &[u8], n: u32| -> (f64, f64) {
        flows.set(0, n, 0).unwrap();
        let md = xdp_md(frame.len(), target);
        let before = counted();
        let start = Instant::now();
        generator
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&md),
                repeat: BURST,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN in live-frames mode");
        let took = start.elapsed().max(Duration::from_micros(1));
        let back = (counted() - before) as f64;
        (back / took.as_secs_f64() / 1e6, back / f64::from(BURST))
    };
    // One warm-up burst each, so the 20,000 flows are in xdp-lb's table.
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
    let mut lowest_back = 1.0f64;
    for _ in 0..ROUNDS {
        for (i, &(target, frame, n)) in cases.iter().enumerate() {
            let (rate, back) = mpps(target, frame, n);
            results[i].push(rate);
            lowest_back = lowest_back.min(back);
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
        "every burst: at least {:.1}% of its frames came back (the rest: veth ring full)",
        lowest_back * 100.0
    );
    println!(
        "median of {ROUNDS} rounds of {BURST} frames of {} bytes (live frames, batches of \
         {BATCH}); frames that came back over the burst's wall time; a ratio is the median of \
         the rounds' own",
        frame.len()
    );
    drop(dp);
}
