//! Shared pieces of the checker tests: a fresh network namespace per test (so every test
//! has its own loopback and ports, and nothing reaches the host's network), a silent
//! address to time out against, and helpers to build checks.
//!
//! Each integration test file includes this module and uses a part of it.
#![allow(dead_code)]

pub mod web;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use xdp_lb_checks::{CheckParams, CheckSpec, Checker, Outcome};
use xdp_lb_lab::Netns;

/// Runs `f` on a current-thread tokio runtime inside a fresh network namespace with `lo`
/// up. Needs root: fails loudly (never skips) without it.
pub fn in_netns<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    in_netns_with(|_| {}, f)
}

/// [`in_netns`] with `setup` run on the namespace first (links, addresses, sysctls).
pub fn in_netns_with<F, Fut, T>(setup: impl FnOnce(&Netns), f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    xdp_lb_lab::require_root().unwrap_or_else(|e| panic!("{e:#}"));
    let ns = Netns::new("xlbck").unwrap_or_else(|e| panic!("{e:#}"));
    setup(&ns);
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The address [`blackhole`] makes silent.
pub const SILENT: &str = "198.51.100.2";

/// Makes [`SILENT`] an address whose packets leave and vanish: a veth whose peer has no
/// address, and a permanent neighbour entry so no ARP failure turns silence into an
/// error. Connects to it hang; pings get no reply.
pub fn blackhole(ns: &Netns) {
    let ip = |args: &[&str]| {
        ns.ip(args)
            .unwrap_or_else(|e| panic!("blackhole setup in {}: {e:#}", ns.name()));
    };
    ip(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
    ip(&["addr", "add", "198.51.100.1/24", "dev", "bh0"]);
    ip(&["link", "set", "bh0", "up"]);
    ip(&["link", "set", "bh1", "up"]);
    ip(&[
        "neigh",
        "add",
        SILENT,
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "bh0",
        "nud",
        "permanent",
    ]);
}

/// Parameters for `spec` against `server`, with test-friendly timing: no warmup, short
/// timeouts, no retries.
pub fn params(server: SocketAddr, spec: &CheckSpec) -> CheckParams {
    let mut p = CheckParams::new(server, spec);
    p.warmup = Duration::ZERO;
    p.connect_timeout = Duration::from_millis(500);
    p.retry = 0;
    p
}

/// One probe of `spec` against `server` with [`params`].
pub async fn probe(server: SocketAddr, spec: CheckSpec) -> Outcome {
    probe_with(params(server, &spec), spec).await
}

/// One probe of `spec` with the given parameters.
pub async fn probe_with(params: CheckParams, spec: CheckSpec) -> Outcome {
    let checker = Checker::new(&spec, &params).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    checker.probe().await
}

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The hex digest of `data` by a program nobody here wrote (`md5sum`, `sha256sum`).
pub fn digest_cli(program: &str, data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} failed");
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
