//! The IPv4 service index (`SERVICE_INDEX_V4`, see `SERVICE_INDEX_SLOTS` in
//! xdp-lb-common), derived slot by slot from the services installed in `SERVICES_V4`,
//! which stays the authority.
//!
//! While a service whose key hashes to a slot changes, the slot is marked shared, so
//! its packets look their key up in `SERVICES_V4`; afterwards the slot is settled from
//! what is installed: no service (empty), one (an entry written aside first, then the
//! slot switched to it with one u32 write), or several (shared): see `selector`.
use aya::maps::{Array, MapData};
use xdp_lb_common::{
    SERVICE_ENTRY_SLOTS, SERVICE_INDEX_EMPTY, SERVICE_INDEX_ENTRY_BASE, SERVICE_INDEX_SHARED,
    ServiceEntryV4, ServiceKey, ServiceKeyV4,
};

use super::{
    DataplaneError,
    selector::{PooledSelector, Target},
};

/// What a slot holds, given the entries of the services hashing to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotPlan {
    Empty,
    One(ServiceEntryV4),
    Shared,
}

impl SlotPlan {
    pub fn of(installed: &[ServiceEntryV4]) -> SlotPlan {
        match installed {
            [] => SlotPlan::Empty,
            [one] => SlotPlan::One(*one),
            _ => SlotPlan::Shared,
        }
    }
}

/// The slot an installed key hashes to; `None` for an IPv6 key (not indexed).
pub fn slot_of(key: &ServiceKey) -> Option<u32> {
    ServiceKeyV4::stored(key).map(|k| ServiceKeyV4::index_slot(k.word()))
}

pub struct ServiceIndex(PooledSelector<ServiceEntryV4>);

impl ServiceIndex {
    /// Over freshly loaded (all empty) maps.
    pub fn new(slots: Array<MapData, u32>, entries: Array<MapData, ServiceEntryV4>) -> Self {
        ServiceIndex(PooledSelector::new(
            (slots, entries),
            ("SERVICE_INDEX_V4", "SERVICE_ENTRIES_V4"),
            "service entry pool",
            0..SERVICE_ENTRY_SLOTS,
            SERVICE_INDEX_ENTRY_BASE,
        ))
    }

    /// Marks `slot` shared: from here on its packets look their key up in
    /// `SERVICES_V4`, whatever happens to it there.
    pub fn open(&mut self, slot: u32) -> Result<(), DataplaneError> {
        self.0.select(slot, Target::Marker(SERVICE_INDEX_SHARED))
    }

    /// Makes `slot` hold what `plan` says.
    pub fn settle(&mut self, slot: u32, plan: SlotPlan) -> Result<(), DataplaneError> {
        let target = match &plan {
            SlotPlan::Empty => Target::Marker(SERVICE_INDEX_EMPTY),
            SlotPlan::Shared => Target::Marker(SERVICE_INDEX_SHARED),
            SlotPlan::One(entry) => Target::Value(entry),
        };
        self.0.select(slot, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdp_lb_common::{IPPROTO_TCP, ServiceValue, v4_mapped};

    fn key(addr: [u8; 4], port: u16) -> ServiceKey {
        ServiceKey {
            addr: v4_mapped(addr),
            port_be: port.to_be(),
            proto: IPPROTO_TCP,
            _pad: 0,
        }
    }

    #[test]
    fn a_slot_holds_its_only_service_and_is_shared_by_two() {
        let entry = |id| ServiceEntryV4 {
            key: id as u64,
            value: ServiceValue {
                id,
                ..Default::default()
            },
        };
        assert_eq!(SlotPlan::of(&[]), SlotPlan::Empty);
        assert_eq!(SlotPlan::of(&[entry(1)]), SlotPlan::One(entry(1)));
        assert_eq!(SlotPlan::of(&[entry(1), entry(2)]), SlotPlan::Shared);
    }

    #[test]
    fn only_ipv4_keys_are_indexed_and_their_slots_spread() {
        let mut ipv6 = key([192, 0, 2, 1], 80);
        ipv6.addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(slot_of(&ipv6), None);
        // A typical edge host: a few VIPs with a few ports each land in distinct
        // slots, so none of them pays the hash lookup.
        let mut slots: Vec<u32> = [80, 443, 8080, 53]
            .iter()
            .flat_map(|&port| (1..=8).map(move |host| key([192, 0, 2, host], port)))
            .map(|k| slot_of(&k).unwrap())
            .collect();
        assert!(
            slots
                .iter()
                .all(|&s| s < xdp_lb_common::SERVICE_INDEX_SLOTS)
        );
        slots.sort_unstable();
        slots.dedup();
        assert!(
            slots.len() >= 30,
            "32 services took only {} slots",
            slots.len()
        );
    }
}
