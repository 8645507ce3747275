//! The forwarding owner's decisions, checked write by write against in-memory maps.
use super::*;

/// An in-memory [`MapWriter`]: the maps' contents, and every write in order.
#[derive(Debug, Default)]
pub struct MemoryMaps {
    pub backends: std::collections::BTreeMap<u32, BackendValue>,
    pub services: std::collections::BTreeMap<[u8; 20], ServiceSpec>,
    /// The timeouts while the NAT reply path is on.
    pub nat: Option<NatTimeouts>,
    /// The NAT real servers and the VIPs each answers for.
    pub nat_origins: crate::services::NatOrigins,
    /// The timeouts last written, whether NAT is on or not.
    pub timeouts: Option<NatTimeouts>,
    /// The entries of each source-filter generation.
    pub filter: [Vec<FilterEntry>; 2],
    /// Each slot's forwarded traffic, as the data plane would have counted it.
    pub traffic: std::collections::BTreeMap<u32, Traffic>,
    pub writes: Vec<Write>,
}

/// One write seen by [`MemoryMaps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Backend(u32),
    Service(ServiceKey),
    RemoveService(ServiceKey),
    ResetCounters(Vec<u32>, Vec<u32>),
    Nat(bool),
    Filter(u32),
    ResetRules(Vec<u32>),
}

impl MemoryMaps {
    /// The spec written for `key`.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceSpec> {
        self.services.get(&key_bytes(key))
    }

    /// The writes since the last call.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }
}

fn key_bytes(key: &ServiceKey) -> [u8; 20] {
    let mut out = [0; 20];
    out[..16].copy_from_slice(&key.addr);
    out[16..18].copy_from_slice(&key.port_be.to_ne_bytes());
    out[18] = key.proto;
    out
}

impl MapWriter for MemoryMaps {
    fn set_backend(&mut self, slot: Slot, value: &BackendValue) -> Result<(), DataplaneError> {
        // Kept by the number the kernel's map is indexed by.
        let slot = slot.0;
        if slot >= xdp_lb_common::MAX_BACKENDS {
            return Err(DataplaneError::BackendId(slot));
        }
        self.backends.insert(slot, *value);
        self.writes.push(Write::Backend(slot));
        Ok(())
    }
    fn set_service(&mut self, spec: &ServiceSpec) -> Result<(), DataplaneError> {
        for (key, _) in spec.entries() {
            self.services.insert(key_bytes(&key), spec.clone());
            self.writes.push(Write::Service(key));
        }
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        self.services.remove(&key_bytes(key));
        self.writes.push(Write::RemoveService(*key));
        Ok(())
    }
    fn reset_counters(&mut self, services: &[u32], slots: &[Slot]) -> Result<(), DataplaneError> {
        for slot in slots {
            self.traffic.remove(&slot.0);
        }
        let slots = slots.iter().map(|s| s.0).collect();
        self.writes
            .push(Write::ResetCounters(services.to_vec(), slots));
        Ok(())
    }
    fn set_nat(
        &mut self,
        origins: &crate::services::NatOrigins,
        timeouts: &NatTimeouts,
    ) -> Result<(), DataplaneError> {
        let on = !origins.is_empty();
        self.nat = on.then_some(*timeouts);
        self.nat_origins = origins.clone();
        self.timeouts = Some(*timeouts);
        self.writes.push(Write::Nat(on));
        Ok(())
    }
    fn set_filter(
        &mut self,
        generation: u32,
        entries: &[FilterEntry],
    ) -> Result<(), DataplaneError> {
        self.filter[generation as usize] = entries.to_vec();
        self.writes.push(Write::Filter(generation));
        Ok(())
    }
    fn reset_rule_counters(&mut self, rules: &[u32]) -> Result<(), DataplaneError> {
        self.writes.push(Write::ResetRules(rules.to_vec()));
        Ok(())
    }
    fn backend_traffic(&self, slot: Slot) -> Result<Traffic, DataplaneError> {
        Ok(self.traffic.get(&slot.0).copied().unwrap_or_default())
    }
}

use crate::{config, schedule::Load, services::Macs};
use std::collections::HashMap;
use xdp_lb_common::BACKEND_F_ACTIVE;

const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth0"]

[vrrp.VI_1]
interface = "eth0"
virtual_router_id = 51
virtual_ipaddresses = ["192.0.2.100/24"]

[[virtual_server]]
vip = "192.0.2.100"
port = 80
quorum = 3
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  weight = 1
  [[virtual_server.real_server]]
  address = "192.0.2.12"
  weight = 2
  [[virtual_server.real_server]]
  address = "192.0.2.13"
  weight = 3

[[virtual_server]]
vip = "2001:db8::100"
port = 53
protocol = "udp"
  [[virtual_server.real_server]]
  address = "2001:db8::11"
