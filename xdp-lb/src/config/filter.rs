//! The source filter's keys: `[filter] deny` (the global deny list) and a virtual
//! server's `allow` and `deny`, typed into [`Prefix`]es; and [`shadowed_rules`], the
//! rules that can never decide anything, which `xdp-lb check` and the daemon report.
//!
//! Semantics (the data plane's, see `xdp-lb-ebpf/src/filter.rs`): a source in the
//! global deny list is dropped for every virtual server; otherwise the longest of the
//! service's prefixes that holds the source decides; a source none holds is allowed,
//! unless the service has an `allow` (then it is denied).
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use toml::{Spanned, Value};
use xdp_lb_common::MAX_FILTER_RULES;

use super::error::ConfigError;
use super::raw::RawFilter;
use super::validate::Validator;
use super::{Config, Filter, FilterRule, Location, VirtualServer};

/// `addr/len`, with no bit set past `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// Every address of `other` is in this prefix (same family, no longer).
    pub fn contains(&self, other: &Prefix) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.len <= other.len
            && Prefix::masked(other.addr, self.len) == self.addr
    }

    /// `addr` with only its first `len` bits kept (all of them when `len` is longer
    /// than the address).
    pub fn masked(addr: IpAddr, len: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(len.into()))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(len.into()))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A rule that can never decide anything, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Shadow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

const FORM: &str = "an array of source prefixes such as [\"198.51.100.0/24\", \"2001:db8:1::/48\"]";

impl Validator<'_, '_> {
    /// `[filter]`.
    pub(super) fn filter(&self, raw: Option<Spanned<RawFilter>>) -> Result<Filter, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Filter::default());
        };
        let deny = match &raw.get_ref().deny {
            Some(value) => self.prefixes(value, "deny", None)?,
            None => Vec::new(),
        };
        Ok(Filter { deny })
    }

    /// A virtual server's `allow` and `deny`: each prefix of the vip's family, none in
    /// both lists. `rules` counts the rules so far, every service's implicit default
    /// deny included, against the data plane's limit.
    pub(super) fn service_filter(
        &self,
        allow: Option<&Spanned<Vec<Spanned<Value>>>>,
        deny: Option<&Spanned<Vec<Spanned<Value>>>>,
        vip: IpAddr,
        service: &str,
        rules: &mut usize,
    ) -> Result<(Vec<FilterRule>, Vec<FilterRule>), ConfigError> {
        let list = |value: Option<&Spanned<Vec<Spanned<Value>>>>, key| match value {
            Some(v) => self.prefixes(v, key, Some((vip, service))),
            None => Ok(Vec::new()),
        };
        let (allow_rules, deny_rules) = (list(allow, "allow")?, list(deny, "deny")?);
        for d in &deny_rules {
            if let Some(a) = allow_rules.iter().find(|a| a.prefix == d.prefix) {
                return Err(self.error_at(
                    &d.location,
                    format!(
                        "virtual server {service}: {} is both allowed (line {}) and denied; \
                         a prefix has one action",
                        d.prefix, a.location.line
                    ),
                ));
            }
        }
        *rules += allow_rules.len() + deny_rules.len() + usize::from(!allow_rules.is_empty());
        if *rules > MAX_FILTER_RULES as usize {
            let value = allow.or(deny).expect("rules were added");
            return Err(self.src.error(
                value.span(),
                format!(
                    "virtual server {service} brings the source-filter rules to {rules} (a \
                     service with `allow` counts one more, its default deny); the data plane \
                     holds at most {MAX_FILTER_RULES}"
                ),
            ));
        }
        Ok((allow_rules, deny_rules))
    }

    fn error_at(&self, location: &Location, message: String) -> ConfigError {
        ConfigError::Invalid {
            location: location.clone(),
            message,
        }
    }

    /// An array of prefixes; `service` (its vip and name) when they are a service's.
    fn prefixes(
        &self,
        list: &Spanned<Vec<Spanned<Value>>>,
        key: &str,
        service: Option<(IpAddr, &str)>,
    ) -> Result<Vec<FilterRule>, ConfigError> {
        let mut rules = Vec::with_capacity(list.get_ref().len());
        for item in list.get_ref() {
            let text = self.string(item, key, FORM)?;
            let prefix = parse_prefix(text)
                .map_err(|why| self.src.error(item.span(), format!("`{key}`: {why}")))?;
            if let Some((vip, name)) = service
                && vip.is_ipv4() != prefix.addr.is_ipv4()
            {
                return Err(self.src.error(
                    item.span(),
                    format!(
                        "virtual server {name}: `{key}` prefix {prefix} is {} but the vip is {}, \
                         so no packet to it can come from there",
                        family(prefix.addr),
                        family(vip)
                    ),
                ));
            }
            rules.push(FilterRule {
                prefix,
                location: self.src.locate(item.span().start),
            });
        }
        Ok(rules)
    }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// `"198.51.100.0/24"`, `"2001:db8::/32"`, or an address alone (one host).
