//! `xdp-lb explain SRC[:PORT] DST:PORT PROTO`: where a connection goes and why, read
//! from the live maps the XDP program reads, in the program's order: the service
//! (or why none), the VRRP gate (forwarded only while MASTER), the flow entry of the
//! exact 5-tuple, the persistence entry of a persistent service, and otherwise the
//! schedule slot a new connection takes. The hash of that slot is the program's own
//! function ([`xdp_lb_common::flow_hash`], [`xdp_lb_common::hash_words`]), so the
//! prediction cannot drift from what the kernel does; a per-CPU round-robin cursor is
//! not predictable from here, so for rr/wrr the answer lists the shares instead. The
//! source-filter rule that decides the source comes from the daemon's own rules, the
//! ones it wrote to the tries ([`crate::filter::decide`]).
//!
//! [`explain`] is pure over a [`LiveMaps`] view (the [`Dataplane`] in the daemon, an
//! in-memory one in the tests); the daemon answers `GET /explain` with it, and the
//! CLI prints the same [`Explanation`] with [`render`].

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use aya::maps::MapError;
use serde::{Deserialize, Serialize};
use xdp_lb_common::{
    BACKEND_F_ACTIVE, BackendValue, FLOW_F_CLOSING, FWD_NAT, FlowKey, FlowValue, IPPROTO_TCP,
    IPPROTO_UDP, PersistKey, PersistValue, SELECT_CURSOR, SELECT_HASH_DST, SELECT_HASH_SRC,
    SERVICE_F_ACTIVE, SERVICE_F_AGING, SERVICE_F_NO_FLOW_TABLE, ServiceKey, ServiceValue,
    flow_hash, hash_words, mask_addr,
};

use crate::{
    config::NatTimeouts,
    dataplane::{Dataplane, DataplaneError},
    services::{ServiceTable, addr16},
};

/// What is asked: a connection from `src[:src_port]` to `dst:dst_port` over `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub src: IpAddr,
    /// Without it the flow table cannot be looked up, and a maglev pick not made
    /// (sh hashes the source address alone).
    pub src_port: Option<u16>,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("missing `{0}`")]
    Missing(&'static str),
    #[error("`{key}`: {value:?} is not {what}")]
    Invalid {
        key: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("source {src} and destination {dst} are not of one address family")]
    Family { src: IpAddr, dst: IpAddr },
}

impl Query {
    /// The query string of `GET /explain`: `src=..&sport=..&dst=..&dport=..&proto=..`
    /// (separate ports, so an IPv6 address needs no brackets).
    pub fn to_query_string(&self) -> String {
        let mut q = format!("src={}", self.src);
        if let Some(port) = self.src_port {
            let _ = write!(q, "&sport={port}");
        }
        let _ = write!(
            q,
            "&dst={}&dport={}&proto={}",
            self.dst, self.dst_port, self.protocol
        );
        q
    }

    /// Parses [`Query::to_query_string`]'s form.
    pub fn from_query_string(query: &str) -> Result<Query, QueryError> {
        let get = |key: &'static str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.replace("%3A", ":").replace("%3a", ":"))
        };
        let need = |key: &'static str| get(key).ok_or(QueryError::Missing(key));
        let invalid = |key: &'static str, value: &str, what: &'static str| QueryError::Invalid {
            key,
            value: value.to_owned(),
            what,
        };
        let ip = |key: &'static str| -> Result<IpAddr, QueryError> {
            let v = need(key)?;
            v.parse().map_err(|_| invalid(key, &v, "an IP address"))
        };
        let port = |v: String, key: &'static str| -> Result<u16, QueryError> {
            v.parse().map_err(|_| invalid(key, &v, "a port (0-65535)"))
        };
        let src = ip("src")?;
        let dst = ip("dst")?;
        let src_port = get("sport").map(|v| port(v, "sport")).transpose()?;
        let dst_port = port(need("dport")?, "dport")?;
        let protocol = need("proto")?.to_ascii_lowercase();
        if protocol != "tcp" && protocol != "udp" {
            return Err(invalid("proto", &protocol, "tcp or udp"));
        }
        let query = Query {
            src,
            src_port,
            dst,
            dst_port,
            protocol,
        };
        query.check()?;
        Ok(query)
    }

    /// Both ends of one family: no packet has an IPv4 source and an IPv6 destination.
    pub fn check(&self) -> Result<(), QueryError> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(QueryError::Family {
                src: self.src,
                dst: self.dst,
            });
        }
        Ok(())
    }

    fn ip_protocol(&self) -> u8 {
        if self.protocol == "udp" {
            IPPROTO_UDP
        } else {
            IPPROTO_TCP
        }
    }

    /// `198.51.100.7:40000 -> 192.0.2.100:80/tcp`.
    pub fn describe(&self) -> String {
        let src = match self.src_port {
            Some(p) => SocketAddr::new(self.src, p).to_string(),
            None => self.src.to_string(),
        };
        format!(
            "{src} -> {}/{}",
            SocketAddr::new(self.dst, self.dst_port),
            self.protocol
        )
    }

    /// The flow map's key of this connection, as the program builds it from a packet.
    fn flow_key(&self, src_port: u16) -> FlowKey {
        FlowKey {
            src: addr16(self.src),
            dst: addr16(self.dst),
            sport_be: src_port.to_be(),
            dport_be: self.dst_port.to_be(),
            proto: self.ip_protocol(),
            _pad: [0; 3],
        }
    }
}

