//! The LVS-DR lab: a client, a load balancer and real servers in their own
//! namespaces, wired through Linux bridges that live in "switch" namespaces.
//!
//! One-arm (`two_arm = false`), everything on one L2 segment:
//!
//! ```text
//!   client eth0 192.0.2.1/24 ─┐
//!   lb     eth0 192.0.2.2/24  ├─ br0 (switch ns)
//!          + VIP 192.0.2.100/32
//!   bN     eth0 192.0.2.1N/24 ┘  VIP/32 on lo, arp_ignore=1, arp_announce=2
//! ```
//!
//! Two-arm (`two_arm = true`), the LB routes between a front and a back segment:
//!
//! ```text
//!   client eth0 198.51.100.1/24 ── br0 (switch) ── lb eth0 198.51.100.2/24 + VIP/32
//!     route 192.0.2.0/24 via 198.51.100.2
//!   lb eth1 192.0.2.2/24 ── br0 (backend switch) ── bN eth0 192.0.2.1N/24, VIP/32 on lo,
//!                                                   default via 192.0.2.2
//! ```
//!
//! With a standby LB ([`DrLabOptions::with_standby`]), `lb2` (192.0.2.3/24) joins the
//! segment like the LB, and neither LB gets the IPv4 VIP: VRRP is to add it on
//! whichever is MASTER. Two-arm with a standby (a NAT gateway pair), `lb2` has
//! 198.51.100.3/24 on `eth0` and 192.0.2.3/24 on `eth1`; the client reaches the VIP
//! on-link (`192.0.2.100/32 dev eth0`: whichever LB answers ARP for it), and the
//! backends still route via 192.0.2.2 until the test points them at a VRRP address.
//!
//! Both shapes carry IPv6 beside IPv4: one-arm on 2001:db8::/64 (client ::1, LB ::2,
//! backends ::11, ...), two-arm with the client on 2001:db8:1::/64 (LB 2001:db8:1::2)
//! and the backends on 2001:db8::/64 behind the LB (2001:db8::2 on eth1); the IPv6 VIP
//! 2001:db8::100 sits where the IPv4 one does.
//!
//! The two-arm client reaches the VIP (and the backends' own addresses) by
//! routing through the LB; the LB forwards the backends' direct replies
//! (source VIP) back with `ip_forward=1`, `rp_filter=0` and `accept_local=1`.
//!
//! Every veth end has GRO on and TX checksum offload off, and the switch-side
//! peers of the LB's interfaces (bridge ports `lb`, `lb1`) carry a pass-through
//! XDP program, so native XDP on the LB can `XDP_TX` and redirect (see
//! [`crate::xdp`]). The host namespace never sees any of it.
//!
//! Every namespace is named `<lab prefix><role>` (roles `c`, `lb`, `sw`,
//! `sw2`, `b-<backend>`), so a test can check that nothing with the prefix
//! survives the lab.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::backends::{BackendServer, validate_backend_name};
use crate::client::wait_tcp_reachable;
use crate::netns::{Netns, next_id, require_root, require_tool, run_checked};
use crate::xdp::attach_xdp_pass;

/// How long a freshly built lab may take until the client reaches every backend.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A port nothing in the lab listens on: connecting to it gets an RST, which
/// proves reachability before any server runs.
const PROBE_PORT: u16 = 9;

/// What [`DrLab::build`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrLabOptions {
    /// Backend names, e.g. `["b1", "b2", "b3"]`; each gets 192.0.2.11, .12, ...
    pub backends: Vec<String>,
    /// Client and backends on separate segments with the LB routing between them.
    pub two_arm: bool,
    /// A second LB (`lb2`) for VRRP; the IPv4 VIP is left to VRRP.
    pub standby: bool,
}

impl Default for DrLabOptions {
    /// One-arm with backends `b1`, `b2`, `b3`.
    fn default() -> Self {
        DrLabOptions::one_arm(&["b1", "b2", "b3"])
    }
}

impl DrLabOptions {
    /// One-arm lab with these backends.
    pub fn one_arm(backends: &[&str]) -> Self {
        DrLabOptions {
            backends: backends.iter().map(|b| b.to_string()).collect(),
            two_arm: false,
            standby: false,
        }
    }

