//! What the node is doing now, for `/status` and `/metrics`: one plain snapshot taken
//! from the service table, the data plane's counters and the VRRP instances. The
//! daemon's loop takes it (it owns the table and the maps); the API only renders it,
//! and `xdp-lb status` reads it back as this same type.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{
        Dataplane,
        stats::{Traffic, verdicts},
    },
    failover::{InstanceStatus, Label, SocketStatus},
    forwarding::Forwarding,
    services::BackendIndex,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// `[global] router_id`.
    pub router_id: Option<String>,
    pub uptime_seconds: u64,
    pub services: Vec<ServiceStatus>,
    pub vrrp: Vec<InstanceStatus>,
    /// VRRP packets no instance was given, per interface and family.
    pub vrrp_sockets: Vec<SocketStatus>,
    /// Data-plane verdicts by reason, summed over CPUs.
    pub verdicts: BTreeMap<Label, u64>,
    /// `[filter] deny`: the global deny list's rules and what each dropped.
    #[serde(default)]
    pub global_deny: Vec<RuleStatus>,
    /// Seconds the services' and real servers' `rates` were measured over (0: none yet).
    #[serde(default)]
    pub rates_over_seconds: f64,
    /// VIPs of services with `announce = true`: announced to the routing daemon or not.
    #[serde(default)]
    pub announcements: Vec<crate::advertise::AnnouncementStatus>,
    /// Whether the node drains.
    #[serde(default)]
    pub drain: crate::advertise::DrainStatus,
    /// `[sync]`: NAT connections sent to or received from the peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<crate::sync::SyncStatus>,
    /// `[bfd.NAME]` sessions as bfdd last reported them.
    #[serde(default)]
    pub bfd: Vec<crate::bfd::SessionStatus>,
    /// Seconds since the flood guard last saw a SYN flood (`[dataplane]
    /// new_flow_rate`); none if it never did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_flood_seen_seconds_ago: Option<f64>,
    /// The data plane's flow cache (none if it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_cache: Option<crate::dataplane::FlowCacheState>,
}

impl Snapshot {
    /// Whether the flood guard holds a SYN flood on now (DR and TUN services pin no
    /// SYN meanwhile).
    pub fn syn_flood_on(&self) -> bool {
        self.syn_flood_seen_seconds_ago
            .is_some_and(|ago| ago < xdp_lb_common::FLOOD_HOLD_NS as f64 / 1e9)
    }
}

/// Per-second rates over the last interval (see [`Snapshot::with_rates`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub connections: f64,
    pub packets: f64,
    pub bytes: f64,
}

impl Rates {
    fn between(now: (u64, u64, u64), then: (u64, u64, u64), seconds: f64) -> Rates {
        let per_second = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
        Rates {
            connections: per_second(now.0, then.0),
            packets: per_second(now.1, then.1),
            bytes: per_second(now.2, then.2),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `vip:port/proto`, or `group NAME/proto`.
    pub name: String,
    /// Its (first) VIP and port.
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// The `[virtual_server_group.NAME]` it serves, if any.
    #[serde(default)]
    pub group: Option<String>,
    /// Every `vip:port` it serves (one, or a group's members).
    #[serde(default)]
    pub members: Vec<String>,
    pub forwarding: String,
    pub scheduler: String,
    /// `persistent 5m per /32`, as `ipvsadm -L` shows persistence; absent when off.
    #[serde(default)]
    pub persistence: Option<String>,
    /// Forwarded by XDP now (false while a VRRP instance holding its VIP is not MASTER).
    pub active: bool,
    pub quorum_ok: bool,
    pub counters: ServiceCounters,
    #[serde(default)]
    pub rates: Rates,
    pub real_servers: Vec<RealServerStatus>,
    pub sorry_server: Option<RealServerStatus>,
    /// Its source-filter rules (`allow`, `deny`, and the default deny of a service
    /// with `allow` rules) and the packets each decided.
    #[serde(default)]
    pub filter: Vec<RuleStatus>,
}

/// One source-filter rule and the packets it decided (allowed, or dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub action: crate::filter::Action,
    /// `198.51.100.0/24`; absent for a service's default deny (it has `allow` rules
    /// and none held the source).
    pub prefix: Option<String>,
    pub packets: u64,
}

impl RuleStatus {
    /// `deny 198.51.100.0/24`, or `deny (no allow matched)` for a default deny.
    pub fn describe(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{} {p}", self.action),
            None => format!("{} (no allow matched)", self.action),
        }
    }
}

