//! `[virtual_server_group.NAME]`: keepalived's `virtual_server_group`, a set of
//! VIP:port pairs that one `[[virtual_server]]` (`group = "NAME"`) serves as one
//! service: one pool of real servers, one set of checks, one persistence table.
//!
//! ```toml
//! [virtual_server_group.web]
//! members = ["192.0.2.100:80", "192.0.2.100:443", "192.0.2.101-110:80",
//!            "192.0.2.100:8000-8010", "[2001:db8::1]:80"]
//! ```
//!
//! A member is `ADDRESS:PORT`; `ADDRESS-LAST` is keepalived's address range (the last
//! IPv4 octet in decimal, the last IPv6 group in hex, both ends included), and
//! `PORT-LAST` a port range. This module parses members and expands the ranges; the
//! rules across services (no pair served twice, the data plane's capacity) are in
//! `validate.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use toml::Spanned;
use xdp_lb_common::MAX_SERVICES;

use super::error::ConfigError;
use super::raw::RawServerGroup;
use super::validate::Validator;

/// The form members take, for error messages.
pub(super) const MEMBER_FORM: &str = "\"192.0.2.100:80\", an address range \"192.0.2.101-110:80\", \
     a port range \"192.0.2.100:8000-8010\" or \"[2001:db8::1]:443\"";

/// One parsed member: `count` consecutive addresses from `first` (the last octet or
/// group counting up), each with the ports `ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub first: IpAddr,
    pub count: u32,
    pub ports: (u16, u16),
}

impl Member {
    /// How many VIP:port pairs it stands for.
    pub fn pairs(&self) -> u64 {
        u64::from(self.count) * (u64::from(self.ports.1 - self.ports.0) + 1)
    }

    /// Its VIP:port pairs, addresses first.
    pub fn expand(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        (0..self.count).flat_map(move |i| {
            let addr = match self.first {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + i)),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + u128::from(i))),
            };
            (self.ports.0..=self.ports.1).map(move |p| SocketAddr::new(addr, p))
        })
    }
}

/// Parses one member (see the module's documentation); the error says what is wrong.
pub fn parse_member(text: &str) -> Result<Member, String> {
    let text = text.trim();
    let (addr, ports) = match text.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .ok_or("an IPv6 address is written in brackets before its port")?,
        None => match text.rsplit_once(':') {
            None => return Err("expected ADDRESS:PORT".into()),
            Some((a, _)) if a.contains(':') => {
                return Err("an IPv6 address goes in brackets before its port, e.g. \
                            \"[2001:db8::1]:80\""
                    .into());
            }
            Some(pair) => pair,
        },
    };
    let (first, last) = match addr.split_once('-') {
        Some((first, last)) => (first, Some(last)),
        None => (addr, None),
    };
    let first: IpAddr = first
        .parse()
        .map_err(|_| format!("{first:?} is not an IP address"))?;
    if text.starts_with('[') != first.is_ipv6() {
        return Err("an IPv6 address goes in brackets, an IPv4 one does not".into());
    }
    let count = match (first, last) {
        (_, None) => 1,
        (IpAddr::V4(a), Some(last)) => {
            let start = a.octets()[3];
            let end: u8 = last.parse().map_err(|_| {
                format!("the end of an IPv4 range is a last octet (0 to 255), not {last:?}")
            })?;
            if end < start {
                return Err(format!("the range ends ({end}) before it starts ({start})"));
            }
            u32::from(end - start) + 1
        }
        (IpAddr::V6(a), Some(last)) => {
            let start = a.segments()[7];
            let end = u16::from_str_radix(last, 16).map_err(|_| {
                format!("the end of an IPv6 range is a last group in hex (0 to ffff), not {last:?}")
            })?;
            if end < start {
                return Err(format!(
                    "the range ends ({end:x}) before it starts ({start:x})"
                ));
            }
            u32::from(end - start) + 1
        }
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1 to 65535)"))
    };
    let ports = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if ports.1 < ports.0 {
        return Err(format!(
            "the port range ends ({}) before it starts ({})",
            ports.1, ports.0
        ));
    }
    Ok(Member {
        first,
        count,
        ports,
    })
}

/// A validated group: its VIP:port pairs, each with the span of the member it came from.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) members: Vec<(SocketAddr, Range<usize>)>,
    /// The table's span, for errors about the group as a whole.
    pub(super) span: Range<usize>,
}