    /// Adds the standby LB `lb2`.
    pub fn with_standby(mut self) -> Self {
        self.standby = true;
        self
    }

    /// Two-arm lab with these backends.
    pub fn two_arm(backends: &[&str]) -> Self {
        DrLabOptions {
            two_arm: true,
            ..DrLabOptions::one_arm(backends)
        }
    }
}

/// A real server: its own namespace with `eth0` and the VIP on `lo`.
/// Fields drop in order, so its servers die before its namespace goes.
#[derive(Debug)]
pub struct Backend {
    pub(crate) servers: Vec<BackendServer>,
    /// The name it answers with (and the suffix of its namespace name).
    pub name: String,
    /// Its namespace.
    pub ns: Netns,
    /// Its own address on `eth0` (192.0.2.11, .12, ...).
    pub addr: Ipv4Addr,
}

impl Backend {
    /// The MAC address of its `eth0`.
    pub fn mac(&self) -> Result<String> {
        self.ns.mac("eth0")
    }

    /// The MAC address of its `eth0`, as bytes.
    pub fn mac_bytes(&self) -> Result<[u8; 6]> {
        self.ns.mac_bytes("eth0")
    }

    /// The servers currently running on it.
    pub fn servers(&self) -> &[BackendServer] {
        &self.servers
    }

    /// Starts an HTTP server answering this backend's name.
    pub fn start_http(&mut self, port: u16) -> Result<()> {
        let server = BackendServer::start_http(&self.ns, port, &self.name)?;
        self.servers.push(server);
        Ok(())
    }

    /// Starts a UDP server answering this backend's name.
    pub fn start_udp(&mut self, port: u16) -> Result<()> {
        let server = BackendServer::start_udp(&self.ns, port, &self.name)?;
        self.servers.push(server);
        Ok(())
    }

    /// Kills all of its servers (the namespace and addresses stay).
    pub fn stop_servers(&mut self) {
        for server in self.servers.drain(..) {
            server.stop();
        }
    }
}

/// A built LVS-DR lab; dropping it kills every process in it and deletes all
/// of its namespaces (also when a test panics).
#[derive(Debug)]
pub struct DrLab {
    /// The real servers, in the order of [`DrLabOptions::backends`].
    pub backends: Vec<Backend>,
    /// Where client probes run ([`crate::http_get_new_connections`] etc.).
    pub client: Netns,
    /// Where the xdp-lb daemon runs; see [`DrLab::lb_interfaces`].
    pub lb: Netns,
    /// With [`DrLabOptions::with_standby`]: the second LB, wired like `lb`.
    pub standby: Option<Netns>,
    /// The bridge of the client segment (one-arm: of everything).
    pub switch: Netns,
    /// Two-arm only: the bridge of the backend segment.
    pub backend_switch: Option<Netns>,
    prefix: String,
    two_arm: bool,
}

/// One veth link from an endpoint namespace to a bridge in a switch namespace.
pub(crate) struct Port<'a> {
    pub(crate) switch: &'a Netns,
    /// Bridge port name inside the switch namespace.
    pub(crate) port: String,
    pub(crate) endpoint: &'a Netns,
    pub(crate) ifname: &'a str,
}

impl DrLab {
    /// The virtual IP, present on the LB's `eth0` (it answers ARP for it) and
    /// on every backend's `lo`.
    pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    /// The IPv6 VIP, placed like [`DrLab::VIP`] (on the LB's `eth0`, on every
    /// backend's `lo`). One-arm: client 2001:db8::1, LB ::2, backends ::11, ::12, ...
    /// on one segment; two-arm: client 2001:db8:1::1, LB 2001:db8:1::2 (eth0) and
    /// 2001:db8::2 (eth1), backends 2001:db8::11, ::12, ... behind it.
    pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    /// The standby LB's address (one-arm, [`DrLabOptions::with_standby`]).
    pub const STANDBY_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

