//! `[vrrp.NAME]` instances: typed with keepalived's defaults, and the rules that make
//! an instance able to share a VRID with keepalived (v2 only over IPv4, auth only for
//! v2, whole-second v2 intervals, one address family) checked at the offending key.
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use toml::{Spanned, Value};

use super::error::ConfigError;
use super::raw::RawSyncGroup;
use super::raw::{RawScript, RawVrrp};
use super::validate::Validator;
use super::{
    BfdSession, Protocol, SyncGroup, TrackScript, TrackedInterface, TrackedService, VirtualServer,
    VrrpAddress, VrrpIdentity, VrrpInstance, VrrpNotify, VrrpTunables,
};

/// The real (or sorry) server of `services` at `addr`, named, with its service's name.
fn real_server_at(services: &[VirtualServer], addr: IpAddr) -> Option<(String, String)> {
    services.iter().find_map(|v| {
        let real = v.real_servers.iter().find(|rs| rs.address == addr);
        let name = || v.name();
        match (real, v.sorry_server) {
            (Some(rs), _) => Some((format!("real server {}", rs.address), name())),
            (None, Some(sorry)) if sorry.ip() == addr => {
                Some((format!("sorry server {sorry}"), name()))
            }
            _ => None,
        }
    })
}

/// VRRPv3's 12-bit centisecond field.
const MAX_V3_INTERVAL: Duration = Duration::from_millis(40_950);

impl Validator<'_, '_> {
    pub(super) fn vrrp_instances(
        &self,
        raws: BTreeMap<String, Spanned<RawVrrp>>,
        services: &[VirtualServer],
        scripts: &[TrackScript],
        bfd: &[BfdSession],
    ) -> Result<Vec<VrrpInstance>, ConfigError> {
        // (interface, vrid, family) -> first instance's name.
        let mut seen: HashMap<(String, u8, bool), String> = HashMap::new();
        // VIP -> the instance holding it.
        let mut vips: HashMap<IpAddr, String> = HashMap::new();
        let mut out = Vec::with_capacity(raws.len());
        for (name, table) in raws {
            let instance = self.vrrp_instance(&name, &table, services, scripts, bfd)?;
            let id = &instance.identity;
            let key = (id.interface.clone(), id.vrid, id.is_ipv6());
            if let Some(first) = seen.insert(key, name.clone()) {
                let value = table
                    .get_ref()
                    .virtual_router_id
                    .as_ref()
                    .expect("vrid is required");
                return Err(self.src.error(
                    value.span(),
                    format!(
                        "[vrrp.{name}] uses virtual_router_id {} on {} like [vrrp.{first}]: \
                         one VRID per interface and address family",
                        id.vrid, id.interface
                    ),
                ));
            }
            // One VIP, one owner: an instance going BACKUP removes its VIPs, so a VIP in
            // two instances would vanish from under the one that is MASTER.
            for vip in id.vips() {
                let why = if let Some(first) = vips.insert(vip, name.clone()) {
                    format!(
                        "[vrrp.{name}] holds {vip} like [vrrp.{first}]: a VIP belongs to one \
                         instance (when one goes BACKUP it removes the address the other \
                         holds as MASTER); use a sync group to move them together"
                    )
                } else if let Some((server, service)) = real_server_at(services, vip) {
                    format!(
                        "[vrrp.{name}] holds {vip}, which is {server} of virtual server \
                         {service}: a VIP on this node cannot also be a real server"
                    )
                } else {
                    continue;
                };
                let value = table
                    .get_ref()
                    .virtual_ipaddresses
                    .as_ref()
                    .expect("virtual_ipaddresses is required");
                return Err(self.src.error(value.span(), why));
            }
            out.push(instance);
        }
        Ok(out)
    }

