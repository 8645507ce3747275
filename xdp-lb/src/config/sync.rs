//! `[sync]`: NAT connections sent by the MASTER of one VRRP instance to its peers
//! (keepalived's `lvs_sync_daemon`); see [`crate::sync`].
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use toml::{Spanned, Value};

use super::error::ConfigError;
use super::raw::RawSync;
use super::validate::{MAX_IFNAME_BYTES, Validator, is_valid_ifname};
use super::{SyncConfig, SyncSecret, VrrpInstance};

/// keepalived's sync daemon port.
pub const DEFAULT_SYNC_PORT: u16 = 8848;
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET: usize = 16;

impl Validator<'_, '_> {
    pub(super) fn sync(
        &self,
        raw: Option<Spanned<RawSync>>,
        vrrp: &[VrrpInstance],
    ) -> Result<Option<Box<SyncConfig>>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let span = raw.span();
        let raw = raw.into_inner();
        let instance = match &raw.instance {
            Some(v) => {
                let name = self.string(v, "instance", "the name of a `[vrrp.NAME]` instance")?;
                if !vrrp.iter().any(|vi| vi.name == name) {
                    let names: Vec<&str> = vrrp.iter().map(|vi| vi.name.as_str()).collect();
                    return Err(self.src.error(
                        v.span(),
                        format!(
                            "`[sync] instance` = {name:?} is no `[vrrp.NAME]` instance \
                             (there are: {names:?}); its MASTER sends, the others receive"
                        ),
                    ));
                }
                name.to_owned()
            }
            None => match vrrp {
                [only] => only.name.clone(),
                _ => {
                    return Err(self.src.error(
                        span,
                        "`[sync]` needs `instance`, the `[vrrp.NAME]` instance whose MASTER \
                         sends its NAT connections (the others receive them)",
                    ));
                }
            },
        };
        let interface = match &raw.interface {
            Some(v) => {
                let name = self.string(v, "interface", "an interface name such as \"eth1\"")?;
                if !is_valid_ifname(name) {
                    return Err(self.src.error(
                        v.span(),
                        format!(
                            "`[sync] interface`: {name:?} is not a valid interface name \
                             (1 to {MAX_IFNAME_BYTES} bytes, no '/', ':' or whitespace)"
                        ),
                    ));
                }
                Some(name.to_owned())
            }
            None => None,
        };
        let peers = match &raw.peers {
            Some(v) => match v.get_ref() {
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        let spanned = Spanned::new(v.span(), item.clone());
                        match self.ip(&spanned, "peers", "192.0.2.3")? {
                            IpAddr::V4(a) => Ok(a),
                            IpAddr::V6(_) => Err(self.src.error(
                                v.span(),
                                "`[sync] peers` must be IPv4 addresses (NAT, and so its \
                                 sync, is IPv4 only)",
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => {
                    return Err(self.src.error(
                        v.span(),
                        "`peers` must be a list of addresses such as [\"192.0.2.3\"]",
                    ));
                }
            },
            None => Vec::new(),
        };
        let group = match &raw.group {
            Some(v) => {
                let form = "an IPv4 multicast address such as \"224.0.0.81\"";
                let text = self.string(v, "group", form)?;
                match text.parse::<Ipv4Addr>() {
                    Ok(a) if a.is_multicast() => Some(a),
                    _ => {
                        return Err(self
                            .src
                            .error(v.span(), format!("`[sync] group` = {text:?} is not {form}")));
                    }
                }
            }
            None => None,
        };
        if peers.is_empty() && group.is_none() {
            return Err(self.src.error(
                span,
                "`[sync]` needs `peers` (unicast, e.g. [\"192.0.2.3\"]) or `group` \
                 (multicast, e.g. \"224.0.0.81\" as keepalived), or both",
            ));
        }
        if group.is_some() && interface.is_none() {
            return Err(self.src.error(
                span,
                "`[sync] group` needs `interface`: the interface to send and join on",
            ));
        }
        let port = match &raw.port {
            Some(v) => self.integer(v, "port", 1..=65535)? as u16,
            None => DEFAULT_SYNC_PORT,
        };
        let secret = match (&raw.secret, &raw.secret_file) {
            (Some(v), None) => {
                let s = self.string(v, "secret", "a string of 16 or more bytes")?;
                if s.len() < MIN_SECRET {
                    return Err(self.src.error(
                        v.span(),
                        format!(
                            "`[sync] secret` has {} bytes: use {MIN_SECRET} or more (e.g. \
                             `openssl rand -hex 32`), the same on every node",
                            s.len()
                        ),
                    ));
                }
                SyncSecret::Inline(s.to_owned())
            }
            (None, Some(v)) => {
                let path = self.string(v, "secret_file", "an absolute path")?;
                if !path.starts_with('/') {
                    return Err(self.src.error(
                        v.span(),
                        format!("`[sync] secret_file` = {path:?} must be an absolute path"),
                    ));
                }
                SyncSecret::File(path.into())
            }
            (Some(v), Some(_)) => {
                return Err(self.src.error(
                    v.span(),
                    "`[sync]` has both `secret` and `secret_file`: keep one",
                ));
            }
            (None, None) => {
                return Err(self.src.error(
                    span,
                    "`[sync]` needs `secret` or `secret_file`: the key that authenticates \
                     the messages (HMAC-SHA256), the same on every node",
                ));
            }
        };
        let interval = match &raw.interval {
            Some(v) => {
                let d = self.duration(v, "interval")?;
                if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&d) {
                    return Err(self.src.error(
                        v.span(),
                        "`[sync] interval` must be from \"100ms\" to \"60s\": how often the \
                         MASTER walks its NAT table for new and changed connections",
                    ));
                }
                d
            }
            None => Duration::from_secs(1),
        };
        let rate = match &raw.rate {
            Some(v) => self.integer(v, "rate", 100..=10_000_000)? as u64,
            None => 50_000,
        };
        Ok(Some(Box::new(SyncConfig {
            instance,
            interface,
            peers,
            group,
            port,
            secret,
            interval,
            rate,
        })))
    }
}
