//! The engine: one task that owns every instance's state machine (alone, or in its sync
//! group), and carries out what they ask for. Sockets only carry packets: a reader task
//! per socket hands what arrives to the engine, so members of one sync group may run on
//! different interfaces and still move together.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::Instant,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use xdp_lb_vrrp::{
    Action, ChecksumForm, DropReason, Event, Expect, Instance, State, SyncGroup,
    packet::{self, MULTICAST_V4, MULTICAST_V6},
};

use super::{
    APPLY_WAIT, Applied, Controls, FailoverError, FailoverEvent, PeerDown, Plan, PlannedInstance,
    SocketPlan, TrackUpdate,
    notify::Notifier,
    status::{InstanceStatus, SocketStatus, StatusBoard, Takeover, VipConflict, state_label},
    vip_watch::{self, ArpSocket, Conflict, Held, Listener, NdpSocket},
};
use crate::{
    announce::{Announcer, FrameSocket, gratuitous_arp, unsolicited_na},
    log_limit::LogLimit,
    netlink::Netlink,
    vrrp_socket::{Received, VrrpSocket},
};

/// A raw VRRP socket and the instances whose adverts it carries.
struct SocketIo {
    interface: String,
    v6: bool,
    socket: Arc<VrrpSocket>,
    /// VRID → instance index.
    by_vrid: HashMap<u8, usize>,
    /// Packets dropped before they could be given to an instance.
    drops: [u64; DropReason::ALL.len()],
    /// Adverts for VRIDs none of our instances on this socket uses.
    other_vrid: u64,
    /// Send errors repeat at the advert rate (ENOBUFS): logged once per period.
    send_warnings: LogLimit,
    reader: JoinHandle<()>,
}

/// The state machines: an instance alone, or a sync group of them.
enum Unit {
    Alone(Box<Instance>),
    Synced {
        group: SyncGroup,
        /// Member index → instance index.
        members: Vec<usize>,
        /// Index into [`Engine::groups`].
        notify: usize,
    },
}

/// One instance at run time, besides its state machine.
struct Running {
    spec: crate::config::VrrpInstance,
    unit: usize,
    /// Index among its group's members (0 when alone).
    member: usize,
    socket: usize,
    ifindex: u32,
    primary: IpAddr,
    expect: Expect,
    destinations: Vec<IpAddr>,
    /// Send VRRPv3 unicast checksums as keepalived before 1.3.6 did: configured, or
    /// learnt from a peer that sends them (keepalived switches the same way).
    old_unicast_checksum: bool,
    /// ifindex of each VIP's device, in `spec.identity.virtual_ipaddresses` order.
    vip_links: Vec<u32>,
    /// (ifindex, weight) of each tracked interface.
    tracked: Vec<(u32, i32)>,
    announcer: Announcer,
    /// Renews the VIPs' lifetimes while MASTER (see [`VIP_LEASE`]).
    lease: Option<JoinHandle<()>>,
    notifier: Notifier,
    /// What the daemon's tracked objects ask for ([`TrackUpdate`]).
    external_adjust: i32,
    external_fault: bool,
    /// What was last given to the state machine.
    adjust: i32,
    fault: bool,
    /// Sources of valid adverts heard so far (at most [`HEARD_CAP`]): a takeover by
    /// one not among them is named as such.
    heard: HashSet<IpAddr>,
    last_takeover: Option<Takeover>,
    /// Other MACs seen announcing or answering for this instance's VIPs while MASTER.
    vip_conflicts: u64,
    last_vip_conflict: Option<VipConflict>,
}

/// A MASTER's VIPs live this long unless renewed (every [`LEASE_RENEWAL`]): after a
/// `kill -9` they leave the interface by themselves within this time.
pub(crate) const VIP_LEASE: std::time::Duration = std::time::Duration::from_secs(5);
const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Adds `vip` on `ifindex` for [`VIP_LEASE`], or renews it.
async fn lease(
    netlink: &Netlink,
    ifindex: u32,
    vip: &crate::config::VrrpAddress,
) -> Result<(), crate::netlink::NetlinkError> {
    netlink
        .lease_address(
            ifindex,
            vip.addr,
            vip.prefix,
            vip.label.as_deref(),
            vip.scope,
            VIP_LEASE.as_secs() as u32,
        )
        .await
}

/// How long Linux ignores a changed ARP entry's next change (`locktime`, 1 s): a
/// re-announcement after a conflict waits a little longer.
const ARP_LOCKTIME: std::time::Duration = std::time::Duration::from_millis(1100);

/// Peers remembered per instance; a segment with more is not a VRRP pair anyway.
const HEARD_CAP: usize = 64;

/// A sync group's notify commands and the state they were last run for.
struct GroupNotify {
    name: String,
    spec: crate::config::VrrpNotify,
    notifier: Notifier,
    state: State,
}

pub(crate) struct Engine {
    sockets: Vec<SocketIo>,
    instances: Vec<Running>,
    units: Vec<Unit>,
    groups: Vec<GroupNotify>,
    by_name: HashMap<String, usize>,
    /// ifindex → (name, MAC, up).
    links: HashMap<u32, Link>,
    frames: HashMap<u32, Arc<FrameSocket>>,
    packets: mpsc::Receiver<(usize, std::io::Result<Received>)>,
    link_changes: mpsc::UnboundedReceiver<(u32, bool)>,
    controls: Controls,
    /// The tracking values each instance was last given.
    tracked: HashMap<String, TrackUpdate>,
    netlink: Netlink,
    events: mpsc::Sender<FailoverEvent>,
    status: StatusBoard,
    /// Per interface with IPv4 VIPs: what its ARP watcher is to watch for.
    held: HashMap<u32, watch::Sender<Held>>,
    watchers: Vec<JoinHandle<()>>,
    conflicts: mpsc::Receiver<Conflict>,
}

