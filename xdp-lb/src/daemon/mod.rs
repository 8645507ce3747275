//! The daemon: wiring, in the shape of mini-redis. [`run_reloadable`] brings the node
//! up (config → interfaces → routes → real servers' MACs → maps → attach), then starts
//! one task per source of change (health checks, track scripts, VRRP, the neighbour
//! table, NAT ageing, the status API, reloads) that each send an [`Event`] to one
//! channel. The loop hands every event to [`Core`], which passes it to the forwarding
//! owner ([`crate::forwarding`]) and logs what changed; nothing in the loop waits for
//! long: a reload's slow part (routes, new MACs) runs on a task that reports back.
//! Shutdown stops VRRP first (priority 0, VIPs removed) while still applying its state
//! changes, then everything else, then detaches XDP.

use std::{collections::BTreeMap, future::Future, ops::ControlFlow, time::Duration};

use anyhow::bail;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    advertise::{Advertiser, Announcer, Change},
    api::ApiRequest,
    config::{Config, NatTimeouts},
    dataplane::{Adoption, Dataplane, Pins, nat::monotonic_ns},
    dump::Dump,
    error_chain::Chain,
    failover::{self, FailoverEvent},
    forwarding::{Forwarding, PreparedReload, QuorumEdge},
    health_checks::HealthChecks,
    neighbours::{NEIGHBOUR_REFRESH, Neighbours, fmt_mac, route_backends},
    netlink::{Link, Netlink},
    preflight::{self, Routed},
    privileges,
    services::{BackendIndex, Macs, ServiceTable},
    status::Snapshot,
    tracking::{ScriptIndex, VrrpTracking, script_checks},
};

mod counting;
mod reloading;
mod sources;
mod syncing;

use reloading::Reloads;
use sources::{AbortOnDrop, DumpSignals, Sources, forward, start_scripts};

/// Room for events between the sources and the loop (sources wait when it is full).
const EVENT_QUEUE: usize = 1024;

/// What the shutdown signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM, SIGINT: see [`Exit::Stopped`].
    Stop,
    /// SIGTERM while systemd restarts the service: see [`Exit::HandedOver`].
    Handover,
}

/// Runs until `shutdown` resolves; detaches and cleans up before returning.
pub async fn run(config: Config, shutdown: impl Future<Output = Shutdown>) -> anyhow::Result<Exit> {
    let (_no_reloads, reloads) = mpsc::channel(1);
    run_reloadable(config, reloads, shutdown).await
}

/// Everything that changes what the daemon does, in the order it happened.
enum Event {
    /// A real server's health verdict, from the checks started as `generation`.
    Health {
        generation: u64,
        transition: xdp_lb_checks::Transition,
    },
    /// A track script's verdict.
    Script(xdp_lb_checks::Transition),
    /// A BFD session went up or left up (for `track_bfd`).
    Bfd(crate::bfd::SessionUp),
    /// A VRRP instance changed state.
    Vrrp(FailoverEvent),
    /// The VRRP runtime ended (on its own, or after being stopped).
    VrrpEnded(anyhow::Result<()>),
    /// The neighbour table, read again.
    Neighbours(anyhow::Result<Macs>),
    /// Time to collect idle flows (NAT, lc, wlc) and count connections exactly.
    FlowGc,
    /// Time to update lc and wlc schedules from the connection counters.
    CountLoads,
    /// A reloaded configuration (SIGHUP).
    Reload(Config),
    /// A reload's table is ready (or could not be prepared).
    Prepared {
        generation: u64,
        result: anyhow::Result<PreparedReload>,
    },
    /// The status API wants a snapshot or the connections.
    Api(ApiRequest),
    /// SIGUSR1 or SIGUSR2: write a dump, as keepalived does.
    Dump(Dump),
    /// Time to tell systemd's watchdog the loop is alive.
    Watchdog,
    /// SIGQUIT: hand over to the next start (see [`Exit::HandedOver`]).
    Handover,
    /// Time to keep the counters, for the rates in status snapshots.
    RateSample,
    /// Time to see whether a drain is complete (traffic stopped).
    DrainCheck,
    /// Time for a new flow-cache generation (see [`FLOW_CACHE_RENEWAL`]).
    RenewFlowCache,
    /// Time for the NAT sync's round (see [`crate::sync`]).
    SyncTick,
    /// NAT connections a sync peer sent (authenticated already).
    SyncReceived(crate::sync::node::Received),
}

