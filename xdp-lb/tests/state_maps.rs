//! The connection-state tables as loaded: sized from `max_flows` and `max_flows_v6`
//! with the common LRU, and adopted by the next run when pinned (needs root).
mod support;

use aya::maps::MapInfo;
use support::test_run::{pin_to_cpu0, require_root};
use xdp_lb::dataplane::{
    Dataplane, FlowCapacity,
    pins::{self, Pins, STATE_MAPS},
};
use xdp_lb_common::STATE_MAP_FLAGS;

/// Each state map's (name, capacity, flags) as the kernel reports them.
fn state_maps(dp: &Dataplane) -> Vec<(String, u32, u32)> {
    let info = dp.program().info().expect("program info");
    let mut maps: Vec<(String, u32, u32)> = info
        .map_ids()
        .expect("map ids")
        .expect("the kernel lists a program's maps")
        .into_iter()
        .map(|id| MapInfo::from_id(id).expect("map info"))
        .filter_map(|m| {
            let name = m.name_as_str()?.to_owned();
            STATE_MAPS
                .iter()
                .any(|s| s.name == name)
                .then(|| (name, m.max_entries(), m.map_flags()))
        })
        .collect();
    maps.sort();
    maps
}

#[test]
fn the_ipv6_tables_take_max_flows_v6_and_the_others_max_flows() {
    require_root();
    pin_to_cpu0();
    let capacity = FlowCapacity {
        max_flows: 4096,
        max_flows_v6: 0,
    };
    let dp = Dataplane::load(capacity).expect("load");
    let maps = state_maps(&dp);
    assert_eq!(maps.len(), STATE_MAPS.len(), "{maps:?}");
    for (name, entries, flags) in maps {
        let map = STATE_MAPS.iter().find(|s| s.name == name).unwrap();
        let wanted = match map.sized_by {
            pins::SizedBy::MaxFlows => 4096,
            // No IPv6 table: one entry, the fewest a map holds.
            pins::SizedBy::MaxFlowsV6 => 1,
        };
        assert_eq!((entries, flags), (wanted, STATE_MAP_FLAGS), "{name}");
    }
    // What the daemon reports at start: the IPv6 tables cost as much again.
    let without_v6 = dp.state_memory().expect("memlock of the state maps");
    drop(dp);
    let both = Dataplane::load(4096).expect("load").state_memory().unwrap();
    assert!(
        both > without_v6 + without_v6 / 2,
        "{both} bytes with IPv6 tables, {without_v6} without"
    );
}

#[test]
fn pinned_tables_are_adopted_by_the_next_load_of_the_same_capacity() {
    require_root();
    pin_to_cpu0();
    xdp_lb_lab::daemon::ensure_lab_bpffs().expect("bpffs for the pins");
    let root = std::path::Path::new(xdp_lb_lab::daemon::LAB_BPFFS)
        .join(format!("state-maps-{}", std::process::id()));
    let pins = Pins::under(&root).expect("a pin directory on bpffs");
    // Not a multiple of the CPUs: a per-CPU LRU would have been rounded up, and a
    // restart that compared with the configured figure replaced it every time.
    let capacity = FlowCapacity {
        max_flows: 1025,
        max_flows_v6: 1027,
    };
    let first = Dataplane::load_pinned(capacity, pins.clone()).expect("first load");
    assert!(first.adopted().is_empty(), "{:?}", first.adopted());
    drop(first);
    let second = Dataplane::load_pinned(capacity, pins.clone()).expect("second load");
    let mut adopted = second.adopted().to_vec();
    adopted.sort();
    drop(second);
    // Another capacity is another table.
    let other = FlowCapacity {
        max_flows: 2048,
        ..capacity
    };
    let third = Dataplane::load_pinned(other, pins.clone()).expect("third load");
    let mut kept = third.adopted().to_vec();
    kept.sort();
    drop(third);
    pins.remove();
    let _ = std::fs::remove_dir(&root);
    let mut all: Vec<_> = STATE_MAPS.iter().map(|m| m.name).collect();
    all.sort();
    assert_eq!(adopted, all, "every state map kept");
    assert_eq!(
        kept,
        ["FLOWS", "NAT_REPLIES"],
        "only the IPv6 tables kept their size"
    );
}
