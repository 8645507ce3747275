//! The daemon's configuration: the TOML file users write (see `config/lb.example.toml`),
//! loaded into a validated model. Every error names `file:line:col` and says what would
//! be valid.
//!
//! - `raw.rs`: the serde shapes of the file (unknown keys are rejected there),
//! - `validate.rs`: types, defaults, ranges and cross-entry rules,
//! - `duration.rs`: `"100ms"` / `"5s"` / `"1m"` durations,
//! - `error.rs`: [`ConfigError`], [`Location`] and byte-offset → line:col.

mod bfd;
mod check;
mod duration;
mod error;
mod filter;
mod group;
mod raw;
mod sync;
mod validate;
mod vrrp;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub(crate) use duration::fmt_duration;
pub use error::{ConfigError, Location};
pub use filter::{Prefix, Shadow, shadowed_rules};
pub use group::{Member as GroupMember, parse_member};
pub use sync::{DEFAULT_SYNC_PORT, MIN_SECRET};
pub(crate) use validate::{not_another_host, program_problem};

/// Reads the config file at `path` and parses it; messages name the path as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_bounded(path).map_err(|reason| ConfigError::Read {
        path: path.to_owned(),
        reason,
    })?;
    parse(&text, &path.display().to_string())
}

/// The largest config file read (a 10 MB file with 150,000 real servers loads in about
/// a second; anything much bigger is a mistake, such as `--config /dev/zero`).
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Reads a regular file of at most [`MAX_CONFIG_BYTES`]; a FIFO or device is refused
/// rather than read without end.
pub(crate) fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a FIFO, device or directory is not read)".into());
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "larger than {} MiB; is this the right file?",
            MAX_CONFIG_BYTES >> 20
        ));
    }
    Ok(text)
}

/// Parses and validates config `text`; `source` is the file name used in messages.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let src = error::SourceText::new(text, source);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    validate::validate(raw, &src)
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub global: Global,
    pub dataplane: Dataplane,
    pub virtual_servers: Vec<VirtualServer>,
    /// `[filter]`: sources denied for every virtual server.
    pub filter: Filter,
    /// `[announce]`: how virtual servers with `announce = true` are shown to the local
    /// routing daemon.
    pub announce: Announce,
    /// `[sync]`: NAT connections sent to the peers (keepalived's `lvs_sync_daemon`).
    /// Boxed: the daemon's events carry configurations, and most have no `[sync]`.
    pub sync: Option<Box<SyncConfig>>,
    /// `[vrrp.NAME]` instances, sorted by name.
    pub vrrp: Vec<VrrpInstance>,
    /// `[script.NAME]` track scripts, sorted by name.
    pub scripts: Vec<TrackScript>,
    /// `[vrrp_sync_group.NAME]` groups, sorted by name.
    pub sync_groups: Vec<SyncGroup>,
    /// `[bfd.NAME]` sessions, sorted by name.
    pub bfd: Vec<BfdSession>,
}

impl Config {
    /// Every VIP: the virtual servers' and the VRRP instances' addresses.
    pub fn vips(&self) -> std::collections::BTreeSet<std::net::IpAddr> {
        let services = self
            .virtual_servers
            .iter()
            .flat_map(|v| v.members.iter().map(|m| m.ip()));
        let vrrp = self.vrrp.iter().flat_map(|vi| vi.identity.vips());
        services.chain(vrrp).collect()
    }
}

/// keepalived's `vrrp_sync_group`: instances that change state together (when one
/// fails, all fail over). An instance belongs to at most one group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncGroup {
    #[serde(skip)]
    pub name: String,
    /// Names of `[vrrp.NAME]` instances, at least two.
    #[serde(rename = "group")]
    pub members: Vec<String>,
    /// The group's own notify commands; `generic` gets `GROUP <name> <STATE> 0`.
    #[serde(flatten)]
    pub notify: VrrpNotify,
}

/// `{ name = "eth1", weight = -20 }` or `"eth1"`: while that interface is down, its
/// (negative) weight is added to the instance's priority, or while it is up its
/// (positive) weight; weight 0 (the default) puts the instance in FAULT while it is down.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrackedInterface {
    pub name: String,
    pub weight: i32,
}

