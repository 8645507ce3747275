//! The daemon's main job: config → interfaces → real servers' MACs → maps → attach,
//! then keep the maps true to the neighbour table, the health checks, the VRRP state
//! and reloaded configurations until shutdown.
use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    time::Duration,
};

use anyhow::bail;
use tracing::{info, warn};

use crate::{
    config::{Config, Forwarding, NatTimeouts},
    dataplane::{Dataplane, nat::monotonic_ns},
    failover,
    health_checks::{CHECK_CONCURRENCY, CHECKS_STOP, HealthChecks},
    neighbours::{NEIGHBOUR_REFRESH, Neighbours, route_backends},
    netlink::{Link, Netlink},
    privileges,
    services::ServiceTable,
    status::Snapshot,
    tracking::{VrrpTracking, script_checks},
};

/// Runs until `shutdown` resolves; detaches and cleans up before returning.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (_no_reloads, reloads) = tokio::sync::mpsc::channel(1);
    run_reloadable(config, reloads, shutdown).await
}

/// [`run`], applying each configuration that arrives on `reloads` (see
/// [`crate::reload`]); one that cannot be applied is logged and changes nothing.
pub async fn run_reloadable(
    mut config: Config,
    mut reloads: tokio::sync::mpsc::Receiver<Config>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    privileges::check()?;
    // Bound first, so a taken port stops the start before anything is changed.
    let api_listener = match config.global.api {
        Some(addr) => Some(crate::api::bind(addr).await?),
        None => None,
    };
    let netlink = Netlink::connect()?;
    let mut links = BTreeMap::new();
    for name in &config.dataplane.interfaces {
        let link = netlink.link_by_name(name).await?;
        links.insert(link.index, link);
    }
    let mut table = ServiceTable::from_config(&config)?;
    route_backends(&netlink, &links, &mut table).await?;

    let mut dataplane = Dataplane::load(config.dataplane.max_flows)?;
    let mut neighbours = Neighbours::register(&netlink, &table).await?;
    let result = async {
        neighbours.wait_for_macs(&mut table, config.dataplane.neighbour_timeout).await?;
        for link in links.values() {
            dataplane.add_egress(link.index)?;
        }
        for index in 0..table.services.len() {
            quorum_changed(&mut table, index);
        }
        write_all(&mut dataplane, &table)?;
        let mut nat = uses_nat(&config);
        let nat_timeouts = config.dataplane.nat_timeouts;
        dataplane.set_nat(nat, &nat_timeouts)?;
        for link in links.values() {
            let mode = dataplane.attach(&link.name, config.dataplane.xdp_mode)?;
            info!(interface = %link.name, mode = mode.as_str(), "XDP attached");
        }
        let (api_tx, mut api_requests) = tokio::sync::mpsc::channel(16);
        let _api_task = api_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "status API listening: /status, /metrics");
            }
            AbortOnDrop(tokio::spawn(crate::api::serve(listener, api_tx)))
        });
        let vrrp_status = failover::StatusBoard::default();
        // `[global]` cannot change on a reload.
        let router_id = config.global.router_id.clone();
        let snapshot = |table: &ServiceTable, dataplane: &Dataplane| {
            Snapshot::take(
                router_id.clone(),
                started.elapsed(),
                table,
                dataplane,
                vrrp_status.snapshot(),
                vrrp_status.sockets(),
            )
        };
        info!(
            services = table.services.len(),
            real_servers = table.backends.len(),
            "xdp-lb ready"
        );
        // Health checks run beside the loop and report changes over a channel.
        let (mut checks, mut transitions) = HealthChecks::start(&table);
        // VRRP instances: services on their VIPs are forwarded only while MASTER.
        let (failover_tx, mut failover_events) = tokio::sync::mpsc::channel(64);
        let (stop_failover, failover_stopped) = tokio::sync::oneshot::channel::<()>();
        let instances: Vec<_> = config.vrrp.iter().map(failover::instance_spec).collect();
        let (track_tx, track_rx) = tokio::sync::mpsc::channel(64);
        let mut tracking = VrrpTracking::new(&config, &table, track_tx);
        let (scripts_tx, mut script_transitions) = tokio::sync::mpsc::channel(64);
        let (stop_scripts, scripts_stopped) = tokio::sync::oneshot::channel::<()>();
        let scripts_task = tokio::spawn(xdp_lb_checks::run(
            script_checks(&config),
            CHECK_CONCURRENCY,
            scripts_tx,
            async move {
                let _ = scripts_stopped.await;
            },
        ));
        let mut failover_task = (!instances.is_empty()).then(|| {
            tokio::spawn(failover::run_tracked(
                instances,
                config.sync_groups.iter().map(failover::sync_group_spec).collect(),
                netlink.clone(),
                failover_tx,
                track_rx,
                vrrp_status.clone(),
                async move {
                    let _ = failover_stopped.await;
                },
            ))
        });
        // The quorum at start (alpha servers start down).
        tracking.update(&table);
        // The VIPs of instances that are MASTER now (for services a reload adds).
        let mut master_vips: HashSet<std::net::IpAddr> = HashSet::new();
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(NEIGHBOUR_REFRESH);
        let mut nat_gc = tokio::time::interval(nat_gc_interval(&nat_timeouts));
        // Set when the VRRP runtime ended by itself (a socket failed): it has already
        // stopped its instances, so the daemon stops too and a supervisor restarts it,
        // rather than forwarding on as a node no peer hears.
        let mut vrrp_failed = None;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                ended = async { failover_task.as_mut().expect("guarded").await }, if failover_task.is_some() => {
                    failover_task = None;
                    vrrp_failed = Some(match ended {
                        Ok(Ok(())) => anyhow::anyhow!("the VRRP runtime ended on its own"),
                        Ok(Err(e)) => e,
                        Err(e) => anyhow::anyhow!("the VRRP task failed: {e}"),
                    });
                    break;
                }
                _ = tick.tick() => {
                    if let Err(e) = neighbours.refresh(&mut table, &mut dataplane).await {
                        warn!(error = %format!("{e:#}"), "neighbour refresh failed; keeping the last known MACs");
                    }
                }
                _ = nat_gc.tick(), if nat => collect_nat(&mut dataplane, &nat_timeouts),
                Some(event) = failover_events.recv() => {
                    on_failover(&mut table, &mut dataplane, &mut master_vips, &event);
                }
                Some(new) = reloads.recv() => {
                    let mut state = Running {
                        config: &mut config,
                        netlink: &netlink,
                        links: &links,
                        table: &mut table,
                        dataplane: &mut dataplane,
                        neighbours: &mut neighbours,
                        tracking: &mut tracking,
                        master_vips: &mut master_vips,
                        failover_events: &mut failover_events,
                        nat: &mut nat,
                    };
                    match reload(&mut state, new).await {
                        Ok(Reloaded { services: None, vrrp: false }) => {
                            info!("configuration reloaded: nothing changed");
                        }
                        Ok(Reloaded { services, vrrp }) => {
                            let mut parts = Vec::new();
                            if let Some(summary) = services {
                                // The checks of the new table, each starting from the
                                // server's current verdict.
                                checks.stop().await;
                                (checks, transitions) = HealthChecks::start(&table);
                                tracking.update(&table);
                                parts.push(summary);
                            }
                            if vrrp {
                                parts.push("vrrp instances reconfigured in place".into());
                            }
                            info!("configuration reloaded: {}", parts.join("; "));
                        }
                        Err(e) => tracing::error!("reload refused, the running configuration stays: {e:#}"),
                    }
                }
                Some(t) = script_transitions.recv() => {
                    tracking.script_changed(t.backend.0 as usize, t.up, &table);
                }
                Some(t) = transitions.recv() => {
                    if let Err(e) = apply_health(&mut table, &mut dataplane, &tracking, &t) {
                        warn!(error = %format!("{e:#}"), "could not apply a health change to the data plane");
                    }
                }
                Some(reply) = api_requests.recv() => {
                    let _ = reply.send(snapshot(&table, &dataplane));
                }
            }
        }
        // VRRP first: a MASTER sends priority 0 and drops its VIPs, so the peer takes
        // over at once, while this node still forwards what arrives meanwhile.
        if let Some(task) = failover_task {
            let _ = stop_failover.send(());
            // Keep applying state changes (the last ones say the VIPs are gone).
            let mut task = std::pin::pin!(task);
            loop {
                tokio::select! {
                    result = &mut task => {
                        match result {
                            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "VRRP stopped with an error"),
                            Err(e) => warn!(error = %e, "VRRP task failed"),
                            Ok(Ok(())) => {}
                        }
                        break;
                    }
                    Some(event) = failover_events.recv() => {
                        let _ = apply_failover(&mut table, &mut dataplane, &event);
                    }
                }
            }
        }
        let _ = stop_scripts.send(());
        if tokio::time::timeout(CHECKS_STOP, scripts_task).await.is_err() {
            warn!("track scripts did not stop within {CHECKS_STOP:?}");
        }
        // keepalived's omega: the down command also runs when the service stops.
        for svc in &table.services {
            if let (true, Some(argv)) = (svc.quorum.omega, &svc.quorum.down) {
                let what = format!("quorum_down (omega) of {}", svc.name);
                crate::notify::run(argv, &what, crate::notify::TIMEOUT).await;
            }
        }
        checks.stop().await;
        // The last state changes of a failed VRRP runtime (its instances stopped).
        while let Ok(event) = failover_events.try_recv() {
            let _ = apply_failover(&mut table, &mut dataplane, &event);
        }
        log_counters(&snapshot(&table, &dataplane));
        match vrrp_failed {
            Some(e) => Err(e.context("VRRP stopped, so xdp-lb stops too (restart it)")),
            None => anyhow::Ok(()),
        }
    }
    .await;
    info!("shutting down: detaching XDP and removing managed neighbour entries");
    drop(dataplane);
    neighbours.cleanup().await;
    result
}

