//! Health checks end to end through the XDP data plane: real HTTP checks against the
//! python real servers, a client that keeps opening connections, one long keep-alive
//! connection that must not notice anything, and the sorry server when all are down.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xdp_lb_lab::{DrLab, DrLabOptions, http_get_new_connections};
use xdp_lb_tests::{IO_TIMEOUT, assert_split, dr_lab, start, vip};

/// b1 and b2 are checked real servers, b3 is the sorry server.
fn config(lab: &DrLab) -> String {
    let mut text = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[[virtual_server]]\nvip = \"{}\"\nport = 80\n\
         sorry_server = \"{}\"\n",
        DrLab::VIP,
        lab.backends[2].addr
    );
    for b in &lab.backends[..2] {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  check = {{ type = \"http\", \
             path = \"/\", interval = \"200ms\", warmup = \"0s\", connect_timeout = \"300ms\", \
             retry = 0, fall = 2, rise = 2 }}\n",
            b.addr
        );
    }
    text
}

/// One HTTP/1.1 keep-alive connection making a request every 20 ms until stopped;
/// returns the names answered, or the first error.
/// The first answer is also sent on `first`.
fn long_connection(
    lab: &DrLab,
    stop: Arc<AtomicBool>,
    first: std::sync::mpsc::Sender<String>,
) -> std::thread::JoinHandle<anyhow::Result<Result<Vec<String>, String>>> {
    lab.client
        .spawn(move || {
            let mut stream =
                TcpStream::connect_timeout(&vip(80), IO_TIMEOUT).map_err(|e| e.to_string())?;
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut names = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
                    .map_err(|e| format!("request {}: {e}", names.len() + 1))?;
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    let n = reader
                        .read_line(&mut line)
                        .map_err(|e| format!("response {}: {e}", names.len() + 1))?;
                    if n == 0 {
                        return Err(format!("response {}: connection closed", names.len() + 1));
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).map_err(|e| e.to_string())?;
                let name = String::from_utf8_lossy(&body).trim().to_string();
                if names.is_empty() {
                    let _ = first.send(name.clone());
                }
                names.push(name);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(names)
        })
        .unwrap()
}

#[test]
fn failed_servers_leave_and_rejoin_live_flows_carry_on_and_the_sorry_server_answers() {
    let mut lab = xdp_lb_lab::DrLab::build(DrLabOptions::one_arm(&["b1", "b2", "b3"])).unwrap();
    lab.start_http_backends(80).unwrap();
    let mut daemon = start(&lab.lb, &config(&lab));
    // Before any failure, both checked servers take new connections, the sorry none.
    let tally = http_get_new_connections(&lab.client, vip(80), 20, IO_TIMEOUT).unwrap();
    // (Per-CPU round robin: an even split per CPU, not exactly 10/10 overall.)
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 20, 30.0);

    let stop = Arc::new(AtomicBool::new(false));
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let long = long_connection(&lab, stop.clone(), first_tx);
    // The long connection's server stays healthy; the other one fails.
    let long_on = first_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the long connection answers");
    let victim_name = if long_on == "b1" { "b2" } else { "b1" };

    let failed_at = Instant::now();
    lab.stop_backend_server(victim_name).unwrap();
    let victim = lab.backend(victim_name).unwrap().addr;
    let line = daemon
        .wait_for_line(&format!("real_server={victim}:80"), Duration::from_secs(10))
        .unwrap();
    let removal = failed_at.elapsed();
    assert!(line.contains("real server down"), "{line}");
    // fall 2 x interval 200 ms + timeout 300 ms, plus scheduling: a generous bound.
    assert!(
        removal < Duration::from_secs(3),
        "took {removal:?} to remove {victim}"
    );
    eprintln!("measured: failure to removal from the schedule: {removal:?}");
    let tally = http_get_new_connections(&lab.client, vip(80), 30, IO_TIMEOUT).unwrap();
    assert_eq!(
        tally.len(),
        1,
        "only the healthy server takes new connections: {tally:?}"
    );
    assert!(!tally.contains_key(victim_name), "{tally:?}");

    // It comes back: rejoins after `rise` successes.
    let restarted_at = Instant::now();
    lab.start_http_backend(victim_name, 80).unwrap();
    let line = daemon
        .wait_for_line(&format!("real_server={victim}:80"), Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("real server up"), "{line}");
    eprintln!("measured: restart to rejoin: {:?}", restarted_at.elapsed());
    let tally = http_get_new_connections(&lab.client, vip(80), 20, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 20, 30.0);

    // The long connection never noticed.
    stop.store(true, Ordering::Relaxed);
    let names = long
        .join()
        .unwrap()
        .unwrap()
        .expect("the long connection failed");
    assert!(names.len() > 10, "{names:?}");
    assert!(
        names.iter().all(|n| *n == names[0]),
        "long connection moved: {names:?}"
    );

    // All checked servers down: the sorry server answers.
    lab.stop_backend_server("b1").unwrap();
    lab.stop_backend_server("b2").unwrap();
    daemon
        .wait_for_line(
            "no real server can take new connections",
            Duration::from_secs(10),
        )
        .unwrap();
    let tally = http_get_new_connections(&lab.client, vip(80), 10, IO_TIMEOUT).unwrap();
    assert_eq!(tally.get("b3"), Some(&10), "{tally:?}");
    daemon.stop().unwrap();
}