/// keepalived's `vrrp_script`: a command run every `interval`; after `fall` failures it
/// is down, after `rise` successes up again. An instance tracking it adds `weight` to
/// its priority while the script is up (weight > 0) or down (weight < 0); weight 0
/// puts the instance in FAULT while the script is down.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrackScript {
    #[serde(skip)]
    pub name: String,
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub weight: i32,
    pub rise: u32,
    pub fall: u32,
    /// Run as this user (and its primary group) rather than the daemon's.
    pub user: Option<String>,
}

/// `[bfd.NAME]`: a BFD session that FRR's bfdd runs and reports to us (xdp-lb speaks no
/// BFD itself); see [`crate::bfd`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BfdSession {
    #[serde(skip)]
    pub name: String,
    /// The other end; for `peer_bfd`, the address its VRRP adverts come from.
    pub peer: IpAddr,
    /// Our end (bfdd picks one when unset).
    pub local: Option<IpAddr>,
    /// Bind the single-hop session to this link.
    pub interface: Option<String>,
    /// Required minimum receive interval (bfdd's `receive-interval`).
    pub min_rx: Duration,
    /// Desired minimum transmit interval (bfdd's `transmit-interval`).
    pub min_tx: Duration,
    /// Packets missed before the session is down (`detect-multiplier`).
    pub multiplier: u8,
    /// For `track_bfd`, keepalived's meaning: > 0 added to the priority while the
    /// session is up, < 0 added while it is not, 0 (default) FAULT while it is not.
    pub weight: i32,
}

impl BfdSession {
    /// bfdd's defaults.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(300);
    pub const DEFAULT_MULTIPLIER: u8 = 3;
}

/// One `[vrrp.NAME]` instance, with keepalived's defaults: what it is (its
/// identity) and what a reload may change in place (its tunables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstance {
    pub name: String,
    pub identity: VrrpIdentity,
    pub tunables: VrrpTunables,
    pub location: Location,
}

/// What a VRRP instance is: changing any of it means a new election (a restart), as
/// does a priority to or from 255 (the address owner). Serialized only to name the
/// keys that changed, under their config-file names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VrrpIdentity {
    pub interface: String,
    #[serde(rename = "virtual_router_id")]
    pub vrid: u8,
    /// 2 or 3; default 2 for IPv4 (as keepalived), 3 for IPv6.
    pub version: u8,
    /// Default 1 s; whole seconds for v2, centiseconds for v3.
    pub advert_interval: Duration,
    /// VRRPv2 simple password, at most 8 bytes.
    pub auth_pass: Option<String>,
    /// One family, at least one.
    pub virtual_ipaddresses: Vec<VrrpAddress>,
    /// The source of our adverts (`unicast_src_ip`, or `mcast_src_ip` as keepalived
    /// also calls it); default: the interface's address (IPv6: its link-local one).
    pub unicast_src_ip: Option<IpAddr>,
    /// Non-empty: adverts go unicast to these instead of the multicast group.
    pub unicast_peers: Vec<IpAddr>,
    /// IPv4 VRRPv3 unicast checksums as keepalived before 1.3.6 computed them.
    pub old_unicast_checksum: bool,
    /// Unicast: adverts from a source that is none of `unicast_peers` are dropped
    /// (keepalived's `check_unicast_src`). Default on.
    pub check_unicast_src: bool,
    /// Unicast: adverts must arrive with TTL / hop limit 255, so none comes from off
    /// the segment (keepalived skips this). Default on; off for peers behind a router.
    pub check_unicast_ttl: bool,
    /// Virtual servers whose quorum this instance tracks.
    pub track_virtual_servers: Vec<TrackedService>,
    /// Names of `[script.NAME]` tables this instance tracks (each exists).
    pub track_scripts: Vec<String>,
    /// `track_interfaces`: links whose state changes the priority or means FAULT.
    pub track_interfaces: Vec<TrackedInterface>,
    /// `peer_bfd`: names of `[bfd.NAME]` sessions to peers; when one goes down while
    /// its peer is the MASTER we follow, we take over at once.
    pub peer_bfd: Vec<String>,
    /// `track_bfd`: names of `[bfd.NAME]` sessions whose state changes the priority
    /// (by their `weight`) or means FAULT, as keepalived's `track_bfd`.
    pub track_bfd: Vec<String>,
}

