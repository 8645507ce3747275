//! xdp-lb's end-to-end tests (`tests/*.rs`: the real binary in network namespaces,
//! beside real keepalived, real HTTP/UDP servers and the CLI) and the demo
//! (`xdp-lb-demo`). This library is what they share: a lab with XDP-ready veth peers,
//! and the real `xdp-lb` binary started inside the LB namespace. Nothing here is a
//! dependency of the `xdp-lb` package, so installing it builds only what a host needs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use xdp_lb_lab::{Daemon, DrLab, DrLabOptions, Netns};

/// Generous bound for the daemon to resolve MACs and attach.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((DrLab::VIP, port))
}

/// Builds a DR lab (its switch-side veth peers are made ready for XDP_TX by the lab).
pub fn dr_lab(opts: DrLabOptions) -> DrLab {
    DrLab::build(opts).expect("build the DR lab")
}

/// A config for the lab: one service per (port, proto) with the lab's backends.
pub fn config(lab: &DrLab, services: &[(u16, &str, &[u32])]) -> String {
    let ifaces: Vec<String> = lab
        .lb_interfaces()
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect();
    let mut text = format!(
        "[dataplane]\ninterfaces = [{}]\nneighbour_timeout = \"10s\"\n",
        ifaces.join(", ")
    );
    for (port, proto, weights) in services {
        text += &format!(
            "\n[[virtual_server]]\nvip = \"{}\"\nport = {port}\nprotocol = \"{proto}\"\nscheduler = \"wrr\"\n",
            DrLab::VIP
        );
        for (b, w) in lab.backends.iter().zip(weights.iter()) {
            text += &format!(
                "  [[virtual_server.real_server]]\n  address = \"{}\"\n  weight = {w}\n",
                b.addr
            );
        }
    }
    text
}

/// Runs the real `xdp-lb` with `args` in `ns` and returns its stdout; fails the test,
/// naming the arguments and showing stderr, unless it exited 0.
pub fn run_in(ns: &Netns, args: &[&str]) -> String {
    let out = ns.command(binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "xdp-lb {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `xdp-lb status --json`, run in `ns` against the daemon's default API.
pub fn status(ns: &Netns) -> xdp_lb::status::Snapshot {
    let json = run_in(ns, &["status", "--json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The `xdp-lb` binary of this workspace. It belongs to another package, which cargo
/// does not build for these tests, so the first call builds it (a no-op when it is up
/// to date) with the profile the tests were built with.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let release = !cfg!(debug_assertions);
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--package", "xdp-lb", "--bin", "xdp-lb"])
            .current_dir(root);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("start cargo to build xdp-lb");
        assert!(
            status.success(),
            "building the xdp-lb binary failed: {status}"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("xdp-lb")
    })
}

/// Starts the real `xdp-lb` in `ns` and waits for it to be ready.
pub fn start(ns: &Netns, config: &str) -> Daemon {
    Daemon::start(ns, binary(), config, READY_TIMEOUT).unwrap()
}

/// Starts the real `xdp-lb` in `ns` without waiting.
pub fn spawn(ns: &Netns, config: &str) -> Daemon {
    Daemon::spawn(ns, binary(), config).unwrap()
}

/// Asserts each backend's count is within ±`pct`% of its weight's share of `total`.
pub fn assert_split(
    tally: &std::collections::BTreeMap<String, usize>,
    weights: &[(&str, u32)],
    total: usize,
    pct: f64,
) {
    let sum: u32 = weights.iter().map(|(_, w)| w).sum();
    let seen: usize = tally.values().sum();
    assert_eq!(seen, total, "answers missing: {tally:?}");
    for (name, w) in weights {
        let expected = total as f64 * f64::from(*w) / f64::from(sum);
        let got = *tally.get(*name).unwrap_or(&0) as f64;
        let bound = expected * pct / 100.0;
        assert!(
            (got - expected).abs() <= bound,
            "backend {name}: {got} connections, expected {expected} ± {bound} (weights {weights:?}); tally {tally:?}"
        );
    }
}

/// Runs the `xdp-lb` binary with `args`: exit code, stdout, stderr.
pub fn xdp_lb(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