#[test]
fn losing_the_quorum_sends_new_connections_to_the_sorry_server_and_runs_the_commands() {
    let mut lab = xdp_lb_lab::DrLab::build(DrLabOptions::one_arm(&["b1", "b2", "b3"])).unwrap();
    lab.start_http_backends(80).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("quorum.log");
    let command = |word: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"echo {word} >> {}\"]",
            log.display()
        )
    };
    let text = config(&lab).replace(
        "sorry_server",
        &format!(
            "quorum = 2\nquorum_up = {}\nquorum_down = {}\nomega = true\nsorry_server",
            command("up"),
            command("down")
        ),
    );
    let mut daemon = start(&lab.lb, &text);
    let tally = http_get_new_connections(&lab.client, vip(80), 10, IO_TIMEOUT).unwrap();
    assert!(
        !tally.contains_key("b3"),
        "quorum met: no sorry server yet: {tally:?}"
    );

    // One of two weight-1 servers fails: weight 1 < quorum 2, although b2 is healthy.
    lab.stop_backend_server("b1").unwrap();
    daemon
        .wait_for_line("quorum lost", Duration::from_secs(10))
        .unwrap();
    daemon
        .wait_for_line("quorum_down of", Duration::from_secs(10))
        .unwrap();
    let tally = http_get_new_connections(&lab.client, vip(80), 10, IO_TIMEOUT).unwrap();
    assert_eq!(tally.get("b3"), Some(&10), "{tally:?}");

    lab.start_http_backend("b1", 80).unwrap();
    daemon
        .wait_for_line("quorum gained", Duration::from_secs(10))
        .unwrap();
    daemon
        .wait_for_line("quorum_up of", Duration::from_secs(10))
        .unwrap();
    let tally = http_get_new_connections(&lab.client, vip(80), 10, IO_TIMEOUT).unwrap();
    assert!(!tally.contains_key("b3"), "{tally:?}");

    // omega: the down command runs once more when the daemon stops.
    let daemon_log = daemon.stop().unwrap();
    let b1 = lab.backend("b1").unwrap().addr;
    let counted = daemon_log
        .lines()
        .find(|l| l.contains("real server counters") && l.contains(&format!("real_server={b1} ")))
        .unwrap_or_else(|| panic!("no counters line for {b1}:\n{daemon_log}"));
    assert!(
        counted.contains("health_transitions=2"),
        "b1 went down and up: {counted}"
    );
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ran, "down\nup\ndown\n");
}

#[test]
fn ipv6_checks_do_not_take_a_nearer_vip_as_their_source() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    // A /128 VIP nearer to the real servers (::10 vs ::11) than the LB's own ::2/64:
    // the kernel would pick it as the source, and real servers holding it on lo would
    // answer themselves.
    let vip = "2001:db8::10";
    lab.lb
        .ip(["addr", "add", &format!("{vip}/128"), "dev", "eth0", "nodad"])
        .unwrap();
    for b in &lab.backends {
        b.ns.ip(["addr", "add", &format!("{vip}/128"), "dev", "lo"])
            .unwrap();
    }
    let mut text = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[[virtual_server]]\nvip = \"{vip}\"\nport = 80\n"
    );
    for i in 0..lab.backends.len() {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  check = {{ type = \"http\", \
             path = \"/\", interval = \"200ms\", warmup = \"0s\", connect_timeout = \"300ms\", \
             retry = 0, alpha = true, rise = 1 }}\n",
            lab.backend_addr6(i)
        );
    }
    let mut daemon = start(&lab.lb, &text);
    // alpha: down until a check succeeds, so each must come up (in either order).
    let mut up = Vec::new();
    for _ in 0..lab.backends.len() {
        up.push(
            daemon
                .wait_for_line("real server up", Duration::from_secs(10))
                .unwrap(),
        );
    }
    for i in 0..lab.backends.len() {
        let server = format!("real_server=[{}]:80", lab.backend_addr6(i));
        let line = up
            .iter()
            .find(|l| l.contains(&server))
            .unwrap_or_else(|| panic!("{server} never came up: {up:?}"));
        assert!(
            line.contains("from 2001:db8::2"),
            "checked from the LB's own address: {line}"
        );
    }
    daemon.stop().unwrap();
}