/// What a reload may change, borrowed from the daemon's loop.
struct Running<'a> {
    config: &'a mut Config,
    netlink: &'a Netlink,
    links: &'a BTreeMap<u32, Link>,
    table: &'a mut ServiceTable,
    dataplane: &'a mut Dataplane,
    neighbours: &'a mut Neighbours,
    tracking: &'a mut VrrpTracking,
    master_vips: &'a mut HashSet<std::net::IpAddr>,
    /// Applied to the running table while a reload waits for new MACs.
    failover_events: &'a mut tokio::sync::mpsc::Receiver<failover::FailoverEvent>,
    nat: &'a mut bool,
}

/// What a reload changed.
struct Reloaded {
    /// The virtual servers changed (a summary); the caller then restarts the health
    /// checks on the new table.
    services: Option<String>,
    /// VRRP instances changed in place.
    vrrp: bool,
}

/// Applies a reloaded configuration, or explains why not (and then nothing changed):
/// the virtual servers, and the VRRP instances' settings that apply in place.
async fn reload(state: &mut Running<'_>, new: Config) -> anyhow::Result<Reloaded> {
    let restart = crate::reload::restart_needed(state.config, &new);
    if !restart.is_empty() {
        bail!(
            "{} changed; these need a restart of xdp-lb (a graceful restart hands the VIPs \
             over with priority 0)",
            restart.join("; ")
        );
    }
    let services = if strip_locations(&state.config.virtual_servers)
        == strip_locations(&new.virtual_servers)
    {
        None
    } else {
        Some(reload_services(state, &new).await?)
    };
    // After the services: a failed services reload leaves VRRP untouched too.
    let vrrp = state.config.others.get("vrrp") != new.others.get("vrrp");
    if vrrp {
        state.tracking.reconfigure(&new).await;
    }
    *state.config = new;
    Ok(Reloaded { services, vrrp })
}

