//! The daemon's model of virtual services and their real servers, and how it turns
//! into map contents. Pure: the daemon feeds it MACs and egress interfaces, and asks
//! for the `BackendValue`s and `ServiceSpec`s to write.
//!
//! A backend is one real server *of one service* (as an IPVS destination is), so its
//! counters and state are per service.
//!
//! A backend's `id` is its slot (BACKEND_SLOT, and its counters), a service's
//! `id` its counters' index; both stay the same across a reload for as long as the
//! service (one of its keys) and the real server (service, address, port) stay
//! configured, so established flows keep their server ([`ServiceTable::reload`]).
//!
//! A service has one SERVICES key per (VIP, port) it serves: one, or a server group's
//! members (`[virtual_server_group.NAME]`). Every key maps to the same value (the same
//! id and schedule), so flows, counters and persistence (keyed by the id) are shared
//! by the group without the XDP program knowing groups exist.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use xdp_lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_NAT_EAGER, BackendValue, FWD_DR, FWD_NAT, FWD_TUN, IPPROTO_TCP,
    IPPROTO_UDP, MAX_BACKENDS, MAX_SERVICES, NAT_ORIGIN_VIPS, NatOriginVip, SELECT_CURSOR,
    SELECT_HASH_DST, SELECT_HASH_FLOW, SELECT_HASH_SRC, ServiceKey, v4_mapped,
};