/// What a reload applies to a running instance in place, keeping its state and VIPs:
/// a new priority acts from the next advert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpTunables {
    /// 1..=255; 255 = address owner. Default 100.
    pub priority: u8,
    /// Default true; `false` is keepalived's `nopreempt`.
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Gratuitous ARP / unsolicited NA on becoming MASTER, with keepalived's meaning:
    /// a burst of `garp_master_repeat`, a second one `garp_master_delay` later (zero:
    /// none), then `garp_master_refresh_repeat` every `garp_master_refresh`; rounds of a
    /// burst `garp_interval` apart.
    pub garp_master_repeat: u32,
    pub garp_master_delay: Duration,
    pub garp_master_refresh: Option<Duration>,
    pub garp_master_refresh_repeat: u32,
    pub garp_interval: Duration,
    /// While MASTER, on a lower-priority advert: `garp_lower_prio_repeat` rounds
    /// (default 5; 0: none), again `garp_lower_prio_delay` (default 5 s) after the last.
    pub garp_lower_prio_repeat: u32,
    pub garp_lower_prio_delay: Duration,
    /// keepalived's `lower_prio_no_advert` and `higher_prio_send_advert` (both off).
    pub lower_prio_no_advert: bool,
    pub higher_prio_send_advert: bool,
    pub notify: VrrpNotify,
}

impl Default for VrrpTunables {
    /// keepalived's defaults (the parser starts from these too).
    fn default() -> VrrpTunables {
        VrrpTunables {
            priority: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            garp_master_repeat: 5,
            garp_master_delay: Duration::from_secs(5),
            garp_master_refresh: None,
            garp_master_refresh_repeat: 1,
            garp_interval: Duration::ZERO,
            garp_lower_prio_repeat: 5,
            garp_lower_prio_delay: Duration::from_secs(5),
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            notify: VrrpNotify::default(),
        }
    }
}

impl VrrpIdentity {
    /// keepalived's defaults for an instance on `interface` with `vrid` holding
    /// `virtual_ipaddresses` (the parser starts from these too): version 2 over IPv4
    /// and 3 over IPv6, 1 s adverts, multicast, no authentication, nothing tracked.
    pub fn new(
        interface: impl Into<String>,
        vrid: u8,
        virtual_ipaddresses: Vec<VrrpAddress>,
    ) -> VrrpIdentity {
        let v6 = virtual_ipaddresses
            .first()
            .is_some_and(|a| a.addr.is_ipv6());
        VrrpIdentity {
            interface: interface.into(),
            vrid,
            version: if v6 { 3 } else { 2 },
            advert_interval: Duration::from_secs(1),
            auth_pass: None,
            virtual_ipaddresses,
            unicast_src_ip: None,
            unicast_peers: Vec::new(),
            old_unicast_checksum: false,
            check_unicast_src: true,
            check_unicast_ttl: true,
            track_virtual_servers: Vec::new(),
            track_scripts: Vec::new(),
            track_interfaces: Vec::new(),
            peer_bfd: Vec::new(),
            track_bfd: Vec::new(),
        }
    }

    /// Whether the instance speaks VRRP over IPv6 (its VIPs are IPv6).
    pub fn is_ipv6(&self) -> bool {
        self.virtual_ipaddresses
            .first()
            .is_some_and(|v| v.addr.is_ipv6())
    }

    /// Whether adverts go to unicast peers rather than the multicast group.
    pub fn is_unicast(&self) -> bool {
        !self.unicast_peers.is_empty()
    }

    /// The VIPs without prefixes.
    pub fn vips(&self) -> Vec<IpAddr> {
        self.virtual_ipaddresses.iter().map(|v| v.addr).collect()
    }
}

impl VrrpInstance {
    /// An instance with keepalived's defaults (see [`VrrpIdentity::new`] and
    /// [`VrrpTunables::default`]).
    pub fn new(
        name: impl Into<String>,
        interface: impl Into<String>,
        vrid: u8,
        virtual_ipaddresses: Vec<VrrpAddress>,
    ) -> VrrpInstance {
        VrrpInstance {
            name: name.into(),
            identity: VrrpIdentity::new(interface, vrid, virtual_ipaddresses),
            tunables: VrrpTunables::default(),
            location: Location::default(),
        }
    }
}

/// `{ vip = "192.0.2.100", port = 80, protocol = "tcp", weight = -50 }`: while that
/// virtual server has lost its quorum, `weight` is added to the instance's priority;
/// weight 0 puts the instance in FAULT instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrackedService {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub weight: i32,
}