impl Validator<'_, '_> {
    /// Every `[virtual_server_group.NAME]`, by name, expanded. A group holds at least
    /// one member, all of one address family, none twice; expanding stops at the
    /// data plane's capacity (one SERVICES entry per pair).
    pub(super) fn server_groups(
        &self,
        raws: BTreeMap<String, Spanned<RawServerGroup>>,
    ) -> Result<BTreeMap<String, Group>, ConfigError> {
        let mut groups = BTreeMap::new();
        for (name, table) in raws {
            let span = table.span();
            let raw = table.into_inner();
            let Some(list) = raw.members else {
                return Err(self.src.error(
                    span,
                    format!(
                        "`[virtual_server_group.{name}]` is missing `members`, its VIP:port \
                         pairs, e.g. `members = [\"192.0.2.100:80\", \"192.0.2.100:443\"]`"
                    ),
                ));
            };
            if list.get_ref().is_empty() {
                return Err(self.src.error(
                    list.span(),
                    format!(
                        "`[virtual_server_group.{name}]`: `members` is empty: list at least one \
                         VIP:port such as {MEMBER_FORM}"
                    ),
                ));
            }
            let mut members: Vec<(SocketAddr, Range<usize>)> = Vec::new();
            let mut seen: std::collections::HashMap<SocketAddr, usize> = Default::default();
            for item in list.into_inner() {
                let text = self.string(&item, "members", MEMBER_FORM)?;
                let member = parse_member(text).map_err(|why| {
                    self.src.error(
                        item.span(),
                        format!(
                            "`[virtual_server_group.{name}]`: member {text:?}: {why}; expected \
                             {MEMBER_FORM}"
                        ),
                    )
                })?;
                let total = members.len() as u64 + member.pairs();
                if total > u64::from(MAX_SERVICES) {
                    return Err(self.src.error(
                        item.span(),
                        format!(
                            "`[virtual_server_group.{name}]`: member {text:?} brings the group \
                             to {total} VIP:port pairs; the data plane holds at most \
                             {MAX_SERVICES} in all"
                        ),
                    ));
                }
                if let Some((first, _)) = members.first()
                    && first.is_ipv4() != member.first.is_ipv4()
                {
                    return Err(self.src.error(
                        item.span(),
                        format!(
                            "`[virtual_server_group.{name}]`: member {text:?} is not in the \
                             address family of {first}: a group's real servers serve all of \
                             it, so its members are all IPv4 or all IPv6"
                        ),
                    ));
                }
                for addr in member.expand() {
                    if let Some(at) = seen.insert(addr, item.span().start) {
                        return Err(self.src.error(
                            item.span(),
                            format!(
                                "`[virtual_server_group.{name}]`: {addr} is listed twice (first \
                                 at line {})",
                                self.src.line_of(at)
                            ),
                        ));
                    }
                    members.push((addr, item.span()));
                }
            }
            groups.insert(name, Group { members, span });
        }
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<String> {
        parse_member(text)
            .unwrap()
            .expand()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn members_expand_address_and_port_ranges() {
        assert_eq!(pairs("192.0.2.100:80"), ["192.0.2.100:80"]);
        assert_eq!(
            pairs("192.0.2.1-3:80"),
            ["192.0.2.1:80", "192.0.2.2:80", "192.0.2.3:80"]
        );
        assert_eq!(
            pairs(" 192.0.2.1:8000-8001 "),
            ["192.0.2.1:8000", "192.0.2.1:8001"]
        );
        assert_eq!(
            pairs("[2001:db8::9-a]:53"),
            ["[2001:db8::9]:53", "[2001:db8::a]:53"]
        );
        assert_eq!(
            parse_member("192.0.2.0-255:1-65535").unwrap().pairs(),
            256 * 65535
        );
    }

    #[test]
    fn bad_members_say_what_is_wrong() {
        let err = |t: &str| parse_member(t).unwrap_err();
        assert_eq!(err("192.0.2.1"), "expected ADDRESS:PORT");
        assert!(err("192.0.2.9-3:80").contains("ends (3) before it starts (9)"));
        assert!(err("192.0.2.1-300:80").contains("last octet"));
        assert!(err("192.0.2.1:0").contains("not a port"));
        assert!(err("192.0.2.1:90-80").contains("port range ends"));
        assert!(err("2001:db8::1:80").contains("brackets"));
        assert!(err("[192.0.2.1]:80").contains("IPv6 address goes in brackets"));
        assert!(err("[2001:db8::1-g]:80").contains("hex"));
        assert!(err("host:80").contains("not an IP address"));
    }
}