use crate::{
    config::{Config, Forwarding, Persistence, Protocol, Quorum, Scheduler},
    dataplane::ServiceSpec,
    schedule::{self, Load, ScheduleError},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServicesError {
    #[error("{count} virtual servers configured; the data plane holds at most {MAX_SERVICES}")]
    TooManyServices { count: usize },
    #[error("{count} real servers configured in all; the data plane holds at most {MAX_BACKENDS}")]
    TooManyBackends { count: usize },
    #[error(transparent)]
    TooManyRules(#[from] crate::filter::TooManyRules),
    #[error("virtual server {service}: {source}")]
    Schedule {
        service: String,
        #[source]
        source: ScheduleError,
    },
}

/// NAT real servers (address, port and protocol, as a `ServiceKey`) → the VIPs each
/// answers for (see `xdp_lb_common::NatOrigin`).
pub type NatOrigins = BTreeMap<ServiceKey, BTreeSet<NatOriginVip>>;

/// The `NatOrigins` of one real server (`addr`, `port`) answering for `vips`, each a
/// service's key and id (the origin's protocol is the key's): for writing the maps by
/// hand, as tests and benches do.
pub fn nat_origins_of(addr: [u8; 16], port: u16, vips: &[(ServiceKey, u32)]) -> NatOrigins {
    let mut origins = NatOrigins::new();
    for (key, service) in vips {
        let origin = ServiceKey {
            addr,
            port_be: port.to_be(),
            proto: key.proto,
            _pad: 0,
        };
        origins.entry(origin).or_default().insert(NatOriginVip {
            vip: key.addr,
            vport_be: key.port_be,
            _pad: 0,
            service: *service,
        });
    }
    origins
}

/// A backend's slot in BACKEND_SLOT and in the per-backend counters. It stays the
/// same across reloads for as long as the real server stays configured, so flows
/// pinned to it keep their server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u32);

/// A backend's position in [`ServiceTable::backends`] (a reload may move it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendIndex(pub u32);

impl std::ops::Index<BackendIndex> for Vec<Backend> {
    type Output = Backend;
    fn index(&self, index: BackendIndex) -> &Backend {
        &self[index.0 as usize]
    }
}

impl std::ops::IndexMut<BackendIndex> for Vec<Backend> {
    fn index_mut(&mut self, index: BackendIndex) -> &mut Backend {
        &mut self[index.0 as usize]
    }
}

/// Usable MACs from the neighbour table, by (ifindex, next hop).
pub type Macs = HashMap<(u32, IpAddr), [u8; 6]>;

/// Where a backend's packets leave, as the kernel's routing table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub ifindex: u32,
    /// The egress interface's MAC.
    pub mac: [u8; 6],
    pub mtu: u16,
    /// Whose MAC the frames go to: the real server itself, or (TUN only) its gateway.
    pub next_hop: IpAddr,
    /// The source address the kernel would use towards the real server (TUN's outer
    /// source).
    pub source: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Backend {
    /// Slot in BACKEND_SLOT and the per-backend counters.
    pub id: Slot,
    /// Index of its service in [`ServiceTable::services`].
    pub service: usize,
    /// keepalived's `sorry_server` of its service, not a real server.
    pub sorry: bool,
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub egress: Option<Egress>,
    /// The real server's MAC, once the neighbour table has it.
    pub mac: Option<[u8; 6]>,
    /// The health checks' verdict (true when the server has no check).
    pub healthy: bool,
    /// A weight set by a check (keepalived's `misc_dynamic`), instead of `weight`.
    pub dynamic_weight: Option<u32>,
    /// keepalived's `inhibit_on_failure`: a failed server keeps its flows and only
    /// stops getting new ones, instead of leaving the schedule with its flows moved.
    pub inhibit_on_failure: bool,
    /// Health transitions seen (up → down and down → up).
    pub transitions: u64,
    /// Its connections as last counted (kept up to date for lc and wlc services).
    pub load: Load,
}

impl Service {
    /// Its flows carry a clock and expire after the idle timeouts: NAT's translations,
    /// and the connections lc and wlc count.
    pub fn ages(&self) -> bool {
        self.forwarding == Forwarding::Nat || self.scheduler.counts_connections()
    }
}

impl Backend {
    fn new(id: Slot, service: usize, addr: IpAddr, port: u16, weight: u32) -> Backend {
        Backend {
            id,
            service,
            sorry: false,
            addr,
            port,
            weight,
            egress: None,
            mac: None,
            healthy: true,
            dynamic_weight: None,
            inhibit_on_failure: false,
            transitions: 0,
            load: Load::default(),
        }
    }

    /// We know where to send its packets and to which MAC.
    pub fn reachable(&self) -> bool {
        self.egress.is_some() && self.mac.is_some()
    }

    /// Takes new flows: reachable, healthy and with a weight.
    pub fn usable(&self) -> bool {
        self.reachable() && self.healthy && self.effective_weight() > 0
    }

    /// The weight new flows are spread by (0 when unusable).
    pub fn effective_weight(&self) -> u32 {
        if !self.reachable() || !self.healthy {
            return 0;
        }
        self.dynamic_weight.unwrap_or(self.weight)
    }

    /// Its existing flows keep going to it: reachable, and healthy or inhibited.
    pub fn keeps_flows(&self) -> bool {
        self.reachable() && (self.healthy || self.inhibit_on_failure)
    }
}

/// One (VIP, port) a service serves: one key of the SERVICES map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: ServiceKey,
    pub vip: IpAddr,
    pub port: u16,
    /// Its VIP belongs to a VRRP instance: it is forwarded only while this node is
    /// MASTER for it (see [`crate::forwarding`], which knows the MASTER VIPs), and
    /// otherwise its packets go to the kernel.
    pub on_vrrp_vip: bool,
}

#[derive(Debug, Clone)]
pub struct Service {
    /// Index of its counters and round-robin cursor.
    pub id: u32,
    /// Its keys: one, or a group's members; never empty, all of one family.
    pub members: Vec<Member>,
    /// The `[virtual_server_group.NAME]` it serves, if any.
    pub group: Option<String>,
    pub protocol: Protocol,
    /// `vip:port/proto` or `group NAME/proto`, as logs and errors name it.
    pub name: String,
    pub scheduler: Scheduler,
    pub forwarding: Forwarding,
    /// Its real servers, as indices into [`ServiceTable::backends`].
    pub backends: Vec<BackendIndex>,
    /// keepalived's `sorry_server` (an index, too): a backend that takes new flows
    /// only while no real server can.
    pub sorry: Option<BackendIndex>,
    pub quorum: Quorum,
    /// Whether the healthy weight meets the quorum (with hysteresis on both edges).
    pub quorum_ok: bool,
    pub persistence: Option<Persistence>,
    pub flow_table: bool,
    /// lc and wlc: new connections expected before the next count (at least one).
    pub arrivals: u64,
    /// It has source-filter rules of its own (`allow` or `deny`).
    pub filtered: bool,
    /// `announce = true`: its VIPs are announced while it has quorum.
    pub announce: bool,
    /// What the real servers that reloads took out of it had forwarded: kept so its
    /// totals (the sums of its real servers' counters) never go back.
    pub retired: crate::dataplane::stats::Traffic,
}

impl Service {
    /// It serves `key`.
    pub fn has_key(&self, key: &ServiceKey) -> bool {
        self.members.iter().any(|m| m.key == *key)
    }

    /// Its VIPs are IPv4 (a group's members share one family).
    pub fn is_ipv4(&self) -> bool {
        self.members[0].vip.is_ipv4()
    }

    /// Its traffic, given what each of its real servers (sorry server included) has
    /// forwarded: the data plane counts a packet only on its real server.
    pub fn traffic(
        &self,
        served: impl IntoIterator<Item = crate::dataplane::stats::Traffic>,
    ) -> crate::dataplane::stats::Traffic {
        let mut total: crate::dataplane::stats::Traffic = served.into_iter().sum();
        total += self.retired;
        total
    }
}

#[derive(Debug, Clone)]
pub struct ServiceTable {
    pub services: Vec<Service>,
    pub backends: Vec<Backend>,
    /// Health checks by backend index.
    pub checks: Vec<(BackendIndex, crate::config::Check)>,
    /// The source filter's rules, numbered (see [`crate::filter`]).
    pub filter: Vec<crate::filter::Rule>,
}

/// What a reload changed in the maps' terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Ids of services no longer configured.
    pub removed_services: Vec<u32>,
    /// Keys no service serves any more (of removed services, or members a group
    /// lost): they leave the SERVICES map.
    pub removed_keys: Vec<ServiceKey>,
    /// Slots of real servers no longer configured: inactive, so their flows move.
    pub removed_backends: Vec<Slot>,
    /// Newly given counter indices and slots: their counters start from zero.
    pub new_services: Vec<u32>,
    pub new_backends: Vec<Slot>,
    /// Newly given source-filter rule numbers: their counters start from zero.
    pub new_rules: Vec<u32>,
    /// Real servers that kept their slot.
    pub kept_backends: usize,
    /// Slots of the real servers whose verdict carried over (same check).
    pub carried_health: Vec<Slot>,
}

/// A real server's identity across reloads: its service's id, address, port, and
/// whether it is the sorry server.
type BackendIdentity = (u32, IpAddr, u16, bool);

/// Hands out the lowest ids that are neither kept nor were in use before the reload
/// (a removed server's slot is not given to another one in the same reload, while
/// the maps may still hold its flows).
struct Ids {
    taken: HashSet<u32>,
    next: u32,
    max: u32,
}