/// The virtual-server part of [`reload`]: everything that can fail comes before the
/// first map write.
async fn reload_services(state: &mut Running<'_>, new: &Config) -> anyhow::Result<String> {
    let (mut table, reloaded) = ServiceTable::reload(new, state.table)?;
    route_backends(state.netlink, state.links, &mut table).await?;
    for svc in &mut table.services {
        // A service on a VRRP VIP is forwarded while this node is MASTER for it.
        if !svc.active {
            svc.active = state.master_vips.contains(&svc.vip);
        }
    }
    // New real servers' MACs, waited for as at start (bounded by neighbour_timeout),
    // so "reloaded" means they take connections. VRRP changes meanwhile go to the
    // running table at once, and to the new one before it is written.
    state.neighbours.add(&table).await?;
    let mut during = Vec::new();
    {
        let wait = state
            .neighbours
            .wait_for_macs(&mut table, new.dataplane.neighbour_timeout);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                done = &mut wait => break done?,
                Some(event) = state.failover_events.recv() => {
                    on_failover(state.table, state.dataplane, state.master_vips, &event);
                    during.push(event);
                }
            }
        }
    }
    for event in &during {
        table.set_vips_active(&event.vips, event.state == xdp_lb_vrrp::State::Master);
    }
    for index in 0..table.services.len() {
        quorum_changed(&mut table, index);
    }
    let dp = &mut *state.dataplane;
    dp.reset_counters(&reloaded.new_services, &reloaded.new_backends)?;
    for &slot in &reloaded.removed_backends {
        // Inactive: flows still pinned to it move on their next packet.
        dp.set_backend(slot, &xdp_lb_common::BackendValue::default())?;
    }
    write_all(dp, &table)?;
    for key in &reloaded.removed_services {
        dp.remove_service(key)?;
    }
    let nat = uses_nat(new);
    if nat != *state.nat {
        dp.set_nat(nat, &new.dataplane.nat_timeouts)?;
        *state.nat = nat;
    }
    let summary = format!(
        "{} virtual servers ({} new, {} removed), {} real servers ({} new, {} removed; {} kept \
         their health)",
        table.services.len(),
        reloaded.new_services.len(),
        reloaded.removed_services.len(),
        table.backends.len(),
        reloaded.new_backends.len(),
        reloaded.removed_backends.len(),
        reloaded.kept_health,
    );
    state.tracking.retarget(new, &table);
    state.neighbours.prune(&table).await;
    *state.table = table;
    Ok(summary)
}

