//! The outcome of one probe: [`Up`] (with an optional dynamic weight) or a [`Reason`]
//! saying precisely what failed.
//!
//! [`Reason`] is the crate's one error type: every checker, the spec validation and the
//! scheduler speak it. Its `Display` is lowercase words meant to follow a server and a
//! check name in a log line ("… is down: status 503, expected 200"). It is `Clone` and
//! `PartialEq` so transitions can carry it and tests can compare it; OS errors are kept
//! as their message for that reason.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::spec::{Digest, QType};

/// A successful probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Up {
    /// A weight reported by the check itself (MISC with `dynamic`: exit code - 2);
    /// `None` means "the configured weight".
    pub weight: Option<u32>,
}

/// What one probe found: up, or down with the reason.
pub type Outcome = Result<Up, Reason>;

/// Where a probe was when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Creating or binding the local socket.
    Socket,
    /// TCP connect (or UDP/ICMP connect, which only picks a route).
    Connect,
    /// The TLS handshake.
    TlsHandshake,
    /// Sending the request, payload or query.
    Send,
    /// Waiting for the HTTP status line and headers.
    Response,
    /// Reading the HTTP body for the digest.
    Body,
    /// Waiting for a UDP, DNS or ICMP reply.
    Reply,
    /// Waiting for a MISC command to exit.
    Wait,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Socket => "opening the socket",
            Phase::Connect => "connecting",
            Phase::TlsHandshake => "in the tls handshake",
            Phase::Send => "sending",
            Phase::Response => "waiting for the response",
            Phase::Body => "reading the body",
            Phase::Reply => "waiting for a reply",
            Phase::Wait => "waiting for the command",
        })
    }
}

/// The first lines a failed command printed (stdout and stderr together), shown after
/// its exit code: `; output: "line 1" "line 2" ...`. Empty when it printed nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptOutput(Vec<String>);

impl ScriptOutput {
    /// Lines shown, and characters per line.
    const LINES: usize = 3;
    const LINE_CHARS: usize = 200;

    /// The first non-blank lines of `head` (the start of the output), each cut short.
    pub fn from_head(head: &[u8]) -> ScriptOutput {
        let text = String::from_utf8_lossy(head);
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(Self::LINES)
            .map(|l| l.chars().take(Self::LINE_CHARS).collect())
            .collect();
        ScriptOutput(lines)
    }

    pub fn lines(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for ScriptOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() {
            f.write_str("; output:")?;
            // Debug quoting escapes control characters: one log line stays one line.
            for line in &self.0 {
                write!(f, " {line:?}")?;
            }
        }
        Ok(())
    }
}

/// Why a probe (or a check's setup) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("timeout after {} {phase}", Dur(*after))]
    Timeout { phase: Phase, after: Duration },
    #[error("connection refused")]
    Refused,
    /// Any other OS error, with the phase it happened in.
    #[error("{phase}: {message}")]
    Io { phase: Phase, message: String },
    #[error("status {got}, expected {}", list(expected))]
    Status { got: u16, expected: Vec<u16> },
    #[error("body {} mismatch: expected {}, got {got}", expected.algorithm(), expected.hex())]
    DigestMismatch { expected: Digest, got: String },
    #[error("body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// One URL of an HTTP check with several failed: which (its path, and its own
    /// virtualhost if it has one) and why.
    #[error("url {url}: {reason}")]
    Url { url: String, reason: Box<Reason> },
    /// A malformed or cut-short HTTP exchange.
    #[error("http: {0}")]
    Http(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("exit code {code}{output}")]
    Exit { code: i32, output: ScriptOutput },
    #[error("killed by signal {signal} ({name}){output}", name = signal_name(*signal))]
    Signal { signal: i32, output: ScriptOutput },
    #[error("killed after timeout of {}", Dur(*timeout))]
    KilledAfterTimeout { timeout: Duration },
    /// The probe as a whole ran past its deadline (each phase was quick enough).
    #[error("no verdict within {} in all (a server answering too slowly)", Dur(*after))]
    Deadline { after: Duration },
    #[error("cannot run {program}: {message}")]
    Spawn { program: String, message: String },
    /// Not run: others could have changed it (see `script_security`).
    #[error("{0}")]
    Unsafe(String),
    #[error(
        "reply does not match: expected {} at the start, got {}",
        hex_preview(expected),
        hex_preview(got)
    )]
    UnexpectedReply { expected: Vec<u8>, got: Vec<u8> },
    /// ICMP port unreachable, as a connected UDP socket reports it (ECONNREFUSED).
    #[error("icmp port unreachable")]
    PortUnreachable,
    /// An ICMP error other than port unreachable (host, network, prohibited, ...).
    #[error("icmp {0}")]
    Unreachable(String),
    #[error("dns rcode {}", rcode_name(*rcode))]
    DnsRcode { rcode: u8 },
    #[error("dns reply has no {qtype} answer for {name}")]
    DnsNoAnswer { name: String, qtype: QType },
    #[error("malformed dns reply: {0}")]
    DnsMalformed(String),
    /// The check cannot run as configured (bad digest, unknown user, unreadable CA file, ...).
    #[error("invalid check: {0}")]
    Invalid(String),
}