/// A virtual address of an instance: `"192.0.2.200/24 dev eth1 scope link label eth1:vip"`
/// style, as keepalived's `virtual_ipaddress` block (and `ip addr add`) write it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VrrpAddress {
    pub addr: IpAddr,
    pub prefix: u8,
    pub label: Option<String>,
    /// The device to hold it; default: the instance's interface.
    pub device: Option<String>,
    /// rtnetlink scope (`RT_SCOPE_*`: 0 global, 200 site, 253 link, 254 host); default 0.
    pub scope: Option<u8>,
}

impl VrrpAddress {
    /// `addr/prefix` on the instance's interface, global scope, no label.
    pub fn new(addr: IpAddr, prefix: u8) -> VrrpAddress {
        VrrpAddress {
            addr,
            prefix,
            label: None,
            device: None,
            scope: None,
        }
    }
}

/// Notify commands (argv, run without a shell), serialized under their config keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VrrpNotify {
    #[serde(rename = "notify_master")]
    pub master: Option<Vec<String>>,
    #[serde(rename = "notify_backup")]
    pub backup: Option<Vec<String>>,
    #[serde(rename = "notify_fault")]
    pub fault: Option<Vec<String>>,
    #[serde(rename = "notify_stop")]
    pub stop: Option<Vec<String>>,
    /// Called with (instance, state, priority) appended, as keepalived's `notify`.
    #[serde(rename = "notify")]
    pub generic: Option<Vec<String>>,
}

/// The status API's address when `[global] api` is not set: loopback, so nothing is
/// reachable from other hosts, and `xdp-lb status` finds it without a configuration.
pub const DEFAULT_API: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9180);

/// Where the daemon, `check`, `status` and `connections` read the configuration when
/// `--config` is not given (the package installs it there).
pub const DEFAULT_PATH: &str = "/etc/xdp-lb/lb.toml";

/// `[global]`: settings of this node (serialized only to name what a reload changed).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Global {
    /// A name for this node in logs and status output (keepalived's `router_id`).
    pub router_id: Option<String>,
    /// Where the status API (`/status`, `/metrics`) listens: [`DEFAULT_API`] unless set,
    /// off (`None`) with `api = "off"`. Only a loopback address unless `api_token` is set.
    pub api: Option<std::net::SocketAddr>,
    /// Required of every API request (`Authorization: Bearer <token>`) when set.
    pub api_token: Option<String>,
    /// Where SIGUSR1 and SIGUSR2 write their dumps (`xdp-lb.data`, `xdp-lb.stats`);
    /// default `/tmp`, as keepalived.
    pub dump_dir: std::path::PathBuf,
    /// bfdd's control socket (`bfdd --bfdctl`), used by `[bfd.NAME]` sessions.
    pub bfdd_socket: std::path::PathBuf,
}

/// Where Debian's FRR puts bfdd's control socket.
pub const DEFAULT_BFDD_SOCKET: &str = "/var/run/frr/bfdd.sock";

impl Default for Global {
    fn default() -> Global {
        Global {
            router_id: None,
            api: Some(DEFAULT_API),
            api_token: None,
            dump_dir: std::path::PathBuf::from("/tmp"),
            bfdd_socket: std::path::PathBuf::from(DEFAULT_BFDD_SOCKET),
        }
    }
}

/// `[announce]`: a VIP of a virtual server with `announce = true` is put on
/// `interface` as a /32 (/128) address while its services have quorum here, for the
/// local routing daemon (FRR's zebra sees it as a connected route, bgpd redistributes
/// it); see [`crate::advertise`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Announce {
    /// Default `lo`; a dummy interface where the kernel has them.
    pub interface: String,
    /// A drain is complete once the announced services saw no packet for this long
    /// (default 2 s).
    pub drain_idle: Duration,
}

impl Default for Announce {
    fn default() -> Announce {
        Announce {
            interface: "lo".into(),
            drain_idle: Duration::from_secs(2),
        }
    }
}

/// `[sync]`: the MASTER of `instance` sends its NAT connections to `peers` (and/or
/// the multicast `group`) over UDP `port`, every `interval`, at most `rate` entries a
/// second, signed with the secret; the other nodes install them (see [`crate::sync`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SyncConfig {
    pub instance: String,
    /// Sync traffic is sent and received on this interface only (bound to it).
    pub interface: Option<String>,
    pub peers: Vec<std::net::Ipv4Addr>,
    pub group: Option<std::net::Ipv4Addr>,
    /// Default 8848, keepalived's.
    pub port: u16,
    #[serde(flatten)]
    pub secret: SyncSecret,
    /// Default 1 s.
    pub interval: Duration,
    /// Entries per second at most; default 50,000.
    pub rate: u64,
}

