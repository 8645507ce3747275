//! `[bfd.NAME]`: a BFD session that FRR's bfdd runs for us, and `peer_bfd` in a VRRP
//! instance, which names the sessions to its peers.
//!
//! ```toml
//! [bfd.to_lb2]
//! peer = "192.0.2.2"          # the address lb2's adverts come from
//! local = "192.0.2.1"         # optional: our end
//! interface = "eth0"          # optional: single-hop session bound to this link
//! min_rx = "20ms"             # optional, FRR's default 300ms
//! min_tx = "20ms"             # optional, FRR's default 300ms
//! multiplier = 3              # optional, FRR's default 3
//!
//! [vrrp.VI_1]
//! peer_bfd = ["to_lb2"]
//! ```
//!
//! The timers are FRR's (`receive-interval`, `transmit-interval`, `detect-multiplier`)
//! under keepalived's `bfd_instance` names.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use toml::{Spanned, Value};

use super::BfdSession;
use super::error::ConfigError;
use super::raw::RawBfd;
use super::validate::Validator;

/// bfdd's limits for `receive-interval` and `transmit-interval`.
const INTERVAL_MIN: Duration = Duration::from_millis(10);
const INTERVAL_MAX: Duration = Duration::from_secs(60);

impl Validator<'_, '_> {
    /// `[bfd.NAME]` tables, sorted by name.
    pub(super) fn bfd_sessions(
        &self,
        raws: BTreeMap<String, Spanned<RawBfd>>,
    ) -> Result<Vec<BfdSession>, ConfigError> {
        let mut out: Vec<BfdSession> = Vec::with_capacity(raws.len());
        for (name, table) in raws {
            let raw = table.get_ref();
            let Some(peer_value) = &raw.peer else {
                return Err(self.src.error(
                    table.span(),
                    format!(
                        "[bfd.{name}] is missing `peer`: the address of the other end, \
                         e.g. `peer = \"192.0.2.2\"`"
                    ),
                ));
            };
            let peer = self.ip(peer_value, "peer", "192.0.2.2")?;
            let local = match &raw.local {
                Some(v) => {
                    let local = self.ip(v, "local", "192.0.2.1")?;
                    if local.is_ipv4() != peer.is_ipv4() {
                        return Err(self.src.error(
                            v.span(),
                            format!("[bfd.{name}]: `local` {local} and `peer` {peer} are of different families"),
                        ));
                    }
                    Some(local)
                }
                None => None,
            };
            let interface = match &raw.interface {
                Some(v) => Some(
                    self.string(v, "interface", "an interface name such as \"eth0\"")?
                        .to_owned(),
                ),
                None => None,
            };
            let interval = |v: &Option<Spanned<Value>>,
                            key: &str|
             -> Result<Duration, ConfigError> {
                let Some(v) = v else {
                    return Ok(BfdSession::DEFAULT_INTERVAL);
                };
                let d = self.duration(v, key)?;
                if !(INTERVAL_MIN..=INTERVAL_MAX).contains(&d) || d.subsec_micros() % 1000 != 0 {
                    return Err(self.src.error(
                        v.span(),
                        format!(
                            "`{key}` must be whole milliseconds from 10ms to 60s (bfdd's range)"
                        ),
                    ));
                }
                Ok(d)
            };
            let min_rx = interval(&raw.min_rx, "min_rx")?;
            let min_tx = interval(&raw.min_tx, "min_tx")?;
            let multiplier = match &raw.multiplier {
                Some(v) => self.integer(v, "multiplier", 2..=255)? as u8,
                None => BfdSession::DEFAULT_MULTIPLIER,
            };
            let weight = match &raw.weight {
                Some(v) => self.integer(v, "weight", -253..=253)? as i32,
                None => 0,
            };
            if let Some(other) = out
                .iter()
                .find(|s| s.peer == peer && s.local == local && s.interface == interface)
            {
                return Err(self.src.error(
                    peer_value.span(),
                    format!(
                        "[bfd.{name}] is the same session as [bfd.{}] (peer {peer}): bfdd \
                         keeps one session per peer, local address and interface",
                        other.name
                    ),
                ));
            }
            out.push(BfdSession {
                name,
                peer,
                local,
                interface,
                min_rx,
                min_tx,
                multiplier,
                weight,
            });
        }
        Ok(out)
    }

    /// `track_bfd = ["to_gw"]`: names of `[bfd.NAME]` sessions (any family: they
    /// watch whatever the instance depends on, e.g. the upstream router).
    pub(super) fn track_bfd(
        &self,
        value: &Spanned<Value>,
        sessions: &[BfdSession],
    ) -> Result<Vec<String>, ConfigError> {
        self.bfd_names(value, "track_bfd", sessions)
    }

    /// A list of existing `[bfd.NAME]` names for `key`.
    fn bfd_names(
        &self,
        value: &Spanned<Value>,
        key: &str,
        sessions: &[BfdSession],
    ) -> Result<Vec<String>, ConfigError> {
        let known: Vec<&str> = sessions.iter().map(|s| s.name.as_str()).collect();
        self.table_names(value, key, "bfd", &known, "to_lb2")
    }

    /// `peer_bfd = ["to_lb2"]`: names of `[bfd.NAME]` sessions of the instance's family;
    /// with unicast peers, each session's peer must be one of them (another address
    /// could never be the master this instance follows).
    pub(super) fn peer_bfd(
        &self,
        value: &Spanned<Value>,
        sessions: &[BfdSession],
        ipv6: bool,
        unicast_peers: &[IpAddr],
    ) -> Result<Vec<String>, ConfigError> {
        let names = self.bfd_names(value, "peer_bfd", sessions)?;
        for name in &names {
            let session = sessions
                .iter()
                .find(|s| &s.name == name)
                .expect("bfd_names checked it exists");
            if session.peer.is_ipv6() != ipv6 {
                return Err(self.src.error(
                    value.span(),
                    format!(
                        "`peer_bfd`: [bfd.{name}]'s peer {} is not of this instance's family: \
                         it must be the address the peer's adverts come from",
                        session.peer
                    ),
                ));
            }
            if !unicast_peers.is_empty() && !unicast_peers.contains(&session.peer) {
                return Err(self.src.error(
                    value.span(),
                    format!(
                        "`peer_bfd`: [bfd.{name}]'s peer {} is none of `unicast_peers`: the \
                         session going down could never mean this instance's master died",
                        session.peer
                    ),
                ));
            }
        }
        Ok(names)
    }
}