/// The answer, shared by the API (`GET /explain`) and the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub query: Query,
    /// What the data plane does with such a packet now, in one sentence.
    pub verdict: String,
    /// `None`: no virtual service matches (see `no_service`).
    pub service: Option<Matched>,
    pub no_service: Option<NoService>,
}

/// Why no service matched: its packets go to the kernel untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoService {
    pub reason: String,
    /// The services on the asked VIP (another port or protocol), if any.
    pub services_on_vip: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matched {
    /// `vip:port/proto`.
    pub name: String,
    pub forwarding: String,
    pub scheduler: String,
    /// `persistent 5m per /32`; absent when off.
    pub persistence: Option<String>,
    pub gate: Gate,
    /// The source-filter rule that decides the source (`None`: the service has no
    /// rule for it, and no global deny holds it: allowed).
    #[serde(default)]
    pub filter: Option<FilterRule>,
    pub quorum_ok: bool,
    pub flow: FlowLookup,
    /// Persistent services only: the client's remembered real server.
    pub persisted: Option<Persisted>,
    pub new_connection: NewConnection,
}

/// The source-filter rule that decides a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    /// `deny 203.0.113.0/24`, or `deny (no allow matched)`.
    pub rule: String,
    /// From `[filter] deny` (checked before the service's own rules).
    pub global: bool,
    pub denied: bool,
}

/// Whether XDP forwards the service now, and the VRRP instances that decide it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// The live service entry's active flag: forwarded (else passed to the kernel).
    pub forwarded: bool,
    /// The VRRP instances holding the VIP, with their state; empty when the VIP is
    /// no VRRP address (the service is always forwarded).
    pub vrrp: Vec<VrrpGate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpGate {
    pub instance: String,
    /// `MASTER`, `BACKUP`, `FAULT`, `INIT`...
    pub state: String,
}

/// A real server as the daemon knows it and as the live map says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServer {
    pub address: IpAddr,
    pub port: u16,
    /// The service's sorry server, not a real server.
    pub sorry: bool,
    pub healthy: bool,
    /// Its MAC is known.
    pub reachable: bool,
    /// Configured weight and the one new flows get now.
    pub weight: u32,
    pub effective_weight: u32,
    /// The live backend entry's active flag: its flows are followed.
    pub active: bool,
}

impl RealServer {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// The flow table's entry for the exact 5-tuple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FlowLookup {
    /// No source port given: the key is not complete.
    NotLookedUp,
    /// The service keeps no flow table (`flow_table = false`): every packet is hashed.
    Off,
    /// No entry: the next packet is a new connection.
    None,
    Pinned {
        /// `None`: the entry names a backend id the daemon no longer has.
        real_server: Option<RealServer>,
        backend_id: u32,
        /// A FIN or RST was seen.
        closing: bool,
        /// NAT entries: seconds since the last packet (refreshed at most once a
        /// second); DR and TUN entries keep no clock.
        idle_seconds: Option<u64>,
        /// The program follows it (its backend is active, it belongs to this service
        /// and, NAT, it has not expired); otherwise the packet is scheduled anew.
        followed: bool,
        /// Why it is not followed.
        #[serde(default)]
        not_followed_because: Option<String>,
    },
}

/// A persistent service's memory of the client (masked by the granularity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub client: IpAddr,
    /// `None`: no entry for the client.
    pub real_server: Option<RealServer>,
    pub idle_seconds: Option<u64>,
    /// A new connection goes to it: the entry is fresh and its real server active.
    pub used: bool,
}

