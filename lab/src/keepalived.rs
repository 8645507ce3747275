//! Real keepalived (VRRP only) in a namespace, as the reference xdp-lb's VRRP must
//! interoperate with: [`KaConf`] renders a one-instance `keepalived.conf`, and
//! [`Keepalived`] runs it in the foreground with its console log collected line by
//! line (each line stamped when it was read), so callers wait for "Entering MASTER
//! STATE" instead of sleeping. It can be stopped gracefully (SIGTERM: keepalived sends
//! priority 0) or killed like a crash (`kill -9` of the VRRP process and its parent).

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::Netns;

/// Where Debian's package installs it (`cargo xtask setup` does).
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// How long keepalived may take to write its VRRP process's pid file.
const PID_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SIGTERM may take before drop falls back to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One `vrrp_instance VI_1` (state BACKUP, so the priorities decide who is MASTER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KaConf {
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    /// 2 or 3.
    pub version: u8,
    /// keepalived's `advert_int`, e.g. "1" or "0.1".
    pub advert_int: String,
    /// VRRPv2 `auth_type PASS` with this password.
    pub auth_pass: Option<String>,
    /// (`unicast_src_ip`, the one `unicast_peer`) for unicast instead of multicast.
    pub unicast: Option<(String, String)>,
    /// `nopreempt`: a higher priority joining stays BACKUP (keepalived accepts it only
    /// with `state BACKUP`, which is what is rendered).
    pub nopreempt: bool,
    /// The virtual address with its prefix, e.g. "192.0.2.200/24".
    pub vip: String,
}

impl KaConf {
    /// VRRPv2, priority 100, `advert_int 1`, multicast, no authentication.
    pub fn new(interface: &str, vrid: u8, vip: &str) -> KaConf {
        KaConf {
            interface: interface.to_owned(),
            vrid,
            priority: 100,
            version: 2,
            advert_int: "1".to_owned(),
            auth_pass: None,
            unicast: None,
            nopreempt: false,
            vip: vip.to_owned(),
        }
    }

    /// The configuration file's text.
    pub fn render(&self) -> String {
        let mut s = String::from("global_defs {\n    router_id xlb_lab\n    script_user root\n}\n");
        let _ = write!(
            s,
            "vrrp_instance VI_1 {{\n    state BACKUP\n    interface {}\n    \
             virtual_router_id {}\n    priority {}\n    advert_int {}\n    version {}\n",
            self.interface, self.vrid, self.priority, self.advert_int, self.version
        );
        if self.nopreempt {
            s.push_str("    nopreempt\n");
        }
        if let Some(pass) = &self.auth_pass {
            let _ = write!(
                s,
                "    authentication {{\n        auth_type PASS\n        auth_pass {pass}\n    }}\n"
            );
        }
        if let Some((src, peer)) = &self.unicast {
            let _ = write!(
                s,
                "    unicast_src_ip {src}\n    unicast_peer {{\n        {peer}\n    }}\n"
            );
        }
        let _ = write!(
            s,
            "    virtual_ipaddress {{\n        {}\n    }}\n}}\n",
            self.vip
        );
        s
    }
}

/// keepalived (`-P`, VRRP only) running in the foreground in a namespace; stopped
/// with SIGTERM (then SIGKILL) on drop.
pub struct Keepalived {
    child: Child,
    dir: PathBuf,
    netns: String,
    lines: mpsc::Receiver<(Instant, String)>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Keepalived {
    /// Starts keepalived in `ns` with `conf`; its config, pid files live in
    /// `dir/ka<run>` (a fresh `run` number per start keeps restarts apart). Does not
    /// wait for any state: use [`Keepalived::wait_line`].
    pub fn start(ns: &Netns, dir: &Path, run: u32, conf: &KaConf) -> Result<Keepalived> {
        Keepalived::start_config(ns, dir, run, &conf.render())
    }

    /// [`Keepalived::start`] with a configuration written out in full (several
    /// instances, sync groups, anything [`KaConf`] does not render).
    pub fn start_config(ns: &Netns, dir: &Path, run: u32, text: &str) -> Result<Keepalived> {
        if !Path::new(KEEPALIVED).exists() {
            bail!(
                "{KEEPALIVED} is not installed (`cargo xtask setup` or `apt-get install keepalived`)"
            );
        }
        let dir = dir.join(format!("ka{run}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let file = dir.join("keepalived.conf");
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        let mut child = match ns
            .command(KEEPALIVED)
            .args(["-n", "-l", "-D", "-G", "-P", "-f"])
            .arg(&file)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(dir.join("vrrp.pid"))
            .arg("-c")
            .arg(dir.join("checkers.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                bail!("cannot start {KEEPALIVED}: `ip` is not installed")
            }
            Err(e) => {
                return Err(
                    anyhow!(e).context(format!("cannot start {KEEPALIVED} in netns {}", ns.name()))
                );
            }
        };
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let pipes: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout is piped")),
            Box::new(child.stderr.take().expect("stderr is piped")),
        ];
        for pipe in pipes {
            let tx = tx.clone();
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                    let _ = tx.send((Instant::now(), line));
                }
            });
        }
        Ok(Keepalived {
            child,
            dir,
            netns: ns.name().to_owned(),
            lines,
            log,
        })
    }

    /// Waits for the next log line containing `needle` (lines already waited past are
    /// not seen again); returns when it was read. The error carries the whole log.
    pub fn wait_line(&self, needle: &str, within: Duration) -> Result<Instant> {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(needle) => return Ok(at),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "keepalived in netns {}: no line with {needle:?} within {within:?}; log:\n{}",
                    self.netns,
                    self.log()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "keepalived in netns {} exited before logging {needle:?}; log:\n{}",
                    self.netns,
                    self.log()
                ),
            }
        }
    }

    /// Waits until each of `needles` has been in a line not waited past before, in
    /// any order (two instances' changes may be logged either way round); returns when
    /// the last was read.
    pub fn wait_lines(&self, needles: &[&str], within: Duration) -> Result<Instant> {
        let until = Instant::now() + within;
        let mut pending: Vec<&str> = needles.to_vec();
        let mut last = Instant::now();
        while !pending.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    let before = pending.len();
                    pending.retain(|n| !line.contains(n));
                    if pending.len() < before {
                        last = at;
                    }
                }
                Err(_) => bail!(
                    "keepalived in netns {}: still waiting for {pending:?} after {within:?}; log:\n{}",
                    self.netns,
                    self.log()
                ),
            }
        }
        Ok(last)
    }

    /// Whether any line so far contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The VRRP child process, once keepalived has written its pid file.
    pub fn vrrp_pid(&self) -> Result<Pid> {
        let path = self.dir.join("vrrp.pid");
        let until = Instant::now() + PID_TIMEOUT;
        loop {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return Ok(Pid::from_raw(pid));
            }
            if Instant::now() >= until {
                bail!(
                    "keepalived in netns {} wrote no VRRP pid to {} within {PID_TIMEOUT:?}",
                    self.netns,
                    path.display()
                );
            }
            // keepalived writes the file once, right after forking the VRRP process.
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` of the VRRP process, then of its parent (which would otherwise
    /// respawn it): no priority-0 advert, the virtual address left configured. Returns
    /// the instant just before the VRRP process was killed.
    pub fn kill9(mut self) -> Result<Instant> {
        let vrrp = self.vrrp_pid()?;
        let at = Instant::now();
        kill(vrrp, Signal::SIGKILL)
            .with_context(|| format!("kill -9 of keepalived's VRRP process {vrrp}"))?;
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(at)
    }

    /// SIGTERM: keepalived sends its priority-0 advert, removes the virtual address
    /// and exits. Returns the instant just before the signal, once it has exited.
    pub fn terminate(mut self) -> Result<Instant> {
        let at = Instant::now();
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM)
            .context("SIGTERM to keepalived")?;
        self.child.wait().context("waiting for keepalived")?;
        Ok(at)
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let until = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_v3_instance() {
        let mut conf = KaConf::new("eth0", 51, "192.0.2.200/24");
        conf.priority = 200;
        conf.version = 3;
        conf.advert_int = "0.1".into();
        let text = conf.render();
        for line in [
            "vrrp_instance VI_1 {",
            "    state BACKUP",
            "    interface eth0",
            "    virtual_router_id 51",
            "    priority 200",
            "    advert_int 0.1",
            "    version 3",
            "        192.0.2.200/24",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        assert!(!text.contains("authentication"), "{text}");
        assert!(!text.contains("unicast"), "{text}");
        assert!(!text.contains("nopreempt"), "{text}");
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn renders_authentication_and_unicast() {
        let mut conf = KaConf::new("eth1", 7, "2001:db8::200/64");
        conf.auth_pass = Some("s3cret".into());
        conf.unicast = Some(("192.0.2.2".into(), "192.0.2.1".into()));
        let text = conf.render();
        assert!(text.contains("    interface eth1\n"), "{text}");
        assert!(
            text.contains("auth_type PASS\n        auth_pass s3cret\n"),
            "{text}"
        );
        assert!(
            text.contains("unicast_src_ip 192.0.2.2\n    unicast_peer {\n        192.0.2.1\n"),
            "{text}"
        );
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn renders_nopreempt_inside_the_instance() {
        let mut conf = KaConf::new("eth0", 51, "192.0.2.200/24");
        conf.nopreempt = true;
        let text = conf.render();
        let instance = text.find("vrrp_instance VI_1 {").expect("an instance");
        let at = text.find("\n    nopreempt\n").expect("nopreempt rendered");
        assert!(at > instance, "{text}");
        assert!(text.contains("    state BACKUP\n"), "{text}");
    }
}