/// How often counters are kept for rates; rates cover the last one to two of these.
const RATE_SAMPLE: Duration = Duration::from_secs(5);

/// How often the XDP program's flow cache starts a new generation: each cached flow
/// then looks itself up in the flow table again, keeping its LRU place there (see the
/// program's `flow_cache`).
const FLOW_CACHE_RENEWAL: Duration = Duration::from_secs(1);

/// [`run`], applying each configuration that arrives on `reloads` (see
/// [`crate::reload`]); one that cannot be applied is logged and changes nothing.
pub async fn run_reloadable(
    config: Config,
    reloads: mpsc::Receiver<Config>,
    shutdown: impl Future<Output = Shutdown>,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    // First of all: from here on SIGUSR1/SIGUSR2 ask for dumps instead of killing us.
    let dump_signals = DumpSignals::install()?;
    privileges::check(&config)?;
    privileges::raise_fd_limit();
    warn_of_likely_mistakes(&config);
    // Bound first, so a taken port stops the start before anything is changed.
    let api_listener = match config.global.api {
        Some(addr) => Some(crate::api::bind(addr).await?),
        None => None,
    };
    let netlink = Netlink::connect()?;
    let Routed { links, table } = preflight::route(&config, &netlink).await?;
    let pins = config.dataplane.pin_dir.as_deref().and_then(Pins::under);
    let mut dataplane = match pins {
        Some(pins) => Dataplane::load_pinned(config.dataplane.flow_capacity(), pins)?,
        None => Dataplane::load(config.dataplane.flow_capacity())?,
    };
    dataplane.set_new_flow_rate(config.dataplane.new_flow_rate)?;
    // Preallocated whatever the traffic: say what `max_flows` costs.
    if let Some(bytes) = dataplane.state_memory() {
        info!(
            max_flows = config.dataplane.max_flows,
            max_flows_v6 = config.dataplane.max_flows_v6,
            "connection tables loaded: {} MiB locked",
            bytes >> 20
        );
    }
    // Clones share the record of the entries created, removed again at the end.
    let neighbours = Neighbours::new(&netlink);
    let (tx, events) = mpsc::channel(EVENT_QUEUE);
    let result = async {
        let start = Start {
            config,
            table,
            dataplane,
            netlink,
            links,
            started,
        };
        let mut core = bring_up(start, &neighbours, &tx).await?;
        let mut sources = Sources::default();
        sources.spawn(&core, &tx, api_listener, reloads, dump_signals);
        core.start_sync(&sources.stop, &mut sources.tasks)?;
        // Ready once forwarding: VRRP and the track scripts start after this line (a
        // reader waiting for ready then sees every VRRP state change that follows).
        info!(
            services = core.forwarding.table().services.len(),
            real_servers = core.forwarding.table().backends.len(),
            "xdp-lb ready"
        );
        crate::systemd::ready(&core.summary());
        core.restart_checks();
        sources.scripts = start_scripts(&core.config, &sources.stop, &tx, &mut sources.tasks);
        if core.start_vrrp(&sources.vrrp_stop, &mut sources.tasks) {
            sources.vrrp = true;
        }
        core.advertise();
        drop(tx);
        let mut events = events;
        let stop = event_loop(&mut core, &mut events, shutdown).await;
        shut_down(core, events, sources, stop).await
    }
    .await;
    if let Ok(Exit::HandedOver) = result {
        // The next start takes over the XDP attachment, the maps and the neighbour
        // entries as they are.
        info!("handed over: XDP stays attached and VIPs stay leased for the next start");
    } else {
        // The data plane (and with it the XDP attachment) went with the core.
        info!("shutting down: detaching XDP and removing managed neighbour entries");
        neighbours.cleanup().await;
    }
    result
}

/// What is most likely a mistake but stops nothing, as `xdp-lb check` reports it:
/// source-filter rules that can never decide anything (installed and counted all the
/// same), and host settings that spoil part of the configuration.
fn warn_of_likely_mistakes(config: &Config) {
    for shadow in crate::config::shadowed_rules(config) {
        warn!("source filter: {shadow}");
    }
    for warning in preflight::host_warnings(config) {
        warn!("{warning}");
    }
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped (SIGTERM, SIGINT): as keepalived, a MASTER sends priority 0 and drops
    /// its VIPs, and XDP is detached.
    Stopped,
    /// Handed over to the next start (SIGQUIT, or SIGTERM during `systemctl restart`):
    /// XDP stays attached with the connection state pinned, a MASTER stays silent with
    /// its VIPs leased, and the next start, within the lease, takes all of it over
    /// without the peers or the connections noticing. The process exits with
    /// [`Exit::HANDOVER_CODE`]; the packaged systemd unit starts the next one at once
    /// (after SIGQUIT by `RestartForceExitStatus`, in a restart as its start half).
    HandedOver,
}