/// How a new connection (no followed flow entry) picks its real server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum NewConnection {
    /// The schedule is empty: new connections are dropped.
    NoRealServer,
    /// rr/wrr: a per-CPU cursor walks the schedule, so the slot depends on which CPU
    /// the packet arrives on and how many new connections it saw before.
    Cursor { slots: u32, shares: Vec<Share> },
    /// sh (`source`) or maglev (`5-tuple`): the exact slot.
    Hash {
        /// `source address` or `5-tuple`.
        of: String,
        hash: u32,
        bucket: u32,
        slots: u32,
        backend_id: u32,
        real_server: Option<RealServer>,
    },
    /// maglev without a source port: the slot is unknown.
    NeedsSourcePort { slots: u32 },
}

/// One real server's part of a round-robin schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub real_server: Option<RealServer>,
    pub backend_id: u32,
    pub slots: u32,
    pub percent: f64,
}

/// The maps as the program reads them; missing entries are `None`.
pub trait LiveMaps {
    fn service(&self, key: &ServiceKey) -> Result<Option<ServiceValue>, DataplaneError>;
    /// The backend id in slot `slot` of the schedule pool.
    fn schedule_slot(&self, slot: u32) -> Result<Option<u32>, DataplaneError>;
    fn backend(&self, id: u32) -> Result<Option<BackendValue>, DataplaneError>;
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DataplaneError>;
    fn persisted(&self, key: &PersistKey) -> Result<Option<PersistValue>, DataplaneError>;
}

/// What else the answer needs besides the maps: the daemon's table, the idle timeouts,
/// the VRRP instances by VIP, and the program's clock now.
pub struct Context<'a> {
    pub table: &'a ServiceTable,
    /// The idle timeouts, while some service's flows age (NAT, lc, wlc).
    pub timeouts: Option<NatTimeouts>,
    /// Each VRRP instance: its name, state and VIPs.
    pub vrrp: &'a [(String, String, Vec<IpAddr>)],
    /// `bpf_ktime_get_ns`'s clock (CLOCK_MONOTONIC).
    pub now_ns: u64,
}

