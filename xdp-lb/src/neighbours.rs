//! Where real servers' packets leave (routes) and which MAC they go to (managed
//! neighbour entries the kernel keeps fresh).
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::bail;
use tokio::time::Instant;
use tracing::warn;

use crate::{
    config::Forwarding,
    netlink::{Link, Netlink},
    services::{Egress, Macs, ServiceTable},
};

/// How often the neighbour table is re-read once running.
pub(crate) const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
/// Poll step while waiting for MACs at start.
const NEIGHBOUR_POLL: Duration = Duration::from_millis(50);

/// Finds each real server's egress interface and next hop. Every real server must be
/// reached through one of the XDP interfaces; DR and NAT need it on-link, TUN may
/// reach it through a gateway (whose MAC the frames then go to).
///
/// A health check without its own `source` gets one when the kernel would pick a VIP
/// (a `/128` VIP beside a `/64` address can be the better match): a DR real server
/// holds the VIPs itself and would answer its own loopback, so the check would fail
/// forever.
pub(crate) async fn route_backends(
    netlink: &Netlink,
    links: &BTreeMap<u32, Link>,
    table: &mut ServiceTable,
    vips: &std::collections::BTreeSet<std::net::IpAddr>,
) -> anyhow::Result<()> {
    let names: Vec<&str> = links.values().map(|l| l.name.as_str()).collect();
    let mut check_sources = Vec::new();
    for (index, b) in table.backends.iter_mut().enumerate() {
        let forwarding = table.services[b.service].forwarding;
        let service = &table.services[b.service].name;
        let role = if b.sorry {
            "sorry server"
        } else {
            "real server"
        };
        let route = netlink.route_to(b.addr).await?;
        if route.local {
            bail!(
                "{role} {} of {service} is an address of this host: XDP forwards to other hosts \
                 only, so nothing on this host can take the service's connections; run it on \
                 another host",
                b.addr
            );
        }
        let Some(link) = links.get(&route.oif) else {
            bail!(
                "{role} {} of {service}: the route to it leaves by ifindex {}, not by an XDP \
                 interface ({}); add the interface it leaves by to `dataplane.interfaces`",
                b.addr,
                route.oif,
                names.join(", ")
            );
        };
        let next_hop = match route.gateway {
            Some(gw) if forwarding != Forwarding::Tun => bail!(
                "{role} {} of {service} is behind gateway {gw} on `{}`, not on-link; \
                 {forwarding} forwarding needs it on the same L2 segment (use \"tun\" for real \
                 servers behind a router)",
                b.addr,
                link.name
            ),
            Some(gw) => gw,
            None => b.addr,
        };
        if forwarding == Forwarding::Tun && route.prefsrc.is_none() {
            bail!(
                "{role} {} of {service}: the kernel has no source address towards it on `{}`; \
                 TUN needs one for the outer header",
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
        if route.prefsrc.is_some_and(|src| vips.contains(&src)) {
            let candidates = netlink.global_addresses(link.index).await?;
            check_sources.push((index, check_source(b.addr, &candidates, vips)));
        }
    }
    for (index, source) in check_sources {
        for (_, check) in table
            .checks
            .iter_mut()
            .filter(|(i, _)| i.0 as usize == index)
        {
            if check.params.source.is_none() {
                check.params.source = source;
            }
        }
    }
    Ok(())
}

/// A source for checks of `server` among `candidates` (the egress interface's
/// addresses): not a VIP, of the server's family, the one sharing the longest prefix
/// with it (as the kernel would choose, VIPs aside); `None` if there is none.
fn check_source(
    server: std::net::IpAddr,
    candidates: &[(std::net::IpAddr, u8)],
    vips: &std::collections::BTreeSet<std::net::IpAddr>,
) -> Option<std::net::IpAddr> {
    let bits = |a: std::net::IpAddr| -> u128 {
        match a {
            std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            std::net::IpAddr::V6(v6) => u128::from(v6),
        }
    };
    candidates
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| a.is_ipv4() == server.is_ipv4() && !vips.contains(a))
        .max_by_key(|a| (bits(*a) ^ bits(server)).leading_zeros())
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

/// The managed neighbour entries behind the backends' MACs. Clones share the record of
/// what was created, so a reload's task can add entries while the daemon runs on.
#[derive(Clone)]
pub(crate) struct Neighbours {
    netlink: Netlink,
    /// (ifindex, addr) entries this daemon created, removed again on shutdown.
    created: Arc<Mutex<Vec<(u32, std::net::IpAddr)>>>,
}

impl Neighbours {
    pub(crate) fn new(netlink: &Netlink) -> Neighbours {
        Neighbours {
            netlink: netlink.clone(),
            created: Arc::default(),
        }
    }

    fn created(&self) -> std::sync::MutexGuard<'_, Vec<(u32, std::net::IpAddr)>> {
        // Never held across an await, and no code panics while holding it.
        self.created.lock().expect("neighbour record lock")
    }

    /// Managed entries for the table's next hops that have none from us yet (at start,
    /// and for a reloaded table's new ones).
    async fn add(&self, table: &ServiceTable) -> anyhow::Result<()> {
        let existing = self.netlink.neighbours().await?;
        for entry in next_hops(table) {
            // A static entry set by an operator is theirs: use it, do not convert it.
            if self.created().contains(&entry)
                || existing.get(&entry).is_some_and(|n| {
                    n.state == rtnetlink::packet_route::neighbour::NeighbourState::Permanent
                })
            {
                continue;
            }
            self.netlink
                .ensure_managed_neighbour(entry.0, entry.1)
                .await?;
            self.created().push(entry);
        }
        Ok(())
    }

    /// Removes the entries this daemon created for next hops `table` no longer uses.
    pub(crate) async fn prune(&self, table: &ServiceTable) {
        let wanted = next_hops(table);
        let unwanted: Vec<_> = {
            let mut created = self.created();
            let (kept, unwanted) = created.drain(..).partition(|e| wanted.contains(e));
            *created = kept;
            unwanted
        };
        for (ifindex, addr) in unwanted {
            if let Err(e) = self.netlink.remove_neighbour(ifindex, addr).await {
                warn!(error = %e, "could not remove a managed neighbour entry");
            }
        }
    }

    /// The neighbour table's usable MACs.
    pub(crate) async fn macs(&self) -> anyhow::Result<Macs> {
        Ok(self
            .netlink
            .neighbours()
            .await?
            .into_iter()
            .filter_map(|(key, n)| Some((key, n.usable_mac()?)))
            .collect())
    }

    /// Managed entries for the routed `table`'s new next hops, then their MACs, waited
    /// for up to `timeout` (see [`wait_for_macs`]): what a table needs before its maps
    /// are written, at start and on a reload alike.
    pub(crate) async fn resolve(
        &self,
        table: &mut ServiceTable,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.add(table).await?;
        self.wait_for_macs(table, timeout).await
    }

    /// Learns MACs into `table` until every backend has one or `timeout` has passed
    /// (see [`wait_for_macs`]).
    async fn wait_for_macs(
        &self,
        table: &mut ServiceTable,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_for_macs(table, timeout, || self.macs()).await
    }

    pub(crate) async fn cleanup(self) {
        let created = std::mem::take(&mut *self.created());
        for (ifindex, addr) in created {
            if let Err(e) = self.netlink.remove_neighbour(ifindex, addr).await {
                warn!(error = %e, "could not remove a managed neighbour entry");
            }
        }
    }
}

/// Learns MACs from `read` into `table`, every [`NEIGHBOUR_POLL`], until every backend
/// has one or `timeout` has passed. A service left with no real server that could take
/// traffic although it has weight is an error; single unresolved servers are warnings
/// (the daemon's neighbour refresh keeps retrying them).
pub(crate) async fn wait_for_macs<F, R>(
    table: &mut ServiceTable,
    timeout: Duration,
    mut read: R,
) -> anyhow::Result<()>
where
    R: FnMut() -> F,
    F: std::future::Future<Output = anyhow::Result<Macs>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        table.learn_macs(&read().await?);
        if table.backends.iter().all(|b| b.mac.is_some()) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(NEIGHBOUR_POLL).await;
    }
    for warning in table.unresolved_macs(timeout).map_err(anyhow::Error::msg)? {
        warn!("{warning}");
    }
    Ok(())
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth0"]

