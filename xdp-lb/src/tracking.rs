//! VRRP tracking of virtual servers' quorum, track scripts and BFD sessions.
use std::time::Duration;

use tracing::{info, warn};
use xdp_lb_checks::BackendId;

use crate::{config::Config, failover, services::ServiceTable};

/// What VRRP instances track: virtual servers' quorum (`track_virtual_servers`) and
/// track scripts (`track_scripts`), turned into priority adjustments and FAULT.
pub(crate) struct VrrpTracking {
    tx: failover::ControlHandle,
    instances: Vec<TrackingOf>,
    /// Each `[script.NAME]`'s name, weight and current verdict (scripts start up).
    scripts: Vec<(String, i32, bool)>,
    /// Each `[bfd.NAME]`'s name, weight and whether it is up (sessions start down, as
    /// keepalived's).
    bfd: Vec<(String, i32, bool)>,
}

struct TrackingOf {
    instance: String,
    /// (service index, weight) of each tracked virtual server.
    services: Vec<(usize, i32)>,
    /// Indices into `VrrpTracking::scripts`.
    scripts: Vec<usize>,
    /// Indices into `VrrpTracking::bfd`.
    bfd: Vec<usize>,
}

impl VrrpTracking {
    pub(crate) fn new(
        config: &Config,
        table: &ServiceTable,
        tx: failover::ControlHandle,
    ) -> VrrpTracking {
        let scripts = config
            .scripts
            .iter()
            .map(|s| (s.name.clone(), s.weight, true))
            .collect();
        let bfd = config
            .bfd
            .iter()
            .map(|s| (s.name.clone(), s.weight, false))
            .collect();
        VrrpTracking {
            tx,
            instances: targets(config, table),
            scripts,
            bfd,
        }
    }

    /// A reload changed VRRP instances in ways they take in place.
    pub(crate) async fn reconfigure(&self, config: &Config) {
        if self.tx.reconfigure.send(config.vrrp.clone()).await.is_err() {
            warn!("vrrp instances not reconfigured: the vrrp runtime has stopped");
        }
    }

    /// Points the tracked virtual servers at their places in a reloaded table (the
    /// instances and scripts cannot change on a reload).
    pub(crate) fn retarget(&mut self, config: &Config, table: &ServiceTable) {
        for (t, f) in self.instances.iter_mut().zip(targets(config, table)) {
            t.services = f.services;
        }
    }

    /// A track script's verdict, with why it failed (its exit code, signal or timeout,
    /// and the first lines it printed).
    pub(crate) fn script_changed(
        &mut self,
        index: ScriptIndex,
        up: bool,
        why: Option<&str>,
        table: &ServiceTable,
    ) {
        let (name, _, ok) = &mut self.scripts[index.0];
        if *ok != up {
            *ok = up;
            if up {
                info!(script = %name, "track script succeeds again");
            } else {
                warn!(script = %name, "track script fails: {}", why.unwrap_or("no reason given"));
            }
            self.update(table);
        }
    }

    /// A BFD session went up or left up.
    pub(crate) fn bfd_changed(&mut self, index: usize, up: bool, table: &ServiceTable) {
        let Some((_, _, was)) = self.bfd.get_mut(index) else {
            return;
        };
        if *was != up {
            *was = up;
            self.update(table);
        }
    }

