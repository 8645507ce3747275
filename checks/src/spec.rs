//! What to check ([`CheckSpec`]) and how often and how patiently ([`CheckParams`]),
//! mirroring keepalived's checkers and their defaults.
//!
//! | keepalived | here |
//! | --- | --- |
//! | `TCP_CHECK` | [`CheckSpec::Tcp`] |
//! | `HTTP_GET` (`virtualhost`; `url` blocks with `path`, `status_code`, `digest`, `virtualhost`) | [`CheckSpec::Http`] with one [`HttpUrl`] per `url` |
//! | `SSL_GET` | [`CheckSpec::Https`] (rustls; verification optional) |
//! | `MISC_CHECK` (`misc_path`, `misc_timeout`, `misc_dynamic`, `user`) | [`CheckSpec::Misc`] |
//! | `UDP_CHECK` (`payload`, `require_reply`) | [`CheckSpec::Udp`] |
//! | `DNS_CHECK` (`name`, `type`) | [`CheckSpec::Dns`] |
//! | `PING_CHECK` | [`CheckSpec::Icmp`] |
//! | `delay_loop`, `warmup`, `connect_timeout`, `retry`, `delay_before_retry`, `bindto`, `connect_ip`, `connect_port`, `alpha` | [`CheckParams`] |
//!
//! `rise` and `fall` come from keepalived's `vrrp_script`; for real-server checks they
//! default to 1, which is keepalived's checker behaviour.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use crate::reason::Reason;

/// One health check of a real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSpec {
    /// Up when a TCP connection opens.
    Tcp,
    /// HTTP GET over plain TCP.
    Http(HttpCheck),
    /// HTTP GET over TLS.
    Https { http: HttpCheck, tls: TlsCheck },
    /// An external command.
    Misc(MiscCheck),
    /// A UDP datagram and, optionally, an expected reply.
    Udp(UdpCheck),
    /// A DNS query over UDP.
    Dns(DnsCheck),
    /// An ICMP (or ICMPv6) echo.
    Icmp,
}

impl CheckSpec {
    /// keepalived's name of the checker, lowercase: `tcp_check`, `http_get`, `ssl_get`,
    /// `misc_check`, `udp_check`, `dns_check`, `ping_check`.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckSpec::Tcp => "tcp_check",
            CheckSpec::Http(_) => "http_get",
            CheckSpec::Https { .. } => "ssl_get",
            CheckSpec::Misc(_) => "misc_check",
            CheckSpec::Udp(_) => "udp_check",
            CheckSpec::Dns(_) => "dns_check",
            CheckSpec::Icmp => "ping_check",
        }
    }

    /// The check as a log line names it: `http_get 192.0.2.21:80/health`,
    /// `misc_check /usr/bin/check_app --fast`, `dns_check 192.0.2.53:53 example.org a`.
    pub fn describe(&self, params: &CheckParams) -> String {
        let target = params.target();
        let kind = self.kind();
        // The source too, when one is set: a check from the wrong address fails.
        let from = match params.source {
            Some(source) if !matches!(self, CheckSpec::Misc(_)) => format!(" from {source}"),
            _ => String::new(),
        };
        let what = match self {
            CheckSpec::Tcp | CheckSpec::Udp(_) => format!("{kind} {target}"),
            CheckSpec::Http(http) | CheckSpec::Https { http, .. } => match http.urls.as_slice() {
                [one] => format!("{kind} {target}{}", one.path),
                many => {
                    let paths: Vec<&str> = many.iter().map(|u| u.path.as_str()).collect();
                    format!(
                        "{kind} {target} ({} urls: {})",
                        many.len(),
                        paths.join(", ")
                    )
                }
            },
            CheckSpec::Misc(misc) if misc.argv.is_empty() => format!("{kind} (no command)"),
            CheckSpec::Misc(misc) => format!("{kind} {}", misc.argv.join(" ")),
            CheckSpec::Dns(dns) => format!("{kind} {target} {} {}", dns.name, dns.qtype),
            CheckSpec::Icmp => format!("{kind} {}", target.ip()),
        };
        what + &from
    }

    /// Checks what can be checked without touching the system (digest syntax, names,
    /// argv, address families). [`crate::Checker::new`] runs this and more (users, CA files).
    pub fn validate(&self, params: &CheckParams) -> Result<(), Reason> {
        params.validate()?;
        let invalid = |msg: String| Err(Reason::Invalid(msg));
        match self {
            CheckSpec::Tcp | CheckSpec::Icmp => Ok(()),
            CheckSpec::Http(http) | CheckSpec::Https { http, .. } => {
                if http.urls.is_empty() {
                    return invalid("an http check needs at least one url".into());
                }
                if let Some(host) = &http.virtualhost {
                    validate_host(host)?;
                }
                let many = http.urls.len() > 1;
                for (i, url) in http.urls.iter().enumerate() {
                    url.validate().map_err(|reason| match reason {
                        Reason::Invalid(why) if many => {
                            Reason::Invalid(format!("url {} ({}): {why}", i + 1, url.path))
                        }
                        other => other,
                    })?;
                }
                Ok(())
            }
            CheckSpec::Misc(misc) => match misc.argv.first() {
                None => invalid("misc command is empty".into()),
                Some(program) if program.is_empty() => invalid("misc program is empty".into()),
                Some(_) if misc.timeout == Some(Duration::ZERO) => {
                    invalid("misc timeout must be above zero".into())
                }
                Some(_) => Ok(()),
            },
            CheckSpec::Udp(_) => Ok(()),
            CheckSpec::Dns(dns) => crate::dns::encode_name(&dns.name).map(drop),
        }
    }
}

