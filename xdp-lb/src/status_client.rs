//! `xdp-lb status`: reads a running daemon's `/status` and prints it for people, the
//! way `ipvsadm -Ln` and keepalived's logs are read today, but in one place.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, body::Bytes, header};
use hyper_util::rt::TokioIo;

use crate::{advertise::DrainState, failover::Label, status::Snapshot};

/// How long the whole request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The most a status answer may be (a daemon with thousands of real servers answers
/// in well under 10 MiB); a bigger one is not read.
const MAX_BODY: usize = 16 << 20;

/// GETs `/status` from the daemon at `addr`, with its `api_token` if it has one.
pub async fn fetch(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Snapshot> {
    get(addr, token, "/status").await
}

/// GETs `/connections` (of one `service`, `vip:port/proto`, if given).
pub async fn fetch_connections(
    addr: SocketAddr,
    token: Option<&str>,
    service: Option<&str>,
) -> anyhow::Result<crate::connections::Connections> {
    let path = match service {
        Some(s) => format!("/connections?service={}", s.replace('/', "%2F")),
        None => "/connections".to_owned(),
    };
    get(addr, token, &path).await
}

/// GETs `/explain` for `query`.
pub async fn fetch_explanation(
    addr: SocketAddr,
    token: Option<&str>,
    query: &crate::explain::Query,
) -> anyhow::Result<crate::explain::Explanation> {
    get(
        addr,
        token,
        &format!("/explain?{}", query.to_query_string()),
    )
    .await
}

/// POSTs `/drain` (withdraw the announced VIPs) or `/resume`.
pub async fn post_drain(
    addr: SocketAddr,
    token: Option<&str>,
    drain: bool,
) -> anyhow::Result<crate::advertise::DrainStatus> {
    let path = if drain { "/drain" } else { "/resume" };
    request(addr, token, hyper::Method::POST, path).await
}

async fn get<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    token: Option<&str>,
    path: &str,
) -> anyhow::Result<T> {
    request(addr, token, hyper::Method::GET, path).await
}

async fn request<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    token: Option<&str>,
    method: hyper::Method,
    path: &str,
) -> anyhow::Result<T> {
    let get = async {
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| {
            format!("cannot reach the status API at {addr} (is xdp-lb running with `[global] api` set?)")
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the status API")?;
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, addr.to_string());
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::<Bytes>::new())?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the status answer: {e}"))?
            .to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "{method} {path} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
        serde_json::from_slice(&body).with_context(|| {
            format!("{method} {path}: the status API answered something unexpected")
        })
    };
    tokio::time::timeout(TIMEOUT, get).await.map_err(|_| {
        anyhow::anyhow!("the status API at {addr} did not answer within {TIMEOUT:?}")
    })?
}

