//! One socket's task: the instances that share a raw VRRP socket, their timers, and the
//! actions their state machines ask for.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::Instant,
};

use anyhow::Context as _;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use xdp_lb_vrrp::{
    Action, DropReason, Event, Expect, Instance, State,
    packet::{self, MULTICAST_V4, MULTICAST_V6},
};

use super::{FailoverError, FailoverEvent, Group, InstanceSpec, notify::Notifier};
use crate::{
    announce::{FrameSocket, gratuitous_arp, unsolicited_na},
    netlink::Netlink,
    vrrp_socket::{Received, VrrpSocket},
};

/// One instance at run time.
struct Running {
    spec: InstanceSpec,
    fsm: Instance,
    primary: IpAddr,
    expect: Expect,
    destinations: Vec<IpAddr>,
    announcer: Option<JoinHandle<()>>,
    notifier: Notifier,
    /// FAULT causes, combined: the interface's link, and tracked objects.
    link_down: bool,
    track_fault: bool,
}

pub(crate) struct SocketTask {
    interface: String,
    ifindex: u32,
    mac: [u8; 6],
    socket: VrrpSocket,
    /// `true` while the interface is up (see [`super::link`]).
    link: watch::Receiver<bool>,
    frames: Arc<FrameSocket>,
    instances: Vec<Running>,
    by_vrid: HashMap<u8, usize>,
    netlink: Netlink,
    events: mpsc::Sender<FailoverEvent>,
    /// Packets dropped before they could be given to an instance.
    socket_drops: [u64; DropReason::ALL.len()],
    /// Adverts for VRIDs none of our instances on this socket uses.
    other_vrid: u64,
    /// Tracking updates for this socket's instances, by instance index.
    tracking: mpsc::Receiver<(usize, super::TrackUpdate)>,
}

