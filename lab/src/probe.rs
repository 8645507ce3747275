//! A failover as a client sees it.
//!
//! - [`Probe`]: run in a client namespace, sends a numbered UDP datagram to a virtual
//!   address every few milliseconds and records every reply: when it arrived and which
//!   node sent it.
//! - [`Responder`]: run in each VRRP node's namespace, answers datagrams sent to the
//!   virtual address with its name (and the datagram's number), so the replies show
//!   which node held the address at each moment. Stopping it is immediate, which is
//!   how a test makes a `kill -9` look like a host crash: the VIP a killed VRRP daemon
//!   leaves configured must not keep answering.
//! - [`handover`] and friends: pure functions over the recorded [`Reply`]s: the
//!   client's outage (its first reply from the new node minus its last from the old
//!   one) and the time from an event (kill, stop) to the new node's first reply.
//! - [`ProbeLab`]: the segment this runs on: nodes `a` and `b` and a client on one
//!   bridge, IPv4 and IPv6.
//!
//! [`BackendServer`](crate::BackendServer)'s UDP server also works as a responder for
//! IPv4 (it answers the bare name); [`Responder`] adds IPv6, sequence numbers, and a
//! stop that takes effect at once.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::{LINK_UP_TIMEOUT, Netns, require_root, require_tool};

/// How long a probe or responder thread may take to set up its socket.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest payload echoed back by a [`Responder`] (a decimal `u64` fits).
const MAX_ECHO: usize = 20;

/// One reply the probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// When the probe read it.
    pub at: Instant,
    /// The responder's name.
    pub from: String,
    /// The number of the datagram answered, when the responder echoes it.
    pub seq: Option<u64>,
}

/// Splits a reply payload, `name` or `name seq`, into its parts.
pub fn parse_reply(payload: &[u8]) -> (String, Option<u64>) {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim();
    match text.split_once(' ') {
        Some((name, seq)) => (name.to_owned(), seq.trim().parse().ok()),
        None => (text.to_owned(), None),
    }
}

/// The first reply from `name` received at or after `after`.
pub fn first_from<'r>(replies: &'r [Reply], name: &str, after: Instant) -> Option<&'r Reply> {
    replies.iter().find(|r| r.from == name && r.at >= after)
}

/// The last reply from `name` received before `before`.
pub fn last_from<'r>(replies: &'r [Reply], name: &str, before: Instant) -> Option<&'r Reply> {
    replies
        .iter()
        .rev()
        .find(|r| r.from == name && r.at < before)
}

/// How many replies from `name` arrived in `[from, to)`.
pub fn count_from(replies: &[Reply], name: &str, from: Instant, to: Instant) -> usize {
    replies
        .iter()
        .filter(|r| r.from == name && r.at >= from && r.at < to)
        .count()
}

/// A takeover as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The event that started it (the old node killed or stopped).
    pub event: Instant,
    /// The old node's last reply before the new node's first.
    pub last_old: Instant,
    /// The new node's first reply at or after the event.
    pub first_new: Instant,
    /// Datagrams sent between those two replies that nobody answered, when both
    /// replies carry their datagram's number.
    pub lost: Option<u64>,
    /// The number of the datagram the new node answered first, when its reply carries
    /// it.
    pub first_new_seq: Option<u64>,
}

impl Handover {
    /// How long the client got no answer: new node's first reply minus old node's
    /// last (zero if they overlapped).
    pub fn outage(&self) -> Duration {
        self.first_new.saturating_duration_since(self.last_old)
    }

    /// From the event to the new node's first reply.
    pub fn after_event(&self) -> Duration {
        self.first_new.saturating_duration_since(self.event)
    }

    /// Replies from `old` that arrived in `[first_new, to)` to datagrams sent after the
    /// one the new node answered first: the client's traffic went back to `old`. A
    /// later-arriving reply to an earlier datagram was only slow (sent to `old` before
    /// the client switched). Without datagram numbers every reply in the span counts.
    pub fn answered_by_old_after(&self, replies: &[Reply], old: &str, to: Instant) -> usize {
        replies
            .iter()
            .filter(|r| r.from == old && r.at >= self.first_new && r.at < to)
            .filter(|r| match (r.seq, self.first_new_seq) {
                (Some(seq), Some(first)) => seq > first,
                _ => true,
            })
            .count()
    }
}