    /// Builds the lab and waits until the client reaches every backend.
    pub fn build(opts: DrLabOptions) -> Result<DrLab> {
        require_root()?;
        require_tool(
            "ethtool",
            "--version",
            "to enable GRO on veths (native XDP_TX/redirect on veth needs NAPI on the peer)",
        )?;
        if opts.backends.is_empty() {
            bail!("a DR lab needs at least one backend");
        }
        if opts.backends.len() > 80 {
            bail!("at most 80 backends fit 192.0.2.11..=192.0.2.90");
        }
        for (i, name) in opts.backends.iter().enumerate() {
            validate_backend_name(name)?;
            if opts.backends[..i].contains(name) {
                bail!("backend name {name:?} is used twice");
            }
        }

        let prefix = format!("xlb{}-{}-", std::process::id(), next_id());
        let shape = if opts.two_arm { "two-arm" } else { "one-arm" };
        DrLab::build_inner(prefix.clone(), opts)
            .with_context(|| format!("building the {shape} DR lab {prefix}*"))
    }

    fn build_inner(prefix: String, opts: DrLabOptions) -> Result<DrLab> {
        // Namespaces are created first so a failure anywhere below drops (and
        // deletes) everything built so far.
        let switch = switch_ns(&prefix, "sw")?;
        let backend_switch = if opts.two_arm {
            Some(switch_ns(&prefix, "sw2")?)
        } else {
            None
        };
        let client = endpoint_ns(&prefix, "c")?;
        let lb = endpoint_ns(&prefix, "lb")?;
        let standby = if opts.standby {
            Some(endpoint_ns(&prefix, "lb2")?)
        } else {
            None
        };
        let mut backends = Vec::new();
        for (i, name) in opts.backends.iter().enumerate() {
            backends.push(Backend {
                servers: Vec::new(),
                name: name.clone(),
                ns: endpoint_ns(&prefix, &format!("b-{name}"))?,
                addr: Ipv4Addr::new(192, 0, 2, 11 + i as u8),
            });
        }

        let back_switch = backend_switch.as_ref().unwrap_or(&switch);
        let mut ports = vec![
            Port {
                switch: &switch,
                port: "c".into(),
                endpoint: &client,
                ifname: "eth0",
            },
            Port {
                switch: &switch,
                port: "lb".into(),
                endpoint: &lb,
                ifname: "eth0",
            },
        ];
        if opts.two_arm {
            ports.push(Port {
                switch: back_switch,
                port: "lb1".into(),
                endpoint: &lb,
                ifname: "eth1",
            });
        }
        if let Some(standby) = &standby {
            ports.push(Port {
                switch: &switch,
                port: "lb2".into(),
                endpoint: standby,
                ifname: "eth0",
            });
            if opts.two_arm {
                ports.push(Port {
                    switch: back_switch,
                    port: "lb21".into(),
                    endpoint: standby,
                    ifname: "eth1",
                });
            }
        }
        for b in &backends {
            ports.push(Port {
                switch: back_switch,
                port: format!("b-{}", b.name),
                endpoint: &b.ns,
                ifname: "eth0",
            });
        }
        for port in &ports {
            connect(port)?;
        }
        // Frames the LB's XDP sends with XDP_TX reach the bridge only if the
        // LB's veth peers run an XDP program (see `crate::xdp`).
        attach_xdp_pass(&switch, "lb")?;
        if opts.two_arm {
            attach_xdp_pass(back_switch, "lb1")?;
        }
        if standby.is_some() {
            attach_xdp_pass(&switch, "lb2")?;
            if opts.two_arm {
                attach_xdp_pass(back_switch, "lb21")?;
            }
        }

        let vip = format!("{}/32", DrLab::VIP);
        for b in &backends {
            // Classic LVS-DR real server: the VIP sits on lo, and the ARP
            // knobs keep the backend from answering or announcing it, so
            // only the LB owns the VIP on the wire.
            b.ns.sysctl(&[
                ("net/ipv4/conf/all/arp_ignore", "1"),
                ("net/ipv4/conf/all/arp_announce", "2"),
                ("net/ipv4/conf/eth0/arp_ignore", "1"),
                ("net/ipv4/conf/eth0/arp_announce", "2"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
            ])?;
            b.ns.ip(["addr", "add", &format!("{}/24", b.addr), "dev", "eth0"])?;
            b.ns.ip(["addr", "add", &vip, "dev", "lo"])?;
            if opts.two_arm {
                b.ns.ip(["route", "add", "default", "via", "192.0.2.2"])?;
            }
        }

        if opts.two_arm {
            client.ip(["addr", "add", "198.51.100.1/24", "dev", "eth0"])?;
            client.ip(["route", "add", "192.0.2.0/24", "via", "198.51.100.2"])?;
            lb.ip(["addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
            lb.ip(["addr", "add", "192.0.2.2/24", "dev", "eth1"])?;
            let mut routers = vec![&lb];
            if let Some(standby) = &standby {
                // The VIP moves with VRRP: the client asks the segment for it.
                client.ip(["route", "add", &vip, "dev", "eth0"])?;
                standby.ip(["addr", "add", "198.51.100.3/24", "dev", "eth0"])?;
                standby.ip(["addr", "add", "192.0.2.3/24", "dev", "eth1"])?;
                routers.push(standby);
            } else {
                lb.ip(["addr", "add", &vip, "dev", "eth0"])?;
            }
            // The LB's kernel routes the backends' replies (source VIP) back
            // to the client. Their source is a local address of the LB, which
            // the kernel drops as martian unless accept_local is set.
            for router in routers {
                router.sysctl(&[
                    ("net/ipv4/ip_forward", "1"),
                    ("net/ipv4/conf/all/rp_filter", "0"),
                    ("net/ipv4/conf/eth0/rp_filter", "0"),
                    ("net/ipv4/conf/eth1/rp_filter", "0"),
                    ("net/ipv4/conf/all/accept_local", "1"),
                    ("net/ipv4/conf/eth1/accept_local", "1"),
                    ("net/ipv4/conf/all/send_redirects", "0"),
                    ("net/ipv6/conf/all/forwarding", "1"),
                ])?;
            }
            // IPv6 beside it, shaped the same way: the client on 2001:db8:1::/64, the
            // backends on 2001:db8::/64 behind the LB (::2 on eth1), the VIP on the
            // LB's eth0 and every backend's lo. No DAD: usable at once.
            let vip6 = format!("{}/128", DrLab::VIP6);
            client.ip(["addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad"])?;
            client.ip([
                "-6",
                "route",
                "add",
                "2001:db8::/64",
                "via",
                "2001:db8:1::2",
            ])?;
            lb.ip(["addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"])?;
            lb.ip(["addr", "add", &vip6, "dev", "eth0", "nodad"])?;
            lb.ip(["addr", "add", "2001:db8::2/64", "dev", "eth1", "nodad"])?;
            for (i, b) in backends.iter().enumerate() {
                let own = format!("2001:db8::{:x}/64", 0x11 + i);
                b.ns.ip(["addr", "add", &own, "dev", "eth0", "nodad"])?;
                b.ns.ip(["addr", "add", &vip6, "dev", "lo", "nodad"])?;
                b.ns.ip(["-6", "route", "add", "default", "via", "2001:db8::2"])?;
            }
        } else {
            client.ip(["addr", "add", "192.0.2.1/24", "dev", "eth0"])?;
            lb.ip(["addr", "add", "192.0.2.2/24", "dev", "eth0"])?;
            if let Some(standby) = &standby {
                standby.ip(["addr", "add", "192.0.2.3/24", "dev", "eth0"])?;
                standby.sysctl(&[
                    ("net/ipv4/conf/all/rp_filter", "0"),
                    ("net/ipv4/conf/eth0/rp_filter", "0"),
                    ("net/ipv4/conf/all/send_redirects", "0"),
                ])?;
            } else {
                lb.ip(["addr", "add", &vip, "dev", "eth0"])?;
            }
            // IPv6 beside it, without DAD so addresses are usable at once. A backend
            // does not answer neighbour solicitations for the VIP it holds on `lo`
            // (Linux only answers for addresses of the receiving interface).
            let vip6 = format!("{}/128", DrLab::VIP6);
            client.ip(["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"])?;
            lb.ip(["addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad"])?;
            lb.ip(["addr", "add", &vip6, "dev", "eth0", "nodad"])?;
            for (i, b) in backends.iter().enumerate() {
                let own = format!("2001:db8::{:x}/64", 0x11 + i);
                b.ns.ip(["addr", "add", &own, "dev", "eth0", "nodad"])?;
                b.ns.ip(["addr", "add", &vip6, "dev", "lo", "nodad"])?;
            }
            lb.sysctl(&[
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
                ("net/ipv4/conf/all/send_redirects", "0"),
            ])?;
        }
        drop(ports);

        let lab = DrLab {
            backends,
            client,
            lb,
            standby,
            switch,
            backend_switch,
            prefix,
            two_arm: opts.two_arm,
        };
        let mut targets = vec![SocketAddr::from((lab.lb_addr(), PROBE_PORT))];
        let standby_addr = if lab.two_arm {
            Ipv4Addr::new(198, 51, 100, 3)
        } else {
            DrLab::STANDBY_ADDR
        };
        targets.extend(
            lab.standby
                .as_ref()
                .map(|_| SocketAddr::from((standby_addr, PROBE_PORT))),
        );
        targets.extend(
            lab.backends
                .iter()
                .map(|b| SocketAddr::from((b.addr, PROBE_PORT))),
        );
        if lab.two_arm {
            // The two-arm lab routes IPv6 too: the client reaches the backends' own
            // IPv6 addresses through the LB's kernel.
            targets.extend(
                (0..lab.backends.len())
                    .map(|i| SocketAddr::from((lab.backend_addr6(i), PROBE_PORT))),
            );
        }
        wait_tcp_reachable(&lab.client, &targets, READY_TIMEOUT)
            .context("the lab did not become reachable from the client")?;
        Ok(lab)
    }

    /// The prefix of every namespace name in this lab (unique per lab).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this is the two-arm shape.
    pub fn is_two_arm(&self) -> bool {
        self.two_arm
    }

    /// Names of all the lab's namespaces.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![
            self.client.name().to_owned(),
            self.lb.name().to_owned(),
            self.switch.name().to_owned(),
        ];
        names.extend(self.standby.iter().map(|s| s.name().to_owned()));
        names.extend(self.backend_switch.iter().map(|s| s.name().to_owned()));
        names.extend(self.backends.iter().map(|b| b.ns.name().to_owned()));
        names
    }

    /// The client's address: 192.0.2.1 (one-arm) or 198.51.100.1 (two-arm).
    pub fn client_addr(&self) -> Ipv4Addr {
        if self.two_arm {
            Ipv4Addr::new(198, 51, 100, 1)
        } else {
            Ipv4Addr::new(192, 0, 2, 1)
        }
    }

    /// The LB's own address on the client side (eth0): 192.0.2.2 (one-arm) or
    /// 198.51.100.2 (two-arm).
    pub fn lb_addr(&self) -> Ipv4Addr {
        if self.two_arm {
            Ipv4Addr::new(198, 51, 100, 2)
        } else {
            Ipv4Addr::new(192, 0, 2, 2)
        }
    }

    /// The LB's address on the backend segment: 192.0.2.2 (eth0 one-arm, eth1 two-arm).
    pub fn lb_backend_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 2)
    }

    /// Interfaces inside the LB namespace to attach XDP to: `["eth0"]`
    /// (one-arm) or `["eth0", "eth1"]` (two-arm: client side, backend side).
    pub fn lb_interfaces(&self) -> Vec<String> {
        if self.two_arm {
            vec!["eth0".into(), "eth1".into()]
        } else {
            vec!["eth0".into()]
        }
    }

    /// The LB interface facing the backends: `eth0` (one-arm) or `eth1` (two-arm).
    pub fn lb_backend_interface(&self) -> &'static str {
        if self.two_arm { "eth1" } else { "eth0" }
    }

    /// The client's IPv6 address: 2001:db8::1 (one-arm) or 2001:db8:1::1 (two-arm).
    pub fn client_addr6(&self) -> Ipv6Addr {
        if self.two_arm {
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)
        } else {
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
        }
    }

    /// The LB's IPv6 address on the backend segment: 2001:db8::2 (eth0 one-arm, eth1
    /// two-arm).
    pub fn lb_backend_addr6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)
    }

    /// A backend's IPv6 address (2001:db8::11, ::12, ...).
    pub fn backend_addr6(&self, index: usize) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11 + index as u16)
    }

    /// The backend with this name.
    pub fn backend(&self, name: &str) -> Result<&Backend> {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .with_context(|| format!("no backend named {name:?} in lab {}", self.prefix))
    }

    /// The backend with this name, mutably.
    pub fn backend_mut(&mut self, name: &str) -> Result<&mut Backend> {
        let prefix = &self.prefix;
        self.backends
            .iter_mut()
            .find(|b| b.name == name)
            .with_context(|| format!("no backend named {name:?} in lab {prefix}"))
    }

    /// Starts on every backend an HTTP server on `port` answering its name.
    pub fn start_http_backends(&mut self, port: u16) -> Result<()> {
        for b in &mut self.backends {
            b.start_http(port)?;
        }
        Ok(())
    }

    /// Starts on every backend a UDP server on `port` answering its name.
    pub fn start_udp_backends(&mut self, port: u16) -> Result<()> {
        for b in &mut self.backends {
            b.start_udp(port)?;
        }
        Ok(())
    }

    /// Starts an HTTP server on one backend (e.g. to bring it back after a stop).
    pub fn start_http_backend(&mut self, name: &str, port: u16) -> Result<()> {
        self.backend_mut(name)?.start_http(port)
    }

    /// Starts a UDP server on one backend.
    pub fn start_udp_backend(&mut self, name: &str, port: u16) -> Result<()> {
        self.backend_mut(name)?.start_udp(port)
    }

    /// Kills all servers of that backend; its namespace and addresses stay,
    /// so connections to it are refused (RST).
    pub fn stop_backend_server(&mut self, name: &str) -> Result<()> {
        self.backend_mut(name)?.stop_servers();
        Ok(())
    }
}