/// Explains `query` against the live maps; an error only when a map cannot be read.
pub fn explain(
    maps: &impl LiveMaps,
    cx: &Context,
    query: &Query,
) -> Result<Explanation, DataplaneError> {
    let key = ServiceKey {
        addr: addr16(query.dst),
        port_be: query.dst_port.to_be(),
        proto: query.ip_protocol(),
        _pad: 0,
    };
    let table = cx.table;
    let found = table.services.iter().find(|s| s.has_key(&key));
    let (Some(svc), Some(value)) = (found, maps.service(&key)?) else {
        let on_vip: Vec<String> = table
            .services
            .iter()
            .filter(|s| s.members.iter().any(|m| m.vip == query.dst))
            .map(|s| s.name.clone())
            .collect();
        let asked = crate::config::service_name(
            query.dst,
            query.dst_port,
            crate::services::protocol_of(query.ip_protocol()),
        );
        let reason = match (found, on_vip.is_empty()) {
            (Some(_), _) => format!("{asked} is configured but not in the data plane's map"),
            (None, true) => format!("{} is no virtual service address here", query.dst),
            (None, false) => format!("no virtual service {asked} (the VIP has other services)"),
        };
        return Ok(Explanation {
            query: query.clone(),
            verdict: format!("passed to the kernel untouched: {reason}"),
            service: None,
            no_service: Some(NoService {
                reason,
                services_on_vip: on_vip,
            }),
        });
    };
    let real_server = |id: u32| -> Result<Option<RealServer>, DataplaneError> {
        let live = maps.backend(id)?;
        Ok(table
            .backends
            .iter()
            .find(|b| b.id.0 == id)
            .map(|b| RealServer {
                address: b.addr,
                port: b.port,
                sorry: b.sorry,
                healthy: b.healthy,
                reachable: b.reachable(),
                weight: b.weight,
                effective_weight: b.effective_weight(),
                active: live.is_some_and(|v| v.flags & BACKEND_F_ACTIVE != 0),
            }))
    };
    let gate = Gate {
        forwarded: value.flags & SERVICE_F_ACTIVE != 0,
        vrrp: cx
            .vrrp
            .iter()
            .filter(|(_, _, vips)| vips.contains(&query.dst))
            .map(|(instance, state, _)| VrrpGate {
                instance: instance.clone(),
                state: state.clone(),
            })
            .collect(),
    };

    let flow = match query.src_port {
        _ if value.flags & SERVICE_F_NO_FLOW_TABLE != 0 => FlowLookup::Off,
        None => FlowLookup::NotLookedUp,
        Some(port) => match maps.flow(&query.flow_key(port))? {
            None => FlowLookup::None,
            Some(pin) => {
                let rs = real_server(pin.backend)?;
                // As the program decides: NAT's flows and lc/wlc's carry a clock.
                let ages = value.forwarding == FWD_NAT || value.flags & SERVICE_F_AGING != 0;
                let idle_ns = cx.now_ns.saturating_sub(pin.last_seen_ns);
                let expired = ages
                    && cx.timeouts.is_some_and(|t| {
                        let timeout = t.for_entry(query.ip_protocol(), pin.flags);
                        !timeout.is_zero() && u128::from(idle_ns) > timeout.as_nanos()
                    });
                let not_followed_because = if expired {
                    Some("it has been idle longer than its timeout".to_owned())
                } else if u32::from(pin.service) != value.id {
                    Some("it was made for another service".to_owned())
                } else if !rs.as_ref().is_some_and(|r| r.active) {
                    Some("its real server is gone or inactive (failed check, no MAC)".to_owned())
                } else {
                    None
                };
                FlowLookup::Pinned {
                    real_server: rs,
                    backend_id: pin.backend,
                    closing: pin.flags & FLOW_F_CLOSING != 0,
                    idle_seconds: (ages && pin.last_seen_ns != 0)
                        .then_some(idle_ns / 1_000_000_000),
                    followed: not_followed_because.is_none(),
                    not_followed_because,
                }
            }
        },
    };

    let persisted = if value.persist_secs == 0 {
        None
    } else {
        let client = mask_addr(&addr16(query.src), &value.persist_mask);
        let entry = maps.persisted(&PersistKey {
            service: value.id,
            client,
        })?;
        let client_ip = ip_of(client);
        Some(match entry {
            None => Persisted {
                client: client_ip,
                real_server: None,
                idle_seconds: None,
                used: false,
            },
            Some(e) => {
                let idle_ns = cx.now_ns.saturating_sub(e.last_seen_ns);
                let rs = real_server(e.backend)?;
                let fresh = idle_ns < u64::from(value.persist_secs) * 1_000_000_000;
                Persisted {
                    client: client_ip,
                    used: fresh && rs.as_ref().is_some_and(|r| r.active),
                    real_server: rs,
                    idle_seconds: Some(idle_ns / 1_000_000_000),
                }
            }
        })
    };

    let slot = |i: u32| -> Result<u32, DataplaneError> {
        Ok(maps
            .schedule_slot(value.sched_base + i)?
            .unwrap_or(u32::MAX))
    };
    let new_connection = if value.sched_len == 0 {
        NewConnection::NoRealServer
    } else if value.select == SELECT_CURSOR {
        let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
        for i in 0..value.sched_len {
            *counts.entry(slot(i)?).or_default() += 1;
        }
        let mut shares = Vec::with_capacity(counts.len());
        for (id, n) in counts {
            shares.push(Share {
                real_server: real_server(id)?,
                backend_id: id,
                slots: n,
                percent: f64::from(n) * 100.0 / f64::from(value.sched_len),
            });
        }
        NewConnection::Cursor {
            slots: value.sched_len,
            shares,
        }
    } else {
        let hashed = if value.select == SELECT_HASH_SRC {
            Some(("source address", hash_words(&addr16(query.src), 0)))
        } else if value.select == SELECT_HASH_DST {
            Some(("destination address", hash_words(&addr16(query.dst), 0)))
        } else {
            query
                .src_port
                .map(|p| ("5-tuple", flow_hash(&query.flow_key(p))))
        };
        match hashed {
            None => NewConnection::NeedsSourcePort {
                slots: value.sched_len,
            },
            Some((of, hash)) => {
                let bucket = hash % value.sched_len;
                let id = slot(bucket)?;
                NewConnection::Hash {
                    of: of.to_owned(),
                    hash,
                    bucket,
                    slots: value.sched_len,
                    backend_id: id,
                    real_server: real_server(id)?,
                }
            }
        }
    };

    let matched = Matched {
        name: svc.name.clone(),
        forwarding: svc.forwarding.to_string(),
        scheduler: svc.scheduler.to_string(),
        persistence: svc.persistence.map(|p| {
            format!(
                "persistent {} per /{}",
                crate::config::fmt_duration(p.timeout),
                p.prefix_len
            )
        }),
        gate,
        filter: crate::filter::decide(&table.filter, &svc.members[0].key, query.src).map(|r| {
            FilterRule {
                rule: match r.prefix {
                    Some(p) => format!("{} {p}", r.action),
                    None => format!("{} (no allow matched)", r.action),
                },
                global: r.scope == crate::filter::Scope::Global,
                denied: r.action == crate::filter::Action::Deny,
            }
        }),
        quorum_ok: svc.quorum_ok,
        flow,
        persisted,
        new_connection,
    };
    Ok(Explanation {
        query: query.clone(),
        verdict: verdict(&matched),
        service: Some(matched),
        no_service: None,
    })
}