impl Reason {
    /// A failed command's verdict with the start of what it printed.
    pub(crate) fn with_output(self, printed: ScriptOutput) -> Reason {
        match self {
            Reason::Exit { code, .. } => Reason::Exit {
                code,
                output: printed,
            },
            Reason::Signal { signal, .. } => Reason::Signal {
                signal,
                output: printed,
            },
            other => other,
        }
    }

    /// An OS error in `phase`, with refusals and ICMP errors turned into their own variants.
    pub(crate) fn io(phase: Phase, err: &io::Error) -> Reason {
        match err.raw_os_error() {
            Some(libc_errno::ECONNREFUSED) if phase == Phase::Reply || phase == Phase::Send => {
                Reason::PortUnreachable
            }
            Some(libc_errno::ECONNREFUSED) => Reason::Refused,
            Some(code @ (libc_errno::EHOSTUNREACH | libc_errno::ENETUNREACH))
                if phase == Phase::Reply =>
            {
                Reason::Unreachable(os_message(code))
            }
            _ => Reason::Io {
                phase,
                message: io_message(err),
            },
        }
    }
}

/// The errno values this crate tells apart, from nix so no libc dependency is needed.
pub(crate) mod libc_errno {
    use nix::errno::Errno;
    pub const ECONNREFUSED: i32 = Errno::ECONNREFUSED as i32;
    pub const EHOSTUNREACH: i32 = Errno::EHOSTUNREACH as i32;
    pub const ENETUNREACH: i32 = Errno::ENETUNREACH as i32;
    pub const EACCES: i32 = Errno::EACCES as i32;
    pub const EPERM: i32 = Errno::EPERM as i32;
}

/// An OS error's text without Rust's " (os error N)" suffix, first letter lowercased:
/// "connection reset by peer".
/// Waits for a reply datagram (`recv`) until `deadline`, the end of a `timeout` that
/// started with the request: the length read, or why there is none.
pub(crate) async fn reply_before(
    deadline: tokio::time::Instant,
    timeout: Duration,
    recv: impl Future<Output = io::Result<usize>>,
) -> Result<usize, Reason> {
    match tokio::time::timeout_at(deadline, recv).await {
        Err(_elapsed) => Err(Reason::Timeout {
            phase: Phase::Reply,
            after: timeout,
        }),
        Ok(result) => result.map_err(|e| Reason::io(Phase::Reply, &e)),
    }
}

pub(crate) fn io_message(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => os_message(code),
        None => lower_first(&err.to_string()),
    }
}

fn os_message(code: i32) -> String {
    lower_first(nix::errno::Errno::from_raw(code).desc())
}

/// Lowercases the first character, leaving names and acronyms further on alone.
pub(crate) fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A duration as people write it in the config: "5s", "250ms", "1.5s".
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

/// Status codes with runs written as ranges: `200`, `200-299`, `one of 200, 204`,
/// `one of 200-299, 301`.
fn list(codes: &[u16]) -> String {
    let mut sorted = codes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for code in sorted {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == code => *end = code,
            _ => runs.push((code, code)),
        }
    }
    let text: Vec<String> = runs
        .iter()
        .map(|&(a, b)| match b - a {
            0 => a.to_string(),
            // Two neighbours read better listed than as a range.
            1 => format!("{a}, {b}"),
            _ => format!("{a}-{b}"),
        })
        .collect();
    match (runs.as_slice(), text.as_slice()) {
        ([], _) => "none".to_owned(),
        ([(a, b)], [one]) if a == b || b - a > 1 => one.clone(),
        _ => format!("one of {}", text.join(", ")),
    }
}

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_ascii_lowercase())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// At most 16 bytes as hex, with the total length when cut.
fn hex_preview(bytes: &[u8]) -> String {
    const MAX: usize = 16;
    let shown: String = bytes.iter().take(MAX).map(|b| format!("{b:02x}")).collect();
    match bytes.len() {
        0 => "nothing".to_owned(),
        n if n > MAX => format!("{shown}… ({n} bytes)"),
        _ => shown,
    }
}

