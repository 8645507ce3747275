//! The answer built against in-memory maps that the forwarding owner writes, as it
//! writes the real ones (schedule ranges in one pool, backends by id).
use std::collections::HashMap;

use super::*;
use crate::{
    config::{self, NatTimeouts},
    dataplane::{ServiceSpec, stats::Traffic},
    forwarding::{Forwarding, MapWriter},
    services::{Macs, Slot},
};

/// The maps as the program sees them, written through [`MapWriter`] as the
/// [`Dataplane`] writes them: a service's slots in a fresh range of one pool.
#[derive(Default)]
struct Maps {
    services: HashMap<ServiceKey, ServiceValue>,
    pool: Vec<u32>,
    backends: HashMap<u32, BackendValue>,
    flows: HashMap<FlowKey, FlowValue>,
    persist: HashMap<PersistKey, PersistValue>,
}

impl MapWriter for Maps {
    fn set_backend(&mut self, slot: Slot, value: &BackendValue) -> Result<(), DataplaneError> {
        self.backends.insert(slot.0, *value);
        Ok(())
    }
    fn set_service(&mut self, spec: &ServiceSpec) -> Result<(), DataplaneError> {
        // An offset, so a reader that forgets `sched_base` reads the wrong slots.
        self.pool.extend([u32::MAX; 7]);
        let base = self.pool.len() as u32;
        self.pool.extend(&spec.slots);
        for (key, active) in spec.entries() {
            self.services.insert(key, spec.value(base, active));
        }
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        self.services.remove(key);
        Ok(())
    }
    fn reset_counters(&mut self, _: &[u32], _: &[Slot]) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn set_nat(
        &mut self,
        _: &crate::services::NatOrigins,
        _: &NatTimeouts,
    ) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn set_filter(
        &mut self,
        _: u32,
        _: &[crate::dataplane::filter::FilterEntry],
    ) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn reset_rule_counters(&mut self, _: &[u32]) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn backend_traffic(&self, _: Slot) -> Result<Traffic, DataplaneError> {
        Ok(Traffic::default())
    }
}

impl LiveMaps for Maps {
    fn service(&self, key: &ServiceKey) -> Result<Option<ServiceValue>, DataplaneError> {
        Ok(self.services.get(key).copied())
    }
    fn schedule_slot(&self, slot: u32) -> Result<Option<u32>, DataplaneError> {
        Ok(self.pool.get(slot as usize).copied())
    }
    fn backend(&self, id: u32) -> Result<Option<BackendValue>, DataplaneError> {
        Ok(self.backends.get(&id).copied())
    }
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        Ok(self.flows.get(key).copied())
    }
    fn persisted(&self, key: &PersistKey) -> Result<Option<PersistValue>, DataplaneError> {
        Ok(self.persist.get(key).copied())
    }
}

/// :80 maglev, :81 sh, :82 wrr 1:2:3, :83 rr persistent 60 s, all on the VRRP VIP
/// 192.0.2.100; :84 on 192.0.2.200 (no VRRP) with one real server.
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
scheduler = "maglev"
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  [[virtual_server.real_server]]
  address = "192.0.2.12"
  [[virtual_server.real_server]]
  address = "192.0.2.13"

[[virtual_server]]
vip = "192.0.2.100"
port = 81
scheduler = "sh"
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  [[virtual_server.real_server]]
  address = "192.0.2.12"
  [[virtual_server.real_server]]
  address = "192.0.2.13"

[[virtual_server]]
vip = "192.0.2.100"
port = 82
scheduler = "wrr"
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
vip = "192.0.2.100"
port = 83
scheduler = "rr"
persistence_timeout = "60s"
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  [[virtual_server.real_server]]
  address = "192.0.2.12"

[[virtual_server]]
vip = "192.0.2.200"
port = 84
  [[virtual_server.real_server]]
  address = "192.0.2.11"
"#;

const NOW: u64 = 1_000_000 * 1_000_000_000;

fn owner() -> Forwarding<Maps> {
    owner_of(CONFIG)
}

fn owner_of(config: &str) -> Forwarding<Maps> {
    let mut table =
        ServiceTable::from_config(&config::parse(config, "test.toml").unwrap()).unwrap();
    crate::services::route_on_link(&mut table, 7);
    let macs: Macs = ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
        .iter()
        .enumerate()
        .map(|(i, a)| ((7, a.parse().unwrap()), [2, 0, 0, 0, 0, 0x10 + i as u8]))
        .collect();
    table.learn_macs(&macs);
    let (mut owner, _) = Forwarding::start(table, Maps::default(), NatTimeouts::default()).unwrap();
    owner
        .apply_vrrp(&["192.0.2.100".parse().unwrap()], true)
        .unwrap();
    owner
}