"#;

fn parse(text: &str) -> config::Config {
    config::parse(text, "test.toml").unwrap()
}

/// Every backend routed out of ifindex 7, on-link.
fn route(table: &mut ServiceTable) {
    crate::services::route_on_link(table, 7);
}

/// A MAC for each of `addrs` on ifindex 7.
fn macs(addrs: &[&str]) -> Macs {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| ((7, a.parse().unwrap()), [2, 0, 0, 0, 0, 0x10 + i as u8]))
        .collect()
}

const ALL: [&str; 4] = ["192.0.2.11", "192.0.2.12", "192.0.2.13", "2001:db8::11"];

/// An owner of `text`'s services, every real server routed with a MAC, started.
pub(crate) fn started(text: &str) -> Forwarding<MemoryMaps> {
    let mut table = ServiceTable::from_config(&parse(text)).unwrap();
    route(&mut table);
    table.learn_macs(&macs(&ALL));
    let (mut owner, edges) =
        Forwarding::start(table, MemoryMaps::default(), NatTimeouts::default()).unwrap();
    assert!(edges.is_empty(), "every service starts with its quorum");
    owner.writer_mut().take_writes();
    owner
}

fn vip() -> IpAddr {
    "192.0.2.100".parse().unwrap()
}

fn key(owner: &Forwarding<MemoryMaps>, index: usize) -> ServiceKey {
    owner.table().services[index].members[0].key
}

fn spec(owner: &Forwarding<MemoryMaps>, index: usize) -> ServiceSpec {
    owner.writer().service(&key(owner, index)).unwrap().clone()
}

#[test]
fn start_writes_every_entry_and_leaves_vrrp_services_to_the_kernel() {
    let mut table = ServiceTable::from_config(&parse(CONFIG)).unwrap();
    route(&mut table);
    table.learn_macs(&macs(&ALL));
    let nat = NatTimeouts::default();
    let (owner, _) = Forwarding::start(table, MemoryMaps::default(), nat).unwrap();
    let maps = owner.writer();
    assert_eq!(
        maps.writes,
        vec![
            Write::Nat(false),
            Write::Backend(0),
            Write::Backend(1),
            Write::Backend(2),
            Write::Backend(3),
            Write::Filter(0),
            Write::Service(key(&owner, 0)),
            Write::Service(key(&owner, 1)),
        ]
    );
    assert_eq!(maps.backends[&1].flags, BACKEND_F_ACTIVE);
    assert_eq!(maps.backends[&1].dst_mac, [2, 0, 0, 0, 0, 0x11]);
    assert!(!spec(&owner, 0).active, "not MASTER yet");
    assert!(spec(&owner, 1).active, "not on a VRRP VIP");
    assert_eq!(spec(&owner, 0).slots.len(), 6, "wrr 1:2:3");
    assert_eq!(maps.nat, None, "no NAT service");
    assert_eq!(maps.timeouts, Some(nat));
}

#[test]
fn vrrp_state_switches_only_the_services_on_its_vips() {
    let mut owner = started(CONFIG);
    assert_eq!(owner.apply_vrrp(&[vip()], true).unwrap(), vec![0]);
    assert_eq!(
        owner.writer_mut().take_writes(),
        vec![Write::Service(key(&owner, 0))]
    );
    assert!(spec(&owner, 0).active);
    assert!(owner.is_active(0));
    // The same state again writes nothing.
    assert!(owner.apply_vrrp(&[vip()], true).unwrap().is_empty());
    assert!(owner.writer_mut().take_writes().is_empty());
    // Another instance's VIP changes nothing here.
    let other: IpAddr = "198.51.100.1".parse().unwrap();
    assert!(owner.apply_vrrp(&[other], true).unwrap().is_empty());
    assert_eq!(owner.apply_vrrp(&[vip()], false).unwrap(), vec![0]);
    assert!(!spec(&owner, 0).active);
    assert!(
        spec(&owner, 1).active,
        "the unmanaged service stays forwarded"
    );
}

#[test]
fn a_failed_server_leaves_its_schedule_backend_first() {
    let mut owner = started(CONFIG);
    let applied = owner.apply_health(BackendIndex(2), false, None).unwrap();
    assert!(applied.changed);
    // Weight 3 of 6 left: quorum 3 still met.
    assert_eq!(applied.quorum, None);
    assert!(!applied.exhausted);
    // The backend entry first (its flows move), then the schedule without it.
    assert_eq!(
        owner.writer_mut().take_writes(),
        vec![Write::Backend(2), Write::Service(key(&owner, 0))]
    );
    assert_eq!(owner.writer().backends[&2].flags, 0);
    assert!(!spec(&owner, 0).slots.contains(&2));
    // The same verdict again: nothing to write.
    assert_eq!(
        owner.apply_health(BackendIndex(2), false, None).unwrap(),
        HealthApplied::default()
    );
    assert!(owner.writer_mut().take_writes().is_empty());
}