/// The handover from `old` to `new` caused by `event`: the first reply from `new` at
/// or after `event`, and the last reply from `old` before that one. The error says
/// which of the two is missing and what the client did receive.
pub fn handover(replies: &[Reply], old: &str, new: &str, event: Instant) -> Result<Handover> {
    let Some(first) = first_from(replies, new, event) else {
        bail!(
            "the client got no reply from {new} after the event; replies (seconds from the \
             event): {}",
            timeline(replies, event)
        );
    };
    let Some(last) = last_from(replies, old, first.at) else {
        bail!(
            "the client got no reply from {old} before {new} answered; replies (seconds from \
             the event): {}",
            timeline(replies, event)
        );
    };
    let lost = match (last.seq, first.seq) {
        (Some(l), Some(f)) => Some(f.saturating_sub(l).saturating_sub(1)),
        _ => None,
    };
    Ok(Handover {
        event,
        last_old: last.at,
        first_new: first.at,
        lost,
        first_new_seq: first.seq,
    })
}

/// Consecutive replies from one responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub from: String,
    pub first: Instant,
    pub last: Instant,
    pub count: usize,
    /// The lowest and highest datagram numbers answered, when the replies carry them.
    pub seqs: Option<(u64, u64)>,
}

/// The replies grouped into runs of one responder, in order.
pub fn runs(replies: &[Reply]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for r in replies {
        match out.last_mut() {
            Some(run) if run.from == r.from => {
                run.last = r.at;
                run.count += 1;
                run.seqs = match (run.seqs, r.seq) {
                    (Some((lo, hi)), Some(seq)) => Some((lo.min(seq), hi.max(seq))),
                    (seqs, _) => seqs,
                };
            }
            _ => out.push(Run {
                from: r.from.clone(),
                first: r.at,
                last: r.at,
                count: 1,
                seqs: r.seq.map(|seq| (seq, seq)),
            }),
        }
    }
    out
}

/// The runs as text with times in seconds relative to `base` (negative before it) and
/// the datagrams answered, e.g. `a [-1.200, -0.004] x120 #0-119, b [3.605, 5.000] x139
/// #480-618`, for failure messages.
pub fn timeline(replies: &[Reply], base: Instant) -> String {
    let secs = |t: Instant| {
        if t >= base {
            (t - base).as_secs_f64()
        } else {
            -(base - t).as_secs_f64()
        }
    };
    let runs = runs(replies);
    if runs.is_empty() {
        return "none".to_owned();
    }
    let mut s = String::new();
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "{} [{:.3}, {:.3}] x{}",
            run.from,
            secs(run.first),
            secs(run.last),
            run.count
        );
        if let Some((lo, hi)) = run.seqs {
            let _ = write!(s, " #{lo}-{hi}");
        }
    }
    s
}

/// What the probe thread and its owner share.
struct Shared {
    stop: AtomicBool,
    sent: AtomicU64,
    replies: Mutex<Vec<Reply>>,
    arrived: Condvar,
}

/// A UDP prober running on its own thread inside a namespace; stopped on drop.
pub struct Probe {
    target: SocketAddr,
    netns: String,
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<Result<Result<()>>>>,
}