fn parse_prefix(text: &str) -> Result<Prefix, String> {
    let form = "expected a prefix such as \"198.51.100.0/24\" or \"2001:db8::/32\", or one address";
    let (addr, len) = match text.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text.trim(), None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not a source prefix: {form}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
    };
    if let IpAddr::V6(a) = addr
        && a.to_ipv4_mapped().is_some()
    {
        return Err(format!(
            "{text:?} is IPv4-mapped, which no IPv6 packet carries: write the IPv4 prefix"
        ));
    }
    let network = Prefix::masked(addr, len);
    if network != addr {
        return Err(format!(
            "{text:?} has bits set past its prefix length; did you mean \"{network}/{len}\"?"
        ));
    }
    Ok(Prefix { addr, len })
}

/// The rules that can never decide anything, in file order: a prefix listed twice; a
/// global deny inside another; a service's rule inside a global deny (the global list
/// decides first); a service's rule whose nearest enclosing rule of that service has
/// the same action, or, with none, that repeats the service's default (a `deny` in a
/// service with `allow` rules). Each still installs and counts; none changes a
/// verdict.
pub fn shadowed_rules(config: &Config) -> Vec<Shadow> {
    let mut out = Vec::new();
    let global = &config.filter.deny;
    for (i, rule) in global.iter().enumerate() {
        if let Some(first) = global[..i].iter().find(|r| r.prefix == rule.prefix) {
            out.push(shadow(
                rule,
                format!(
                    "[filter] deny {} is listed twice (first at line {})",
                    rule.prefix, first.location.line
                ),
            ));
        } else if let Some(wider) = global
            .iter()
            .find(|r| r.prefix != rule.prefix && r.prefix.contains(&rule.prefix))
        {
            out.push(shadow(
                rule,
                format!(
                    "[filter] deny {} never decides: deny {} (line {}) holds it",
                    rule.prefix, wider.prefix, wider.location.line
                ),
            ));
        }
    }
    for vs in &config.virtual_servers {
        service_shadows(vs, global, &mut out);
    }
    out.sort_by_key(|s| (s.location.line, s.location.col));
    out
}

fn service_shadows(vs: &VirtualServer, global: &[FilterRule], out: &mut Vec<Shadow>) {
    let name = vs.name();
    let rules: Vec<(&FilterRule, &str)> = vs
        .allow
        .iter()
        .map(|r| (r, "allow"))
        .chain(vs.deny.iter().map(|r| (r, "deny")))
        .collect();
    for (i, &(rule, action)) in rules.iter().enumerate() {
        let what = format!("virtual server {name}: {action} {}", rule.prefix);
        if let Some((first, _)) = rules[..i].iter().find(|(r, _)| r.prefix == rule.prefix) {
            out.push(shadow(
                rule,
                format!(
                    "{what} is listed twice (first at line {})",
                    first.location.line
                ),
            ));
            continue;
        }
        if let Some(g) = global.iter().find(|g| g.prefix.contains(&rule.prefix)) {
            out.push(shadow(
                rule,
                format!(
                    "{what} never decides: [filter] deny {} (line {}) drops these sources first",
                    g.prefix, g.location.line
                ),
            ));
            continue;
        }
        // The nearest enclosing rule: the longest other prefix that holds this one.
        let enclosing = rules
            .iter()
            .filter(|(r, _)| r.prefix.len < rule.prefix.len && r.prefix.contains(&rule.prefix))
            .max_by_key(|(r, _)| r.prefix.len);
        match enclosing {
            Some((wider, wider_action)) if *wider_action == action => out.push(shadow(
                rule,
                format!(
                    "{what} changes nothing: {action} {} (line {}) already {} these sources",
                    wider.prefix,
                    wider.location.line,
                    if action == "allow" {
                        "allows"
                    } else {
                        "denies"
                    }
                ),
            )),
            None if action == "deny" && !vs.allow.is_empty() => out.push(shadow(
                rule,
                format!(
                    "{what} changes nothing: a service with `allow` rules denies every source \
                     none of them holds"
                ),
            )),
            _ => {}
        }
    }
}

fn shadow(rule: &FilterRule, message: String) -> Shadow {
    Shadow {
        location: rule.location.clone(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_with_their_family_and_refuse_host_bits() {
        let p = parse_prefix("198.51.100.0/24").unwrap();
        assert_eq!(p.to_string(), "198.51.100.0/24");
        assert_eq!(parse_prefix("2001:db8::7").unwrap().len, 128);
        assert_eq!(parse_prefix("0.0.0.0/0").unwrap().len, 0);
        let e = parse_prefix("198.51.100.7/24").unwrap_err();
        assert!(e.contains("did you mean \"198.51.100.0/24\""), "{e}");
        assert!(parse_prefix("198.51.100.0/33").is_err());
        assert!(parse_prefix("::ffff:198.51.100.0/120").is_err());
        assert!(parse_prefix("example.com").is_err());
    }

    #[test]
    fn containment_is_per_family_and_by_the_shorter_prefix() {
        let p = |t: &str| parse_prefix(t).unwrap();
        assert!(p("198.51.100.0/22").contains(&p("198.51.101.0/24")));
        assert!(!p("198.51.101.0/24").contains(&p("198.51.100.0/22")));
        assert!(p("0.0.0.0/0").contains(&p("192.0.2.1")));
        assert!(!p("0.0.0.0/0").contains(&p("2001:db8::1")));
        assert!(p("2001:db8::/32").contains(&p("2001:db8:1::/48")));
    }
}
