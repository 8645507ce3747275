//! The xdp-lb daemon (or any long-running program taking `--config FILE`) run inside
//! a namespace, its stderr collected line by line so callers can wait for a log line
//! (an event) instead of sleeping.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::netns::Netns;

/// How long a stop (SIGTERM until exit) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon run in a namespace, its stderr collected line by line. Killed on drop.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    _config: tempfile::TempPath,
}

impl Daemon {
    /// Starts `program --config FILE` in `ns` with `config` written to FILE; does
    /// not wait for readiness.
    pub fn spawn(ns: &Netns, program: &Path, config: &str) -> Result<Daemon> {
        let config = with_lab_pin_dir(config)?;
        let mut file = tempfile::NamedTempFile::new().context("creating a temp config file")?;
        file.write_all(config.as_bytes())
            .context("writing the temp config file")?;
        let path = file.into_temp_path();
        let mut child = ns
            .command(program)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {} in netns {}", program.display(), ns.name()))?;
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
        Ok(Daemon {
            child,
            log,
            lines,
            _config: path,
        })
    }

    /// Starts the daemon and waits (up to `timeout`) for its "xdp-lb ready" line.
    pub fn start(ns: &Netns, program: &Path, config: &str, timeout: Duration) -> Result<Daemon> {
        let mut d = Daemon::spawn(ns, program, config)?;
        d.wait_for_line("xdp-lb ready", timeout)?;
        Ok(d)
    }

    /// Waits until a log line contains `needle`; the error carries the whole log if
    /// the daemon exits or the time runs out first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => anyhow::bail!(
                    "the daemon did not log {needle:?} within {timeout:?}; log:\n{}",
                    self.log()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    anyhow::bail!(
                        "the daemon exited ({status:?}) before logging {needle:?}; log:\n{}",
                        self.log()
                    )
                }
            }
        }
    }

    /// Replaces the daemon's config file with `config` and sends SIGHUP (a reload, as
    /// `systemctl reload` does); the caller waits for the outcome in the log.
    pub fn reload(&self, config: &str) -> Result<()> {
        // Written aside and renamed, so the daemon never reads half a file.
        let path: &Path = &self._config;
        let aside = path.with_extension("new");
        let config = with_lab_pin_dir(config)?;
        std::fs::write(&aside, config).context("writing the new config file")?;
        std::fs::rename(&aside, path).context("replacing the config file")?;
        self.signal(nix::sys::signal::Signal::SIGHUP)
    }

    /// The config file the daemon was started with.
    pub fn config_path(&self) -> &Path {
        &self._config
    }

    /// Sends `signal` to the daemon (SIGKILL for a crash, SIGTERM for a stop), without
    /// waiting; [`Daemon::wait_exit`] then tells how it ended.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal)
            .with_context(|| format!("sending {signal} to the daemon (pid {pid})"))
    }

    /// Waits for the daemon to exit by itself; returns its exit code and log.
    pub fn wait_exit(mut self, timeout: Duration) -> Result<(Option<i32>, String)> {
        self.wait_exit_mut(timeout)
    }

    /// SIGTERM, then waits for a clean (status 0) exit; returns the log.
    pub fn stop(mut self) -> Result<String> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        let (code, log) = self.wait_exit_mut(STOP_TIMEOUT)?;
        anyhow::ensure!(
            code == Some(0),
            "the daemon exited with {code:?} on SIGTERM; log:\n{log}"
        );
        Ok(log)
    }

    fn wait_exit_mut(&mut self, timeout: Duration) -> Result<(Option<i32>, String)> {
        let deadline = Instant::now() + timeout;
        // The reader thread ends when the daemon closes stderr, i.e. exits.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => anyhow::bail!(
                    "the daemon is still running after {timeout:?}; log:\n{}",
                    self.log()
                ),
            }
        }
        let status = self.child.wait().context("waiting for the daemon")?;
        Ok((status.code(), self.log()))
    }

    /// Its process id (`ip netns exec` execs the program, so it is the daemon's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
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

/// Where the lab's daemons pin: `ip netns exec` gives each command a fresh `/sys`,
/// without the host's bpffs, so a bpffs mounted here (under `/run`, which it keeps)
/// stands in for `/sys/fs/bpf` and lets a restarted daemon find what the last one
/// pinned, as on a real host.
pub const LAB_BPFFS: &str = "/run/xdp-lb-lab/bpffs";

/// `config` with `pin_dir` set to [`LAB_BPFFS`] (mounted if it is not yet), unless
/// it sets one itself.
fn with_lab_pin_dir(config: &str) -> Result<String> {
    if config.contains("pin_dir") || !config.contains("[dataplane]\n") {
        return Ok(config.to_owned());
    }
    ensure_lab_bpffs()?;
    Ok(config.replacen(
        "[dataplane]\n",
        &format!("[dataplane]\npin_dir = \"{LAB_BPFFS}\"\n"),
        1,
    ))
}

/// Mounts the bpffs at [`LAB_BPFFS`] unless it is there already.
pub fn ensure_lab_bpffs() -> Result<()> {
    static MOUNTED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut mounted = MOUNTED.lock().unwrap_or_else(|e| e.into_inner());
    if *mounted {
        return Ok(());
    }
    std::fs::create_dir_all(LAB_BPFFS).with_context(|| format!("creating {LAB_BPFFS}"))?;
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(LAB_BPFFS))
    {
        let out = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", LAB_BPFFS])
            .output()
            .context("running mount -t bpf")?;
        anyhow::ensure!(
            out.status.success(),
            "mount -t bpf bpf {LAB_BPFFS}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    *mounted = true;
    Ok(())
}