/// The shared secret, written in the file or kept in a file of its own (read at start).
#[derive(Clone, PartialEq, serde::Serialize)]
pub enum SyncSecret {
    #[serde(rename = "secret")]
    Inline(String),
    #[serde(rename = "secret_file")]
    File(std::path::PathBuf),
}

impl fmt::Debug for SyncSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncSecret::Inline(_) => f.write_str("Inline(..)"),
            SyncSecret::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl SyncSecret {
    /// The key's bytes (a file's with its trailing newline removed).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            SyncSecret::Inline(s) => Ok(s.as_bytes().to_vec()),
            SyncSecret::File(path) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("`[sync] secret_file` {}: {e}", path.display()))?;
                while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    bytes.pop();
                }
                if bytes.len() < MIN_SECRET {
                    return Err(format!(
                        "`[sync] secret_file` {}: {} bytes, at least {MIN_SECRET} needed",
                        path.display(),
                        bytes.len()
                    ));
                }
                Ok(bytes)
            }
        }
    }
}

/// `[dataplane]`: where and how the XDP program runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Dataplane {
    /// NICs the XDP program attaches to; non-empty, each a valid Linux interface name.
    pub interfaces: Vec<String>,
    /// Default [`XdpMode::Auto`].
    pub xdp_mode: XdpMode,
    /// Capacity of the IPv4 connection tables (flows, NAT replies) and of persistence;
    /// default 262144, valid 1024..=16777216.
    pub max_flows: u32,
    /// Capacity of the IPv6 connection tables; default `max_flows`, valid 0 (no IPv6
    /// tables: then no virtual server with an IPv6 VIP may need one) or
    /// 1024..=16777216.
    pub max_flows_v6: u32,
    /// How long to wait for a real server's MAC at start; default 5s.
    pub neighbour_timeout: Duration,
    /// The flood guard: new connections (SYNs) per second on each CPU before a SYN
    /// flood is on, during which DR and TUN services pin no SYN (each connection is
    /// pinned by its first ACK), so a flood cannot evict established connections;
    /// other new flows are pinned at most this often. 0 (the default): off.
    pub new_flow_rate: u64,
    /// A directory on bpffs where the connection state and the XDP attachments are
    /// pinned, so a restart keeps them (one subdirectory per network namespace);
    /// default `/sys/fs/bpf/xdp-lb`, `"off"`: nothing pinned.
    pub pin_dir: Option<std::path::PathBuf>,
    /// Idle timeouts of NAT connections (`nat_tcp_timeout`, `nat_tcp_fin_timeout`,
    /// `nat_udp_timeout`); IPVS's defaults.
    #[serde(flatten)]
    pub nat_timeouts: NatTimeouts,
}

impl Dataplane {
    /// The capacity the connection-state tables are loaded with.
    pub fn flow_capacity(&self) -> crate::dataplane::FlowCapacity {
        crate::dataplane::FlowCapacity {
            max_flows: self.max_flows,
            max_flows_v6: self.max_flows_v6,
        }
    }
}

/// Idle timeouts of NAT entries, as IPVS has them (`ipvsadm --set tcp tcpfin udp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NatTimeouts {
    #[serde(rename = "nat_tcp_timeout")]
    pub tcp: Duration,
    /// After a FIN or RST was seen.
    #[serde(rename = "nat_tcp_fin_timeout")]
    pub tcp_fin: Duration,
    #[serde(rename = "nat_udp_timeout")]
    pub udp: Duration,
}

impl Default for NatTimeouts {
    /// IPVS's defaults: 900 s, 120 s, 300 s.
    fn default() -> Self {
        NatTimeouts {
            tcp: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            udp: Duration::from_secs(300),
        }
    }
}

/// How the XDP program is attached (`xdp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum XdpMode {
    /// Driver mode where the NIC supports it, generic (SKB) mode otherwise.
    Auto,
    /// Native driver mode only; attaching fails if the driver lacks XDP.
    Driver,
    /// Generic (SKB) mode: works everywhere, slower.
    Generic,
}