/// The snapshot as text: VRRP instances, then services with their real servers.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let name = s.router_id.as_deref().unwrap_or("xdp-lb");
    let _ = writeln!(out, "{name}, up {}", uptime(s.uptime_seconds));
    if !s.vrrp.is_empty() {
        let _ = writeln!(out, "\nVRRP");
        for v in &s.vrrp {
            let master = match (v.master, v.master_priority) {
                (Some(addr), Some(p)) => format!("master {addr} ({p})"),
                _ => "no master heard".into(),
            };
            let _ = writeln!(
                out,
                "  {:<12} {:<8} vrid {:<3} {:<6}  priority {}/{}  {master}{}",
                v.name,
                v.interface,
                v.vrid,
                v.state,
                v.priority,
                v.base_priority,
                v.group
                    .as_ref()
                    .map(|g| format!("  group {g}"))
                    .unwrap_or_default(),
            );
            let _ = writeln!(
                out,
                "    adverts in {} out {}, became master {}x, split-brain adverts {}{}{}",
                v.adverts_received,
                v.adverts_sent,
                v.became_master,
                v.split_brain_adverts,
                counts(", drops: ", &v.drops),
                counts(", clashes: ", &v.clashes),
            );
            if let Some(c) = &v.last_vip_conflict {
                let _ = writeln!(
                    out,
                    "    VIP CONFLICT: {} also claimed by {} ({} times while MASTER)",
                    c.vip, c.mac, v.vip_conflicts
                );
            }
            if let Some(t) = &v.last_takeover {
                let _ = writeln!(
                    out,
                    "    last taken over by {} (priority {}){}",
                    t.peer,
                    t.priority,
                    if t.first_heard {
                        ", a node never heard before"
                    } else {
                        ""
                    }
                );
            }
        }
        for v in &s.vrrp_sockets {
            let drops = counts("drops: ", &v.drops);
            if v.other_vrid == 0 && drops.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "  on {} ({}): {} adverts for other VRIDs{}",
                v.interface,
                v.family,
                v.other_vrid,
                if drops.is_empty() {
                    String::new()
                } else {
                    format!(", {drops}")
                },
            );
        }
    }
    if !s.announcements.is_empty() || s.drain.state != DrainState::Serving {
        let _ = writeln!(out, "\nANNOUNCED VIPS (to the routing daemon)");
        for a in &s.announcements {
            let state = if a.announced {
                "announced"
            } else {
                "WITHDRAWN"
            };
            let _ = writeln!(
                out,
                "  {:<26} {state:<9}  for {}{}",
                a.vip.to_string(),
                seconds(a.since_seconds),
                a.why_not
                    .as_ref()
                    .map(|w| format!("  ({w})"))
                    .unwrap_or_default(),
            );
        }
        if let Some(since) = s.drain.since_seconds {
            let _ = writeln!(
                out,
                "  {} since {}, last packet {} after the withdrawal",
                s.drain.state,
                seconds(since),
                seconds(s.drain.last_traffic_after_seconds.unwrap_or(0.0)),
            );
        }
    }
    if let Some(sync) = &s.sync {
        render_sync(&mut out, sync);
    }
    if !s.bfd.is_empty() {
        let _ = writeln!(out, "\nBFD SESSIONS (run by bfdd)");
        for b in &s.bfd {
            let _ = writeln!(
                out,
                "  {:<16} peer {:<26} {:<8} diagnostic {}  peer deaths seen {}",
                b.name,
                b.peer.to_string(),
                b.state,
                b.diagnostics,
                b.peer_down_events
            );
        }
    }
    if !s.global_deny.is_empty() {
        let _ = writeln!(out, "\nSOURCE FILTER (every service)");
        for rule in &s.global_deny {
            let _ = writeln!(out, "  {:<30} packets {}", rule.describe(), rule.packets);
        }
    }
    if let Some(cache) = s.flow_cache {
        let _ = writeln!(
            out,
            "\nflow cache: {} sets of {} flows per CPU, generation {} (a new one every second)",
            cache.sets_per_cpu, cache.ways, cache.generation
        );
    }
    if let Some(ago) = s.syn_flood_seen_seconds_ago {
        let _ = writeln!(
            out,
            "\n{}",
            if s.syn_flood_on() {
                format!(
                    "SYN FLOOD ON (seen {} ago): DR and TUN services pin no SYN; \
                     connections are pinned by their ACK",
                    seconds(ago)
                )
            } else {
                format!(
                    "last SYN flood seen {} ago by the flood guard",
                    seconds(ago)
                )
            }
        );
    }
    if !s.services.is_empty() {
        let _ = writeln!(out, "\nSERVICES");
        for svc in &s.services {
            let c = &svc.counters;
            let _ = writeln!(
                out,
                "  {} {} {}{}  {}{}  packets {} new flows {}{}{}{}{}",
                svc.name,
                svc.forwarding,
                svc.scheduler,
                svc.persistence
                    .as_ref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default(),
                if svc.active {
                    "forwarding"
                } else {
                    "passive (not MASTER)"
                },
                if svc.quorum_ok { "" } else { ", quorum lost" },
                c.packets,
                c.new_flows,
                match c.dropped_no_real_server {
                    0 => String::new(),
                    n => format!(", {n} dropped with no real server"),
                },
                match c.unpinned_flows {
                    0 => String::new(),
                    n => format!(", {n} unpinned by the flood guard"),
                },
                match c.flow_cache_fills {
                    0 => String::new(),
                    n => format!(", flow-cache fills {n}"),
                },
                rates(s, &svc.rates),
            );
            if svc.group.is_some() {
                let _ = writeln!(out, "    members {}", svc.members.join(", "));
            }
            for rule in &svc.filter {
                let _ = writeln!(out, "    {:<28} packets {}", rule.describe(), rule.packets);
            }
            let servers = svc.real_servers.iter().map(|r| (r, false));
            for (rs, sorry) in servers.chain(svc.sorry_server.iter().map(|r| (r, true))) {
                let state = match (rs.healthy, rs.reachable) {
                    (true, true) => "up",
                    (false, _) => "DOWN",
                    (true, false) => "no MAC",
                };
                let addr = std::net::SocketAddr::new(rs.address, rs.port).to_string();
                let _ = writeln!(
                    out,
                    "    -> {addr:<22} {state:<6} weight {}/{}  {}packets {} new flows {}{}{}",
                    rs.effective_weight,
                    rs.weight,
                    rs.connections
                        .map(|c| format!("active {} inactive {}  ", c.active, c.inactive))
                        .unwrap_or_default(),
                    rs.packets,
                    rs.new_flows,
                    rates(s, &rs.rates),
                    if sorry { "  (sorry server)" } else { "" },
                );
            }
        }
    }
    out
}