/// The service's data-plane counters (summed over CPUs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceCounters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub rescheduled_flows: u64,
    pub passed_inactive: u64,
    pub dropped_no_real_server: u64,
    pub dropped_redirect: u64,
    /// New flows the flood guard forwarded without a flow entry.
    #[serde(default)]
    pub unpinned_flows: u64,
    /// Packets its own source-filter rules dropped (the global deny list's drops are
    /// counted on its rules, [`Snapshot::global_deny`]).
    #[serde(default)]
    pub dropped_filtered: u64,
    /// Established packets that took the flow table's way and filled the flow cache
    /// (see `ServiceStats::flow_cache_fills`); 0 for services it does not serve.
    #[serde(default)]
    pub flow_cache_fills: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealServerStatus {
    pub address: IpAddr,
    pub port: u16,
    /// Configured weight.
    pub weight: u32,
    /// The weight new flows get now (0 while down or unreachable; a MISC check's
    /// dynamic weight replaces the configured one).
    pub effective_weight: u32,
    pub healthy: bool,
    /// Its MAC is known, so the data plane can reach it.
    pub reachable: bool,
    pub health_transitions: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Its connections as lc and wlc count them (`ipvsadm -Ln`'s ActiveConn and
    /// InActConn); absent for services that do not count them.
    #[serde(default)]
    pub connections: Option<ConnectionCounts>,
    #[serde(default)]
    pub rates: Rates,
}

/// Established connections, and those that saw a FIN or RST and wait for their
/// timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCounts {
    pub active: u64,
    pub inactive: u64,
}