impl Ids {
    fn new(taken: HashSet<u32>, max: u32) -> Ids {
        Ids {
            taken,
            next: 0,
            max,
        }
    }

    fn take(&mut self) -> Option<u32> {
        while self.taken.contains(&self.next) {
            self.next += 1;
        }
        (self.next < self.max).then(|| {
            self.taken.insert(self.next);
            self.next
        })
    }
}

pub fn addr16(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The protocol a key's IP protocol number stands for (the map keys hold only TCP and
/// UDP): the inverse of [`service_key`]'s, for what the maps are read back into.
pub fn protocol_of(ip_protocol: u8) -> Protocol {
    if ip_protocol == IPPROTO_UDP {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

/// The SERVICES key of `vip:port` with `protocol`.
pub fn service_key(vip: IpAddr, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey {
        addr: addr16(vip),
        port_be: port.to_be(),
        proto: match protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        },
        _pad: 0,
    }
}

/// A configured service's members, as keys.
fn members(config: &Config, v: &crate::config::VirtualServer) -> Vec<Member> {
    v.members
        .iter()
        .map(|m| Member {
            key: service_key(m.ip(), m.port(), v.protocol),
            vip: m.ip(),
            port: m.port(),
            on_vrrp_vip: config
                .vrrp
                .iter()
                .any(|vi| vi.identity.vips().contains(&m.ip())),
        })
        .collect()
}

/// Which old service each configured one continues (its id, counters, real servers'
/// slots and health): the first old service, not already continued, that served one
/// of its keys, looked up in member order. So a group that gains or loses members,
/// or a single service that becomes a group's member, stays the same service.
fn continued<'o>(new: &[Vec<Member>], old: Option<&'o ServiceTable>) -> Vec<Option<&'o Service>> {
    let Some(old) = old else {
        return vec![None; new.len()];
    };
    let mut by_key: HashMap<ServiceKey, usize> = HashMap::new();
    for (index, svc) in old.services.iter().enumerate() {
        for m in &svc.members {
            by_key.insert(m.key, index);
        }
    }
    let mut taken = HashSet::new();
    new.iter()
        .map(|members| {
            let index = members
                .iter()
                .filter_map(|m| by_key.get(&m.key))
                .find(|i| !taken.contains(*i))?;
            taken.insert(*index);
            Some(&old.services[*index])
        })
        .collect()
}

impl ServiceTable {
    pub fn from_config(config: &Config) -> Result<ServiceTable, ServicesError> {
        Self::build(config, None).map(|(table, _)| table)
    }

    /// The table for a reloaded `config`, replacing `old`: real servers and services
    /// still configured keep their ids, MAC and route; a real server whose check is
    /// unchanged keeps its health (and dynamic weight) too. New ones start as at
    /// start-up (alpha servers down).
    pub fn reload(
        config: &Config,
        old: &ServiceTable,
    ) -> Result<(ServiceTable, Reloaded), ServicesError> {
        Self::build(config, Some(old))
    }

