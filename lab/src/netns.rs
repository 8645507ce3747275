//! Named network namespaces as RAII guards.
//!
//! A [`Netns`] is created with `ip netns add` and, when dropped, kills every
//! process still inside it and deletes it, so a lab disappears even when a test
//! panics. Commands run inside it through `ip netns exec` ([`Netns::command`],
//! [`Netns::sh`]); Rust code runs inside it on a fresh thread that joins the
//! namespace with `setns(CLONE_NEWNET)` ([`Netns::run`]), which affects only
//! that thread.

use std::ffi::OsStr;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Counter behind unique namespace and lab names within this process.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);
/// How long a fresh veth may take to come up with its carrier (seconds on an emulated
/// older kernel; milliseconds natively).
pub(crate) const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// `ip netns add` may set up the `/run/netns` mount on first use; two of those
/// racing inside one process can stack mounts, so adds and deletes are serialized.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A fresh number, unique within this process, for building unique names.
pub(crate) fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Fails with a clear message unless the process runs as root.
///
/// Labs create namespaces, veths and bridges, which needs CAP_SYS_ADMIN and
/// CAP_NET_ADMIN. Tests call this first and fail (never skip) without it.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        bail!(
            "xdp-lb-lab needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) to build network \
             namespaces; run the tests as root, e.g. `sudo -E cargo test`"
        )
    }
}

/// Fails with an install hint unless `program` can be started.
pub(crate) fn require_tool(program: &str, version_arg: &str, why: &str) -> Result<()> {
    match Command::new(program)
        .arg(version_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "`{program}` is not installed but the lab needs it {why}; \
             install it (e.g. `apt-get install -y {program}`)"
        ),
        Err(e) => Err(anyhow!(e).context(format!("cannot run `{program}`"))),
    }
}

/// The command line of `cmd`, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; on failure the error names the command, its exit
/// status and its stderr. Returns stdout.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        bail!(
            "`{line}` failed ({status}): {}{}",
            stderr.trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", stdout.trim())
            }
        );
    }
    Ok(stdout)
}

/// Names of all named network namespaces (`ip netns list`) starting with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let out = run_checked(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        bail!("invalid namespace name {name:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.'")
    }
}

