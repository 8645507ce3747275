//! FRR (Debian's `frr` package) run in a namespace: zebra and bgpd (or bfdd) as
//! children of the test, in the foreground, each instance with its own directory for its
//! configuration, pid files, vty sockets and zebra's API socket, so several instances
//! coexist on one host without systemd or `/etc/frr` (`-f`, `-i`, `--vty_socket`,
//! `-z`; `-P 0`: no TCP vty). The daemons run as the package's `frr` user (as root they
//! refuse: root is not in the `frrvty` group), so the directory is world-writable.
//! `vtysh --vty_socket DIR` talks to them from anywhere: the sockets are files.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::{Netns, run_checked};

/// Where Debian installs the daemons.
pub const FRR_DIR: &str = "/usr/lib/frr";

/// Fails with an install hint unless FRR's zebra, bgpd and vtysh are installed.
pub fn require_frr() -> Result<()> {
    for program in [
        format!("{FRR_DIR}/zebra"),
        format!("{FRR_DIR}/bgpd"),
        "/usr/bin/vtysh".into(),
    ] {
        if !Path::new(&program).exists() {
            bail!(
                "{program} is missing: the ECMP lab runs FRR; install it with \
                 `apt-get install -y frr` (`cargo xtask setup` does)"
            );
        }
    }
    Ok(())
}

/// zebra and bgpd (or bfdd) of one node; killed (and their directory removed) on drop.
pub struct Frr {
    name: String,
    dir: PathBuf,
    zebra: Option<Child>,
    /// The daemons started after zebra.
    daemons: Vec<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Frr {
    /// Starts zebra, waits for its API socket, then bgpd with `bgpd_conf`.
    pub fn start(ns: &Netns, name: &str, bgpd_conf: &str) -> Result<Frr> {
        Frr::start_daemons(ns, name, &[("bgpd", bgpd_conf)])
    }

    /// Starts zebra, then bfdd with no session of its own (xdp-lb asks it for sessions
    /// over [`Frr::bfdd_socket`]).
    pub fn start_bfdd(ns: &Netns, name: &str) -> Result<Frr> {
        Frr::start_daemons(ns, name, &[("bfdd", "")])
    }

    /// Starts zebra, then each `(daemon, configuration)` in order. bfdd's control socket
    /// is [`Frr::bfdd_socket`] (bfdd's default path is not per namespace); this returns
    /// once it is there.
    pub fn start_daemons(ns: &Netns, name: &str, daemons: &[(&str, &str)]) -> Result<Frr> {
        let mut frr = Frr::zebra(ns, name)?;
        for (daemon, conf) in daemons {
            let program = format!("{FRR_DIR}/{daemon}");
            if !Path::new(&program).exists() {
                bail!(
                    "{program} is missing: install FRR with `apt-get install -y frr` (`cargo xtask setup` does)"
                );
            }
            fs::write(frr.dir.join(format!("{daemon}.conf")), conf)?;
            let socket = frr.bfdd_socket();
            let extra: Vec<&std::ffi::OsStr> = if *daemon == "bfdd" {
                vec!["--bfdctl".as_ref(), socket.as_os_str()]
            } else {
                Vec::new()
            };
            let child = frr.spawn(ns, daemon, &extra)?;
            frr.daemons.push(child);
            if *daemon == "bfdd" {
                frr.wait(Duration::from_secs(10), "bfdd's control socket", || {
                    Ok(socket.exists())
                })?;
            }
        }
        Ok(frr)
    }

    /// Where bfdd listens for its clients (xdp-lb's `[global] bfdd_socket`).
    pub fn bfdd_socket(&self) -> PathBuf {
        self.dir.join("bfdd.sock")
    }

    /// A fresh directory for this node, and zebra started, its API socket there.
    fn zebra(ns: &Netns, name: &str) -> Result<Frr> {
        require_frr()?;
        let dir = std::env::temp_dir().join(format!("xdp-lb-frr-{}", ns.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
        fs::write(dir.join("zebra.conf"), format!("hostname {name}\n"))?;
        let mut frr = Frr {
            name: name.to_owned(),
            dir,
            zebra: None,
            daemons: Vec::new(),
            log: Arc::default(),
        };
        frr.zebra = Some(frr.spawn(ns, "zebra", &[])?);
        let api = frr.dir.join("zserv.api");
        frr.wait(Duration::from_secs(10), "zebra's API socket", || {
            Ok(api.exists())
        })?;
        Ok(frr)
    }

    fn spawn(&self, ns: &Netns, daemon: &str, extra: &[&std::ffi::OsStr]) -> Result<Child> {
        let d = &self.dir;
        let mut cmd = ns.command(format!("{FRR_DIR}/{daemon}"));
        cmd.arg("-f")
            .arg(d.join(format!("{daemon}.conf")))
            .arg("-i")
            .arg(d.join(format!("{daemon}.pid")))
            .arg("-z")
            .arg(d.join("zserv.api"))
            .arg("--vty_socket")
            .arg(d)
            .args(["-P", "0", "--log", "stdout", "--log-level", "info"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {daemon} in netns {}", ns.name()))?;
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, tag) = (self.log.clone(), format!("{}/{daemon}", self.name));
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(format!("{tag}: {line}"));
                }
            });
        }
        Ok(child)
    }

    /// `vtysh -c COMMAND` against this instance.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        run_checked(
            Command::new("vtysh")
                .arg("--vty_socket")
                .arg(&self.dir)
                .args(["-c", command]),
        )
        .with_context(|| format!("vtysh on {}", self.name))
    }

    /// Polls `done` every 50 ms until it holds; the error names `what` and carries the
    /// daemons' log.
    pub fn wait(
        &self,
        within: Duration,
        what: &str,
        mut done: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if done()? {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!(
                    "{}: no {what} within {within:?}; FRR log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The BGP sessions established (from `show bgp summary json`).
    pub fn established(&self) -> Result<usize> {
        let out: String = self
            .vtysh("show bgp ipv4 unicast summary json")?
            .split_whitespace()
            .collect();
        Ok(out.matches("\"state\":\"Established\"").count())
    }

    /// What zebra and bgpd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `kill -9` of every daemon, as a crashed host's would die.
    pub fn kill9(&mut self) {
        let daemons = std::mem::take(&mut self.daemons);
        for mut child in daemons.into_iter().chain(self.zebra.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.kill9();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for Frr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frr").field("name", &self.name).finish()
    }
}