/// RFC 1035 / 6895 names of the response codes a health check meets.
pub(crate) fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "noerror".into(),
        1 => "formerr".into(),
        2 => "servfail".into(),
        3 => "nxdomain".into(),
        4 => "notimp".into(),
        5 => "refused".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_precise() {
        let cases: Vec<(Reason, &str)> = vec![
            (
                Reason::Timeout {
                    phase: Phase::Connect,
                    after: Duration::from_secs(5),
                },
                "timeout after 5s connecting",
            ),
            (
                Reason::Timeout {
                    phase: Phase::Response,
                    after: Duration::from_millis(250),
                },
                "timeout after 250ms waiting for the response",
            ),
            (Reason::Refused, "connection refused"),
            (
                Reason::Status {
                    got: 503,
                    expected: vec![200],
                },
                "status 503, expected 200",
            ),
            (
                Reason::Status {
                    got: 404,
                    expected: vec![200, 204],
                },
                "status 404, expected one of 200, 204",
            ),
            (
                Reason::Status {
                    got: 404,
                    expected: (200..=299).collect(),
                },
                "status 404, expected 200-299",
            ),
            (
                Reason::Status {
                    got: 404,
                    expected: vec![301, 200, 201, 202],
                },
                "status 404, expected one of 200-202, 301",
            ),
            (
                Reason::Status {
                    got: 404,
                    expected: vec![200, 201],
                },
                "status 404, expected one of 200, 201",
            ),
            (
                Reason::Url {
                    url: "/b".into(),
                    reason: Box::new(Reason::Refused),
                },
                "url /b: connection refused",
            ),
            (
                Reason::DigestMismatch {
                    expected: Digest::Md5("00112233445566778899aabbccddeeff".into()),
                    got: "ffeeddccbbaa99887766554433221100".into(),
                },
                "body md5 mismatch: expected 00112233445566778899aabbccddeeff, \
                 got ffeeddccbbaa99887766554433221100",
            ),
            (
                Reason::Exit {
                    code: 3,
                    output: ScriptOutput::default(),
                },
                "exit code 3",
            ),
            (
                Reason::Exit {
                    code: 1,
                    output: ScriptOutput::from_head(
                        b"\n  disk full\r\nsecond\x1b[0m\nthird\nfourth\n",
                    ),
                },
                "exit code 1; output: \"disk full\" \"second\\u{1b}[0m\" \"third\"",
            ),
            (
                Reason::Signal {
                    signal: 9,
                    output: ScriptOutput::default(),
                },
                "killed by signal 9 (sigkill)",
            ),
            (
                Reason::KilledAfterTimeout {
                    timeout: Duration::from_millis(1500),
                },
                "killed after timeout of 1.5s",
            ),
            (Reason::DnsRcode { rcode: 3 }, "dns rcode nxdomain"),
            (
                Reason::DnsNoAnswer {
                    name: "example.org".into(),
                    qtype: QType::Aaaa,
                },
                "dns reply has no aaaa answer for example.org",
            ),
            (
                Reason::UnexpectedReply {
                    expected: b"pong".to_vec(),
                    got: vec![0; 20],
                },
                "reply does not match: expected 706f6e67 at the start, \
                 got 00000000000000000000000000000000… (20 bytes)",
            ),
            (Reason::PortUnreachable, "icmp port unreachable"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn os_errors_are_classified() {
        let refused = io::Error::from_raw_os_error(libc_errno::ECONNREFUSED);
        assert_eq!(Reason::io(Phase::Connect, &refused), Reason::Refused);
        assert_eq!(Reason::io(Phase::Reply, &refused), Reason::PortUnreachable);
        let unreach = io::Error::from_raw_os_error(libc_errno::EHOSTUNREACH);
        assert_eq!(
            Reason::io(Phase::Reply, &unreach).to_string(),
            "icmp no route to host"
        );
        assert_eq!(
            Reason::io(Phase::Connect, &unreach).to_string(),
            "connecting: no route to host"
        );
    }
}