struct Link {
    name: String,
    mac: [u8; 6],
    up: bool,
}

impl Engine {
    /// Opens every socket (VRRP and announcement) before anything runs, so a failure
    /// leaves nothing half-started.
    pub(crate) fn open(
        plan: Plan,
        sync_groups: Vec<crate::config::SyncGroup>,
        // Each interface's state now, and the changes from then on (see `link`).
        (link_states, link_changes): (HashMap<u32, bool>, mpsc::UnboundedReceiver<(u32, bool)>),
        controls: Controls,
        netlink: Netlink,
        events: mpsc::Sender<FailoverEvent>,
        status: StatusBoard,
    ) -> Result<Engine, FailoverError> {
        let (packets_tx, packets) = mpsc::channel(256);
        let mut sockets = Vec::with_capacity(plan.sockets.len());
        for (id, s) in plan.sockets.iter().enumerate() {
            sockets.push(open_socket(id, s, packets_tx.clone())?);
        }
        let mut frames = HashMap::new();
        for &ifindex in plan.links.keys() {
            let socket =
                FrameSocket::open(ifindex).map_err(|source| FailoverError::FrameSocket {
                    interface: plan.links[&ifindex].0.clone(),
                    source,
                })?;
            frames.insert(ifindex, Arc::new(socket));
        }
        // One watcher per interface and family that carries VIPs (see `vip_watch`),
        // all of an interface's watchers fed by one `held` channel.
        let (conflicts_tx, conflicts) = mpsc::channel(64);
        let mut held: HashMap<u32, watch::Sender<Held>> = HashMap::new();
        let mut watched = HashSet::new();
        let mut watchers = Vec::new();
        for p in &plan.instances {
            for (vip, &ifindex) in p.spec.identity.virtual_ipaddresses.iter().zip(&p.vip_links) {
                if !watched.insert((ifindex, vip.addr.is_ipv4())) {
                    continue;
                }
                let (name, mac) = &plan.links[&ifindex];
                let listener = if vip.addr.is_ipv4() {
                    ArpSocket::open(ifindex).map(Listener::Arp)
                } else {
                    NdpSocket::open(ifindex, name).map(Listener::Ndp)
                }
                .map_err(|source| FailoverError::FrameSocket {
                    interface: name.clone(),
                    source,
                })?;
                let rx = held
                    .entry(ifindex)
                    .or_insert_with(|| watch::channel(Held::new()).0)
                    .subscribe();
                watchers.push(tokio::spawn(vip_watch::watch(
                    listener,
                    *mac,
                    rx,
                    conflicts_tx.clone(),
                )));
            }
        }
        let links = plan
            .links
            .iter()
            .map(|(&index, (name, mac))| {
                let up = link_states.get(&index).copied().unwrap_or(false);
                (
                    index,
                    Link {
                        name: name.clone(),
                        mac: *mac,
                        up,
                    },
                )
            })
            .collect();

        let mut by_name = HashMap::new();
        let mut planned: Vec<Option<(PlannedInstance, Instance)>> = Vec::new();
        for (i, p) in plan.instances.into_iter().enumerate() {
            by_name.insert(p.spec.name.clone(), i);
            let fsm = p.fsm.clone();
            planned.push(Some((p, fsm)));
        }
        // Units: each group first (members in its listed order), then the rest alone.
        let mut units = Vec::new();
        let mut placement: Vec<(usize, usize)> = vec![(usize::MAX, 0); planned.len()];
        let mut groups = Vec::new();
        for g in sync_groups {
            let members: Vec<usize> = g.members.iter().map(|m| by_name[m]).collect();
            let fsms = members
                .iter()
                .map(|&i| planned[i].as_ref().expect("member of one group").1.clone())
                .collect();
            for (k, &i) in members.iter().enumerate() {
                placement[i] = (units.len(), k);
            }
            units.push(Unit::Synced {
                group: SyncGroup::new(fsms),
                members,
                notify: groups.len(),
            });
            groups.push(GroupNotify {
                notifier: Notifier::start(&g.name, crate::notify::TIMEOUT),
                name: g.name,
                spec: g.notify,
                state: State::Initialize,
            });
        }
        for (i, slot) in placement.iter_mut().enumerate() {
            if slot.0 == usize::MAX {
                *slot = (units.len(), 0);
                units.push(Unit::Alone(Box::new(
                    planned[i].as_ref().expect("planned").1.clone(),
                )));
            }
        }
        let instances = planned
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let (p, _) = p.expect("planned");
                let socket = &plan.sockets[p.socket];
                let unicast = p.spec.identity.is_unicast();
                let expect = Expect {
                    unicast,
                    // Multicast always (RFC); unicast unless the peers sit behind a
                    // router (keepalived never checks it there).
                    check_ttl: !unicast || p.spec.identity.check_unicast_ttl,
                    ..p.fsm.expect()
                };
                let destinations = if unicast {
                    p.spec.identity.unicast_peers.clone()
                } else if socket.v6 {
                    vec![IpAddr::V6(MULTICAST_V6)]
                } else {
                    vec![IpAddr::V4(MULTICAST_V4)]
                };
                sockets[p.socket].by_vrid.insert(p.spec.identity.vrid, i);
                Running {
                    notifier: Notifier::start(&p.spec.name, crate::notify::TIMEOUT),
                    unit: placement[i].0,
                    member: placement[i].1,
                    socket: p.socket,
                    ifindex: p.ifindex,
                    primary: p.primary,
                    expect,
                    destinations,
                    old_unicast_checksum: p.spec.identity.old_unicast_checksum,
                    vip_links: p.vip_links,
                    tracked: p.tracked,
                    announcer: Announcer::default(),
                    lease: None,
                    external_adjust: 0,
                    external_fault: false,
                    adjust: 0,
                    fault: false,
                    heard: HashSet::new(),
                    last_takeover: None,
                    vip_conflicts: 0,
                    last_vip_conflict: None,
                    spec: p.spec,
                }
            })
            .collect();
        Ok(Engine {
            sockets,
            instances,
            units,
            groups,
            by_name,
            links,
            frames,
            packets,
            link_changes,
            controls,
            tracked: HashMap::new(),
            netlink,
            events,
            status,
            held,
            watchers,
            conflicts,
        })
    }

    /// Runs until `shutdown` completes or a socket fails; stops every instance either
    /// way (a MASTER sends its priority-0 advert and removes its VIPs).
    pub(crate) async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        for i in 0..self.instances.len() {
            let r = &self.instances[i];
            tracing::info!(
                instance = %r.spec.name,
                interface = %self.sockets[r.socket].interface,
                vrid = r.spec.identity.vrid,
                priority = r.spec.tunables.priority,
                source = %r.primary,
                "vrrp instance starting"
            );
        }
        // VIPs still leased were this node's as MASTER moments ago (the daemon
        // restarted, or died and was started again within the lease): the instance
        // resumes as MASTER before any backup's Master_Down_Interval runs out. Any other
        // VIP left on an interface is stale, and a BACKUP must not answer for it.
        let mut resume = vec![false; self.instances.len()];
        for (i, resumed) in resume.iter_mut().enumerate() {
            *resumed = self.vips_leased(i).await;
            if *resumed {
                tracing::info!(
                    instance = %self.instances[i].spec.name,
                    "resuming as MASTER: its VIPs are still leased by a run moments ago \
                     (a restart), so the peers need not notice"
                );
            } else {
                self.remove_stale_vips(i).await;
            }
        }
        // Every socket is listed (at zero) from the start.
        for socket in 0..self.sockets.len() {
            self.publish_socket(socket);
        }
        // Tracked state at start (a link already down means FAULT from the first step).
        for i in 0..self.instances.len() {
            self.retrack(i, "state at start").await;
        }
        for (i, resumed) in resume.into_iter().enumerate() {
            let start = if resumed { Event::Resume } else { Event::Start };
            self.deliver(i, start).await;
        }
        let result = self.event_loop(shutdown).await;
        if self
            .controls
            .handover
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Silent: no priority 0, the VIPs stay for their lease, which the next
            // start renews when it resumes.
            for r in &mut self.instances {
                r.announcer.stop();
                if let Some(lease) = r.lease.take() {
                    lease.abort();
                }
            }
            tracing::info!("vrrp instances handed over: VIPs left in place for the next start");
        } else {
            for i in 0..self.instances.len() {
                self.deliver(i, Event::Shutdown).await;
            }
        }
        self.finish().await;
        result
    }

    async fn event_loop(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut watching_links = true;
        let mut reconfigure_open = true;
        let mut tracking_open = true;
        let mut peer_down_open = true;
        loop {
            let deadline = self.units.iter().filter_map(Unit::next_deadline).min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                change = self.link_changes.recv(), if watching_links => match change {
                    Some((ifindex, up)) => self.link_changed(ifindex, up).await,
                    None => {
                        tracing::warn!("link state no longer watched; instances stay as they are");
                        watching_links = false;
                    }
                },
                specs = self.controls.reconfigure.recv(), if reconfigure_open => match specs {
                    Some(specs) => self.reconfigure(specs),
                    None => reconfigure_open = false,
                },
                changed = self.controls.tracking.changed(), if tracking_open => match changed {
                    Ok(()) => self.apply_tracking().await,
                    Err(_) => tracking_open = false,
                },
                down = self.controls.peer_down.recv(), if peer_down_open => match down {
                    Some(down) => self.peer_down(down).await,
                    None => peer_down_open = false,
                },
                Some(conflict) = self.conflicts.recv() => self.vip_conflict(conflict),
                Some((socket, received)) = self.packets.recv() => match received {
                    Ok(received) => self.received(socket, received).await,
                    Err(e) => {
                        return Err(anyhow::anyhow!(
                            "receiving vrrp adverts on `{}`: {e}",
                            self.sockets[socket].interface
                        ));
                    }
                },
                () = sleep => {
                    let now = Instant::now();
                    for i in 0..self.instances.len() {
                        if self.fsm(i).next_deadline().is_some_and(|at| at <= now) {
                            self.deliver(i, Event::Timer).await;
                        }
                    }
                }
            }
        }
    }

    fn fsm(&self, i: usize) -> &Instance {
        let r = &self.instances[i];
        match &self.units[r.unit] {
            Unit::Alone(fsm) => fsm,
            Unit::Synced { group, .. } => group.member(r.member).expect("member"),
        }
    }

    /// An interface went up or down: FAULT for the instances on it, weights for those
    /// tracking it.
    async fn link_changed(&mut self, ifindex: u32, up: bool) {
        let Some(link) = self.links.get_mut(&ifindex) else {
            return;
        };
        link.up = up;
        let name = link.name.clone();
        if up {
            tracing::info!(interface = %name, "interface is up");
        } else {
            tracing::warn!(interface = %name, "interface is down or has no carrier");
        }
        let why = format!("interface {name} {}", if up { "up" } else { "down" });
        for i in 0..self.instances.len() {
            let r = &self.instances[i];
            let concerned = r.ifindex == ifindex
                || r.vip_links.contains(&ifindex)
                || r.tracked.iter().any(|(t, _)| *t == ifindex);
            if concerned {
                self.retrack(i, &why).await;
            }
        }
    }

    /// A reload changed instances in place: the state machine takes the new priority
    /// and preemption, and the rest of the spec (announcements, notify commands) is
    /// used from now on. An instance it cannot take is left as it was, with an error.
    fn reconfigure(&mut self, specs: Vec<crate::config::VrrpInstance>) {
        for spec in specs {
            let Some(&i) = self.by_name.get(&spec.name) else {
                tracing::error!(instance = %spec.name, "reload names a vrrp instance that is not running; restart xdp-lb to add it");
                continue;
            };
            let r = &self.instances[i];
            if r.spec == spec {
                continue;
            }
            // Only the tunables can change in place (the daemon refused the rest).
            let tunables = super::fsm_tunables(&spec);
            let (unit, member) = (r.unit, r.member);
            let applied = match &mut self.units[unit] {
                Unit::Alone(fsm) => fsm.reconfigure(&tunables),
                Unit::Synced { group, .. } => group.reconfigure(member, &tunables),
            };
            if let Err(field) = applied {
                tracing::error!(instance = %spec.name, "reload not applied to this instance: its {field} changed; restart xdp-lb for that");
                continue;
            }
            let fsm = self.fsm(i);
            tracing::info!(
                instance = %spec.name,
                state = %state_label(fsm.state()),
                priority = fsm.priority(),
                base_priority = fsm.base_priority(),
                preempt = spec.tunables.preempt,
                "vrrp instance reconfigured"
            );
            self.instances[i].spec = spec;
            self.publish(unit);
        }
    }

    /// The latest tracking totals: each instance whose values changed takes them.
    async fn apply_tracking(&mut self) {
        let latest = self.controls.tracking.borrow_and_update().clone();
        for (name, update) in latest {
            if self.tracked.get(&name) != Some(&update) {
                self.tracked.insert(name, update.clone());
                self.track(update).await;
            }
        }
    }

    /// A `peer_bfd` session saw its peer die: each instance naming it hears of it; those
    /// that follow that peer as master take over now.
    async fn peer_down(&mut self, down: PeerDown) {
        let naming: Vec<usize> = (0..self.instances.len())
            .filter(|&i| {
                self.instances[i]
                    .spec
                    .identity
                    .peer_bfd
                    .contains(&down.session)
            })
            .collect();
        for i in naming {
            let before = self.fsm(i).stats().peer_down_takeovers;
            let master = self.fsm(i).master().map(|(addr, _)| addr);
            self.deliver(i, Event::PeerDown { peer: down.peer }).await;
            let r = &self.instances[i];
            if self.fsm(i).stats().peer_down_takeovers > before {
                tracing::warn!(
                    instance = %r.spec.name,
                    session = %down.session,
                    peer = %down.peer,
                    "vrrp takeover at once: bfd saw master {} die", down.peer
                );
            } else {
                tracing::info!(
                    instance = %r.spec.name,
                    session = %down.session,
                    peer = %down.peer,
                    state = %self.fsm(i).state(),
                    master = ?master,
                    "bfd peer down, no takeover: it is not the master this instance follows"
                );
            }
        }
    }

    /// The daemon's tracked objects changed for one instance.
    async fn track(&mut self, update: TrackUpdate) {
        let Some(&i) = self.by_name.get(&update.instance) else {
            tracing::warn!(instance = %update.instance, "tracking update for an unknown vrrp instance");
            return;
        };
        let r = &mut self.instances[i];
        r.external_adjust = update.adjust;
        r.external_fault = update.fault;
        self.retrack(i, &update.reason).await;
    }

    /// Combines every tracked cause, as keepalived does: weights add up (a positive one
    /// while its interface is up, a negative one while it is down), and any FAULT cause
    /// (own interface down, a weight-0 tracked interface down, a tracked object asking
    /// for it) means FAULT. Gives the state machine only what changed.
    async fn retrack(&mut self, i: usize, why: &str) {
        let up = |ifindex: &u32| self.links.get(ifindex).is_some_and(|l| l.up);
        let r = &self.instances[i];
        let own_down = !up(&r.ifindex);
        let mut adjust = r.external_adjust;
        let mut fault = r.external_fault || own_down;
        let mut down_names = Vec::new();
        if own_down {
            down_names.push(self.links[&r.ifindex].name.clone());
        }
        // The devices of VIPs held elsewhere are tracked too (as keepalived does): a
        // VIP that cannot be reached is a fault.
        for ifindex in r.vip_links.iter().filter(|&&l| l != r.ifindex) {
            if !up(ifindex) {
                fault = true;
                down_names.push(self.links[ifindex].name.clone());
            }
        }
        for (ifindex, weight) in &r.tracked {
            let is_up = up(ifindex);
            if !is_up {
                down_names.push(self.links[ifindex].name.clone());
            }
            match (*weight, is_up) {
                (0, false) => fault = true,
                (w, true) if w > 0 => adjust += w,
                (w, false) if w < 0 => adjust += w,
                _ => {}
            }
        }
        let (adjust_changed, fault_changed) = (adjust != r.adjust, fault != r.fault);
        if !adjust_changed && !fault_changed {
            return;
        }
        tracing::info!(
            instance = %r.spec.name,
            adjust,
            fault,
            down = %down_names.join(","),
            reason = %why,
            "vrrp tracking changed"
        );
        let r = &mut self.instances[i];
        r.adjust = adjust;
        r.fault = fault;
        if adjust_changed {
            self.deliver(i, Event::PriorityAdjust(adjust)).await;
        }
        if fault_changed {
            self.deliver(i, Event::FaultSet(fault)).await;
        }
    }

    async fn received(&mut self, socket: usize, received: Received) {
        let io = &mut self.sockets[socket];
        let Some(vrid) = packet::peek_vrid(&received.payload) else {
            tracing::debug!(interface = %io.interface, peer = %received.src, "vrrp packet dropped: too short to name a VRID");
            io.drops[DropReason::TooShort.index()] += 1;
            self.publish_socket(socket);
            return;
        };
        let Some(&i) = io.by_vrid.get(&vrid) else {
            io.other_vrid += 1;
            self.publish_socket(socket);
            return;
        };
        let running = &mut self.instances[i];
        let id = &running.spec.identity;
        if id.is_unicast() && id.check_unicast_src && !id.unicast_peers.contains(&received.src) {
            tracing::debug!(
                instance = %running.spec.name,
                peer = %received.src,
                "vrrp packet dropped: not from a configured unicast peer"
            );
            let event = Event::Dropped {
                from: received.src,
                reason: DropReason::UnknownSource,
            };
            self.deliver(i, event).await;
            return;
        }
        let event = match packet::decode_form(
            &received.payload,
            received.src,
            received.dst,
            received.ttl,
            &running.expect,
        ) {
            Ok((advert, form)) => {
                if form == ChecksumForm::OldUnicast && !running.old_unicast_checksum {
                    running.old_unicast_checksum = true;
                    tracing::warn!(
                        instance = %running.spec.name,
                        peer = %received.src,
                        "the peer computes VRRPv3 unicast checksums as keepalived before \
                         1.3.6 did (over 224.0.0.18): accepted, and ours are sent the same \
                         way from now on (set old_unicast_checksum = true to start so; \
                         better, upgrade the peer)"
                    );
                }
                let first_heard =
                    running.heard.len() < HEARD_CAP && running.heard.insert(received.src);
                let was_master = self.fsm(i).state() == State::Master;
                let priority = advert.priority;
                let from = received.src;
                self.deliver(i, Event::Advert { from, advert }).await;
                if was_master && self.fsm(i).state() == State::Backup {
                    self.taken_over(i, from, priority, first_heard);
                }
                return;
            }
            Err(reason) => {
                tracing::debug!(
                    instance = %running.spec.name,
                    peer = %received.src,
                    %reason,
                    "vrrp packet dropped"
                );
                Event::Dropped {
                    from: received.src,
                    reason,
                }
            }
        };
        self.deliver(i, event).await;
    }

    /// A peer's advert made MASTER `i` step down: logged with the peer, and kept for
    /// the status.
    fn taken_over(&mut self, i: usize, peer: IpAddr, priority: u8, first_heard: bool) {
        let ours = self.fsm(i).priority();
        let r = &mut self.instances[i];
        r.last_takeover = Some(Takeover {
            peer,
            priority,
            first_heard,
        });
        let whom = if first_heard {
            "a node never heard before on this VRID (if no other node should hold it, \
             look for a spoofed advert or a misconfigured router at that address)"
        } else {
            "a known peer"
        };
        tracing::warn!(
            instance = %r.spec.name,
            interface = %self.sockets[r.socket].interface,
            vrid = r.spec.identity.vrid,
            %peer,
            peer_priority = priority,
            our_priority = ours,
            first_heard,
            "vrrp takeover: {peer} took MASTER with priority {priority} over our {ours}; \
             it is {whom}"
        );
        self.publish(self.instances[i].unit);
    }

    /// Feeds `event` to instance `i` (and through its group to the other members), and
    /// carries out what every state machine asks for.
    async fn deliver(&mut self, i: usize, event: Event) {
        let now = Instant::now();
        let (unit, member) = (self.instances[i].unit, self.instances[i].member);
        let actions: Vec<(usize, Action)> = match &mut self.units[unit] {
            Unit::Alone(fsm) => fsm.handle(now, event).into_iter().map(|a| (i, a)).collect(),
            Unit::Synced { group, members, .. } => group
                .handle(now, member, event)
                .into_iter()
                .map(|(m, a)| (members[m], a))
                .collect(),
        };
        let moved = actions.iter().any(|(_, a)| {
            matches!(
                a,
                Action::BecomeMaster | Action::BecomeBackup | Action::BecomeFault | Action::Stop
            )
        });
        for (j, action) in actions {
            self.act(j, action).await;
        }
        if moved && let Unit::Synced { notify, .. } = self.units[unit] {
            self.group_changed(unit, notify);
        }
        self.publish(unit);
    }

    /// Writes the counters of `socket`'s interface and family (summed over its sockets:
    /// unicast and multicast instances there have one each).
    fn publish_socket(&self, socket: usize) {
        let this = &self.sockets[socket];
        let mut other_vrid = 0;
        let mut drops = [0; DropReason::ALL.len()];
        for io in self
            .sockets
            .iter()
            .filter(|io| io.interface == this.interface && io.v6 == this.v6)
        {
            other_vrid += io.other_vrid;
            for (sum, n) in drops.iter_mut().zip(io.drops) {
                *sum += n;
            }
        }
        self.status.set_socket(SocketStatus::of(
            &this.interface,
            this.v6,
            other_vrid,
            &drops,
        ));
    }

    /// Writes the status of every instance of `unit` (a group moves its members too).
    fn publish(&self, unit: usize) {
        let (members, group) = match &self.units[unit] {
            Unit::Alone(_) => (
                self.instances
                    .iter()
                    .position(|r| r.unit == unit)
                    .into_iter()
                    .collect::<Vec<_>>(),
                None,
            ),
            Unit::Synced {
                members, notify, ..
            } => (members.clone(), Some(self.groups[*notify].name.as_str())),
        };
        for i in members {
            let r = &self.instances[i];
            self.status.set(InstanceStatus::of(
                &r.spec.name,
                group,
                &self.sockets[r.socket].interface,
                self.fsm(i),
                r.primary,
                r.last_takeover,
                (r.vip_conflicts, r.last_vip_conflict.clone()),
            ));
        }
    }

    async fn act(&mut self, i: usize, action: Action) {
        match action {
            Action::SendAdvert { priority } => self.send_advert(i, priority).await,
            Action::BecomeMaster => {
                // The data plane follows first, so it forwards the VIPs' services by
                // the time the VIPs are added and announced: a packet reaching the
                // kernel in between (a client's retransmission, an ACK of a NAT
                // connection the sync kept) would be answered with a reset. Sent is
                // not enough (it crosses two tasks: a millisecond under load).
                let applied = Arc::new(tokio::sync::Notify::new());
                self.report_with(i, State::Master, Applied(Some(applied.clone())))
                    .await;
                let _ = tokio::time::timeout(APPLY_WAIT, applied.notified()).await;
                self.add_vips(i).await;
                self.start_announcer(i).await;
                self.log_and_notify(i, State::Master);
                self.update_held();
            }
            Action::Reannounce => {
                let r = &mut self.instances[i];
                let t = &r.spec.tunables;
                r.announcer.again(
                    t.garp_lower_prio_repeat,
                    t.garp_lower_prio_delay,
                    t.garp_interval,
                );
            }
            Action::BecomeBackup => self.release(i, State::Backup).await,
            Action::BecomeFault => self.release(i, State::Fault).await,
            Action::Stop => self.release(i, State::Initialize).await,
            Action::SplitBrain {
                peer,
                peer_priority,
            } => {
                let r = &self.instances[i];
                let ours = self.fsm(i).priority();
                tracing::warn!(
                    instance = %r.spec.name,
                    interface = %self.sockets[r.socket].interface,
                    vrid = r.spec.identity.vrid,
                    %peer,
                    peer_priority,
                    our_priority = ours,
                    "split brain: {peer} keeps advertising as MASTER with priority \
                     {peer_priority} while we are MASTER with priority {ours}; it does not \
                     hear our adverts, most likely because vrrp multicast or ip protocol 112 \
                     is filtered between the nodes"
                );
            }
            Action::VridClash { peer, what } => {
                let r = &self.instances[i];
                tracing::warn!(
                    instance = %r.spec.name,
                    interface = %self.sockets[r.socket].interface,
                    vrid = r.spec.identity.vrid,
                    %peer,
                    clash = what.name(),
                    "vrid clash: {peer} advertises virtual_router_id {} but {what}; its \
                     adverts are ignored (two clusters sharing one id on this segment, or \
                     a configuration that differs between the nodes)",
                    r.spec.identity.vrid
                );
            }
        }
    }

    async fn send_advert(&mut self, i: usize, priority: u8) {
        let advert = self.fsm(i).advert(priority);
        let r = &self.instances[i];
        let io = &self.sockets[r.socket];
        let mut failed = None;
        for &dst in &r.destinations {
            // The old form differs only in the pseudo-header the checksum covers.
            let summed_dst = match dst {
                IpAddr::V4(_) if r.old_unicast_checksum => IpAddr::V4(MULTICAST_V4),
                _ => dst,
            };
            let bytes = match packet::encode(&advert, r.primary, summed_dst) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(instance = %r.spec.name, %dst, "cannot encode advert: {e}");
                    continue;
                }
            };
            if let Err(e) = io.socket.send(&bytes, dst).await {
                failed = Some((dst, e));
            }
        }
        if let Some((dst, e)) = failed {
            let name = &self.instances[i].spec.name;
            let io = &mut self.sockets[self.instances[i].socket];
            if let Some(suppressed) = io.send_warnings.allow(std::time::Instant::now()) {
                tracing::warn!(
                    instance = %name,
                    interface = %io.interface,
                    %dst,
                    suppressed,
                    "cannot send vrrp advert: {e}"
                );
            }
        }
    }

    /// Adds instance `i`'s VIPs with a lifetime of [`VIP_LEASE`], renewed every
    /// [`LEASE_RENEWAL`] by a task of its own until they are released: a VIP left by
    /// a daemon killed with `kill -9` goes away by itself instead of answering ARP for
    /// a dead node.
    async fn add_vips(&mut self, i: usize) {
        let r = &self.instances[i];
        let vips: Vec<(u32, crate::config::VrrpAddress)> = r
            .vip_links
            .iter()
            .zip(&r.spec.identity.virtual_ipaddresses)
            .map(|(&ifindex, vip)| (ifindex, vip.clone()))
            .collect();
        for (ifindex, vip) in &vips {
            if let Err(e) = lease(&self.netlink, *ifindex, vip).await {
                tracing::error!(
                    instance = %r.spec.name,
                    interface = %self.links[ifindex].name,
                    vip = %vip.addr,
                    "cannot add virtual address: {e}"
                );
            }
        }
        let (netlink, name) = (self.netlink.clone(), r.spec.name.clone());
        let renewal = tokio::spawn(async move {
            let mut warnings = crate::log_limit::LogLimit::default();
            loop {
                tokio::time::sleep(LEASE_RENEWAL).await;
                for (ifindex, vip) in &vips {
                    if let Err(e) = lease(&netlink, *ifindex, vip).await
                        && let Some(suppressed) = warnings.allow(std::time::Instant::now())
                    {
                        tracing::error!(instance = %name, vip = %vip.addr, suppressed, "cannot renew virtual address: {e}");
                    }
                }
            }
        });
        if let Some(old) = self.instances[i].lease.replace(renewal) {
            old.abort();
        }
    }

    async fn remove_vips(&mut self, i: usize) {
        let r = &self.instances[i];
        for (vip, &ifindex) in r.spec.identity.virtual_ipaddresses.iter().zip(&r.vip_links) {
            if let Err(e) = self.netlink.remove_address(ifindex, vip.addr).await {
                tracing::error!(
                    instance = %r.spec.name,
                    interface = %self.links[&ifindex].name,
                    vip = %vip.addr,
                    "cannot remove virtual address: {e}"
                );
            }
        }
    }

    /// Removes VIPs of instance `i` that are on their interfaces before it starts.
    /// Every VIP of instance `i` is on its interface with a lease still running.
    async fn vips_leased(&self, i: usize) -> bool {
        let r = &self.instances[i];
        let vips = r.spec.identity.virtual_ipaddresses.iter().map(|v| v.addr);
        super::all_leased(
            &self.netlink,
            &r.spec.name,
            vips.zip(r.vip_links.iter().copied()),
        )
        .await
    }

    async fn remove_stale_vips(&mut self, i: usize) {
        let r = &self.instances[i];
        for (vip, &ifindex) in r.spec.identity.virtual_ipaddresses.iter().zip(&r.vip_links) {
            match self.netlink.remove_address(ifindex, vip.addr).await {
                Ok(crate::netlink::Change::Done) => tracing::warn!(
                    instance = %r.spec.name,
                    interface = %self.links[&ifindex].name,
                    vip = %vip.addr,
                    "removed a virtual address left by an earlier run (it ended without \
                     releasing it); it comes back when this node is MASTER"
                ),
                Ok(crate::netlink::Change::AlreadyThere) => {}
                Err(e) => tracing::error!(
                    instance = %r.spec.name,
                    vip = %vip.addr,
                    "cannot remove a stale virtual address: {e}"
                ),
            }
        }
    }

    /// Sends the gratuitous ARP / unsolicited NA rounds (and the periodic refresh) on a
    /// task of their own, stopped when the instance leaves MASTER. Each VIP is announced
    /// on the device that holds it, from that device's MAC.
    async fn start_announcer(&mut self, i: usize) {
        let mut link_locals: HashMap<u32, Option<Ipv6Addr>> = HashMap::new();
        let r = &self.instances[i];
        if r.spec.identity.is_ipv6() {
            for &ifindex in &r.vip_links {
                if link_locals.contains_key(&ifindex) {
                    continue;
                }
                let ll = match self.netlink.link_local_v6(ifindex).await {
                    Ok(ll) => ll,
                    Err(e) => {
                        tracing::warn!(interface = %self.links[&ifindex].name, "no link-local address: {e}");
                        None
                    }
                };
                link_locals.insert(ifindex, ll);
            }
        }
        let frames: Vec<(Arc<FrameSocket>, Vec<u8>)> = r
            .spec
            .identity
            .virtual_ipaddresses
            .iter()
            .zip(&r.vip_links)
            .filter_map(|(v, ifindex)| {
                let mac = self.links[ifindex].mac;
                let frame = match v.addr {
                    IpAddr::V4(a) => gratuitous_arp(mac, a),
                    IpAddr::V6(a) => unsolicited_na(mac, link_locals[ifindex]?, a),
                };
                Some((Arc::clone(&self.frames[ifindex]), frame))
            })
            .collect();
        let r = &mut self.instances[i];
        if frames.is_empty() {
            tracing::warn!(
                instance = %r.spec.name,
                "no neighbour advertisement sent: the interfaces have no ipv6 link-local address"
            );
            return;
        }
        let schedule = crate::announce::Schedule {
            repeat: r.spec.tunables.garp_master_repeat,
            delay: r.spec.tunables.garp_master_delay,
            refresh: r.spec.tunables.garp_master_refresh,
            refresh_repeat: r.spec.tunables.garp_master_refresh_repeat,
            interval: r.spec.tunables.garp_interval,
        };
        r.announcer.start(&r.spec.name, Arc::new(frames), schedule);
    }

    async fn release(&mut self, i: usize, state: State) {
        self.instances[i].announcer.stop();
        if let Some(lease) = self.instances[i].lease.take() {
            lease.abort();
        }
        self.remove_vips(i).await;
        self.changed(i, state).await;
    }

    /// Tells each ARP watcher the IPv4 VIPs held as MASTER on its interface now.
    fn update_held(&self) {
        for (&ifindex, tx) in &self.held {
            let mut now = Held::new();
            for (i, r) in self.instances.iter().enumerate() {
                if self.fsm(i).state() != State::Master {
                    continue;
                }
                for (vip, &at) in r.spec.identity.virtual_ipaddresses.iter().zip(&r.vip_links) {
                    if at == ifindex {
                        now.insert(vip.addr, r.spec.identity.advert_interval);
                    }
                }
            }
            tx.send_if_modified(|held| {
                let changed = *held != now;
                *held = now;
                changed
            });
        }
    }

    /// Another MAC announces or answers for a VIP this node holds as MASTER: logged
    /// once per (VIP, MAC), counted and shown in the status.
    fn vip_conflict(&mut self, c: Conflict) {
        let holder = (0..self.instances.len()).find(|&i| {
            let r = &self.instances[i];
            self.fsm(i).state() == State::Master
                && r.spec
                    .identity
                    .virtual_ipaddresses
                    .iter()
                    .zip(&r.vip_links)
                    .any(|(vip, &at)| vip.addr == c.vip && at == c.ifindex)
        });
        let Some(i) = holder else {
            return;
        };
        // Announce again once the other side has been quiet for a while (and past
        // the clients' ARP `locktime`, 1 s by default): when it lets go, as a split
        // brain heals, the clients it took come back to us.
        let r = &mut self.instances[i];
        let t = &r.spec.tunables;
        r.announcer.after(
            r.spec.identity.advert_interval.max(ARP_LOCKTIME),
            t.garp_lower_prio_repeat.max(1),
            t.garp_interval,
        );
        if !c.confirmed {
            return;
        }
        let conflict = VipConflict {
            vip: c.vip,
            mac: crate::neighbours::fmt_mac(c.mac),
        };
        let r = &mut self.instances[i];
        r.vip_conflicts += 1;
        if r.last_vip_conflict.as_ref() != Some(&conflict) {
            tracing::warn!(
                instance = %r.spec.name,
                interface = %self.links[&c.ifindex].name,
                vrid = r.spec.identity.vrid,
                vip = %c.vip,
                other_mac = %conflict.mac,
                "vip conflict: {} also announces or answers for {} while we are MASTER: \
                 another MASTER (a split brain; VRRP adverts are not getting through, e.g. \
                 ip protocol 112 is filtered), a node whose daemon died (kill -9) and left \
                 the VIP on its interface, or a host answering ARP or neighbour discovery \
                 for the VIP (a DR real server without arp_ignore = 1)",
                conflict.mac,
                c.vip
            );
            r.last_vip_conflict = Some(conflict);
        }
        self.publish(self.instances[i].unit);
    }

    /// Logs the change, runs the notify commands and reports the event.
    async fn changed(&mut self, i: usize, state: State) {
        self.log_and_notify(i, state);
        self.report(i, state).await;
        self.update_held();
    }

    /// Tells the daemon (its data plane follows).
    async fn report(&mut self, i: usize, state: State) {
        self.report_with(i, state, Applied::default()).await;
    }

    async fn report_with(&mut self, i: usize, state: State, applied: Applied) {
        let r = &self.instances[i];
        let event = FailoverEvent {
            instance: r.spec.name.clone(),
            state,
            vips: r.spec.identity.vips(),
            applied,
        };
        // A closed receiver only means nobody listens any more.
        let _ = self.events.send(event).await;
    }

    fn log_and_notify(&self, i: usize, state: State) {
        let fsm = self.fsm(i);
        let (priority, master) = (fsm.priority(), fsm.master());
        let r = &self.instances[i];
        let label = state_label(state);
        tracing::info!(
            instance = %r.spec.name,
            interface = %self.sockets[r.socket].interface,
            vrid = r.spec.identity.vrid,
            priority,
            master = ?master,
            "vrrp instance entering {label} state"
        );
        notify(
            &r.notifier,
            &r.spec.tunables.notify,
            state,
            ["INSTANCE", &r.spec.name, label, &priority.to_string()],
        );
    }

    /// After a member moved: once every member is in one state (or any is in FAULT),
    /// that is the group's state; its notify commands run when it changes.
    fn group_changed(&mut self, unit: usize, g: usize) {
        let Unit::Synced { members, .. } = &self.units[unit] else {
            return;
        };
        let states: Vec<State> = members.iter().map(|&m| self.fsm(m).state()).collect();
        let state = if states.contains(&State::Fault) {
            State::Fault
        } else if states.iter().all(|s| *s == states[0]) {
            states[0]
        } else {
            // Members in between (one forced along by another): wait for them.
            return;
        };
        let group = &mut self.groups[g];
        if group.state == state {
            return;
        }
        group.state = state;
        let label = state_label(state);
        tracing::info!(group = %group.name, "vrrp sync group entering {label} state");
        notify(
            &group.notifier,
            &group.spec,
            state,
            ["GROUP", &group.name, label, "0"],
        );
    }

    /// Logs the counters, stops the readers and lets the notify commands finish.
    async fn finish(self) {
        for r in &self.instances {
            let stats = self.fsm_of(r).stats();
            tracing::info!(
                instance = %r.spec.name,
                adverts_received = stats.adverts_received,
                adverts_sent = stats.adverts_sent,
                became_master = stats.became_master,
                split_brain_adverts = stats.split_brain_adverts,
                drops = %counters(&stats.drops),
                "vrrp instance stopped"
            );
        }
        for watcher in &self.watchers {
            watcher.abort();
        }
        for io in &self.sockets {
            io.reader.abort();
            tracing::debug!(
                interface = %io.interface,
                other_vrid = io.other_vrid,
                drops = %counters(&io.drops),
                "vrrp socket closed"
            );
        }
        for mut r in self.instances {
            r.announcer.stop();
            r.notifier.finish().await;
        }
        for g in self.groups {
            g.notifier.finish().await;
        }
    }

    fn fsm_of(&self, r: &Running) -> &Instance {
        match &self.units[r.unit] {
            Unit::Alone(fsm) => fsm,
            Unit::Synced { group, .. } => group.member(r.member).expect("member"),
        }
    }
}

