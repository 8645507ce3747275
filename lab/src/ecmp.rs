//! The ECMP lab: active-active xdp-lb nodes behind a router that spreads flows over
//! them, each node announcing the VIP over BGP with its own FRR.
//!
//! ```text
//!   client eth0 198.51.100.1/24 ── router eth0 198.51.100.254/24
//!                                  router eth1 192.0.2.254/24 ─┐  FRR bgpd AS 65000,
//!   lbN    eth0 192.0.2.N/24 (N = 1..)   FRR AS 65001 ─────────┤  maximum-paths 8,
//!   bN     eth0 192.0.2.1N/24, VIP/32 on lo (LVS-DR) ──────────┘  L4 multipath hash
//!                                                 (one bridge, in the switch namespace)
//! ```
//!
//! The router peers with every LB (BGP timers 1 s / 3 s, and BFD at 20 ms × 3 from
//! each side's bfdd, so a dead LB's sessions drop in tens of milliseconds) and installs
//! the VIP with one next hop per LB announcing it; `net.ipv4.fib_multipath_hash_policy = 1` hashes the
//! 5-tuple, so each connection takes one LB. Each LB's FRR redistributes connected
//! /32s of 203.0.113.0/24 (the VIP put on `lo` by xdp-lb's `announce = true`) under
//! [`LB_ROUTE_MAP`], the README's route-map. The real servers answer the client
//! directly through the router (DR). The LBs' XDP is left to xdp-lb, started by the
//! test; the switch-side peers of the LBs carry the pass-through XDP program so
//! `XDP_TX` is delivered (see [`crate::xdp`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::client::wait_tcp_reachable;
use crate::frr::{Frr, require_frr};
use crate::netns::{Netns, next_id, require_root, require_tool};
use crate::topology::{Backend, Port, connect, endpoint_ns, switch_ns};
use crate::xdp::attach_xdp_pass;

/// The announced VIP (TEST-NET-3, outside every segment of the lab).
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const ROUTER_AS: u32 = 65000;
const LB_AS: u32 = 65001;

/// The LBs' policy: only /32s of the VIP range, from connected routes (xdp-lb's
/// addresses on `lo`), go to the router.
pub const LB_ROUTE_MAP: &str = "\
ip prefix-list XDP-LB-VIPS seq 10 permit 203.0.113.0/24 ge 32
route-map XDP-LB-VIPS permit 10
 match ip address prefix-list XDP-LB-VIPS
exit
";

/// xdp-lb's configuration on LB `i` (0-based): one DR service on the VIP, port 80,
/// Maglev over `backends` with HTTP checks, announced (`announce = true`); the status
/// API on its namespace's loopback.
pub fn xdp_lb_config(i: usize, backends: &[Ipv4Addr]) -> String {
    let mut text = format!(
        "[global]\nrouter_id = \"lb{}\"\n\n[dataplane]\ninterfaces = [\"eth0\"]\n\
         neighbour_timeout = \"10s\"\n\n[announce]\ndrain_idle = \"1s\"\n\n\
         [[virtual_server]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"maglev\"\n\
         forwarding = \"dr\"\nannounce = true\n",
        i + 1
    );
    for b in backends {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{b}\"\n  check = {{ type = \
             \"http\", path = \"/\", interval = \"200ms\", warmup = \"0s\", connect_timeout \
             = \"300ms\", retry = 0, fall = 2, rise = 2 }}\n"
        );
    }
    text
}

/// The address of LB `i` (0-based): 192.0.2.1, .2, ...
pub fn lb_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1 + i as u8)
}

/// A built ECMP lab; dropping it stops FRR and every process, and deletes the
/// namespaces (also when a test panics).
pub struct EcmpLab {
    /// The real servers (`b1`, `b2`, ...), addresses 192.0.2.11, .12, ...
    pub backends: Vec<Backend>,
    /// FRR of each LB (`None` once killed).
    pub lb_frr: Vec<Option<Frr>>,
    pub router_frr: Frr,
    pub client: Netns,
    pub router: Netns,
    /// Where each xdp-lb runs (interface `eth0`).
    pub lbs: Vec<Netns>,
    pub switch: Netns,
    prefix: String,
}

impl EcmpLab {
    /// Builds `lbs` LBs and `backends` real servers, starts FRR everywhere and waits
    /// until every BGP session is up and the client reaches every LB and real server.
    pub fn build(lbs: usize, backends: usize) -> Result<EcmpLab> {
        require_root()?;
        require_frr()?;
        require_tool("ethtool", "--version", "to enable GRO on veths")?;
        if !(1..=8).contains(&lbs) || !(1..=40).contains(&backends) {
            bail!("the ECMP lab holds 1 to 8 LBs and 1 to 40 real servers");
        }
        let prefix = format!("xlbe{}-{}-", std::process::id(), next_id());
        Self::build_inner(&prefix, lbs, backends)
            .with_context(|| format!("building the ECMP lab {prefix}*"))
    }