/// The program's decision, in its order: gate, flow entry, persistence, schedule.
fn verdict(m: &Matched) -> String {
    let to = |rs: &Option<RealServer>| {
        rs.as_ref()
            .map_or("a real server no longer configured".to_owned(), |r| {
                r.addr().to_string()
            })
    };
    if !m.gate.forwarded {
        let why = match m.gate.vrrp.iter().find(|g| g.state != "MASTER") {
            Some(g) => format!("VRRP instance {} is {}, not MASTER", g.instance, g.state),
            None => "this node is not MASTER for its VIP".to_owned(),
        };
        return format!("passed to the kernel: {why}");
    }
    if let Some(f) = m.filter.as_ref().filter(|f| f.denied) {
        let whose = if f.global {
            "[filter]"
        } else {
            "the service's"
        };
        return format!("dropped by the source filter: {whose} {}", f.rule);
    }
    if let FlowLookup::Pinned {
        real_server,
        followed: true,
        ..
    } = &m.flow
    {
        return format!("forwarded to {} by its flow entry", to(real_server));
    }
    let new = match &m.flow {
        FlowLookup::Pinned { .. } => "rescheduled (its flow entry is not followed)",
        FlowLookup::Off => "every packet",
        _ => "a new connection",
    };
    if let Some(Persisted {
        real_server,
        used: true,
        ..
    }) = &m.persisted
    {
        return format!("{new}: forwarded to {} by persistence", to(real_server));
    }
    match &m.new_connection {
        NewConnection::NoRealServer => {
            format!("{new}: dropped, no real server can take new connections")
        }
        NewConnection::Cursor { shares, .. } => format!(
            "{new}: forwarded to one of {} real servers by round robin (the slot depends \
             on the CPU's cursor)",
            shares.len()
        ),
        NewConnection::Hash { real_server, .. } => match real_server {
            Some(r) if r.active => {
                format!("{new}: forwarded to {}", r.addr())
            }
            _ => format!(
                "{new}: dropped, the real server of its bucket ({}) is inactive",
                to(real_server)
            ),
        },
        NewConnection::NeedsSourcePort { .. } => format!(
            "{new}: unknown without the source port (maglev hashes the whole 5-tuple; \
             give SRC:PORT)"
        ),
    }
}

fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A real server in one line: `192.0.2.12:80 (up, weight 1/1, active)`.
fn server(rs: &Option<RealServer>, id: u32) -> String {
    let Some(r) = rs else {
        return format!("backend id {id}, no longer configured");
    };
    let health = match (r.healthy, r.reachable) {
        (true, true) => "up",
        (false, _) => "DOWN",
        (true, false) => "no MAC",
    };
    format!(
        "{} ({health}, weight {}/{}, {}{})",
        r.addr(),
        r.effective_weight,
        r.weight,
        if r.active { "active" } else { "inactive" },
        if r.sorry { ", sorry server" } else { "" }
    )
}

