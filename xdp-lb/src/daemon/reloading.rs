//! Reloads (SIGHUP): what the loop does when a configuration arrives, and the slow
//! part (routes, new MACs) on a task of its own that reports back.

use super::*;

impl Core {
    /// A reloaded configuration: refused at once if it changes what needs a restart;
    /// applied at once if only VRRP settings changed; otherwise its table is prepared
    /// on a task (routes, new real servers' MACs) while events keep being handled. One
    /// arriving meanwhile waits for that one (only the latest waits).
    pub(super) async fn on_reload(&mut self, new: Config) {
        crate::systemd::reloading();
        self.reload_inner(new).await;
        if self.reload.preparing.is_none() {
            crate::systemd::ready(&self.summary());
        }
    }

    pub(super) async fn reload_inner(&mut self, new: Config) {
        if self.reload.preparing.is_some() {
            info!("a reload is being prepared; this one follows it");
            self.reload.queued = Some(new);
            return;
        }
        if let Err(e) = self.check_reload(&new) {
            error!(
                "reload refused, the running configuration stays: {}",
                Chain(&*e)
            );
            return;
        }
        if strip_locations(&self.config.virtual_servers) == strip_locations(&new.virtual_servers)
            && strip_filter(&self.config.filter) == strip_filter(&new.filter)
        {
            let done = self.apply_in_place(&new).await;
            self.config = new;
            if done.is_empty() {
                info!("configuration reloaded: nothing changed");
            } else {
                info!("configuration reloaded: {}", done.join("; "));
            }
            return;
        }
        let (table, reloaded) = match ServiceTable::reload(&new, self.forwarding.table()) {
            Ok(built) => built,
            Err(e) => {
                error!(
                    "reload refused, the running configuration stays: {}",
                    Chain(&e)
                );
                return;
            }
        };
        info!(
            new_real_servers = reloaded.new_backends.len(),
            "reload: resolving routes and new real servers' MACs before the switch"
        );
        self.reload.generation += 1;
        let generation = self.reload.generation;
        let prepare = prepare_reload(
            self.netlink.clone(),
            self.links.clone(),
            new.vips(),
            self.neighbours.clone(),
            PreparedReload {
                table,
                reloaded,
                timeouts: new.dataplane.nat_timeouts,
            },
            new.dataplane.neighbour_timeout,
        );
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            let result = prepare.await;
            let _ = events.send(Event::Prepared { generation, result }).await;
        });
        self.reload.preparing = Some((new, AbortOnDrop(task)));
    }

    /// What a reload sets in place, whatever else it changes: the flood guard's rate
    /// and the VRRP instances' tunables. Returns what it did, for the log line.
    async fn apply_in_place(&mut self, new: &Config) -> Vec<String> {
        let mut done = Vec::new();
        let (was, rate) = (
            self.config.dataplane.new_flow_rate,
            new.dataplane.new_flow_rate,
        );
        if rate != was {
            match self.forwarding.writer_mut().set_new_flow_rate(rate) {
                Ok(()) => done.push(format!("new_flow_rate {was} -> {rate}")),
                Err(e) => error!("new_flow_rate stays {was}: {}", Chain(&e)),
            }
        }
        if self.reconfigure_vrrp(new).await {
            done.push("vrrp instances reconfigured in place".into());
        }
        done
    }

    /// What a reload cannot apply (see [`crate::reload`]).
    pub(super) fn check_reload(&self, new: &Config) -> anyhow::Result<()> {
        let restart = crate::reload::restart_needed(&self.config, new);
        if !restart.is_empty() {
            bail!(
                "{} changed; these need a restart of xdp-lb (a graceful restart hands the VIPs \
                 over with priority 0)",
                restart.join("; ")
            );
        }
        Ok(())
    }

    /// A reload's table is ready: switch to it, restart the checks on it, and apply the
    /// VRRP settings (after the services: a failed services reload leaves VRRP as is).
    pub(super) async fn on_prepared(&mut self, result: anyhow::Result<PreparedReload>) {
        let (new, _task) = self.reload.preparing.take().expect("a reload was prepared");
        let applied = match result {
            Ok(prepared) => {
                let summary = summary(&prepared);
                self.forwarding
                    .apply_reload(prepared)
                    .map(|edges| (edges, summary))
                    .map_err(anyhow::Error::from)
            }
            Err(e) => Err(e),
        };
        match applied {
            Ok((edges, summary)) => {
                for edge in edges {
                    report_quorum(self.forwarding.table(), edge);
                }
                if let Some(pins) = self.forwarding.writer().pins() {
                    pins.record_ids(&self.forwarding.table().id_map());
                }
                // The checks of the new table, each starting from the server's verdict.
                self.restart_checks();
                warn_of_likely_mistakes(&new);
                self.tracking.retarget(&new, self.forwarding.table());
                self.tracking.update(self.forwarding.table());
                let mut parts = vec![summary];
                parts.extend(self.apply_in_place(&new).await);
                self.config = new;
                self.advertise();
                info!("configuration reloaded: {}", parts.join("; "));
            }
            Err(e) => error!(
                "reload refused, the running configuration stays: {}",
                Chain(&*e)
            ),
        }
        self.neighbours.prune(self.forwarding.table()).await;
        if let Some(next) = self.reload.queued.take() {
            Box::pin(self.reload_inner(next)).await;
        }
        if self.reload.preparing.is_none() {
            crate::systemd::ready(&self.summary());
        }
    }

    /// Sends the instances' new settings to the VRRP runtime if they changed.
    pub(super) async fn reconfigure_vrrp(&mut self, new: &Config) -> bool {
        // Instances cannot be added or removed on a reload (`crate::reload`), and
        // their identities stay: the tunables are what may differ.
        let tunables = |c: &Config| {
            c.vrrp
                .iter()
                .map(|v| v.tunables.clone())
                .collect::<Vec<_>>()
        };
        let changed = tunables(&self.config) != tunables(new);
        if changed {
            self.tracking.reconfigure(new).await;
        }
        changed
    }
}

