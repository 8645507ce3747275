//! The source filter as the maps hold it: the configured `allow` / `deny` prefixes
//! (per virtual server) and the global deny list, numbered into rules whose numbers
//! index the per-rule counters, and the trie entries that follow from them. Pure: the
//! forwarding owner writes what [`entries`] returns.
//!
//! A rule keeps its number across reloads for as long as it stays configured (same
//! service, action and prefix), so its counter keeps counting; a new rule takes a
//! number no rule had before the reload, and starts from zero.
//!
//! A service with `allow` rules gets one more rule: its default deny, a `/0` of each
//! family, so a source none of its prefixes holds is dropped (and counted) by the
//! longest-prefix match itself, with no extra branch in the program.
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use xdp_lb_common::{FILTER_ALLOW, FILTER_DENY, FILTER_SCOPE_GLOBAL, MAX_FILTER_RULES, ServiceKey};

use crate::{
    config::{Config, Prefix},
    dataplane::filter::FilterEntry,
};

/// What a rule does with the sources it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// Whose rule it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `[filter] deny`: checked first, for every service.
    Global,
    Service(ServiceKey),
}

/// One numbered rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its counter's index in `FILTER_STATS`.
    pub number: u32,
    pub scope: Scope,
    pub action: Action,
    /// `None`: a service's default deny (it has `allow` rules, and none held the
    /// source).
    pub prefix: Option<Prefix>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{count} source-filter rules configured; the data plane holds at most {MAX_FILTER_RULES}")]
pub struct TooManyRules {
    pub count: usize,
}

/// The rules of `config`, numbered; `keys[i]` is the map key of virtual server `i`.
/// With `old`, the rules of the running table: those still configured keep their
/// number. Returns the rules and the numbers newly given (their counters start from 0).
pub fn build(
    config: &Config,
    keys: &[ServiceKey],
    old: Option<&[Rule]>,
) -> Result<(Vec<Rule>, Vec<u32>), TooManyRules> {
    let mut wanted: Vec<(Scope, Action, Option<Prefix>)> = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |rule: (Scope, Action, Option<Prefix>)| {
        // A prefix listed twice is one rule (`xdp-lb check` reports the second).
        if seen.insert(rule) {
            wanted.push(rule);
        }
    };
    for r in &config.filter.deny {
        add((Scope::Global, Action::Deny, Some(r.prefix)));
    }
    for (vs, key) in config.virtual_servers.iter().zip(keys) {
        let scope = Scope::Service(*key);
        for r in &vs.allow {
            add((scope, Action::Allow, Some(r.prefix)));
        }
        for r in &vs.deny {
            add((scope, Action::Deny, Some(r.prefix)));
        }
        if !vs.allow.is_empty() {
            add((scope, Action::Deny, None));
        }
    }
    let old_numbers: HashMap<(Scope, Action, Option<Prefix>), u32> = old
        .unwrap_or_default()
        .iter()
        .map(|r| ((r.scope, r.action, r.prefix), r.number))
        .collect();
    // A number in use before is given to no new rule in this reload: packets may
    // still be counting on it.
    let mut taken: HashSet<u32> = old_numbers.values().copied().collect();
    let mut next = 0;
    let mut fresh = Vec::new();
    let mut rules = Vec::with_capacity(wanted.len());
    for (scope, action, prefix) in wanted {
        let number = match old_numbers.get(&(scope, action, prefix)) {
            Some(n) => *n,
            None => {
                while taken.contains(&next) {
                    next += 1;
                }
                if next >= MAX_FILTER_RULES {
                    return Err(TooManyRules {
                        count: old_numbers.len() + rules.len(),
                    });
                }
                taken.insert(next);
                fresh.push(next);
                next
            }
        };
        rules.push(Rule {
            number,
            scope,
            action,
            prefix,
        });
    }
    Ok((rules, fresh))
}

