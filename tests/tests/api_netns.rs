//! The status API under abuse, with the real binary: hundreds of half-open connections
//! cost the daemon at most the API's connection cap in file descriptors, its health
//! checks carry on, silent clients are cut off after the header timeout, and the API
//! answers again once the flood ends; with `api_token`, a request without it is
//! refused. Needs root; the lab is torn down on drop.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use xdp_lb::api::{HEADER_TIMEOUT, MAX_CONNECTIONS};
use xdp_lb_lab::{DrLab, DrLabOptions};
use xdp_lb_tests::{dr_lab, start};

const API: &str = "127.0.0.1:9180";
const TOKEN: &str = "s3cret-token-0123456789";

/// b1 and b2 checked every 200 ms, the API on the LB namespace's loopback.
fn config(lab: &DrLab, global: &str) -> String {
    let mut text = format!(
        "[global]\n{global}\n\n[dataplane]\ninterfaces = [\"eth0\"]\n\n\
         [[virtual_server]]\nvip = \"{}\"\nport = 80\n",
        DrLab::VIP
    );
    for b in &lab.backends {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  check = {{ type = \"tcp\", \
             interval = \"200ms\", warmup = \"0s\", connect_timeout = \"300ms\", retry = 0 }}\n",
            b.addr
        );
    }
    text
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// One GET of `path` on the API from inside `ns`: (status line, body).
fn get(lab: &DrLab, path: &'static str, token: Option<&'static str>) -> (String, String) {
    lab.lb
        .run(move || {
            let mut s = TcpStream::connect(API).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            (
                head.lines().next().unwrap_or("").to_owned(),
                body.to_owned(),
            )
        })
        .unwrap()
}

#[test]
fn a_flood_of_half_open_api_connections_costs_at_most_the_cap() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &format!("api = \"{API}\"")));
    let pid = daemon.pid();
    let (status, _) = get(&lab, "/status", None);
    assert!(status.contains("200"), "{status}");
    let baseline = fds(pid);

    // This process holds the clients' descriptors.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit take a valid pointer to one rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    // 400 clients try to connect and send nothing, held from a thread in the namespace.
    // Those beyond the listener's queue are refused by the kernel; enough get through
    // to be many times the daemon's cap.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let attacker = lab
        .lb
        .spawn(move || {
            let addr: SocketAddr = API.parse().unwrap();
            let streams: Vec<TcpStream> = (0..400)
                .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok())
                .collect();
            held_tx.send(streams.len()).unwrap();
            let _ = release_rx.recv();
            drop(streams);
        })
        .unwrap();
    let connected = held_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(
        connected >= 4 * MAX_CONNECTIONS,
        "only {connected} connections were made"
    );
    // Watch the daemon's descriptors over two header timeouts of the flood.
    let mut peak = 0;
    let until = Instant::now() + HEADER_TIMEOUT * 2;
    while Instant::now() < until {
        peak = peak.max(fds(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cap, plus a few for checks in flight.
    let bound = baseline + MAX_CONNECTIONS + 8;
    assert!(
        peak <= bound,
        "{connected} half-open connections took the daemon from {baseline} to {peak} descriptors (bound {bound})"
    );
    eprintln!(
        "measured: {connected} half-open API connections: daemon descriptors {baseline} -> peak {peak} (cap {MAX_CONNECTIONS})"
    );
    release_tx.send(()).unwrap();
    attacker.join().unwrap().unwrap();

    let log = daemon.log();
    assert!(
        !log.contains("real server down"),
        "checks failed during the flood:\n{log}"
    );
    assert!(!log.to_lowercase().contains("too many open files"), "{log}");
    let (status, body) = get(&lab, "/status", None);
    assert!(
        status.contains("200") && body.contains("\"services\""),
        "{status}\n{body}"
    );
    daemon.stop().unwrap();
}

#[test]
fn a_silent_client_is_cut_off_after_the_header_timeout() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &format!("api = \"{API}\"")));
    let closed_after = lab
        .lb
        .run(|| {
            let mut s = TcpStream::connect(API).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let started = Instant::now();
            let mut buf = [0; 64];
            // EOF (or a reset) when the server gives up on us.
            let _ = s.read(&mut buf);
            started.elapsed()
        })
        .unwrap();
    assert!(
        closed_after >= HEADER_TIMEOUT - Duration::from_millis(500)
            && closed_after < HEADER_TIMEOUT * 2,
        "a client sending nothing was closed after {closed_after:?} (header timeout {HEADER_TIMEOUT:?})"
    );
    daemon.stop().unwrap();
}

#[test]
fn with_a_token_requests_without_it_are_refused() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(
        &lab.lb,
        &config(&lab, &format!("api = \"{API}\"\napi_token = \"{TOKEN}\"")),
    );
    let (status, _) = get(&lab, "/status", None);
    assert!(status.contains("401"), "no token: {status}");
    let (status, _) = get(&lab, "/metrics", Some("s3cret-token-wrong-guess"));
    assert!(status.contains("401"), "a wrong token: {status}");
    let (status, body) = get(&lab, "/status", Some(TOKEN));
    assert!(
        status.contains("200") && body.contains("\"services\""),
        "{status}"
    );
    daemon.stop().unwrap();
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &format!("api = \"{API}\"")));
    let (status, body) = get(&lab, "/metrics", None);
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("xdp_lb_build_info{"), "{body}");
    // Prometheus's own linter and parser, on what the daemon served.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop().unwrap();
}

#[test]
fn connections_lists_the_flow_table_like_ipvsadm_and_status_shows_rates() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let daemon = start(&lab.lb, &config(&lab, &format!("api = \"{API}\"")));
    let mut open =
        xdp_lb_lab::KeepAlive::open(&lab.client, xdp_lb_tests::vip(80), Duration::from_secs(5))
            .unwrap();
    let server = open.get().unwrap();
    let server_addr = lab.backend(&server).unwrap().addr;
    let run = |args: &[&str]| xdp_lb_tests::run_in(&lab.lb, args);
    let service = format!("{}:80/tcp", DrLab::VIP);
    let listing = run(&["connections", "--api", API, "--service", &service]);
    let client = format!(" {}:", lab.client_addr());
    assert!(
        listing.lines().any(|l| l.starts_with("TCP ACTIVE")
            && l.contains(&client)
            && l.ends_with(&format!("{server_addr}:80"))),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l.starts_with(&service)
            && l.contains(&format!("{server_addr}:80"))
            && l.split_whitespace().nth(2) == Some("1")),
        "one active connection on {server_addr}:\n{listing}"
    );
    let other = run(&[
        "connections",
        "--api",
        API,
        "--service",
        "192.0.2.100:81/tcp",
    ]);
    assert!(!other.contains("TCP ACTIVE"), "{other}");

    // Rates appear once the counters have been kept (every 5 s): poll, bounded.
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        for _ in 0..20 {
            open.get().unwrap();
        }
        let status = run(&["status", "--api", API]);
        if status.contains("conn/s") || Instant::now() > until {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        status
            .lines()
            .any(|l| l.contains(&format!("-> {server_addr}:80")) && l.contains("pkt/s")),
        "{status}"
    );
    daemon.stop().unwrap();
}