    fn build_inner(prefix: &str, n_lbs: usize, n_backends: usize) -> Result<EcmpLab> {
        let switch = switch_ns(prefix, "sw")?;
        let client = endpoint_ns(prefix, "c")?;
        let router = endpoint_ns(prefix, "r")?;
        let lbs: Vec<Netns> = (0..n_lbs)
            .map(|i| endpoint_ns(prefix, &format!("lb{}", i + 1)))
            .collect::<Result<_>>()?;
        let mut backends = Vec::new();
        for i in 0..n_backends {
            let name = format!("b{}", i + 1);
            backends.push(Backend {
                servers: Vec::new(),
                ns: endpoint_ns(prefix, &format!("b-{name}"))?,
                name,
                addr: Ipv4Addr::new(192, 0, 2, 11 + i as u8),
            });
        }
        // The client's link to the router is a plain veth pair.
        client.ip([
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            router.name(),
        ])?;
        client.ip(["link", "set", "eth0", "up"])?;
        router.ip(["link", "set", "eth0", "up"])?;
        let mut ports = vec![Port {
            switch: &switch,
            port: "r".into(),
            endpoint: &router,
            ifname: "eth1",
        }];
        for (i, lb) in lbs.iter().enumerate() {
            ports.push(Port {
                switch: &switch,
                port: format!("lb{}", i + 1),
                endpoint: lb,
                ifname: "eth0",
            });
        }
        for b in &backends {
            ports.push(Port {
                switch: &switch,
                port: format!("b-{}", b.name),
                endpoint: &b.ns,
                ifname: "eth0",
            });
        }
        for port in &ports {
            connect(port)?;
        }
        drop(ports);
        for i in 0..n_lbs {
            let port = format!("lb{}", i + 1);
            attach_xdp_pass(&switch, &port)?;
            // A veth's XDP sees every frame, whatever its MAC: without this, the bridge
            // floods a dead LB's frames (its port down, its MAC forgotten) to the other
            // LBs, whose XDP would forward them, and a crash would cost nothing.
            crate::netns::run_checked(
                switch
                    .command("bridge")
                    .args(["link", "set", "dev", &port, "flood", "off"]),
            )?;
        }

        client.ip(["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
        client.ip(["route", "add", "default", "via", "198.51.100.254"])?;
        router.ip(["addr", "add", "198.51.100.254/24", "dev", "eth0"])?;
        router.ip(["addr", "add", &format!("{ROUTER}/24"), "dev", "eth1"])?;
        router.sysctl(&[
            ("net/ipv4/ip_forward", "1"),
            // The 5-tuple picks the next hop: one connection, one LB.
            ("net/ipv4/fib_multipath_hash_policy", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/eth1/rp_filter", "0"),
            ("net/ipv4/conf/all/send_redirects", "0"),
            ("net/ipv4/conf/eth1/send_redirects", "0"),
        ])?;
        for (i, lb) in lbs.iter().enumerate() {
            lb.ip(["addr", "add", &format!("{}/24", lb_addr(i)), "dev", "eth0"])?;
            lb.ip(["route", "add", "default", "via", &ROUTER.to_string()])?;
            lb.sysctl(&[
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
                ("net/ipv4/conf/all/send_redirects", "0"),
            ])?;
        }
        for b in &backends {
            b.ns.sysctl(&[
                ("net/ipv4/conf/all/arp_ignore", "1"),
                ("net/ipv4/conf/all/arp_announce", "2"),
                ("net/ipv4/conf/eth0/arp_ignore", "1"),
                ("net/ipv4/conf/eth0/arp_announce", "2"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
            ])?;
            b.ns.ip(["addr", "add", &format!("{}/24", b.addr), "dev", "eth0"])?;
            b.ns.ip(["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            b.ns.ip(["route", "add", "default", "via", &ROUTER.to_string()])?;
        }

        let router_frr = Frr::start_daemons(
            &router,
            "router",
            &[("bfdd", BFDD_CONF), ("bgpd", &router_bgpd(n_lbs))],
        )?;
        let lb_frr = lbs
            .iter()
            .enumerate()
            .map(|(i, lb)| {
                Frr::start_daemons(
                    lb,
                    &format!("lb{}", i + 1),
                    &[("bfdd", BFDD_CONF), ("bgpd", &lb_bgpd(i))],
                )
                .map(Some)
            })
            .collect::<Result<Vec<_>>>()?;
        let lab = EcmpLab {
            backends,
            lb_frr,
            router_frr,
            client,
            router,
            lbs,
            switch,
            prefix: prefix.to_owned(),
        };
        let mut targets: Vec<SocketAddr> = (0..n_lbs)
            .map(|i| SocketAddr::from((lb_addr(i), 9)))
            .collect();
        targets.extend(lab.backends.iter().map(|b| SocketAddr::from((b.addr, 9))));
        wait_tcp_reachable(&lab.client, &targets, Duration::from_secs(30))
            .context("the client does not reach the LBs and real servers")?;
        lab.router_frr
            .wait(Duration::from_secs(30), "BGP session with every LB", || {
                Ok(lab.router_frr.established()? == n_lbs)
            })?;
        Ok(lab)
    }

    /// The prefix of every namespace name in this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The router's next hops for the VIP now (`ip route show VIP`), in order.
    pub fn next_hops(&self) -> Result<Vec<Ipv4Addr>> {
        let out = self
            .router
            .ip(["-4", "route", "show", &format!("{VIP}/32")])?;
        let mut hops: Vec<Ipv4Addr> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        if hops.is_empty() {
            // Nexthop objects: `nhid N proto bgp`; ask the kernel for the group.
            if let Some(id) = out
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .find(|w| w[0] == "nhid")
                .map(|w| w[1].to_owned())
            {
                let group = self.router.ip(["nexthop", "show", "id", &id])?;
                let ids: Vec<String> = group
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .find(|w| w[0] == "group")
                    .map(|w| {
                        w[1].split('/')
                            .map(|m| m.split(',').next().unwrap_or("").to_owned())
                            .collect()
                    })
                    .unwrap_or_else(|| vec![id.clone()]);
                for id in ids {
                    let one = self.router.ip(["nexthop", "show", "id", &id])?;
                    hops.extend(
                        one.split_whitespace()
                            .collect::<Vec<_>>()
                            .windows(2)
                            .filter(|w| w[0] == "via")
                            .filter_map(|w| w[1].parse::<Ipv4Addr>().ok()),
                    );
                }
            }
        }
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router forwards the VIP to exactly the LBs `lbs` (0-based);
    /// returns how long that took.
    pub fn wait_next_hops(&self, lbs: &[usize], within: Duration) -> Result<Duration> {
        let mut wanted: Vec<Ipv4Addr> = lbs.iter().map(|&i| lb_addr(i)).collect();
        wanted.sort();
        let mut seen = Vec::new();
        self.router_frr
            .wait(within, &format!("next hops {wanted:?} for {VIP}"), || {
                seen = self.next_hops()?;
                Ok(seen == wanted)
            })
            .with_context(|| format!("last seen: {seen:?}"))
    }
}

/// bfdd's profile for the BGP sessions: a dead peer is seen after 3 × 20 ms.
pub const BFDD_CONF: &str = "bfd\n profile fast\n  receive-interval 20\n  transmit-interval 20\n  detect-multiplier 3\n !\n!\n";

/// The router: eBGP with every LB (BFD, so a dead LB's route goes in tens of
/// milliseconds; short BGP timers behind it, 3 s), up to 8 equal paths.
fn router_bgpd(lbs: usize) -> String {
    let mut conf = format!(
        "hostname router\n\
         router bgp {ROUTER_AS}\n\
         \x20bgp router-id {ROUTER}\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20timers bgp 1 3\n\
         \x20neighbor LBS peer-group\n\
         \x20neighbor LBS remote-as {LB_AS}\n\
         \x20neighbor LBS timers 1 3\n\
         \x20neighbor LBS timers connect 1\n\
         \x20neighbor LBS advertisement-interval 0\n\
         \x20neighbor LBS bfd profile fast\n"
    );
    for i in 0..lbs {
        conf += &format!(" neighbor {} peer-group LBS\n", lb_addr(i));
    }
    conf += " address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\nexit\n";
    conf
}

/// LB `i`: eBGP with the router, announcing the VIPs xdp-lb puts on `lo`.
fn lb_bgpd(i: usize) -> String {
    format!(
        "hostname lb{n}\n\
         {LB_ROUTE_MAP}\
         router bgp {LB_AS}\n\
         \x20bgp router-id {addr}\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20timers bgp 1 3\n\
         \x20neighbor {ROUTER} remote-as {ROUTER_AS}\n\
         \x20neighbor {ROUTER} timers 1 3\n\
         \x20neighbor {ROUTER} timers connect 1\n\
         \x20neighbor {ROUTER} advertisement-interval 0\n\
         \x20neighbor {ROUTER} bfd profile fast\n\
         \x20address-family ipv4 unicast\n\
         \x20 redistribute connected route-map XDP-LB-VIPS\n\
         \x20exit-address-family\n\
         exit\n",
        n = i + 1,
        addr = lb_addr(i),
    )
}