/// A VRRP state change: the VIPs this node is MASTER for, and the services on them
/// forwarded (MASTER) or handed to the kernel.
fn on_failover(
    table: &mut ServiceTable,
    dataplane: &mut Dataplane,
    master_vips: &mut HashSet<std::net::IpAddr>,
    event: &failover::FailoverEvent,
) {
    for vip in &event.vips {
        if event.state == xdp_lb_vrrp::State::Master {
            master_vips.insert(*vip);
        } else {
            master_vips.remove(vip);
        }
    }
    if let Err(e) = apply_failover(table, dataplane, event) {
        warn!(error = %format!("{e:#}"), "could not apply a VRRP state change to the data plane");
    }
}

/// Whether any virtual server forwards by NAT (the reply path is on only then).
fn uses_nat(config: &Config) -> bool {
    config
        .virtual_servers
        .iter()
        .any(|v| v.forwarding == Forwarding::Nat)
}

/// The virtual servers without where they were written, to tell whether a reload
/// changed them.
fn strip_locations(vs: &[crate::config::VirtualServer]) -> Vec<crate::config::VirtualServer> {
    let nowhere = crate::config::Location::default();
    vs.iter()
        .cloned()
        .map(|mut v| {
            v.location = nowhere.clone();
            for rs in &mut v.real_servers {
                rs.location = nowhere.clone();
            }
            v
        })
        .collect()
}

/// A VRRP instance changed state: services on its VIPs are forwarded only while it is
/// MASTER (otherwise their packets go to the kernel, which on a BACKUP does not hold
/// the VIPs).
fn apply_failover(
    table: &mut ServiceTable,
    dataplane: &mut Dataplane,
    event: &failover::FailoverEvent,
) -> anyhow::Result<()> {
    let master = event.state == xdp_lb_vrrp::State::Master;
    info!(instance = %event.instance, state = ?event.state, "vrrp instance state");
    for index in table.set_vips_active(&event.vips, master) {
        dataplane.set_service(&table.spec(index)?)?;
        info!(
            service = %table.services[index].name,
            forwarding = master,
            "data plane follows vrrp"
        );
    }
    Ok(())
}

/// A health verdict changed: rebuild that service's schedule (the switch is one map
/// update), then log it with the service and real server it is about. The line comes
/// after the maps are written so that, once it is read, new connections already follow it.
fn apply_health(
    table: &mut ServiceTable,
    dataplane: &mut Dataplane,
    tracking: &VrrpTracking,
    t: &xdp_lb_checks::Transition,
) -> anyhow::Result<()> {
    let id = t.backend.0;
    let b = &table.backends[id as usize];
    let index = b.service;
    let service = table.services[index].name.clone();
    let server = std::net::SocketAddr::new(b.addr, b.port);
    let what = match (&t.reason, t.weight) {
        (Some(reason), _) => format!("down: {reason}"),
        (None, Some(w)) => format!("up with weight {w}"),
        (None, None) => "up".to_string(),
    };
    let mut quorum = None;
    let applied = if table.set_health(id, t.up, t.weight) {
        write_backend(dataplane, table, id)
            .and_then(|()| {
                // The schedule written next depends on the quorum (sorry server).
                quorum = table.update_quorum(index);
                Ok(dataplane.set_service(&table.spec(index)?)?)
            })
            .map(|()| true)
    } else {
        Ok(false)
    };
    if t.up {
        info!(%service, real_server = %server, check = %t.check, "real server {what}");
    } else {
        warn!(%service, real_server = %server, check = %t.check, "real server {what}");
    }
    if let Some(gained) = quorum {
        report_quorum(table, index, gained);
        tracking.update(table);
    }
    if applied? && table.usable_weight(index) == 0 {
        warn!(%service, "no real server can take new connections");
    }
    Ok(())
}