#[test]
fn losing_the_quorum_is_reported_once_and_empties_the_schedule() {
    let mut owner = started(CONFIG);
    owner.apply_health(BackendIndex(2), false, None).unwrap();
    let applied = owner.apply_health(BackendIndex(1), false, None).unwrap();
    assert_eq!(
        applied.quorum,
        Some(QuorumEdge {
            service: 0,
            gained: false
        })
    );
    assert!(spec(&owner, 0).slots.is_empty(), "no sorry server");
    let applied = owner.apply_health(BackendIndex(0), false, None).unwrap();
    assert_eq!(applied.quorum, None, "already lost");
    assert!(applied.exhausted);
    owner.apply_health(BackendIndex(2), true, None).unwrap();
    assert_eq!(spec(&owner, 0).slots, vec![2], "quorum regained with 3");
}

#[test]
fn a_dynamic_weight_rewrites_the_schedule() {
    let mut owner = started(CONFIG);
    let applied = owner.apply_health(BackendIndex(0), true, Some(6)).unwrap();
    assert!(applied.changed);
    let slots = spec(&owner, 0).slots;
    assert_eq!(slots.iter().filter(|s| **s == 0).count(), 6);
}

#[test]
fn neighbour_changes_rewrite_only_what_they_touch() {
    let mut owner = started(CONFIG);
    // Nothing changed: no writes.
    assert!(owner.apply_neighbours(&macs(&ALL)).unwrap().is_empty());
    assert!(owner.writer_mut().take_writes().is_empty());
    // .12 moved to another MAC, .13 lost its entry.
    let mut now = macs(&ALL);
    now.insert((7, "192.0.2.12".parse().unwrap()), [2, 0, 0, 0, 0, 0x99]);
    now.remove(&(7, "192.0.2.13".parse().unwrap()));
    assert_eq!(
        owner.apply_neighbours(&now).unwrap(),
        [BackendIndex(1), BackendIndex(2)]
    );
    assert_eq!(
        owner.writer_mut().take_writes(),
        vec![
            Write::Backend(1),
            Write::Backend(2),
            Write::Service(key(&owner, 0))
        ]
    );
    assert_eq!(owner.writer().backends[&1].dst_mac, [2, 0, 0, 0, 0, 0x99]);
    assert_eq!(owner.writer().backends[&2].flags, 0, "no MAC: flows move");
    assert!(!spec(&owner, 0).slots.contains(&2));
}

/// Prepares a reload of `text` as the daemon does: routed, MACs of `addrs` learned.
fn prepare(owner: &Forwarding<MemoryMaps>, text: &str, addrs: &[&str]) -> PreparedReload {
    let (mut table, reloaded) = ServiceTable::reload(&parse(text), owner.table()).unwrap();
    route(&mut table);
    table.learn_macs(&macs(addrs));
    PreparedReload {
        table,
        reloaded,
        timeouts: NatTimeouts::default(),
    }
}

#[test]
fn a_reload_takes_the_vrrp_state_and_verdicts_of_the_moment_it_is_applied() {
    let mut owner = started(CONFIG);
    // .14 joins; while its MAC is waited for, VI_1 becomes MASTER and .12 fails.
    let text = CONFIG.replace(
        "  address = \"192.0.2.13\"\n  weight = 3\n",
        "  address = \"192.0.2.13\"\n  weight = 3\n  [[virtual_server.real_server]]\n  address = \"192.0.2.14\"\n",
    );
    let mut all = ALL.to_vec();
    all.push("192.0.2.14");
    let prepared = prepare(&owner, &text, &all);
    owner.apply_vrrp(&[vip()], true).unwrap();
    owner.apply_health(BackendIndex(1), false, None).unwrap();
    owner.writer_mut().take_writes();
    let edges = owner.apply_reload(prepared).unwrap();
    assert!(edges.is_empty());
    let spec0 = spec(&owner, 0);
    assert!(spec0.active, "MASTER since before the switch");
    assert!(!spec0.slots.contains(&1), ".12 failed during the wait");
    assert!(spec0.slots.contains(&4), ".14 takes new flows");
    assert!(!owner.table().backends[1].healthy);
    let writes = owner.writer_mut().take_writes();
    assert_eq!(writes[0], Write::ResetCounters(vec![], vec![4]));
    assert!(writes.contains(&Write::Backend(4)));
}