    fn build(
        config: &Config,
        old: Option<&ServiceTable>,
    ) -> Result<(ServiceTable, Reloaded), ServicesError> {
        let vs = &config.virtual_servers;
        if vs.len() > MAX_SERVICES as usize {
            return Err(ServicesError::TooManyServices { count: vs.len() });
        }
        let total: usize = vs
            .iter()
            .map(|v| v.real_servers.len() + usize::from(v.sorry_server.is_some()))
            .sum();
        if total > MAX_BACKENDS as usize {
            return Err(ServicesError::TooManyBackends { count: total });
        }
        // What the old table had, by identity.
        let mut old_backends: HashMap<BackendIdentity, &Backend> = HashMap::new();
        // Checks by slot.
        let mut old_checks: HashMap<Slot, &crate::config::Check> = HashMap::new();
        if let Some(old) = old {
            for b in &old.backends {
                let id = old.services[b.service].id;
                old_backends.insert((id, b.addr, b.port, b.sorry), b);
            }
            for (index, check) in &old.checks {
                old_checks.insert(old.backends[*index].id, check);
            }
        }
        let mut reloaded = Reloaded::default();
        let keys: Vec<Vec<Member>> = vs.iter().map(|v| members(config, v)).collect();
        let continues = continued(&keys, old);
        // Every id in use before is off limits for new ones; kept ones are reused.
        let mut slot_ids = Ids::new(
            old.iter()
                .flat_map(|o| o.backends.iter().map(|b| b.id.0))
                .collect(),
            MAX_BACKENDS,
        );
        let mut service_ids = Ids::new(
            old.iter()
                .flat_map(|o| o.services.iter().map(|s| s.id))
                .collect(),
            MAX_SERVICES,
        );
        let mut services = Vec::with_capacity(vs.len());
        let mut checks = Vec::new();
        let mut backends: Vec<Backend> = Vec::with_capacity(total);
        // A new real server: a fresh slot, or the old one when it stays.
        let mut place = |backends: &mut Vec<Backend>,
                         reloaded: &mut Reloaded,
                         identity: BackendIdentity,
                         service: usize,
                         weight: u32|
         -> Result<(BackendIndex, Option<Backend>), ServicesError> {
            let index = BackendIndex(backends.len() as u32);
            let (id, previous) = match old_backends.get(&identity) {
                Some(b) => {
                    reloaded.kept_backends += 1;
                    (b.id, Some((*b).clone()))
                }
                None => {
                    let id = Slot(
                        slot_ids
                            .take()
                            .ok_or(ServicesError::TooManyBackends { count: total })?,
                    );
                    reloaded.new_backends.push(id);
                    (id, None)
                }
            };
            let mut backend = Backend::new(id, service, identity.1, identity.2, weight);
            backend.sorry = identity.3;
            if let Some(p) = &previous {
                backend.mac = p.mac;
                backend.egress = p.egress;
                backend.transitions = p.transitions;
            }
            backends.push(backend);
            Ok((index, previous))
        };
        for (index, ((v, members), previous)) in vs.iter().zip(keys).zip(continues).enumerate() {
            let (id, quorum_ok) = match previous {
                Some(svc) => (svc.id, svc.quorum_ok),
                None => {
                    let id = service_ids
                        .take()
                        .ok_or(ServicesError::TooManyServices { count: vs.len() })?;
                    reloaded.new_services.push(id);
                    (id, true)
                }
            };
            let mut ids = Vec::with_capacity(v.real_servers.len());
            for rs in &v.real_servers {
                let (i, previous) = place(
                    &mut backends,
                    &mut reloaded,
                    (id, rs.address, rs.port, false),
                    index,
                    rs.weight,
                )?;
                ids.push(i);
                if let Some(check) = &rs.check {
                    checks.push((i, check.clone()));
                }
                let backend = &mut backends[i];
                backend.inhibit_on_failure = rs.inhibit_on_failure;
                // `alpha`: down until its first successful check.
                backend.healthy = !rs.check.as_ref().is_some_and(|c| c.params.alpha);
                // The same check as before: its verdict stands.
                let same_check = previous
                    .as_ref()
                    .is_some_and(|p| old_checks.get(&p.id).copied() == rs.check.as_ref());
                if let (true, Some(p)) = (same_check, &previous) {
                    backend.healthy = p.healthy;
                    backend.dynamic_weight = p.dynamic_weight;
                    reloaded.carried_health.push(p.id);
                }
            }
            let sorry = match v.sorry_server {
                Some(addr) => Some(
                    place(
                        &mut backends,
                        &mut reloaded,
                        (id, addr.ip(), addr.port(), true),
                        index,
                        1,
                    )?
                    .0,
                ),
                None => None,
            };
            services.push(Service {
                id,
                members,
                group: v.group.clone(),
                protocol: v.protocol,
                name: v.name(),
                scheduler: v.scheduler,
                forwarding: v.forwarding,
                backends: ids,
                sorry,
                quorum: v.quorum.clone(),
                quorum_ok,
                persistence: v.persistence,
                flow_table: v.flow_table,
                arrivals: 1,
                filtered: !v.allow.is_empty() || !v.deny.is_empty(),
                announce: v.announce,
                retired: Default::default(),
            });
        }
        if let Some(old) = old {
            let kept_services: HashSet<u32> = services.iter().map(|s| s.id).collect();
            let kept_slots: HashSet<Slot> = backends.iter().map(|b| b.id).collect();
            reloaded.removed_services = old
                .services
                .iter()
                .filter(|s| !kept_services.contains(&s.id))
                .map(|s| s.id)
                .collect();
            let kept_keys: HashSet<ServiceKey> = services
                .iter()
                .flat_map(|s| s.members.iter().map(|m| m.key))
                .collect();
            reloaded.removed_keys = old
                .services
                .iter()
                .flat_map(|s| s.members.iter().map(|m| m.key))
                .filter(|k| !kept_keys.contains(k))
                .collect();
            reloaded.removed_backends = old
                .backends
                .iter()
                .filter(|b| !kept_slots.contains(&b.id))
                .map(|b| b.id)
                .collect();
        }
        // A service's rules are known by its first key (all its keys share its id).
        let first_keys: Vec<ServiceKey> = services.iter().map(|s| s.members[0].key).collect();
        let (filter, new_rules) =
            crate::filter::build(config, &first_keys, old.map(|o| o.filter.as_slice()))?;
        reloaded.new_rules = new_rules;
        Ok((
            ServiceTable {
                services,
                backends,
                checks,
                filter,
            },
            reloaded,
        ))
    }

    /// The global deny list is not empty.
    pub fn global_filter(&self) -> bool {
        self.filter
            .iter()
            .any(|r| r.scope == crate::filter::Scope::Global)
    }

    /// The source filter's trie entries (each service's scope from its id).
    pub fn filter_entries(&self) -> Vec<crate::dataplane::filter::FilterEntry> {
        let ids: HashMap<ServiceKey, u32> = self
            .services
            .iter()
            .map(|s| (s.members[0].key, s.id))
            .collect();
        crate::filter::entries(&self.filter, |key| ids.get(key).copied())
    }

    /// What every id means, one line per service and real server, sorted: flow and
    /// persistence entries name real servers and services by id, so a run may read
    /// entries another run left only if this is the same for both.
    pub fn id_map(&self) -> String {
        let mut lines: Vec<String> = self
            .services
            .iter()
            .map(|s| format!("service {} {}", s.id, s.name))
            .chain(self.backends.iter().map(|b| {
                format!(
                    "backend {} {} {}{}",
                    b.id.0,
                    self.services[b.service].name,
                    std::net::SocketAddr::new(b.addr, b.port),
                    if b.sorry { " sorry" } else { "" }
                )
            }))
            .collect();
        lines.sort();
        lines.join("\n") + "\n"
    }

