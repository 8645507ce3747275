//! keepalived's dumps: on SIGUSR1 a data dump (what the node is and holds: VRRP
//! instances, services, real servers and their health, the flow table), on SIGUSR2 a
//! stats dump (every counter, in the metrics' text format), each written to a file in
//! `[global] dump_dir` (keepalived writes `/tmp/keepalived.data` and
//! `/tmp/keepalived.stats`; these are `xdp-lb.data` and `xdp-lb.stats`). A file is
//! written aside and renamed, so a reader never sees half of one.

use std::{fmt::Write as _, net::IpAddr, path::PathBuf};

use xdp_lb_common::{FLOW_F_CLOSING, FlowKey, IPPROTO_UDP};

use crate::{
    dataplane::{Dataplane, nat::monotonic_ns},
    forwarding::Forwarding,
    status::Snapshot,
};

/// Flow entries listed in a data dump at most (the table holds up to millions).
pub const MAX_FLOWS_LISTED: usize = 10_000;

/// Which dump a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    /// SIGUSR1.
    Data,
    /// SIGUSR2.
    Stats,
}

impl Dump {
    pub fn file_name(self) -> &'static str {
        match self {
            Dump::Data => "xdp-lb.data",
            Dump::Stats => "xdp-lb.stats",
        }
    }

    /// Writes the dump into `dir`; returns its path.
    pub fn write(
        self,
        dir: &std::path::Path,
        snapshot: Snapshot,
        forwarding: &Forwarding<Dataplane>,
    ) -> std::io::Result<PathBuf> {
        let text = match self {
            Dump::Data => data(&snapshot, forwarding),
            Dump::Stats => crate::metrics::render(snapshot),
        };
        let path = dir.join(self.file_name());
        let aside = dir.join(format!(".{}.new", self.file_name()));
        std::fs::write(&aside, text)?;
        std::fs::rename(&aside, &path)?;
        Ok(path)
    }
}

/// The data dump's text.
fn data(snapshot: &Snapshot, forwarding: &Forwarding<Dataplane>) -> String {
    let mut out = format!(
        "xdp-lb {} ({}) data dump\n\n",
        env!("CARGO_PKG_VERSION"),
        env!("XDP_LB_COMMIT")
    );
    out += &crate::status_client::render(snapshot);
    let table = forwarding.table();
    let now = monotonic_ns();
    let mut listed = 0;
    let mut more = false;
    let mut flows = String::new();
    // Bounded: each entry costs two syscalls, and the daemon's loop waits meanwhile.
    for entry in forwarding.writer().flows() {
        let Ok((key, value)) = entry else { continue };
        if listed == MAX_FLOWS_LISTED {
            more = true;
            break;
        }
        listed += 1;
        let service = table.services.iter().find(|s| s.id == value.service);
        let server = table.backends.iter().find(|b| b.id.0 == value.backend);
        let idle = if value.last_seen_ns == 0 {
            String::new()
        } else {
            format!(
                "  idle {}s",
                now.saturating_sub(value.last_seen_ns) / 1_000_000_000
            )
        };
        let _ = writeln!(
            flows,
            "  {} {} -> {} -> {}{}{}",
            if key.proto == IPPROTO_UDP {
                "udp"
            } else {
                "tcp"
            },
            endpoint(&key),
            service.map_or("?".into(), |s| s.name.clone()),
            server.map_or("?".into(), |b| std::net::SocketAddr::new(b.addr, b.port)
                .to_string()),
            if value.flags & FLOW_F_CLOSING != 0 {
                "  closing"
            } else {
                ""
            },
            idle,
        );
    }
    let _ = writeln!(
        out,
        "\nFLOWS ({listed}{} entries; client -> service -> real server)",
        if more { ", the first" } else { "" }
    );
    out += &flows;
    out
}

/// The client side of a flow key as `addr:port`.
fn endpoint(key: &FlowKey) -> String {
    let (addr, port) = (key.src, key.sport_be);
    let ip = match std::net::Ipv6Addr::from(addr).to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(addr.into()),
    };
    std::net::SocketAddr::new(ip, u16::from_be(port)).to_string()
}

impl Dataplane {
    /// The flow table's entries (an entry that vanishes while read is an error item).
    pub(crate) fn flows(
        &self,
    ) -> impl Iterator<Item = Result<(FlowKey, xdp_lb_common::FlowValue), aya::maps::MapError>> + '_
    {
        self.flows.iter()
    }
}
