//! Turns the raw serde shapes into the validated model: types every scalar, applies
//! defaults, checks ranges and cross-entry rules (families, duplicates, schedule size),
//! and reports the first problem at the offending key or value.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use toml::{Spanned, Value};
use xdp_lb_common::{DEFAULT_MAX_FLOWS, MAX_BACKENDS, MAX_SCHEDULE_LEN, MAX_SERVICES};

use super::duration::{DURATION_FORM, fmt_duration, max_duration, parse_duration};
use super::error::{ConfigError, SourceText};
use super::group::Group;
use super::raw::{
    RawAnnounce, RawConfig, RawDataplane, RawGlobal, RawRealServer, RawVirtualServer,
};
use super::{
    Announce, Config, Dataplane, Forwarding, Global, NatTimeouts, Persistence, Protocol, Quorum,
    RealServer, Scheduler, VirtualServer, XdpMode, group_name, service_name,
};

const MAX_FLOWS: RangeInclusive<i64> = 1024..=16_777_216;
const DEFAULT_NEIGHBOUR_TIMEOUT: Duration = Duration::from_secs(5);
const PORTS: RangeInclusive<i64> = 1..=65535;
const WEIGHTS: RangeInclusive<i64> = 0..=65535;
const DEFAULT_WEIGHT: u32 = 1;
/// Linux `IFNAMSIZ` is 16 including the terminating NUL.
pub(super) const MAX_IFNAME_BYTES: usize = 15;

const XDP_MODES: Choices<XdpMode> = Choices {
    key: "xdp_mode",
    valid: &[
        ("auto", XdpMode::Auto),
        ("driver", XdpMode::Driver),
        ("generic", XdpMode::Generic),
    ],
    not_implemented: &[],
    aliases: &[("native", "driver"), ("drv", "driver"), ("skb", "generic")],
};
pub(super) const PROTOCOLS: Choices<Protocol> = Choices {
    key: "protocol",
    valid: &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
    not_implemented: &[],
    aliases: &[],
};
const SCHEDULERS: Choices<Scheduler> = Choices {
    key: "scheduler",
    valid: &[
        ("rr", Scheduler::Rr),
        ("wrr", Scheduler::Wrr),
        ("sh", Scheduler::Sh),
        ("dh", Scheduler::Dh),
        ("maglev", Scheduler::Maglev),
        ("lc", Scheduler::Lc),
        ("wlc", Scheduler::Wlc),
        ("sed", Scheduler::Sed),
        ("nq", Scheduler::Nq),
    ],
    not_implemented: &[],
    // IPVS's Maglev scheduler hashes the source address unless told otherwise.
    aliases: &[("mh", "sh"), ("source_hash", "sh")],
};
const FORWARDINGS: Choices<Forwarding> = Choices {
    key: "forwarding",
    valid: &[
        ("dr", Forwarding::Dr),
        ("nat", Forwarding::Nat),
        ("tun", Forwarding::Tun),
    ],
    not_implemented: &[],
    // ipvsadm calls them gatewaying, masquerading and ipip.
    aliases: &[
        ("direct", "dr"),
        ("route", "dr"),
        ("gatewaying", "dr"),
        ("masq", "nat"),
        ("masquerading", "nat"),
        ("ipip", "tun"),
        ("tunnel", "tun"),
    ],
};

/// The values a string-valued key accepts.
pub(super) struct Choices<T: 'static> {
    key: &'static str,
    valid: &'static [(&'static str, T)],
    /// Values the design names that this version does not implement yet.
    not_implemented: &'static [&'static str],
    /// Spellings from other tools (keepalived, iproute2) and what we call them.
    aliases: &'static [(&'static str, &'static str)],
}

impl<T: Copy> Choices<T> {
    fn names(&self) -> String {
        let names: Vec<String> = self
            .valid
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        names.join(", ")
    }
}

pub(super) fn validate(raw: RawConfig, src: &SourceText<'_>) -> Result<Config, ConfigError> {
    let v = Validator { src };
    let global = match raw.global {
        Some(global) => v.global(global.into_inner())?,
        None => Global::default(),
    };
    // Where `max_flows_v6` is written, to say so if it leaves an IPv6 service without
    // the tables it needs.
    let v6_capacity_span = raw
        .dataplane
        .as_ref()
        .and_then(|d| d.get_ref().max_flows_v6.as_ref())
        .map(|v| v.span());
    let dataplane = match raw.dataplane {
        Some(dataplane) => v.dataplane(dataplane)?,
        None => {
            return Err(src.error(
                0..0,
                "missing table `[dataplane]`: it needs at least `interfaces`, \
                 e.g. `interfaces = [\"eth0\"]`",
            ));
        }
    };
    let filter = v.filter(raw.filter)?;
    let groups = v.server_groups(raw.virtual_server_group)?;
    let virtual_servers = v.virtual_servers(raw.virtual_server, groups, filter.deny.len())?;
    v.ipv6_tables_for(&dataplane, v6_capacity_span, &virtual_servers)?;
    let scripts = v.scripts(raw.script)?;
    let bfd = v.bfd_sessions(raw.bfd)?;
    let vrrp = v.vrrp_instances(raw.vrrp, &virtual_servers, &scripts, &bfd)?;
    let sync_groups = v.sync_groups(raw.vrrp_sync_group, &vrrp)?;
    let announce = v.announce(raw.announce)?;
    v.announced_not_on_vrrp(&virtual_servers, &vrrp)?;
    let sync = v.sync(raw.sync, &vrrp)?;
    Ok(Config {
        global,
        dataplane,
        virtual_servers,
        filter,
        announce,
        sync,
        vrrp,
        scripts,
        sync_groups,
        bfd,
    })
}