/// The explanation as text, one aspect a line.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "connection   {}", e.query.describe());
    if let Some(n) = &e.no_service {
        let _ = writeln!(out, "service      none: {}", n.reason);
        if !n.services_on_vip.is_empty() {
            let _ = writeln!(out, "on this VIP  {}", n.services_on_vip.join(", "));
        }
    }
    if let Some(m) = &e.service {
        let _ = writeln!(
            out,
            "service      {} {} {}{}{}",
            m.name,
            m.forwarding,
            m.scheduler,
            m.persistence
                .as_ref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default(),
            if m.quorum_ok { "" } else { ", quorum lost" }
        );
        let vrrp = if m.gate.vrrp.is_empty() {
            "its VIP is no VRRP address".to_owned()
        } else {
            m.gate
                .vrrp
                .iter()
                .map(|g| format!("VRRP {} is {}", g.instance, g.state))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "gate         {} ({vrrp})",
            if m.gate.forwarded {
                "forwarded by XDP"
            } else {
                "passed to the kernel"
            }
        );
        let filter = match &m.filter {
            None => "no rule holds the source: allowed".to_owned(),
            Some(f) => format!("{}{}", if f.global { "[filter] " } else { "" }, f.rule),
        };
        let _ = writeln!(out, "filter       {filter}");
        let flow = match &m.flow {
            FlowLookup::NotLookedUp => "not looked up: no source port given".to_owned(),
            FlowLookup::Off => {
                "off for this service (flow_table = false): every packet is hashed".to_owned()
            }
            FlowLookup::None => "none (the next packet starts a new connection)".to_owned(),
            FlowLookup::Pinned {
                real_server,
                backend_id,
                closing,
                idle_seconds,
                followed,
                not_followed_because,
            } => format!(
                "pinned to {}{}, {}{}",
                server(real_server, *backend_id),
                if *closing { ", closing" } else { "" },
                match idle_seconds {
                    Some(s) => format!("idle {s}s"),
                    None => format!("age not kept ({} flows keep no clock)", m.forwarding),
                },
                match (followed, not_followed_because) {
                    (true, _) => String::new(),
                    (false, why) => format!("; NOT followed: {}", why.as_deref().unwrap_or("?")),
                }
            ),
        };
        let _ = writeln!(out, "flow entry   {flow}");
        if let Some(p) = &m.persisted {
            let line = match (&p.real_server, p.idle_seconds) {
                (None, None) => format!("none for client {}", p.client),
                (rs, idle) => format!(
                    "client {} -> {}, seen {}s ago{}",
                    p.client,
                    server(rs, 0),
                    idle.unwrap_or(0),
                    if p.used {
                        ""
                    } else {
                        ", not used (stale or inactive)"
                    }
                ),
            };
            let _ = writeln!(out, "persistence  {line}");
        }
        match &m.new_connection {
            NewConnection::NoRealServer => {
                let _ = writeln!(
                    out,
                    "new conn     no real server: the schedule is empty, new connections \
                     are dropped"
                );
            }
            NewConnection::Cursor { slots, shares } => {
                let _ = writeln!(
                    out,
                    "new conn     per-CPU round-robin cursor over {slots} slots: the slot \
                     depends on the CPU and its cursor; shares:"
                );
                for s in shares {
                    let _ = writeln!(
                        out,
                        "               {:>5.1}%  {}",
                        s.percent,
                        server(&s.real_server, s.backend_id)
                    );
                }
            }
            NewConnection::Hash {
                of,
                hash,
                bucket,
                slots,
                backend_id,
                real_server,
            } => {
                let _ = writeln!(
                    out,
                    "new conn     hash of the {of} {hash:#010x} -> bucket {bucket} of {slots} \
                     -> {}",
                    server(real_server, *backend_id)
                );
            }
            NewConnection::NeedsSourcePort { slots } => {
                let _ = writeln!(
                    out,
                    "new conn     maglev hashes the whole 5-tuple ({slots} buckets): give the \
                     source port (SRC:PORT) to know the bucket"
                );
            }
        }
    }
    let _ = writeln!(out, "verdict      {}", e.verdict);
    out
}

fn read<T>(r: Result<T, MapError>, name: &'static str) -> Result<Option<T>, DataplaneError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(DataplaneError::Map { name, source }),
    }
}

/// [`read`] for a map kept per IP version, whose error names the map that failed.
fn read_either<T>(
    r: Result<T, crate::dataplane::by_family::Failed>,
) -> Result<Option<T>, DataplaneError> {
    r.map_or_else(|(name, e)| read(Err(e), name), |v| Ok(Some(v)))
}

impl LiveMaps for Dataplane {
    fn service(&self, key: &ServiceKey) -> Result<Option<ServiceValue>, DataplaneError> {
        read_either(self.services.get(key))
    }
    fn schedule_slot(&self, slot: u32) -> Result<Option<u32>, DataplaneError> {
        read(self.schedule.get(&slot, 0), "SCHEDULE")
    }
    fn backend(&self, id: u32) -> Result<Option<BackendValue>, DataplaneError> {
        self.backends.selected(id)
    }
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        read_either(self.flows.get(key))
    }
    fn persisted(&self, key: &PersistKey) -> Result<Option<PersistValue>, DataplaneError> {
        read(self.persist.get(key, 0), "PERSIST")
    }
}

#[cfg(test)]
mod tests;
