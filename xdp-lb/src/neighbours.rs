//! Where real servers' packets leave (routes) and which MAC they go to (managed
//! neighbour entries the kernel keeps fresh).
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tracing::{info, warn};

use crate::{
    config::Forwarding,
    dataplane::Dataplane,
    netlink::{Link, Netlink},
    services::{Egress, ServiceTable},
};

/// How often the neighbour table is re-read once running.
pub(crate) const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
/// Poll step while waiting for MACs at start.
const NEIGHBOUR_POLL: Duration = Duration::from_millis(50);

/// Finds each real server's egress interface and next hop. Every real server must be
/// reached through one of the XDP interfaces; DR and NAT need it on-link, TUN may
/// reach it through a gateway (whose MAC the frames then go to).
pub(crate) async fn route_backends(
    netlink: &Netlink,
    links: &BTreeMap<u32, Link>,
    table: &mut ServiceTable,
) -> anyhow::Result<()> {
    let names: Vec<&str> = links.values().map(|l| l.name.as_str()).collect();
    for b in &mut table.backends {
        let forwarding = table.services[b.service].forwarding;
        let route = netlink.route_to(b.addr).await?;
        let Some(link) = links.get(&route.oif) else {
            bail!(
                "real server {}: the route to it leaves by ifindex {}, not by an XDP interface ({}); \
                 add the interface it leaves by to `dataplane.interfaces`",
                b.addr,
                route.oif,
                names.join(", ")
            );
        };
        let next_hop = match route.gateway {
            Some(gw) if forwarding != Forwarding::Tun => bail!(
                "real server {} is behind gateway {gw} on `{}`; {forwarding} forwarding needs it \
                 on the same L2 segment (use \"tun\" for real servers behind a router)",
                b.addr,
                link.name
            ),
            Some(gw) => gw,
            None => b.addr,
        };
        if forwarding == Forwarding::Tun && route.prefsrc.is_none() {
            bail!(
                "real server {}: the kernel has no source address towards it on `{}`; TUN needs \
                 one for the outer header",
                b.addr,
                link.name
            );
        }
        b.egress = Some(Egress {
            ifindex: link.index,
            mac: link.mac,
            mtu: u16::try_from(link.mtu).unwrap_or(u16::MAX),
            next_hop,
            source: route.prefsrc,
        });
    }
    Ok(())
}

/// (ifindex, next hop) of every backend, routed before.
fn next_hops(table: &ServiceTable) -> Vec<(u32, std::net::IpAddr)> {
    table
        .backends
        .iter()
        .map(|b| {
            let e = b.egress.expect("routed before");
            (e.ifindex, e.next_hop)
        })
        .collect()
}

/// The managed neighbour entries behind the backends' MACs.
pub(crate) struct Neighbours {
    netlink: Netlink,
    /// (ifindex, addr) entries this daemon created, removed again on shutdown.
    created: Vec<(u32, std::net::IpAddr)>,
}

impl Neighbours {
    pub(crate) async fn register(
        netlink: &Netlink,
        table: &ServiceTable,
    ) -> anyhow::Result<Neighbours> {
        let mut neighbours = Neighbours {
            netlink: netlink.clone(),
            created: Vec::new(),
        };
        neighbours.add(table).await?;
        Ok(neighbours)
    }

    /// Managed entries for the table's next hops that have none from us yet (at start,
    /// and for a reloaded table's new ones).
    pub(crate) async fn add(&mut self, table: &ServiceTable) -> anyhow::Result<()> {
        let existing = self.netlink.neighbours().await?;
        for entry in next_hops(table) {
            // A static entry set by an operator is theirs: use it, do not convert it.
            if self.created.contains(&entry)
                || existing.get(&entry).is_some_and(|n| {
                    n.state == rtnetlink::packet_route::neighbour::NeighbourState::Permanent
                })
            {
                continue;
            }
            self.netlink
                .ensure_managed_neighbour(entry.0, entry.1)
                .await?;
            self.created.push(entry);
        }
        Ok(())
    }

