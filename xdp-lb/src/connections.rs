//! The flow table as `ipvsadm -Lnc` shows IPVS's connections: each client flow with
//! its virtual service and the real server it is pinned to, whether a FIN or RST was
//! seen, and (NAT) how long it has been idle; and per real server the active and
//! inactive (closing) counts, as `ipvsadm -Ln`'s ActiveConn / InActConn. Read on
//! demand (`xdp-lb connections`, SIGUSR1's dump), bounded, since each entry costs two
//! system calls while the daemon's loop waits.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use serde::{Deserialize, Serialize};
use xdp_lb_common::{FLOW_F_CLOSING, FlowKey};

use crate::{
    dataplane::{Dataplane, FlowCapacity, nat::monotonic_ns},
    forwarding::Forwarding,
    services::protocol_of,
};

/// Entries read at most per request.
pub const MAX_LISTED: usize = 100_000;

/// One flow-table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub client: SocketAddr,
    /// The virtual service, `vip:port/proto` or `group NAME/proto`.
    pub service: String,
    /// The VIP and port the client connected to (one of a group's members).
    #[serde(default)]
    pub virtual_address: Option<SocketAddr>,
    /// `None` when the entry names a real server no longer configured.
    pub real_server: Option<SocketAddr>,
    /// A FIN or RST was seen (IPVS's FIN_WAIT/CLOSE states: InActConn).
    pub closing: bool,
    /// NAT entries: seconds since the last packet (DR and TUN entries keep no clock).
    pub idle_seconds: Option<u64>,
}

/// A listing, possibly cut at [`MAX_LISTED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    pub entries: Vec<Connection>,
    /// Every entry of the table is listed (not cut at the limit).
    pub complete: bool,
    /// The flow tables' capacity.
    pub capacity: FlowCapacity,
}

/// The flow table's entries, of `service` only if given (`vip:port/proto`, a group's
/// `group NAME/proto`, or one of its members); the table holds `capacity`.
pub fn list(
    forwarding: &Forwarding<Dataplane>,
    service: Option<&str>,
    capacity: FlowCapacity,
) -> Connections {
    let table = forwarding.table();
    let now = monotonic_ns();
    let mut entries = Vec::new();
    let mut complete = true;
    for entry in forwarding.writer().flows() {
        let Ok((key, value)) = entry else { continue };
        if entries.len() == MAX_LISTED {
            complete = false;
            break;
        }
        let Some(svc) = table
            .services
            .iter()
            .find(|s| s.id == u32::from(value.service))
        else {
            continue;
        };
        let protocol = protocol_of(key.proto);
        let virtual_address = SocketAddr::new(ip_of(key.dst), u16::from_be(key.dport_be));
        let member = format!("{virtual_address}/{protocol}");
        if service.is_some_and(|wanted| wanted != svc.name && wanted != member) {
            continue;
        }
        let real_server = table
            .backends
            .iter()
            .find(|b| b.id.0 == value.backend)
            .map(|b| SocketAddr::new(b.addr, b.port));
        entries.push(Connection {
            protocol: protocol.to_string(),
            client: client(&key),
            service: svc.name.clone(),
            virtual_address: Some(virtual_address),
            real_server,
            closing: value.flags & FLOW_F_CLOSING != 0,
            idle_seconds: (value.last_seen_ns != 0)
                .then(|| now.saturating_sub(value.last_seen_ns) / 1_000_000_000),
        });
    }
    entries.sort_by(|a, b| (&a.service, a.client).cmp(&(&b.service, b.client)));
    Connections {
        entries,
        complete,
        capacity,
    }
}

/// The client side of a flow key.
fn client(key: &FlowKey) -> SocketAddr {
    SocketAddr::new(ip_of(key.src), u16::from_be(key.sport_be))
}

/// A 16-byte map address as the address it stands for (IPv4 is IPv4-mapped).
fn ip_of(addr: [u8; 16]) -> std::net::IpAddr {
    let addr = std::net::Ipv6Addr::from(addr);
    match addr.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(addr),
    }
}

/// As `ipvsadm -Lnc` prints it, then ActiveConn / InActConn per real server.
pub fn render(c: &Connections) -> String {
    let mut out = String::from(
        "pro state   idle  source                  virtual                  destination\n",
    );
    let mut per_server: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for e in &c.entries {
        let server = e
            .real_server
            .map_or("(removed)".to_owned(), |s| s.to_string());
        let _ = writeln!(
            out,
            "{:<3} {:<7} {:>5} {:<23} {:<24} {}",
            e.protocol.to_uppercase(),
            if e.closing { "CLOSING" } else { "ACTIVE" },
            e.idle_seconds.map_or("-".to_owned(), |s| format!("{s}s")),
            e.client.to_string(),
            // The member connected to; the service name for older daemons' listings.
            e.virtual_address
                .map_or(e.service.clone(), |a| format!("{a}/{}", e.protocol)),
            server
        );
        let counts = per_server.entry((e.service.clone(), server)).or_default();
        if e.closing {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
    let _ = writeln!(
        out,
        "\n{} entries{} (flow table capacity {} IPv4, {})",
        c.entries.len(),
        if c.complete { "" } else { ", the first only" },
        c.capacity.max_flows,
        match c.capacity.max_flows_v6 {
            0 => "no IPv6".to_string(),
            n => format!("{n} IPv6"),
        }
    );
    let _ = writeln!(
        out,
        "\nvirtual                  destination              ActiveConn InActConn"
    );
    for ((service, server), (active, inactive)) in per_server {
        let _ = writeln!(out, "{service:<24} {server:<24} {active:>10} {inactive:>9}");
    }
    out
}

impl Dataplane {
    /// The flow table's entries (an entry that vanishes while read is an error item).
    pub fn flows(
        &self,
    ) -> impl Iterator<Item = Result<(FlowKey, xdp_lb_common::FlowValue), aya::maps::MapError>> + '_
    {
        self.flows.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_reads_as_ipvsadm_and_counts_per_real_server() {
        let entry = |port, closing, idle| Connection {
            protocol: "tcp".into(),
            client: SocketAddr::from(([192, 0, 2, 1], port)),
            service: "192.0.2.100:80/tcp".into(),
            virtual_address: None,
            real_server: Some(SocketAddr::from(([192, 0, 2, 11], 80))),
            closing,
            idle_seconds: idle,
        };
        let c = Connections {
            entries: vec![entry(40000, false, None), entry(40001, true, Some(3))],
            complete: true,
            capacity: FlowCapacity {
                max_flows: 262144,
                max_flows_v6: 4096,
            },
        };
        let text = render(&c);
        for line in [
            "TCP ACTIVE      - 192.0.2.1:40000         192.0.2.100:80/tcp       192.0.2.11:80",
            "TCP CLOSING    3s 192.0.2.1:40001         192.0.2.100:80/tcp       192.0.2.11:80",
            "2 entries (flow table capacity 262144 IPv4, 4096 IPv6)",
            "192.0.2.100:80/tcp       192.0.2.11:80                     1         1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