/// A named network namespace, deleted (with every process in it killed) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `prefix` + this process's pid + a counter,
    /// e.g. `xlbt1234-0`, so concurrent tests and processes never collide.
    pub fn new(prefix: &str) -> Result<Netns> {
        Netns::named(format!("{prefix}{}-{}", std::process::id(), next_id()))
    }

    /// Creates a namespace with exactly this name; fails if it already exists.
    pub fn named(name: impl Into<String>) -> Result<Netns> {
        let name = name.into();
        validate_name(&name)?;
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_checked(Command::new("ip").args(["netns", "add", &name]))
                .with_context(|| format!("cannot create network namespace {name}"))?;
        }
        let ns = Netns { name };
        // A fresh namespace has `lo` down; everything here expects it up.
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> <program>`: add arguments, then spawn or run it.
    /// `ip netns exec` execs the program, so a spawned child's pid is the
    /// program's. Children still running when the namespace drops are killed
    /// (reap them yourself, e.g. by keeping the `Child` and waiting on it).
    ///
    /// The child also joins the namespace itself between fork and exec, so it
    /// is inside as soon as `spawn` returns: `ip` alone would join a moment
    /// later, and a namespace dropped in that window (a test failing right
    /// after starting a daemon) would miss the process and leave it running.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        // If the file cannot be opened, `ip netns exec` reports why.
        if let Ok(netns) = File::open(self.path()) {
            // SAFETY: the hook only calls setns(2), which is async-signal-safe,
            // and builds an io::Error from errno without allocating. The file
            // is opened O_CLOEXEC, so the program does not inherit it.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd
    }

    /// The namespace's file, `/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `sh -c <cmdline>` inside the namespace and returns its stdout; the
    /// error names the namespace, the command line and its stderr.
    pub fn sh(&self, cmdline: &str) -> Result<String> {
        let mut cmd = self.command("sh");
        cmd.args(["-c", cmdline]);
        run_checked(&mut cmd).with_context(|| format!("in netns {}: sh -c {cmdline:?}", self.name))
    }

    /// Runs `ip -n <name> <args...>` and returns its stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        run_checked(&mut cmd)
    }

    /// Runs `f` on a new thread that first joins this namespace, and returns
    /// its result. A panic in `f` becomes an error carrying the panic message.
    /// Like [`Netns::run`], but returns at once: the closure runs on its own thread
    /// inside the namespace, and the handle yields its result (or the setns error).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T>>> {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        let name = self.name.clone();
        thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || -> Result<T> {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into network namespace {name}"))?;
                drop(file);
                Ok(f())
            })
            .context("cannot spawn a thread")
    }

    /// Moves the calling thread into this namespace for the rest of its life, as
    /// `ip netns exec` moves a process ([`Netns::run`] does it on a thread of its own).
    pub fn enter(&self) -> Result<()> {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns into network namespace {}", self.name))
    }

    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        let name = self.name.clone();
        let handle = thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || -> Result<T> {
                // setns(CLONE_NEWNET) changes only this thread's namespace;
                // the thread ends with `f`, so nothing else runs in there.
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into network namespace {name}"))?;
                drop(file);
                Ok(f())
            })
            .context("cannot spawn a thread")?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                bail!("code run in netns {} panicked: {msg}", self.name)
            }
        }
    }

    /// Writes sysctls inside the namespace, e.g. `("net/ipv4/ip_forward", "1")`
    /// (dots work too). Written through /proc/sys from a thread inside the
    /// namespace: network sysctls resolve against the writer's namespace.
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.replace('.', "/"), v.to_string()))
            .collect();
        let name = self.name.clone();
        self.run(move || -> Result<()> {
            for (key, value) in settings {
                let path = format!("/proc/sys/{key}");
                std::fs::write(&path, &value)
                    .with_context(|| format!("in netns {name}: cannot write {value} to {path}"))?;
            }
            Ok(())
        })?
    }

    /// Waits until `ifname` is up with its carrier (operational state UP: what a VRRP
    /// daemon calls up, and not yet true just after `ip link set up` on a slow host).
    /// Woken by the kernel's link notifications: a socket joined to the link group
    /// before the first look, so a change in between is not missed.
    pub fn wait_oper_up(&self, ifname: &str, within: Duration) -> Result<()> {
        let ifname = ifname.to_owned();
        let name = self.name.clone();
        self.run(move || -> Result<()> {
            let deadline = Instant::now() + within;
            let notifications = link_notifications()?;
            loop {
                let out = Command::new("ip")
                    .args(["-o", "link", "show", "dev", &ifname])
                    .output()
                    .context("cannot run ip")?;
                let line = String::from_utf8_lossy(&out.stdout);
                if line.contains(" state UP ") {
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!(
                        "in netns {name}: {ifname} not up within {within:?}: {}",
                        line.trim()
                    );
                }
                // Any link message (or the timeout) is a reason to look again.
                wait_readable(&notifications, left)?;
                let mut buf = [0u8; 8192];
                // SAFETY: reads into a buffer of the length given; the socket is ours.
                unsafe {
                    libc::recv(
                        notifications.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
            }
        })?
    }

    /// The MAC address of interface `ifname` in this namespace, as `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self, ifname: &str) -> Result<String> {
        let out = self.ip(["-o", "link", "show", "dev", ifname])?;
        let mut words = out.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .and_then(|_| words.next())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no MAC address for {ifname} in netns {}: {out}", self.name))
    }

    /// The MAC address of interface `ifname` in this namespace, as bytes.
    pub fn mac_bytes(&self, ifname: &str) -> Result<[u8; 6]> {
        let text = self.mac(ifname)?;
        let bytes: Vec<u8> = text
            .split(':')
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("MAC address {text} of {ifname} in netns {}", self.name))?;
        bytes.try_into().map_err(|_| {
            anyhow!(
                "MAC address {text} of {ifname} in netns {} is not 6 bytes",
                self.name
            )
        })
    }

    /// The ifindex of interface `ifname` in this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let out = self.ip(["-o", "link", "show", "dev", ifname])?;
        out.split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .ok_or_else(|| anyhow!("no ifindex for {ifname} in netns {}: {out}", self.name))
    }

    /// Pids of the processes whose network namespace is this one (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let out = run_checked(Command::new("ip").args(["netns", "pids", &self.name]))?;
        out.split_whitespace()
            .map(|p| {
                p.parse()
                    .with_context(|| format!("bad pid {p:?} from ip netns pids"))
            })
            .collect()
    }

    /// Kills every process in the namespace except this one, repeating a few
    /// times in case something forked meanwhile.
    fn kill_all(&self) {
        let me = std::process::id() as i32;
        for _ in 0..5 {
            let pids: Vec<i32> = match self.pids() {
                Ok(p) => p.into_iter().filter(|p| *p != me).collect(),
                Err(_) => return,
            };
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Netns {
    /// What an xdp-lb daemon killed in this namespace left pinned (its XDP link and
    /// connection state, kept for a restart): gone with the namespace, so a later
    /// namespace that reuses the inode adopts nothing, and no map outlives the test.
    fn remove_pinned_state(&self) {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(meta) = std::fs::metadata(format!("/run/netns/{}", self.name)) else {
            return;
        };
        let name = format!("ns-{}", meta.ino());
        let _ = std::fs::remove_dir_all(format!("{}/{name}", crate::daemon::LAB_BPFFS));
        let _ = std::fs::remove_file(format!("/run/xdp-lb/{name}.ids"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        self.remove_pinned_state();
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let result = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match result {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "xdp-lb-lab: cannot delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("xdp-lb-lab: cannot run ip netns delete {}: {e}", self.name),
        }
    }
}

/// A route netlink socket in the calling thread's namespace.
pub(crate) fn route_netlink() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("netlink socket");
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A route netlink socket joined to the link notification group (RTMGRP_LINK), in
/// the calling thread's namespace.
fn link_notifications() -> Result<OwnedFd> {
    let fd = route_netlink()?;
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value to fill in.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: bind(2) with a sockaddr_nl and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("bind to the link group");
    }
    Ok(fd)
}

/// Waits up to `within` for `fd` to have something to read.
fn wait_readable(fd: &OwnedFd, within: Duration) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = within.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: poll(2) over one pollfd we own.
    if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e).context("poll");
        }
    }
    Ok(())
}