/// `  conn/s 1.5 pkt/s 250 B/s 16000` once rates have been measured.
fn rates(s: &Snapshot, r: &crate::status::Rates) -> String {
    if s.rates_over_seconds == 0.0 {
        return String::new();
    }
    format!(
        "  conn/s {:.1} pkt/s {:.0} B/s {:.0}",
        r.connections, r.packets, r.bytes
    )
}

/// `name=n,name=n` after `label`, or nothing when the map is empty.
fn counts(label: &str, map: &std::collections::BTreeMap<Label, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let items: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{label}{}", items.join(","))
}

/// `0.8s`, `12s`, `4m05s`.
fn seconds(secs: f64) -> String {
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else {
        uptime(secs as u64)
    }
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The `[sync]` section of `xdp-lb status`.
fn render_sync(out: &mut String, sync: &crate::sync::SyncStatus) {
    let _ = writeln!(
        out,
        "\nNAT SYNC (instance {}, udp port {}): {}",
        sync.instance, sync.port, sync.role
    );
    if sync.messages_sent > 0 || sync.role == "sending" {
        let _ = writeln!(
            out,
            "  sent {} entries in {} messages, last {}{}{}",
            sync.entries_sent,
            sync.messages_sent,
            sync.last_sent_seconds_ago
                .map(|s| format!("{} ago", seconds(s)))
                .unwrap_or_else(|| "never".into()),
            if sync.entries_deferred > 0 {
                format!(", {} deferred by the rate", sync.entries_deferred)
            } else {
                String::new()
            },
            if sync.send_errors > 0 {
                format!(", {} send errors", sync.send_errors)
            } else {
                String::new()
            },
        );
    }
    for (peer, p) in &sync.peers {
        let list = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut why = Vec::new();
        if !p.messages_refused.is_empty() {
            why.push(format!("messages: {}", list(&p.messages_refused)));
        }
        if !p.entries_refused.is_empty() {
            why.push(format!("entries: {}", list(&p.entries_refused)));
        }
        let _ = writeln!(
            out,
            "  from {:<15} last {}  received {} entries in {} messages, installed {}, refused {}{}",
            peer,
            p.last_message_seconds_ago
                .map(|s| format!("{} ago", seconds(s)))
                .unwrap_or_else(|| "never".into()),
            p.entries_received,
            p.messages_received,
            p.entries_installed,
            p.refused(),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_filter_rules_read_with_their_counts() {
        use crate::{filter::Action, status::RuleStatus};
        let mut s = crate::status::sample();
        let rule = |action, prefix: Option<&str>, packets| RuleStatus {
            action,
            prefix: prefix.map(str::to_owned),
            packets,
        };
        s.global_deny = vec![rule(Action::Deny, Some("203.0.113.0/24"), 9)];
        s.services[0].filter = vec![
            rule(Action::Allow, Some("198.51.100.0/24"), 270),
            rule(Action::Deny, None, 4),
        ];
        let text = render(&s);
        for line in [
            "SOURCE FILTER (every service)",
            "  deny 203.0.113.0/24            packets 9",
            "    allow 198.51.100.0/24        packets 270",
            "    deny (no allow matched)      packets 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn bfd_sessions_read_as_text() {
        let mut s = crate::status::sample();
        assert!(!render(&s).contains("BFD"), "no session, no section");
        s.bfd = vec![crate::bfd::SessionStatus {
            name: "to_lb2".into(),
            peer: "192.0.2.2".parse().unwrap(),
            state: "down".into(),
            diagnostics: 1,
            since: Some(1),
            peer_down_events: 3,
        }];
        let text = render(&s);
        for line in [
            "BFD SESSIONS (run by bfdd)",
            "  to_lb2           peer 192.0.2.2                  down     diagnostic 1  peer deaths seen 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn the_nat_sync_reads_as_text() {
        use crate::sync::{PeerStatus, SyncStatus};
        let mut s = crate::status::sample();
        assert!(!render(&s).contains("NAT SYNC"), "no [sync], no section");
        s.sync = Some(SyncStatus {
            instance: "VI_1".into(),
            role: "receiving".into(),
            port: 8848,
            messages_sent: 4,
            entries_sent: 100,
            entries_deferred: 0,
            send_errors: 0,
            last_sent_seconds_ago: Some(30.0),
            peers: [(
                "192.0.2.2".to_owned(),
                PeerStatus {
                    last_message_seconds_ago: Some(0.4),
                    messages_received: 12,
                    entries_received: 51,
                    entries_installed: 49,
                    messages_refused: [("bad_auth".to_owned(), 3)].into(),
                    entries_refused: [("inconsistent".to_owned(), 2)].into(),
                },
            )]
            .into(),
        });
        let text = render(&s);
        for line in [
            "NAT SYNC (instance VI_1, udp port 8848): receiving",
            "  sent 100 entries in 4 messages, last 30s ago",
            "  from 192.0.2.2       last 0.4s ago  received 51 entries in 12 messages, installed 49, refused 5 (messages: bad_auth 3; entries: inconsistent 2)",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn announced_vips_and_a_drain_read_as_text() {
        use crate::advertise::{AnnouncementStatus, DrainStatus};
        let mut s = crate::status::sample();
        assert!(
            !render(&s).contains("ANNOUNCED"),
            "no announced VIP, no section"
        );
        s.announcements = vec![
            AnnouncementStatus {
                vip: "203.0.113.10".parse().unwrap(),
                announced: true,
                why_not: None,
                since_seconds: 75.0,
                changes: 1,
            },
            AnnouncementStatus {
                vip: "2001:db8::10".parse().unwrap(),
                announced: false,
                why_not: Some("draining".into()),
                since_seconds: 1.25,
                changes: 2,
            },
        ];
        s.drain = DrainStatus {
            state: DrainState::Drained,
            since_seconds: Some(3.5),
            last_traffic_after_seconds: Some(1.5),
        };
        let text = render(&s);
        for line in [
            "ANNOUNCED VIPS (to the routing daemon)",
            "  203.0.113.10               announced  for 1m15s",
            "  2001:db8::10               WITHDRAWN  for 1.2s  (draining)",
            "  drained since 3.5s, last packet 1.5s after the withdrawal",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn a_snapshot_reads_as_text() {
        let s = crate::status::sample();
        let text = render(&s);
        for line in [
            "lb1, up 1h02m",
            "  VI_1         eth0     vrid 51  MASTER  priority 90/100  master 192.0.2.1 (90)  group VG_1",
            "    adverts in 3 out 1200, became master 1x, split-brain adverts 0, drops: bad_ttl=2",
            "  on eth0 (ipv4): 7 adverts for other VRIDs, drops: too_short=1",
            "  192.0.2.100:80/tcp dr wrr  forwarding  packets 274 new flows 40",
            "    -> 192.0.2.11:80          up     weight 2/2  packets 144 new flows 21",
            "    -> [2001:db8::12]:80      DOWN   weight 0/1  packets 130 new flows 19",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("on eth1"),
            "a quiet socket is not shown:\n{text}"
        );
        assert!(
            !text.contains("SOURCE FILTER"),
            "no rules, no section:\n{text}"
        );
        // The flood guard's forwards without a flow entry, once there are some.
        let mut flooded = crate::status::sample();
        flooded.services[0].counters.unpinned_flows = 7;
        let text = render(&flooded);
        assert!(
            text.lines().any(|l| l
                == "  192.0.2.100:80/tcp dr wrr  forwarding  packets 274 new flows 40, 7 unpinned by the flood guard"),
            "{text}"
        );
        assert!(
            !text.contains("SYN FLOOD"),
            "none seen, none shown:\n{text}"
        );
        // The flow cache's fills, once there are some.
        let mut filled = crate::status::sample();
        filled.services[0].counters.flow_cache_fills = 12;
        let text = render(&filled);
        assert!(
            text.lines().any(|l| l
                == "  192.0.2.100:80/tcp dr wrr  forwarding  packets 274 new flows 40, flow-cache fills 12"),
            "{text}"
        );
        // A SYN flood the guard holds on, and one that is over.
        flooded.syn_flood_seen_seconds_ago = Some(0.25);
        let text = render(&flooded);
        assert!(
            text.contains(
                "\nSYN FLOOD ON (seen 0.2s ago): DR and TUN services pin no SYN; \
                 connections are pinned by their ACK\n\nSERVICES\n"
            ),
            "{text}"
        );
        flooded.syn_flood_seen_seconds_ago = Some(90.0);
        let text = render(&flooded);
        assert!(
            text.contains("\nlast SYN flood seen 1m30s ago by the flood guard\n"),
            "{text}"
        );
        // With rates measured, each service and real server line ends with them.
        let mut later = crate::status::sample();
        later.services[0].counters.packets += 500;
        later.services[0].counters.new_flows += 20;
        let text = render(&later.with_rates(&s, std::time::Duration::from_secs(2)));
        assert!(
            text.lines().any(|l| l
                == "  192.0.2.100:80/tcp dr wrr  forwarding  packets 774 new flows 60  conn/s 10.0 pkt/s 250 B/s 0"),
            "{text}"
        );
    }
}
