//! Failover: the runtime that drives VRRP instances ([`xdp_lb_vrrp::Instance`]) on real
//! sockets, the way keepalived's VRRP process does.
//!
//! [`run`] resolves every [`InstanceSpec`] (interfaces, VIP devices, tracked interfaces,
//! advert source) and opens one raw protocol-112 socket per interface, address family
//! and unicast source. One task, the [`engine`], owns every state machine — alone, or
//! in its sync group ([`xdp_lb_vrrp::SyncGroup`]), whose members may sit on different
//! interfaces — demultiplexes arriving adverts by VRID, sleeps until the earliest
//! deadline, and carries out the actions:
//! - `SendAdvert`: one advert per destination (the multicast group, or each unicast peer);
//! - `BecomeMaster`: VIPs added over rtnetlink (on their own device and scope if given),
//!   then gratuitous ARP / unsolicited NA rounds (and an optional periodic refresh) on a
//!   task of their own;
//! - `BecomeBackup` / `BecomeFault` / `Stop`: announcements stopped, VIPs removed;
//! - `SplitBrain` / `VridClash`: a warning naming the instance, the peer and the cause.
//!
//! Tracking (see [`link`] and [`TrackUpdate`]): an instance whose interface (or a VIP's
//! device) goes down enters FAULT; tracked interfaces add their weight or mean FAULT;
//! the daemon's tracked scripts and virtual servers arrive as [`TrackUpdate`]s. All add
//! up as keepalived adds them.
//!
//! Every state change is reported as a [`FailoverEvent`] (the daemon flips the XDP
//! "active" flag of the services on those VIPs) and runs the notify commands (see
//! [`notify`]); a sync group runs its own when the whole group has changed. When the
//! shutdown future completes, a MASTER sends its priority-0 advert and removes its VIPs
//! before [`run`] returns, so a backup takes over at once.

mod engine;
mod from_config;
mod link;
mod notify;
mod spec;
mod status;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::IpAddr,
};

use tokio::sync::mpsc;
use xdp_lb_vrrp::{ConfigError, Instance, State};

use crate::netlink::{Netlink, NetlinkError};
use engine::Engine;

pub(crate) use from_config::{instance_spec, sync_group_spec};
pub use notify::{Notifier, run_one as run_notify_command};
pub use spec::{
    DEFAULT_GARP_DELAY, DEFAULT_GARP_REPEAT, DEFAULT_NOTIFY_TIMEOUT, InstanceSpec, Notify,
    SyncGroupSpec, TrackedInterface, VirtualAddress,
};
pub use status::{InstanceStatus, Label, SocketStatus, StatusBoard};

/// A state change of one instance. `state` is [`State::Master`] while the VIPs are held
/// here, and [`State::Initialize`] once the instance has stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverEvent {
    pub instance: String,
    pub state: State,
    pub vips: Vec<IpAddr>,
}

/// What tracked objects say about an instance (the daemon sends one whenever a tracked
/// virtual server's quorum changes): `adjust` is the total weight to add to the
/// configured priority (negative lowers it), `fault` puts the instance in FAULT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackUpdate {
    pub instance: String,
    pub adjust: i32,
    pub fault: bool,
    /// For the log: what changed.
    pub reason: String,
}

/// What every tracked object says, per instance name: totals, so only the latest
/// value matters, and a channel that keeps just that ([`tokio::sync::watch`]) never
/// loses an update however fast they come.
pub type TrackState = std::collections::BTreeMap<String, TrackUpdate>;

/// What the daemon tells the running instances (its end: [`ControlHandle`]).
pub struct Controls {
    /// A reload: the instances' new specs, by name. Only what
    /// [`xdp_lb_vrrp::Instance::reconfigure`] allows may differ (priority, preempt,
    /// preempt_delay, the advert answer switches), besides the announcement schedule
    /// and notify commands; the daemon checks that first.
    pub(crate) reconfigure: mpsc::Receiver<Vec<InstanceSpec>>,
    pub(crate) tracking: tokio::sync::watch::Receiver<TrackState>,
}

/// The daemon's end of [`Controls`].
pub struct ControlHandle {
    pub reconfigure: mpsc::Sender<Vec<InstanceSpec>>,
    pub tracking: tokio::sync::watch::Sender<TrackState>,
}

/// A connected pair; dropping the handle leaves the instances as they are.
pub fn controls() -> (ControlHandle, Controls) {
    let (reconfigure_tx, reconfigure) = mpsc::channel(4);
    let (tracking_tx, tracking) = tokio::sync::watch::channel(TrackState::new());
    (
        ControlHandle {
            reconfigure: reconfigure_tx,
            tracking: tracking_tx,
        },
        Controls {
            reconfigure,
            tracking,
        },
    )
}