/// A reload being prepared, and the one to run after it.
#[derive(Default)]
pub(super) struct Reloads {
    pub(super) generation: u64,
    pub(super) preparing: Option<(Config, AbortOnDrop)>,
    pub(super) queued: Option<Config>,
}

/// The slow part of a reload, off the loop: routes to every real server, managed
/// neighbour entries for new next hops, and their MACs (waited for, bounded by
/// `neighbour_timeout`, so "reloaded" means they take connections).
pub(super) async fn prepare_reload(
    netlink: Netlink,
    links: BTreeMap<u32, Link>,
    vips: std::collections::BTreeSet<std::net::IpAddr>,
    neighbours: Neighbours,
    mut prepared: PreparedReload,
    neighbour_timeout: Duration,
) -> anyhow::Result<PreparedReload> {
    route_backends(&netlink, &links, &mut prepared.table, &vips).await?;
    neighbours
        .resolve(&mut prepared.table, neighbour_timeout)
        .await?;
    Ok(prepared)
}

/// How a reload's log line sums it up.
pub(super) fn summary(prepared: &PreparedReload) -> String {
    let (t, r) = (&prepared.table, &prepared.reloaded);
    format!(
        "{} virtual servers ({} new, {} removed), {} real servers ({} new, {} removed; {} kept \
         their health), {} source-filter rules ({} new)",
        t.services.len(),
        r.new_services.len(),
        r.removed_services.len(),
        t.backends.len(),
        r.new_backends.len(),
        r.removed_backends.len(),
        r.carried_health.len(),
        t.filter.len(),
        r.new_rules.len(),
    )
}

/// The virtual servers without where they were written, to tell whether a reload
/// changed them.
pub(super) fn strip_locations(
    vs: &[crate::config::VirtualServer],
) -> Vec<crate::config::VirtualServer> {
    let nowhere = crate::config::Location::default();
    vs.iter()
        .cloned()
        .map(|mut v| {
            v.location = nowhere.clone();
            for rs in &mut v.real_servers {
                rs.location = nowhere.clone();
            }
            for rule in v.allow.iter_mut().chain(&mut v.deny) {
                rule.location = nowhere.clone();
            }
            v
        })
        .collect()
}

/// The global deny list without where it was written.
pub(super) fn strip_filter(filter: &crate::config::Filter) -> Vec<crate::config::Prefix> {
    filter.deny.iter().map(|rule| rule.prefix).collect()
}
