//! `check = { ... }` of a real server and `sorry_server` of a virtual server: typed
//! into the checkers' own spec and parameters, keepalived's defaults for anything not
//! given, and the checkers' own validation reported at the check's location.
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use toml::{Spanned, Value};
use xdp_lb_checks::{
    CheckParams, CheckSpec, Digest, DnsCheck, HttpCheck, HttpUrl, MiscCheck, QType, TlsCheck,
    UdpCheck,
};

use super::Check;
use super::error::ConfigError;
use super::raw::{RawCheck, RawUrl};
use super::validate::Validator;

const KINDS: &str = "\"tcp\", \"http\", \"https\", \"misc\", \"udp\", \"dns\", \"icmp\"";
const COUNTS: RangeInclusive<i64> = 0..=1000;
const RISE_FALL: RangeInclusive<i64> = 1..=1000;
const STATUS: RangeInclusive<i64> = 100..=999;

/// Keys that only some check types take, and which.
const TYPE_KEYS: &[(&str, &str)] = &[
    ("path", "http, https"),
    ("status", "http, https"),
    ("digest", "http, https"),
    ("virtualhost", "http, https"),
    ("urls", "http, https"),
    ("verify_certificate", "https"),
    ("ca_file", "https"),
    ("sni", "https"),
    ("command", "misc"),
    ("timeout", "misc"),
    ("dynamic", "misc"),
    ("user", "misc"),
    ("payload", "udp"),
    ("expect", "udp"),
    ("name", "dns"),
    ("qtype", "dns"),
];

impl Validator<'_, '_> {
    pub(super) fn check(
        &self,
        table: &Spanned<RawCheck>,
        server: SocketAddr,
        service: &str,
    ) -> Result<Check, ConfigError> {
        let raw = table.get_ref();
        let Some(kind_value) = &raw.kind else {
            return Err(self.src.error(
                table.span(),
                format!("the check of real server {server} needs `type`: one of {KINDS}"),
            ));
        };
        let kind = self.string(kind_value, "type", &format!("one of {KINDS}"))?;
        let kind = match kind {
            // keepalived's names, so a migrated config reads naturally.
            "tcp_check" => "tcp",
            "http_get" => "http",
            "ssl_get" => "https",
            "misc_check" => "misc",
            "udp_check" => "udp",
            "dns_check" => "dns",
            "ping_check" => "icmp",
            other => other,
        };
        self.only_for(raw, kind)?;
        let spec = match kind {
            "tcp" => CheckSpec::Tcp,
            "icmp" => CheckSpec::Icmp,
            "http" => CheckSpec::Http(self.http(raw)?),
            "https" => CheckSpec::Https {
                http: self.http(raw)?,
                tls: self.tls(raw)?,
            },
            "misc" => CheckSpec::Misc(self.misc(raw, table)?),
            "udp" => CheckSpec::Udp(UdpCheck {
                payload: {
                    let payload = self
                        .opt_string(&raw.payload, "payload")?
                        .unwrap_or_default()
                        .into_bytes();
                    // The most one IPv4 UDP datagram carries.
                    if let (Some(v), true) = (&raw.payload, payload.len() > 65_507) {
                        return Err(self.src.error(
                            v.span(),
                            format!(
                                "`payload` is {} bytes; a UDP datagram carries at most 65507",
                                payload.len()
                            ),
                        ));
                    }
                    payload
                },
                expect: self
                    .opt_string(&raw.expect, "expect")?
                    .map(String::into_bytes),
            }),
            "dns" => {
                let mut dns = DnsCheck::default();
                if let Some(name) = self.opt_string(&raw.name, "name")? {
                    dns.name = name;
                }
                if let Some(value) = &raw.qtype {
                    let text = self.string(value, "qtype", "a record type such as \"A\"")?;
                    dns.qtype = QType::from_name(text).ok_or_else(|| {
                        self.src.error(
                            value.span(),
                            format!("invalid `qtype` {text:?}: expected A, NS, CNAME, SOA, MX, TXT or AAAA"),
                        )
                    })?;
                }
                CheckSpec::Dns(dns)
            }
            other => {
                return Err(self.src.error(
                    kind_value.span(),
                    format!("invalid check `type` {other:?}: expected one of {KINDS}"),
                ));
            }
        };
        let mut params = CheckParams::new(server, &spec);
        if let Some(v) = &raw.interval {
            params.interval = self.duration(v, "interval")?;
            // keepalived's warmup defaults to the delay loop.
            params.warmup = params.interval;
        }
        if let Some(v) = &raw.warmup {
            params.warmup = self.duration(v, "warmup")?;
        }
        if let Some(v) = &raw.connect_timeout {
            params.connect_timeout = self.duration(v, "connect_timeout")?;
        }
        if let Some(v) = &raw.retry {
            params.retry = self.integer(v, "retry", COUNTS)? as u32;
        }
        if let Some(v) = &raw.delay_before_retry {
            params.delay_before_retry = self.duration(v, "delay_before_retry")?;
        }
        if let Some(v) = &raw.rise {
            params.rise = self.integer(v, "rise", RISE_FALL)? as u32;
        }
        if let Some(v) = &raw.fall {
            params.fall = self.integer(v, "fall", RISE_FALL)? as u32;
        }
        if let Some(v) = &raw.source {
            params.source = Some(self.ip(v, "source", "192.0.2.2")?);
        }
        if let Some(v) = &raw.connect_ip {
            params.connect_ip = Some(self.ip(v, "connect_ip", "192.0.2.11")?);
        }
        if let Some(v) = &raw.connect_port {
            params.connect_port = Some(self.integer(v, "connect_port", 1..=65535)? as u16);
        }
        if let Some(v) = &raw.alpha {
            params.alpha = self.boolean(v, "alpha")?;
        }
        spec.validate(&params).map_err(|reason| {
            self.src.error(
                table.span(),
                format!("the check of real server {server} in virtual server {service}: {reason}"),
            )
        })?;
        Ok(Check { spec, params })
    }