#[test]
fn a_reload_removes_services_first_and_deactivates_removed_servers_before_writing() {
    let mut owner = started(CONFIG);
    let removed_key = key(&owner, 1);
    // The IPv6 service leaves; .11 leaves.
    let text = CONFIG
        .replace(
            "  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n  weight = 1\n",
            "",
        )
        .replace("quorum = 3", "quorum = 1");
    let text = &text[..text.find("[[virtual_server]]\nvip = \"2001").unwrap()];
    let prepared = prepare(&owner, text, &ALL);
    owner.apply_reload(prepared).unwrap();
    let writes = owner.writer_mut().take_writes();
    let first_service = writes
        .iter()
        .position(|w| matches!(w, Write::Service(_)))
        .unwrap();
    let removed_slots = [0, 3];
    for slot in removed_slots {
        let at = writes
            .iter()
            .position(|w| *w == Write::Backend(slot))
            .unwrap();
        assert!(
            at < first_service,
            "slot {slot} inactive before any schedule"
        );
        assert_eq!(owner.writer().backends[&slot], BackendValue::default());
    }
    // First: the map never holds more keys than the old or the new table has.
    assert_eq!(writes.first(), Some(&Write::RemoveService(removed_key)));
    assert!(owner.writer().service(&removed_key).is_none());
    assert_eq!(owner.table().services.len(), 1);
}

#[test]
fn the_nat_reply_path_and_the_timeouts_follow_a_reload() {
    let mut owner = started(CONFIG);
    assert_eq!(owner.aging(), None, "DR wrr: no flow carries a clock");
    let nat = CONFIG.replacen("quorum = 3", "quorum = 3\nforwarding = \"nat\"", 1);
    let mut prepared = prepare(&owner, &nat, &ALL);
    let timeouts = NatTimeouts {
        tcp: std::time::Duration::from_secs(60),
        ..NatTimeouts::default()
    };
    prepared.timeouts = timeouts;
    owner.apply_reload(prepared).unwrap();
    let writes = owner.writer_mut().take_writes();
    // The NAT ports before the NAT service: its first replies are recognised.
    let nat_at = writes.iter().position(|w| *w == Write::Nat(true));
    let service_at = writes.iter().position(|w| matches!(w, Write::Service(_)));
    assert!(nat_at.is_some() && nat_at < service_at, "{writes:?}");
    assert_eq!(owner.writer().nat, Some(timeouts));
    // Each of the NAT service's real servers answers for its VIP; the DR one's are not
    // looked at.
    let vip =
        crate::services::service_key("192.0.2.100".parse().unwrap(), 80, config::Protocol::Tcp);
    let origins = &owner.writer().nat_origins;
    assert_eq!(
        origins.keys().map(|k| k.addr).collect::<Vec<_>>(),
        ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
            .map(|a| crate::services::addr16(a.parse().unwrap()))
            .to_vec(),
        "every NAT real server, and only theirs"
    );
    for (origin, vips) in origins {
        assert_eq!((origin.port_be, origin.proto), (80u16.to_be(), 6));
        let only: Vec<_> = vips.iter().map(|v| (v.vip, v.vport_be)).collect();
        assert_eq!(only, vec![(vip.addr, vip.port_be)]);
        assert_eq!(vips.first().unwrap().service, owner.table().services[0].id);
    }
    assert_eq!(owner.aging(), Some(timeouts));
    // wlc over DR: no NAT replies, but its flows age with the same timeouts.
    let wlc = CONFIG.replacen("quorum = 3", "quorum = 3\nscheduler = \"wlc\"", 1);
    let mut prepared = prepare(&owner, &wlc, &ALL);
    prepared.timeouts = timeouts;
    owner.apply_reload(prepared).unwrap();
    assert!(
        owner
            .writer_mut()
            .take_writes()
            .contains(&Write::Nat(false))
    );
    assert_eq!(owner.writer().timeouts, Some(timeouts));
    assert_eq!(owner.aging(), Some(timeouts));
    assert!(spec(&owner, 0).ages);
    // Unchanged: not written again.
    let mut prepared = prepare(&owner, &wlc, &ALL);
    prepared.timeouts = timeouts;
    owner.apply_reload(prepared).unwrap();
    assert!(
        !owner
            .writer_mut()
            .take_writes()
            .iter()
            .any(|w| matches!(w, Write::Nat(_)))
    );
    // Back to plain DR wrr: nothing ages.
    let prepared = prepare(&owner, CONFIG, &ALL);
    owner.apply_reload(prepared).unwrap();
    assert_eq!(owner.aging(), None);
    assert!(!spec(&owner, 0).ages);
}