/// keepalived's accepted status codes when a `url` gives none: any 2xx.
pub const DEFAULT_STATUS: RangeInclusive<u16> = 200..=299;

/// `HTTP_GET` / `SSL_GET` settings: one or more URLs, all of which must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// The URLs requested by every probe, in order; the probe is up only if each one
    /// answers with an accepted status (and digest). Never empty once validated.
    pub urls: Vec<HttpUrl>,
    /// `Host` header (and, over TLS, default SNI name) of every URL without its own;
    /// default the address and port.
    pub virtualhost: Option<String>,
}

impl HttpCheck {
    /// GET `path`, expecting a 2xx status.
    pub fn new(path: impl Into<String>) -> HttpCheck {
        HttpCheck::url(HttpUrl::new(path))
    }

    /// A check of this one URL.
    pub fn url(url: HttpUrl) -> HttpCheck {
        HttpCheck::urls(vec![url])
    }

    /// A check of all these URLs.
    pub fn urls(urls: Vec<HttpUrl>) -> HttpCheck {
        HttpCheck {
            urls,
            virtualhost: None,
        }
    }
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck::new("/")
    }
}

/// One URL of an HTTP check: keepalived's `url { path; status_code; digest; virtualhost }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Request path, e.g. `/health`.
    pub path: String,
    /// Accepted status codes; default [`DEFAULT_STATUS`] (200-299), as keepalived.
    pub status: Vec<u16>,
    /// Expected digest of the body, if any.
    pub digest: Option<Digest>,
    /// `Host` header (and, over TLS, default SNI name) of this URL; default the
    /// check's `virtualhost`.
    pub virtualhost: Option<String>,
}

impl HttpUrl {
    /// GET `path`, expecting a 2xx status.
    pub fn new(path: impl Into<String>) -> HttpUrl {
        HttpUrl {
            path: path.into(),
            status: DEFAULT_STATUS.collect(),
            digest: None,
            virtualhost: None,
        }
    }