fn ask(owner: &Forwarding<Maps>, state: &str, q: &str) -> Explanation {
    let vrrp = vec![(
        "VI_1".to_owned(),
        state.to_owned(),
        vec!["192.0.2.100".parse().unwrap()],
    )];
    let cx = Context {
        table: owner.table(),
        timeouts: owner.aging(),
        vrrp: &vrrp,
        now_ns: NOW,
    };
    explain(owner.writer(), &cx, &Query::from_query_string(q).unwrap()).unwrap()
}

fn matched(e: &Explanation) -> &Matched {
    e.service
        .as_ref()
        .unwrap_or_else(|| panic!("no service: {e:?}"))
}

fn addr(rs: &Option<RealServer>) -> String {
    rs.as_ref().unwrap().addr().to_string()
}

/// The real server of the bucket a hash picks, computed here from the service spec
/// (the positions the schedule builder gave) rather than from the maps.
fn expected(owner: &Forwarding<Maps>, index: usize, hash: u32) -> String {
    let spec = owner.table().spec(index, &|_| true).unwrap();
    let id = spec.slots[(hash % spec.slots.len() as u32) as usize];
    let b = owner
        .table()
        .backends
        .iter()
        .find(|b| b.id.0 == id)
        .unwrap();
    SocketAddr::new(b.addr, b.port).to_string()
}

#[test]
fn maglev_names_the_bucket_and_real_server_of_each_5_tuple() {
    let owner = owner();
    let mut seen = std::collections::BTreeSet::new();
    for port in 40_000..40_060u16 {
        let e = ask(
            &owner,
            "MASTER",
            &format!("src=198.51.100.7&sport={port}&dst=192.0.2.100&dport=80&proto=tcp"),
        );
        let m = matched(&e);
        assert_eq!(m.flow, FlowLookup::None);
        let NewConnection::Hash {
            of,
            hash,
            bucket,
            slots,
            real_server,
            ..
        } = &m.new_connection
        else {
            panic!("{:?}", m.new_connection)
        };
        assert_eq!(of, "5-tuple");
        let key = FlowKey {
            src: addr16("198.51.100.7".parse().unwrap()),
            dst: addr16("192.0.2.100".parse().unwrap()),
            sport_be: port.to_be(),
            dport_be: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        assert_eq!(*hash, flow_hash(&key));
        assert_eq!(*bucket, hash % slots);
        assert_eq!(*slots, 509, "three servers: at least 300 slots");
        let want = expected(&owner, 0, *hash);
        assert_eq!(addr(real_server), want);
        assert_eq!(e.verdict, format!("a new connection: forwarded to {want}"));
        seen.insert(want);
    }
    assert_eq!(seen.len(), 3, "60 source ports spread over the servers");
}

#[test]
fn maglev_without_a_source_port_says_it_is_needed_and_sh_does_not_need_it() {
    let owner = owner();
    let e = ask(
        &owner,
        "MASTER",
        "src=198.51.100.7&dst=192.0.2.100&dport=80&proto=tcp",
    );
    let m = matched(&e);
    assert_eq!(m.flow, FlowLookup::NotLookedUp);
    assert_eq!(
        m.new_connection,
        NewConnection::NeedsSourcePort { slots: 509 }
    );
    assert!(e.verdict.contains("give SRC:PORT"), "{}", e.verdict);
    assert!(
        render(&e).contains("give the source port"),
        "{}",
        render(&e)
    );

    let bare = ask(
        &owner,
        "MASTER",
        "src=198.51.100.7&dst=192.0.2.100&dport=81&proto=tcp",
    );
    let NewConnection::Hash {
        of,
        hash,
        real_server,
        ..
    } = &matched(&bare).new_connection
    else {
        panic!("{bare:?}")
    };
    assert_eq!(of, "source address");
    assert_eq!(
        *hash,
        hash_words(&addr16("198.51.100.7".parse().unwrap()), 0)
    );
    assert_eq!(addr(real_server), expected(&owner, 1, *hash));
    // Any source port: the same pick.
    for port in [1, 40_000, 65_535] {
        let with = ask(
            &owner,
            "MASTER",
            &format!("src=198.51.100.7&sport={port}&dst=192.0.2.100&dport=81&proto=tcp"),
        );
        assert_eq!(matched(&with).new_connection, matched(&bare).new_connection);
    }
    // Other clients land elsewhere, by the same hash.
    let servers: std::collections::BTreeSet<String> = (1..40u8)
        .map(|i| {
            let e = ask(
                &owner,
                "MASTER",
                &format!("src=198.51.100.{i}&dst=192.0.2.100&dport=81&proto=tcp"),
            );
            let NewConnection::Hash {
                hash, real_server, ..
            } = &matched(&e).new_connection
            else {
                panic!("{e:?}")
            };
            assert_eq!(addr(real_server), expected(&owner, 1, *hash));
            addr(real_server)
        })
        .collect();
    assert_eq!(servers.len(), 3);
}

#[test]
fn without_a_flow_table_every_packet_is_hashed_and_entries_are_not_read() {
    let owner = owner_of(&CONFIG.replacen(
        "scheduler = \"maglev\"",
        "scheduler = \"maglev\"\nflow_table = false",
        1,
    ));
    let q = "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=80&proto=tcp";
    // A stale entry naming another server, left from before the option was set.
    let query = Query::from_query_string(q).unwrap();
    let e = ask(&owner, "MASTER", q);
    let NewConnection::Hash { hash, .. } = &matched(&e).new_connection else {
        panic!("{e:?}")
    };
    let want = expected(&owner, 0, *hash);
    let other = owner
        .table()
        .backends
        .iter()
        .find(|b| SocketAddr::new(b.addr, b.port).to_string() != want)
        .unwrap()
        .id
        .0;
    let mut owner = owner;
    owner.writer_mut().flows.insert(
        query.flow_key(40_000),
        FlowValue {
            backend: other,
            service: 0,
            ..Default::default()
        },
    );
    let e = ask(&owner, "MASTER", q);
    let m = matched(&e);
    assert_eq!(m.flow, FlowLookup::Off);
    assert_eq!(e.verdict, format!("every packet: forwarded to {want}"));
    assert!(render(&e).contains("flow_table = false"), "{}", render(&e));
}

#[test]
fn round_robin_lists_the_shares_instead_of_a_slot() {
    let owner = owner();
    let e = ask(
        &owner,
        "MASTER",
        "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=82&proto=tcp",
    );
    let NewConnection::Cursor { slots, shares } = &matched(&e).new_connection else {
        panic!("{e:?}")
    };
    assert_eq!(*slots, 6);
    let got: Vec<(String, u32)> = shares
        .iter()
        .map(|s| (addr(&s.real_server), s.slots))
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        [
            ("192.0.2.11:82".to_owned(), 1),
            ("192.0.2.12:82".to_owned(), 2),
            ("192.0.2.13:82".to_owned(), 3)
        ]
    );
    assert!(e.verdict.contains("one of 3 real servers by round robin"));
    let text = render(&e);
    assert!(
        text.lines()
            .any(|l| l.trim() == "50.0%  192.0.2.13:82 (up, weight 3/3, active)"),
        "{text}"
    );
}

