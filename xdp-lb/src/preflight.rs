//! What start-up needs from this host that the file alone cannot show: the interfaces
//! exist, every real server is reached the way its forwarding needs (DR and NAT
//! on-link, none on this host), every VRRP instance has an interface and a source
//! address. Only reads (links, routes, addresses), so `xdp-lb check` runs the very
//! steps the daemon's start runs, and refuses what the start would refuse.
use std::collections::BTreeMap;

use crate::{
    config::{Config, Forwarding},
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

/// Host settings that would spoil part of the configuration without stopping it,
/// said as warnings (the daemon logs them at start and reload; `xdp-lb check` prints
/// them).
pub fn host_warnings(config: &Config) -> Vec<String> {
    forwarding_warnings(config, |path| std::fs::read_to_string(path).ok())
}

/// With the flood guard on, a NAT real server's answer to a flow the guard left
/// unpinned leaves by the kernel's FIB, which answers only for interfaces that
/// forward: say which XDP interfaces do not, for the families of the NAT VIPs.
/// `read` gives a /proc/sys file's text (`None`: unreadable, said nothing about).
fn forwarding_warnings(config: &Config, read: impl Fn(&str) -> Option<String>) -> Vec<String> {
    if config.dataplane.new_flow_rate == 0 {
        return Vec::new();
    }
    let nat_vips = || {
        config
            .virtual_servers
            .iter()
            .filter(|v| v.forwarding == Forwarding::Nat)
            .flat_map(|v| v.members.iter())
    };
    let families = [
        (
            "ipv4",
            "net.ipv4.ip_forward=1",
            nat_vips().any(|m| m.is_ipv4()),
        ),
        (
            "ipv6",
            "net.ipv6.conf.all.forwarding=1",
            nat_vips().any(|m| m.is_ipv6()),
        ),
    ];
    let mut warnings = Vec::new();
    for interface in &config.dataplane.interfaces {
        for (family, fix) in families
            .iter()
            .filter(|(_, _, used)| *used)
            .map(|(family, fix, _)| (family, fix))
        {
            let path = format!("/proc/sys/net/{family}/conf/{interface}/forwarding");
            if read(&path).is_some_and(|text| text.trim() == "0") {
                warnings.push(format!(
                    "{interface} does not forward {family} ({path} is 0): with \
                     new_flow_rate on, a NAT real server's answer to a connection opened \
                     during a SYN flood is routed to its client by the kernel's FIB, which \
                     routes nothing for such an interface, so those connections fail \
                     until the flood ends; set {fix}, as LVS-NAT needs"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, "test.toml").unwrap()
    }

    const NAT: &str = "[dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\nnew_flow_rate = 1000\n\n\
        [[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\nforwarding = \"nat\"\n\
        real_server = [{ address = \"10.0.0.11\" }]\n";

    /// A host where `off` lists the /proc/sys files that read 0; every other reads 1.
    fn host(off: &'static [&'static str]) -> impl Fn(&str) -> Option<String> {
        move |path| Some(if off.contains(&path) { "0\n" } else { "1\n" }.to_string())
    }

    #[test]
    fn an_interface_that_does_not_forward_the_nat_vips_family_is_named() {
        let warnings = forwarding_warnings(
            &config(NAT),
            host(&["/proc/sys/net/ipv4/conf/eth1/forwarding"]),
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("eth1 does not forward ipv4"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[0].contains("net.ipv4.ip_forward=1"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn nothing_is_said_without_the_guard_without_nat_or_for_the_other_family() {
        let all_off: &[&str] = &[
            "/proc/sys/net/ipv4/conf/eth0/forwarding",
            "/proc/sys/net/ipv4/conf/eth1/forwarding",
            "/proc/sys/net/ipv6/conf/eth0/forwarding",
            "/proc/sys/net/ipv6/conf/eth1/forwarding",
        ];
        let unguarded = NAT.replace("new_flow_rate = 1000\n", "");
        assert!(forwarding_warnings(&config(&unguarded), host(all_off)).is_empty());
        let dr = NAT.replace("forwarding = \"nat\"\n", "");
        assert!(forwarding_warnings(&config(&dr), host(all_off)).is_empty());
        // An IPv4 NAT VIP needs IPv4 forwarding only.
        let v6_off: &[&str] = &all_off[2..];
        assert!(forwarding_warnings(&config(NAT), host(v6_off)).is_empty());
        // An unreadable file says nothing either way.
        assert!(forwarding_warnings(&config(NAT), |_| None).is_empty());
    }
}
