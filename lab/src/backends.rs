//! Backend server processes: real HTTP/1.1 and UDP servers (python3, script
//! embedded from `py/backend_server.py`) that answer with a fixed name.
//!
//! A [`BackendServer`] is started inside a namespace, waited for until it
//! prints `ready` (it has bound its socket), and killed when dropped.

use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::netns::{Netns, describe};

/// The server script, run with `python3 -c`.
const SCRIPT: &str = include_str!("../py/backend_server.py");

/// How long a server may take to bind; python start-up on a loaded CI machine
/// can be slow, and under emulation (`cargo xtask older-kernel`: Linux 6.1 without
/// KVM) it once took over 30 s. Waiting is event-driven, so this is only an upper
/// bound.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Stderr kept for error messages.
const STDERR_LIMIT: usize = 16 * 1024;

/// Which protocol a [`BackendServer`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// HTTP/1.1 with keep-alive; every request gets `200` and body `name\n`.
    Http,
    /// Every datagram gets a datagram `name` back, sent from the address it was sent to.
    Udp,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Http => "http",
            ServerKind::Udp => "udp",
        })
    }
}

/// A running server process; killed (and reaped) on drop.
pub struct BackendServer {
    kind: ServerKind,
    port: u16,
    name: String,
    netns: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl fmt::Debug for BackendServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendServer")
            .field("kind", &self.kind)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("netns", &self.netns)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl BackendServer {
    /// Starts an HTTP server on 0.0.0.0:`port` in `ns` answering `name`.
    pub fn start_http(ns: &Netns, port: u16, name: &str) -> Result<BackendServer> {
        BackendServer::start(ns, ServerKind::Http, port, name)
    }

    /// Starts a UDP server on 0.0.0.0:`port` in `ns` answering `name`.
    pub fn start_udp(ns: &Netns, port: u16, name: &str) -> Result<BackendServer> {
        BackendServer::start(ns, ServerKind::Udp, port, name)
    }

    /// Starts a server and returns once it has bound its socket.
    pub fn start(ns: &Netns, kind: ServerKind, port: u16, name: &str) -> Result<BackendServer> {
        let mut cmd = ns.command("python3");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg(kind.to_string())
            .arg(port.to_string())
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!(
            "{kind} server {name:?} on port {port} in netns {}",
            ns.name()
        );
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                bail!("cannot start {what}: `ip` (iproute2) is not installed")
            }
            Err(e) => return Err(anyhow!(e).context(format!("cannot start {what}"))),
        };

        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = {
            let pipe = child.stderr.take().expect("stderr is piped");
            let stderr = Arc::clone(&stderr);
            thread::spawn(move || collect_stderr(pipe, &stderr))
        };
        // Reads stdout until "ready" (sent on the channel) and then drains it
        // so a chatty server never blocks on a full pipe.
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        {
            let pipe = child.stdout.take().expect("stdout is piped");
            thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if line.trim() == "ready"
                        && let Some(tx) = ready_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                // Dropping the sender without sending tells the waiter the
                // process closed stdout (exited) before it was ready.
            });
        }

        let failure = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Some(format!("no \"ready\" within {READY_TIMEOUT:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Some("it exited before printing \"ready\"".to_string())
            }
        };
        if let Some(failure) = failure {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let _ = stderr_thread.join();
            let stderr = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let hint = if stderr.contains("No such file or directory") && stderr.contains("python3")
            {
                "\nhint: python3 is required for lab backends (apt-get install -y python3)"
            } else {
                ""
            };
            bail!(
                "cannot start {what}: {failure} ({status}); command: {}\nstderr:\n{}{hint}",
                short_command(&cmd),
                stderr.trim()
            );
        }
        Ok(BackendServer {
            kind,
            port,
            name: name.to_owned(),
            netns: ns.name().to_owned(),
            child,
            stderr,
        })
    }

    /// The protocol served.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The name answered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote to stderr so far (bounded), for failure reports.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Kills the server and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The command line without the (long) embedded script.
fn short_command(cmd: &std::process::Command) -> String {
    describe(cmd).replace(SCRIPT, "<backend_server.py>")
}

fn collect_stderr(mut pipe: impl Read, sink: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                if s.len() < STDERR_LIMIT {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        }
    }
}

/// Checks a backend name is usable as a server answer and in interface names.
pub(crate) fn validate_backend_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        bail!(
            "invalid backend name {name:?}: use 1 to 12 ASCII letters, digits, '-' or '_' \
             (it becomes part of namespace and bridge port names)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names() {
        assert!(validate_backend_name("b1").is_ok());
        assert!(validate_backend_name("web-02").is_ok());
        assert!(validate_backend_name("").is_err());
        assert!(validate_backend_name("with space").is_err());
        assert!(validate_backend_name("much-too-long-name").is_err());
    }
}
