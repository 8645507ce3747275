//! What start-up needs from this host that the file alone cannot show: the interfaces
//! exist, every real server is reached the way its forwarding needs (DR and NAT
//! on-link, none on this host), every VRRP instance has an interface and a source
//! address. Only reads (links, routes, addresses), so `xdp-lb check` runs the very
//! steps the daemon's start runs, and refuses what the start would refuse.
use std::collections::BTreeMap;

use crate::{
    config::Config,
    neighbours::route_backends,
    netlink::{Link, Netlink},
    services::ServiceTable,
};

/// The XDP interfaces, and the service table with each real server's way out.
pub struct Routed {
    pub links: BTreeMap<u32, Link>,
    pub table: ServiceTable,
}

/// Looks up the XDP interfaces and routes every real server over them.
pub async fn route(config: &Config, netlink: &Netlink) -> anyhow::Result<Routed> {
    let mut links = BTreeMap::new();
    for name in &config.dataplane.interfaces {
        let link = netlink.link_by_name(name).await?;
        links.insert(link.index, link);
    }
    let mut table = ServiceTable::from_config(config)?;
    route_backends(netlink, &links, &mut table, &config.vips()).await?;
    Ok(Routed { links, table })
}

/// Everything the start checks on this host before it changes anything.
pub async fn check(config: &Config) -> anyhow::Result<()> {
    let netlink = Netlink::connect()?;
    route(config, &netlink).await?;
    crate::failover::preflight(config.vrrp.clone(), &netlink).await?;
    // The NAT sync's key (the start reads it too) and its interface.
    if let Some(sync) = &config.sync {
        sync.secret.read().map_err(|e| anyhow::anyhow!(e))?;
        if let Some(name) = &sync.interface {
            nix::net::if_::if_nametoindex(name.as_str())
                .map_err(|e| anyhow::anyhow!("[sync] interface {name:?}: {e}"))?;
        }
    }
    Ok(())
}