#[test]
fn a_flow_entry_wins_until_its_real_server_goes_down() {
    let mut owner = owner();
    let q = "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=80&proto=tcp";
    let svc = owner.table().services[0].clone();
    // Pinned to the server the hash would NOT pick, so the answer must come from the entry.
    let NewConnection::Hash { real_server, .. } =
        matched(&ask(&owner, "MASTER", q)).new_connection.clone()
    else {
        panic!()
    };
    let hashed = addr(&real_server);
    let other = svc
        .backends
        .iter()
        .map(|i| owner.table().backends[*i].clone())
        .find(|b| SocketAddr::new(b.addr, b.port).to_string() != hashed)
        .unwrap();
    let key = Query::from_query_string(q).unwrap().flow_key(40_000);
    owner.writer_mut().flows.insert(
        key,
        FlowValue {
            backend: other.id.0,
            service: svc.id as u16,
            ..Default::default()
        },
    );
    let e = ask(&owner, "MASTER", q);
    let FlowLookup::Pinned {
        real_server,
        followed,
        idle_seconds,
        ..
    } = &matched(&e).flow
    else {
        panic!("{e:?}")
    };
    let pinned = format!("{}:80", other.addr);
    assert_eq!(addr(real_server), pinned);
    assert!(*followed);
    assert_eq!(*idle_seconds, None, "DR flows keep no clock");
    assert_eq!(
        e.verdict,
        format!("forwarded to {pinned} by its flow entry")
    );
    assert!(render(&e).contains(&format!(
        "flow entry   pinned to {pinned} (up, weight 1/1, active)"
    )));

    // Its server fails its check: the entry is no longer followed.
    let index = owner
        .table()
        .backend_indices()
        .find(|i| owner.table().backends[*i].id == other.id)
        .unwrap();
    owner.apply_health(index, false, None).unwrap();
    let e = ask(&owner, "MASTER", q);
    let FlowLookup::Pinned {
        real_server,
        followed,
        not_followed_because,
        ..
    } = &matched(&e).flow
    else {
        panic!("{e:?}")
    };
    assert!(!followed);
    assert!(!real_server.as_ref().unwrap().healthy);
    assert!(
        not_followed_because
            .as_deref()
            .unwrap()
            .contains("inactive")
    );
    assert!(
        e.verdict
            .starts_with("rescheduled (its flow entry is not followed): forwarded to"),
        "{}",
        e.verdict
    );
}

