//! `cargo xtask bench`: ns/packet of the XDP program under BPF_PROG_TEST_RUN, measured
//! side by side in the same run with a trivial MAC-swap `XDP_TX` program (the floor)
//! and a minimal DR program (parse, one hash lookup, pick by hash, rewrite: the
//! reference, `xdp-lb-ebpf/src/dr_ref.rs`). Rounds alternate the programs.
//!
//! Packets whose flow must be new on every run cannot use the kernel's repeat loop
//! (it reuses one packet), so those rows time single runs in a loop and compare them
//! with the floor timed the same way.
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;
use xdp_lb::{
    dataplane::{
        Dataplane, ServiceSpec, filter::FilterEntry, load_dr_ref, load_floor, nat::NatTimeouts,
    },
    schedule,
};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, FILTER_ALLOW, FILTER_DENY, FWD_DR, FWD_NAT, FWD_TUN,
    IPPROTO_TCP, SELECT_CURSOR, ServiceKey, v4_mapped,
};

/// Repeat-loop rows: ROUNDS rounds, each timing every case once with REPEAT runs, so
/// a slow moment of the machine hits all cases alike; the median round is reported,
/// and a ratio is the median of the rounds' own ratios (each of two runs next to each
/// other in time), which a machine whose speed drifts between rounds moves less than
/// a ratio of two medians.
const ROUNDS: usize = 41;
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

/// What a row's xdp-lb time is compared with.
enum Versus {
    /// The reference's median ns: the ratio of the medians (single runs).
    Median(f64),
    /// The reference's median ns and the median of the rounds' own ratios (repeat rows).
    Paired(f64, f64),
    /// No reference row.
    Nothing,
}

/// The median of `values` and their p10-p90 spread in percent of it.
fn median_and_spread(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = values[n / 2];
    (
        median,
        (values[n * 9 / 10] - values[n / 10]) / median * 100.0,
    )
}

/// Median ns of single runs, each on a frame from `make(i)`.
fn median_single(program: &Xdp, make: impl Fn(u16) -> Vec<u8>) -> f64 {
    let mut ns: Vec<u128> = (0..SINGLE_RUNS)
        .map(|i| time(program, &make(i), 1).as_nanos())
        .collect();
    ns.sort_unstable();
    ns[ns.len() / 2] as f64
}