impl Snapshot {
    /// This snapshot with per-second rates against `earlier`, taken `elapsed` before:
    /// services match by name, real servers by address and port (both stay across
    /// reloads). Whatever is new since then has no rate yet.
    pub fn with_rates(mut self, earlier: &Snapshot, elapsed: std::time::Duration) -> Snapshot {
        let seconds = elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return self;
        }
        self.rates_over_seconds = seconds;
        for svc in &mut self.services {
            let Some(then) = earlier.services.iter().find(|s| s.name == svc.name) else {
                continue;
            };
            let c = |c: &ServiceCounters| (c.new_flows, c.packets, c.bytes);
            svc.rates = Rates::between(c(&svc.counters), c(&then.counters), seconds);
            let servers = svc.real_servers.iter_mut().chain(svc.sorry_server.as_mut());
            for rs in servers {
                let before = then
                    .real_servers
                    .iter()
                    .chain(then.sorry_server.as_ref())
                    .find(|b| b.address == rs.address && b.port == rs.port);
                if let Some(b) = before {
                    let c = |r: &RealServerStatus| (r.new_flows, r.packets, r.bytes);
                    rs.rates = Rates::between(c(rs), c(b), seconds);
                }
            }
        }
        self
    }

    /// Reads the counters from the data plane; a counter that cannot be read is 0 and
    /// the reading error is logged once per snapshot.
    pub fn take(
        router_id: Option<String>,
        uptime: std::time::Duration,
        forwarding: &Forwarding<Dataplane>,
        vrrp: Vec<InstanceStatus>,
        vrrp_sockets: Vec<SocketStatus>,
    ) -> Snapshot {
        let (table, dataplane) = (forwarding.table(), forwarding.writer());
        let mut failed = None;
        let mut note = |e: crate::dataplane::DataplaneError| {
            failed.get_or_insert_with(|| e.to_string());
        };
        // A real server's status, and its traffic as read for it (the service's and
        // all traffic are summed from these, not read again).
        let real_server =
            |id: BackendIndex, note: &mut dyn FnMut(crate::dataplane::DataplaneError)| {
                let b = &table.backends[id];
                let c = dataplane.backend_stats(b.id.0).unwrap_or_else(|e| {
                    note(e);
                    Default::default()
                });
                let status = RealServerStatus {
                    address: b.addr,
                    port: b.port,
                    weight: b.weight,
                    effective_weight: b.effective_weight(),
                    healthy: b.healthy,
                    reachable: b.reachable(),
                    health_transitions: b.transitions,
                    packets: c.packets,
                    bytes: c.bytes,
                    new_flows: c.new_flows,
                    connections: table.services[b.service]
                        .scheduler
                        .counts_connections()
                        .then_some(ConnectionCounts {
                            active: b.load.active,
                            inactive: b.load.inactive,
                        }),
                    rates: Rates::default(),
                };
                (status, Traffic::from(c))
            };
        let rules = |scope: crate::filter::Scope, note: &mut dyn FnMut(_)| -> Vec<RuleStatus> {
            table
                .filter
                .iter()
                .filter(|r| r.scope == scope)
                .map(|r| RuleStatus {
                    action: r.action,
                    prefix: r.prefix.map(|p| p.to_string()),
                    packets: dataplane.rule_packets(r.number).unwrap_or_else(|e| {
                        note(e);
                        0
                    }),
                })
                .collect()
        };
        let global_deny = rules(crate::filter::Scope::Global, &mut note);
        let mut all_traffic = Vec::with_capacity(table.services.len());
        let services = table
            .services
            .iter()
            .enumerate()
            .map(|(index, svc)| {
                let s = dataplane.service_stats(svc.id).unwrap_or_else(|e| {
                    note(e);
                    Default::default()
                });
                let (real_servers, served): (Vec<RealServerStatus>, Vec<Traffic>) = svc
                    .backends
                    .iter()
                    .map(|&id| real_server(id, &mut note))
                    .unzip();
                let sorry = svc.sorry.map(|id| real_server(id, &mut note));
                let traffic =
                    svc.traffic(served.into_iter().chain(sorry.as_ref().map(|(_, t)| *t)));
                all_traffic.push(traffic);
                let filter = rules(crate::filter::Scope::Service(svc.members[0].key), &mut note);
                ServiceStatus {
                    name: svc.name.clone(),
                    vip: svc.members[0].vip,
                    port: svc.members[0].port,
                    protocol: svc.protocol.to_string(),
                    group: svc.group.clone(),
                    members: svc
                        .members
                        .iter()
                        .map(|m| std::net::SocketAddr::new(m.vip, m.port).to_string())
                        .collect(),
                    forwarding: svc.forwarding.to_string(),
                    scheduler: svc.scheduler.to_string(),
                    persistence: svc.persistence.map(|p| {
                        format!(
                            "persistent {} per /{}",
                            crate::config::fmt_duration(p.timeout),
                            p.prefix_len
                        )
                    }),
                    active: forwarding.is_active(index),
                    quorum_ok: svc.quorum_ok,
                    rates: Rates::default(),
                    counters: ServiceCounters {
                        packets: traffic.packets,
                        bytes: traffic.bytes,
                        new_flows: traffic.new_flows,
                        rescheduled_flows: s.rescheduled,
                        passed_inactive: s.pass_inactive,
                        dropped_no_real_server: s.drop_no_backend,
                        dropped_redirect: s.drop_redirect,
                        unpinned_flows: s.unpinned,
                        flow_cache_fills: s.flow_cache_fills,
                        dropped_filtered: filter
                            .iter()
                            .filter(|r| r.action == crate::filter::Action::Deny)
                            .map(|r| r.packets)
                            .sum(),
                    },
                    real_servers,
                    sorry_server: sorry.map(|(s, _)| s),
                    filter,
                }
            })
            .collect();
        let counted = dataplane.global_stats().unwrap_or_else(|e| {
            note(e);
            Default::default()
        });
        let verdicts = verdicts(counted, forwarding.forwarded_from(all_traffic));
        let verdicts = verdicts.into_iter().map(|(r, n)| (r.into(), n)).collect();
        let syn_flood_seen = dataplane.syn_flood_seen_ago().unwrap_or_else(|e| {
            note(e);
            None
        });
        let flow_cache = dataplane.flow_cache_state().map_err(&mut note).ok();
        if let Some(e) = failed {
            tracing::warn!(error = %e, "some data-plane counters could not be read; shown as 0");
        }
        Snapshot {
            router_id,
            uptime_seconds: uptime.as_secs(),
            services,
            vrrp,
            vrrp_sockets,
            verdicts,
            global_deny,
            rates_over_seconds: 0.0,
            announcements: Vec::new(),
            drain: Default::default(),
            sync: None,
            bfd: Vec::new(),
            syn_flood_seen_seconds_ago: syn_flood_seen.map(|d| d.as_secs_f64()),
            flow_cache,
        }
    }

    /// The data plane's counters as log lines, so a run ends with what it did.
    pub fn log_counters(&self) {
        for svc in &self.services {
            let c = &svc.counters;
            tracing::info!(
                service = %svc.name,
                packets = c.packets,
                bytes = c.bytes,
                new_flows = c.new_flows,
                rescheduled = c.rescheduled_flows,
                pass_inactive = c.passed_inactive,
                drop_no_backend = c.dropped_no_real_server,
                drop_redirect = c.dropped_redirect,
                unpinned = c.unpinned_flows,
                flow_cache_fills = c.flow_cache_fills,
                drop_filtered = c.dropped_filtered,
                "service counters"
            );
            for r in &svc.filter {
                tracing::info!(service = %svc.name, rule = %r.describe(), packets = r.packets, "source filter counters");
            }
            for b in &svc.real_servers {
                tracing::info!(
                    service = %svc.name,
                    real_server = %b.address,
                    packets = b.packets,
                    bytes = b.bytes,
                    new_flows = b.new_flows,
                    health_transitions = b.health_transitions,
                    "real server counters"
                );
            }
        }
        let nonzero: Vec<String> = self
            .verdicts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        for r in &self.global_deny {
            tracing::info!(rule = %r.describe(), packets = r.packets, "global deny counters");
        }
        tracing::info!(verdicts = %nonzero.join(" "), "data plane verdicts");
    }
}

