//! `xdp-lb-demo` (run by `cargo xtask demo`): a throwaway lab in network namespaces
//! with real traffic through the real daemon, on an embedded default config.
//!
//! Client, one LB and three DR real servers (python HTTP servers answering their name,
//! weights 1:2:3) on one bridge; the `xdp-lb` binary next to this one runs in the LB
//! namespace exactly as on a host; the client opens new connections to the VIP and
//! the answers are tallied. Everything is torn down at the end, also on failure.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser;
use xdp_lb_lab::{Daemon, DrLab, DrLabOptions, http_get_keepalive, http_get_new_connections};

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
}

const BACKENDS: [(&str, u32); 3] = [("b1", 1), ("b2", 2), ("b3", 3)];
const IO_TIMEOUT: Duration = Duration::from_secs(5);
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

    println!("== building the lab (network namespaces, veths, a bridge)");
    let names: Vec<&str> = BACKENDS.iter().map(|(n, _)| *n).collect();
    let mut lab = DrLab::build(DrLabOptions::one_arm(&names))?;
    lab.start_http_backends(80)?;
    println!(
        "   client {}  ->  VIP {}:80 on the LB (XDP on its eth0)",
        lab.client_addr(),
        DrLab::VIP
    );
    for b in &lab.backends {
        println!(
            "   real server {} at {} (VIP on lo, python http.server)",
            b.name, b.addr
        );
    }

    let config = demo_config(&lab);
    println!("\n== the embedded config\n");
    for line in config.lines() {
        println!("   {line}");
    }

    println!("\n== starting xdp-lb in the LB namespace");
    let daemon = Daemon::start(&lab.lb, &daemon_bin, &config, Duration::from_secs(30))?;
    for line in daemon.log().lines() {
        println!("   | {line}");
    }

    let vip = SocketAddr::from((DrLab::VIP, 80));
    println!(
        "\n== {} new HTTP connections from the client to {vip}",
        args.connections
    );
    let tally = http_get_new_connections(&lab.client, vip, args.connections, IO_TIMEOUT)?;
    let total_weight: u32 = BACKENDS.iter().map(|(_, w)| w).sum();
    println!("\n   real server  weight  answered  share   expected");
    for (name, weight) in BACKENDS {
        let got = tally.get(name).copied().unwrap_or(0);
        let share = 100.0 * got as f64 / args.connections as f64;
        let expected = 100.0 * f64::from(weight) / f64::from(total_weight);
        let bar = "#".repeat((share / 2.0).round() as usize);
        println!("   {name:<11}  {weight:>6}  {got:>8}  {share:>5.1}%  {expected:>5.1}%  {bar}");
    }

    println!("\n== one keep-alive connection, 50 requests");
    let names = http_get_keepalive(&lab.client, vip, 50, IO_TIMEOUT)?;
    let first = names
        .first()
        .context("no answer on the keep-alive connection")?;
    let same = names.iter().filter(|n| *n == first).count();
    println!("   all answered by {first}: {same} of {}", names.len());

    println!("\n== `xdp-lb status` in the LB namespace (read from the daemon's status API)\n");
    let status = lab
        .lb
        .command(&daemon_bin)
        .args(["status", "--api", API])
        .output()
        .context("running `xdp-lb status`")?;
    if !status.status.success() {
        bail!(
            "`xdp-lb status` failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        println!(
            "{}",
            if line.is_empty() {
                String::new()
            } else {
                format!("   {line}")
            }
        );
    }

    println!("\n== stopping xdp-lb (SIGTERM) and tearing the lab down");
    let log = daemon.stop()?;
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

fn demo_config(lab: &DrLab) -> String {
    let mut text = format!(
        "[global]\nrouter_id = \"demo-lb\"\napi = \"{API}\"\n\n[dataplane]\ninterfaces = [\"eth0\"]\n\n\
         [[virtual_server]]\nvip = \"{}\"\nport = 80\nprotocol = \"tcp\"\nscheduler = \"wrr\"\nforwarding = \"dr\"\n",
        DrLab::VIP
    );
    for (b, (_, weight)) in lab.backends.iter().zip(BACKENDS) {
        text += &format!(
            "\n  [[virtual_server.real_server]]\n  address = \"{}\"\n  weight = {weight}\n",
            b.addr
        );
    }
    text
}