#[test]
fn wlc_schedules_follow_the_counted_loads_and_are_written_only_when_they_change() {
    let wlc = CONFIG
        .replacen("quorum = 3", "scheduler = \"wlc\"", 1)
        .replace("weight = 2", "weight = 1")
        .replace("weight = 3", "weight = 1");
    let mut owner = started(&wlc);
    owner.writer_mut().take_writes();
    let ids: Vec<u32> = owner.table().services[0]
        .backends
        .iter()
        .map(|b| owner.table().backends[*b].id.0)
        .collect();
    let share = |owner: &Forwarding<MemoryMaps>, id: u32| {
        spec(owner, 0).slots.iter().filter(|s| **s == id).count()
    };
    let idle = Load::default();
    // At start, nothing counted: an even spread.
    assert_eq!(share(&owner, ids[0]), share(&owner, ids[1]));
    // The first real server holds 50 connections, the others none.
    let loaded = Load {
        active: 50,
        inactive: 0,
    };
    let loads = HashMap::from([
        (ids[0], (loaded, 0)),
        (ids[1], (idle, 0)),
        (ids[2], (idle, 0)),
    ]);
    assert_eq!(owner.apply_loads(&loads).unwrap(), vec![0]);
    assert_eq!(
        owner.writer_mut().take_writes(),
        vec![Write::Service(key(&owner, 0))]
    );
    assert_eq!(share(&owner, ids[0]), 0);
    assert!(share(&owner, ids[1]) > 0 && share(&owner, ids[1]) == share(&owner, ids[2]));
    // The same counts again: nothing written.
    assert_eq!(owner.apply_loads(&loads).unwrap(), Vec::<usize>::new());
    assert!(owner.writer_mut().take_writes().is_empty());
    // A burst of 300 new connections on the others: the first server gets its part
    // of the expected next ones again.
    let busy = Load {
        active: 150,
        inactive: 0,
    };
    let loads = HashMap::from([
        (ids[0], (loaded, 0)),
        (ids[1], (busy, 150)),
        (ids[2], (busy, 150)),
    ]);
    owner.apply_loads(&loads).unwrap();
    assert!(share(&owner, ids[0]) > share(&owner, ids[1]));
    // The wrr service beside it is never rewritten by counts.
    assert!(
        !owner
            .writer_mut()
            .take_writes()
            .contains(&Write::Service(key(&owner, 1)))
    );
}

/// A group: .100:80 and .100:443 (on VI_1's VIP) and .101:80 (no VRRP address), one
/// pool with a check on .12; and a single service beside it.
const GROUP: &str = r#"
[dataplane]
interfaces = ["eth0"]

[vrrp.VI_1]
interface = "eth0"
virtual_router_id = 51
virtual_ipaddresses = ["192.0.2.100/24"]

[virtual_server_group.web]
members = ["192.0.2.100:80", "192.0.2.100:443", "192.0.2.101:80"]

[[virtual_server]]
group = "web"
persistence_timeout = "5m"
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  port = 80
  [[virtual_server.real_server]]
  address = "192.0.2.12"
  port = 80
  check = { type = "tcp" }

[[virtual_server]]
vip = "192.0.2.102"
port = 80
  [[virtual_server.real_server]]
  address = "192.0.2.13"
"#;

fn member_key(vip: &str, port: u16) -> ServiceKey {
    crate::services::service_key(vip.parse().unwrap(), port, config::Protocol::Tcp)
}

#[test]
fn a_group_is_written_under_every_member_key_with_one_id_and_schedule() {
    let owner = started(GROUP);
    let maps = owner.writer();
    let keys = [
        member_key("192.0.2.100", 80),
        member_key("192.0.2.100", 443),
        member_key("192.0.2.101", 80),
    ];
    let specs: Vec<&ServiceSpec> = keys.iter().map(|k| maps.service(k).unwrap()).collect();
    for spec in &specs {
        assert_eq!(spec.id, owner.table().services[0].id);
        assert_eq!(spec.slots, specs[0].slots, "one schedule");
        assert_eq!(
            spec.persist_secs, 300,
            "one persistence table: keyed by the id"
        );
    }
    assert_eq!(
        specs[0].entries().collect::<Vec<_>>(),
        vec![(keys[0], false), (keys[1], false), (keys[2], true)],
        "each key gated by its own VIP: .100 waits for MASTER, .101 is no VRRP address"
    );
    assert_eq!(
        owner.table().backends.len(),
        3,
        "one pool: two real servers + .13"
    );
    assert_eq!(owner.table().checks.len(), 1, "one check for the group");
    assert_ne!(
        maps.service(&member_key("192.0.2.102", 80)).unwrap().id,
        specs[0].id
    );
}