    /// Tells every tracking instance its total adjustment, as keepalived sums tracking
    /// weights: a tracked virtual server without quorum adds its (negative) weight; a
    /// script adds a positive weight while it succeeds and a negative one while it
    /// fails; weight 0 means FAULT while the object is down. Totals for every
    /// instance at once, into a channel that keeps only the latest: none is lost,
    /// however fast they come.
    pub(crate) fn update(&self, table: &ServiceTable) {
        let mut state = failover::TrackState::new();
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
            let scripts = t.scripts.iter().map(|&i| ("script", &self.scripts[i]));
            let bfd = t.bfd.iter().map(|&i| ("bfd", &self.bfd[i]));
            for (kind, (name, weight, ok)) in scripts.chain(bfd) {
                match (*ok, weight.signum()) {
                    (true, 1) | (false, -1) => adjust += weight,
                    (false, 0) => fault = true,
                    _ => {}
                }
                if !ok {
                    down.push(format!("{kind} {name}"));
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
            state.insert(t.instance.clone(), update);
        }
        self.tx.tracking.send_replace(state);
    }
}

/// What each tracking instance of `config` tracks, by position in `table`.
fn targets(config: &Config, table: &ServiceTable) -> Vec<TrackingOf> {
    config
        .vrrp
        .iter()
        .filter(|vi| {
            let id = &vi.identity;
            !id.track_virtual_servers.is_empty()
                || !id.track_scripts.is_empty()
                || !id.track_bfd.is_empty()
        })
        .map(|vi| TrackingOf {
            instance: vi.name.clone(),
            services: vi
                .identity
                .track_virtual_servers
                .iter()
                .filter_map(|t| {
                    // A group's service is tracked by any of its members.
                    let key = crate::services::service_key(t.vip, t.port, t.protocol);
                    let index = table.services.iter().position(|s| s.has_key(&key))?;
                    Some((index, t.weight))
                })
                .collect(),
            scripts: vi
                .identity
                .track_scripts
                .iter()
                .filter_map(|n| config.scripts.iter().position(|s| &s.name == n))
                .collect(),
            bfd: vi
                .identity
                .track_bfd
                .iter()
                .filter_map(|n| config.bfd.iter().position(|s| &s.name == n))
                .collect(),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth0"]

[script.chk_a]
command = ["/bin/true"]
weight = -20

[script.chk_b]
command = ["/bin/true"]
weight = 0

[vrrp.VI_1]
interface = "eth0"
virtual_router_id = 51
virtual_ipaddresses = ["192.0.2.100/24"]
track_scripts = ["chk_a"]

[vrrp.VI_2]
interface = "eth0"
virtual_router_id = 52
virtual_ipaddresses = ["192.0.2.101/24"]
track_scripts = ["chk_a", "chk_b"]
"#;

    #[test]
    fn a_flood_of_tracking_changes_leaves_the_latest_totals_for_every_instance() {
        let config = crate::config::parse(CONFIG, "test.toml").unwrap();
        let table = ServiceTable::from_config(&config).unwrap();
        let (handle, controls) = failover::controls();
        let mut tracking = VrrpTracking::new(&config, &table, handle);
        // Far more changes than any queue would hold, without ever yielding.
        for i in 0..10_000 {
            tracking.script_changed(ScriptIndex(0), i % 2 == 1, None, &table);
            tracking.script_changed(ScriptIndex(1), i % 3 != 0, None, &table);
        }
        // Last round (i = 9999): chk_a up, chk_b down (9999 % 3 == 0).
        let latest = controls.tracking.borrow().clone();
        assert_eq!(latest.len(), 2);
        let vi1 = &latest["VI_1"];
        assert_eq!((vi1.adjust, vi1.fault), (0, false), "{vi1:?}");
        let vi2 = &latest["VI_2"];
        assert_eq!((vi2.adjust, vi2.fault), (0, true), "{vi2:?}");
        assert_eq!(vi2.reason, "down: script chk_b");
        // One more change is seen as a change.
        let mut rx = controls.tracking.clone();
        rx.mark_unchanged();
        tracking.script_changed(ScriptIndex(0), false, None, &table);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow()["VI_1"].adjust, -20);
    }

    #[test]
    fn bfd_sessions_weigh_as_keepalived_track_bfd() {
        let text = r#"
[dataplane]
interfaces = ["eth0"]

[bfd.gw]
peer = "192.0.2.254"
weight = -30

[bfd.uplink]
peer = "192.0.2.253"

[bfd.bonus]
peer = "192.0.2.252"
weight = 10

[vrrp.VI_1]
interface = "eth0"
virtual_router_id = 51
virtual_ipaddresses = ["192.0.2.100/24"]
track_bfd = ["bonus", "gw"]

[vrrp.VI_2]
interface = "eth0"
virtual_router_id = 52
virtual_ipaddresses = ["192.0.2.101/24"]
track_bfd = ["uplink"]
"#;
        let config = crate::config::parse(text, "test.toml").unwrap();
        let table = ServiceTable::from_config(&config).unwrap();
        let (handle, controls) = failover::controls();
        let mut tracking = VrrpTracking::new(&config, &table, handle);
        // Sessions start down: gw's -30 applies, bonus adds nothing, VI_2 is FAULT.
        tracking.update(&table);
        let now = controls.tracking.borrow().clone();
        assert_eq!((now["VI_1"].adjust, now["VI_1"].fault), (-30, false));
        assert_eq!((now["VI_2"].adjust, now["VI_2"].fault), (0, true));
        assert_eq!(now["VI_2"].reason, "down: bfd uplink");
        // Sorted by name: bonus 0, gw 1, uplink 2.
        for index in 0..3 {
            tracking.bfd_changed(index, true, &table);
        }
        let now = controls.tracking.borrow().clone();
        assert_eq!((now["VI_1"].adjust, now["VI_1"].fault), (10, false));
        assert_eq!((now["VI_2"].adjust, now["VI_2"].fault), (0, false));
        tracking.bfd_changed(1, false, &table);
        assert_eq!(controls.tracking.borrow()["VI_1"].adjust, -20);
    }
}
