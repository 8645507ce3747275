//! VRRP tracking of virtual servers' quorum and of track scripts.
use std::time::Duration;

use tracing::{info, warn};
use xdp_lb_checks::BackendId;

use crate::{config::Config, failover, services::ServiceTable};

/// What VRRP instances track: virtual servers' quorum (`track_virtual_servers`) and
/// track scripts (`track_scripts`), turned into priority adjustments and FAULT.
pub(crate) struct VrrpTracking {
    tx: tokio::sync::mpsc::Sender<failover::Control>,
    instances: Vec<TrackingOf>,
    /// Each `[script.NAME]`'s name, weight and current verdict (scripts start up).
    scripts: Vec<(String, i32, bool)>,
}

struct TrackingOf {
    instance: String,
    /// (service index, weight) of each tracked virtual server.
    services: Vec<(usize, i32)>,
    /// Indices into `VrrpTracking::scripts`.
    scripts: Vec<usize>,
}

impl VrrpTracking {
    pub(crate) fn new(
        config: &Config,
        table: &ServiceTable,
        tx: tokio::sync::mpsc::Sender<failover::Control>,
    ) -> VrrpTracking {
        let instances = config
            .vrrp
            .iter()
            .filter(|vi| !vi.track_virtual_servers.is_empty() || !vi.track_scripts.is_empty())
            .map(|vi| TrackingOf {
                instance: vi.name.clone(),
                services: vi
                    .track_virtual_servers
                    .iter()
                    .filter_map(|t| {
                        let name = crate::services::service_name(t.vip, t.port, t.protocol);
                        let index = table.services.iter().position(|s| s.name == name)?;
                        Some((index, t.weight))
                    })
                    .collect(),
                scripts: vi
                    .track_scripts
                    .iter()
                    .filter_map(|n| config.scripts.iter().position(|s| &s.name == n))
                    .collect(),
            })
            .collect();
        let scripts = config
            .scripts
            .iter()
            .map(|s| (s.name.clone(), s.weight, true))
            .collect();
        VrrpTracking {
            tx,
            instances,
            scripts,
        }
    }

    /// A reload changed VRRP instances in ways they take in place.
    pub(crate) async fn reconfigure(&self, config: &Config) {
        let specs = config.vrrp.iter().map(failover::instance_spec).collect();
        if self
            .tx
            .send(failover::Control::Reconfigure(specs))
            .await
            .is_err()
        {
            warn!("vrrp instances not reconfigured: the vrrp runtime has stopped");
        }
    }

    /// Points the tracked virtual servers at their places in a reloaded table (the
    /// instances and scripts cannot change on a reload).
    pub(crate) fn retarget(&mut self, config: &Config, table: &ServiceTable) {
        let fresh = VrrpTracking::new(config, table, self.tx.clone());
        for (t, f) in self.instances.iter_mut().zip(fresh.instances) {
            t.services = f.services;
        }
    }

    pub(crate) fn script_changed(&mut self, index: ScriptIndex, up: bool, table: &ServiceTable) {
        let (name, _, ok) = &mut self.scripts[index.0];
        if *ok != up {
            *ok = up;
            if up {
                info!(script = %name, "track script succeeds again");
            } else {
                warn!(script = %name, "track script fails");
            }
            self.update(table);
        }
    }

    /// Tells every tracking instance its total adjustment, as keepalived sums tracking
    /// weights: a tracked virtual server without quorum adds its (negative) weight; a
    /// script adds a positive weight while it succeeds and a negative one while it
    /// fails; weight 0 means FAULT while the object is down. Totals, so resending is
    /// harmless.
    pub(crate) fn update(&self, table: &ServiceTable) {
        for t in &self.instances {
            let mut adjust = 0;
            let mut fault = false;
            let mut down = Vec::new();
            for (index, weight) in &t.services {
                if !table.services[*index].quorum_ok {
                    adjust += weight;
                    fault |= *weight == 0;
                    down.push(table.services[*index].name.clone());
                }
            }
            for index in &t.scripts {
                let (name, weight, ok) = &self.scripts[*index];
                match (*ok, weight.signum()) {
                    (true, 1) | (false, -1) => adjust += weight,
                    (false, 0) => fault = true,
                    _ => {}
                }
                if !ok {
                    down.push(format!("script {name}"));
                }
            }
            let update = failover::TrackUpdate {
                instance: t.instance.clone(),
                adjust,
                fault,
                reason: if down.is_empty() {
                    "every tracked object is up".into()
                } else {
                    format!("down: {}", down.join(", "))
                },
            };
            if self.tx.try_send(update.into()).is_err() {
                warn!(instance = %t.instance, "vrrp tracking update dropped: the vrrp runtime is not keeping up");
            }
        }
    }
}

/// A `[script.NAME]`'s position in the config's scripts (sorted by name); its checks
/// run under this number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScriptIndex(pub usize);

/// Track scripts are MISC checks run by the same scheduler as the health checks,
/// each under its [`ScriptIndex`].
pub(crate) fn script_checks(
    config: &Config,
) -> Vec<(
    BackendId,
    xdp_lb_checks::CheckSpec,
    xdp_lb_checks::CheckParams,
)> {
    config
        .scripts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut misc = xdp_lb_checks::MiscCheck::new(s.command.clone());
            misc.timeout = Some(s.timeout);
            misc.user = s.user.clone();
            let spec = xdp_lb_checks::CheckSpec::Misc(misc);
            // A MISC check probes no server; the address only names it in logs.
            let mut params = xdp_lb_checks::CheckParams::new(([0, 0, 0, 0], 0).into(), &spec);
            params.interval = s.interval;
            params.warmup = Duration::ZERO;
            params.retry = 0;
            params.rise = s.rise;
            params.fall = s.fall;
            (BackendId(i as u32), spec, params)
        })
        .collect()
}
