//! `cargo xtask bench` (checks part): what health checking costs and how fast it acts.
//!
//! 1,000 TCP checks at a 1 s interval against 1,000 local listeners in a fresh network
//! namespace, run for a fixed window: the CPU time this process spent (user + system,
//! from getrusage) per second of wall time. Then the latency from a listener closing
//! to its `down` transition, for interval 1 s / fall 1, over several servers.
use std::time::{Duration, Instant};

use tokio::{net::TcpListener, sync::mpsc};
use xdp_lb_checks::{BackendId, CheckParams, CheckSpec, run};
use xdp_lb_lab::Netns;

const SERVERS: usize = 1_000;
const WINDOW: Duration = Duration::from_secs(10);
const LATENCY_SAMPLES: usize = 20;

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn params(port: u16) -> CheckParams {
    let mut p = CheckParams::new(([127, 0, 0, 1], port).into(), &CheckSpec::Tcp);
    p.interval = Duration::from_secs(1);
    p.warmup = Duration::from_secs(1);
    p.connect_timeout = Duration::from_secs(1);
    p.retry = 0;
    p
}

fn main() {
    xdp_lb_lab::require_root().expect("the benchmark makes a network namespace");
    let ns = Netns::new("xlbchk").unwrap();
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    let (cpu_per_s, latencies) = ns
        .run(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(measure())
        })
        .unwrap();
    let mut sorted = latencies.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let max = *sorted.last().unwrap();
    println!("xdp-lb health checks (TCP, interval 1 s, connect timeout 1 s, fall 1)");
    println!();
    let row = |what: &str, value: String| println!("| {what:<58} | {value:>10} |");
    println!("| {:<58} | {:>10} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(60), "-".repeat(12));
    let cpu_ms = cpu_per_s.as_secs_f64() * 1000.0;
    row(
        &format!("CPU ms per second, {SERVERS} TCP checks at 1 s (incl. listeners)"),
        format!("{cpu_ms:.1}"),
    );
    row(
        "share of one core",
        format!("{:.1} %", cpu_per_s.as_secs_f64() * 100.0),
    );
    row(
        &format!("failure to down transition, median of {LATENCY_SAMPLES}"),
        format!("{:.0} ms", median.as_secs_f64() * 1000.0),
    );
    row(
        "failure to down transition, max",
        format!("{:.0} ms", max.as_secs_f64() * 1000.0),
    );
    println!();
    println!("The listeners accept in the same process, so the CPU figure includes them.");
    println!("A refused connection is detected on the next check: about half an interval");
    println!("on average, at most one (the schedule switch after it is one map update).");
}

async fn measure() -> (Duration, Vec<Duration>) {
    let mut listeners = Vec::with_capacity(SERVERS);
    for _ in 0..SERVERS {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    // Accept and drop connections so the backlog never fills.
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut accepts = Vec::new();
    for l in listeners {
        accepts.push(tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        }));
    }
    let checks = ports
        .iter()
        .enumerate()
        .map(|(i, port)| (BackendId(i as u32), CheckSpec::Tcp, params(*port)))
        .collect();
    let (tx, mut rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(run(checks, 256, tx, async move {
        let _ = stop_rx.await;
    }));
    // Let the warmup spread settle, then measure a window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let cpu_per_s = (cpu_time() - cpu0).div_f64(wall0.elapsed().as_secs_f64());

    // Failure latency: stop one server's listener at a time and wait for its transition.
    let mut latencies = Vec::new();
    for (i, accept) in accepts.iter_mut().enumerate().take(LATENCY_SAMPLES) {
        accept.abort();
        let _ = accept.await;
        let failed = Instant::now();
        loop {
            let t = rx.recv().await.expect("scheduler running");
            if t.backend == BackendId(i as u32) && !t.up {
                latencies.push(failed.elapsed());
                break;
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = scheduler.await;
    (cpu_per_s, latencies)
}