/// Re-evaluates a service's quorum and runs its up/down command on a change.
fn quorum_changed(table: &mut ServiceTable, index: usize) {
    if let Some(gained) = table.update_quorum(index) {
        report_quorum(table, index, gained);
    }
}

/// Logs a quorum edge and runs the service's up/down command for it.
fn report_quorum(table: &ServiceTable, index: usize, gained: bool) {
    let svc = &table.services[index];
    let weight = table.usable_weight(index);
    let (command, edge) = if gained {
        info!(service = %svc.name, weight, quorum = svc.quorum.quorum, "quorum gained");
        (svc.quorum.up.clone(), "quorum_up")
    } else {
        warn!(service = %svc.name, weight, quorum = svc.quorum.quorum, "quorum lost: new connections go to the sorry server, if any");
        (svc.quorum.down.clone(), "quorum_down")
    };
    if let Some(argv) = command {
        crate::notify::spawn(argv, format!("{edge} of {}", svc.name));
    }
}

/// Half the shortest NAT timeout, between 1 s and 10 s: entries leave at most 50 %
/// after their timeout, and a big table is not walked more than once a second.
fn nat_gc_interval(t: &NatTimeouts) -> Duration {
    (t.tcp.min(t.tcp_fin).min(t.udp) / 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Deletes idle NAT entries (the LRU alone would only evict them when full).
fn collect_nat(dataplane: &mut Dataplane, t: &NatTimeouts) {
    match dataplane.expire_nat(t, monotonic_ns()) {
        Ok(gc) if gc.flows_removed + gc.replies_removed > 0 => info!(
            flows_removed = gc.flows_removed,
            replies_removed = gc.replies_removed,
            flows_left = gc.flows_left,
            replies_left = gc.replies_left,
            "expired idle NAT entries"
        ),
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "NAT garbage collection failed; the LRU still bounds the tables")
        }
    }
}

/// The data plane's counters, so a run ends with what it did.
fn log_counters(snapshot: &Snapshot) {
    for svc in &snapshot.services {
        let c = &svc.counters;
        info!(
            service = %svc.name,
            packets = c.packets,
            bytes = c.bytes,
            new_flows = c.new_flows,
            rescheduled = c.rescheduled_flows,
            pass_inactive = c.passed_inactive,
            drop_no_backend = c.dropped_no_real_server,
            drop_redirect = c.dropped_redirect,
            "service counters"
        );
        for b in &svc.real_servers {
            info!(
                service = %svc.name,
                real_server = %b.address,
                packets = b.packets,
                bytes = b.bytes,
                new_flows = b.new_flows,
                health_transitions = b.health_transitions,
                "real server counters"
            );
        }
    }
    let nonzero: Vec<String> = snapshot
        .verdicts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    info!(verdicts = %nonzero.join(" "), "data plane verdicts");
}

/// Aborts a helper task when the daemon's loop ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn write_all(dataplane: &mut Dataplane, table: &ServiceTable) -> anyhow::Result<()> {
    for index in 0..table.backends.len() as u32 {
        write_backend(dataplane, table, index)?;
    }
    for index in 0..table.services.len() {
        dataplane.set_service(&table.spec(index)?)?;
    }
    Ok(())
}

/// Writes the backend at `index` into its slot.
pub(crate) fn write_backend(
    dataplane: &mut Dataplane,
    table: &ServiceTable,
    index: u32,
) -> anyhow::Result<()> {
    let slot = table.backends[index as usize].id;
    Ok(dataplane.set_backend(slot, &table.backend_value(index))?)
}
