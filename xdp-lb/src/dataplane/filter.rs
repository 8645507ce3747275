//! The source filter's maps: the two LPM tries (IPv4, IPv6) and the per-rule
//! counters. What goes in them is decided by [`crate::filter`]; this only writes a
//! whole generation of entries and reads the counters.
use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::lpm_trie::Key;
use xdp_lb_common::{
    FILTER_SCOPE_BITS, FilterKeyV4, FilterKeyV6, FilterValue, MAX_FILTER_RULES, filter_scope,
};

use super::{Dataplane, DataplaneError, map_err};

/// One entry of a filter trie: `addr/prefix_len` (host bits zero) in `scope`
/// (`FILTER_SCOPE_GLOBAL`, or a service's id + 1), decided by rule number `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilterEntry {
    pub scope: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub rule: u32,
    /// `FILTER_ALLOW` or `FILTER_DENY`.
    pub action: u32,
}

impl FilterEntry {
    /// Where it sits in a trie, without the rule.
    fn place(&self) -> (u32, IpAddr, u8) {
        (self.scope, self.addr, self.prefix_len)
    }
}

impl Dataplane {
    /// Makes filter generation `generation` (0 or 1) hold exactly `entries`: each is
    /// written, then what the generation held before and `entries` lacks is removed.
    /// Meant for the generation no service reads (see `SERVICE_F_FILTER_GEN`), so the
    /// order of the writes is not visible to packets.
    pub fn set_filter(
        &mut self,
        generation: u32,
        entries: &[FilterEntry],
    ) -> Result<(), DataplaneError> {
        let generation = generation & 1;
        for e in entries {
            if e.rule >= MAX_FILTER_RULES {
                return Err(DataplaneError::FilterRule(e.rule));
            }
            let value = FilterValue {
                rule: e.rule,
                action: e.action,
            };
            self.insert_filter(generation, e.place(), value)?;
            // Recorded as it is written, so a write that fails half way leaves no
            // entry the next write of this generation would not know to remove.
            self.filter_written[generation as usize].insert(e.place());
        }
        let wanted: BTreeSet<_> = entries.iter().map(FilterEntry::place).collect();
        let stale: Vec<_> = self.filter_written[generation as usize]
            .difference(&wanted)
            .copied()
            .collect();
        for place in stale {
            self.remove_filter(generation, place)?;
            self.filter_written[generation as usize].remove(&place);
        }
        Ok(())
    }

    fn insert_filter(
        &mut self,
        generation: u32,
        (scope, addr, len): (u32, IpAddr, u8),
        value: FilterValue,
    ) -> Result<(), DataplaneError> {
        let scope = filter_scope(scope, generation);
        let prefix = FILTER_SCOPE_BITS + u32::from(len);
        match addr {
            IpAddr::V4(a) => {
                let key = Key::new(
                    prefix,
                    FilterKeyV4 {
                        scope,
                        addr: a.octets(),
                    },
                );
                self.filter_v4
                    .insert(&key, value, 0)
                    .map_err(map_err("FILTER_V4"))
            }
            IpAddr::V6(a) => {
                let key = Key::new(
                    prefix,
                    FilterKeyV6 {
                        scope,
                        addr: a.octets(),
                    },
                );
                self.filter_v6
                    .insert(&key, value, 0)
                    .map_err(map_err("FILTER_V6"))
            }
        }
    }

    fn remove_filter(
        &mut self,
        generation: u32,
        (scope, addr, len): (u32, IpAddr, u8),
    ) -> Result<(), DataplaneError> {
        let scope = filter_scope(scope, generation);
        let prefix = FILTER_SCOPE_BITS + u32::from(len);
        let removed = match addr {
            IpAddr::V4(a) => self
                .filter_v4
                .remove(&Key::new(
                    prefix,
                    FilterKeyV4 {
                        scope,
                        addr: a.octets(),
                    },
                ))
                .map_err(map_err("FILTER_V4")),
            IpAddr::V6(a) => self
                .filter_v6
                .remove(&Key::new(
                    prefix,
                    FilterKeyV6 {
                        scope,
                        addr: a.octets(),
                    },
                ))
                .map_err(map_err("FILTER_V6")),
        };
        match removed {
            Err(DataplaneError::Map {
                source: aya::maps::MapError::KeyNotFound,
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Packets rule `rule` decided, summed over CPUs.
    pub fn rule_packets(&self, rule: u32) -> Result<u64, DataplaneError> {
        let per_cpu = self
            .filter_stats
            .get(&rule, 0)
            .map_err(map_err("FILTER_STATS"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Zeroes the counters of rule numbers a reload hands to new rules.
    pub fn reset_rule_counters(&mut self, rules: &[u32]) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
        for &rule in rules {
            let zero = aya::maps::PerCpuValues::try_from(vec![0u64; cpus])
                .map_err(DataplaneError::Cpus)?;
            self.filter_stats
                .set(rule, zero, 0)
                .map_err(map_err("FILTER_STATS"))?;
        }
        Ok(())
    }
}