    fn vrrp_instance(
        &self,
        name: &str,
        table: &Spanned<RawVrrp>,
        services: &[VirtualServer],
        scripts: &[TrackScript],
        bfd: &[BfdSession],
    ) -> Result<VrrpInstance, ConfigError> {
        let raw = table.get_ref();
        let missing = |key: &str, example: &str| {
            self.src.error(
                table.span(),
                format!("[vrrp.{name}] is missing `{key}`, e.g. `{key} = {example}`"),
            )
        };
        let interface = match &raw.interface {
            Some(v) => self
                .string(v, "interface", "an interface name such as \"eth0\"")?
                .to_owned(),
            None => return Err(missing("interface", "\"eth0\"")),
        };
        let Some(vrid_value) = &raw.virtual_router_id else {
            return Err(missing("virtual_router_id", "51"));
        };
        let vrid = self.integer(vrid_value, "virtual_router_id", 1..=255)? as u8;
        // Every unset key takes the default the types give.
        let mut tunables = VrrpTunables::default();
        if let Some(v) = &raw.priority {
            tunables.priority = self.integer(v, "priority", 1..=255)? as u8;
        }
        let Some(vips_value) = &raw.virtual_ipaddresses else {
            return Err(missing("virtual_ipaddresses", "[\"192.0.2.200/24\"]"));
        };
        let mut identity = VrrpIdentity::new(interface, vrid, self.vrrp_addresses(vips_value)?);
        let v6 = identity.is_ipv6();
        identity.version = match &raw.version {
            Some(v) => {
                let version = self.integer(v, "version", 2..=3)? as u8;
                if version == 2 && v6 {
                    return Err(self.src.error(
                        v.span(),
                        "`version = 2` cannot carry IPv6 addresses (RFC 3768 is IPv4 only): use 3",
                    ));
                }
                version
            }
            None => identity.version,
        };
        let version = identity.version;
        identity.advert_interval = match &raw.advert_interval {
            Some(v) => {
                let d = self.duration(v, "advert_interval")?;
                let whole = d.subsec_nanos() == 0
                    && d >= Duration::from_secs(1)
                    && d <= Duration::from_secs(255);
                let centis = d.as_millis() % 10 == 0
                    && d >= Duration::from_millis(10)
                    && d <= MAX_V3_INTERVAL;
                if version == 2 && !whole {
                    return Err(self.src.error(
                        v.span(),
                        format!("`advert_interval` = {d:?} does not fit VRRPv2: whole seconds from 1s to 255s (use version 3 for sub-second)"),
                    ));
                }
                if version == 3 && !centis {
                    return Err(self.src.error(
                        v.span(),
                        format!("`advert_interval` = {d:?} does not fit VRRPv3: 10ms steps from 10ms to 40.95s"),
                    ));
                }
                d
            }
            None => identity.advert_interval,
        };
        identity.auth_pass = match &raw.auth_pass {
            Some(v) => {
                let pass = self.string(v, "auth_pass", "a password of 1 to 8 characters")?;
                if version != 2 {
                    return Err(self.src.error(v.span(), "`auth_pass` is VRRPv2 only (RFC 5798 removed authentication); set `version = 2` or drop it"));
                }
                if pass.is_empty() || pass.len() > 8 {
                    return Err(self.src.error(
                        v.span(),
                        format!("`auth_pass` must be 1 to 8 bytes (keepalived silently uses only the first 8); this one has {}", pass.len()),
                    ));
                }
                Some(pass.to_owned())
            }
            None => None,
        };
        if let Some(v) = &raw.preempt {
            tunables.preempt = self.boolean(v, "preempt")?;
        }
        if let Some(v) = &raw.preempt_delay {
            tunables.preempt_delay = self.duration(v, "preempt_delay")?;
        }
        // keepalived takes either name for the source of the adverts, multicast or not.
        identity.unicast_src_ip = match (&raw.unicast_src_ip, &raw.mcast_src_ip) {
            (Some(_), Some(m)) => {
                return Err(self.src.error(
                    m.span(),
                    "`mcast_src_ip` and `unicast_src_ip` both set the source of the adverts: keep one",
                ));
            }
            (Some(v), None) => Some(self.family_ip(v, "unicast_src_ip", v6)?),
            (None, Some(v)) => Some(self.family_ip(v, "mcast_src_ip", v6)?),
            (None, None) => None,
        };
        identity.unicast_peers = match &raw.unicast_peers {
            Some(v) => match v.get_ref() {
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        let spanned = Spanned::new(v.span(), item.clone());
                        self.family_ip(&spanned, "unicast_peers", v6)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => {
                    return Err(self.src.error(
                        v.span(),
                        "`unicast_peers` must be a list of addresses such as [\"192.0.2.2\"]",
                    ));
                }
            },
            None => Vec::new(),
        };
        identity.old_unicast_checksum = match &raw.old_unicast_checksum {
            Some(v) => {
                let on = self.boolean(v, "old_unicast_checksum")?;
                if on && (identity.unicast_peers.is_empty() || version != 3 || v6) {
                    return Err(self.src.error(
                        v.span(),
                        "`old_unicast_checksum` only applies to VRRPv3 over IPv4 with \
                         `unicast_peers` (the checksum keepalived before 1.3.6 sent there)",
                    ));
                }
                on
            }
            None => false,
        };
        if let Some(v) = &raw.check_unicast_src {
            identity.check_unicast_src = self.boolean(v, "check_unicast_src")?;
        }
        if let Some(v) = &raw.check_unicast_ttl {
            identity.check_unicast_ttl = self.boolean(v, "check_unicast_ttl")?;
        }
        let t = &mut tunables;
        if let Some(v) = &raw.garp_master_repeat {
            t.garp_master_repeat = self.integer(v, "garp_master_repeat", 0..=1000)? as u32;
        }
        if let Some(v) = &raw.garp_master_delay {
            t.garp_master_delay = self.duration(v, "garp_master_delay")?;
        }
        if let Some(v) = &raw.garp_master_refresh {
            t.garp_master_refresh =
                Some(self.duration(v, "garp_master_refresh")?).filter(|d| !d.is_zero());
        }
        if let Some(v) = &raw.garp_master_refresh_repeat {
            t.garp_master_refresh_repeat =
                self.integer(v, "garp_master_refresh_repeat", 1..=1000)? as u32;
        }
        if let Some(v) = &raw.garp_interval {
            t.garp_interval = self.duration(v, "garp_interval")?;
        }
        if let Some(v) = &raw.garp_lower_prio_repeat {
            t.garp_lower_prio_repeat = self.integer(v, "garp_lower_prio_repeat", 0..=1000)? as u32;
        }
        if let Some(v) = &raw.garp_lower_prio_delay {
            t.garp_lower_prio_delay = self.duration(v, "garp_lower_prio_delay")?;
        }
        if let Some(v) = &raw.lower_prio_no_advert {
            t.lower_prio_no_advert = self.boolean(v, "lower_prio_no_advert")?;
        }
        if let Some(v) = &raw.higher_prio_send_advert {
            t.higher_prio_send_advert = self.boolean(v, "higher_prio_send_advert")?;
        }
        let argv = |v: &Option<Spanned<Value>>, key: &str| {
            v.as_ref().map(|v| self.argv(v, key)).transpose()
        };
        t.notify = VrrpNotify {
            master: argv(&raw.notify_master, "notify_master")?,
            backup: argv(&raw.notify_backup, "notify_backup")?,
            fault: argv(&raw.notify_fault, "notify_fault")?,
            stop: argv(&raw.notify_stop, "notify_stop")?,
            generic: argv(&raw.notify, "notify")?,
        };
        if let Some(v) = &raw.track_scripts {
            identity.track_scripts = self.track_scripts(v, scripts)?;
        }
        if let Some(v) = &raw.track_interfaces {
            identity.track_interfaces = self.tracked_interfaces(v)?;
        }
        if let Some(v) = &raw.track_virtual_servers {
            identity.track_virtual_servers = self.tracked_services(v, services)?;
        }
        if let Some(v) = &raw.track_bfd {
            identity.track_bfd = self.track_bfd(v, bfd)?;
        }
        if let Some(v) = &raw.peer_bfd {
            identity.peer_bfd =
                self.peer_bfd(v, bfd, identity.is_ipv6(), &identity.unicast_peers)?;
        }
        Ok(VrrpInstance {
            name: name.to_owned(),
            identity,
            tunables,
            location: self.src.locate(vrid_value.span().start),
        })
    }

