//! Failover: the runtime that drives VRRP instances ([`xdp_lb_vrrp::Instance`]) on real
//! sockets, the way keepalived's VRRP process does.
//!
//! [`run`] resolves every [`InstanceSpec`] (interface, advert source), groups the
//! instances by socket — one raw protocol-112 socket per interface, address family and
//! unicast source — and runs one task per socket. A task demultiplexes what arrives by
//! VRID, sleeps until the earliest [`xdp_lb_vrrp::Instance::next_deadline`], and carries
//! out the state machine's actions:
//! - `SendAdvert`: one advert per destination (the multicast group, or each unicast peer);
//! - `BecomeMaster`: VIPs added over rtnetlink, then gratuitous ARP / unsolicited NA
//!   rounds (and an optional periodic refresh) on a task of their own;
//! - `BecomeBackup` / `BecomeFault` / `Stop`: announcements stopped, VIPs removed;
//!   an instance whose interface goes down (or loses carrier) enters FAULT (see
//!   [`link`]) and returns to BACKUP when it comes back;
//! - `SplitBrain` / `VridClash`: a warning naming the instance, the peer and the cause.
//!
//! Every state change is reported as a [`FailoverEvent`] (the daemon flips the XDP
//! "active" flag of the services on those VIPs) and runs the notify commands (see
//! [`notify`]). When the shutdown future completes, a MASTER sends its priority-0 advert
//! and removes its VIPs before [`run`] returns, so a backup takes over at once.

mod link;
mod notify;
mod runner;
mod spec;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::IpAddr,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use xdp_lb_vrrp::{ConfigError, Instance, State};

use crate::netlink::{Netlink, NetlinkError};

pub use notify::{Notifier, run_one as run_notify_command};
pub use spec::{
    DEFAULT_GARP_DELAY, DEFAULT_GARP_REPEAT, DEFAULT_NOTIFY_TIMEOUT, InstanceSpec, Notify,
    VirtualAddress,
};

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

/// Runs `instances` until `shutdown` completes (or a socket task fails), then stops them:
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
    let (_no_tracking, tracking) = mpsc::channel(1);
    run_tracked(instances, netlink, events, tracking, shutdown).await
}

/// [`run`], with tracking updates for the instances (by name) arriving on `tracking`.
pub async fn run_tracked(
    instances: Vec<InstanceSpec>,
    netlink: Netlink,
    events: mpsc::Sender<FailoverEvent>,
    mut tracking: mpsc::Receiver<TrackUpdate>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let groups = prepare(instances, &netlink).await?;
    // Route each update to the socket task that runs its instance.
    let mut routes: HashMap<String, (usize, usize)> = HashMap::new();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for (i, p) in group.instances.iter().enumerate() {
            routes.insert(p.spec.name.clone(), (g, i));
        }
        let (tx, rx) = mpsc::channel(16);
        senders.push(tx);
        receivers.push(rx);
    }
    let _router = AbortOnDrop(tokio::spawn(async move {
        while let Some(update) = tracking.recv().await {
            match routes.get(&update.instance) {
                Some(&(g, i)) => {
                    let _ = senders[g].send((i, update)).await;
                }
                None => {
                    tracing::warn!(instance = %update.instance, "tracking update for an unknown vrrp instance")
                }
            }
        }
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every socket is opened before any instance starts, so a failure here leaves
    // nothing half-running (an address owner would be MASTER at once).
    let ifindexes: Vec<u32> = groups.iter().map(|g| g.ifindex).collect();
    let (links, link_task) = link::monitor(&ifindexes)
        .await
        .map_err(FailoverError::LinkMonitor)?;
    let _link_task = AbortOnDrop(link_task);
    let opened = groups
        .into_iter()
        .zip(receivers)
        .map(|(group, tracking)| {
            let link = links[&group.ifindex].clone();
            runner::SocketTask::open(group, link, tracking, netlink.clone(), events.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut tasks = JoinSet::new();
    for task in opened {
        tasks.spawn(task.run(stop_rx.clone()));
    }
    tokio::pin!(shutdown);
    let mut result = Ok(());
    tokio::select! {
        () = &mut shutdown => {}
        Some(ended) = tasks.join_next() => {
            result = flatten(ended);
            if result.is_ok() {
                result = Err(anyhow::anyhow!("a vrrp socket task ended on its own"));
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(ended) = tasks.join_next().await {
        let ended = flatten(ended);
        if result.is_ok() {
            result = ended;
        } else if let Err(e) = ended {
            tracing::error!("vrrp socket task failed while stopping: {e:#}");
        }
    }
    result
}

/// Aborts a helper task when [`run`] returns, however it returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn flatten(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    ended.map_err(|e| anyhow::anyhow!("vrrp socket task panicked or was cancelled: {e}"))?
}

/// Instances sharing one socket.
pub(crate) struct Group {
    pub interface: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub v6: bool,
    /// `Some` for unicast: the address the socket is bound to.
    pub unicast_source: Option<IpAddr>,
    pub instances: Vec<Prepared>,
}

/// One instance, resolved and validated.
pub(crate) struct Prepared {
    pub spec: InstanceSpec,
    pub fsm: Instance,
    pub primary: IpAddr,
}

type GroupKey = (String, bool, Option<IpAddr>);

async fn prepare(
    instances: Vec<InstanceSpec>,
    netlink: &Netlink,
) -> Result<Vec<Group>, FailoverError> {
    let mut names = HashSet::new();
    let mut vrids: HashMap<(String, bool, u8), String> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
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

        let link = netlink
            .link_by_name(&spec.interface)
            .await
            .map_err(|source| FailoverError::Interface {
                instance: spec.name.clone(),
                source: Box::new(source),
            })?;
        let primary = match spec.unicast_source {
            Some(src) => Some(src),
            None if v6 => netlink
                .link_local_v6(link.index)
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
        let unicast_source = spec.is_unicast().then_some(primary);
        let key = (spec.interface.clone(), v6, unicast_source);
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                interface: spec.interface.clone(),
                ifindex: link.index,
                mac: link.mac,
                v6,
                unicast_source,
                instances: Vec::new(),
            });
            groups.len() - 1
        });
        groups[at].instances.push(Prepared { spec, fsm, primary });
    }
    Ok(groups)
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