[[virtual_server]]
vip = "192.0.2.100"
port = 80
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  [[virtual_server.real_server]]
  address = "192.0.2.12"
"#;

    fn table() -> ServiceTable {
        let config = crate::config::parse(CONFIG, "test.toml").unwrap();
        let mut table = ServiceTable::from_config(&config).unwrap();
        crate::services::route_on_link(&mut table, 7);
        table
    }

    fn mac_of(addr: &str) -> Macs {
        Macs::from([((7, addr.parse().unwrap()), [2, 0, 0, 0, 0, 0x11])])
    }

    #[test]
    fn checks_never_take_a_vip_as_their_source() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let vips = [ip("2001:db8::10"), ip("192.0.2.100")]
            .into_iter()
            .collect();
        let candidates = [
            (ip("2001:db8::10"), 128),
            (ip("2001:db8::2"), 64),
            (ip("2001:db8:1::2"), 64),
            (ip("192.0.2.2"), 24),
            (ip("192.0.2.100"), 32),
        ];
        assert_eq!(
            check_source(ip("2001:db8::11"), &candidates, &vips),
            Some(ip("2001:db8::2")),
            "the /64 address, not the closer /128 VIP"
        );
        assert_eq!(
            check_source(ip("192.0.2.11"), &candidates, &vips),
            Some(ip("192.0.2.2"))
        );
        let only_vips = [(ip("192.0.2.100"), 32)];
        assert_eq!(check_source(ip("192.0.2.11"), &only_vips, &vips), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_as_soon_as_every_mac_is_known() {
        let mut table = table();
        let started = Instant::now();
        let mut reads = 0;
        let read = || {
            reads += 1;
            let mut macs = mac_of("192.0.2.11");
            if reads >= 4 {
                macs.extend(mac_of("192.0.2.12"));
            }
            async move { Ok(macs) }
        };
        wait_for_macs(&mut table, Duration::from_secs(6), read)
            .await
            .unwrap();
        assert_eq!(reads, 4);
        assert_eq!(started.elapsed(), NEIGHBOUR_POLL * 3);
        assert!(table.backends.iter().all(|b| b.mac.is_some()));
    }

    #[tokio::test(start_paused = true)]
    async fn one_silent_server_is_waited_for_until_the_timeout_then_left_out() {
        let mut table = table();
        let started = Instant::now();
        let read = || async { Ok(mac_of("192.0.2.11")) };
        wait_for_macs(&mut table, Duration::from_secs(6), read)
            .await
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(6) && waited < Duration::from_secs(6) + NEIGHBOUR_POLL,
            "{waited:?}"
        );
        assert!(table.backends[1].mac.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_with_no_mac_at_all_is_an_error_naming_it() {
        let mut table = table();
        let read = || async { Ok(Macs::new()) };
        let err = wait_for_macs(&mut table, Duration::from_secs(2), read)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("virtual server 192.0.2.100:80/tcp")
                && err.contains("192.0.2.11, 192.0.2.12"),
            "{err}"
        );
    }
}