    /// Removes the entries this daemon created for next hops `table` no longer uses.
    pub(crate) async fn prune(&mut self, table: &ServiceTable) {
        let wanted = next_hops(table);
        let mut kept = Vec::with_capacity(self.created.len());
        for entry in self.created.drain(..) {
            if wanted.contains(&entry) {
                kept.push(entry);
            } else if let Err(e) = self.netlink.remove_neighbour(entry.0, entry.1).await {
                warn!(error = %e, "could not remove a managed neighbour entry");
            }
        }
        self.created = kept;
    }

    /// Reads every backend's MAC into the table; returns the ids whose value changed.
    async fn read(&self, table: &mut ServiceTable) -> anyhow::Result<Vec<u32>> {
        let mut changed = Vec::new();
        let neighbours = self.netlink.neighbours().await?;
        for id in 0..table.backends.len() as u32 {
            let egress = table.backends[id as usize].egress.expect("routed before");
            let mac = neighbours
                .get(&(egress.ifindex, egress.next_hop))
                .and_then(|n| n.usable_mac());
            if table.set_mac(id, mac) {
                changed.push(id);
            }
        }
        Ok(changed)
    }

    /// Waits (bounded) for MACs. A service left with no usable real server although
    /// it has weight is an error; single unresolved servers are warnings and keep
    /// being retried in the background.
    pub(crate) async fn wait_for_macs(
        &self,
        table: &mut ServiceTable,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.read(table).await?;
            if table.backends.iter().all(|b| b.mac.is_some()) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(NEIGHBOUR_POLL).await;
        }
        for svc in &table.services {
            let unresolved: Vec<String> = svc
                .backends
                .iter()
                .map(|id| &table.backends[*id as usize])
                .filter(|b| b.mac.is_none())
                .map(|b| b.addr.to_string())
                .collect();
            if unresolved.is_empty() {
                continue;
            }
            let configured: u32 = svc
                .backends
                .iter()
                .map(|id| table.backends[*id as usize].weight)
                .sum();
            // Health does not matter here (alpha servers start down): only whether any
            // real server with weight has a MAC.
            let resolved: u32 = svc
                .backends
                .iter()
                .map(|id| &table.backends[*id as usize])
                .filter(|b| b.mac.is_some())
                .map(|b| b.weight)
                .sum();
            if resolved == 0 && configured > 0 {
                bail!(
                    "virtual server {}: no real server answered ARP/ND within {:?} ({}); \
                     are they up and on this L2 segment?",
                    svc.name,
                    timeout,
                    unresolved.join(", ")
                );
            }
            warn!(
                service = %svc.name,
                unresolved = %unresolved.join(", "),
                "real servers without a MAC yet; serving with the others and retrying"
            );
        }
        Ok(())
    }

    /// Applies MAC changes (resolved, changed, lost) to the maps.
    pub(crate) async fn refresh(
        &self,
        table: &mut ServiceTable,
        dataplane: &mut Dataplane,
    ) -> anyhow::Result<()> {
        let changed = self.read(table).await?;
        let mut services = Vec::new();
        for &id in &changed {
            crate::daemon::write_backend(dataplane, table, id)?;
            let service = table.backends[id as usize].service;
            if !services.contains(&service) {
                services.push(service);
            }
        }
        for index in services {
            dataplane
                .set_service(&table.spec(index)?)
                .with_context(|| format!("updating {}", table.services[index].name))?;
        }
        // Logged once the maps follow, so a reader of the line can rely on it.
        for id in changed {
            let b = &table.backends[id as usize];
            match b.mac {
                Some(mac) => {
                    info!(real_server = %b.addr, mac = %fmt_mac(mac), "real server MAC learned")
                }
                None => warn!(real_server = %b.addr, "real server MAC lost; no new flows to it"),
            }
        }
        Ok(())
    }

    pub(crate) async fn cleanup(self) {
        for (ifindex, addr) in &self.created {
            if let Err(e) = self.netlink.remove_neighbour(*ifindex, *addr).await {
                warn!(error = %e, "could not remove a managed neighbour entry");
            }
        }
    }
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
