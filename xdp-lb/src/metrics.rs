//! `/metrics`: a [`Snapshot`] written by `prometheus-client` (names get the `xdp_lb_`
//! prefix, counters the `_total` suffix) in OpenMetrics, which Prometheus asks for,
//! or, for every other client (`curl`, `promtool check metrics`), in the classic text
//! format 0.0.4. Every label value a counter can take is emitted, zeros included, so
//! rates start at the first scrape.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use xdp_lb_vrrp::{Clash, DropReason};

use crate::status::Snapshot;

/// The content type of the classic text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `snapshot` in OpenMetrics.
pub fn render_openmetrics(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("xdp_lb");
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// Renders `snapshot` in the classic text format (0.0.4).
pub fn render(snapshot: Snapshot) -> String {
    to_classic_text(&render_openmetrics(snapshot))
}

/// OpenMetrics as the classic format: a counter family's `# HELP`/`# TYPE` lines name
/// its samples (`x_total`, where OpenMetrics writes `x`), and there is no `# EOF`.
fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match header {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out += &format!("{prefix}{name}{suffix} {tail}");
            }
            None => out += line,
        }
        out.push('\n');
    }
    out
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

type Labels = Vec<(&'static str, String)>;

/// One metric family: its name, help, and a value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut series = series.into_iter().peekable();
    let Some((_, first)) = series.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        family(
            &mut e,
            "build_info",
            "Always 1; the labels say which xdp-lb this is",
            [(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("commit", env!("XDP_LB_COMMIT").to_string()),
                ],
                gauge(1),
            )],
        )?;
        family(
            &mut e,
            "uptime_seconds",
            "Seconds since the daemon started",
            [(Vec::new(), gauge(s.uptime_seconds as i64))],
        )?;
        family(
            &mut e,
            "syn_flood",
            "1 while the flood guard holds a SYN flood on (new_flow_rate)",
            [(Vec::new(), gauge(i64::from(s.syn_flood_on())))],
        )?;
        family(
            &mut e,
            "verdicts",
            "Packets seen by the XDP program, by verdict reason",
            s.verdicts
                .iter()
                .map(|(r, n)| (vec![("reason", r.to_string())], counter(*n))),
        )?;

        let svc = |x: &crate::status::ServiceStatus| vec![("service", x.name.clone())];
        type Pick = fn(&crate::status::ServiceCounters) -> u64;
        let service_counters: [(&str, &str, Pick); 10] = [
            (
                "service_packets",
                "Packets forwarded for the service",
                |c| c.packets,
            ),
            ("service_bytes", "Bytes forwarded for the service", |c| {
                c.bytes
            }),
            (
                "service_new_flows",
                "Flows scheduled onto a real server (one the flood guard left unpinned counts as unpinned instead)",
                |c| c.new_flows,
            ),
            (
                "service_rescheduled_flows",
                "Flows moved off a real server that became unusable",
                |c| c.rescheduled_flows,
            ),
            (
                "service_passed_inactive",
                "Packets given to the kernel because this node is not VRRP MASTER for the VIP",
                |c| c.passed_inactive,
            ),
            (
                "service_dropped_no_real_server",
                "Packets dropped because no real server was usable",
                |c| c.dropped_no_real_server,
            ),
            (
                "service_dropped_redirect",
                "Packets dropped because the redirect to the egress interface failed",
                |c| c.dropped_redirect,
            ),
            (
                "service_unpinned_flows",
                "Packets without a flow entry that the flood guard forwarded unpinned (not counted as new flows)",
                |c| c.unpinned_flows,
            ),
            (
                "service_flow_cache_fills",
                "Established packets the flow cache did not answer: they took the flow table's way and cached their pin (about one a second per flow when the cache holds them all)",
                |c| c.flow_cache_fills,
            ),
            (
                "service_dropped_filtered",
                "Packets the service's own source-filter rules dropped",
                |c| c.dropped_filtered,
            ),
        ];
        for (name, help, pick) in service_counters {
            family(
                &mut e,
                name,
                help,
                s.services
                    .iter()
                    .map(|x| (svc(x), counter(pick(&x.counters)))),
            )?;
        }
        // One series per source-filter rule: which rule allows or drops what.
        let rule_labels = |scope: &str, r: &crate::status::RuleStatus| -> Labels {
            vec![
                ("scope", scope.to_owned()),
                ("action", r.action.to_string()),
                (
                    "prefix",
                    r.prefix.clone().unwrap_or_else(|| "default".into()),
                ),
            ]
        };
        family(
            &mut e,
            "filter_rule_packets",
            "Packets a source-filter rule decided (allowed, or dropped); scope is \"global\" \
             ([filter] deny) or the service, prefix \"default\" a service's default deny",
            s.global_deny
                .iter()
                .map(|r| (rule_labels("global", r), counter(r.packets)))
                .chain(s.services.iter().flat_map(|x| {
                    x.filter
                        .iter()
                        .map(|r| (rule_labels(&x.name, r), counter(r.packets)))
                })),
        )?;
        family(
            &mut e,
            "service_active",
            "1 while XDP forwards the service (VRRP MASTER for its VIP, or no instance holds it)",
            s.services.iter().map(|x| (svc(x), gauge(x.active.into()))),
        )?;
        family(
            &mut e,
            "service_quorum_ok",
            "1 while the service's healthy weight meets its quorum",
            s.services
                .iter()
                .map(|x| (svc(x), gauge(x.quorum_ok.into()))),
        )?;

        let servers: Vec<(Labels, &crate::status::RealServerStatus)> = s
            .services
            .iter()
            .flat_map(|x| {
                x.real_servers
                    .iter()
                    .map(|r| (false, r))
                    .chain(x.sorry_server.iter().map(|r| (true, r)))
                    .map(move |(sorry, r)| {
                        let mut l = svc(x);
                        l.push((
                            "real_server",
                            std::net::SocketAddr::new(r.address, r.port).to_string(),
                        ));
                        l.push(("sorry", sorry.to_string()));
                        (l, r)
                    })
            })
            .collect();
        type PickRs = fn(&crate::status::RealServerStatus) -> u64;
        let server_counters: [(&str, &str, PickRs); 4] = [
            (
                "real_server_packets",
                "Packets forwarded to the real server",
                |r| r.packets,
            ),
            (
                "real_server_bytes",
                "Bytes forwarded to the real server",
                |r| r.bytes,
            ),
            (
                "real_server_new_flows",
                "Flows scheduled onto the real server",
                |r| r.new_flows,
            ),
            (
                "real_server_health_transitions",
                "Times the real server went up or down",
                |r| r.health_transitions,
            ),
        ];
        for (name, help, pick) in server_counters {
            family(
                &mut e,
                name,
                help,
                servers.iter().map(|(l, r)| (l.clone(), counter(pick(r)))),
            )?;
        }
        family(
            &mut e,
            "real_server_healthy",
            "1 while the real server passes its health check",
            servers
                .iter()
                .map(|(l, r)| (l.clone(), gauge(r.healthy.into()))),
        )?;
        let counted: Vec<_> = servers
            .iter()
            .filter_map(|(l, r)| r.connections.map(|c| (l.clone(), c)))
            .collect();
        family(
            &mut e,
            "real_server_active_connections",
            "Established connections on the real server, as lc and wlc count them",
            counted
                .iter()
                .map(|(l, c)| (l.clone(), gauge(c.active as i64))),
        )?;
        family(
            &mut e,
            "real_server_inactive_connections",
            "Connections on the real server that saw a FIN or RST and wait for their timeout",
            counted
                .iter()
                .map(|(l, c)| (l.clone(), gauge(c.inactive as i64))),
        )?;
        family(
            &mut e,
            "real_server_weight",
            "The weight new flows give the real server now (0 while down)",
            servers
                .iter()
                .map(|(l, r)| (l.clone(), gauge(r.effective_weight.into()))),
        )?;

        let vi = |v: &crate::failover::InstanceStatus| vec![("instance", v.name.clone())];
        family(
            &mut e,
            "vrrp_state",
            "1 for the VRRP instance's current state",
            s.vrrp.iter().flat_map(|v| {
                ["MASTER", "BACKUP", "FAULT", "STOP"]
                    .into_iter()
                    .map(move |st| {
                        let mut l = vi(v);
                        l.push(("state", st.to_string()));
                        (l, gauge((v.state == st).into()))
                    })
            }),
        )?;
        family(
            &mut e,
            "vrrp_priority",
            "The VRRP instance's effective priority",
            s.vrrp.iter().map(|v| (vi(v), gauge(v.priority.into()))),
        )?;
        type PickVi = fn(&crate::failover::InstanceStatus) -> u64;
        let vrrp_counters: [(&str, &str, PickVi); 7] = [
            (
                "vrrp_adverts_received",
                "Valid adverts received for the instance's VRID",
                |v| v.adverts_received,
            ),
            ("vrrp_adverts_sent", "Adverts sent", |v| v.adverts_sent),
            (
                "vrrp_priority_zero_received",
                "Priority-0 adverts received (the MASTER stepping down)",
                |v| v.priority_zero_received,
            ),
            (
                "vrrp_priority_zero_sent",
                "Priority-0 adverts sent (stepping down as MASTER)",
                |v| v.priority_zero_sent,
            ),
            ("vrrp_became_master", "Transitions to MASTER", |v| {
                v.became_master
            }),
            (
                "vrrp_split_brain_adverts",
                "Adverts from another MASTER while this one is MASTER",
                |v| v.split_brain_adverts,
            ),
            (
                "vrrp_vip_conflicts",
                "ARP from another MAC for a VIP this node holds as MASTER",
                |v| v.vip_conflicts,
            ),
        ];
        for (name, help, pick) in vrrp_counters {
            family(
                &mut e,
                name,
                help,
                s.vrrp.iter().map(|v| (vi(v), counter(pick(v)))),
            )?;
        }
        family(
            &mut e,
            "vrrp_dropped",
            "VRRP packets dropped, by reason",
            s.vrrp.iter().flat_map(|v| {
                DropReason::ALL.iter().map(move |r| {
                    let mut l = vi(v);
                    l.push(("reason", r.name().to_string()));
                    (l, counter(v.drops.get(r.name()).copied().unwrap_or(0)))
                })
            }),
        )?;
        family(
            &mut e,
            "vrrp_clashes",
            "Adverts for the instance's VRID from a peer configured differently, by what differs",
            s.vrrp.iter().flat_map(|v| {
                Clash::ALL.iter().map(move |c| {
                    let mut l = vi(v);
                    l.push(("what", c.name().to_string()));
                    (l, counter(v.clashes.get(c.name()).copied().unwrap_or(0)))
                })
            }),
        )?;
        let socket = |v: &crate::failover::SocketStatus| {
            vec![
                ("interface", v.interface.clone()),
                ("family", v.family.to_string()),
            ]
        };
        family(
            &mut e,
            "vrrp_socket_dropped",
            "VRRP packets too broken to name a VRID, by interface and reason",
            s.vrrp_sockets.iter().flat_map(|v| {
                DropReason::ALL.iter().map(move |r| {
                    let mut l = socket(v);
                    l.push(("reason", r.name().to_string()));
                    (l, counter(v.drops.get(r.name()).copied().unwrap_or(0)))
                })
            }),
        )?;
        family(
            &mut e,
            "vrrp_other_vrid_adverts",
            "Adverts for VRIDs none of this node's instances on the interface uses",
            s.vrrp_sockets
                .iter()
                .map(|v| (socket(v), counter(v.other_vrid))),
        )?;
        let vip = |a: &crate::advertise::AnnouncementStatus| vec![("vip", a.vip.to_string())];
        family(
            &mut e,
            "vip_announced",
            "1 while the VIP is announced to the routing daemon (announce = true)",
            s.announcements
                .iter()
                .map(|a| (vip(a), gauge(a.announced.into()))),
        )?;
        family(
            &mut e,
            "vip_announcement_changes",
            "Announcements and withdrawals of the VIP",
            s.announcements.iter().map(|a| (vip(a), counter(a.changes))),
        )?;
        if let Some(sync) = &s.sync {
            encode_sync(&mut e, sync)?;
        }
        let session = |b: &crate::bfd::SessionStatus| {
            vec![("session", b.name.clone()), ("peer", b.peer.to_string())]
        };
        family(
            &mut e,
            "bfd_session_up",
            "1 while bfdd reports the [bfd.NAME] session up",
            s.bfd
                .iter()
                .map(|b| (session(b), gauge((b.state == "up").into()))),
        )?;
        family(
            &mut e,
            "bfd_peer_down",
            "Times the session's peer stopped answering within the detection time",
            s.bfd
                .iter()
                .map(|b| (session(b), counter(b.peer_down_events))),
        )?;
        use crate::advertise::DrainState;
        family(
            &mut e,
            "drain_state",
            "1 for the node's drain state (xdp-lb drain)",
            [
                DrainState::Serving,
                DrainState::Draining,
                DrainState::Drained,
                DrainState::Stopping,
            ]
            .into_iter()
            .map(|st| {
                (
                    vec![("state", st.to_string())],
                    gauge((s.drain.state == st).into()),
                )
            }),
        )?;
        Ok(())
    }
}