    /// A key of another check type is a mistake worth naming.
    fn only_for(&self, raw: &RawCheck, kind: &str) -> Result<(), ConfigError> {
        let given: [(&str, &Option<Spanned<Value>>); 15] = [
            ("path", &raw.path),
            ("status", &raw.status),
            ("digest", &raw.digest),
            ("virtualhost", &raw.virtualhost),
            ("verify_certificate", &raw.verify_certificate),
            ("ca_file", &raw.ca_file),
            ("sni", &raw.sni),
            ("command", &raw.command),
            ("timeout", &raw.timeout),
            ("dynamic", &raw.dynamic),
            ("user", &raw.user),
            ("payload", &raw.payload),
            ("expect", &raw.expect),
            ("name", &raw.name),
            ("qtype", &raw.qtype),
        ];
        let urls = raw.urls.as_ref().map(|u| u.span());
        let spans = given
            .into_iter()
            .filter_map(|(key, value)| Some((key, value.as_ref()?.span())))
            .chain(urls.map(|span| ("urls", span)));
        for (key, span) in spans {
            let types = TYPE_KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, t)| *t)
                .unwrap_or("");
            if !types.split(", ").any(|t| t == kind) {
                return Err(self.src.error(
                    span,
                    format!("`{key}` does not apply to a {kind} check (it is for: {types})"),
                ));
            }
        }
        Ok(())
    }

    /// `path`, `status`, `digest` at the check's level are one URL, the short form of
    /// `urls = [{ path, status, digest, virtualhost }, ...]`; the two forms do not mix.
    fn http(&self, raw: &RawCheck) -> Result<HttpCheck, ConfigError> {
        let single = RawUrl {
            path: raw.path.clone(),
            status: raw.status.clone(),
            digest: raw.digest.clone(),
            virtualhost: None,
        };
        let urls = match &raw.urls {
            None => vec![self.url(&single)?],
            Some(list) => {
                let given = [
                    ("path", &raw.path),
                    ("status", &raw.status),
                    ("digest", &raw.digest),
                ];
                if let Some((key, value)) = given.iter().find_map(|(k, v)| Some((k, v.as_ref()?))) {
                    return Err(self.src.error(
                        value.span(),
                        format!(
                            "`{key}` cannot be given beside `urls`: give it in each url, e.g. \
                             urls = [{{ path = \"/a\", status = [200] }}, {{ path = \"/b\" }}]"
                        ),
                    ));
                }
                if list.get_ref().is_empty() {
                    return Err(self.src.error(
                        list.span(),
                        "`urls` is empty: give at least one, e.g. [{ path = \"/health\" }]",
                    ));
                }
                list.get_ref()
                    .iter()
                    .map(|url| self.url(url.get_ref()))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(HttpCheck {
            urls,
            virtualhost: self.opt_string(&raw.virtualhost, "virtualhost")?,
        })
    }

    /// One URL; keepalived's defaults (path `/`, any 2xx) for what it does not give.
    fn url(&self, raw: &RawUrl) -> Result<HttpUrl, ConfigError> {
        let mut url = HttpUrl::new("/");
        if let Some(path) = self.opt_string(&raw.path, "path")? {
            url.path = path;
        }
        if let Some(value) = &raw.status {
            url.status = self.status(value)?;
        }
        if let Some(value) = &raw.digest {
            let form = "\"md5:<32 hex digits>\" or \"sha256:<64 hex digits>\"";
            let text = self.string(value, "digest", form)?;
            url.digest = Some(match text.split_once(':') {
                Some(("md5", hex)) => Digest::Md5(hex.to_string()),
                Some(("sha256", hex)) => Digest::Sha256(hex.to_string()),
                _ => {
                    return Err(self.src.error(
                        value.span(),
                        format!("invalid `digest` {text:?}: expected {form} (md5 as keepalived's genhash and `xdp-lb genhash` print it)"),
                    ));
                }
            });
        }
        url.virtualhost = self.opt_string(&raw.virtualhost, "virtualhost")?;
        Ok(url)
    }

    /// `status = [200, 204]`, with ranges as keepalived writes them: `["200-299", 301]`.
    fn status(&self, value: &Spanned<Value>) -> Result<Vec<u16>, ConfigError> {
        let form = "a list of status codes and ranges such as [200, 204] or [\"200-299\"]";
        let Value::Array(items) = value.get_ref() else {
            return Err(self.src.error(
                value.span(),
                format!(
                    "`status` must be {form}, found {}",
                    value.get_ref().type_str()
                ),
            ));
        };
        let mut codes: Vec<u16> = Vec::new();
        for item in items {
            let range = match item {
                Value::Integer(code) => Some((*code, *code)),
                Value::String(text) => text.split_once('-').and_then(|(a, b)| {
                    Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?))
                }),
                _ => None,
            };
            match range {
                Some((a, b)) if STATUS.contains(&a) && STATUS.contains(&b) && a <= b => {
                    for code in a..=b {
                        if !codes.contains(&(code as u16)) {
                            codes.push(code as u16);
                        }
                    }
                }
                _ => {
                    return Err(self.src.error(
                        value.span(),
                        format!("`status` must be {form}; {item} is not a code from 100 to 999 nor such a range"),
                    ));
                }
            }
        }
        Ok(codes)
    }

    fn tls(&self, raw: &RawCheck) -> Result<TlsCheck, ConfigError> {
        Ok(TlsCheck {
            verify_certificate: match &raw.verify_certificate {
                Some(v) => self.boolean(v, "verify_certificate")?,
                None => false,
            },
            ca_file: self.opt_string(&raw.ca_file, "ca_file")?.map(PathBuf::from),
            sni: self.opt_string(&raw.sni, "sni")?,
        })
    }

    fn misc(&self, raw: &RawCheck, table: &Spanned<RawCheck>) -> Result<MiscCheck, ConfigError> {
        let Some(value) = &raw.command else {
            return Err(self.src.error(
                table.span(),
                "a misc check needs `command`, e.g. [\"/usr/local/bin/check_app\", \"--fast\"] \
                 (run without a shell)",
            ));
        };
        let mut misc = MiscCheck::new(self.argv(value, "command")?);
        if let Some(v) = &raw.timeout {
            misc.timeout = Some(self.duration(v, "timeout")?);
        }
        if let Some(v) = &raw.dynamic {
            misc.dynamic = self.boolean(v, "dynamic")?;
        }
        misc.user = self.opt_string(&raw.user, "user")?;
        // As for track scripts: a user that does not exist is an error now, not a
        // check that fails forever once running.
        if let (Some(name), Some(v)) = (&misc.user, &raw.user)
            && !matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
        {
            return Err(self.src.error(
                v.span(),
                format!("`user`: there is no user {name:?} on this host"),
            ));
        }
        Ok(misc)
    }

    fn opt_string(
        &self,
        value: &Option<Spanned<Value>>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        value
            .as_ref()
            .map(|v| self.string(v, key, "a string").map(str::to_owned))
            .transpose()
    }

    /// `sorry_server = "192.0.2.250"` or `"192.0.2.250:8080"`; `"[2001:db8::250]:80"`.
    pub(super) fn sorry_server(
        &self,
        value: &Spanned<Value>,
        vip: IpAddr,
        port: Option<u16>,
        service: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let form = match port {
            Some(_) => "an address with an optional port such as \"192.0.2.250:80\"",
            // The service's members have several ports: which one is not obvious.
            None => "an address with a port such as \"192.0.2.250:80\"",
        };
        let text = self.string(value, "sorry_server", form)?.trim();
        let addr = text
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| Some(SocketAddr::new(text.parse::<IpAddr>().ok()?, port?)))
            .ok_or_else(|| {
                self.src.error(
                    value.span(),
                    format!("`sorry_server` = {text:?} is not {form}"),
                )
            })?;
        if addr.is_ipv4() != vip.is_ipv4() {
            return Err(self.src.error(
                value.span(),
                format!("sorry server {addr} of virtual server {service} must be in the vip's address family"),
            ));
        }
        Ok(addr)
    }
}
