//! The sources of events besides the loop itself: relays, timers, signals, and the
//! small task helpers they share.

use super::{counting::COUNT_LOADS, *};

/// The tasks that feed the loop, and how they are stopped.
#[derive(Default)]
pub(super) struct Sources {
    pub(super) tasks: JoinSet<()>,
    /// Stops every source but VRRP.
    pub(super) stop: CancellationToken,
    /// Stops VRRP, which goes first on shutdown.
    pub(super) vrrp_stop: CancellationToken,
    /// VRRP runs (some instance is configured).
    pub(super) vrrp: bool,
    pub(super) scripts: Option<HealthChecks>,
}

impl Sources {
    /// The API, reloads, the neighbour poller and the timers (NAT ageing, rates, the
    /// flow cache's generations, the watchdog), and the dump signals.
    pub(super) fn spawn(
        &mut self,
        core: &Core,
        tx: &mpsc::Sender<Event>,
        api: Option<tokio::net::TcpListener>,
        reloads: mpsc::Receiver<Config>,
        dump_signals: DumpSignals,
    ) {
        let (stop, tasks) = (&self.stop, &mut self.tasks);
        if let Some(listener) = api {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "status API listening: /status, /metrics");
            }
            let (api_tx, api_rx) = mpsc::channel(16);
            let token = core.config.global.api_token.clone();
            tasks.spawn(cancel_with(
                stop,
                crate::api::serve(listener, api_tx, token),
            ));
            tasks.spawn(forward(api_rx, tx.clone(), Event::Api));
        }
        tasks.spawn(cancel_with(
            stop,
            forward(reloads, tx.clone(), Event::Reload),
        ));
        tasks.spawn(cancel_with(
            stop,
            poll_neighbours(core.neighbours.clone(), tx.clone()),
        ));
        let nat_gc = nat_gc_interval(&core.config.dataplane.nat_timeouts);
        tasks.spawn(cancel_with(
            stop,
            tick(nat_gc, tx.clone(), || Event::FlowGc),
        ));
        tasks.spawn(cancel_with(
            stop,
            tick(COUNT_LOADS, tx.clone(), || Event::CountLoads),
        ));
        tasks.spawn(cancel_with(stop, dump_signals.relay(tx.clone())));
        tasks.spawn(cancel_with(
            stop,
            tick(RATE_SAMPLE, tx.clone(), || Event::RateSample),
        ));
        tasks.spawn(cancel_with(
            stop,
            tick(DRAIN_CHECK, tx.clone(), || Event::DrainCheck),
        ));
        tasks.spawn(cancel_with(
            stop,
            tick(FLOW_CACHE_RENEWAL, tx.clone(), || Event::RenewFlowCache),
        ));
        if let Some(every) = crate::systemd::watchdog_interval() {
            tasks.spawn(cancel_with(
                stop,
                tick(every, tx.clone(), || Event::Watchdog),
            ));
        }
    }
}

/// How often a drain's traffic is counted (only while draining): the precision of
/// the drain's figures.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// Track scripts run as MISC checks on a scheduler of their own for the daemon's life.
pub(super) fn start_scripts(
    config: &Config,
    stop: &CancellationToken,
    events: &mpsc::Sender<Event>,
    tasks: &mut JoinSet<()>,
) -> Option<HealthChecks> {
    if config.scripts.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::channel(64);
    let checks = HealthChecks::spawn(script_checks(config), tx);
    tasks.spawn(cancel_with(
        stop,
        forward(rx, events.clone(), Event::Script),
    ));
    Some(checks)
}

/// Relays every item of `rx` as an event until either side closes.
pub(super) async fn forward<T>(
    mut rx: mpsc::Receiver<T>,
    events: mpsc::Sender<Event>,
    wrap: impl Fn(T) -> Event,
) {
    while let Some(item) = rx.recv().await {
        if events.send(wrap(item)).await.is_err() {
            return;
        }
    }
}

/// SIGUSR1 and SIGUSR2, caught from the start (their default action kills).
pub(super) struct DumpSignals {
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    /// SIGQUIT: a handover, not a dump, but caught from the start as well.
    quit: tokio::signal::unix::Signal,
}

impl DumpSignals {
    pub(super) fn install() -> anyhow::Result<DumpSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(DumpSignals {
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    pub(super) async fn relay(mut self, events: mpsc::Sender<Event>) {
        loop {
            let event = tokio::select! {
                Some(()) = self.usr1.recv() => Event::Dump(Dump::Data),
                Some(()) = self.usr2.recv() => Event::Dump(Dump::Stats),
                Some(()) = self.quit.recv() => Event::Handover,
                else => return,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Reads the neighbour table every [`NEIGHBOUR_REFRESH`].
pub(super) async fn poll_neighbours(neighbours: Neighbours, events: mpsc::Sender<Event>) {
    let mut every = tokio::time::interval(NEIGHBOUR_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if events
            .send(Event::Neighbours(neighbours.macs().await))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends `event()` every `period`.
pub(super) async fn tick(period: Duration, events: mpsc::Sender<Event>, event: impl Fn() -> Event) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if events.send(event()).await.is_err() {
            return;
        }
    }
}

/// Runs `task` until `stop` is cancelled.
pub(super) fn cancel_with(
    stop: &CancellationToken,
    task: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let stop = stop.clone();
    async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = task => {}
        }
    }
}

/// Aborts a task when dropped, however its owner goes away.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