/// A snapshot as the daemon serves it on the wire (JSON), read back as the shared type:
/// one VRRP instance, two sockets, one service with two real servers.
#[cfg(test)]
pub(crate) fn sample() -> Snapshot {
    // The wire format as the daemon serves it, read back as the shared type.
    let rs = |address: &str, weight, effective_weight, healthy, packets, new_flows| {
        serde_json::json!({
            "address": address, "port": 80, "weight": weight,
            "effective_weight": effective_weight, "healthy": healthy, "reachable": true,
            "health_transitions": 0, "packets": packets, "bytes": packets * 60,
            "new_flows": new_flows
        })
    };
    let json = serde_json::json!({
        "router_id": "lb1",
        "uptime_seconds": 3725,
        "vrrp": [{
            "name": "VI_1", "group": "VG_1", "interface": "eth0", "vrid": 51,
            "state": "MASTER", "priority": 90, "base_priority": 100,
            "master": "192.0.2.1", "master_priority": 90,
            "adverts_received": 3, "adverts_sent": 1200, "became_master": 1,
            "priority_zero_received": 0, "priority_zero_sent": 0,
            "split_brain_adverts": 0, "drops": {"bad_ttl": 2}, "clashes": {}
        }],
        "vrrp_sockets": [
            {"interface": "eth0", "family": "ipv4", "other_vrid": 7, "drops": {"too_short": 1}},
            {"interface": "eth1", "family": "ipv4", "other_vrid": 0, "drops": {}}
        ],
        "services": [{
            "name": "192.0.2.100:80/tcp", "vip": "192.0.2.100", "port": 80,
            "protocol": "tcp", "forwarding": "dr", "scheduler": "wrr",
            "active": true, "quorum_ok": true,
            "counters": {"packets": 274, "bytes": 16440, "new_flows": 40,
                "rescheduled_flows": 0, "passed_inactive": 0,
                "dropped_no_real_server": 0, "dropped_redirect": 0},
            "real_servers": [
                rs("192.0.2.11", 2, 2, true, 144, 21),
                rs("2001:db8::12", 1, 0, false, 130, 19)
            ],
            "sorry_server": null
        }],
        "verdicts": {"tx": 274}
    });
    serde_json::from_value(json).expect("the wire format reads back as a Snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_counters_growth_per_second() {
        let earlier = sample();
        let mut now = sample();
        now.services[0].counters.packets += 500;
        now.services[0].counters.new_flows += 20;
        now.services[0].real_servers[1].bytes += 3000;
        let now = now.with_rates(&earlier, std::time::Duration::from_secs(2));
        assert_eq!(now.rates_over_seconds, 2.0);
        assert_eq!(
            now.services[0].rates,
            Rates {
                connections: 10.0,
                packets: 250.0,
                bytes: 0.0
            }
        );
        assert_eq!(now.services[0].real_servers[1].rates.bytes, 1500.0);
        assert_eq!(now.services[0].real_servers[0].rates, Rates::default());
    }
}