/// `xdp_lb_sync_*`: the NAT sync's counters, by peer (and reason).
fn encode_sync(
    e: &mut DescriptorEncoder,
    sync: &crate::sync::SyncStatus,
) -> Result<(), std::fmt::Error> {
    let role = vec![
        ("instance", sync.instance.clone()),
        ("role", sync.role.clone()),
    ];
    family(
        e,
        "sync_info",
        "Always 1; the NAT sync's instance and this node's role",
        [(role, gauge(1))],
    )?;
    family(
        e,
        "sync_messages_sent",
        "NAT sync messages sent (to each peer)",
        [(vec![], counter(sync.messages_sent))],
    )?;
    family(
        e,
        "sync_entries_sent",
        "NAT connections sent to the peers",
        [(vec![], counter(sync.entries_sent))],
    )?;
    family(
        e,
        "sync_entries_deferred",
        "Due NAT connections left for a later round by the rate",
        [(vec![], counter(sync.entries_deferred))],
    )?;
    family(
        e,
        "sync_send_errors",
        "NAT sync datagrams that could not be sent",
        [(vec![], counter(sync.send_errors))],
    )?;
    let peer = |p: &String| vec![("peer", p.clone())];
    family(
        e,
        "sync_messages_received",
        "Authentic NAT sync messages received, by peer",
        sync.peers
            .iter()
            .map(|(p, s)| (peer(p), counter(s.messages_received))),
    )?;
    family(
        e,
        "sync_entries_received",
        "NAT connections received, by peer",
        sync.peers
            .iter()
            .map(|(p, s)| (peer(p), counter(s.entries_received))),
    )?;
    family(
        e,
        "sync_entries_installed",
        "NAT connections installed, by peer",
        sync.peers
            .iter()
            .map(|(p, s)| (peer(p), counter(s.entries_installed))),
    )?;
    let by_reason =
        |m: fn(&crate::sync::PeerStatus) -> &std::collections::BTreeMap<String, u64>| {
            sync.peers.iter().flat_map(move |(p, s)| {
                m(s).iter().map(move |(r, n)| {
                    (
                        vec![("peer", p.clone()), ("reason", r.clone())],
                        counter(*n),
                    )
                })
            })
        };
    family(
        e,
        "sync_messages_refused",
        "NAT sync messages refused whole, by peer and reason",
        by_reason(|s| &s.messages_refused),
    )?;
    family(
        e,
        "sync_entries_refused",
        "NAT connections refused alone, by peer and reason",
        by_reason(|s| &s.entries_refused),
    )?;
    family(
        e,
        "sync_last_message_age_seconds",
        "Seconds since the last authentic message, by peer",
        sync.peers.iter().filter_map(|(p, s)| {
            s.last_message_seconds_ago
                .map(|a| (peer(p), ConstGauge::new(a)))
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfd_sessions_are_series() {
        let mut s = crate::status::sample();
        s.bfd = vec![crate::bfd::SessionStatus {
            name: "to_b".into(),
            peer: "192.0.2.2".parse().unwrap(),
            state: "up".into(),
            diagnostics: 0,
            since: None,
            peer_down_events: 2,
        }];
        let text = render(s);
        for line in [
            "xdp_lb_bfd_session_up{session=\"to_b\",peer=\"192.0.2.2\"} 1",
            "xdp_lb_bfd_peer_down_total{session=\"to_b\",peer=\"192.0.2.2\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn the_nat_sync_is_series() {
        let mut s = crate::status::sample();
        s.sync = Some(crate::sync::SyncStatus {
            instance: "VI_1".into(),
            role: "receiving".into(),
            port: 8848,
            peers: [(
                "192.0.2.2".to_owned(),
                crate::sync::PeerStatus {
                    last_message_seconds_ago: Some(0.5),
                    messages_received: 2,
                    entries_received: 51,
                    entries_installed: 50,
                    messages_refused: [("replayed".to_owned(), 1)].into(),
                    entries_refused: [("expired".to_owned(), 1)].into(),
                },
            )]
            .into(),
            ..Default::default()
        });
        let text = render(s);
        for line in [
            "xdp_lb_sync_info{instance=\"VI_1\",role=\"receiving\"} 1",
            "xdp_lb_sync_entries_installed_total{peer=\"192.0.2.2\"} 50",
            "xdp_lb_sync_messages_refused_total{peer=\"192.0.2.2\",reason=\"replayed\"} 1",
            "xdp_lb_sync_entries_refused_total{peer=\"192.0.2.2\",reason=\"expired\"} 1",
            "xdp_lb_sync_last_message_age_seconds{peer=\"192.0.2.2\"} 0.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn announced_vips_and_the_drain_are_series() {
        let mut s = crate::status::sample();
        s.announcements = vec![crate::advertise::AnnouncementStatus {
            vip: "203.0.113.10".parse().unwrap(),
            announced: true,
            why_not: None,
            since_seconds: 3.0,
            changes: 3,
        }];
        let text = render(s);
        for line in [
            "xdp_lb_vip_announced{vip=\"203.0.113.10\"} 1",
            "xdp_lb_vip_announcement_changes_total{vip=\"203.0.113.10\"} 3",
            "xdp_lb_drain_state{state=\"serving\"} 1",
            "xdp_lb_drain_state{state=\"drained\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn each_source_filter_rule_is_a_series() {
        use crate::{filter::Action, status::RuleStatus};
        let mut s = crate::status::sample();
        s.global_deny = vec![RuleStatus {
            action: Action::Deny,
            prefix: Some("203.0.113.0/24".into()),
            packets: 9,
        }];
        s.services[0].filter = vec![RuleStatus {
            action: Action::Deny,
            prefix: None,
            packets: 4,
        }];
        s.services[0].counters.dropped_filtered = 4;
        let text = render(s);
        for sample in [
            "xdp_lb_filter_rule_packets_total{scope=\"global\",action=\"deny\",prefix=\"203.0.113.0/24\"} 9",
            "xdp_lb_filter_rule_packets_total{scope=\"192.0.2.100:80/tcp\",action=\"deny\",prefix=\"default\"} 4",
            "xdp_lb_service_dropped_filtered_total{service=\"192.0.2.100:80/tcp\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == sample),
                "no {sample:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn the_classic_format_names_counter_families_as_their_samples() {
        let text = render(crate::status::sample());
        assert!(!text.contains("# EOF"), "{text}");
        let mut families = 0;
        for line in text.lines() {
            if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|l| l.strip_suffix(" counter"))
            {
                families += 1;
                assert!(name.ends_with("_total"), "{line}");
                let help = format!("# HELP {name} ");
                assert!(text.lines().any(|l| l.starts_with(&help)), "no {help:?}");
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "no samples named {name}"
                );
            }
        }
        assert!(families > 10, "{text}");
        assert!(
            text.contains("xdp_lb_verdicts_total{reason=\"tx\"} 274"),
            "{text}"
        );
        assert!(text.contains("# TYPE xdp_lb_build_info gauge"));
        assert!(
            text.contains(&format!(
                "xdp_lb_build_info{{version=\"{}\",commit=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                env!("XDP_LB_COMMIT")
            )),
            "{text}"
        );
        assert!(
            text.contains("xdp_lb_vrrp_priority_zero_received_total{instance=\"VI_1\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn the_syn_flood_gauge_is_1_only_while_the_guard_holds_a_flood() {
        let mut s = crate::status::sample();
        let gauge = |s: &crate::status::Snapshot| {
            let text = render(s.clone());
            text.lines()
                .find_map(|l| l.strip_prefix("xdp_lb_syn_flood{} "))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no xdp_lb_syn_flood in:\n{text}"))
        };
        assert_eq!(gauge(&s), "0", "never seen");
        s.syn_flood_seen_seconds_ago = Some(0.5);
        assert_eq!(gauge(&s), "1");
        s.syn_flood_seen_seconds_ago = Some(1.5);
        assert_eq!(gauge(&s), "0", "over a second ago");
    }

    #[test]
    fn openmetrics_keeps_its_own_form() {
        let text = render_openmetrics(crate::status::sample());
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE xdp_lb_verdicts counter"), "{text}");
    }
}