impl Exit {
    /// EX_TEMPFAIL.
    pub const HANDOVER_CODE: u8 = 75;
}

/// Why the event loop ended before a shutdown signal.
enum Stop {
    /// The VRRP runtime ended on its own.
    VrrpFailed(anyhow::Error),
    Handover,
}

/// What the start has found before the maps are written.
struct Start {
    config: Config,
    /// Routed, MACs not yet learned.
    table: ServiceTable,
    /// Loaded, not attached.
    dataplane: Dataplane,
    netlink: Netlink,
    links: BTreeMap<u32, Link>,
    started: std::time::Instant,
}

/// From the routed table to a Core that forwards: new real servers' MACs, every map
/// written, XDP attached.
async fn bring_up(
    start: Start,
    neighbours: &Neighbours,
    events: &mpsc::Sender<Event>,
) -> anyhow::Result<Core> {
    let Start {
        config,
        mut table,
        mut dataplane,
        netlink,
        links,
        started,
    } = start;
    neighbours
        .resolve(&mut table, config.dataplane.neighbour_timeout)
        .await?;
    for link in links.values() {
        dataplane.add_egress(link.index)?;
    }
    let (mut forwarding, edges) =
        Forwarding::start(table, dataplane, config.dataplane.nat_timeouts)?;
    adopt_connections(&mut forwarding);
    // A restart: instances about to resume as MASTER forward from the first packet
    // the new program sees, as the old one did.
    let resuming = failover::resuming_vips(&config.vrrp, &netlink).await;
    if !resuming.is_empty() {
        forwarding.apply_vrrp(&resuming, true)?;
    }
    for edge in edges {
        report_quorum(forwarding.table(), edge);
    }
    let mut core = Core::new(
        config,
        forwarding,
        netlink,
        links,
        neighbours.clone(),
        events.clone(),
        started,
    );
    core.attach()?;
    Ok(core)
}

/// Keeps the connection state an earlier run pinned if its ids mean what they mean
/// now (the same virtual and real servers), and forgets it otherwise; then records
/// the ids the entries are written under from now on.
fn adopt_connections(forwarding: &mut Forwarding<Dataplane>) {
    let ids = forwarding.table().id_map();
    let writer = forwarding.writer_mut();
    let Some(pins) = writer.pins().cloned() else {
        return;
    };
    if !writer.adopted().is_empty() {
        match pins.adoption(&ids) {
            Adoption::Adopt => {
                let flows = writer.flows().count();
                info!(flows, "connection state taken over from the previous run");
            }
            Adoption::ServersChanged => {
                let forgotten = writer.clear_connection_state();
                warn!(
                    flows = forgotten,
                    "the virtual or real servers changed since the previous run: its \
                     connections are scheduled anew (a SIGHUP reload keeps them)"
                );
            }
            Adoption::OtherVersion(found) => {
                let forgotten = writer.clear_connection_state();
                warn!(
                    flows = forgotten,
                    found = found.map_or("none (an older build)".to_owned(), |v| v.to_string()),
                    expected = xdp_lb_common::STATE_VERSION,
                    "the pinned connection state was written by a build whose entries mean \
                     something else (state version): it is cleared and connections are \
                     scheduled anew"
                );
            }
        }
    }
    pins.record_ids(&ids);
}

/// Every event to the core, until `shutdown` resolves, VRRP fails or a handover is
/// asked for.
async fn event_loop(
    core: &mut Core,
    events: &mut mpsc::Receiver<Event>,
    shutdown: impl Future<Output = Shutdown>,
) -> Option<Stop> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            asked = &mut shutdown => return match asked {
                Shutdown::Stop => None,
                Shutdown::Handover => Some(Stop::Handover),
            },
            Some(event) = events.recv() => {
                if let ControlFlow::Break(stop) = core.handle(event).await {
                    return Some(stop);
                }
            }
        }
    }
}