/// Why the instances could not be started.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("vrrp instance `{instance}`: {source}")]
    Interface {
        instance: String,
        #[source]
        source: Box<NetlinkError>,
    },
    #[error("vrrp instance `{instance}` has no virtual_ipaddresses; give it at least one")]
    NoVips { instance: String },
    #[error(
        "vrrp instance `{instance}` mixes ipv4 and ipv6 virtual addresses; \
         use one instance per address family"
    )]
    MixedFamilies { instance: String },
    #[error(
        "vrrp instance `{instance}`: unicast source {source_addr} and peer {peer} \
         are of different address families"
    )]
    PeerFamily {
        instance: String,
        source_addr: IpAddr,
        peer: IpAddr,
    },
    #[error(
        "vrrp instance `{instance}`: interface `{interface}` has no {family} address to \
         send adverts from; add one or set unicast_src_ip"
    )]
    NoSource {
        instance: String,
        interface: String,
        family: &'static str,
    },
    #[error("vrrp instance `{instance}`: {source}")]
    Config {
        instance: String,
        #[source]
        source: ConfigError,
    },
    #[error("vrrp sync group `{group}`: {why}")]
    SyncGroup { group: String, why: String },
    #[error("vrrp instance name `{0}` is used twice; names must be unique")]
    DuplicateName(String),
    #[error(
        "vrrp instances `{first}` and `{second}` both use virtual_router_id {vrid} on \
         `{interface}` ({family}); give each its own id"
    )]
    DuplicateVrid {
        first: String,
        second: String,
        vrid: u8,
        interface: String,
        family: &'static str,
    },
    #[error("cannot open the vrrp socket on `{interface}`: {source}")]
    Socket {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the interfaces' link state over rtnetlink: {0}")]
    LinkMonitor(#[source] std::io::Error),
    #[error("cannot open the announcement (AF_PACKET) socket on `{interface}`: {source}")]
    FrameSocket {
        interface: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `instances` until `shutdown` completes (or a socket fails), then stops them:
/// a MASTER sends its priority-0 advert and removes its VIPs before this returns.
///
/// `events` receives every state change in order; the runtime waits for room in the
/// channel, so its receiver must keep reading.
pub async fn run(
    instances: Vec<InstanceSpec>,
    netlink: Netlink,
    events: mpsc::Sender<FailoverEvent>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (_no_control, controls) = controls();
    let status = StatusBoard::default();
    run_tracked(
        instances,
        Vec::new(),
        netlink,
        events,
        controls,
        status,
        shutdown,
    )
    .await
}

/// [`run`], with sync groups, with tracking updates and reloads for the instances (by
/// name) arriving on `controls`, and every instance's status kept up to date on `status`.
pub async fn run_tracked(
    instances: Vec<InstanceSpec>,
    sync_groups: Vec<SyncGroupSpec>,
    netlink: Netlink,
    events: mpsc::Sender<FailoverEvent>,
    controls: Controls,
    status: StatusBoard,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let plan = prepare(instances, &sync_groups, &netlink).await?;
    let ifindexes: Vec<u32> = plan.links.keys().copied().collect();
    let (link_states, link_changes, link_task) = link::monitor(&ifindexes)
        .await
        .map_err(FailoverError::LinkMonitor)?;
    let _link_task = AbortOnDrop(link_task);
    let engine = Engine::open(
        plan,
        sync_groups,
        (link_states, link_changes),
        controls,
        netlink,
        events,
        status,
    )?;
    engine.run(shutdown).await
}

/// Aborts a helper task when [`run`] returns, however it returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything resolved before anything runs.
pub(crate) struct Plan {
    pub sockets: Vec<SocketPlan>,
    pub instances: Vec<PlannedInstance>,
    /// Every interface involved (instances', VIP devices, tracked): ifindex → (name, MAC).
    pub links: HashMap<u32, (String, [u8; 6])>,
}

/// One raw VRRP socket: per interface, address family and unicast source.
pub(crate) struct SocketPlan {
    pub interface: String,
    pub ifindex: u32,
    pub v6: bool,
    /// The configured source address (bound to for unicast, set per packet for
    /// multicast); `None`: the kernel's choice, which is `primary` (see [`first_ipv4`]).
    pub source: Option<IpAddr>,
    /// Whether the socket joins the VRRP multicast group.
    pub multicast: bool,
}

/// One instance, resolved and validated.
pub(crate) struct PlannedInstance {
    pub spec: InstanceSpec,
    pub fsm: Instance,
    pub primary: IpAddr,
    pub socket: usize,
    pub ifindex: u32,
    /// ifindex of each VIP's device.
    pub vip_links: Vec<u32>,
    /// (ifindex, weight) of each tracked interface.
    pub tracked: Vec<(u32, i32)>,
}
/// (ifindex, IPv6, configured source, multicast): instances that agree share a socket.
type SocketKey = (u32, bool, Option<IpAddr>, bool);

async fn prepare(
    instances: Vec<InstanceSpec>,
    sync_groups: &[SyncGroupSpec],
    netlink: &Netlink,
) -> Result<Plan, FailoverError> {
    let mut names = HashSet::new();
    let mut vrids: HashMap<(String, bool, u8), String> = HashMap::new();
    let mut plan = Plan {
        sockets: Vec::new(),
        instances: Vec::new(),
        links: HashMap::new(),
    };
    let mut socket_index: HashMap<SocketKey, usize> = HashMap::new();
    for spec in instances {
        if !names.insert(spec.name.clone()) {
            return Err(FailoverError::DuplicateName(spec.name));
        }
        let Some(first) = spec.virtual_addresses.first() else {
            return Err(FailoverError::NoVips {
                instance: spec.name,
            });
        };
        let v6 = first.addr.is_ipv6();
        if spec
            .virtual_addresses
            .iter()
            .any(|v| v.addr.is_ipv6() != v6)
        {
            return Err(FailoverError::MixedFamilies {
                instance: spec.name,
            });
        }
        let family = if v6 { "ipv6" } else { "ipv4" };
        let vrid_key = (spec.interface.clone(), v6, spec.vrid);
        if let Some(first) = vrids.get(&vrid_key) {
            return Err(FailoverError::DuplicateVrid {
                first: first.clone(),
                second: spec.name,
                vrid: spec.vrid,
                interface: spec.interface,
                family,
            });
        }
        vrids.insert(vrid_key, spec.name.clone());

        let mut resolve =
            async |name: &str| -> Result<u32, FailoverError> {
                let link = netlink.link_by_name(name).await.map_err(|source| {
                    FailoverError::Interface {
                        instance: spec.name.clone(),
                        source: Box::new(source),
                    }
                })?;
                plan.links.insert(link.index, (link.name, link.mac));
                Ok(link.index)
            };
        let ifindex = resolve(&spec.interface).await?;
        let mut vip_links = Vec::with_capacity(spec.virtual_addresses.len());
        for vip in &spec.virtual_addresses {
            vip_links.push(match &vip.device {
                Some(device) => resolve(device).await?,
                None => ifindex,
            });
        }
        let mut tracked = Vec::with_capacity(spec.track_interfaces.len());
        for t in &spec.track_interfaces {
            tracked.push((resolve(&t.name).await?, t.weight));
        }
        let primary = match spec.unicast_source {
            Some(src) => Some(src),
            None if v6 => netlink
                .link_local_v6(ifindex)
                .await
                .map_err(|source| FailoverError::Interface {
                    instance: spec.name.clone(),
                    source: Box::new(source),
                })?
                .map(IpAddr::V6),
            None => first_ipv4(&spec.interface, &spec.vips()),
        };
        let Some(primary) = primary else {
            return Err(FailoverError::NoSource {
                instance: spec.name,
                interface: spec.interface,
                family,
            });
        };
        if let Some(peer) = spec
            .unicast_peers
            .iter()
            .find(|p| p.is_ipv6() != primary.is_ipv6())
        {
            return Err(FailoverError::PeerFamily {
                instance: spec.name.clone(),
                source_addr: primary,
                peer: *peer,
            });
        }
        let fsm =
            Instance::new(spec.fsm_config(primary)).map_err(|source| FailoverError::Config {
                instance: spec.name.clone(),
                source,
            })?;
        let source = spec.unicast_source;
        let multicast = !spec.is_unicast();
        let socket = *socket_index
            .entry((ifindex, v6, source, multicast))
            .or_insert_with(|| {
                plan.sockets.push(SocketPlan {
                    interface: spec.interface.clone(),
                    ifindex,
                    v6,
                    source,
                    multicast,
                });
                plan.sockets.len() - 1
            });
        plan.instances.push(PlannedInstance {
            spec,
            fsm,
            primary,
            socket,
            ifindex,
            vip_links,
            tracked,
        });
    }
    let mut member_of: HashMap<&str, &str> = HashMap::new();
    for g in sync_groups {
        let bad = |why: String| FailoverError::SyncGroup {
            group: g.name.clone(),
            why,
        };
        if g.members.len() < 2 {
            return Err(bad("needs at least two instances".into()));
        }
        for m in &g.members {
            if !names.contains(m) {
                return Err(bad(format!("there is no vrrp instance `{m}`")));
            }
            if let Some(other) = member_of.insert(m, &g.name) {
                return Err(bad(format!(
                    "instance `{m}` is already in sync group `{other}` (or listed twice)"
                )));
            }
        }
    }
    Ok(plan)
}

/// The interface's first IPv4 address that is not one of `vips` (the kernel's primary
/// address, which keepalived advertises from).
fn first_ipv4(interface: &str, vips: &[IpAddr]) -> Option<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|ifa| ifa.interface_name == interface)
        .filter_map(|ifa| {
            let sin = ifa.address?;
            let sin = sin.as_sockaddr_in()?;
            Some(IpAddr::V4(sin.ip()))
        })
        .find(|a| !vips.contains(a))
}
