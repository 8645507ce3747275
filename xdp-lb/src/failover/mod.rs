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
mod link;
mod notify;
mod status;
mod vip_watch;

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    sync::{Arc, atomic::AtomicBool},
};

use tokio::sync::mpsc;
use xdp_lb_vrrp::{ConfigError, Instance, State};

use crate::{
    config::{SyncGroup, VrrpInstance},
    netlink::{Netlink, NetlinkError},
};
use engine::Engine;

pub use notify::{Notifier, run_one as run_notify_command};
pub use status::{InstanceStatus, Label, SocketStatus, StatusBoard, Takeover, VipConflict};

/// A state change of one instance. `state` is [`State::Master`] while the VIPs are held
/// here, and [`State::Initialize`] once the instance has stopped.
#[derive(Debug, Clone)]
pub struct FailoverEvent {
    pub instance: String,
    pub state: State,
    pub vips: Vec<IpAddr>,
    /// For a MASTER event: the receiver calls [`Applied::done`] once its data plane
    /// forwards the VIPs' services. The engine adds and announces the VIPs only then
    /// (or after [`APPLY_WAIT`]): a client's packet reaching this node after the
    /// gratuitous ARP but before the data plane follows would be the kernel's, which
    /// resets it (a NAT connection the sync kept, a keep-alive request).
    pub applied: Applied,
}

/// How long a new MASTER waits for the data plane before it announces its VIPs anyway
/// (a receiver that does not answer only delays the takeover this much).
pub const APPLY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The receiver's side of [`FailoverEvent::applied`]: cloned with the event. A
/// `done` before the engine waits is kept (a `Notify` permit), later ones do nothing.
#[derive(Debug, Clone, Default)]
pub struct Applied(Option<Arc<tokio::sync::Notify>>);

impl Applied {
    /// Tells the engine the data plane follows the event.
    pub fn done(&self) {
        if let Some(notify) = &self.0 {
            notify.notify_one();
        }
    }
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

/// A BFD session of `peer_bfd` saw its peer die ([`crate::bfd`]): the instances that
/// name `session` and follow `peer` as their master take over at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDown {
    pub session: String,
    pub peer: IpAddr,
}

/// What the daemon tells the running instances (its end: [`ControlHandle`]).
pub struct Controls {
    /// A reload: the instances' new specs, by name. Only what
    /// [`xdp_lb_vrrp::Instance::reconfigure`] allows may differ (priority, preempt,
    /// preempt_delay, the advert answer switches), besides the announcement schedule
    /// and notify commands; the daemon checks that first.
    pub(crate) reconfigure: mpsc::Receiver<Vec<VrrpInstance>>,
    pub(crate) tracking: tokio::sync::watch::Receiver<TrackState>,
    /// Set before the shutdown: the daemon hands over to its next start, so a MASTER
    /// stops silently, keeping its VIPs for their lease, instead of sending priority 0.
    pub(crate) handover: Arc<AtomicBool>,
    pub(crate) peer_down: mpsc::Receiver<PeerDown>,
}

/// The daemon's end of [`Controls`].
pub struct ControlHandle {
    pub reconfigure: mpsc::Sender<Vec<VrrpInstance>>,
    pub tracking: tokio::sync::watch::Sender<TrackState>,
    pub handover: Arc<AtomicBool>,
    pub peer_down: mpsc::Sender<PeerDown>,
}