    /// `["192.0.2.200/24", "192.0.2.201/24 dev eth1 scope link label eth1:vip2"]`: one
    /// family, no repeats; `dev`, `scope` and `label` as `ip addr add` takes them.
    fn vrrp_addresses(&self, value: &Spanned<Value>) -> Result<Vec<VrrpAddress>, ConfigError> {
        let form = "a list such as [\"192.0.2.200/24\", \"192.0.2.201/24 dev eth1 scope link label eth1:vip\"]";
        let Value::Array(items) = value.get_ref() else {
            return Err(self.src.error(
                value.span(),
                format!("`virtual_ipaddresses` must be {form}"),
            ));
        };
        if items.is_empty() {
            return Err(self.src.error(
                value.span(),
                format!("`virtual_ipaddresses` is empty: give {form}"),
            ));
        }
        // The advert's address count is one byte.
        if items.len() > 255 {
            return Err(self.src.error(
                value.span(),
                format!(
                    "`virtual_ipaddresses` has {} addresses; a VRRP advert carries at most 255 \
                     (split them over instances in a sync group)",
                    items.len()
                ),
            ));
        }
        let mut out: Vec<VrrpAddress> = Vec::with_capacity(items.len());
        for item in items {
            let Some(text) = item.as_str() else {
                return Err(self.src.error(
                    value.span(),
                    format!("`virtual_ipaddresses` must be {form}"),
                ));
            };
            let bad = |why: &str| {
                self.src.error(
                    value.span(),
                    format!("`virtual_ipaddresses`: {text:?} {why}; expected {form}"),
                )
            };
            let mut words = text.split_whitespace();
            let cidr = words.next().ok_or_else(|| bad("is empty"))?;
            let (addr, prefix) = match cidr.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (cidr, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad("is not an address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| bad("has a bad prefix length"))?,
                None => max,
            };
            let (mut label, mut device, mut scope) = (None, None, None);
            while let Some(word) = words.next() {
                let Some(arg) = words.next() else {
                    return Err(bad(&format!("has `{word}` without a value")));
                };
                let slot = match word {
                    "label" if addr.is_ipv6() => {
                        return Err(bad("has a label, which only IPv4 addresses can carry"));
                    }
                    "label" => &mut label,
                    "dev" => &mut device,
                    "scope" => {
                        if scope.replace(parse_scope(arg).ok_or_else(|| {
                            bad("has an unknown scope (global, site, link, host, nowhere or 0 to 255)")
                        })?).is_some() {
                            return Err(bad("gives `scope` twice"));
                        }
                        continue;
                    }
                    "brd" | "broadcast" => {
                        return Err(bad(
                            "sets a broadcast address, which xdp-lb does not set; drop `brd`",
                        ));
                    }
                    other => {
                        return Err(bad(&format!(
                            "has `{other}`; the words after the address can be `dev NAME`, `scope SCOPE` and `label NAME`"
                        )));
                    }
                };
                if slot.replace(arg.to_owned()).is_some() {
                    return Err(bad(&format!("gives `{word}` twice")));
                }
            }
            if let Some(first) = out.first()
                && first.addr.is_ipv4() != addr.is_ipv4()
            {
                return Err(bad(
                    "mixes address families; use one instance per family, as VRRP does",
                ));
            }
            if out.iter().any(|a| a.addr == addr) {
                return Err(bad("is listed twice"));
            }
            out.push(VrrpAddress {
                addr,
                prefix,
                label,
                device,
                scope,
            });
        }
        Ok(out)
    }

    /// `[{ vip = "192.0.2.100", port = 80, protocol = "tcp", weight = -50 }]`; each must
    /// name a configured virtual server.
    fn tracked_services(
        &self,
        value: &Spanned<Value>,
        services: &[VirtualServer],
    ) -> Result<Vec<TrackedService>, ConfigError> {
        let form = "a list of tables such as [{ vip = \"192.0.2.100\", port = 80, protocol = \"tcp\", weight = -50 }]";
        let err = |msg: String| self.src.error(value.span(), msg);
        let Value::Array(items) = value.get_ref() else {
            return Err(err(format!("`track_virtual_servers` must be {form}")));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Table(t) = item else {
                return Err(err(format!("`track_virtual_servers` must be {form}")));
            };
            if let Some(key) = t
                .keys()
                .find(|k| !["vip", "port", "protocol", "weight"].contains(&k.as_str()))
            {
                return Err(err(format!(
                    "`track_virtual_servers`: unknown key `{key}`; expected vip, port, protocol, weight"
                )));
            }
            let vip = t
                .get("vip")
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<IpAddr>().ok())
                .ok_or_else(|| err(format!("`track_virtual_servers`: each entry needs `vip`, an address; expected {form}")))?;
            let port = t
                .get("port")
                .and_then(Value::as_integer)
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| err(format!("`track_virtual_servers`: each entry needs `port` (1 to 65535); expected {form}")))? as u16;
            let protocol = match t.get("protocol").map(|p| p.as_str()) {
                None | Some(Some("tcp")) => Protocol::Tcp,
                Some(Some("udp")) => Protocol::Udp,
                _ => {
                    return Err(err(
                        "`track_virtual_servers`: `protocol` must be \"tcp\" or \"udp\"".into(),
                    ));
                }
            };
            let weight = t
                .get("weight")
                .and_then(Value::as_integer)
                .filter(|w| (-254..=254).contains(w))
                .ok_or_else(|| err("`track_virtual_servers`: each entry needs `weight` from -254 to 254 (0 = FAULT)".into()))? as i32;
            if !services.iter().any(|s| s.serves(vip, port, protocol)) {
                return Err(err(format!(
                    "`track_virtual_servers`: there is no virtual server {vip} port {port} {protocol} to track"
                )));
            }
            out.push(TrackedService {
                vip,
                port,
                protocol,
                weight,
            });
        }
        Ok(out)
    }

    /// `["chk_nginx"]`: names of `[script.NAME]` tables.
    fn track_scripts(
        &self,
        value: &Spanned<Value>,
        scripts: &[TrackScript],
    ) -> Result<Vec<String>, ConfigError> {
        let known: Vec<&str> = scripts.iter().map(|s| s.name.as_str()).collect();
        self.table_names(value, "track_scripts", "script", &known, "chk_nginx")
    }

    /// `[script.NAME]` tables.
    pub(super) fn scripts(
        &self,
        raws: BTreeMap<String, Spanned<RawScript>>,
    ) -> Result<Vec<TrackScript>, ConfigError> {
        let mut out = Vec::with_capacity(raws.len());
        for (name, table) in raws {
            let raw = table.get_ref();
            let Some(command) = &raw.command else {
                return Err(self.src.error(
                    table.span(),
                    format!("[script.{name}] is missing `command`, e.g. `command = [\"/usr/bin/pgrep\", \"-x\", \"nginx\"]`"),
                ));
            };
            let shell = match &raw.shell {
                Some(v) => self.boolean(v, "shell")?,
                None => false,
            };
            let command = match (command.get_ref(), shell) {
                (Value::String(line), true) if !line.trim().is_empty() => {
                    // keepalived runs scripts without a shell too; this asks for one.
                    vec!["/bin/sh".to_owned(), "-c".to_owned(), line.clone()]
                }
                (_, true) => {
                    return Err(self.src.error(
                        command.span(),
                        "with `shell = true`, `command` is one string for /bin/sh -c, e.g. `command = \"pgrep -x nginx || pgrep -x apache2\"`",
                    ));
                }
                (Value::String(_), false) => {
                    return Err(self.src.error(
                        command.span(),
                        "`command` is a string but runs without a shell: write it as a list such as [\"/usr/bin/pgrep\", \"-x\", \"nginx\"], or set `shell = true`",
                    ));
                }
                (_, false) => self.argv(command, "command")?,
            };
            let user = match &raw.user {
                Some(v) => {
                    let name = self.string(v, "user", "a user name such as \"nobody\"")?;
                    match nix::unistd::User::from_name(name) {
                        Ok(Some(_)) => Some(name.to_owned()),
                        Ok(None) => {
                            return Err(self.src.error(
                                v.span(),
                                format!("`user`: there is no user {name:?} on this host"),
                            ));
                        }
                        Err(e) => {
                            return Err(self
                                .src
                                .error(v.span(), format!("`user`: cannot look up {name:?}: {e}")));
                        }
                    }
                }
                None => None,
            };
            let interval = match &raw.interval {
                Some(v) => self.duration(v, "interval")?,
                None => Duration::from_secs(1),
            };
            let timeout = match &raw.timeout {
                Some(v) => self.duration(v, "timeout")?,
                None => interval,
            };
            let weight = match &raw.weight {
                Some(v) => self.integer(v, "weight", -254..=254)? as i32,
                None => 0,
            };
            let rise = match &raw.rise {
                Some(v) => self.integer(v, "rise", 1..=1000)? as u32,
                None => 1,
            };
            let fall = match &raw.fall {
                Some(v) => self.integer(v, "fall", 1..=1000)? as u32,
                None => 1,
            };
            if interval.is_zero() || timeout.is_zero() {
                return Err(self.src.error(
                    table.span(),
                    format!("[script.{name}]: `interval` and `timeout` must be above 0s"),
                ));
            }
            out.push(TrackScript {
                name,
                command,
                interval,
                timeout,
                weight,
                rise,
                fall,
                user,
            });
        }
        Ok(out)
    }

    /// `["eth1", { name = "eth2", weight = -20 }]`.
    fn tracked_interfaces(
        &self,
        value: &Spanned<Value>,
    ) -> Result<Vec<TrackedInterface>, ConfigError> {
        let form = "a list such as [\"eth1\", { name = \"eth2\", weight = -20 }] (weight 0, the default, means FAULT while down)";
        let err = |msg: String| self.src.error(value.span(), msg);
        let Value::Array(items) = value.get_ref() else {
            return Err(err(format!("`track_interfaces` must be {form}")));
        };
        let mut out: Vec<TrackedInterface> = Vec::with_capacity(items.len());
        for item in items {
            let (name, weight) = match item {
                Value::String(name) => (name.clone(), 0),
                Value::Table(t) => {
                    if let Some(key) = t.keys().find(|k| !["name", "weight"].contains(&k.as_str()))
                    {
                        return Err(err(format!(
                            "`track_interfaces`: unknown key `{key}`; expected name, weight"
                        )));
                    }
                    let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
                        err(format!(
                            "`track_interfaces`: each table needs `name`; expected {form}"
                        ))
                    })?;
                    let weight = match t.get("weight") {
                        None => 0,
                        Some(w) => w
                            .as_integer()
                            .filter(|w| (-254..=254).contains(w))
                            .ok_or_else(|| err("`track_interfaces`: `weight` must be from -254 to 254 (0 = FAULT)".into()))? as i32,
                    };
                    (name.to_owned(), weight)
                }
                _ => return Err(err(format!("`track_interfaces` must be {form}"))),
            };
            if name.is_empty() || name.len() > 15 {
                return Err(err(format!(
                    "`track_interfaces`: {name:?} is not an interface name (1 to 15 characters)"
                )));
            }
            if out.iter().any(|t| t.name == name) {
                return Err(err(format!("`track_interfaces`: {name} is listed twice")));
            }
            out.push(TrackedInterface { name, weight });
        }
        Ok(out)
    }

    /// `[vrrp_sync_group.NAME]` tables: members are existing instances, each in at most
    /// one group.
    pub(super) fn sync_groups(
        &self,
        raws: BTreeMap<String, Spanned<RawSyncGroup>>,
        instances: &[VrrpInstance],
    ) -> Result<Vec<SyncGroup>, ConfigError> {
        let mut member_of: HashMap<String, String> = HashMap::new();
        let mut out = Vec::with_capacity(raws.len());
        for (name, table) in raws {
            let raw = table.get_ref();
            let form = "a list of [vrrp.NAME] instance names such as [\"VI_EXT\", \"VI_INT\"]";
            let Some(group) = &raw.group else {
                return Err(self.src.error(
                    table.span(),
                    format!("[vrrp_sync_group.{name}] is missing `group`, {form}"),
                ));
            };
            let members = match group.get_ref() {
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>(),
                _ => None,
            };
            let Some(members) = members else {
                return Err(self
                    .src
                    .error(group.span(), format!("`group` must be {form}")));
            };
            if members.len() < 2 {
                return Err(self.src.error(
                    group.span(),
                    "`group` needs at least two instances: a group of one changes nothing",
                ));
            }
            for (k, member) in members.iter().enumerate() {
                if !instances.iter().any(|i| &i.name == member) {
                    let known: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
                    return Err(self.src.error(
                        group.span(),
                        format!(
                            "`group`: there is no [vrrp.{member}] (defined: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                if members[..k].contains(member) {
                    return Err(self
                        .src
                        .error(group.span(), format!("`group`: {member} is listed twice")));
                }
                if let Some(first) = member_of.insert(member.clone(), name.clone()) {
                    return Err(self.src.error(
                        group.span(),
                        format!("`group`: [vrrp.{member}] is already in [vrrp_sync_group.{first}]; an instance belongs to one group at most"),
                    ));
                }
            }
            let argv = |v: &Option<Spanned<Value>>, key: &str| {
                v.as_ref().map(|v| self.argv(v, key)).transpose()
            };
            out.push(SyncGroup {
                notify: VrrpNotify {
                    master: argv(&raw.notify_master, "notify_master")?,
                    backup: argv(&raw.notify_backup, "notify_backup")?,
                    fault: argv(&raw.notify_fault, "notify_fault")?,
                    stop: argv(&raw.notify_stop, "notify_stop")?,
                    generic: argv(&raw.notify, "notify")?,
                },
                name,
                members,
            });
        }
        Ok(out)
    }

    fn family_ip(
        &self,
        value: &Spanned<Value>,
        key: &str,
        v6: bool,
    ) -> Result<IpAddr, ConfigError> {
        let addr = self.ip(value, key, if v6 { "2001:db8::2" } else { "192.0.2.2" })?;
        if addr.is_ipv6() != v6 {
            return Err(self.src.error(
                value.span(),
                format!("`{key}`: {addr} is not in the family of the instance's virtual addresses"),
            ));
        }
        Ok(addr)
    }
}

/// `ip addr add ... scope SCOPE`: a name or a number.
fn parse_scope(text: &str) -> Option<u8> {
    match text {
        "global" | "universe" => Some(0),
        "site" => Some(200),
        "link" => Some(253),
        "host" => Some(254),
        "nowhere" => Some(255),
        n => n.parse().ok(),
    }
}