    fn validate(&self) -> Result<(), Reason> {
        let invalid = |msg: String| Err(Reason::Invalid(msg));
        if !self.path.starts_with('/') || self.path.chars().any(|c| c.is_ascii_control()) {
            return invalid(format!(
                "http path {:?} must start with '/' and contain no control characters",
                self.path
            ));
        }
        if self.status.is_empty() {
            return invalid("http status list is empty; give at least one code".into());
        }
        if let Some(code) = self.status.iter().find(|c| !(100..=999).contains(*c)) {
            return invalid(format!("http status {code} is not a 3-digit code"));
        }
        if let Some(digest) = &self.digest {
            digest.bytes()?;
        }
        if let Some(host) = &self.virtualhost {
            validate_host(host)?;
        }
        Ok(())
    }
}

fn validate_host(host: &str) -> Result<(), Reason> {
    if host.is_empty() || host.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(Reason::Invalid(format!(
            "virtualhost {host:?} is not a host name"
        )));
    }
    Ok(())
}

/// TLS settings of an `SSL_GET` check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsCheck {
    /// Verify the server's certificate chain and name. keepalived's `SSL_GET` does not,
    /// so the default is `false`.
    pub verify_certificate: bool,
    /// PEM file of trusted CA certificates; default the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Name to send as SNI and to verify; default `virtualhost`, else the IP address.
    pub sni: Option<String>,
}

/// An expected body digest, as lowercase or uppercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// MD5 of the body bytes, as keepalived's `genhash` prints it (32 hex digits).
    Md5(String),
    /// SHA-256 of the body bytes (64 hex digits).
    Sha256(String),
}

/// A hash function a body digest can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// keepalived's (and `genhash`'s) only one.
    Md5,
    Sha256,
}

impl HashKind {
    /// `md5` or `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Md5 => "md5",
            HashKind::Sha256 => "sha256",
        }
    }

    /// Parses `md5` or `sha256`, any case.
    pub fn from_name(name: &str) -> Option<HashKind> {
        [HashKind::Md5, HashKind::Sha256]
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
    }

    /// This function's digest of `body`, as lowercase hex.
    pub fn compute(self, body: &[u8]) -> String {
        match self {
            HashKind::Md5 => to_hex(&md5::compute(body).0),
            HashKind::Sha256 => to_hex(ring::digest::digest(&ring::digest::SHA256, body).as_ref()),
        }
    }
}

impl Digest {
    /// The hash function.
    pub fn kind(&self) -> HashKind {
        match self {
            Digest::Md5(_) => HashKind::Md5,
            Digest::Sha256(_) => HashKind::Sha256,
        }
    }

    /// `md5` or `sha256`.
    pub fn algorithm(&self) -> &'static str {
        self.kind().name()
    }

    /// The hex digits as given.
    pub fn hex(&self) -> &str {
        match self {
            Digest::Md5(hex) | Digest::Sha256(hex) => hex,
        }
    }

    /// The decoded digest; fails unless it is the algorithm's length in hex.
    pub fn bytes(&self) -> Result<Vec<u8>, Reason> {
        let (hex, len) = match self {
            Digest::Md5(hex) => (hex, 16),
            Digest::Sha256(hex) => (hex, 32),
        };
        let bad = || {
            Reason::Invalid(format!(
                "{} digest {hex:?} must be {} hex digits",
                self.algorithm(),
                len * 2
            ))
        };
        if hex.len() != len * 2 {
            return Err(bad());
        }
        (0..len)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad()))
            .collect()
    }

    /// This algorithm's digest of `body`, as lowercase hex.
    pub fn compute(&self, body: &[u8]) -> String {
        self.kind().compute(body)
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `MISC_CHECK` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiscCheck {
    /// Program and arguments, run directly (no shell; use `["/bin/sh", "-c", ...]` for one).
    pub argv: Vec<String>,
    /// Kill the command (its whole process group) after this long; default the interval,
    /// as keepalived's `misc_timeout`.
    pub timeout: Option<Duration>,
    /// keepalived's `misc_dynamic`: exit 0 = up with the configured weight, 1 = down,
    /// 2..=255 = up with weight `code - 2`.
    pub dynamic: bool,
    /// Run as this user (and its primary group) instead of the daemon's.
    pub user: Option<String>,
}

impl MiscCheck {
    /// Runs `argv` with the default timeout, not dynamic, as the daemon's user.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> MiscCheck {
        MiscCheck {
            argv: argv.into_iter().map(Into::into).collect(),
            timeout: None,
            dynamic: false,
            user: None,
        }
    }
}

