//! `xdp-lb-demo` (run by `cargo xtask demo`): a throwaway lab in network namespaces
//! with real traffic through the real daemon, on an embedded default config.
//!
//! A client, two LBs and three DR real servers (python HTTP and UDP servers answering
//! their name, weights 1:2:3) on one bridge. The `xdp-lb` binary next to this one runs
//! in each LB namespace exactly as on a host, the two sharing the VIP over VRRP. The
//! client's new connections to the VIP are tallied; then the MASTER is killed while the
//! client probes the VIP over UDP, and the backup's takeover is shown as the client saw
//! it, and traffic tallied again through it. Everything is torn down at the end, also
//! on failure.
//!
//! With `--ecmp`: three LBs active-active behind a router (FRR bgpd, ECMP), each
//! announcing the VIP through its own FRR while its service has quorum; the client's
//! connections spread over them; one LB drains, then another one's host dies, and
//! BFD takes its path off the router.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use xdp_lb_lab::{
    Daemon, DrLab, DrLabOptions, Netns, Probe, http_get_keepalive, http_get_new_connections,
};

#[derive(Parser)]
#[command(
    name = "xdp-lb-demo",
    about = "Run xdp-lb in a throwaway network-namespace lab"
)]
struct Args {
    /// New connections the client opens to the VIP.
    #[arg(long, default_value_t = 600)]
    connections: usize,
    /// The daemon binary (default: `xdp-lb` beside this program).
    #[arg(long)]
    xdp_lb: Option<PathBuf>,
    /// The active-active lab instead: three LBs behind an ECMP router (needs FRR).
    #[arg(long)]
    ecmp: bool,
}

const BACKENDS: [(&str, u32); 3] = [("b1", 1), ("b2", 2), ("b3", 3)];
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a daemon may take to start or change state.
const READY: Duration = Duration::from_secs(30);
/// The UDP service the client probes during the failover.
const UDP_PORT: u16 = 5353;
/// The status API, on the LB namespace's own loopback.
const API: &str = "127.0.0.1:9180";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let daemon_bin = match args.xdp_lb {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("xdp-lb"),
    };
    if !daemon_bin.exists() {
        bail!(
            "{} not found: build it first (`cargo xtask demo` does)",
            daemon_bin.display()
        );
    }
    xdp_lb_lab::require_root()?;
    if args.ecmp {
        return ecmp_demo(&daemon_bin, args.connections);
    }

    println!("== building the lab (network namespaces, veths, a bridge)");
    let names: Vec<&str> = BACKENDS.iter().map(|(n, _)| *n).collect();
    let mut lab = DrLab::build(DrLabOptions::one_arm(&names).with_standby())?;
    lab.start_http_backends(80)?;
    lab.start_udp_backends(UDP_PORT)?;
    let standby = lab.standby.as_ref().context("the lab has no standby LB")?;
    println!(
        "   client {}  ->  VIP {} held by whichever LB is VRRP MASTER",
        lab.client_addr(),
        DrLab::VIP
    );
    println!(
        "   lb1 {} (priority 150) and lb2 {} (priority 100), XDP on each eth0",
        lab.lb_addr(),
        DrLab::STANDBY_ADDR
    );
    for b in &lab.backends {
        println!(
            "   real server {} at {} (VIP on lo, python http.server and a UDP echo)",
            b.name, b.addr
        );
    }

    let config = demo_config(&lab, 150);
    println!("\n== the embedded config of lb1 (lb2's differs in `priority` only)\n");
    for line in config.lines() {
        println!("   {line}");
    }

    println!("\n== starting xdp-lb on lb1, then on lb2");
    let mut lb1 = Daemon::start(&lab.lb, &daemon_bin, &config, READY)?;
    lb1.wait_for_line("data plane follows vrrp", READY)?;
    let mut lb2 = Daemon::start(standby, &daemon_bin, &demo_config(&lab, 100), READY)?;
    lb2.wait_for_line("entering BACKUP state", READY)?;
    show_log("lb1", &lb1, |l| l.contains("vrrp") || l.contains("ready"));
    show_log("lb2", &lb2, |l| l.contains("vrrp") || l.contains("ready"));

    let vip = SocketAddr::from((DrLab::VIP, 80));
    println!(
        "\n== {} new HTTP connections from the client to {vip} (through lb1)",
        args.connections
    );
    tally(&lab, vip, args.connections)?;

    println!("\n== one keep-alive connection, 50 requests");
    let names = http_get_keepalive(&lab.client, vip, 50, IO_TIMEOUT)?;
    let first = names
        .first()
        .context("no answer on the keep-alive connection")?;
    let same = names.iter().filter(|n| *n == first).count();
    println!("   all answered by {first}: {same} of {}", names.len());

    show_status(&lab.lb, &daemon_bin, "lb1")?;

    let udp = SocketAddr::from((DrLab::VIP, UDP_PORT));
    println!("\n== lb1 crashes (kill -9) while the client sends to udp://{udp} every 10 ms");
    let probe = Probe::start(&lab.client, udp, Duration::from_millis(10))?;
    let before = probe.wait_any(Instant::now(), IO_TIMEOUT)?;
    let killed = Instant::now();
    drop(lb1); // SIGKILL: no priority-0 advert, the VIP left behind on lb1
    lb2.wait_for_line("entering MASTER state", READY)?;
    let mastered = Instant::now();
    let after = probe.wait_any(mastered, IO_TIMEOUT)?;
    let replies = probe.stop()?;
    let silence = replies
        .windows(2)
        .filter(|w| w[1].at >= killed && w[0].at <= after.at)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default();
    println!(
        "   lb2 became MASTER {} ms after the kill (VRRPv3 at 100 ms: master-down \
         interval = 3 x 100 ms + 61 ms skew)",
        (mastered - killed).as_millis()
    );
    println!(
        "   the client's longest silence: {} ms; its flow went to {} before and to {} \
         after (scheduler maglev: both LBs pick the same real server)",
        silence.as_millis(),
        before.from,
        after.from
    );

    println!(
        "\n== {} new HTTP connections to {vip} again (through lb2)",
        args.connections
    );
    tally(&lab, vip, args.connections)?;
    show_status(standby, &daemon_bin, "lb2")?;

    println!("\n== stopping xdp-lb on lb2 (SIGTERM) and tearing the lab down");
    let log = lb2.stop()?;
    for line in log.lines().skip_while(|l| !l.contains("SIGTERM received")) {
        println!("   | {line}");
    }
    let prefix = lab.prefix().to_string();
    drop(lab);
    let left = xdp_lb_lab::namespaces_with_prefix(&prefix)?;
    if !left.is_empty() {
        bail!("namespaces left behind: {left:?}");
    }
    println!("   done: the lab's namespaces are gone");
    Ok(())
}

