//! `cargo xtask …`: everything a newcomer needs, each step idempotent.
//!
//! - `setup`       install what a bare machine lacks (apt packages, nightly rust-src, bpf-linker)
//! - `build-ebpf`  build the XDP program and the daemon that embeds it
//! - `test`        every test: unit, BPF_PROG_TEST_RUN and network-namespace integration,
//!   then the core BPF_PROG_TEST_RUN tests again on Debian 12's Linux 6.1 under qemu
//! - `older-kernel` tests on Linux 6.1: every BPF_PROG_TEST_RUN binary, or those named
//!   (network-namespace tests too)
//! - `demo`        a throwaway lab in network namespaces with real traffic through xdp-lb
//! - `bench`       BPF_PROG_TEST_RUN ns/packet beside a trivial XDP_TX floor and a
//!   minimal DR program, Mpps end to end through veth beside that program, and VRRP
//!   takeover gaps seen by a client, xdp-lb beside keepalived
//! - `package`     a Debian package: the binary (XDP program embedded), the systemd
//!   unit, a default configuration, the man page and shell completions
mod older_kernel;
mod package;
mod setup;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing prerequisites (idempotent).
    Setup,
    /// Build the XDP object and the xdp-lb binary that embeds it.
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// Run every test (needs root: XDP, namespaces, raw sockets).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run tests on Debian 12's Linux 6.1, booted under qemu: the verifier and helpers
    /// of an older kernel than this one. Without names: every BPF_PROG_TEST_RUN binary.
    OlderKernel {
        /// BPF test binaries of the xdp-lb package (xdp_program, xdp_nat, ...) or
        /// network-namespace tests (dr_netns, nat_netns, ...).
        tests: Vec<String>,
    },
    /// Run the demo lab: client, LB, three backends weighted 1:2:3, real HTTP traffic.
    Demo {
        /// New connections the client opens.
        #[arg(long, default_value_t = 600)]
        connections: usize,
        /// The active-active lab instead: three LBs behind an ECMP router, each
        /// announcing the VIP with its own FRR (drain, then a host crash seen by BFD).
        #[arg(long)]
        ecmp: bool,
    },
    /// Print the benchmark tables: data plane, veth end to end (beside the DR reference),
    /// VRRP takeover (beside keepalived), checks.
    Bench,
    /// Build the Debian package (target/package/xdp-lb_VERSION-1_amd64.deb).
    Package {
        /// Package the debug build (for tests; hosts get the release build).
        #[arg(long)]
        debug: bool,
        /// Where the .deb goes.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::install(),
        Cmd::BuildEbpf { release } => {
            setup::install()?;
            let mut cmd = cargo(&["build", "--package", "xdp-lb"]);
            if release {
                cmd.arg("--release");
            }
            run_cmd(&mut cmd)?;
            let profile = if release { "release" } else { "debug" };
            println!("built target/{profile}/xdp-lb (the XDP program is embedded in it)");
            Ok(())
        }
        Cmd::Test { args } => {
            setup::install()?;
            require_root("the tests load XDP programs and build network namespaces")?;
            // Network-namespace tests run one at a time: 2 cores, and timing-free but
            // traffic-heavy tests are easier to read when they do not interleave.
            // The eBPF crate builds for its bpf target only (its host stub bin would
            // collide with the daemon's name), through xdp-lb's build script.
            let mut cmd = cargo(&[
                "test",
                "--workspace",
                "--exclude",
                "xdp-lb-ebpf",
                "--no-fail-fast",
            ]);
            cmd.args(&args).args(["--", "--test-threads=1"]);
            run_cmd(&mut cmd)?;
            // A filtered run is someone's focus: the older kernel only runs with all.
            if args.is_empty() {
                older_kernel::run(older_kernel::IN_TEST)?;
            }
            Ok(())
        }
        Cmd::OlderKernel { tests } => {
            setup::install()?;
            require_root("the test binaries load XDP programs (inside the guest as root)")?;
            let tests: Vec<&str> = tests.iter().map(String::as_str).collect();
            older_kernel::run(if tests.is_empty() {
                older_kernel::ALL
            } else {
                &tests
            })
        }
        Cmd::Demo { connections, ecmp } => {
            setup::install()?;
            require_root("the demo builds network namespaces and attaches XDP")?;
            // The demo (in the end-to-end tests' package) runs the daemon beside it.
            run_cmd(&mut cargo(&[
                "build",
                "--release",
                "--package",
                "xdp-lb",
                "--package",
                "xdp-lb-tests",
                "--bins",
            ]))?;
            let mut demo = Command::new(workspace_root().join("target/release/xdp-lb-demo"));
            demo.args(["--connections", &connections.to_string()]);
            if ecmp {
                demo.arg("--ecmp");
            }
            run_cmd(&mut demo)
        }
        Cmd::Package { debug, out } => {
            setup::install()?;
            let out = out.unwrap_or_else(|| workspace_root().join("target/package"));
            std::fs::create_dir_all(&out)?;
            let deb = package::build(!debug, &out)?;
            let size = std::fs::metadata(&deb)?.len();
            println!("{} ({} KiB)", deb.display(), size / 1024);
            run_cmd(Command::new("dpkg-deb").arg("--contents").arg(&deb))
        }
        Cmd::Bench => {
            setup::install()?;
            require_root("the benchmarks load XDP programs and build network namespaces")?;
            run_cmd(&mut cargo(&[
                "bench",
                "-p",
                "xdp-lb",
                "--bench",
                "dataplane",
            ]))?;
            // End to end through veth, xdp-lb beside the DR reference (~1 minute).
            run_cmd(&mut cargo(&["bench", "-p", "xdp-lb", "--bench", "veth"]))?;
            // VRRP takeover measured by a client, xdp-lb beside keepalived (~4 minutes).
            run_cmd(&mut cargo(&[
                "bench", "-p", "xdp-lb", "--bench", "failover",
            ]))?;
            run_cmd(&mut cargo(&[
                "bench",
                "-p",
                "xdp-lb-checks",
                "--bench",
                "checks",
            ]))
        }
    }
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(workspace_root());
    cmd
}

pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn require_root(why: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{why}: run as root (e.g. `sudo -E cargo xtask …`)");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