/// A namespace holding bridge `br0`, with IPv6 and multicast snooping off so
/// the bridge itself sends nothing.
pub(crate) fn switch_ns(prefix: &str, role: &str) -> Result<Netns> {
    let ns = Netns::named(format!("{prefix}{role}"))?;
    ns.sysctl(&[
        ("net/ipv6/conf/all/disable_ipv6", "1"),
        ("net/ipv6/conf/default/disable_ipv6", "1"),
    ])?;
    ns.ip([
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "stp_state",
        "0",
        "mcast_snooping",
        "0",
    ])?;
    ns.ip(["link", "set", "br0", "up"])?;
    Ok(ns)
}

/// A namespace for a host (client, LB, backend); IPv6 stays usable but its
/// DAD and router solicitations are off so interfaces are quiet and ready at once.
pub(crate) fn endpoint_ns(prefix: &str, role: &str) -> Result<Netns> {
    let ns = Netns::named(format!("{prefix}{role}"))?;
    ns.sysctl(&[
        ("net/ipv6/conf/default/accept_dad", "0"),
        ("net/ipv6/conf/default/dad_transmits", "0"),
        ("net/ipv6/conf/default/router_solicitations", "0"),
        ("net/ipv6/conf/default/accept_ra", "0"),
    ])?;
    Ok(ns)
}

