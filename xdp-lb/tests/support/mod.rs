//! Shared by the network-namespace integration tests: a lab with XDP-ready veth
//! peers, and the real `xdp-lb` binary started inside the LB namespace.
#![allow(dead_code)] // each test binary uses its own subset

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use xdp_lb_lab::{DrLab, DrLabOptions, Netns};

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

/// The real daemon binary, run in a namespace, its stderr collected line by line.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    _config: tempfile::TempPath,
}

impl Daemon {
    /// Starts `xdp-lb --config` in `ns`; does not wait for readiness.
    pub fn spawn(ns: &Netns, config: &str) -> Daemon {
        let mut file = tempfile::NamedTempFile::new().expect("temp config");
        std::io::Write::write_all(&mut file, config.as_bytes()).unwrap();
        let path = file.into_temp_path();
        let mut child = ns
            .command(env!("CARGO_BIN_EXE_xdp-lb"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn xdp-lb");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Daemon {
            child,
            log,
            lines,
            _config: path,
        }
    }

    /// Starts the daemon and waits for its "xdp-lb ready" line.
    pub fn start(ns: &Netns, config: &str) -> Daemon {
        let mut d = Daemon::spawn(ns, config);
        d.wait_for_line("xdp-lb ready", READY_TIMEOUT);
        d
    }

    /// Waits until a log line contains `needle`; panics with the whole log if the
    /// daemon exits or the time runs out first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "xdp-lb did not log {needle:?} within {timeout:?}; log:\n{}",
                        self.log()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "xdp-lb exited ({status:?}) before logging {needle:?}; log:\n{}",
                        self.log()
                    )
                }
            }
        }
    }

    /// Waits for the daemon to exit by itself; returns its exit code and log.
    pub fn wait_exit(mut self, timeout: Duration) -> (Option<i32>, String) {
        self.wait_exit_mut(timeout)
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal xdp-lb");
        let (code, log) = self.wait_exit_mut(READY_TIMEOUT);
        assert_eq!(
            code,
            Some(0),
            "xdp-lb did not exit cleanly on SIGTERM; log:\n{log}"
        );
        log
    }

    fn wait_exit_mut(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        // The reader thread ends when the daemon closes stderr, i.e. exits.
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "xdp-lb still running after {timeout:?}; log:\n{}",
                        self.log()
                    )
                }
            }
        }
        let status = self.child.wait().expect("wait for xdp-lb");
        (status.code(), self.log())
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