pub(super) struct Validator<'s, 'a> {
    pub(super) src: &'s SourceText<'a>,
}

impl Validator<'_, '_> {
    fn global(&self, raw: RawGlobal) -> Result<Global, ConfigError> {
        let router_id = match &raw.router_id {
            Some(value) => {
                let id = self.string(value, "router_id", "a non-empty string such as \"lb1\"")?;
                if id.trim().is_empty() {
                    return Err(self.src.error(
                        value.span(),
                        "`router_id` is empty: use a non-empty string such as \"lb1\", \
                         or leave it out",
                    ));
                }
                Some(id.to_owned())
            }
            None => None,
        };
        let api_token = match &raw.api_token {
            Some(value) => {
                let token = self.string(value, "api_token", "a secret of 16 or more characters")?;
                if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(self.src.error(
                        value.span(),
                        "`api_token` must be 16 or more printable characters without spaces \
                         (clients send it as `Authorization: Bearer <token>`)",
                    ));
                }
                Some(token.to_owned())
            }
            None => None,
        };
        // On by default, on loopback, so `xdp-lb status` works without editing the
        // configuration; "off" turns it off.
        let api = match &raw.api {
            Some(value) => self.api(value, api_token.is_some())?,
            None => Global::default().api,
        };
        let dump_dir = match &raw.dump_dir {
            Some(value) => {
                let dir =
                    self.string(value, "dump_dir", "an absolute directory such as \"/tmp\"")?;
                if !dir.starts_with('/') {
                    return Err(self.src.error(
                        value.span(),
                        format!(
                            "`dump_dir` = {dir:?} must be an absolute directory such as \"/tmp\""
                        ),
                    ));
                }
                std::path::PathBuf::from(dir)
            }
            None => Global::default().dump_dir,
        };
        let bfdd_socket = match &raw.bfdd_socket {
            Some(value) => {
                let path = self.string(
                    value,
                    "bfdd_socket",
                    "bfdd's control socket such as \"/var/run/frr/bfdd.sock\"",
                )?;
                if !path.starts_with('/') {
                    return Err(self.src.error(
                        value.span(),
                        format!("`bfdd_socket` = {path:?} must be an absolute path such as \"/var/run/frr/bfdd.sock\""),
                    ));
                }
                std::path::PathBuf::from(path)
            }
            None => Global::default().bfdd_socket,
        };
        Ok(Global {
            router_id,
            api,
            api_token,
            dump_dir,
            bfdd_socket,
        })
    }

    /// `[global] api`: an address, or "off". Reachable from other hosts (and through
    /// the VIPs) only with a token.
    fn api(
        &self,
        value: &Spanned<Value>,
        has_token: bool,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self.string(
            value,
            "api",
            "an address and port such as \"127.0.0.1:9180\", or \"off\"",
        )?;
        if text == "off" {
            return Ok(None);
        }
        let addr = text.parse::<SocketAddr>().map_err(|_| {
            self.src.error(
                value.span(),
                format!(
                    "`api` = {text:?} is not an address and port such as \"127.0.0.1:9180\" \
                     or \"[::1]:9180\", nor \"off\""
                ),
            )
        })?;
        if !has_token && !addr.ip().is_loopback() {
            return Err(self.src.error(
                value.span(),
                format!(
                    "`api` = \"{addr}\" is reachable from other hosts (and through the VIPs): \
                     set `api_token` as well, or use a loopback address such as \"127.0.0.1:{}\"",
                    addr.port()
                ),
            ));
        }
        Ok(Some(addr))
    }

    /// `[announce]`: the interface announced VIPs go on, and how long a drain waits
    /// for the last packet.
    fn announce(&self, raw: Option<Spanned<RawAnnounce>>) -> Result<Announce, ConfigError> {
        let mut announce = Announce::default();
        let Some(raw) = raw else {
            return Ok(announce);
        };
        let raw = raw.into_inner();
        if let Some(value) = &raw.interface {
            let name = self.string(value, "interface", "an interface name such as \"lo\"")?;
            if !is_valid_ifname(name) {
                return Err(self.src.error(
                    value.span(),
                    format!(
                        "`[announce] interface`: {name:?} is not a valid interface name \
                         (1 to {MAX_IFNAME_BYTES} bytes, no '/', ':' or whitespace, \
                         not \".\" or \"..\")"
                    ),
                ));
            }
            announce.interface = name.to_owned();
        }
        if let Some(value) = &raw.drain_idle {
            announce.drain_idle = self.duration(value, "drain_idle")?;
            if announce.drain_idle < Duration::from_millis(100) {
                return Err(self.src.error(
                    value.span(),
                    "`drain_idle` must be at least \"100ms\": a drain is complete once the \
                     announced services saw no packet for this long",
                ));
            }
        }
        Ok(announce)
    }

    /// A VIP is either announced (every node forwards it, the routers choose) or moved
    /// by VRRP (one node forwards it), not both.
    fn announced_not_on_vrrp(
        &self,
        services: &[VirtualServer],
        vrrp: &[super::VrrpInstance],
    ) -> Result<(), ConfigError> {
        for vs in services.iter().filter(|vs| vs.announce) {
            for vip in vs.vips() {
                if let Some(vi) = vrrp.iter().find(|vi| vi.identity.vips().contains(&vip)) {
                    return Err(ConfigError::Invalid {
                        location: vs.location.clone(),
                        message: format!(
                            "virtual server {}: `announce = true` on {vip}, which \
                             `[vrrp.{}]` moves between nodes: a VIP is either announced by \
                             every node (routers spread it) or held by the VRRP MASTER, \
                             not both; remove `announce` or the VIP from the instance",
                            vs.name(),
                            vi.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn dataplane(&self, table: Spanned<RawDataplane>) -> Result<Dataplane, ConfigError> {
        let span = table.span();
        let raw = table.into_inner();
        let Some(list) = raw.interfaces else {
            return Err(self.src.error(
                span,
                "`[dataplane]` is missing `interfaces`, the NICs to attach the XDP program to, \
                 e.g. `interfaces = [\"eth0\"]`",
            ));
        };
        if list.get_ref().is_empty() {
            return Err(self.src.error(
                list.span(),
                "`interfaces` is empty: list at least one NIC, e.g. `interfaces = [\"eth0\"]`",
            ));
        }
        let mut interfaces: Vec<String> = Vec::new();
        for item in list.get_ref() {
            let name = self.string(
                item,
                "interfaces",
                "an array of interface names such as [\"eth0\"]",
            )?;
            if !is_valid_ifname(name) {
                return Err(self.src.error(
                    item.span(),
                    format!(
                        "`interfaces`: {name:?} is not a valid interface name \
                         (1 to {MAX_IFNAME_BYTES} bytes, no '/', ':' or whitespace, \
                         not \".\" or \"..\")"
                    ),
                ));
            }
            if interfaces.iter().any(|seen| seen == name) {
                return Err(self
                    .src
                    .error(item.span(), format!("`interfaces` lists {name:?} twice")));
            }
            interfaces.push(name.to_owned());
        }

        let xdp_mode = match &raw.xdp_mode {
            Some(value) => self.choice(value, &XDP_MODES)?,
            None => XdpMode::Auto,
        };
        let new_flow_rate = match &raw.new_flow_rate {
            Some(value) => self.integer(value, "new_flow_rate", 0..=100_000_000)? as u64,
            None => 0,
        };
        let max_flows = match &raw.max_flows {
            Some(value) => self.integer(value, "max_flows", MAX_FLOWS)? as u32,
            None => DEFAULT_MAX_FLOWS,
        };
        let max_flows_v6 = match &raw.max_flows_v6 {
            Some(value) => {
                let valid = format!(
                    "0 (no IPv6 connection tables) or {} to {}",
                    MAX_FLOWS.start(),
                    MAX_FLOWS.end()
                );
                match value.get_ref() {
                    Value::Integer(0) => 0,
                    Value::Integer(n) if MAX_FLOWS.contains(n) => *n as u32,
                    Value::Integer(n) => {
                        return Err(self.src.error(
                            value.span(),
                            format!(
                                "`max_flows_v6` = {n} is out of range: valid values are {valid}"
                            ),
                        ));
                    }
                    other => {
                        return Err(self.src.error(
                            value.span(),
                            format!(
                                "`max_flows_v6` must be an integer, {valid}; found {}",
                                other.type_str()
                            ),
                        ));
                    }
                }
            }
            None => max_flows,
        };
        let neighbour_timeout = match &raw.neighbour_timeout {
            Some(value) => self.duration(value, "neighbour_timeout")?,
            None => DEFAULT_NEIGHBOUR_TIMEOUT,
        };
        let pin_dir = match &raw.pin_dir {
            Some(value) => {
                let dir = self.string(
                    value,
                    "pin_dir",
                    "an absolute directory on bpffs such as \"/sys/fs/bpf/xdp-lb\", or \"off\"",
                )?;
                if dir == "off" {
                    None
                } else if !dir.starts_with('/') {
                    return Err(self.src.error(
                        value.span(),
                        format!(
                            "`pin_dir` = {dir:?} must be an absolute directory on bpffs such as \"/sys/fs/bpf/xdp-lb\", or \"off\""
                        ),
                    ));
                } else {
                    Some(std::path::PathBuf::from(dir))
                }
            }
            None => Some(std::path::PathBuf::from(crate::dataplane::pins::BPFFS_ROOT)),
        };
        let defaults = NatTimeouts::default();
        let mut nat_timeouts = defaults;
        for (value, key, slot) in [
            (
                &raw.nat_tcp_timeout,
                "nat_tcp_timeout",
                &mut nat_timeouts.tcp,
            ),
            (
                &raw.nat_tcp_fin_timeout,
                "nat_tcp_fin_timeout",
                &mut nat_timeouts.tcp_fin,
            ),
            (
                &raw.nat_udp_timeout,
                "nat_udp_timeout",
                &mut nat_timeouts.udp,
            ),
        ] {
            if let Some(value) = value {
                let d = self.duration(value, key)?;
                if d.is_zero() {
                    return Err(self.src.error(
                        value.span(),
                        format!("`{key}` must be longer than 0s: an entry that expires at once breaks every NAT connection"),
                    ));
                }
                *slot = d;
            }
        }
        Ok(Dataplane {
            interfaces,
            xdp_mode,
            max_flows,
            max_flows_v6,
            new_flow_rate,
            pin_dir,
            neighbour_timeout,
            nat_timeouts,
        })
    }

    /// `max_flows_v6 = 0` leaves no IPv6 connection tables: refused if a virtual server
    /// with an IPv6 VIP needs them (every one but a consistent-hash service without a
    /// flow table, which keeps no state).
    fn ipv6_tables_for(
        &self,
        dataplane: &Dataplane,
        span: Option<std::ops::Range<usize>>,
        services: &[VirtualServer],
    ) -> Result<(), ConfigError> {
        let (0, Some(span)) = (dataplane.max_flows_v6, span) else {
            return Ok(());
        };
        let needs = services
            .iter()
            .find(|s| s.members.iter().any(|m| m.is_ipv6()) && s.flow_table);
        match needs {
            None => Ok(()),
            Some(s) => Err(self.src.error(
                span,
                format!(
                    "`max_flows_v6` = 0 leaves no IPv6 connection tables, but virtual server \
                     {} has an IPv6 VIP and keeps a flow entry per connection: give the \
                     IPv6 tables a capacity (1024 to 16777216; it defaults to `max_flows`), \
                     or remove the service",
                    s.name()
                ),
            )),
        }
    }

    fn virtual_servers(
        &self,
        raws: Vec<Spanned<RawVirtualServer>>,
        groups: BTreeMap<String, Group>,
        global_rules: usize,
    ) -> Result<Vec<VirtualServer>, ConfigError> {
        let mut rules = global_rules;
        // (vip:port, protocol) -> offset of the first definition and its service's name.
        let mut seen: HashMap<(SocketAddr, Protocol), (usize, String)> = HashMap::new();
        let mut used_groups: HashSet<&str> = HashSet::new();
        let mut keys = 0;
        let mut services = Vec::with_capacity(raws.len());
        let mut backends = 0;
        // Every service's VIP, for the real servers to be checked against (a bad `vip`
        // is reported at its own service).
        let vips: HashMap<IpAddr, String> = raws
            .iter()
            .filter_map(|t| {
                let raw = t.get_ref();
                let protocol = match &raw.protocol {
                    Some(value) => self.choice(value, &PROTOCOLS).ok()?,
                    None => Protocol::Tcp,
                };
                if let Some(group) = &raw.group {
                    let name = group.get_ref().as_str()?;
                    let g = groups.get(name)?;
                    let service = group_name(name, protocol);
                    return Some(
                        g.members
                            .iter()
                            .map(|(m, _)| (m.ip(), service.clone()))
                            .collect::<Vec<_>>(),
                    );
                }
                let vip = self.ip(raw.vip.as_ref()?, "vip", "").ok()?;
                let port = self.port(raw.port.as_ref()?).ok()?;
                Some(vec![(vip, service_name(vip, port, protocol))])
            })
            .flatten()
            .collect();
        for table in raws {
            let span = table.span();
            let raw = table.into_inner();
            let protocol = match &raw.protocol {
                Some(value) => self.choice(value, &PROTOCOLS)?,
                None => Protocol::Tcp,
            };
            // Its pairs, each with the span a clash is reported at.
            let (group, members): (Option<String>, Vec<(SocketAddr, Range<usize>)>) = match &raw
                .group
            {
                Some(value) => {
                    if let Some(other) = raw.vip.as_ref().or(raw.port.as_ref()) {
                        return Err(self.src.error(
                                other.span(),
                                "a `[[virtual_server]]` serves either a `group` or one `vip`                                  and `port`: put this pair in the group's `members`",
                            ));
                    }
                    let name = self.string(value, "group", "\"web\"")?;
                    let Some(g) = groups.get(name) else {
                        let known: Vec<&str> = groups.keys().map(String::as_str).collect();
                        return Err(self.src.error(
                            value.span(),
                            format!(
                                "`group` = {name:?}: there is no `[virtual_server_group.{name}]`{}",
                                if known.is_empty() {
                                    String::new()
                                } else {
                                    format!("; defined: {}", known.join(", "))
                                }
                            ),
                        ));
                    };
                    used_groups.insert(groups.get_key_value(name).expect("found").0);
                    (Some(name.to_owned()), g.members.clone())
                }
                None => {
                    let Some(vip_value) = &raw.vip else {
                        return Err(self.src.error(
                            span,
                            "`[[virtual_server]]` is missing `vip`, the virtual IP address, \
                                 e.g. `vip = \"192.0.2.100\"` (or `group`, the name of a \
                                 `[virtual_server_group.NAME]`)",
                        ));
                    };
                    let vip = self.ip(vip_value, "vip", "192.0.2.100")?;
                    let Some(port_value) = &raw.port else {
                        return Err(self.src.error(
                                span,
                                format!(
                                    "`[[virtual_server]]` for vip {vip} is missing `port`, e.g. `port = 80`"
                                ),
                            ));
                    };
                    let port = self.port(port_value)?;
                    (None, vec![(SocketAddr::new(vip, port), vip_value.span())])
                }
            };
            let name = match &group {
                Some(g) => group_name(g, protocol),
                None => service_name(members[0].0.ip(), members[0].0.port(), protocol),
            };
            // Where the service is named in errors: its `vip`, or its `group`.
            let at = raw
                .group
                .as_ref()
                .or(raw.vip.as_ref())
                .expect("a group or a vip")
                .span();
            for (member, member_span) in &members {
                match seen.entry((*member, protocol)) {
                    Entry::Occupied(first) => {
                        let (offset, other) = first.get();
                        let message = if *other == name {
                            format!(
                                "virtual server {name} is defined twice (first at line {})",
                                self.src.line_of(*offset)
                            )
                        } else {
                            format!(
                                "virtual server {name}: {member}/{protocol} is already served by \
                                 virtual server {other} (line {}); a VIP:port belongs to one \
                                 service",
                                self.src.line_of(*offset)
                            )
                        };
                        return Err(self.src.error(member_span.clone(), message));
                    }
                    Entry::Vacant(slot) => {
                        slot.insert((member_span.start, name.clone()));
                    }
                }
            }
            // One SERVICES entry per pair: say so here, not at start.
            keys += members.len();
            if keys > MAX_SERVICES as usize {
                return Err(self.src.error(
                    at.clone(),
                    format!(
                        "virtual server {name} brings the VIP:port pairs served to {keys}; the \
                         data plane holds at most {MAX_SERVICES}"
                    ),
                ));
            }
            let members: Vec<SocketAddr> = members.into_iter().map(|(m, _)| m).collect();
            let vip = members[0].ip();
            // The port real servers default to: the members' port, if they have one.
            let port = Some(members[0].port()).filter(|p| members.iter().all(|m| m.port() == *p));
            let scheduler = match &raw.scheduler {
                Some(value) => self.choice(value, &SCHEDULERS)?,
                None => Scheduler::Wrr,
            };
            let forwarding = match &raw.forwarding {
                Some(value) => self.choice(value, &FORWARDINGS)?,
                None => Forwarding::Dr,
            };
            // Every forwarding method serves both families (NAT66, IPv6-in-IPv6 TUN);
            // only TUN crosses them (the tunnel is of the real server's family), a DR or
            // NAT real server of the other family than its vip is refused below.
            let real_servers = self.real_servers(
                &raw.real_server,
                (vip, forwarding == Forwarding::Tun),
                port,
                &name,
                &vips,
            )?;
            if real_servers.is_empty() {
                return Err(self.src.error(
                    at.clone(),
                    format!(
                        "virtual server {name} has no real servers: add at least one \
                         `[[virtual_server.real_server]]` after it"
                    ),
                ));
            }
            // Only wrr's schedule grows with the weights (rr ignores them, the hash
            // tables have a fixed size).
            let len = schedule_len(real_servers.iter().map(|rs| rs.weight));
            if scheduler == Scheduler::Wrr && len > u64::from(MAX_SCHEDULE_LEN) {
                return Err(self.src.error(
                    at.clone(),
                    format!(
                        "virtual server {name}: its weights need a schedule of {len} slots \
                         (sum of weights divided by their greatest common divisor), more than \
                         the limit of {MAX_SCHEDULE_LEN}; use smaller weights or weights with \
                         a common divisor"
                    ),
                ));
            }
            let sorry_server = match &raw.sorry_server {
                Some(value) => {
                    let sorry = self.sorry_server(value, vip, port, &name)?;
                    let role = format!("sorry server {sorry} of virtual server {name}");
                    self.elsewhere(sorry.ip(), value, &role, &vips)?;
                    Some(sorry)
                }
                None => None,
            };
            let quorum = self.quorum(&raw)?;
            let persistence = self.persistence(&raw, vip)?;
            let (allow, deny) = self.service_filter(
                raw.allow.as_ref(),
                raw.deny.as_ref(),
                vip,
                &name,
                &mut rules,
            )?;
            let flow_table = match &raw.flow_table {
                None => true,
                Some(value) => {
                    let on = self.boolean(value, "flow_table")?;
                    let why = if on {
                        None
                    } else if !matches!(
                        scheduler,
                        Scheduler::Maglev | Scheduler::Sh | Scheduler::Dh
                    ) {
                        Some(
                            "a consistent-hash scheduler (\"maglev\", \"sh\" or \"dh\"): with rr, wrr or a least-connection scheduler a connection's packets would go to every real server",
                        )
                    } else if forwarding == Forwarding::Nat {
                        Some(
                            "DR or TUN forwarding: NAT keeps each connection's translation in the table",
                        )
                    } else if persistence.is_some() {
                        Some(
                            "no persistence: persistence remembers a client's server per connection start",
                        )
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        return Err(self.src.error(
                            value.span(),
                            format!("virtual server {name}: `flow_table = false` needs {why}"),
                        ));
                    }
                    on
                }
            };
            let announce = match &raw.announce {
                Some(value) => self.boolean(value, "announce")?,
                None => false,
            };
            // The data plane's tables are sized at build time: say so here, not at start.
            backends += real_servers.len() + usize::from(sorry_server.is_some());
            if backends > MAX_BACKENDS as usize {
                return Err(self.src.error(
                    at.clone(),
                    format!(
                        "virtual server {name} brings the real servers (sorry servers included) \
                         to {backends}; the data plane holds at most {MAX_BACKENDS}"
                    ),
                ));
            }
            if services.len() == MAX_SERVICES as usize {
                return Err(self.src.error(
                    at.clone(),
                    format!(
                        "virtual server {name} is one too many: the data plane holds at most \
                         {MAX_SERVICES} virtual servers"
                    ),
                ));
            }
            services.push(VirtualServer {
                group,
                members,
                protocol,
                scheduler,
                forwarding,
                real_servers,
                sorry_server,
                quorum,
                persistence,
                flow_table,
                allow,
                deny,
                announce,
                location: self.src.locate(at.start),
            });
        }
        if let Some((name, g)) = groups
            .iter()
            .find(|(n, _)| !used_groups.contains(n.as_str()))
        {
            return Err(self.src.error(
                g.span.clone(),
                format!(
                    "`[virtual_server_group.{name}]` is not served by any `[[virtual_server]]`: \
                     add one with `group = \"{name}\"`, or remove the group"
                ),
            ));
        }
        Ok(services)
    }

    /// A real or sorry server must be another host the NIC can send to: not this host's
    /// loopback, not a VIP of this configuration, not an address no host has.
    fn elsewhere(
        &self,
        addr: IpAddr,
        value: &Spanned<Value>,
        role: &str,
        vips: &HashMap<IpAddr, String>,
    ) -> Result<(), ConfigError> {
        let why = if let Some(why) = not_another_host(addr) {
            why.to_owned()
        } else if let Some(service) = vips.get(&addr) {
            format!("the VIP of virtual server {service}; a real server has an address of its own")
        } else {
            return Ok(());
        };
        Err(self.src.error(value.span(), format!("{role} is {why}")))
    }

    fn real_servers(
        &self,
        raws: &[Spanned<RawRealServer>],
        (vip, any_family): (IpAddr, bool),
        service_port: Option<u16>,
        service: &str,
        vips: &HashMap<IpAddr, String>,
    ) -> Result<Vec<RealServer>, ConfigError> {
        // (address, port) -> offset of the first definition's address.
        let mut seen: HashMap<(IpAddr, u16), usize> = HashMap::new();
        let mut real_servers = Vec::with_capacity(raws.len());
        for table in raws {
            let raw = table.get_ref();
            let Some(address_value) = &raw.address else {
                return Err(self.src.error(
                    table.span(),
                    format!(
                        "`[[virtual_server.real_server]]` of virtual server {service} is missing \
                         `address`, e.g. `address = \"192.0.2.11\"`"
                    ),
                ));
            };
            let address = self.ip(address_value, "address", "192.0.2.11")?;
            if address.is_ipv4() != vip.is_ipv4() && !any_family {
                return Err(self.src.error(
                    address_value.span(),
                    format!(
                        "real server {address} is {} but virtual server {service} is {}: \
                         a DR or NAT real server must be in the same address family as its \
                         vip (only `forwarding = \"tun\"` tunnels across families)",
                        family(address),
                        family(vip)
                    ),
                ));
            }
            let role = format!("real server {address} of virtual server {service}");
            self.elsewhere(address, address_value, &role, vips)?;
            let port = match (&raw.port, service_port) {
                (Some(value), _) => self.port(value)?,
                (None, Some(port)) => port,
                (None, None) => {
                    return Err(self.src.error(
                        address_value.span(),
                        format!(
                            "real server {address} of virtual server {service} needs a `port`: \
                             the service's members have several, and the port is what its \
                             checks connect to (and NAT's destination)"
                        ),
                    ));
                }
            };
            let weight = match &raw.weight {
                Some(value) => self.integer(value, "weight", WEIGHTS)? as u32,
                None => DEFAULT_WEIGHT,
            };
            let inhibit_on_failure = match &raw.inhibit_on_failure {
                Some(value) => self.boolean(value, "inhibit_on_failure")?,
                None => false,
            };
            let check = match &raw.check {
                Some(table) => Some(self.check(table, SocketAddr::new(address, port), service)?),
                None => None,
            };
            match seen.entry((address, port)) {
                Entry::Occupied(first) => {
                    return Err(self.src.error(
                        address_value.span(),
                        format!(
                            "real server {} is listed twice in virtual server {service} \
                             (first at line {})",
                            SocketAddr::new(address, port),
                            self.src.line_of(*first.get())
                        ),
                    ));
                }
                Entry::Vacant(slot) => {
                    slot.insert(address_value.span().start);
                }
            }
            real_servers.push(RealServer {
                address,
                port,
                weight,
                inhibit_on_failure,
                check,
                location: self.src.locate(address_value.span().start),
            });
        }
        Ok(real_servers)
    }

    // ----- typed scalars -----

    pub(super) fn string<'v>(
        &self,
        value: &'v Spanned<Value>,
        key: &str,
        form: &str,
    ) -> Result<&'v str, ConfigError> {
        match value.get_ref() {
            Value::String(s) => Ok(s),
            other => Err(self.src.error(
                value.span(),
                format!("`{key}` must be {form}, found {}", other.type_str()),
            )),
        }
    }

    pub(super) fn integer(
        &self,
        value: &Spanned<Value>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Result<i64, ConfigError> {
        let (lo, hi) = (range.start(), range.end());
        match value.get_ref() {
            Value::Integer(n) if range.contains(n) => Ok(*n),
            Value::Integer(n) => Err(self.src.error(
                value.span(),
                format!("`{key}` = {n} is out of range: valid values are {lo} to {hi}"),
            )),
            other => Err(self.src.error(
                value.span(),
                format!(
                    "`{key}` must be an integer from {lo} to {hi}, found {}",
                    other.type_str()
                ),
            )),
        }
    }

    pub(super) fn port(&self, value: &Spanned<Value>) -> Result<u16, ConfigError> {
        Ok(self.integer(value, "port", PORTS)? as u16)
    }

    pub(super) fn duration(
        &self,
        value: &Spanned<Value>,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        let text = self.string(value, key, DURATION_FORM)?;
        let d = parse_duration(text).ok_or_else(|| {
            self.src.error(
                value.span(),
                format!("`{key}` = {text:?} is not a valid duration: expected {DURATION_FORM}"),
            )
        })?;
        let max = max_duration(key);
        if d > max {
            return Err(self.src.error(
                value.span(),
                format!(
                    "`{key}` = {text:?} is too long: at most {}",
                    fmt_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    pub(super) fn ip(
        &self,
        value: &Spanned<Value>,
        key: &str,
        example: &str,
    ) -> Result<IpAddr, ConfigError> {
        let form = format!("an IP address in a string such as \"{example}\"");
        let text = self.string(value, key, &form)?;
        let Ok(address) = text.trim().parse::<IpAddr>() else {
            let hint = if text.contains('/') {
                ", without a prefix length"
            } else if text.trim().parse::<SocketAddr>().is_ok() {
                "; the port goes in `port`"
            } else {
                ""
            };
            return Err(self.src.error(
                value.span(),
                format!("`{key}` = {text:?} is not an IP address: expected {form}{hint}"),
            ));
        };
        if address.is_unspecified() || address.is_multicast() || is_broadcast(address) {
            return Err(self.src.error(
                value.span(),
                format!("`{key}` = {text:?} is not a unicast address: expected {form}"),
            ));
        }
        Ok(address)
    }

    /// `persistence_timeout` (a duration in whole seconds; "0s" is off, as keepalived's
    /// 0) and `persistence_granularity` (an IPv4 netmask such as "255.255.255.0", or a
    /// prefix length; only with a timeout).
    fn persistence(
        &self,
        raw: &RawVirtualServer,
        vip: IpAddr,
    ) -> Result<Option<Persistence>, ConfigError> {
        let full = if vip.is_ipv4() { 32 } else { 128 };
        let timeout = match &raw.persistence_timeout {
            Some(value) => {
                let timeout = self.duration(value, "persistence_timeout")?;
                if timeout.subsec_nanos() != 0 {
                    return Err(self.src.error(
                        value.span(),
                        "`persistence_timeout` counts whole seconds (as IPVS): e.g. \"300s\" or \"5m\"",
                    ));
                }
                Some(timeout).filter(|t| !t.is_zero())
            }
            None => None,
        };
        let prefix_len = match &raw.persistence_granularity {
            None => full,
            Some(value) => {
                if timeout.is_none() {
                    return Err(self.src.error(
                        value.span(),
                        "`persistence_granularity` needs `persistence_timeout`: without it \
                         there is no persistence to group clients for",
                    ));
                }
                let form = if vip.is_ipv4() {
                    "an IPv4 netmask such as \"255.255.255.0\" or a prefix length from 1 to 32"
                } else {
                    "a prefix length from 1 to 128"
                };
                let prefix = match value.get_ref() {
                    Value::Integer(n) => u8::try_from(*n).ok(),
                    Value::String(mask) if vip.is_ipv4() => mask
                        .parse::<std::net::Ipv4Addr>()
                        .ok()
                        .map(u32::from)
                        .filter(|m| m.leading_ones() + m.trailing_zeros() == 32)
                        .map(|m| m.leading_ones() as u8),
                    _ => None,
                };
                match prefix.filter(|p| (1..=full).contains(p)) {
                    Some(p) => p,
                    None => {
                        return Err(self.src.error(
                            value.span(),
                            format!("`persistence_granularity` must be {form}"),
                        ));
                    }
                }
            }
        };
        Ok(timeout.map(|timeout| Persistence {
            timeout,
            prefix_len,
        }))
    }

    fn quorum(&self, raw: &RawVirtualServer) -> Result<Quorum, ConfigError> {
        let mut q = Quorum::default();
        if let Some(v) = &raw.quorum {
            q.quorum = self.integer(v, "quorum", 1..=u32::MAX as i64)? as u32;
        }
        if let Some(v) = &raw.hysteresis {
            q.hysteresis = self.integer(v, "hysteresis", 0..=u32::MAX as i64)? as u32;
            if q.hysteresis >= q.quorum {
                return Err(self.src.error(
                    v.span(),
                    format!(
                        "`hysteresis` = {} must be below `quorum` = {}: the service could never lose its quorum",
                        q.hysteresis, q.quorum
                    ),
                ));
            }
        }
        q.up = raw
            .quorum_up
            .as_ref()
            .map(|v| self.argv(v, "quorum_up"))
            .transpose()?;
        q.down = raw
            .quorum_down
            .as_ref()
            .map(|v| self.argv(v, "quorum_down"))
            .transpose()?;
        if let Some(v) = &raw.omega {
            q.omega = self.boolean(v, "omega")?;
        }
        Ok(q)
    }

    /// A command as a list of strings, run directly (no shell); its program must exist.
    pub(super) fn argv(
        &self,
        value: &Spanned<Value>,
        key: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let form =
            "a list of strings such as [\"/usr/local/bin/notify\", \"down\"] (run without a shell)";
        let argv = match value.get_ref() {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        let Some(argv) = argv else {
            return Err(self
                .src
                .error(value.span(), format!("`{key}` must be {form}")));
        };
        // A missing or non-executable program is a start-up error, not a silent
        // failure later.
        if let Err(why) = executable(&argv[0]) {
            return Err(self
                .src
                .error(value.span(), format!("`{key}`: {} {why}", argv[0])));
        }
        // keepalived's script security: refused if others could change it (checked
        // again before every run, owner included).
        if let Err(why) = xdp_lb_checks::script_security::check_writable(&argv[0]) {
            return Err(self.src.error(value.span(), format!("`{key}`: {why}")));
        }
        Ok(argv)
    }

    /// `key = ["a", "b"]`: names of `[table.NAME]` tables, each one of `known`.
    pub(super) fn table_names(
        &self,
        value: &Spanned<Value>,
        key: &str,
        table: &str,
        known: &[&str],
        example: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let names = match value.get_ref() {
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        let Some(names) = names else {
            return Err(self.src.error(
                value.span(),
                format!("`{key}` must be a list of [{table}.NAME] names such as [\"{example}\"]"),
            ));
        };
        if let Some(missing) = names.iter().find(|n| !known.contains(&n.as_str())) {
            let defined = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            return Err(self.src.error(
                value.span(),
                format!("`{key}`: there is no [{table}.{missing}] (defined: {defined})"),
            ));
        }
        Ok(names)
    }

    pub(super) fn boolean(&self, value: &Spanned<Value>, key: &str) -> Result<bool, ConfigError> {
        match value.get_ref() {
            Value::Boolean(b) => Ok(*b),
            other => Err(self.src.error(
                value.span(),
                format!("`{key}` must be true or false, found {}", other.type_str()),
            )),
        }
    }

    pub(super) fn choice<T: Copy>(
        &self,
        value: &Spanned<Value>,
        choices: &Choices<T>,
    ) -> Result<T, ConfigError> {
        let key = choices.key;
        let names = choices.names();
        let text = self.string(value, key, &format!("one of {names}"))?;
        if let Some((_, choice)) = choices.valid.iter().find(|(name, _)| *name == text) {
            return Ok(*choice);
        }
        let message = if choices.not_implemented.contains(&text) {
            format!("`{key} = {text:?}` is not implemented yet in this version; valid now: {names}")
        } else {
            let lower = text.to_ascii_lowercase();
            let suggestion = choices
                .valid
                .iter()
                .map(|(name, _)| *name)
                .find(|name| *name == lower)
                .or_else(|| {
                    choices
                        .aliases
                        .iter()
                        .find(|(alias, _)| *alias == lower)
                        .map(|a| a.1)
                });
            match suggestion {
                Some(name) => format!(
                    "invalid `{key}` {text:?}: expected one of {names}; did you mean \"{name}\"?"
                ),
                None => format!("invalid `{key}` {text:?}: expected one of {names}"),
            }
        };
        Err(self.src.error(value.span(), message))
    }
}

/// Linux's `dev_valid_name`: 1..IFNAMSIZ-1 bytes, not "." or "..", no '/', ':' or
/// whitespace. A NUL would end the name early in the kernel's copy.
pub(super) fn is_valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

fn is_broadcast(address: IpAddr) -> bool {
    matches!(address, IpAddr::V4(v4) if v4.is_broadcast())
}

fn family(address: IpAddr) -> &'static str {
    if address.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Length of the smallest schedule that honours the weights exactly: the sum of the
/// weights divided by their greatest common divisor (zero weights take no slot).
fn schedule_len(weights: impl Iterator<Item = u32> + Clone) -> u64 {
    let divisor = weights
        .clone()
        .filter(|&w| w > 0)
        .fold(0u64, |g, w| gcd(g, u64::from(w)));
    if divisor == 0 {
        return 0;
    }
    weights.map(u64::from).sum::<u64>() / divisor
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Why a command's `program` would be refused here (as `argv` refuses it: missing, not
/// executable, or writable by others), e.g. "`/x` does not exist"; `None` if it is fine.
/// The keepalived import uses it to leave out what validation would refuse.
/// Why `addr` cannot be a real or sorry server whatever the rest of the configuration:
/// XDP sends frames to other hosts only.
pub(crate) fn not_another_host(addr: IpAddr) -> Option<&'static str> {
    if addr.is_loopback() {
        Some(
            "a loopback address: XDP forwards to other hosts only, so a server on this host \
             cannot take the service's connections (IPVS's local node has no XDP \
             equivalent); run it on another host",
        )
    } else if addr.is_unspecified() || addr.is_multicast() || addr == IpAddr::from([255; 4]) {
        Some("not the address of one host")
    } else {
        None
    }
}

pub(crate) fn program_problem(program: &str) -> Option<String> {
    if let Err(why) = executable(program) {
        return Some(format!("`{program}` {why}"));
    }
    xdp_lb_checks::script_security::check_writable(program).err()
}

/// Whether `program` can be run: an absolute path to an executable file, or a bare name
/// found on `PATH` (as `execvp` would look it up).
fn executable(program: &str) -> Result<(), &'static str> {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |path: &std::path::Path| {
        std::fs::metadata(path).map(|m| (m.is_file(), m.permissions().mode() & 0o111 != 0))
    };
    if program.contains('/') {
        return match runnable(std::path::Path::new(program)) {
            Err(_) => Err("does not exist"),
            Ok((false, _)) => Err("is not a file"),
            Ok((true, false)) => Err("is not executable (chmod +x it)"),
            Ok((true, true)) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .any(|dir| matches!(runnable(&dir.join(program)), Ok((true, true))));
    if found {
        Ok(())
    } else {
        Err("is not an executable on PATH (give its absolute path)")
    }
}