/// A connected pair; dropping the handle leaves the instances as they are.
pub fn controls() -> (ControlHandle, Controls) {
    let (reconfigure_tx, reconfigure) = mpsc::channel(4);
    let (tracking_tx, tracking) = tokio::sync::watch::channel(TrackState::new());
    let handover = Arc::new(AtomicBool::new(false));
    let (peer_down_tx, peer_down) = mpsc::channel(16);
    (
        ControlHandle {
            reconfigure: reconfigure_tx,
            tracking: tracking_tx,
            handover: handover.clone(),
            peer_down: peer_down_tx,
        },
        Controls {
            reconfigure,
            tracking,
            handover,
            peer_down,
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
    instances: Vec<VrrpInstance>,
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
    instances: Vec<VrrpInstance>,
    sync_groups: Vec<SyncGroup>,
    netlink: Netlink,
    events: mpsc::Sender<FailoverEvent>,
    controls: Controls,
    status: StatusBoard,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let plan = prepare(instances, &netlink).await?;
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

/// Every one of `vips` (address, ifindex) is on its interface with a lease running:
/// the instance was MASTER here moments ago, and resumes as MASTER (see
/// [`xdp_lb_vrrp::Event::Resume`]). No VIP: nothing to resume.
pub(crate) async fn all_leased(
    netlink: &Netlink,
    instance: &str,
    vips: impl Iterator<Item = (IpAddr, u32)>,
) -> bool {
    let mut any = false;
    for (vip, ifindex) in vips {
        match netlink.is_leased(ifindex, vip).await {
            Ok(true) => any = true,
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(instance, %vip, "cannot look up a VIP: {e}");
                return false;
            }
        }
    }
    any
}

/// The VIPs of the instances that will resume as MASTER when the runtime starts (see
/// [`all_leased`]): the forwarding owner treats them as MASTER from the start, so a
/// restarted daemon's program forwards their services from its first packet.
pub async fn resuming_vips(instances: &[VrrpInstance], netlink: &Netlink) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for vi in instances {
        let id = &vi.identity;
        let mut vips = Vec::new();
        for vip in &id.virtual_ipaddresses {
            let name = vip.device.as_deref().unwrap_or(&id.interface);
            match netlink.link_by_name(name).await {
                Ok(link) => vips.push((vip.addr, link.index)),
                Err(_) => {
                    vips.clear();
                    break;
                }
            }
        }
        if !vips.is_empty() && all_leased(netlink, &vi.name, vips.iter().copied()).await {
            out.extend(vips.iter().map(|(addr, _)| *addr));
        }
    }
    out
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
    pub spec: VrrpInstance,
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

/// What the VRRP runtime's start would refuse on this host (interfaces that do not
/// exist, an instance without a source address), found without changing anything:
/// for `xdp-lb check`.
pub async fn preflight(
    instances: Vec<VrrpInstance>,
    netlink: &Netlink,
) -> Result<(), FailoverError> {
    prepare(instances, netlink).await.map(drop)
}

async fn prepare(instances: Vec<VrrpInstance>, netlink: &Netlink) -> Result<Plan, FailoverError> {
    // The configuration was validated once, where it was read (names, VRIDs, address
    // families, peers, sync groups): what is left is what needs the system.
    let mut plan = Plan {
        sockets: Vec::new(),
        instances: Vec::new(),
        links: HashMap::new(),
    };
    let mut socket_index: HashMap<SocketKey, usize> = HashMap::new();
    for spec in instances {
        let id = &spec.identity;
        let v6 = id.is_ipv6();
        let family = if v6 { "ipv6" } else { "ipv4" };
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
        let ifindex = resolve(&id.interface).await?;
        let mut vip_links = Vec::with_capacity(id.virtual_ipaddresses.len());
        for vip in &id.virtual_ipaddresses {
            vip_links.push(match &vip.device {
                Some(device) => resolve(device).await?,
                None => ifindex,
            });
        }
        let mut tracked = Vec::with_capacity(id.track_interfaces.len());
        for t in &id.track_interfaces {
            tracked.push((resolve(&t.name).await?, t.weight));
        }
        let primary = match id.unicast_src_ip {
            Some(src) => Some(src),
            None if v6 => netlink
                .link_local_v6(ifindex)
                .await
                .map_err(|source| FailoverError::Interface {
                    instance: spec.name.clone(),
                    source: Box::new(source),
                })?
                .map(IpAddr::V6),
            None => first_ipv4(&id.interface, &id.vips()),
        };
        let Some(primary) = primary else {
            return Err(FailoverError::NoSource {
                instance: spec.name.clone(),
                interface: id.interface.clone(),
                family,
            });
        };
        let fsm =
            Instance::new(fsm_config(&spec, primary)).map_err(|source| FailoverError::Config {
                instance: spec.name.clone(),
                source,
            })?;
        let source = id.unicast_src_ip;
        let multicast = !id.is_unicast();
        let socket = *socket_index
            .entry((ifindex, v6, source, multicast))
            .or_insert_with(|| {
                plan.sockets.push(SocketPlan {
                    interface: id.interface.clone(),
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
    Ok(plan)
}

/// The state machine's configuration of `vi`, with `primary` as its advert source.
pub(crate) fn fsm_config(vi: &VrrpInstance, primary: IpAddr) -> xdp_lb_vrrp::Config {
    let (id, t) = (&vi.identity, &vi.tunables);
    let mut cfg = xdp_lb_vrrp::Config::new(id.vrid, primary);
    cfg.version = if id.version == 2 {
        xdp_lb_vrrp::Version::V2
    } else {
        xdp_lb_vrrp::Version::V3
    };
    cfg.advert_interval = id.advert_interval;
    cfg.addresses = id.vips();
    cfg.auth = id
        .auth_pass
        .as_ref()
        .map(|p| xdp_lb_vrrp::packet::simple_password(p.as_bytes()));
    cfg.priority = t.priority;
    cfg.preempt = t.preempt;
    cfg.preempt_delay = t.preempt_delay;
    cfg.lower_prio_no_advert = t.lower_prio_no_advert;
    cfg.higher_prio_send_advert = t.higher_prio_send_advert;
    cfg
}

/// The state machine's tunables of `vi`.
pub(crate) fn fsm_tunables(vi: &VrrpInstance) -> xdp_lb_vrrp::Tunables {
    let t = &vi.tunables;
    xdp_lb_vrrp::Tunables {
        priority: t.priority,
        preempt: t.preempt,
        preempt_delay: t.preempt_delay,
        lower_prio_no_advert: t.lower_prio_no_advert,
        higher_prio_send_advert: t.higher_prio_send_advert,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{VrrpAddress, VrrpInstance};

    #[test]
    fn the_state_machine_takes_the_configs_own_instance() {
        let vip = VrrpAddress::new("192.0.2.200".parse().unwrap(), 24);
        let mut vi = VrrpInstance::new("VI_1", "eth0", 51, vec![vip]);
        assert_eq!(vi.identity.version, 2, "keepalived's default over IPv4");
        vi.tunables.priority = 150;
        vi.identity.auth_pass = Some("secret12".into());
        vi.tunables.lower_prio_no_advert = true;
        let cfg = fsm_config(&vi, "192.0.2.1".parse().unwrap());
        assert_eq!((cfg.vrid, cfg.priority), (51, 150));
        assert_eq!(cfg.version, xdp_lb_vrrp::Version::V2);
        assert_eq!(cfg.auth, Some(*b"secret12"));
        assert!(cfg.lower_prio_no_advert && !cfg.higher_prio_send_advert);
        assert_eq!(cfg.addresses, vi.identity.vips());
        assert_eq!(cfg.tunables(), fsm_tunables(&vi));
        assert!(cfg.validate().is_ok());
        let v6 = VrrpInstance::new(
            "VI_6",
            "eth0",
            51,
            vec![VrrpAddress::new("2001:db8::1".parse().unwrap(), 64)],
        );
        assert_eq!(v6.identity.version, 3, "IPv6 is VRRPv3");
    }
}