/// VRRP first: a MASTER sends priority 0 and drops its VIPs, so the peer takes over at
/// once, while this node still forwards what arrives meanwhile; then the sources, the
/// scripts and checks (omega's down commands run), and the counters are logged. A
/// handover instead stops VRRP silently, runs no omega command and leaves the pins.
async fn shut_down(
    mut core: Core,
    mut events: mpsc::Receiver<Event>,
    mut sources: Sources,
    stop: Option<Stop>,
) -> anyhow::Result<Exit> {
    crate::systemd::stopping();
    let handover = matches!(stop, Some(Stop::Handover));
    if handover {
        info!("handing over to the next start");
        core.vrrp_handover
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // Announced VIPs are withdrawn first, so the routers move the flows to the other
    // nodes while this one still forwards what arrives; a handover keeps them (leased)
    // for the next start.
    if let Some(announcer) = core.announcer.take() {
        if handover {
            announcer.leave();
        } else {
            let table = core.forwarding.table();
            let forwarding = &core.forwarding;
            core.advertiser.stop(
                table,
                |i| forwarding.is_active(i),
                std::time::Instant::now(),
            );
            announcer.finish().await;
        }
    }
    let vrrp_failed = matches!(stop, Some(Stop::VrrpFailed(_)));
    if sources.vrrp && !vrrp_failed {
        sources.vrrp_stop.cancel();
        while let Some(event) = events.recv().await {
            match event {
                Event::Vrrp(e) => core.on_vrrp(&e),
                Event::VrrpEnded(result) => {
                    if let Err(e) = result {
                        warn!(error = %Chain(&*e), "VRRP stopped with an error");
                    }
                    break;
                }
                Event::Api(request) => core.answer(request),
                _ => {}
            }
        }
    }
    sources.stop.cancel();
    // Sources blocked on a full queue give up; none is read any more.
    drop(events);
    if let Some(scripts) = sources.scripts.take() {
        scripts.stop().await;
    }
    // keepalived's omega: the down command also runs when the service stops (not on
    // a handover: the service goes on).
    if !handover {
        for svc in &core.forwarding.table().services {
            if let (true, Some(argv)) = (svc.quorum.omega, &svc.quorum.down) {
                let what = format!("quorum_down (omega) of {}", svc.name);
                crate::notify::run(argv, &what, crate::notify::TIMEOUT).await;
            }
        }
    }
    std::mem::replace(&mut core.checks, HealthChecks::idle())
        .stop()
        .await;
    while sources.tasks.join_next().await.is_some() {}
    core.snapshot().log_counters();
    match stop {
        Some(Stop::VrrpFailed(e)) => {
            core.forwarding.writer().release_pins();
            Err(e.context("VRRP stopped, so xdp-lb stops too (restart it)"))
        }
        Some(Stop::Handover) => Ok(Exit::HandedOver),
        None => {
            core.forwarding.writer().release_pins();
            Ok(Exit::Stopped)
        }
    }
}

/// The daemon's state between events: the forwarding owner and what feeds it.
struct Core {
    /// The configuration running now (a reload replaces it once applied).
    config: Config,
    forwarding: Forwarding<Dataplane>,
    netlink: Netlink,
    /// The XDP interfaces, by ifindex (fixed: `[dataplane]` needs a restart).
    links: BTreeMap<u32, Link>,
    neighbours: Neighbours,
    checks: HealthChecks,
    /// Which checks' verdicts count: a reload restarts the checks, and verdicts the
    /// old ones sent are dropped.
    check_generation: u64,
    tracking: VrrpTracking,
    vrrp_status: failover::StatusBoard,
    /// `[bfd.NAME]` sessions as bfdd last reported them.
    bfd_status: crate::bfd::BfdBoard,
    reload: Reloads,
    events: mpsc::Sender<Event>,
    started: std::time::Instant,
    /// Counters kept every [`RATE_SAMPLE`], for the rates in snapshots.
    rate_samples: std::collections::VecDeque<(std::time::Instant, Snapshot)>,
    /// A failing flow-cache renewal would warn every second: one line per period.
    renewal_warnings: crate::log_limit::LogLimit,
    /// Tells the VRRP runtime that its shutdown is a handover.
    vrrp_handover: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Real servers' connections, for lc and wlc.
    loads: crate::load::LoadTracker,
    /// Which VIPs are announced to the routing daemon, and the drain.
    advertiser: Advertiser,
    /// Holds the announced VIPs' addresses; started with the first announced service.
    announcer: Option<Announcer>,
    /// `[sync]`: NAT connections to or from the peers.
    sync: Option<syncing::SyncRuntime>,
}

impl Core {
    fn new(
        config: Config,
        forwarding: Forwarding<Dataplane>,
        netlink: Netlink,
        links: BTreeMap<u32, Link>,
        neighbours: Neighbours,
        events: mpsc::Sender<Event>,
        started: std::time::Instant,
    ) -> Core {
        // No VRRP runtime yet (start_vrrp connects one): tracking goes nowhere.
        let tracking = VrrpTracking::new(&config, forwarding.table(), failover::controls().0);
        Core {
            config,
            forwarding,
            netlink,
            links,
            neighbours,
            checks: HealthChecks::idle(),
            check_generation: 0,
            tracking,
            vrrp_status: failover::StatusBoard::default(),
            bfd_status: crate::bfd::BfdBoard::default(),
            reload: Reloads::default(),
            events,
            started,
            rate_samples: std::collections::VecDeque::new(),
            renewal_warnings: Default::default(),
            vrrp_handover: Default::default(),
            loads: crate::load::LoadTracker::default(),
            advertiser: Advertiser::default(),
            announcer: None,
            sync: None,
        }
    }

    /// Decides the announcements again (see [`crate::advertise`]) and hands the
    /// announced set to the announcer, which logs each change once the kernel has it.
    fn advertise(&mut self) {
        let forwarding = &self.forwarding;
        let changes = self.advertiser.apply(
            forwarding.table(),
            |i| forwarding.is_active(i),
            std::time::Instant::now(),
        );
        self.announce(&changes);
    }

    fn announce(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Announce(vip) => info!(%vip, "announcing VIP"),
                Change::Withdraw(vip, why) => warn!(%vip, "withdrawing VIP: {why}"),
            }
        }
        let announced = self.advertiser.announced();
        if self.announcer.is_none() && announced.is_empty() {
            return;
        }
        let announcer = self.announcer.get_or_insert_with(|| {
            Announcer::spawn(self.netlink.clone(), self.config.announce.interface.clone())
        });
        announcer.set(announced);
    }

    /// `POST /drain`: every VIP withdrawn, forwarding goes on; the drain is complete
    /// once the announced services see no packet for `[announce] drain_idle`.
    fn drain(&mut self) -> crate::advertise::DrainStatus {
        let forwarding = &self.forwarding;
        let now = std::time::Instant::now();
        if !self.advertiser.draining() {
            info!("drain: withdrawing every announced VIP, forwarding what still arrives");
        }
        let changes = self
            .advertiser
            .drain(forwarding.table(), |i| forwarding.is_active(i), now);
        self.announce(&changes);
        self.advertiser.traffic(
            self.announced_packets(),
            now,
            self.config.announce.drain_idle,
        );
        self.advertiser.status(now).1
    }

    /// `POST /resume`: the end of a drain.
    fn resume(&mut self) -> crate::advertise::DrainStatus {
        let forwarding = &self.forwarding;
        let now = std::time::Instant::now();
        if self.advertiser.draining() {
            info!("drain ended: VIPs are announced again while their services have quorum");
        }
        let changes = self
            .advertiser
            .resume(forwarding.table(), |i| forwarding.is_active(i), now);
        self.announce(&changes);
        self.advertiser.status(now).1
    }

    /// While draining: the announced services' packets, to see when traffic stops.
    fn check_drain(&mut self) {
        if !self.advertiser.draining() {
            return;
        }
        let now = std::time::Instant::now();
        let packets = self.announced_packets();
        if let Some(done) = self
            .advertiser
            .traffic(packets, now, self.config.announce.drain_idle)
        {
            info!(
                last_packet_after_ms = done.last_traffic_after.as_millis() as u64,
                took_ms = done.took.as_millis() as u64,
                "drained: the announced services saw no packet for {}",
                crate::config::fmt_duration(self.config.announce.drain_idle)
            );
        }
    }

    /// Packets of the services with `announce = true`, summed.
    fn announced_packets(&self) -> u64 {
        let table = self.forwarding.table();
        (0..table.services.len())
            .filter(|&i| table.services[i].announce)
            .filter_map(|i| self.forwarding.service_traffic(i).ok())
            .map(|t| t.packets)
            .sum()
    }

    /// Attaches XDP to every interface (driver mode unless told otherwise).
    fn attach(&mut self) -> anyhow::Result<()> {
        for link in self.links.values() {
            let mode = self
                .forwarding
                .writer_mut()
                .attach(&link.name, self.config.dataplane.xdp_mode)?;
            match mode {
                Some(mode) => info!(interface = %link.name, mode = mode.as_str(), "XDP attached"),
                None => info!(
                    interface = %link.name,
                    "XDP taken over from the previous run in one step (no packet missed)"
                ),
            }
        }
        Ok(())
    }

    /// Starts the VRRP runtime, if any instance is configured: its state changes and
    /// its end arrive as events, in order. Returns whether it runs.
    fn start_vrrp(&mut self, stop: &CancellationToken, tasks: &mut JoinSet<()>) -> bool {
        if self.config.vrrp.is_empty() {
            return false;
        }
        let (handle, controls) = failover::controls();
        self.vrrp_handover = handle.handover.clone();
        if !self.config.bfd.is_empty() {
            let (up, up_rx) = mpsc::channel(16);
            let reports = crate::bfd::Reports {
                peer_down: handle.peer_down.clone(),
                up,
            };
            tasks.spawn(crate::bfd::run(
                self.config.bfd.clone(),
                self.config.global.bfdd_socket.clone(),
                reports,
                self.bfd_status.clone(),
                stop.clone(),
            ));
            tasks.spawn(forward(up_rx, self.events.clone(), Event::Bfd));
        }
        self.tracking = VrrpTracking::new(&self.config, self.forwarding.table(), handle);
        // The quorum at start (alpha servers start down).
        self.tracking.update(self.forwarding.table());
        let (failover_tx, mut failover_rx) = mpsc::channel(64);
        let runtime = failover::run_tracked(
            self.config.vrrp.clone(),
            self.config.sync_groups.clone(),
            self.netlink.clone(),
            failover_tx,
            controls,
            self.vrrp_status.clone(),
            stop.clone().cancelled_owned(),
        );
        let events = self.events.clone();
        tasks.spawn(async move {
            tokio::pin!(runtime);
            // The runtime waits for room to send a change, so relaying them until it
            // ends, then the rest, keeps every change before the end.
            let result = loop {
                tokio::select! {
                    biased;
                    Some(e) = failover_rx.recv() => {
                        let _ = events.send(Event::Vrrp(e)).await;
                    }
                    result = &mut runtime => break result,
                }
            };
            while let Ok(e) = failover_rx.try_recv() {
                let _ = events.send(Event::Vrrp(e)).await;
            }
            let _ = events.send(Event::VrrpEnded(result)).await;
        });
        true
    }

    /// One event. `Break` when the daemon must stop: the VRRP runtime ended on its own
    /// (a socket failed): it has already stopped its instances, so the daemon stops
    /// too and a supervisor restarts it, rather than forwarding on as a node no peer
    /// hears.
    async fn handle(&mut self, event: Event) -> ControlFlow<Stop> {
        match event {
            Event::Health {
                generation,
                transition,
            } if generation == self.check_generation => self.on_health(&transition),
            Event::Health { .. } => {}
            Event::Script(t) => {
                // The scripts' checks run under their ScriptIndex.
                let index = ScriptIndex(t.backend.0 as usize);
                let why = t.reason.as_ref().map(ToString::to_string);
                self.tracking
                    .script_changed(index, t.up, why.as_deref(), self.forwarding.table());
            }
            Event::Bfd(change) => {
                self.tracking
                    .bfd_changed(change.index, change.up, self.forwarding.table());
            }
            Event::Vrrp(e) => self.on_vrrp(&e),
            Event::VrrpEnded(result) => {
                return ControlFlow::Break(Stop::VrrpFailed(match result {
                    Ok(()) => anyhow::anyhow!("the VRRP runtime ended on its own"),
                    Err(e) => e,
                }));
            }
            Event::Handover => return ControlFlow::Break(Stop::Handover),
            Event::Neighbours(Ok(macs)) => self.on_neighbours(&macs),
            Event::Neighbours(Err(e)) => {
                warn!(error = %Chain(&*e), "neighbour refresh failed; keeping the last known MACs");
            }
            Event::FlowGc => self.collect_idle_flows(),
            Event::CountLoads => self.count_loads(),
            Event::Reload(config) => self.on_reload(config).await,
            Event::Prepared { generation, result } if generation == self.reload.generation => {
                self.on_prepared(result).await;
            }
            Event::Prepared { .. } => {}
            Event::Api(request) => self.answer(request),
            Event::Watchdog => crate::systemd::watchdog(),
            Event::DrainCheck => self.check_drain(),
            Event::RenewFlowCache => {
                if let Err(e) = self.forwarding.writer_mut().renew_flow_cache()
                    && let Some(suppressed) = self.renewal_warnings.allow(std::time::Instant::now())
                {
                    warn!(error = %Chain(&e), suppressed, "could not renew the flow cache; cached flows keep their pins, and may lose their flow-table entries to the LRU");
                }
            }
            Event::SyncTick => self.sync_tick(),
            Event::SyncReceived(received) => self.on_sync_received(received),
            Event::RateSample => {
                let now = std::time::Instant::now();
                let sample = self.raw_snapshot();
                self.rate_samples.push_back((now, sample));
                if self.rate_samples.len() > 2 {
                    self.rate_samples.pop_front();
                }
            }
            Event::Dump(dump) => {
                let dir = &self.config.global.dump_dir;
                let capacity = self.config.dataplane.flow_capacity();
                match dump.write(dir, self.snapshot(), &self.forwarding, capacity) {
                    Ok(path) => info!(path = %path.display(), "{dump:?} dump written"),
                    Err(e) => {
                        warn!(dir = %dir.display(), error = %e, "cannot write the {dump:?} dump")
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// A health verdict: the maps follow first, then the line is logged with the
    /// service and real server it is about, so once it is read new connections already
    /// follow it.
    fn on_health(&mut self, t: &xdp_lb_checks::Transition) {
        // The checks were started with each real server's index in the table.
        let index = BackendIndex(t.backend.0);
        let applied = self.forwarding.apply_health(index, t.up, t.weight);
        let table = self.forwarding.table();
        let b = &table.backends[index];
        let service = &table.services[b.service].name;
        let server = std::net::SocketAddr::new(b.addr, b.port);
        let what = match (&t.reason, t.weight) {
            (Some(reason), _) => format!("down: {reason}"),
            (None, Some(w)) => format!("up with weight {w}"),
            (None, None) => "up".to_string(),
        };
        if t.up {
            info!(%service, real_server = %server, check = %t.check, "real server {what}");
        } else {
            warn!(%service, real_server = %server, check = %t.check, "real server {what}");
        }
        match applied {
            Ok(applied) => {
                if applied.exhausted {
                    warn!(%service, "no real server can take new connections");
                }
                if let Some(edge) = applied.quorum {
                    report_quorum(table, edge);
                    self.tracking.update(table);
                    self.advertise();
                }
            }
            Err(e) => {
                warn!(error = %Chain(&e), "could not apply a health change to the data plane");
            }
        }
    }

    /// A VRRP state change: services on its VIPs are forwarded only while MASTER.
    fn on_vrrp(&mut self, event: &FailoverEvent) {
        let master = event.state == xdp_lb_vrrp::State::Master;
        info!(instance = %event.instance, state = ?event.state, "vrrp instance state");
        self.sync_follows_vrrp(event);
        match self.forwarding.apply_vrrp(&event.vips, master) {
            Ok(changed) => {
                for &index in &changed {
                    info!(
                        service = %self.forwarding.table().services[index].name,
                        forwarding = master,
                        "data plane follows vrrp"
                    );
                }
                if !changed.is_empty() {
                    self.advertise();
                }
            }
            Err(e) => {
                warn!(error = %Chain(&e), "could not apply a VRRP state change to the data plane");
            }
        }
        // The new MASTER announces its VIPs now (after a failure too: waiting longer
        // would not mend it).
        event.applied.done();
    }

    /// MACs learned, changed or lost: logged once the maps follow.
    fn on_neighbours(&mut self, macs: &Macs) {
        match self.forwarding.apply_neighbours(macs) {
            Ok(changed) => {
                for index in changed {
                    let b = &self.forwarding.table().backends[index];
                    match b.mac {
                        Some(mac) => {
                            info!(real_server = %b.addr, mac = %fmt_mac(mac), "real server MAC learned")
                        }
                        None => {
                            warn!(real_server = %b.addr, "real server MAC lost; no new flows to it")
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %Chain(&e), "could not apply MAC changes to the data plane");
            }
        }
    }

    /// One line for `systemctl status`.
    fn summary(&self) -> String {
        let table = self.forwarding.table();
        format!(
            "forwarding {} virtual servers, {} real servers",
            table.services.len(),
            table.backends.len()
        )
    }

    /// Starts the checks of the forwarding table (each from its server's verdict
    /// there); the previous ones stop on their own task and their verdicts are dropped.
    fn restart_checks(&mut self) {
        self.check_generation += 1;
        let generation = self.check_generation;
        let (checks, transitions) = HealthChecks::start(self.forwarding.table());
        let old = std::mem::replace(&mut self.checks, checks);
        tokio::spawn(old.stop());
        tokio::spawn(forward(
            transitions,
            self.events.clone(),
            move |transition| Event::Health {
                generation,
                transition,
            },
        ));
    }

    fn answer(&mut self, request: ApiRequest) {
        match request {
            ApiRequest::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            ApiRequest::Connections { service, reply } => {
                let capacity = self.config.dataplane.flow_capacity();
                let _ = reply.send(crate::connections::list(
                    &self.forwarding,
                    service.as_deref(),
                    capacity,
                ));
            }
            ApiRequest::Explain { query, reply } => {
                let _ = reply.send(self.explain(&query));
            }
            ApiRequest::Drain(reply) => {
                let _ = reply.send(self.drain());
            }
            ApiRequest::Resume(reply) => {
                let _ = reply.send(self.resume());
            }
        }
    }

    /// `GET /explain`: the live maps, read now, with the VRRP state of each instance.
    fn explain(
        &self,
        query: &crate::explain::Query,
    ) -> Result<crate::explain::Explanation, String> {
        let states = self.vrrp_status.snapshot();
        let vrrp: Vec<(String, String, Vec<std::net::IpAddr>)> = self
            .config
            .vrrp
            .iter()
            .map(|vi| {
                let state = states
                    .iter()
                    .find(|s| s.name == vi.name)
                    .map_or("INIT".to_owned(), |s| s.state.to_string());
                (vi.name.clone(), state, vi.identity.vips())
            })
            .collect();
        let cx = crate::explain::Context {
            table: self.forwarding.table(),
            timeouts: self.forwarding.aging(),
            vrrp: &vrrp,
            now_ns: monotonic_ns(),
        };
        crate::explain::explain(self.forwarding.writer(), &cx, query)
            .map_err(|e| Chain(&e).to_string())
    }

    /// The snapshot, with rates over the last [`RATE_SAMPLE`] or so.
    fn snapshot(&self) -> Snapshot {
        let now = std::time::Instant::now();
        let snapshot = self.raw_snapshot();
        let earlier = self
            .rate_samples
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1));
        match earlier {
            Some((at, earlier)) => snapshot.with_rates(earlier, now.duration_since(*at)),
            None => snapshot,
        }
    }

    fn raw_snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::take(
            self.config.global.router_id.clone(),
            self.started.elapsed(),
            &self.forwarding,
            self.vrrp_status.snapshot(),
            self.vrrp_status.sockets(),
        );
        let (announcements, drain) = self.advertiser.status(std::time::Instant::now());
        snapshot.announcements = announcements;
        snapshot.drain = drain;
        snapshot.sync = self.sync_status();
        snapshot.bfd = self.bfd_status.snapshot();
        snapshot
    }
}

/// Logs a quorum edge and runs the service's up/down command for it.
fn report_quorum(table: &ServiceTable, edge: QuorumEdge) {
    let svc = &table.services[edge.service];
    let weight = table.usable_weight(edge.service);
    let (command, name) = if edge.gained {
        info!(service = %svc.name, weight, quorum = svc.quorum.quorum, "quorum gained");
        (svc.quorum.up.clone(), "quorum_up")
    } else {
        warn!(service = %svc.name, weight, quorum = svc.quorum.quorum, "quorum lost: new connections go to the sorry server, if any");
        (svc.quorum.down.clone(), "quorum_down")
    };
    if let Some(argv) = command {
        crate::notify::spawn(argv, format!("{name} of {}", svc.name));
    }
}

/// Half the shortest NAT timeout, between 1 s and 10 s: entries leave at most 50 %
/// after their timeout, and a big table is not walked more than once a second.
fn nat_gc_interval(t: &NatTimeouts) -> Duration {
    (t.tcp.min(t.tcp_fin).min(t.udp) / 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}