/// `UDP_CHECK` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UdpCheck {
    /// Datagram to send (may be empty).
    pub payload: Vec<u8>,
    /// `None`: up unless an ICMP error comes back within the connect timeout (a reply
    /// also counts as up). `Some(bytes)`: a reply is required and must start with
    /// `bytes` (empty = any reply), like keepalived's `require_reply`.
    pub expect: Option<Vec<u8>>,
}

/// `DNS_CHECK` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheck {
    /// Name to query; default `.` (the root), as keepalived.
    pub name: String,
    /// Record type to query; default SOA, as keepalived.
    pub qtype: QType,
}

impl Default for DnsCheck {
    fn default() -> Self {
        DnsCheck {
            name: ".".into(),
            qtype: QType::Soa,
        }
    }
}

/// The record types keepalived's `DNS_CHECK` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    A,
    Ns,
    Cname,
    Soa,
    Mx,
    Txt,
    Aaaa,
}

impl QType {
    /// The type's number on the wire.
    pub fn code(self) -> u16 {
        match self {
            QType::A => 1,
            QType::Ns => 2,
            QType::Cname => 5,
            QType::Soa => 6,
            QType::Mx => 15,
            QType::Txt => 16,
            QType::Aaaa => 28,
        }
    }

    /// Parses a type name, any case: `a`, `AAAA`, `soa`, ...
    pub fn from_name(name: &str) -> Option<QType> {
        [
            QType::A,
            QType::Ns,
            QType::Cname,
            QType::Soa,
            QType::Mx,
            QType::Txt,
            QType::Aaaa,
        ]
        .into_iter()
        .find(|t| t.to_string().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::A => "a",
            QType::Ns => "ns",
            QType::Cname => "cname",
            QType::Soa => "soa",
            QType::Mx => "mx",
            QType::Txt => "txt",
            QType::Aaaa => "aaaa",
        })
    }
}

/// Parameters common to every check; build with [`CheckParams::new`] for keepalived's
/// defaults and change fields as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckParams {
    /// The real server (address and service port) the check is about.
    pub server: SocketAddr,
    /// `delay_loop`: time from the end of one check to the start of the next; default 60 s.
    pub interval: Duration,
    /// `warmup`: the first check starts after a random delay up to this, so that many
    /// checks do not fire at once; default the interval.
    pub warmup: Duration,
    /// `connect_timeout`: limit of each network phase (connect, TLS handshake, response,
    /// each body read, reply); default 5 s.
    pub connect_timeout: Duration,
    /// `retry`: further attempts, `delay_before_retry` apart, before a failure counts;
    /// default 1 (0 for MISC, 3 for DNS). Only used while the server is up.
    pub retry: u32,
    /// `delay_before_retry`: default 1 s (the interval for DNS).
    pub delay_before_retry: Duration,
    /// Consecutive successes that bring a down server up; default 1.
    pub rise: u32,
    /// Consecutive failed checks (after retries) that bring an up server down; default 1.
    pub fall: u32,
    /// `bindto`: source address of probes.
    pub source: Option<IpAddr>,
    /// `connect_ip`: probe this address instead of the server's.
    pub connect_ip: Option<IpAddr>,
    /// `connect_port`: probe this port instead of the server's.
    pub connect_port: Option<u16>,
    /// `alpha`: start down, so the server takes traffic only after its first success.
    /// Without it the server starts up and its first failure takes it down.
    pub alpha: bool,
}

impl CheckParams {
    /// keepalived's defaults for `spec` checking `server`.
    pub fn new(server: SocketAddr, spec: &CheckSpec) -> CheckParams {
        let interval = Duration::from_secs(60);
        let (retry, delay_before_retry) = match spec {
            CheckSpec::Misc(_) => (0, Duration::from_secs(1)),
            CheckSpec::Dns(_) => (3, interval),
            _ => (1, Duration::from_secs(1)),
        };
        CheckParams {
            server,
            interval,
            warmup: interval,
            connect_timeout: Duration::from_secs(5),
            retry,
            delay_before_retry,
            rise: 1,
            fall: 1,
            source: None,
            connect_ip: None,
            connect_port: None,
            alpha: false,
        }
    }