#[test]
fn the_vrrp_gate_passes_a_backup_s_packets_to_the_kernel() {
    let mut owner = owner();
    owner
        .apply_vrrp(&["192.0.2.100".parse().unwrap()], false)
        .unwrap();
    let e = ask(
        &owner,
        "BACKUP",
        "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=80&proto=tcp",
    );
    let m = matched(&e);
    assert!(!m.gate.forwarded);
    assert_eq!(
        m.gate.vrrp,
        [VrrpGate {
            instance: "VI_1".into(),
            state: "BACKUP".into()
        }]
    );
    assert_eq!(
        e.verdict,
        "passed to the kernel: VRRP instance VI_1 is BACKUP, not MASTER"
    );
    assert!(render(&e).contains("gate         passed to the kernel (VRRP VI_1 is BACKUP)"));

    let e = ask(
        &owner,
        "BACKUP",
        "src=198.51.100.7&sport=40000&dst=192.0.2.200&dport=84&proto=tcp",
    );
    let m = matched(&e);
    assert!(m.gate.forwarded, "no VRRP on its VIP: always forwarded");
    assert!(m.gate.vrrp.is_empty());
}

#[test]
fn no_service_says_why_and_lists_the_vip_s_services() {
    let owner = owner();
    let e = ask(
        &owner,
        "MASTER",
        "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=80&proto=udp",
    );
    let n = e.no_service.as_ref().unwrap();
    assert!(e.service.is_none());
    assert_eq!(
        n.reason,
        "no virtual service 192.0.2.100:80/udp (the VIP has other services)"
    );
    assert_eq!(
        n.services_on_vip,
        [
            "192.0.2.100:80/tcp",
            "192.0.2.100:81/tcp",
            "192.0.2.100:82/tcp",
            "192.0.2.100:83/tcp"
        ]
    );
    assert!(e.verdict.starts_with("passed to the kernel untouched"));
    assert!(render(&e).contains("on this VIP  192.0.2.100:80/tcp, 192.0.2.100:81/tcp"));

    let e = ask(
        &owner,
        "MASTER",
        "src=198.51.100.7&dst=203.0.113.9&dport=80&proto=tcp",
    );
    let n = e.no_service.as_ref().unwrap();
    assert_eq!(n.reason, "203.0.113.9 is no virtual service address here");
    assert!(n.services_on_vip.is_empty());
}

#[test]
fn persistence_sends_a_known_client_back_while_fresh() {
    let mut owner = owner();
    let q = "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=83&proto=tcp";
    let e = ask(&owner, "MASTER", q);
    let p = matched(&e).persisted.clone().unwrap();
    assert_eq!(p.client, "198.51.100.7".parse::<IpAddr>().unwrap());
    assert!(p.real_server.is_none() && !p.used);
    assert!(e.verdict.contains("round robin"), "{}", e.verdict);

    let svc = owner.table().services[3].clone();
    let b = owner.table().backends[svc.backends[1]].clone();
    let key = PersistKey {
        service: svc.id,
        client: addr16("198.51.100.7".parse().unwrap()),
    };
    let remember = |owner: &mut Forwarding<Maps>, seen_ago: u64| {
        owner.writer_mut().persist.insert(
            key,
            PersistValue {
                backend: b.id.0,
                _pad: 0,
                last_seen_ns: NOW - seen_ago * 1_000_000_000,
            },
        );
    };
    remember(&mut owner, 10);
    let e = ask(&owner, "MASTER", q);
    let p = matched(&e).persisted.clone().unwrap();
    assert!(p.used);
    assert_eq!(p.idle_seconds, Some(10));
    assert_eq!(
        e.verdict,
        "a new connection: forwarded to 192.0.2.12:83 by persistence"
    );
    remember(&mut owner, 61);
    let e = ask(&owner, "MASTER", q);
    assert!(
        !matched(&e).persisted.as_ref().unwrap().used,
        "stale after 60 s"
    );
    assert!(e.verdict.contains("round robin"), "{}", e.verdict);
}