/// Medians of single runs alternating a frame from `a(i)` with one from `b(i)`, so
/// that both see the same state of the maps.
fn median_alternating(
    program: &Xdp,
    a: impl Fn(u16) -> Vec<u8>,
    b: impl Fn(u16) -> Vec<u8>,
) -> (f64, f64) {
    let (mut na, mut nb) = (Vec::new(), Vec::new());
    for i in 0..SINGLE_RUNS {
        na.push(time(program, &a(i), 1).as_nanos());
        nb.push(time(program, &b(i), 1).as_nanos());
    }
    na.sort_unstable();
    nb.sort_unstable();
    (na[na.len() / 2] as f64, nb[nb.len() / 2] as f64)
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the benchmark loads XDP programs: run as root");
    xdp_lb_lab::cpu::pin_to_cpu(0).expect("keep the benchmark on CPU 0");
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
    let (wrr_select, wrr_slots) = (wrr.select, wrr.slots.clone());
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
    let macs: Vec<[u8; 6]> = (0..3u8).map(|i| [2, 0, 0, 0, 0, 0x11 + i]).collect();
    let reference_ebpf = load_dr_ref(VIP, 80, &macs).expect("load the DR reference");
    let reference: &Xdp = reference_ebpf
        .program("xdp_dr_ref")
        .unwrap()
        .try_into()
        .unwrap();
    // A wrr service on :88 with a source filter: a global deny list (the client is not
    // in it) and an allow rule that holds the client, so a packet takes both lookups.
    dp.set_filter(
        0,
        &[
            filter_entry(0, "203.0.113.0", 24, 0, FILTER_DENY),
            filter_entry(8, "198.51.100.0", 24, 1, FILTER_ALLOW),
            filter_entry(8, "0.0.0.0", 0, 2, FILTER_DENY),
            filter_entry(8, "::", 0, 2, FILTER_DENY),
        ],
    )
    .unwrap();
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            port_be: 88u16.to_be(),
            ..key
        },
        id: 7,
        forwarding: FWD_DR,
        select: wrr_select,
        active: true,
        filtered: true,
        global_filter: true,
        slots: wrr_slots.clone(),
        ..Default::default()
    })
    .unwrap();
    let lb = dp.program();
    let established_frame = frame(2, 80);
    time(lb, &established_frame, 1); // create the flow
    let filtered_frame = frame(2, 88);
    time(lb, &filtered_frame, 1);
    let (floor_frame, non_vip_frame) = (frame(1, 80), frame(1, 8080));
    let mut rounds: [Vec<f64>; 6] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(time(floor, &floor_frame, REPEAT).as_nanos() as f64);
        rounds[1].push(time(lb, &non_vip_frame, REPEAT).as_nanos() as f64);
        rounds[2].push(time(reference, &non_vip_frame, REPEAT).as_nanos() as f64);
        rounds[3].push(time(lb, &established_frame, REPEAT).as_nanos() as f64);
        rounds[4].push(time(reference, &established_frame, REPEAT).as_nanos() as f64);
        rounds[5].push(time(lb, &filtered_frame, REPEAT).as_nanos() as f64);
    }
    // Each round's ratio of xdp-lb to the reference, before the sorting below.
    let ratios = |ours: usize, reference: usize| -> Vec<f64> {
        rounds[ours]
            .iter()
            .zip(&rounds[reference])
            .map(|(a, b)| a / b)
            .collect()
    };
    let (non_vip_ratio, non_vip_ratio_spread) = median_and_spread(ratios(1, 2));
    let (established_ratio, established_ratio_spread) = median_and_spread(ratios(3, 4));
    let (filtered_ratio, _) = median_and_spread(ratios(5, 4));
    let medians = rounds.map(median_and_spread);
    let [
        (floor_repeat, _),
        (non_vip, non_vip_spread),
        (ref_non_vip, _),
        (established, established_spread),
        (ref_established, _),
        (filtered, _),
    ] = medians;
    let floor_single = median_single(floor, |i| frame(i, 80));
    // The reference keeps no flow state: every packet costs it the same, new or not.
    let ref_single = median_single(reference, |i| frame(10_000u16.wrapping_add(i), 80));
    // Distinct source ports from 10_000: every run is a new flow.
    let new_flow = median_single(lb, |i| frame(10_000u16.wrapping_add(i), 80));
    // The 20 000 flows the previous row created, each seen again: a realistic spread
    // over the table rather than one hot entry. A flow's first packet after it was
    // pinned takes the flow table's way and copies its pin to this CPU's flow cache
    // (as every cached flow does once a second, at each new cache generation); the
    // next ones are answered from the cache.
    let established_table = median_single(lb, |i| frame(10_000u16.wrapping_add(i), 80));
    let established_single = median_single(lb, |i| frame(10_000u16.wrapping_add(i), 80));
    // The same flows on a Maglev service (new, then seen again).
    let keys: Vec<u64> = (0..3u8)
        .map(|i| schedule::backend_key([192, 0, 2, 11 + i].into(), 80))
        .collect();
    let table = schedule::maglev(&keys, &[1, 2, 3], xdp_lb_common::SELECT_HASH_FLOW);
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            port_be: 84u16.to_be(),
            ..key
        },
        id: 3,
        forwarding: FWD_DR,
        select: table.select,
        active: true,
        slots: table.slots,
        ..Default::default()
    })
    .unwrap();
    let lb = dp.program();
    let maglev_new = median_single(lb, |i| frame(10_000u16.wrapping_add(i), 84));
    // The same Maglev service without flow entries (`flow_table = false`): every packet
    // is hashed again, so new and established cost the same.
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            port_be: 86u16.to_be(),
            ..key
        },
        id: 5,
        forwarding: FWD_DR,
        select: xdp_lb_common::SELECT_HASH_FLOW,
        active: true,
        slots: dp
            .schedule_of(&ServiceKey {
                port_be: 84u16.to_be(),
                ..key
            })
            .unwrap(),
        no_flow_table: true,
        ..Default::default()
    })
    .unwrap();
    let lb = dp.program();
    let maglev_no_table = median_single(lb, |i| frame(10_000u16.wrapping_add(i), 86));
    // A persistent wrr service: one more lookup and insert per new flow.
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            port_be: 85u16.to_be(),
            ..key
        },
        id: 4,
        forwarding: FWD_DR,
        select: wrr_select,
        persist_secs: 300,
        persist_prefix: 128,
        active: true,
        slots: wrr_slots.clone(),
        ..Default::default()
    })
    .unwrap();
    let lb = dp.program();
    let persistent_new = median_single(lb, |i| {
        tcp(
            [198, 51, 100, (i % 200) as u8],
            10_000u16.wrapping_add(i),
            VIP,
            85,
        )
    });

    // A wlc service: the kernel walks a schedule as for wrr (the daemon rewrites it from
    // the counts), but its flows carry a clock and count their first FIN or RST.
    dp.set_service(&ServiceSpec {
        key: ServiceKey {
            port_be: 87u16.to_be(),
            ..key
        },
        id: 6,
        forwarding: FWD_DR,
        select: wrr_select,
        ages: true,
        active: true,
        slots: wrr_slots.clone(),
        ..Default::default()
    })
    .unwrap();
    let lb = dp.program();
    let wlc_new = median_single(lb, |i| frame(40_000u16.wrapping_add(i), 87));
    let wlc_established = median_single(lb, |i| frame(40_000u16.wrapping_add(i), 87));

    // TUN grows the frame, so single runs as well; the same 20 000 flows again, timed
    // once their pins are in the flow cache (as the DR row's).
    let tun_new = median_single(lb, |i| frame(30_000u16.wrapping_add(i), 82));
    median_single(lb, |i| frame(30_000u16.wrapping_add(i), 82));
    let tun_established = median_single(lb, |i| frame(30_000u16.wrapping_add(i), 82));

    // NAT on: non-VIP packets now also try the reply table.
    let nat_service = ServiceKey {
        port_be: 81u16.to_be(),
        ..key
    };
    let origins =
        xdp_lb::services::nat_origins_of(v4_mapped(NAT_SERVER), 8080, &[(nat_service, 1)]);
    dp.set_nat(&origins, &NatTimeouts::default()).unwrap();
    let lb = dp.program();
    let mut nat_rounds = Vec::new();
    for _ in 0..ROUNDS {
        nat_rounds.push(time(lb, &non_vip_frame, REPEAT).as_nanos() as f64);
    }
    nat_rounds.sort_by(f64::total_cmp);
    let non_vip_nat_on = nat_rounds[ROUNDS / 2];
    // NAT rewrites addresses, so a repeat loop would feed the rewritten frame back in:
    // single runs only. The forward rows first create 20 000 flows, then reuse them.
    // A NAT new flow against a DR (wrr) new flow at the same table occupancy: the runs
    // alternate, each a flow of its own (the first DR row ran on a near-empty table,
    // and a new flow's cost grows as the table fills).
    let (nat_new, dr_new_beside) = median_alternating(
        lb,
        |i| frame(30_000u16.wrapping_add(i), 81),
        |i| frame(45_000u16.wrapping_add(i), 80),
    );
    let nat_established = median_single(lb, |i| frame(30_000u16.wrapping_add(i), 81));
    // A flow's first reply finds its flow and writes the reply entry; the next ones
    // use that entry.
    let reply = |i: u16| tcp(NAT_SERVER, 8080, CLIENT, 30_000u16.wrapping_add(i));
    let nat_first_reply = median_single(lb, reply);
    let nat_reply = median_single(lb, reply);

    println!("xdp-lb data plane, BPF_PROG_TEST_RUN on one CPU (64-byte TCP payload)");
    println!();
    println!(
        "| case                              | timing              | xdp-lb ns | floor ns | DR ref ns | vs floor | vs DR ref |"
    );
    println!(
        "|-----------------------------------|---------------------|----------:|---------:|----------:|---------:|----------:|"
    );
    let row = |case: &str, how: &str, ours: f64, floor: f64, reference: Versus| {
        let (r, ratio) = match reference {
            Versus::Median(r) => (format!("{r:.1}"), format!("{:.2}", ours / r)),
            Versus::Paired(r, ratio) => (format!("{r:.1}"), format!("{ratio:.2}")),
            Versus::Nothing => ("".into(), "".into()),
        };
        println!(
            "| {case:<33} | {how:<19} | {ours:>9.1} | {floor:>8.1} | {r:>9} | {:>8.2} | {ratio:>9} |",
            ours / floor
        );
    };
    let repeat = format!("median {ROUNDS}x{REPEAT}");
    let single = format!("median {SINGLE_RUNS}x1");
    row(
        "non-VIP packet (XDP_PASS)",
        &repeat,
        non_vip,
        floor_repeat,
        Versus::Paired(ref_non_vip, non_vip_ratio),
    );
    row(
        "established, one hot flow",
        &repeat,
        established,
        floor_repeat,
        Versus::Paired(ref_established, established_ratio),
    );
    row(
        "established, hot, source filter",
        &repeat,
        filtered,
        floor_repeat,
        Versus::Paired(ref_established, filtered_ratio),
    );
    row(
        "established, 20,000 flows",
        &single,
        established_single,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "established, 20,000, flow table",
        &single,
        established_table,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "new flow, wrr",
        &single,
        new_flow,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "new flow, maglev",
        &single,
        maglev_new,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "any packet, maglev, no flow table",
        &single,
        maglev_no_table,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "new flow, wrr + persistence",
        &single,
        persistent_new,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "new flow, wlc",
        &single,
        wlc_new,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "established, 20,000 flows, wlc",
        &single,
        wlc_established,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "non-VIP packet, NAT enabled",
        &repeat,
        non_vip_nat_on,
        floor_repeat,
        Versus::Median(ref_non_vip),
    );
    row(
        "NAT forward, new flow",
        &single,
        nat_new,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "NAT forward, established",
        &single,
        nat_established,
        floor_single,
        Versus::Median(ref_single),
    );
    row(
        "NAT reply, first (writes entry)",
        &single,
        nat_first_reply,
        floor_single,
        Versus::Nothing,
    );
    row(
        "NAT reply, established",
        &single,
        nat_reply,
        floor_single,
        Versus::Nothing,
    );
    row(
        "TUN encapsulation, new flow",
        &single,
        tun_new,
        floor_single,
        Versus::Nothing,
    );
    row(
        "TUN encapsulation, established",
        &single,
        tun_established,
        floor_single,
        Versus::Nothing,
    );
    println!();
    println!(
        "floor = MAC-swap XDP_TX; DR ref = parse, one hash lookup, pick by hash, rewrite MACs \
         (no flow table); the rounds alternate the programs."
    );
    println!(
        "repeat rows: one hot packet, median of {ROUNDS} rounds (spread p10-p90: non-VIP \
         {non_vip_spread:.0}%, established {established_spread:.0}%), ratios the median of the \
         rounds' own (spread p10-p90: non-VIP {non_vip_ratio_spread:.0}%, established \
         {established_ratio_spread:.0}%); x1 rows: single runs over 20,000 distinct flows (new, \
         then seen again), median, including the kernel's per-call timer cost; an established \
         flow's first packet after its pin (and one a second after) takes the flow table's way \
         (the flow table row) and caches its pin, the next ones are answered from this CPU's \
         flow cache."
    );
    println!(
        "non-VIP with NAT enabled costs {:+.0}% against without; a NAT new flow {:.2}x a DR \
         new flow (runs alternating with DR new flows on the same table: {:.0} ns; {:.2}x \
         against the first DR row).",
        (non_vip_nat_on / non_vip - 1.0) * 100.0,
        nat_new / dr_new_beside,
        dr_new_beside,
        nat_new / new_flow
    );
    println!(
        "a source filter (global deny list + the service's allow rule: two trie lookups and \
         a rule counter) adds {:.1} ns ({:.0}%) to an established packet.",
        filtered - established,
        (filtered / established - 1.0) * 100.0
    );
    let info = dp.program().info().expect("program info");
    println!(
        "program size: {} BPF instructions after loading (subprograms included); the verifier \
         processed {} instructions to accept it.",
        info.size_translated()
            .map_or("?".into(), |b| (b / 8).to_string()),
        info.verified_instruction_count()
            .map_or("?".into(), |n| n.to_string()),
    );
}

/// A filter trie entry: `addr/len` in `scope`, decided by rule `rule`.
fn filter_entry(scope: u32, addr: &str, len: u8, rule: u32, action: u32) -> FilterEntry {
    FilterEntry {
        scope,
        addr: addr.parse().unwrap(),
        prefix_len: len,
        rule,
        action,
    }
}