#[test]
fn a_health_verdict_and_a_vrrp_state_reach_every_key_of_the_group_at_once() {
    let mut owner = started(GROUP);
    let keys = [
        member_key("192.0.2.100", 80),
        member_key("192.0.2.100", 443),
        member_key("192.0.2.101", 80),
    ];
    assert_eq!(owner.apply_vrrp(&[vip()], true).unwrap(), vec![0]);
    assert_eq!(
        owner.writer_mut().take_writes(),
        keys.map(Write::Service).to_vec()
    );
    assert!(owner.writer().service(&keys[1]).unwrap().active);
    // .12 fails its (one) check: one backend write, then the group's keys.
    let applied = owner.apply_health(BackendIndex(1), false, None).unwrap();
    assert!(applied.changed);
    let mut expected = vec![Write::Backend(1)];
    expected.extend(keys.map(Write::Service));
    assert_eq!(owner.writer_mut().take_writes(), expected);
    for key in &keys {
        assert_eq!(owner.writer().service(key).unwrap().slots, vec![0]);
    }
}

#[test]
fn a_reload_keeps_the_group_and_removes_only_the_member_it_lost() {
    let mut owner = started(GROUP);
    let id = owner.table().services[0].id;
    // .101:80 leaves the group; .100:8080 joins; the single service joins too.
    let text = GROUP
        .replace(
            "\"192.0.2.101:80\"]",
            "\"192.0.2.100:8080\", \"192.0.2.102:80\"]",
        )
        .replace(
            "[[virtual_server]]\nvip = \"192.0.2.102\"\nport = 80\n  [[virtual_server.real_server]]\n  address = \"192.0.2.13\"\n",
            "",
        );
    let prepared = prepare(&owner, &text, &ALL);
    assert_eq!(
        prepared.reloaded.removed_keys,
        vec![member_key("192.0.2.101", 80)]
    );
    assert_eq!(prepared.reloaded.removed_services, vec![1]);
    assert!(prepared.reloaded.new_services.is_empty());
    assert_eq!(
        prepared.reloaded.kept_backends, 2,
        "the group's servers keep their slots"
    );
    owner.apply_reload(prepared).unwrap();
    let writes = owner.writer_mut().take_writes();
    assert_eq!(
        writes[0],
        Write::RemoveService(member_key("192.0.2.101", 80))
    );
    assert!(
        !writes.contains(&Write::RemoveService(member_key("192.0.2.102", 80))),
        "a key that moved into the group is rewritten, not removed: {writes:?}"
    );
    let maps = owner.writer();
    assert!(maps.service(&member_key("192.0.2.101", 80)).is_none());
    for key in [
        member_key("192.0.2.100", 80),
        member_key("192.0.2.100", 8080),
        member_key("192.0.2.102", 80),
    ] {
        assert_eq!(maps.service(&key).unwrap().id, id, "the group keeps its id");
    }
}

/// CONFIG with a global deny list and rules on the IPv4 service.
fn filtered() -> String {
    CONFIG
        .replace(
            "[vrrp.VI_1]",
            "[filter]\ndeny = [\"203.0.113.0/24\"]\n\n[vrrp.VI_1]",
        )
        .replacen(
            "quorum = 3",
            "quorum = 3\nallow = [\"198.51.100.0/24\"]\ndeny = [\"198.51.100.128/25\"]",
            1,
        )
}

#[test]
fn the_filter_is_written_before_the_services_that_read_it() {
    let mut table = ServiceTable::from_config(&parse(&filtered())).unwrap();
    route(&mut table);
    table.learn_macs(&macs(&ALL));
    let (mut owner, _) =
        Forwarding::start(table, MemoryMaps::default(), NatTimeouts::default()).unwrap();
    let writes = owner.writer_mut().take_writes();
    let filter_at = writes.iter().position(|w| *w == Write::Filter(0)).unwrap();
    let first_service = writes
        .iter()
        .position(|w| matches!(w, Write::Service(_)))
        .unwrap();
    assert!(filter_at < first_service);
    let maps = owner.writer();
    // The global /24, the service's /24 and /25, and its default deny in both families.
    assert_eq!(maps.filter[0].len(), 5);
    let id = owner.table().services[0].id;
    assert_eq!(
        maps.filter[0].iter().filter(|e| e.scope == id + 1).count(),
        4
    );
    let (ipv4, ipv6) = (spec(&owner, 0), spec(&owner, 1));
    assert!(ipv4.filtered && ipv4.global_filter);
    assert!(!ipv6.filtered, "no rules of its own");
    assert!(
        ipv6.global_filter,
        "the global list applies to every service"
    );
    assert_eq!(ipv4.filter_generation, 0);
}