    /// The address probes go to: the server's, with `connect_ip`/`connect_port` applied.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(
            self.connect_ip.unwrap_or(self.server.ip()),
            self.connect_port.unwrap_or(self.server.port()),
        )
    }

    /// Rejects zero intervals, timeouts, rise or fall, and a source address whose family
    /// differs from the target's.
    pub fn validate(&self) -> Result<(), Reason> {
        let invalid = |msg: &str| Err(Reason::Invalid(msg.to_owned()));
        if self.interval.is_zero() {
            return invalid("interval must be above zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must be above zero");
        }
        if self.rise == 0 || self.fall == 0 {
            return invalid("rise and fall must be at least 1");
        }
        if let Some(source) = self.source
            && source.is_ipv4() != self.target().is_ipv4()
        {
            return Err(Reason::Invalid(format!(
                "source address {source} and target {} are of different families",
                self.target()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> SocketAddr {
        "192.0.2.21:80".parse().unwrap()
    }

    #[test]
    fn defaults_follow_keepalived() {
        let tcp = CheckParams::new(server(), &CheckSpec::Tcp);
        assert_eq!(tcp.interval, Duration::from_secs(60));
        assert_eq!(tcp.warmup, tcp.interval);
        assert_eq!(tcp.connect_timeout, Duration::from_secs(5));
        assert_eq!(
            (tcp.retry, tcp.delay_before_retry),
            (1, Duration::from_secs(1))
        );
        assert_eq!((tcp.rise, tcp.fall, tcp.alpha), (1, 1, false));
        let misc = CheckParams::new(server(), &CheckSpec::Misc(MiscCheck::new(["/bin/true"])));
        assert_eq!(misc.retry, 0);
        let dns = CheckParams::new(server(), &CheckSpec::Dns(DnsCheck::default()));
        assert_eq!((dns.retry, dns.delay_before_retry), (3, dns.interval));
        // keepalived's url_check: no status_code means any 2xx.
        let url = &HttpCheck::default().urls[0];
        assert_eq!(url.path, "/");
        assert_eq!(url.status.len(), 100);
        assert_eq!((url.status[0], url.status[99]), (200, 299));
        assert_eq!(DnsCheck::default().name, ".");
        assert!(!TlsCheck::default().verify_certificate);
    }

    #[test]
    fn target_applies_overrides() {
        let mut p = CheckParams::new(server(), &CheckSpec::Tcp);
        assert_eq!(p.target(), server());
        p.connect_port = Some(8080);
        assert_eq!(p.target(), "192.0.2.21:8080".parse().unwrap());
        p.connect_ip = Some("198.51.100.7".parse().unwrap());
        assert_eq!(p.target(), "198.51.100.7:8080".parse().unwrap());
    }

    #[test]
    fn describe_names_the_check_and_target() {
        let p = CheckParams::new(server(), &CheckSpec::Tcp);
        let http = CheckSpec::Http(HttpCheck::new("/health"));
        assert_eq!(http.describe(&p), "http_get 192.0.2.21:80/health");
        let two = CheckSpec::Http(HttpCheck::urls(vec![
            HttpUrl::new("/a"),
            HttpUrl::new("/b"),
        ]));
        assert_eq!(two.describe(&p), "http_get 192.0.2.21:80 (2 urls: /a, /b)");
        assert_eq!(CheckSpec::Tcp.describe(&p), "tcp_check 192.0.2.21:80");
        assert_eq!(CheckSpec::Icmp.describe(&p), "ping_check 192.0.2.21");
        let misc = CheckSpec::Misc(MiscCheck::new(["/bin/sh", "-c", "exit 0"]));
        assert_eq!(misc.describe(&p), "misc_check /bin/sh -c exit 0");
        let dns = CheckSpec::Dns(DnsCheck {
            name: "example.org".into(),
            qtype: QType::Aaaa,
        });
        assert_eq!(dns.describe(&p), "dns_check 192.0.2.21:80 example.org aaaa");
    }

    #[test]
    fn digests_are_validated_and_computed() {
        let md5 = Digest::Md5("5D41402ABC4B2A76B9719D911017C592".into());
        assert_eq!(md5.bytes().unwrap().len(), 16);
        // `printf hello | md5sum` and `| sha256sum`.
        assert_eq!(md5.compute(b"hello"), "5d41402abc4b2a76b9719d911017c592");
        let sha = Digest::Sha256(String::new());
        assert_eq!(
            sha.compute(b"hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(
            sha.bytes().unwrap_err().to_string(),
            "invalid check: sha256 digest \"\" must be 64 hex digits"
        );
        assert!(
            Digest::Md5("zz41402abc4b2a76b9719d911017c592".into())
                .bytes()
                .is_err()
        );
    }

    #[test]
    fn specs_are_validated() {
        let p = CheckParams::new(server(), &CheckSpec::Tcp);
        let bad_path = CheckSpec::Http(HttpCheck::new("health"));
        assert!(bad_path.validate(&p).is_err());
        let no_status = CheckSpec::Http(HttpCheck::url(HttpUrl {
            status: vec![],
            ..HttpUrl::new("/")
        }));
        assert!(no_status.validate(&p).is_err());
        let no_url = CheckSpec::Http(HttpCheck::urls(vec![]));
        assert_eq!(
            no_url.validate(&p).unwrap_err().to_string(),
            "invalid check: an http check needs at least one url"
        );
        // With several urls the bad one is named by position and path.
        let second_bad = CheckSpec::Http(HttpCheck::urls(vec![
            HttpUrl::new("/a"),
            HttpUrl {
                digest: Some(Digest::Md5("abc".into())),
                ..HttpUrl::new("/b")
            },
        ]));
        assert_eq!(
            second_bad.validate(&p).unwrap_err().to_string(),
            "invalid check: url 2 (/b): md5 digest \"abc\" must be 32 hex digits"
        );
        let bad_url_host = CheckSpec::Http(HttpCheck::url(HttpUrl {
            virtualhost: Some("a b".into()),
            ..HttpUrl::new("/")
        }));
        assert!(bad_url_host.validate(&p).is_err());
        assert!(
            CheckSpec::Misc(MiscCheck::new(Vec::<String>::new()))
                .validate(&p)
                .is_err()
        );
        let mut v6_source = p.clone();
        v6_source.source = Some("2001:db8::1".parse().unwrap());
        assert_eq!(
            CheckSpec::Tcp.validate(&v6_source).unwrap_err().to_string(),
            "invalid check: source address 2001:db8::1 and target 192.0.2.21:80 \
             are of different families"
        );
        let mut zero = p.clone();
        zero.fall = 0;
        assert!(CheckSpec::Tcp.validate(&zero).is_err());
        let bad_name = CheckSpec::Dns(DnsCheck {
            name: "a..b".into(),
            qtype: QType::A,
        });
        assert!(bad_name.validate(&p).is_err());
    }

    #[test]
    fn hash_kinds_parse_by_name() {
        assert_eq!(HashKind::from_name("MD5"), Some(HashKind::Md5));
        assert_eq!(HashKind::from_name("sha256"), Some(HashKind::Sha256));
        assert_eq!(HashKind::from_name("sha1"), None);
        assert_eq!(Digest::Sha256(String::new()).kind(), HashKind::Sha256);
    }

    #[test]
    fn qtypes_parse_by_name() {
        assert_eq!(QType::from_name("AAAA"), Some(QType::Aaaa));
        assert_eq!(QType::from_name("soa"), Some(QType::Soa));
        assert_eq!(QType::from_name("srv"), None);
        assert_eq!(QType::Mx.code(), 15);
    }
}