    /// Every NAT real server (sorry servers included), as the key of its address,
    /// port and protocol, with the VIPs (and ports) it answers for and their service.
    pub fn nat_origins(&self) -> NatOrigins {
        let mut origins = NatOrigins::new();
        for (origin, s) in self.nat_real_servers() {
            let vips = s.members.iter().map(|m| NatOriginVip {
                vip: m.key.addr,
                vport_be: m.key.port_be,
                _pad: 0,
                service: s.id,
            });
            origins.entry(origin).or_default().extend(vips);
        }
        origins
    }

    /// Each NAT backend's real server (as an origin key) and its service.
    fn nat_real_servers(&self) -> impl Iterator<Item = (ServiceKey, &Service)> + '_ {
        self.services
            .iter()
            .filter(|s| s.forwarding == Forwarding::Nat)
            .flat_map(move |s| {
                s.backends.iter().chain(s.sorry.iter()).map(move |&b| {
                    let b = &self.backends[b];
                    (service_key(b.addr, b.port, s.protocol), s)
                })
            })
    }

    /// A NAT backend whose real server answers for more VIPs than a `NatOrigin`
    /// lists (`origins`: this table's [`ServiceTable::nat_origins`]): its replies
    /// cannot find their flow, so each new flow writes its reply entry at once.
    fn nat_eager(&self, b: &Backend, origins: &NatOrigins) -> bool {
        let service = &self.services[b.service];
        service.forwarding == Forwarding::Nat
            && origins
                .get(&service_key(b.addr, b.port, service.protocol))
                .is_some_and(|vips| vips.len() > NAT_ORIGIN_VIPS)
    }

    /// The value of the backend at `index`, deriving the NAT origins for it alone.
    #[cfg(test)]
    pub fn backend_value(&self, index: BackendIndex) -> BackendValue {
        self.backend_value_in(index, &self.nat_origins())
    }

    /// The value of the backend at `index` (written copy-on-write for its slot `id`);
    /// `origins`: this table's [`ServiceTable::nat_origins`], derived once by a caller
    /// that writes several.
    pub fn backend_value_in(&self, index: BackendIndex, origins: &NatOrigins) -> BackendValue {
        let b = &self.backends[index];
        let (ifindex, src_mac, mtu, tun_src) = match b.egress {
            Some(e) => (
                e.ifindex,
                e.mac,
                e.mtu,
                e.source.map(addr16).unwrap_or([0; 16]),
            ),
            None => (0, [0; 6], 0, [0; 16]),
        };
        BackendValue {
            addr: addr16(b.addr),
            dst_mac: b.mac.unwrap_or([0; 6]),
            src_mac,
            ifindex,
            flags: if b.keeps_flows() { BACKEND_F_ACTIVE } else { 0 }
                | if self.nat_eager(b, origins) {
                    BACKEND_F_NAT_EAGER
                } else {
                    0
                },
            port_be: b.port.to_be(),
            mtu,
            tun_src,
        }
    }

    /// The map contents for service `index`, each key forwarded by XDP if `active`
    /// says so for its member: unusable backends count as weight 0.
    pub fn spec(
        &self,
        index: usize,
        active: &dyn Fn(&Member) -> bool,
    ) -> Result<ServiceSpec, ServicesError> {
        let svc = &self.services[index];
        let weights: Vec<u32> = svc
            .backends
            .iter()
            .map(|id| self.backends[*id].effective_weight())
            .collect();
        // Nobody can take new flows, or too little weight is left: the sorry server
        // takes them if it is reachable; without one, new flows have nowhere to go.
        let no_quorum = !svc.quorum_ok || weights.iter().all(|w| *w == 0);
        if no_quorum {
            let sorry = svc
                .sorry
                .map(|i| &self.backends[i])
                .filter(|b| b.usable())
                .map(|b| b.id.0);
            return Ok(self.service_spec(svc, active, SELECT_CURSOR, sorry.into_iter().collect()));
        }
        let sched = match svc.scheduler {
            Scheduler::Rr => schedule::round_robin(&weights),
            Scheduler::Wrr => schedule::weighted_round_robin(&weights).map_err(|source| {
                ServicesError::Schedule {
                    service: svc.name.clone(),
                    source,
                }
            })?,
            Scheduler::Sh | Scheduler::Dh | Scheduler::Maglev => {
                let keys: Vec<u64> = svc
                    .backends
                    .iter()
                    .map(|id| {
                        let b = &self.backends[*id];
                        schedule::backend_key(b.addr, b.port)
                    })
                    .collect();
                let select = match svc.scheduler {
                    Scheduler::Sh => SELECT_HASH_SRC,
                    Scheduler::Dh => SELECT_HASH_DST,
                    _ => SELECT_HASH_FLOW,
                };
                schedule::maglev(&keys, &weights, select)
            }
            Scheduler::Lc | Scheduler::Wlc | Scheduler::Sed | Scheduler::Nq => {
                let loads: Vec<Load> = svc
                    .backends
                    .iter()
                    .map(|id| self.backends[*id].load)
                    .collect();
                let rule = svc
                    .scheduler
                    .least_conn()
                    .expect("a least-connection scheduler");
                schedule::least_connections(&weights, &loads, svc.arrivals, rule).map_err(
                    |source| ServicesError::Schedule {
                        service: svc.name.clone(),
                        source,
                    },
                )?
            }
        };
        let slots = sched
            .slots
            .iter()
            .map(|pos| self.backends[svc.backends[*pos as usize]].id.0)
            .collect();
        Ok(self.service_spec(svc, active, sched.select, slots))
    }

    fn service_spec(
        &self,
        svc: &Service,
        active: &dyn Fn(&Member) -> bool,
        select: u8,
        slots: Vec<u32>,
    ) -> ServiceSpec {
        let first = &svc.members[0];
        ServiceSpec {
            key: first.key,
            active: active(first),
            group_keys: svc.members[1..]
                .iter()
                .map(|m| (m.key, active(m)))
                .collect(),
            id: svc.id,
            forwarding: match svc.forwarding {
                Forwarding::Dr => FWD_DR,
                Forwarding::Nat => FWD_NAT,
                Forwarding::Tun => FWD_TUN,
            },
            select,
            // Timeouts are whole seconds up to 24 h (checked with the config); the map
            // holds IPv4 IPv4-mapped, so its prefix counts 96 bits more.
            persist_secs: svc.persistence.map_or(0, |p| {
                u32::try_from(p.timeout.as_secs()).unwrap_or(u32::MAX)
            }),
            persist_prefix: svc.persistence.map_or(0, |p| {
                if svc.is_ipv4() {
                    96 + p.prefix_len
                } else {
                    p.prefix_len
                }
            }),
            no_flow_table: !svc.flow_table,
            ages: svc.scheduler.counts_connections(),
            filtered: svc.filtered,
            global_filter: self.global_filter(),
            // The forwarding owner knows which generation is live.
            filter_generation: 0,
            slots,
        }
    }

    /// Records a backend's MAC; returns whether the backend's map value changed.
    pub fn set_mac(&mut self, id: BackendIndex, mac: Option<[u8; 6]>) -> bool {
        let b = &mut self.backends[id];
        let changed = b.mac != mac;
        b.mac = mac;
        changed
    }

    /// Records a health verdict; returns whether the backend's map value or weight
    /// changed (so its service's schedule must be rebuilt).
    pub fn set_health(
        &mut self,
        id: BackendIndex,
        healthy: bool,
        dynamic_weight: Option<u32>,
    ) -> bool {
        let b = &mut self.backends[id];
        if b.healthy != healthy {
            b.transitions += 1;
        }
        let changed = b.healthy != healthy || b.dynamic_weight != dynamic_weight;
        b.healthy = healthy;
        b.dynamic_weight = dynamic_weight;
        changed
    }

    /// Records every backend's MAC from the neighbour table's usable entries (keyed
    /// by egress ifindex and next hop); returns the indices whose MAC changed.
    pub fn learn_macs(&mut self, macs: &Macs) -> Vec<BackendIndex> {
        let mut changed = Vec::new();
        for index in self.backend_indices() {
            let Some(egress) = self.backends[index].egress else {
                continue;
            };
            let mac = macs.get(&(egress.ifindex, egress.next_hop)).copied();
            if self.set_mac(index, mac) {
                changed.push(index);
            }
        }
        changed
    }

    /// After waiting `waited` for MACs: an error for a service left with no real server
    /// that could ever take traffic although it has weight (health does not matter
    /// here: alpha servers start down); a warning line for each service with some
    /// servers unresolved (they keep being retried).
    pub fn unresolved_macs(&self, waited: std::time::Duration) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        for svc in &self.services {
            let backends = svc.backends.iter().map(|id| &self.backends[*id]);
            let unresolved: Vec<String> = backends
                .clone()
                .filter(|b| b.mac.is_none())
                .map(|b| b.addr.to_string())
                .collect();
            if unresolved.is_empty() {
                continue;
            }
            let configured: u32 = backends.clone().map(|b| b.weight).sum();
            let resolved: u32 = backends.filter(|b| b.mac.is_some()).map(|b| b.weight).sum();
            if resolved == 0 && configured > 0 {
                return Err(format!(
                    "virtual server {}: no real server answered ARP/ND within {waited:?} ({}); \
                     are they up and on this L2 segment?",
                    svc.name,
                    unresolved.join(", ")
                ));
            }
            warnings.push(format!(
                "virtual server {}: real servers without a MAC yet ({}); serving with the \
                 others and retrying",
                svc.name,
                unresolved.join(", ")
            ));
        }
        Ok(warnings)
    }

    /// Re-evaluates a service's quorum: `Some(true)` when it was just gained,
    /// `Some(false)` when just lost (keepalived's hysteresis: lost below
    /// quorum - hysteresis, gained at quorum + hysteresis).
    pub fn update_quorum(&mut self, index: usize) -> Option<bool> {
        let weight = self.usable_weight(index);
        let svc = &mut self.services[index];
        let q = &svc.quorum;
        if svc.quorum_ok && weight < q.quorum.saturating_sub(q.hysteresis) {
            svc.quorum_ok = false;
            return Some(false);
        }
        if !svc.quorum_ok && weight >= q.quorum.saturating_add(q.hysteresis) {
            svc.quorum_ok = true;
            return Some(true);
        }
        None
    }

    /// Every backend's index, in order.
    pub fn backend_indices(&self) -> impl Iterator<Item = BackendIndex> + use<> {
        (0..self.backends.len() as u32).map(BackendIndex)
    }

    /// Usable backend weight of a service; 0 means it cannot take new flows.
    pub fn usable_weight(&self, index: usize) -> u32 {
        self.services[index]
            .backends
            .iter()
            .map(|id| self.backends[*id].effective_weight())
            .sum()
    }
}