#[test]
fn a_changed_rule_goes_into_the_other_generation_and_every_service_switches() {
    let mut owner = started(&filtered());
    let old = owner.writer().filter[0].clone();
    let text = filtered().replace("198.51.100.128/25", "198.51.100.0/26");
    let prepared = prepare(&owner, &text, &ALL);
    owner.apply_reload(prepared).unwrap();
    let writes = owner.writer_mut().take_writes();
    // The new rule's counter starts from zero; its number was nobody's before.
    assert!(writes.contains(&Write::ResetRules(vec![4])));
    let filter_at = writes.iter().position(|w| *w == Write::Filter(1)).unwrap();
    let first_service = writes
        .iter()
        .position(|w| matches!(w, Write::Service(_)))
        .unwrap();
    assert!(filter_at < first_service, "{writes:?}");
    assert_eq!(
        owner.writer().filter[0],
        old,
        "the live generation untouched"
    );
    assert!(
        owner.writer().filter[1]
            .iter()
            .any(|e| e.prefix_len == 26 && e.rule == 4)
    );
    assert_eq!(spec(&owner, 0).filter_generation, 1);
    assert_eq!(spec(&owner, 1).filter_generation, 1);
    // Later writes of a service (a VRRP state) keep the live generation.
    owner.apply_vrrp(&[vip()], true).unwrap();
    assert_eq!(spec(&owner, 0).filter_generation, 1);
    // A reload that leaves the rules alone writes no filter and keeps the generation.
    let more = text.replace("weight = 3\n", "weight = 4\n");
    let prepared = prepare(&owner, &more, &ALL);
    owner.apply_reload(prepared).unwrap();
    let writes = owner.writer_mut().take_writes();
    assert!(!writes.iter().any(|w| matches!(w, Write::Filter(_))));
    assert_eq!(spec(&owner, 0).filter_generation, 1);
    // Rules removed: back to generation 0, which now holds only the global list.
    let prepared = prepare(&owner, CONFIG, &ALL);
    owner.apply_reload(prepared).unwrap();
    assert_eq!(owner.writer().filter[0], Vec::new());
    assert!(!spec(&owner, 0).filtered && !spec(&owner, 0).global_filter);
    assert_eq!(spec(&owner, 0).filter_generation, 0);
}

#[test]
fn a_server_group_s_rules_apply_to_every_member_key() {
    let text = r#"
[dataplane]
interfaces = ["eth0"]

[virtual_server_group.shop]
members = ["192.0.2.101:80", "192.0.2.101:443"]

[[virtual_server]]
group = "shop"
allow = ["198.51.100.0/24"]
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  port = 8080
"#;
    let owner = started(text);
    let svc = &owner.table().services[0];
    let spec = owner.writer().service(&svc.members[0].key).unwrap().clone();
    assert!(spec.filtered);
    // One service id, so one scope: its allow and its default deny (both families).
    assert_eq!(spec.group_keys.len(), 1);
    let value = spec.value(0, true);
    assert_eq!(
        value.flags & xdp_lb_common::SERVICE_F_FILTER,
        xdp_lb_common::SERVICE_F_FILTER
    );
    let scopes: std::collections::BTreeSet<u32> =
        owner.writer().filter[0].iter().map(|e| e.scope).collect();
    assert_eq!(scopes, [svc.id + 1].into());
    assert_eq!(owner.writer().filter[0].len(), 3);
}