impl SocketTask {
    pub(crate) fn open(
        group: Group,
        link: watch::Receiver<bool>,
        tracking: mpsc::Receiver<(usize, super::TrackUpdate)>,
        netlink: Netlink,
        events: mpsc::Sender<FailoverEvent>,
    ) -> Result<SocketTask, FailoverError> {
        let socket = VrrpSocket::open(
            &group.interface,
            group.ifindex,
            group.v6,
            group.unicast_source.is_none(),
            group.unicast_source,
        )
        .map_err(|source| FailoverError::Socket {
            interface: group.interface.clone(),
            source,
        })?;
        let frames =
            FrameSocket::open(group.ifindex).map_err(|source| FailoverError::FrameSocket {
                interface: group.interface.clone(),
                source,
            })?;
        let mut by_vrid = HashMap::new();
        let instances = group
            .instances
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                by_vrid.insert(p.spec.vrid, i);
                let unicast = p.spec.is_unicast();
                let expect = Expect {
                    unicast,
                    // keepalived does not check the TTL of unicast adverts, which may
                    // have crossed a router.
                    check_ttl: !unicast,
                    ..p.fsm.expect()
                };
                let destinations = if unicast {
                    p.spec.unicast_peers.clone()
                } else if group.v6 {
                    vec![IpAddr::V6(MULTICAST_V6)]
                } else {
                    vec![IpAddr::V4(MULTICAST_V4)]
                };
                Running {
                    notifier: Notifier::start(&p.spec.name, p.spec.notify.timeout),
                    spec: p.spec,
                    fsm: p.fsm,
                    primary: p.primary,
                    expect,
                    destinations,
                    announcer: None,
                    link_down: false,
                    track_fault: false,
                }
            })
            .collect();
        Ok(SocketTask {
            interface: group.interface,
            ifindex: group.ifindex,
            mac: group.mac,
            socket,
            link,
            frames: Arc::new(frames),
            instances,
            by_vrid,
            netlink,
            events,
            socket_drops: [0; DropReason::ALL.len()],
            other_vrid: 0,
            tracking,
        })
    }

    /// Runs until `stop` turns true or the socket fails; stops every instance either way.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        for i in 0..self.instances.len() {
            tracing::info!(
                instance = %self.instances[i].spec.name,
                interface = %self.interface,
                vrid = self.instances[i].spec.vrid,
                priority = self.instances[i].spec.priority,
                source = %self.instances[i].primary,
                "vrrp instance starting"
            );
            if !*self.link.borrow() {
                self.link_fault(i, true);
                self.instances[i].link_down = true;
            }
            self.deliver(i, Event::Start).await;
        }
        let result = self.event_loop(&mut stop).await;
        for i in 0..self.instances.len() {
            self.deliver(i, Event::Shutdown).await;
        }
        self.finish().await;
        result
    }

    async fn event_loop(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut watching_link = true;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let deadline = self
                .instances
                .iter()
                .filter_map(|r| r.fsm.next_deadline())
                .min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                changed = self.link.changed(), if watching_link => {
                    if changed.is_err() {
                        tracing::warn!(
                            interface = %self.interface,
                            "link state no longer watched; instances stay as they are"
                        );
                        watching_link = false;
                        continue;
                    }
                    let down = !*self.link.borrow_and_update();
                    for i in 0..self.instances.len() {
                        self.link_fault(i, down);
                        self.instances[i].link_down = down;
                        let fault = down || self.instances[i].track_fault;
                        self.deliver(i, Event::FaultSet(fault)).await;
                    }
                }
                Some((i, update)) = self.tracking.recv() => self.track(i, update).await,
                received = self.socket.recv() => match received {
                    Ok(received) => self.received(received).await,
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("receiving vrrp adverts on `{}`", self.interface)
                        });
                    }
                },
                () = sleep => {
                    let now = Instant::now();
                    for i in 0..self.instances.len() {
                        if self.instances[i].fsm.next_deadline().is_some_and(|at| at <= now) {
                            self.deliver(i, Event::Timer).await;
                        }
                    }
                }
            }
        }
    }

    /// A tracked object changed: the total weight adjusts the priority (as keepalived
    /// sums its tracked weights); a fault makes the instance FAULT.
    async fn track(&mut self, i: usize, update: super::TrackUpdate) {
        let r = &mut self.instances[i];
        tracing::info!(
            instance = %r.spec.name,
            adjust = update.adjust,
            fault = update.fault,
            reason = %update.reason,
            "vrrp tracking changed"
        );
        let fault_changed = r.track_fault != update.fault;
        r.track_fault = update.fault;
        let fault = r.link_down || r.track_fault;
        self.deliver(i, Event::PriorityAdjust(update.adjust)).await;
        if fault_changed {
            self.deliver(i, Event::FaultSet(fault)).await;
        }
    }

    fn link_fault(&self, i: usize, down: bool) {
        let r = &self.instances[i];
        if down {
            tracing::warn!(
                instance = %r.spec.name,
                interface = %self.interface,
                "interface is down or has no carrier: instance enters FAULT"
            );
        } else {
            tracing::info!(
                instance = %r.spec.name,
                interface = %self.interface,
                "interface is up again: instance leaves FAULT"
            );
        }
    }

    async fn received(&mut self, received: Received) {
        let Some(vrid) = packet::peek_vrid(&received.payload) else {
            self.socket_drops[DropReason::TooShort.index()] += 1;
            return;
        };
        let Some(&i) = self.by_vrid.get(&vrid) else {
            self.other_vrid += 1;
            return;
        };
        let running = &self.instances[i];
        let event = match packet::decode(
            &received.payload,
            received.src,
            received.dst,
            received.ttl,
            &running.expect,
        ) {
            Ok(advert) => Event::Advert {
                from: received.src,
                advert,
            },
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

    /// Feeds `event` to instance `i` and carries out what it asks for.
    async fn deliver(&mut self, i: usize, event: Event) {
        let actions = self.instances[i].fsm.handle(Instant::now(), event);
        for action in actions {
            self.act(i, action).await;
        }
    }

    async fn act(&mut self, i: usize, action: Action) {
        match action {
            Action::SendAdvert { priority } => self.send_advert(i, priority).await,
            Action::BecomeMaster => {
                self.add_vips(i).await;
                self.start_announcer(i).await;
                self.changed(i, State::Master).await;
            }
            Action::BecomeBackup => self.release(i, State::Backup).await,
            Action::BecomeFault => self.release(i, State::Fault).await,
            Action::Stop => self.release(i, State::Initialize).await,
            Action::SplitBrain {
                peer,
                peer_priority,
            } => {
                let r = &self.instances[i];
                tracing::warn!(
                    instance = %r.spec.name,
                    interface = %self.interface,
                    vrid = r.spec.vrid,
                    %peer,
                    peer_priority,
                    our_priority = r.fsm.priority(),
                    "split brain: {peer} keeps advertising as MASTER with priority \
                     {peer_priority} while we are MASTER with priority {}; it does not hear \
                     our adverts, most likely because vrrp multicast or ip protocol 112 is \
                     filtered between the nodes",
                    r.fsm.priority()
                );
            }
            Action::VridClash { peer, what } => {
                let r = &self.instances[i];
                tracing::warn!(
                    instance = %r.spec.name,
                    interface = %self.interface,
                    vrid = r.spec.vrid,
                    %peer,
                    clash = what.name(),
                    "vrid clash: {peer} advertises virtual_router_id {} but {what}; its \
                     adverts are ignored (two clusters sharing one id on this segment, or \
                     a configuration that differs between the nodes)",
                    r.spec.vrid
                );
            }
        }
    }

    async fn send_advert(&mut self, i: usize, priority: u8) {
        let r = &self.instances[i];
        let advert = r.fsm.advert(priority);
        for &dst in &r.destinations {
            let bytes = match packet::encode(&advert, r.primary, dst) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(instance = %r.spec.name, %dst, "cannot encode advert: {e}");
                    continue;
                }
            };
            if let Err(e) = self.socket.send(&bytes, dst).await {
                tracing::warn!(
                    instance = %r.spec.name,
                    interface = %self.interface,
                    %dst,
                    "cannot send vrrp advert: {e}"
                );
            }
        }
    }

    async fn add_vips(&mut self, i: usize) {
        let r = &self.instances[i];
        for vip in &r.spec.virtual_addresses {
            if let Err(e) = self
                .netlink
                .add_address(self.ifindex, vip.addr, vip.prefix, vip.label.as_deref())
                .await
            {
                tracing::error!(
                    instance = %r.spec.name,
                    interface = %self.interface,
                    vip = %vip.addr,
                    "cannot add virtual address: {e}"
                );
            }
        }
    }

    async fn remove_vips(&mut self, i: usize) {
        let r = &self.instances[i];
        for vip in &r.spec.virtual_addresses {
            if let Err(e) = self.netlink.remove_address(self.ifindex, vip.addr).await {
                tracing::error!(
                    instance = %r.spec.name,
                    interface = %self.interface,
                    vip = %vip.addr,
                    "cannot remove virtual address: {e}"
                );
            }
        }
    }

    /// Sends the gratuitous ARP / unsolicited NA rounds (and the periodic refresh) on a
    /// task of their own, stopped when the instance leaves MASTER.
    async fn start_announcer(&mut self, i: usize) {
        let mut link_local: Option<Ipv6Addr> = None;
        if self.instances[i].spec.is_ipv6() {
            link_local = match self.netlink.link_local_v6(self.ifindex).await {
                Ok(ll) => ll,
                Err(e) => {
                    tracing::warn!(interface = %self.interface, "no link-local address: {e}");
                    None
                }
            };
        }
        let r = &mut self.instances[i];
        let frames: Vec<Vec<u8>> = r
            .spec
            .virtual_addresses
            .iter()
            .filter_map(|v| match v.addr {
                IpAddr::V4(a) => Some(gratuitous_arp(self.mac, a)),
                IpAddr::V6(a) => link_local.map(|ll| unsolicited_na(self.mac, ll, a)),
            })
            .collect();
        if frames.is_empty() {
            tracing::warn!(
                instance = %r.spec.name,
                interface = %self.interface,
                "no neighbour advertisement sent: the interface has no ipv6 link-local address"
            );
            return;
        }
        if let Some(old) = r.announcer.take() {
            old.abort();
        }
        let socket = Arc::clone(&self.frames);
        let name = r.spec.name.clone();
        let rounds = r.spec.garp_repeat.max(1);
        let delay = r.spec.garp_delay;
        let refresh = r.spec.garp_refresh;
        r.announcer = Some(tokio::spawn(async move {
            let send_all = || {
                for frame in &frames {
                    if let Err(e) = socket.send(frame) {
                        tracing::warn!(instance = %name, "cannot send announcement: {e}");
                    }
                }
            };
            for round in 0..rounds {
                if round > 0 {
                    tokio::time::sleep(delay).await;
                }
                send_all();
            }
            if let Some(every) = refresh.filter(|d| !d.is_zero()) {
                loop {
                    tokio::time::sleep(every).await;
                    send_all();
                }
            }
        }));
    }

    async fn release(&mut self, i: usize, state: State) {
        if let Some(announcer) = self.instances[i].announcer.take() {
            announcer.abort();
        }
        self.remove_vips(i).await;
        self.changed(i, state).await;
    }

    /// Logs the change, runs the notify commands and reports the event.
    async fn changed(&mut self, i: usize, state: State) {
        let r = &self.instances[i];
        let label = match state {
            State::Initialize => "STOP",
            other => other.name(),
        };
        tracing::info!(
            instance = %r.spec.name,
            interface = %self.interface,
            vrid = r.spec.vrid,
            priority = r.fsm.priority(),
            master = ?r.fsm.master(),
            "vrrp instance entering {label} state"
        );
        let notify = &r.spec.notify;
        let specific = match state {
            State::Master => &notify.master,
            State::Backup => &notify.backup,
            State::Fault => &notify.fault,
            State::Initialize => &notify.stop,
        };
        if let Some(argv) = specific {
            r.notifier.run(argv.clone());
        }
        if let Some(argv) = &notify.generic {
            let mut argv = argv.clone();
            argv.extend([
                "INSTANCE".to_string(),
                r.spec.name.clone(),
                label.to_string(),
                r.fsm.priority().to_string(),
            ]);
            r.notifier.run(argv);
        }
        let event = FailoverEvent {
            instance: r.spec.name.clone(),
            state,
            vips: r.spec.vips(),
        };
        // A closed receiver only means nobody listens any more.
        let _ = self.events.send(event).await;
    }

    /// Logs the counters and lets the notify commands finish.
    async fn finish(self) {
        let socket_drops = counters(&self.socket_drops);
        for r in self.instances {
            let stats = r.fsm.stats();
            tracing::info!(
                instance = %r.spec.name,
                adverts_received = stats.adverts_received,
                adverts_sent = stats.adverts_sent,
                became_master = stats.became_master,
                split_brain_adverts = stats.split_brain_adverts,
                drops = %counters(&stats.drops),
                "vrrp instance stopped"
            );
            if let Some(announcer) = r.announcer {
                announcer.abort();
            }
            r.notifier.finish().await;
        }
        tracing::debug!(
            interface = %self.interface,
            other_vrid = self.other_vrid,
            drops = %socket_drops,
            "vrrp socket closed"
        );
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