/// For unit tests elsewhere: every backend routed on-link out of `ifindex`.
#[cfg(test)]
pub(crate) fn route_on_link(table: &mut ServiceTable, ifindex: u32) {
    for b in &mut table.backends {
        b.egress = Some(Egress {
            ifindex,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            next_hop: b.addr,
            source: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(non_snake_case)]
    fn B(n: u32) -> BackendIndex {
        BackendIndex(n)
    }
    use crate::config;

    const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth0"]

[[virtual_server]]
vip = "192.0.2.100"
port = 80
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  weight = 1
  [[virtual_server.real_server]]
  address = "192.0.2.12"
  weight = 2
  [[virtual_server.real_server]]
  address = "192.0.2.13"
  port = 8080
  weight = 3

[[virtual_server]]
vip = "2001:db8::100"
port = 53
protocol = "udp"
scheduler = "rr"
  [[virtual_server.real_server]]
  address = "2001:db8::11"
"#;

    fn table() -> ServiceTable {
        ServiceTable::from_config(&config::parse(CONFIG, "test.toml").unwrap()).unwrap()
    }

    fn make_usable(t: &mut ServiceTable, id: u32) {
        let id = B(id);
        t.backends[id].egress = Some(Egress {
            ifindex: 7,
            mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
            next_hop: t.backends[id].addr,
            source: None,
        });
        t.set_mac(id, Some([2, 0, 0, 0, 0, 0x10 + id.0 as u8]));
    }

    #[test]
    fn keys_ids_and_names_follow_the_config() {
        let t = table();
        assert_eq!(t.services[0].name, "192.0.2.100:80/tcp");
        assert_eq!(t.services[1].name, "[2001:db8::100]:53/udp");
        assert_eq!(
            t.services[0].members[0].key.addr,
            v4_mapped([192, 0, 2, 100])
        );
        assert_eq!(u16::from_be(t.services[0].members[0].key.port_be), 80);
        assert_eq!(t.services[1].members[0].key.proto, IPPROTO_UDP);
        assert_eq!(
            protocol_of(t.services[0].members[0].key.proto),
            Protocol::Tcp
        );
        assert_eq!(
            protocol_of(t.services[1].members[0].key.proto),
            Protocol::Udp
        );
        assert_eq!(t.services[0].backends, [0, 1, 2].map(B));
        assert_eq!(t.services[1].backends, [B(3)]);
        assert_eq!(u16::from_be(t.backend_value(B(2)).port_be), 8080);
    }

    #[test]
    fn unresolved_backends_are_inactive_and_get_no_slots() {
        let mut t = table();
        assert_eq!(t.backend_value(B(0)).flags, 0);
        assert!(t.spec(0, &|_| true).unwrap().slots.is_empty());
        make_usable(&mut t, 0);
        make_usable(&mut t, 2);
        assert_eq!(t.backend_value(B(0)).flags, BACKEND_F_ACTIVE);
        assert_eq!(t.backend_value(B(0)).dst_mac, [2, 0, 0, 0, 0, 0x10]);
        assert_eq!(t.backend_value(B(0)).ifindex, 7);
        // Weights 1 and 3 (backend 1 unresolved): slots hold backend ids.
        assert_eq!(t.spec(0, &|_| true).unwrap().slots, vec![2, 0, 2, 2]);
        assert_eq!(t.usable_weight(0), 4);
    }

    #[test]
    fn a_failed_check_takes_the_server_out_and_moves_its_flows() {
        let mut t = table();
        for id in 0..3 {
            make_usable(&mut t, id);
        }
        assert!(t.set_health(B(1), false, None));
        assert!(!t.spec(0, &|_| true).unwrap().slots.contains(&1));
        assert_eq!(
            t.backend_value(B(1)).flags,
            0,
            "flows pinned to it are rescheduled"
        );
        assert!(t.set_health(B(1), true, None));
        assert_eq!(t.spec(0, &|_| true).unwrap().slots, vec![2, 1, 0, 2, 1, 2]);
    }

    #[test]
    fn inhibit_on_failure_keeps_flows_but_takes_no_new_ones() {
        let mut t = table();
        for id in 0..3 {
            make_usable(&mut t, id);
        }
        t.backends[1].inhibit_on_failure = true;
        t.set_health(B(1), false, None);
        assert!(!t.spec(0, &|_| true).unwrap().slots.contains(&1));
        assert_eq!(
            t.backend_value(B(1)).flags,
            BACKEND_F_ACTIVE,
            "existing flows stay"
        );
    }

    #[test]
    fn a_dynamic_weight_replaces_the_configured_one() {
        let mut t = table();
        for id in 0..3 {
            make_usable(&mut t, id);
        }
        assert!(t.set_health(B(0), true, Some(3)));
        assert_eq!(t.usable_weight(0), 3 + 2 + 3);
        assert!(
            t.set_health(B(2), true, Some(0)),
            "dynamic weight 0: up, but no new flows"
        );
        assert!(!t.spec(0, &|_| true).unwrap().slots.contains(&2));
        assert_eq!(t.backend_value(B(2)).flags, BACKEND_F_ACTIVE);
    }

    #[test]
    fn quorum_is_lost_and_regained_with_hysteresis() {
        let mut t = table();
        for id in 0..3 {
            make_usable(&mut t, id);
        }
        t.services[0].quorum = Quorum {
            quorum: 4,
            hysteresis: 1,
            ..Quorum::default()
        };
        assert_eq!(t.update_quorum(0), None, "6 >= 4");
        t.set_health(B(2), false, None); // weight 3 left: not below 4 - 1
        assert_eq!(t.update_quorum(0), None);
        t.set_health(B(1), false, None); // weight 1 left: lost
        assert_eq!(t.update_quorum(0), Some(false));
        assert!(
            t.spec(0, &|_| true).unwrap().slots.is_empty(),
            "no sorry server: nowhere to go"
        );
        t.set_health(B(2), true, None); // 4: not yet 4 + 1
        assert_eq!(t.update_quorum(0), None);
        assert!(t.spec(0, &|_| true).unwrap().slots.is_empty());
        t.set_health(B(1), true, None); // 6: regained
        assert_eq!(t.update_quorum(0), Some(true));
        assert_eq!(t.spec(0, &|_| true).unwrap().slots, vec![2, 1, 0, 2, 1, 2]);
    }

    #[test]
    fn services_on_vrrp_vips_are_marked() {
        let text = format!(
            "{CONFIG}\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
             virtual_ipaddresses = [\"192.0.2.100/24\"]\n"
        );
        let t = ServiceTable::from_config(&config::parse(&text, "test.toml").unwrap()).unwrap();
        assert!(t.services[0].members[0].on_vrrp_vip);
        assert!(
            !t.services[1].members[0].on_vrrp_vip,
            "the IPv6 service is not VRRP-managed"
        );
    }

    #[test]
    fn losing_a_mac_takes_the_backend_out() {
        let mut t = table();
        for id in 0..3 {
            make_usable(&mut t, id);
        }
        assert_eq!(t.spec(0, &|_| true).unwrap().slots, vec![2, 1, 0, 2, 1, 2]);
        assert!(t.set_mac(B(1), None));
        assert!(!t.set_mac(B(1), None), "no change reported twice");
        assert_eq!(t.backend_value(B(1)).flags, 0);
        assert!(!t.spec(0, &|_| true).unwrap().slots.contains(&1));
    }

    fn reloaded(old: &ServiceTable, text: &str) -> (ServiceTable, Reloaded) {
        ServiceTable::reload(&config::parse(text, "new.toml").unwrap(), old).unwrap()
    }

    #[test]
    fn a_reload_keeps_the_slots_and_state_of_real_servers_that_stay() {
        let mut old = table();
        for id in 0..4 {
            make_usable(&mut old, id);
        }
        old.set_health(B(1), false, None);
        // .11 leaves, .14 joins, .12 gets weight 5; the IPv6 service goes; a new one.
        let text = CONFIG
            .replace(
                "  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n  weight = 1\n",
                "",
            )
            .replace("weight = 2", "weight = 5")
            .replace(
                "[[virtual_server]]\nvip = \"2001:db8::100\"",
                "  [[virtual_server.real_server]]\n  address = \"192.0.2.14\"\n\n[[virtual_server]]\nvip = \"192.0.2.200\"",
            )
            .replace("2001:db8::11", "192.0.2.21");
        let (t, r) = reloaded(&old, &text);
        let slot = |addr: &str| {
            let addr: IpAddr = addr.parse().unwrap();
            t.backends.iter().find(|b| b.addr == addr).unwrap()
        };
        // Kept: same slot, MAC, route and verdict (no check: still its verdict).
        assert_eq!(slot("192.0.2.12").id, Slot(1));
        assert_eq!(slot("192.0.2.12").weight, 5);
        assert!(!slot("192.0.2.12").healthy, "its verdict carried over");
        assert_eq!(slot("192.0.2.12").mac, old.backends[1].mac);
        assert_eq!(slot("192.0.2.13").id, Slot(2));
        assert!(slot("192.0.2.13").reachable());
        // New: slots nobody used before (not .11's 0, nor the IPv6 server's 3).
        assert_eq!(slot("192.0.2.14").id, Slot(4));
        assert_eq!(slot("192.0.2.21").id, Slot(5));
        assert!(
            !slot("192.0.2.14").reachable(),
            "learns its MAC as at start"
        );
        assert_eq!(r.removed_backends, [Slot(0), Slot(3)]);
        assert_eq!(r.new_backends, [Slot(4), Slot(5)]);
        assert_eq!((r.kept_backends, r.carried_health.len()), (2, 2));
        // Services: the first keeps id 0; the IPv6 one (id 1) leaves; the new gets 2.
        assert_eq!(t.services[0].id, 0);
        assert_eq!(t.services[1].id, 2);
        assert_eq!(r.removed_services, vec![1]);
        assert_eq!(r.removed_keys, vec![old.services[1].members[0].key]);
        assert_eq!(r.new_services, vec![2]);
        // The schedule names slots: .13 (weight 3) only, .12 being down.
        assert_eq!(t.spec(0, &|_| true).unwrap().slots, vec![2]);
    }

    #[test]
    fn a_changed_check_starts_its_server_afresh() {
        let with_check = |interval: &str| {
            CONFIG.replace(
                "  address = \"192.0.2.12\"\n  weight = 2\n",
                &format!(
                    "  address = \"192.0.2.12\"\n  weight = 2\n  check = {{ type = \"tcp\", interval = \"{interval}\", alpha = true }}\n"
                ),
            )
        };
        let mut old =
            ServiceTable::from_config(&config::parse(&with_check("2s"), "old.toml").unwrap())
                .unwrap();
        assert!(!old.backends[1].healthy, "alpha: down until checked");
        old.set_health(B(1), true, None);
        let (same, r) = reloaded(&old, &with_check("2s"));
        assert!(
            same.backends[1].healthy,
            "the same check: its verdict stands"
        );
        assert_eq!(r.carried_health.len(), 4);
        let (changed, r) = reloaded(&old, &with_check("5s"));
        assert!(!changed.backends[1].healthy, "a new check: alpha again");
        assert_eq!(changed.backends[1].id, Slot(1), "but the same slot");
        assert_eq!(r.carried_health.len(), 3);
    }
}