/// Opens `connections` new HTTP connections to `vip` and prints who answered.
fn tally(lab: &DrLab, vip: SocketAddr, connections: usize) -> anyhow::Result<()> {
    let tally = http_get_new_connections(&lab.client, vip, connections, IO_TIMEOUT)?;
    let total_weight: u32 = BACKENDS.iter().map(|(_, w)| w).sum();
    println!("\n   real server  weight  answered  share   expected");
    for (name, weight) in BACKENDS {
        let got = tally.get(name).copied().unwrap_or(0);
        let share = 100.0 * got as f64 / connections as f64;
        let expected = 100.0 * f64::from(weight) / f64::from(total_weight);
        let bar = "#".repeat((share / 2.0).round() as usize);
        println!("   {name:<11}  {weight:>6}  {got:>8}  {share:>5.1}%  {expected:>5.1}%  {bar}");
    }
    Ok(())
}

/// The daemon's log lines that `keep` picks, indented under `who`.
fn show_log(who: &str, daemon: &Daemon, keep: impl Fn(&str) -> bool) {
    for line in daemon.log().lines().filter(|l| keep(l)) {
        println!("   {who} | {line}");
    }
}

/// Runs `xdp-lb status` in `ns` and prints it.
fn show_status(ns: &Netns, daemon_bin: &Path, who: &str) -> anyhow::Result<()> {
    println!("\n== `xdp-lb status` on {who} (read from the daemon's status API)\n");
    let status = ns
        .command(daemon_bin)
        .args(["status", "--api", API])
        .output()
        .context("running `xdp-lb status`")?;
    if !status.status.success() {
        bail!(
            "`xdp-lb status` failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    let shown = String::from_utf8_lossy(&status.stdout);
    for line in shown.lines() {
        println!(
            "{}",
            if line.is_empty() {
                String::new()
            } else {
                format!("   {line}")
            }
        );
    }
    if shown.contains("VIP CONFLICT") {
        println!(
            "\n   (the conflict is real: the killed lb1 could not take back the VIP it had \
             added, so its kernel still answers ARP for it; xdp-lb started again there \
             removes it before it joins as BACKUP)"
        );
    }
    Ok(())
}

/// One LB's config: the HTTP and UDP services, and the VRRP instance holding the VIP.
fn demo_config(lab: &DrLab, priority: u8) -> String {
    let mut text = format!(
        "[global]\nrouter_id = \"demo-lb\"\napi = \"{API}\"\n\n[dataplane]\ninterfaces = [\"eth0\"]\n"
    );
    // wrr for the exact 1:2:3 tally; maglev for the probed UDP flow, so both LBs send it
    // to the same real server.
    for (port, protocol, scheduler) in [(80, "tcp", "wrr"), (UDP_PORT, "udp", "maglev")] {
        text += &format!(
            "\n[[virtual_server]]\nvip = \"{}\"\nport = {port}\nprotocol = \"{protocol}\"\n\
             scheduler = \"{scheduler}\"\nforwarding = \"dr\"\n",
            DrLab::VIP
        );
        for (b, (_, weight)) in lab.backends.iter().zip(BACKENDS) {
            text += &format!(
                "\n  [[virtual_server.real_server]]\n  address = \"{}\"\n  weight = {weight}\n",
                b.addr
            );
        }
    }
    text += &format!(
        "\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\n\
         version = 3\nadvert_interval = \"100ms\"\nvirtual_ipaddresses = [\"{}/32\"]\n",
        DrLab::VIP
    );
    text
}

/// The active-active demo (`--ecmp`).
fn ecmp_demo(daemon_bin: &Path, connections: usize) -> anyhow::Result<()> {
    use xdp_lb_lab::ecmp::{EcmpLab, VIP, lb_addr, xdp_lb_config};
    const LBS: usize = 3;
    println!("== building the ECMP lab: a router (FRR bgpd, ECMP) and {LBS} LBs (each with FRR)");
    let mut lab = EcmpLab::build(LBS, 3)?;
    for b in &mut lab.backends {
        b.start_http(80)?;
    }
    let addrs: Vec<_> = lab.backends.iter().map(|b| b.addr).collect();
    println!(
        "   client -> router -> VIP {VIP}: one next hop per LB announcing it \
         (maximum-paths 8, the 5-tuple picks the LB; BFD 20 ms x 3 on every session)"
    );
    println!("\n== the embedded config of lb1 (the others differ in `router_id` only)\n");
    for line in xdp_lb_config(0, &addrs).lines() {
        println!("   {line}");
    }
    println!(
        "\n== starting xdp-lb on every LB: with quorum, each puts the VIP on lo, FRR announces it"
    );
    let mut daemons = Vec::new();
    for i in 0..LBS {
        let mut d = Daemon::start(&lab.lbs[i], daemon_bin, &xdp_lb_config(i, &addrs), READY)?;
        d.wait_for_line("VIP announced", READY)?;
        daemons.push(Some(d));
    }
    let took = lab.wait_next_hops(&[0, 1, 2], READY)?;
    println!(
        "   the router holds {LBS} paths after {:.1} s:",
        took.as_secs_f64()
    );
    show_route(&lab)?;

    let vip = SocketAddr::from((VIP, 80));
    println!("\n== {connections} new HTTP connections from the client's ports to {vip}");
    let before = lb_new_flows(&lab, daemon_bin)?;
    let tally = http_get_new_connections(&lab.client, vip, connections, IO_TIMEOUT)?;
    let after = lb_new_flows(&lab, daemon_bin)?;
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        println!("   lb{} ({}) took {:>4} of them", i + 1, lb_addr(i), a - b);
    }
    println!("   real servers: {tally:?} (Maglev: any LB sends a connection to the same one)");

    println!("\n== `xdp-lb drain` on lb1: it withdraws the VIP, then waits for its traffic to end");
    let out = lab.lbs[0]
        .command(daemon_bin)
        .args(["drain", "--api", API])
        .output()
        .context("running `xdp-lb drain`")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("   {line}");
    }
    show_route(&lab)?;

    println!("\n== lb3's host dies (link down, kill -9 of xdp-lb and FRR)");
    let killed = Instant::now();
    lab.lbs[2].ip(["link", "set", "eth0", "down"])?;
    drop(daemons[2].take());
    if let Some(mut frr) = lab.lb_frr[2].take() {
        frr.kill9();
    }
    lab.wait_next_hops(&[1], READY)?;
    println!(
        "   the router dropped lb3's path {:.0} ms after the crash (BFD found it silent; \
         the BGP hold time is 3 s)",
        killed.elapsed().as_secs_f64() * 1000.0
    );
    show_route(&lab)?;
    let tally = http_get_new_connections(&lab.client, vip, connections, IO_TIMEOUT)?;
    println!("   {connections} new connections, all through lb2: {tally:?}");

    println!("\n== stopping the LBs and tearing the lab down");
    for d in daemons.into_iter().flatten() {
        d.stop()?;
    }
    let prefix = lab.prefix().to_string();
    drop(lab);
    let left = xdp_lb_lab::namespaces_with_prefix(&prefix)?;
    if !left.is_empty() {
        bail!("namespaces left behind: {left:?}");
    }
    println!("   done: the lab's namespaces are gone");
    Ok(())
}

/// The router's route to the VIP, as `vtysh` shows it.
fn show_route(lab: &xdp_lb_lab::ecmp::EcmpLab) -> anyhow::Result<()> {
    let route = lab
        .router_frr
        .vtysh(&format!("show ip route {}/32", xdp_lb_lab::ecmp::VIP))?;
    for line in route.lines().filter(|l| l.contains("via")) {
        println!("   router | {}", line.trim());
    }
    Ok(())
}

/// Each LB's new flows so far, from its status API.
fn lb_new_flows(lab: &xdp_lb_lab::ecmp::EcmpLab, daemon_bin: &Path) -> anyhow::Result<Vec<u64>> {
    lab.lbs
        .iter()
        .map(|ns| {
            let out = ns
                .command(daemon_bin)
                .args(["status", "--json", "--api", API])
                .output()
                .context("running `xdp-lb status --json`")?;
            let s: xdp_lb::status::Snapshot =
                serde_json::from_slice(&out.stdout).context("reading `xdp-lb status --json`")?;
            Ok(s.services.first().map_or(0, |svc| svc.counters.new_flows))
        })
        .collect()
}