/// The trie entries of `rules`; `service_id` gives a service key's id (its scope is
/// `id + 1`). Sorted, so two rule sets compare as their entries do.
pub fn entries(
    rules: &[Rule],
    service_id: impl Fn(&ServiceKey) -> Option<u32>,
) -> Vec<FilterEntry> {
    let mut out = Vec::with_capacity(rules.len() + 1);
    for rule in rules {
        let scope = match &rule.scope {
            Scope::Global => FILTER_SCOPE_GLOBAL,
            Scope::Service(key) => match service_id(key) {
                Some(id) => id + 1,
                None => continue,
            },
        };
        let action = match rule.action {
            Action::Allow => FILTER_ALLOW,
            Action::Deny => FILTER_DENY,
        };
        let entry = |addr, prefix_len| FilterEntry {
            scope,
            addr,
            prefix_len,
            rule: rule.number,
            action,
        };
        match rule.prefix {
            Some(p) => out.push(entry(p.addr, p.len)),
            // Both families: an IPv6 packet can carry an IPv4 service's (mapped)
            // address, and must not slip past its default deny.
            None => {
                out.push(entry(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
                out.push(entry(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
            }
        }
    }
    out.sort();
    out
}

/// The rule that decides a packet from `src` to the service `key` (`None` when the
/// service has no rules or none holds `src`: allowed), as the program decides it.
pub fn decide<'r>(rules: &'r [Rule], key: &ServiceKey, src: IpAddr) -> Option<&'r Rule> {
    let holds = |r: &&Rule| match r.prefix {
        Some(p) => p.addr.is_ipv4() == src.is_ipv4() && Prefix::masked(src, p.len) == p.addr,
        None => true,
    };
    let longest = |scope: Scope| {
        rules
            .iter()
            .filter(|r| r.scope == scope)
            .filter(holds)
            .max_by_key(|r| r.prefix.map_or(-1, |p| i32::from(p.len)))
    };
    longest(Scope::Global).or_else(|| longest(Scope::Service(*key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth0"]

[filter]
deny = ["203.0.113.0/24", "2001:db8:bad::/48"]

[[virtual_server]]
vip = "192.0.2.100"
port = 80
allow = ["198.51.100.0/24"]
deny = ["198.51.100.128/25"]
  [[virtual_server.real_server]]
  address = "192.0.2.11"

[[virtual_server]]
vip = "192.0.2.100"
port = 443
  [[virtual_server.real_server]]
  address = "192.0.2.11"
"#;

    fn keys(config: &Config) -> Vec<ServiceKey> {
        crate::services::ServiceTable::from_config(config)
            .unwrap()
            .services
            .iter()
            .map(|s| s.members[0].key)
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rules_are_numbered_with_a_default_deny_for_services_that_allow() {
        let config = config::parse(CONFIG, "t.toml").unwrap();
        let keys = keys(&config);
        let (rules, fresh) = build(&config, &keys, None).unwrap();
        assert_eq!(fresh, [0, 1, 2, 3, 4]);
        assert_eq!(rules.len(), 5);
        assert_eq!(rules[4].prefix, None, "the default deny");
        assert_eq!(rules[4].action, Action::Deny);
        let entries = entries(&rules, |k| (*k == keys[0]).then_some(7));
        // Two global, two prefixes of service 0 (scope 8), and its default in both
        // families.
        assert_eq!(entries.len(), 6);
        assert_eq!(entries.iter().filter(|e| e.scope == 8).count(), 4);
        assert!(
            entries
                .iter()
                .any(|e| e.scope == 8 && e.prefix_len == 0 && e.addr.is_ipv6() && e.rule == 4)
        );
    }

    #[test]
    fn the_global_list_then_the_longest_prefix_then_the_default_decide() {
        let config = config::parse(CONFIG, "t.toml").unwrap();
        let keys = keys(&config);
        let (rules, _) = build(&config, &keys, None).unwrap();
        let on =
            |svc: usize, src| decide(&rules, &keys[svc], ip(src)).map(|r| (r.action, r.number));
        assert_eq!(on(0, "198.51.100.7"), Some((Action::Allow, 2)));
        assert_eq!(
            on(0, "198.51.100.200"),
            Some((Action::Deny, 3)),
            "longest wins"
        );
        assert_eq!(
            on(0, "192.0.2.50"),
            Some((Action::Deny, 4)),
            "no allow holds it"
        );
        assert_eq!(
            on(0, "203.0.113.9"),
            Some((Action::Deny, 0)),
            "global first"
        );
        assert_eq!(on(1, "192.0.2.50"), None, "no rules: allowed");
        assert_eq!(on(1, "203.0.113.9"), Some((Action::Deny, 0)));
    }

    #[test]
    fn a_reload_keeps_the_numbers_of_rules_that_stay_and_reuses_none() {
        let config = config::parse(CONFIG, "t.toml").unwrap();
        let keys = keys(&config);
        let (old, _) = build(&config, &keys, None).unwrap();
        let changed = CONFIG.replace(
            "deny = [\"198.51.100.128/25\"]",
            "deny = [\"198.51.100.0/26\"]",
        );
        let config = config::parse(&changed, "t.toml").unwrap();
        let (rules, fresh) = build(&config, &keys, Some(&old)).unwrap();
        assert_eq!(
            fresh,
            [5],
            "the removed rule's number 3 is not reused at once"
        );
        let allow = rules.iter().find(|r| r.action == Action::Allow).unwrap();
        assert_eq!(allow.number, 2);
        assert!(rules.iter().all(|r| r.number != 3));
    }
}