#[test]
fn with_every_real_server_down_new_connections_are_dropped() {
    let mut owner = owner();
    let svc = owner.table().services[0].clone();
    for i in &svc.backends {
        owner.apply_health(*i, false, None).unwrap();
    }
    let e = ask(
        &owner,
        "MASTER",
        "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=80&proto=tcp",
    );
    assert_eq!(matched(&e).new_connection, NewConnection::NoRealServer);
    assert_eq!(
        e.verdict,
        "a new connection: dropped, no real server can take new connections"
    );
}

#[test]
fn the_source_filter_rule_that_decides_is_named_and_a_denied_source_dropped() {
    let text = CONFIG
        .replace(
            "[vrrp.VI_1]",
            "[filter]\ndeny = [\"203.0.113.0/24\"]\n\n[vrrp.VI_1]",
        )
        .replacen(
            "scheduler = \"maglev\"\n",
            "scheduler = \"maglev\"\nallow = [\"198.51.100.0/24\"]\ndeny = [\"198.51.100.128/25\"]\n",
            1,
        );
    let owner = owner_of(&text);
    let q = |src: &str| format!("src={src}&sport=40000&dst=192.0.2.100&dport=80&proto=tcp");
    let e = ask(&owner, "MASTER", &q("198.51.100.7"));
    let allowed = matched(&e).filter.clone().unwrap();
    assert_eq!(allowed.rule, "allow 198.51.100.0/24");
    assert!(!allowed.denied && !allowed.global);
    assert!(e.verdict.contains("forwarded"), "{}", e.verdict);
    assert!(
        render(&e)
            .lines()
            .any(|l| l == "filter       allow 198.51.100.0/24"),
        "{}",
        render(&e)
    );
    let e = ask(&owner, "MASTER", &q("198.51.100.200"));
    assert_eq!(
        e.verdict,
        "dropped by the source filter: the service's deny 198.51.100.128/25"
    );
    let e = ask(&owner, "MASTER", &q("192.0.2.50"));
    assert_eq!(
        e.verdict,
        "dropped by the source filter: the service's deny (no allow matched)"
    );
    let e = ask(&owner, "MASTER", &q("203.0.113.9"));
    assert_eq!(
        e.verdict,
        "dropped by the source filter: [filter] deny 203.0.113.0/24"
    );
    // A service without rules of its own: only the global list.
    let other = "src=192.0.2.50&sport=40000&dst=192.0.2.200&dport=84&proto=tcp";
    let e = ask(&owner, "MASTER", other);
    assert_eq!(matched(&e).filter, None);
    assert!(
        render(&e)
            .lines()
            .any(|l| l == "filter       no rule holds the source: allowed"),
        "{}",
        render(&e)
    );
}

#[test]
fn the_query_string_round_trips_and_bad_ones_are_named() {
    let q = Query {
        src: "2001:db8::7".parse().unwrap(),
        src_port: Some(40_000),
        dst: "2001:db8::100".parse().unwrap(),
        dst_port: 443,
        protocol: "udp".into(),
    };
    assert_eq!(
        Query::from_query_string(&q.to_query_string()),
        Ok(q.clone())
    );
    assert_eq!(
        q.describe(),
        "[2001:db8::7]:40000 -> [2001:db8::100]:443/udp"
    );
    let no_port = Query {
        src_port: None,
        ..q.clone()
    };
    assert_eq!(
        Query::from_query_string(&no_port.to_query_string()),
        Ok(no_port)
    );
    assert_eq!(
        Query::from_query_string("src=1.2.3.4&dst=192.0.2.100&dport=80"),
        Err(QueryError::Missing("proto"))
    );
    assert!(matches!(
        Query::from_query_string("src=1.2.3.4&dst=192.0.2.100&dport=80&proto=sctp"),
        Err(QueryError::Invalid { key: "proto", .. })
    ));
    assert!(matches!(
        Query::from_query_string("src=1.2.3.4&sport=70000&dst=192.0.2.100&dport=80&proto=tcp"),
        Err(QueryError::Invalid { key: "sport", .. })
    ));
    assert!(matches!(
        Query::from_query_string("src=2001:db8::1&dst=192.0.2.100&dport=80&proto=tcp"),
        Err(QueryError::Family { .. })
    ));
}

#[test]
fn the_answer_survives_json() {
    let owner = owner();
    let e = ask(
        &owner,
        "MASTER",
        "src=198.51.100.7&sport=40000&dst=192.0.2.100&dport=83&proto=tcp",
    );
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<Explanation>(&json).unwrap(), e);
}