/// One `[[virtual_server]]`: a (vip, port, protocol) service and its real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    /// `group = "NAME"`: the `[virtual_server_group.NAME]` whose members it serves;
    /// `None` for a `vip` and `port`.
    pub group: Option<String>,
    /// The (VIP, port) pairs it serves with `protocol`: the one `vip:port`, or its
    /// group's members with their ranges expanded. At least one, all of one address
    /// family, none served by another virtual server (with the same protocol). They
    /// share one pool of real servers, one set of checks, and one persistence table.
    pub members: Vec<SocketAddr>,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub forwarding: Forwarding,
    /// At least one; of `vip`'s address family unless TUN; no (address, port) twice.
    pub real_servers: Vec<RealServer>,
    /// Takes new flows while no real server can (keepalived's `sorry_server`); same
    /// family as the vip, port defaulting to the service's.
    pub sorry_server: Option<SocketAddr>,
    /// keepalived's quorum: the service runs on its real servers only while their
    /// healthy weight is at least this (default 1), with `hysteresis` on both edges;
    /// below it new flows go to the sorry server (or nowhere).
    pub quorum: Quorum,
    /// keepalived's `persistence_timeout` and `persistence_granularity`; `None`: off.
    pub persistence: Option<Persistence>,
    /// Keep a flow entry per connection (default). `false` only for consistent-hash
    /// schedulers (`maglev`, `sh`) without NAT or persistence: each packet is hashed to
    /// its real server again (cheaper, and immune to flow-table floods), but a change of
    /// the real servers moves about 1/N of the connections.
    pub flow_table: bool,
    /// The source filter (`allow`, `deny`): sources whose longest matching prefix is
    /// denied are dropped; with any `allow`, a source no prefix matches is denied too.
    /// Every prefix is of the vip's family; none is in both lists.
    pub allow: Vec<FilterRule>,
    pub deny: Vec<FilterRule>,
    /// `announce = true`: its VIPs are announced to the local routing daemon while
    /// every announced service on them has quorum (see [`Announce`]). Not on a VIP
    /// that a VRRP instance moves.
    pub announce: bool,
    /// Where the entry's `vip` value is, for later messages about this service.
    pub location: Location,
}

/// `[filter]`: the global deny list, checked before any virtual server's own rules.
/// A reload applies it live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// IPv4 and IPv6 prefixes; a source in one of them reaches no virtual server.
    pub deny: Vec<FilterRule>,
}

/// One prefix of an `allow` or `deny` list, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    pub prefix: Prefix,
    pub location: Location,
}

/// Persistence as IPVS means it: within `timeout` of a client's last packet, its new
/// connections go to the same real server (while that server stays in the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Persistence {
    /// Whole seconds, as IPVS counts them (1 s to 24 h).
    pub timeout: Duration,
    /// Leading bits of the client address that make one client: 32 (IPv4) or 128
    /// (IPv6) unless `persistence_granularity` groups a network.
    pub prefix_len: u8,
}

impl VirtualServer {
    /// How messages, metrics and the status view name it: `192.0.2.100:80/tcp`, or
    /// `group web/tcp`.
    pub fn name(&self) -> String {
        match &self.group {
            Some(group) => group_name(group, self.protocol),
            None => {
                let m = self.members[0];
                service_name(m.ip(), m.port(), self.protocol)
            }
        }
    }

    /// Its VIPs are IPv4 (all members share one family).
    pub fn is_ipv4(&self) -> bool {
        self.members[0].is_ipv4()
    }

    /// It serves `vip:port` with `protocol`.
    pub fn serves(&self, vip: IpAddr, port: u16, protocol: Protocol) -> bool {
        self.protocol == protocol && self.members.contains(&SocketAddr::new(vip, port))
    }

    /// Its distinct VIPs, in member order.
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut vips: Vec<IpAddr> = Vec::new();
        for m in &self.members {
            if !vips.contains(&m.ip()) {
                vips.push(m.ip());
            }
        }
        vips
    }
}

/// "group web/tcp": how a virtual server of `[virtual_server_group.web]` is named.
pub fn group_name(group: &str, protocol: Protocol) -> String {
    format!("group {group}/{protocol}")
}

/// `protocol`: default `tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// "192.0.2.100:80/tcp", "[2001:db8::1]:443/tcp": how messages, metrics and the status
/// view name a service.
pub fn service_name(vip: IpAddr, port: u16, protocol: Protocol) -> String {
    format!("{}/{protocol}", SocketAddr::new(vip, port))
}