/// Two fresh namespaces (names from `prefix`) joined by a veth whose ends are both
/// `eth0` and up: the smallest segment for tests of protocols between two hosts. IPv6
/// is quiet and deterministic: no duplicate address detection, no generated link-local,
/// but the fixed link-locals fe80::a (`a`) and fe80::b (`b`), usable at once.
pub fn veth_pair(prefix: &str) -> Result<(Netns, Netns)> {
    require_root()?;
    let a = Netns::new(&format!("{prefix}a"))?;
    let b = Netns::new(&format!("{prefix}b"))?;
    a.ip([
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        b.name(),
    ])?;
    for (ns, link_local) in [(&a, "fe80::a/64"), (&b, "fe80::b/64")] {
        ns.sysctl(&[("net/ipv6/conf/eth0/accept_dad", "0")])?;
        ns.ip(["link", "set", "eth0", "addrgenmode", "none"])?;
        ns.ip(["link", "set", "eth0", "up"])?;
        ns.ip(["addr", "add", link_local, "dev", "eth0", "nodad"])?;
    }
    // Up with its carrier before anyone uses it: a daemon started earlier would begin
    // in FAULT.
    for ns in [&a, &b] {
        ns.wait_oper_up("eth0", LINK_UP_TIMEOUT)?;
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("xlb1-0-b-b1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("../etc").is_err());
    }
}