/// Creates the veth pair directly in its two namespaces (the host namespace
/// never sees it), enslaves the switch end to `br0` and brings both up.
pub(crate) fn connect(p: &Port<'_>) -> Result<()> {
    p.switch.ip([
        "link",
        "add",
        &p.port,
        "type",
        "veth",
        "peer",
        "name",
        p.ifname,
        "netns",
        p.endpoint.name(),
    ])?;
    p.switch
        .ip(["link", "set", &p.port, "master", "br0", "up"])?;
    p.endpoint.ip(["link", "set", p.ifname, "up"])?;
    tune_veth(p.switch, &p.port)?;
    tune_veth(p.endpoint, p.ifname)?;
    Ok(())
}

/// GRO on: a veth only runs NAPI (needed to receive frames that native XDP on
/// its peer redirects to it) with GRO or an XDP program on it; XDP_TX further
/// needs a program on the receiving end (`attach_xdp_pass`).
/// TX checksum offload off: the stack then writes full checksums, because a
/// frame that XDP forwards loses the skb's "checksum partial" state and would
/// arrive with a bad checksum.
pub(crate) fn tune_veth(ns: &Netns, dev: &str) -> Result<()> {
    let mut cmd = ns.command("ethtool");
    cmd.args(["-K", dev, "gro", "on", "tx", "off"]);
    run_checked(&mut cmd).with_context(|| format!("tuning {dev} in netns {}", ns.name()))?;
    Ok(())
}