#[test]
fn a_nat_real_server_answering_for_more_vips_than_an_origin_lists_writes_replies_at_once() {
    use xdp_lb_common::{BACKEND_F_NAT_EAGER, NAT_ORIGIN_VIPS};
    // Both services NAT; the single one's real server is the group's .11:80, which
    // then answers for the group's three members and .102:80: four VIPs.
    let nat = GROUP
        .replace("group = \"web\"", "group = \"web\"\nforwarding = \"nat\"")
        .replace("port = 80\n  [[virtual_server.real_server]]\n  address = \"192.0.2.13\"",
            "port = 80\nforwarding = \"nat\"\n  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"");
    let eleven =
        crate::services::service_key("192.0.2.11".parse().unwrap(), 80, config::Protocol::Tcp);
    let eager = |owner: &Forwarding<MemoryMaps>| -> Vec<(String, bool)> {
        let t = owner.table();
        t.backends
            .iter()
            .map(|b| {
                let flags = owner.writer().backends[&b.id.0].flags;
                (
                    format!("{}@{}", b.addr, b.service),
                    flags & BACKEND_F_NAT_EAGER != 0,
                )
            })
            .collect()
    };
    let mut owner = started(&nat);
    assert_eq!(owner.writer().nat_origins[&eleven].len(), NAT_ORIGIN_VIPS);
    assert_eq!(
        eager(&owner),
        vec![
            ("192.0.2.11@0".to_string(), false),
            ("192.0.2.12@0".to_string(), false),
            ("192.0.2.11@1".to_string(), false),
        ],
        "four VIPs: every reply finds its flow"
    );
    // A fourth member: .11:80 answers for five VIPs, .12:80 for four.
    let five = nat.replace(
        "\"192.0.2.101:80\"]",
        "\"192.0.2.101:80\", \"192.0.2.103:80\"]",
    );
    let prepared = prepare(&owner, &five, &ALL);
    owner.apply_reload(prepared).unwrap();
    assert_eq!(
        owner.writer().nat_origins[&eleven].len(),
        NAT_ORIGIN_VIPS + 1
    );
    assert_eq!(
        eager(&owner),
        vec![
            ("192.0.2.11@0".to_string(), true),
            ("192.0.2.12@0".to_string(), false),
            ("192.0.2.11@1".to_string(), true),
        ],
        "both of .11's backends write their reply entries at once; .12's do not"
    );
}

fn traffic(packets: u64) -> Traffic {
    Traffic {
        packets,
        bytes: packets * 100,
        new_flows: packets / 10,
        redirected: packets / 2,
    }
}

/// A service's traffic is its real servers' sum; a reload that takes a real server
/// out keeps what it forwarded in the service's totals, through later reloads too,
/// and a real server joining starts from zero.
#[test]
fn a_service_keeps_the_traffic_of_real_servers_a_reload_removed() {
    let mut owner = started(CONFIG);
    for (slot, packets) in [(0, 10), (1, 20), (2, 30), (3, 40)] {
        owner.writer_mut().traffic.insert(slot, traffic(packets));
    }
    assert_eq!(owner.service_traffic(0).unwrap(), traffic(60));
    assert_eq!(owner.service_traffic(1).unwrap(), traffic(40));

    // .11 leaves and .14 joins.
    let text = CONFIG
        .replace(
            "  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n  weight = 1\n",
            "  [[virtual_server.real_server]]\n  address = \"192.0.2.14\"\n",
        )
        .replace("quorum = 3", "quorum = 1");
    let mut all = ALL.to_vec();
    all.push("192.0.2.14");
    let prepared = prepare(&owner, &text, &all);
    owner.apply_reload(prepared).unwrap();
    assert_eq!(owner.service_traffic(0).unwrap(), traffic(60), "kept .11's");
    assert_eq!(owner.service_traffic(1).unwrap(), traffic(40));
    let joined = owner
        .table()
        .backends
        .iter()
        .find(|b| b.id.0 > 3)
        .unwrap()
        .id;
    owner.writer_mut().traffic.insert(joined.0, traffic(5));
    assert_eq!(owner.service_traffic(0).unwrap(), traffic(65));

    // .12 leaves too: both removed servers' traffic stays.
    let text = text.replace(
        "  [[virtual_server.real_server]]\n  address = \"192.0.2.12\"\n  weight = 2\n",
        "",
    );
    let prepared = prepare(&owner, &text, &all);
    owner.apply_reload(prepared).unwrap();
    assert_eq!(owner.service_traffic(0).unwrap(), traffic(65));
    assert_eq!(owner.table().services[0].retired, traffic(30));
}

/// [`Forwarding::forwarded_from`] with every service's traffic read, as the status
/// snapshot sums it.
fn forwarded(owner: &Forwarding<MemoryMaps>) -> Traffic {
    let services = (0..owner.table().services.len()).map(|i| owner.service_traffic(i).unwrap());
    owner.forwarded_from(services)
}

/// The totals of all traffic (from which the `tx` and `redirect` verdicts are derived)
/// keep what a removed service forwarded, its earlier removed real servers' included.
#[test]
fn all_traffic_keeps_what_removed_services_forwarded() {
    let mut owner = started(CONFIG);
    for (slot, packets) in [(0, 10), (1, 20), (2, 30), (3, 40)] {
        owner.writer_mut().traffic.insert(slot, traffic(packets));
    }
    assert_eq!(forwarded(&owner), traffic(100));

    // .11 leaves the first service: kept in that service's totals.
    let text = CONFIG
        .replace(
            "  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n  weight = 1\n",
            "",
        )
        .replace("quorum = 3", "quorum = 1");
    owner.apply_reload(prepare(&owner, &text, &ALL)).unwrap();
    assert_eq!(forwarded(&owner), traffic(100));

    // Then the whole first service leaves: what it and .11 forwarded stays.
    let second = text.rfind("[[virtual_server]]").unwrap();
    let text = format!(
        "{}{}",
        &text[..text.find("[[virtual_server]]").unwrap()],
        &text[second..]
    );
    owner.apply_reload(prepare(&owner, &text, &ALL)).unwrap();
    assert_eq!(owner.table().services.len(), 1);
    assert_eq!(owner.service_traffic(0).unwrap(), traffic(40));
    assert_eq!(forwarded(&owner), traffic(100));
    let verdicts = crate::dataplane::stats::verdicts(Default::default(), forwarded(&owner));
    assert_eq!((verdicts["tx"], verdicts["redirect"]), (50, 50));
}