/// `scheduler`: how new flows are spread over real servers; default `wrr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Source hashing: the client's address picks the real server, through a weighted
    /// Maglev table, so a client sticks to one server across connections and load
    /// balancers (IPVS's `sh`, and `mh` without its port option).
    Sh,
    /// Destination hashing: the VIP a connection is addressed to picks the real server,
    /// through a weighted Maglev table (IPVS's `dh`, for services covering many
    /// addresses, such as a server group of address ranges in front of caches).
    Dh,
    /// Maglev hashing of the whole connection (addresses, ports, protocol): every load
    /// balancer with the same healthy servers sends a connection to the same one, so
    /// connections survive a failover between them.
    Maglev,
    /// Least connections: new connections go to the real server with the fewest
    /// (IPVS's `lc`: active × 256 + inactive, weights only exclude weight 0).
    Lc,
    /// Weighted least connections: the fewest connections per unit of weight (IPVS's
    /// `wlc`).
    Wlc,
    /// Shortest expected delay: the fewest active connections per unit of weight
    /// (IPVS's `sed`).
    Sed,
    /// Never queue: a real server with no active connection first, otherwise as
    /// `sed` (IPVS's `nq`).
    Nq,
}

impl Scheduler {
    /// New connections follow the real servers' connection counts, so the service's
    /// flows carry a clock and expire after the idle timeouts.
    pub fn counts_connections(self) -> bool {
        self.least_conn().is_some()
    }

    /// The least-connection rule of lc, wlc, sed and nq.
    pub fn least_conn(self) -> Option<crate::schedule::LeastConn> {
        use crate::schedule::LeastConn;
        match self {
            Scheduler::Lc => Some(LeastConn::Lc),
            Scheduler::Wlc => Some(LeastConn::Wlc),
            Scheduler::Sed => Some(LeastConn::Sed),
            Scheduler::Nq => Some(LeastConn::Nq),
            Scheduler::Rr | Scheduler::Wrr | Scheduler::Sh | Scheduler::Dh | Scheduler::Maglev => {
                None
            }
        }
    }
}

/// `forwarding`: how packets reach a real server; default `dr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Direct routing: rewrite the destination MAC, keep the IP packet as is.
    Dr,
    /// Address (and port) translation both ways; the LB must be the real servers'
    /// gateway. IPv4 only for now.
    Nat,
    /// IP-in-IP encapsulation to the real server (which may be behind a router and
    /// decapsulates, holding the VIP on an ipip tunnel device). IPv4 only for now.
    Tun,
}

/// One `[[virtual_server.real_server]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    pub address: IpAddr,
    /// Defaults to the virtual server's port.
    pub port: u16,
    /// Default 1, valid 0..=65535; 0 means the server takes no new flows.
    pub weight: u32,
    /// keepalived's `inhibit_on_failure`: when its check fails the server keeps its
    /// flows and only stops getting new ones (default: it leaves, flows move).
    pub inhibit_on_failure: bool,
    /// Its health check, if any (without one it is always considered up).
    pub check: Option<Check>,
    /// Where the entry's `address` value is, for later messages about this server.
    pub location: Location,
}

/// `quorum`, `hysteresis`, `quorum_up`, `quorum_down` and `omega` of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    pub quorum: u32,
    pub hysteresis: u32,
    /// Run (argv, no shell) when the quorum is gained / lost.
    pub up: Option<Vec<String>>,
    pub down: Option<Vec<String>>,
    /// keepalived's `omega`: also run the down command on shutdown.
    pub omega: bool,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum {
            quorum: 1,
            hysteresis: 0,
            up: None,
            down: None,
            omega: false,
        }
    }
}

/// A real server's health check: what to probe and how often, with keepalived's
/// defaults for anything not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub spec: xdp_lb_checks::CheckSpec,
    pub params: xdp_lb_checks::CheckParams,
}

/// The config-file spelling of each choice, so messages and status output match what
/// users write.
macro_rules! display_as_config_name {
    ($($ty:ty { $($variant:ident => $name:literal),+ $(,)? })+) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $name),+ })
            }
        }
    )+};
}

display_as_config_name! {
    XdpMode { Auto => "auto", Driver => "driver", Generic => "generic" }
    Protocol { Tcp => "tcp", Udp => "udp" }
    Scheduler { Rr => "rr", Wrr => "wrr", Sh => "sh", Dh => "dh", Maglev => "maglev", Lc => "lc", Wlc => "wlc", Sed => "sed", Nq => "nq" }
    Forwarding { Dr => "dr", Nat => "nat", Tun => "tun" }
}