impl Probe {
    /// Starts sending datagram number 0, 1, 2, ... (as decimal text) to `target` every
    /// `every`, from a socket in `ns`; returns once the socket is bound.
    pub fn start(ns: &Netns, target: SocketAddr, every: Duration) -> Result<Probe> {
        if every.is_zero() {
            bail!("the probe interval must be positive");
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            replies: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let inner = Arc::clone(&shared);
        let handle = ns.spawn(move || -> Result<()> {
            let local: SocketAddr = if target.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = match UdpSocket::bind(local) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("cannot bind {local}: {e}")));
                    return Ok(());
                }
            };
            let _ = ready_tx.send(Ok(()));
            probe_loop(&socket, target, every, &inner)
        })?;
        let setup = ready_rx
            .recv_timeout(SETUP_TIMEOUT)
            .map_err(|_| anyhow!("the probe thread did not start"))
            .and_then(|r| r);
        let probe = Probe {
            target,
            netns: ns.name().to_owned(),
            shared,
            thread: Some(handle),
        };
        setup.with_context(|| format!("udp probe to {target} from netns {}", ns.name()))?;
        Ok(probe)
    }

    /// The address probed.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Every reply so far, in arrival order.
    pub fn replies(&self) -> Vec<Reply> {
        self.lock().clone()
    }

    /// Waits for a reply from `name` received at or after `after`; returns when it
    /// arrived. The error shows what the client received instead.
    pub fn wait_from(&self, name: &str, after: Instant, within: Duration) -> Result<Instant> {
        self.wait_matching(after, within, name, |r| r.from == name)
            .map(|r| r.at)
    }

    /// Waits for the first reply from anyone received at or after `after`.
    pub fn wait_any(&self, after: Instant, within: Duration) -> Result<Reply> {
        self.wait_matching(after, within, "anyone", |_| true)
    }

    /// The first reply at or after `after` that `wanted` accepts (`who` names it in
    /// the error).
    fn wait_matching(
        &self,
        after: Instant,
        within: Duration,
        who: &str,
        wanted: impl Fn(&Reply) -> bool,
    ) -> Result<Reply> {
        let name = who;
        let until = Instant::now() + within;
        let mut replies = self.lock();
        loop {
            let found = replies
                .iter()
                .rev()
                .take_while(|r| r.at >= after)
                .filter(|r| wanted(r))
                .last();
            if let Some(r) = found {
                return Ok(r.clone());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.finished() {
                bail!(
                    "from netns {}: no reply from {name} to udp://{} within {within:?}{}; \
                     replies (seconds from the start of the wait): {}",
                    self.netns,
                    self.target,
                    if self.finished() {
                        " (the probe stopped)"
                    } else {
                        ""
                    },
                    timeline(&replies, after)
                );
            }
            replies = self
                .shared
                .arrived
                .wait_timeout(replies, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for `new`'s first reply after `event` and returns the handover from `old`.
    pub fn handover(
        &self,
        old: &str,
        new: &str,
        event: Instant,
        within: Duration,
    ) -> Result<Handover> {
        self.wait_from(new, event, within)?;
        handover(&self.replies(), old, new, event)
    }

    /// Stops the probe; returns every reply, or the error that ended it early.
    pub fn stop(mut self) -> Result<Vec<Reply>> {
        self.halt()?;
        Ok(std::mem::take(&mut *self.lock()))
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Reply>> {
        self.shared
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn halt(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => bail!("the probe thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Sends on a fixed schedule (a slot missed while busy is skipped, never bunched up)
/// and reads replies in between, until told to stop.
fn probe_loop(
    socket: &UdpSocket,
    target: SocketAddr,
    every: Duration,
    shared: &Shared,
) -> Result<()> {
    let mut buf = [0u8; 512];
    let mut seq: u64 = 0;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            // A send error (no route yet, no neighbour) is a datagram lost like any other.
            let _ = socket.send_to(seq.to_string().as_bytes(), target);
            seq += 1;
            shared.sent.store(seq, Ordering::Relaxed);
            next += every;
            if next <= now {
                next = now + every;
            }
            continue;
        }
        socket
            .set_read_timeout(Some(next - now))
            .context("setting the probe's read timeout")?;
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                let at = Instant::now();
                let (from, seq) = parse_reply(&buf[..n]);
                shared
                    .replies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Reply { at, from, seq });
                shared.arrived.notify_all();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // ICMP errors for earlier datagrams (port unreachable while a node has the
            // address but no responder) are losses too.
            Err(e) if e.raw_os_error().is_some_and(is_icmp_error) => {}
            Err(e) => return Err(anyhow!(e).context("receiving probe replies")),
        }
    }
    Ok(())
}

fn is_icmp_error(errno: i32) -> bool {
    [
        libc::ECONNREFUSED,
        libc::EHOSTUNREACH,
        libc::ENETUNREACH,
        libc::EINTR,
    ]
    .contains(&errno)
}

/// Answers UDP datagrams sent to one address with `name seq`; runs on its own thread
/// inside a namespace until stopped or dropped.
pub struct Responder {
    name: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// A handle on the responder's socket, to shut it down.
    socket: Option<Socket>,
    thread: Option<thread::JoinHandle<Result<Result<()>>>>,
}

impl Responder {
    /// Starts answering datagrams to `addr` in `ns`. The socket is bound with
    /// `IP_FREEBIND`, so it can start before the address is on an interface (a VRRP
    /// virtual address comes and goes); replies leave from `addr`.
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> Result<Responder> {
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!("invalid responder name {name:?}: use a non-empty name without spaces");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Socket>>();
        let inner_stop = Arc::clone(&stop);
        let reply_name = name.to_owned();
        let handle = ns.spawn(move || -> Result<()> {
            let socket = match bind_freely(addr) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            match socket.try_clone() {
                Ok(clone) => {
                    let _ = ready_tx.send(Ok(Socket::from(clone)));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("cannot clone the socket: {e}")));
                    return Ok(());
                }
            }
            respond_loop(&socket, &reply_name, &inner_stop)
        })?;
        let mut responder = Responder {
            name: name.to_owned(),
            addr,
            stop,
            socket: None,
            thread: Some(handle),
        };
        let socket = ready_rx
            .recv_timeout(SETUP_TIMEOUT)
            .map_err(|_| anyhow!("the responder thread did not start"))
            .and_then(|r| r)
            .with_context(|| format!("udp responder {name:?} on {addr} in netns {}", ns.name()))?;
        responder.socket = Some(socket);
        Ok(responder)
    }

    /// The name it answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it answers on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering at once (no reply is sent after this is called) and waits for
    /// the thread.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(socket) = self.socket.take() {
            // Wakes the blocked recv; on an unconnected UDP socket the call reports
            // ENOTCONN but still shuts the socket down.
            let _ = socket.shutdown(Shutdown::Both);
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => bail!("the responder thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn bind_freely(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .context("cannot create a UDP socket")?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)
    }
    .context("cannot set IP_FREEBIND")?;
    socket.set_reuse_address(true)?;
    // A fallback wake-up in case shutdown does not interrupt the receive.
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("cannot bind {addr}"))?;
    Ok(socket.into())
}

fn respond_loop(socket: &UdpSocket, name: &str, stop: &AtomicBool) -> Result<()> {
    let mut buf = [0u8; 512];
    loop {
        let received = socket.recv_from(&mut buf);
        // Checked after every wake-up: once stopped, nothing more is answered.
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match received {
            Ok((n, peer)) => {
                let echo = String::from_utf8_lossy(&buf[..n.min(MAX_ECHO)]);
                let reply = format!("{name} {}", echo.trim());
                // The client may be unreachable for a moment; the next datagram retries.
                let _ = socket.send_to(reply.as_bytes(), peer);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.raw_os_error().is_some_and(is_icmp_error) => {}
            Err(e) => return Err(anyhow!(e).context("receiving datagrams")),
        }
    }
}

/// Two VRRP nodes and a client on one L2 segment: a bridge `br0` in a switch
/// namespace, each host's `eth0` a port of it.
///
/// ```text
///   a      eth0 192.0.2.1/24  fe80::a ─┐
///   b      eth0 192.0.2.2/24  fe80::b  ├─ br0 (switch ns, multicast snooping off)
///   client eth0 192.0.2.9/24  fe80::9 ─┘  + 2001:db8::9/64
/// ```
///
/// Link-locals are fixed and DAD is off, so IPv6 VRRP can start at once and a virtual
/// IPv6 address is usable as soon as it is added. Either node's link can go down while
/// the other keeps its carrier.
#[derive(Debug)]
pub struct ProbeLab {
    pub a: Netns,
    pub b: Netns,
    pub client: Netns,
    pub switch: Netns,
}

impl ProbeLab {
    pub const A_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const B_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);

    /// Builds the lab; namespaces are named `<prefix><role><pid>-<n>` with roles `s`,
    /// `a`, `b`, `c`.
    pub fn build(prefix: &str) -> Result<ProbeLab> {
        require_root()?;
        require_tool("ip", "-V", "(iproute2) to build network namespaces")?;
        let switch = Netns::new(&format!("{prefix}s"))?;
        switch.ip([
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        switch.ip(["link", "set", "br0", "up"])?;
        let a = Netns::new(&format!("{prefix}a"))?;
        let b = Netns::new(&format!("{prefix}b"))?;
        let client = Netns::new(&format!("{prefix}c"))?;
        let hosts = [
            (&a, "pa", Self::A_V4, "fe80::a"),
            (&b, "pb", Self::B_V4, "fe80::b"),
            (&client, "pc", Self::CLIENT_V4, "fe80::9"),
        ];
        for (ns, port, v4, link_local) in hosts {
            switch.ip([
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])?;
            switch.ip(["link", "set", port, "master", "br0", "up"])?;
            ns.sysctl(&[("net/ipv6/conf/eth0/accept_dad", "0")])?;
            ns.ip(["link", "set", "eth0", "addrgenmode", "none"])?;
            ns.ip(["link", "set", "eth0", "up"])?;
            ns.ip(["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            ns.ip([
                "addr",
                "add",
                &format!("{link_local}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        // Up with their carriers before a daemon starts (or it would begin in FAULT).
        for ns in [&a, &b, &client] {
            ns.wait_oper_up("eth0", LINK_UP_TIMEOUT)?;
        }
        client.ip([
            "addr",
            "add",
            &format!("{}/64", Self::CLIENT_V6),
            "dev",
            "eth0",
            "nodad",
        ])?;
        Ok(ProbeLab {
            a,
            b,
            client,
            switch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// `a` answers every 10 ms until 100 ms, nothing until 400 ms, then `b`.
    fn crash_trace(base: Instant) -> Vec<Reply> {
        let mut replies = Vec::new();
        for (i, ms) in (0..=100).step_by(10).enumerate() {
            replies.push(Reply {
                at: at(base, ms),
                from: "a".into(),
                seq: Some(i as u64),
            });
        }
        for (i, ms) in (400..=500).step_by(10).enumerate() {
            replies.push(Reply {
                at: at(base, ms),
                from: "b".into(),
                seq: Some(40 + i as u64),
            });
        }
        replies
    }

    #[test]
    fn replies_name_the_responder_and_maybe_the_datagram() {
        assert_eq!(parse_reply(b"a 17"), ("a".into(), Some(17)));
        assert_eq!(parse_reply(b"keepalived\n"), ("keepalived".into(), None));
        assert_eq!(parse_reply(b"b junk"), ("b".into(), None));
        assert_eq!(parse_reply(b""), (String::new(), None));
    }

    #[test]
    fn first_and_last_replies_around_an_instant() {
        let base = Instant::now();
        let replies = crash_trace(base);
        assert_eq!(first_from(&replies, "b", base).unwrap().at, at(base, 400));
        assert_eq!(
            first_from(&replies, "b", at(base, 405)).unwrap().at,
            at(base, 410)
        );
        assert!(first_from(&replies, "b", at(base, 501)).is_none());
        assert!(first_from(&replies, "c", base).is_none());
        assert_eq!(
            last_from(&replies, "a", at(base, 400)).unwrap().at,
            at(base, 100)
        );
        assert_eq!(
            last_from(&replies, "a", at(base, 100)).unwrap().at,
            at(base, 90)
        );
        assert!(last_from(&replies, "a", base).is_none());
        assert_eq!(count_from(&replies, "a", at(base, 50), at(base, 400)), 6);
        assert_eq!(count_from(&replies, "b", base, at(base, 400)), 0);
    }

    #[test]
    fn a_crash_handover_measures_the_silence() {
        let base = Instant::now();
        let replies = crash_trace(base);
        // Killed at 105 ms: a's last reply was at 100, b's first at 400.
        let h = handover(&replies, "a", "b", at(base, 105)).unwrap();
        assert_eq!(h.last_old, at(base, 100));
        assert_eq!(h.first_new, at(base, 400));
        assert_eq!(h.outage(), Duration::from_millis(300));
        assert_eq!(h.after_event(), Duration::from_millis(295));
        assert_eq!(h.lost, Some(29));
    }

    #[test]
    fn the_new_nodes_answers_before_the_event_do_not_count() {
        let base = Instant::now();
        let replies = crash_trace(base);
        // An event after b already answered: its first reply after the event counts,
        // and the old node's last one before it.
        let h = handover(&replies, "a", "b", at(base, 450)).unwrap();
        assert_eq!(h.first_new, at(base, 450));
        assert_eq!(h.last_old, at(base, 100));
        assert_eq!(h.after_event(), Duration::ZERO);
    }

    #[test]
    fn overlapping_answers_are_no_outage() {
        let base = Instant::now();
        let replies = vec![
            Reply {
                at: at(base, 0),
                from: "a".into(),
                seq: None,
            },
            Reply {
                at: at(base, 10),
                from: "b".into(),
                seq: None,
            },
            Reply {
                at: at(base, 20),
                from: "a".into(),
                seq: None,
            },
        ];
        let h = handover(&replies, "a", "b", base).unwrap();
        assert_eq!(h.outage(), Duration::from_millis(10));
        assert_eq!(h.lost, None);
        // Swapped roles: b's last before a's first at/after 5 ms (20 ms) is at 10 ms.
        let h = handover(&replies, "b", "a", at(base, 5)).unwrap();
        assert_eq!(h.outage(), Duration::from_millis(10));
    }

    #[test]
    fn a_missing_side_is_an_error_that_shows_the_trace() {
        let base = Instant::now();
        let replies = crash_trace(base);
        let err = handover(&replies, "a", "c", base).unwrap_err().to_string();
        assert!(err.contains("no reply from c"), "{err}");
        assert!(err.contains("a [0.000, 0.100] x11"), "{err}");
        assert!(err.contains("b [0.400, 0.500] x11"), "{err}");
        let err = handover(&replies, "c", "b", base).unwrap_err().to_string();
        assert!(err.contains("no reply from c before b answered"), "{err}");
    }

    /// The probe hears whoever holds the address, over IPv4 and IPv6; responders bound
    /// before the address exists start answering once it is added; a stopped
    /// responder answers nothing more.
    #[test]
    fn the_probe_hears_the_holder_and_a_stopped_responder_goes_silent() {
        let lab = ProbeLab::build("xlbpr").expect("this test needs root");
        let v4: SocketAddr = "192.0.2.200:7000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::200]:7000".parse().unwrap();
        let a = Responder::start(&lab.a, v4, "a").unwrap();
        let b6 = Responder::start(&lab.b, v6, "b6").unwrap();
        lab.a
            .ip(["addr", "add", "192.0.2.200/24", "dev", "eth0"])
            .unwrap();
        lab.b
            .ip(["addr", "add", "2001:db8::200/64", "dev", "eth0", "nodad"])
            .unwrap();
        let every = Duration::from_millis(10);
        let probe = Probe::start(&lab.client, v4, every).unwrap();
        let probe6 = Probe::start(&lab.client, v6, every).unwrap();
        let start = Instant::now();
        probe.wait_from("a", start, Duration::from_secs(5)).unwrap();
        probe6
            .wait_from("b6", start, Duration::from_secs(5))
            .unwrap();
        // Several answers in a row, each echoing its datagram's number.
        let heard = probe
            .wait_from("a", Instant::now(), Duration::from_secs(2))
            .unwrap();
        let replies = probe.replies();
        let last = last_from(&replies, "a", heard + Duration::from_nanos(1)).unwrap();
        assert!(last.seq.is_some_and(|s| s > 0), "{last:?}");

        let stopped = Instant::now();
        a.stop().unwrap();
        // Twenty probe intervals later nothing more has come from a.
        let later = Instant::now() + every * 20;
        probe6
            .wait_from("b6", later, Duration::from_secs(2))
            .unwrap();
        let sent = probe.sent();
        let replies = probe.stop().unwrap();
        assert_eq!(
            count_from(&replies, "a", stopped, later + every),
            0,
            "replies after the stop: {}",
            timeline(&replies, stopped)
        );
        assert!(sent >= 20, "only {sent} datagrams sent");
        assert!(replies.iter().all(|r| r.from == "a"), "{replies:?}");
        drop(b6);
    }

    #[test]
    fn runs_group_consecutive_replies() {
        let base = Instant::now();
        let replies = crash_trace(base);
        let runs = runs(&replies);
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].from.as_str(), runs[0].count), ("a", 11));
        assert_eq!(
            (runs[1].first, runs[1].last),
            (at(base, 400), at(base, 500))
        );
        assert_eq!(
            timeline(&replies, at(base, 100)),
            "a [-0.100, 0.000] x11 #0-10, b [0.300, 0.400] x11 #40-50"
        );
        assert_eq!(timeline(&[], base), "none");
    }

    /// After the new node's first answer (datagram 40 at 400 ms), a late reply from the
    /// old node to datagram 39 was only slow; one to datagram 42 means the client went
    /// back to it.
    #[test]
    fn only_old_answers_to_later_datagrams_count_after_a_handover() {
        let base = Instant::now();
        let mut replies = crash_trace(base);
        let h = handover(&replies, "a", "b", at(base, 200)).unwrap();
        assert_eq!(h.first_new_seq, Some(40));
        let late = |ms, seq| Reply {
            at: at(base, ms),
            from: "a".into(),
            seq,
        };
        replies.push(late(405, Some(39)));
        assert_eq!(h.answered_by_old_after(&replies, "a", at(base, 600)), 0);
        replies.push(late(425, Some(42)));
        assert_eq!(h.answered_by_old_after(&replies, "a", at(base, 600)), 1);
        // Before the handover, or past `to`: not counted.
        assert_eq!(h.answered_by_old_after(&replies, "a", at(base, 420)), 0);
        // Without numbers, by arrival alone.
        replies.push(late(430, None));
        assert_eq!(h.answered_by_old_after(&replies, "a", at(base, 600)), 2);
    }
}