impl Unit {
    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Unit::Alone(fsm) => fsm.next_deadline(),
            Unit::Synced { group, .. } => group.next_deadline(),
        }
    }
}

/// Opens one VRRP socket and starts its reader.
fn open_socket(
    id: usize,
    plan: &SocketPlan,
    packets: mpsc::Sender<(usize, std::io::Result<Received>)>,
) -> Result<SocketIo, FailoverError> {
    let socket = VrrpSocket::open(
        &plan.interface,
        plan.ifindex,
        plan.v6,
        plan.multicast,
        plan.source,
    )
    .map_err(|source| FailoverError::Socket {
        interface: plan.interface.clone(),
        source,
    })?;
    let socket = Arc::new(socket);
    let reader = {
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            loop {
                let received = socket.recv().await;
                let failed = received.is_err();
                if packets.send((id, received)).await.is_err() || failed {
                    return;
                }
            }
        })
    };
    Ok(SocketIo {
        interface: plan.interface.clone(),
        v6: plan.v6,
        socket,
        by_vrid: HashMap::new(),
        drops: [0; DropReason::ALL.len()],
        other_vrid: 0,
        send_warnings: LogLimit::default(),
        reader,
    })
}

/// Runs the command for `state`, then the generic one with `args` appended.
fn notify(notifier: &Notifier, spec: &crate::config::VrrpNotify, state: State, args: [&str; 4]) {
    let specific = match state {
        State::Master => &spec.master,
        State::Backup => &spec.backup,
        State::Fault => &spec.fault,
        State::Initialize => &spec.stop,
    };
    if let Some(argv) = specific {
        notifier.run(argv.clone());
    }
    if let Some(argv) = &spec.generic {
        let mut argv = argv.clone();
        argv.extend(args.iter().map(|a| a.to_string()));
        notifier.run(argv);
    }
}

/// `reason=count` for every non-zero counter.
fn counters(drops: &[u64; DropReason::ALL.len()]) -> String {
    DropReason::ALL
        .iter()
        .filter(|r| drops[r.index()] > 0)
        .map(|r| format!("{}={}", r.name(), drops[r.index()]))
        .collect::<Vec<_>>()
        .join(",")
}
