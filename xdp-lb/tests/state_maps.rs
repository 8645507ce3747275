//! The connection-state tables as loaded: sized from `max_flows` and `max_flows_v6`,
//! and a pinned table adopted by the next run whatever the kernel rounded its
//! capacity to (needs root).
mod support;

use aya::maps::MapInfo;
use support::test_run::{pin_to_cpu0, require_root};
use xdp_lb::dataplane::{
    Dataplane, FlowCapacity,
    pins::{self, Pins, STATE_MAPS, kernel_capacity},
};

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
    let cpus = aya::util::nr_cpus().expect("possible CPUs") as u32;
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
            // No IPv6 table: as small as the kernel makes one.
            pins::SizedBy::MaxFlowsV6 => 1,
        };
        assert_eq!(entries, kernel_capacity(wanted, flags, cpus), "{name}");
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
fn a_pinned_table_is_adopted_at_the_capacity_the_kernel_rounded_it_to() {
    require_root();
    pin_to_cpu0();
    xdp_lb_lab::daemon::ensure_lab_bpffs().expect("bpffs for the pins");
    let root = std::path::Path::new(xdp_lb_lab::daemon::LAB_BPFFS)
        .join(format!("state-maps-{}", std::process::id()));
    let pins = Pins::under(&root).expect("a pin directory on bpffs");
    // Not a multiple of the CPUs (on more than one): per-CPU LRU tables come out
    // larger than asked.
    let capacity = FlowCapacity {
        max_flows: 1025,
        max_flows_v6: 1027,
    };
    let first = Dataplane::load_pinned(capacity, pins.clone()).expect("first load");
    assert!(first.adopted().is_empty(), "{:?}", first.adopted());
    let rounded: Vec<_> = state_maps(&first)
        .into_iter()
        .filter(|(_, entries, _)| *entries != 1025 && *entries != 1027)
        .collect();
    drop(first);
    let second = Dataplane::load_pinned(capacity, pins.clone()).expect("second load");
    let mut adopted = second.adopted().to_vec();
    adopted.sort();
    let mut all: Vec<_> = STATE_MAPS.iter().map(|m| m.name).collect();
    all.sort();
    drop(second);
    pins.remove();
    let _ = std::fs::remove_dir(&root);
    assert_eq!(
        adopted, all,
        "every state map kept (rounded ones: {rounded:?})"
    );
    let cpus = aya::util::nr_cpus().expect("possible CPUs");
    if cpus > 1 {
        assert!(
            !rounded.is_empty(),
            "on {cpus} CPUs the per-CPU LRU tables are rounded up, which this test is about"
        );
    }
}
