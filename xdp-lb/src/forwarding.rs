//! The one owner of what the XDP maps say. [`Forwarding`] holds the service table
//! (real servers, their health and MACs), the VIPs this node is VRRP MASTER for, and
//! the map writer; every change (a health verdict, a VRRP state, the neighbour table,
//! a reload) is one `apply_*` method that updates the model and writes exactly the map
//! entries that follow from it. The methods are plain (no I/O besides the writer, no
//! tasks), so they are unit-tested against an in-memory writer (see `forwarding/tests.rs`); the daemon only routes
//! events to them.
//!
//! Order matters for readers of the log: each method writes the maps first and returns
//! what happened, so a line saying "real server down" is true once it is read.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use xdp_lb_common::{BackendValue, ServiceKey};

use crate::{
    config::NatTimeouts,
    dataplane::{Dataplane, DataplaneError, ServiceSpec, filter::FilterEntry, stats::Traffic},
    schedule::Load,
    services::{
        BackendIndex, Macs, Member, NatOrigins, Reloaded, ServiceTable, ServicesError, Slot,
    },
};

/// The map operations the owner needs; the real [`Dataplane`] implements it, and an
/// in-memory one in the unit tests.
pub trait MapWriter {
    /// Replaces the BACKENDS entry of `slot`.
    fn set_backend(&mut self, slot: Slot, value: &BackendValue) -> Result<(), DataplaneError>;
    /// Installs or replaces a service and its schedule, under every key of `spec`
    /// (each key switches in one visible step).
    fn set_service(&mut self, spec: &ServiceSpec) -> Result<(), DataplaneError>;
    /// Takes one key out of the SERVICES map.
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError>;
    /// Zeroes the counters of newly given service ids and backend slots.
    fn reset_counters(&mut self, services: &[u32], slots: &[Slot]) -> Result<(), DataplaneError>;
    /// The NAT real servers and the VIPs each answers for (none: no NAT reply path),
    /// and the idle timeouts.
    fn set_nat(
        &mut self,
        origins: &NatOrigins,
        timeouts: &NatTimeouts,
    ) -> Result<(), DataplaneError>;
    /// Makes source-filter generation `generation` (0 or 1) hold exactly `entries`.
    fn set_filter(
        &mut self,
        generation: u32,
        entries: &[FilterEntry],
    ) -> Result<(), DataplaneError>;
    /// Zeroes the counters of newly given source-filter rule numbers.
    fn reset_rule_counters(&mut self, rules: &[u32]) -> Result<(), DataplaneError>;
    /// What the real server in `slot` has forwarded since its counters were zeroed.
    fn backend_traffic(&self, slot: Slot) -> Result<Traffic, DataplaneError>;
}

impl MapWriter for Dataplane {
    fn set_backend(&mut self, slot: Slot, value: &BackendValue) -> Result<(), DataplaneError> {
        Dataplane::set_backend(self, slot.0, value)
    }
    fn set_service(&mut self, spec: &ServiceSpec) -> Result<(), DataplaneError> {
        Dataplane::set_service(self, spec)
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        Dataplane::remove_service(self, key)
    }
    fn reset_counters(&mut self, services: &[u32], slots: &[Slot]) -> Result<(), DataplaneError> {
        let slots: Vec<u32> = slots.iter().map(|s| s.0).collect();
        Dataplane::reset_counters(self, services, &slots)
    }
    fn set_nat(
        &mut self,
        origins: &NatOrigins,
        timeouts: &NatTimeouts,
    ) -> Result<(), DataplaneError> {
        Dataplane::set_nat(self, origins, timeouts)
    }
    fn set_filter(
        &mut self,
        generation: u32,
        entries: &[FilterEntry],
    ) -> Result<(), DataplaneError> {
        Dataplane::set_filter(self, generation, entries)
    }
    fn reset_rule_counters(&mut self, rules: &[u32]) -> Result<(), DataplaneError> {
        Dataplane::reset_rule_counters(self, rules)
    }
    fn backend_traffic(&self, slot: Slot) -> Result<Traffic, DataplaneError> {
        Ok(self.backend_stats(slot.0)?.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardingError {
    /// Boxed: a map error carries enough context to make every `Result` here large.
    #[error(transparent)]
    Map(Box<DataplaneError>),
    #[error(transparent)]
    Services(#[from] ServicesError),
}

impl From<DataplaneError> for ForwardingError {
    fn from(e: DataplaneError) -> ForwardingError {
        ForwardingError::Map(Box::new(e))
    }
}

/// A service gained (`gained`) or lost its quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumEdge {
    pub service: usize,
    pub gained: bool,
}

/// What a health verdict changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthApplied {
    /// The maps changed (the verdict or the dynamic weight differed).
    pub changed: bool,
    pub quorum: Option<QuorumEdge>,
    /// The service has no real server left for new connections.
    pub exhausted: bool,
}

/// A reloaded service table, routed and with its new real servers' MACs learned (the
/// slow part, done off the owner), ready to be switched to.
#[derive(Debug)]
pub struct PreparedReload {
    pub table: ServiceTable,
    pub reloaded: Reloaded,
    /// The idle timeouts of aging flows (`[dataplane] nat_timeouts`).
    pub timeouts: NatTimeouts,
}

/// The owner of the forwarding state; see the module's documentation.
pub struct Forwarding<W: MapWriter> {
    table: ServiceTable,
    /// VIPs of the VRRP instances that are MASTER here: the one record of it. A service
    /// on a VRRP VIP is forwarded while its VIP is in here.
    master_vips: BTreeSet<IpAddr>,
    writer: W,
    /// The idle timeouts flows of NAT, lc and wlc services expire after.
    timeouts: NatTimeouts,
    /// What [`MapWriter::set_nat`] last wrote: the NAT real servers' ports and the
    /// timeouts (so an unchanged reload writes nothing).
    written_aging: Option<(NatOrigins, NatTimeouts)>,
    /// The source-filter generation services read, and the entries it holds. A
    /// changed rule set goes into the other generation first, then every service is
    /// switched to it (one value write each), so no packet sees half of a change.
    filter_generation: u32,
    written_filter: Option<Vec<FilterEntry>>,
    /// What the services reloads removed had forwarded: kept so that the totals of
    /// all traffic (the `tx` and `redirect` verdicts) never go back.
    gone: Traffic,
}

impl<W: MapWriter> Forwarding<W> {
    /// Takes `table` (routed, MACs learned) and writes all of it: the quorum of each
    /// service first (alpha servers start down), then every backend and service, then
    /// the NAT switch and the idle timeouts. Services on VRRP VIPs start inactive (not
    /// MASTER yet).
    pub fn start(
        mut table: ServiceTable,
        writer: W,
        timeouts: NatTimeouts,
    ) -> Result<(Forwarding<W>, Vec<QuorumEdge>), ForwardingError> {
        let edges = quorum_edges(&mut table);
        let mut owner = Forwarding {
            table,
            master_vips: BTreeSet::new(),
            writer,
            timeouts,
            written_aging: None,
            filter_generation: 0,
            written_filter: None,
            gone: Traffic::default(),
        };
        owner.write_all()?;
        Ok((owner, edges))
    }

    /// What the service at `index` forwarded: its real servers' counters (the sorry
    /// server's included) and those of real servers reloads took out of it.
    pub fn service_traffic(&self, index: usize) -> Result<Traffic, DataplaneError> {
        let svc = &self.table.services[index];
        let served = svc.backends.iter().chain(&svc.sorry);
        let served: Vec<_> = served
            .map(|&b| self.writer.backend_traffic(self.table.backends[b].id))
            .collect::<Result<_, _>>()?;
        Ok(svc.traffic(served))
    }

    /// What all real servers ever forwarded, given each service's traffic
    /// (`services`, as [`Forwarding::service_traffic`] derives it): with what removed
    /// services had forwarded.
    pub fn forwarded_from(&self, services: impl IntoIterator<Item = Traffic>) -> Traffic {
        let mut total: Traffic = services.into_iter().sum();
        total += self.gone;
        total
    }

    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    pub fn writer(&self) -> &W {
        &self.writer
    }

    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    /// The idle timeouts, while some service's flows age (NAT, lc, wlc): only then do
    /// flow entries carry a clock, and idle ones need collecting.
    pub fn aging(&self) -> Option<NatTimeouts> {
        self.table
            .services
            .iter()
            .any(|s| s.ages())
            .then_some(self.timeouts)
    }

    /// Whether XDP forwards a member now: always, unless its VIP belongs to a VRRP
    /// instance that is not MASTER here.
    pub fn member_active(&self, member: &Member) -> bool {
        !member.on_vrrp_vip || self.master_vips.contains(&member.vip)
    }

    /// Whether XDP forwards service `index` now (a group: some of its members).
    pub fn is_active(&self, index: usize) -> bool {
        self.table.services[index]
            .members
            .iter()
            .any(|m| self.member_active(m))
    }

    /// Each member's [`Forwarding::member_active`], in order.
    fn member_states(&self, index: usize) -> Vec<bool> {
        self.table.services[index]
            .members
            .iter()
            .map(|m| self.member_active(m))
            .collect()
    }

    /// The map contents of service `index` now: its members' VRRP states and the live
    /// filter generation.
    fn spec(&self, index: usize) -> Result<ServiceSpec, ServicesError> {
        let master_vips = &self.master_vips;
        let mut spec = self.table.spec(index, &|m: &Member| {
            !m.on_vrrp_vip || master_vips.contains(&m.vip)
        })?;
        spec.filter_generation = self.filter_generation;
        Ok(spec)
    }

    /// A health check's verdict on the real server at `index` (with a MISC check's
    /// dynamic weight): its backend entry and its service's schedule follow in one map
    /// update each, then the quorum is re-evaluated (the schedule depends on it).
    pub fn apply_health(
        &mut self,
        index: BackendIndex,
        up: bool,
        weight: Option<u32>,
    ) -> Result<HealthApplied, ForwardingError> {
        let service = self.table.backends[index].service;
        if !self.table.set_health(index, up, weight) {
            return Ok(HealthApplied::default());
        }
        self.write_backends(&[index])?;
        let quorum = self
            .table
            .update_quorum(service)
            .map(|gained| QuorumEdge { service, gained });
        self.write_service(service)?;
        Ok(HealthApplied {
            changed: true,
            quorum,
            exhausted: self.table.usable_weight(service) == 0,
        })
    }

    /// A VRRP instance's state: its `vips` are this node's while `master`. Services on
    /// them are forwarded (MASTER) or left to the kernel (otherwise: on a BACKUP the
    /// kernel does not hold the VIPs). Returns the services whose state changed.
    pub fn apply_vrrp(
        &mut self,
        vips: &[IpAddr],
        master: bool,
    ) -> Result<Vec<usize>, ForwardingError> {
        let before: Vec<Vec<bool>> = (0..self.table.services.len())
            .map(|i| self.member_states(i))
            .collect();
        for vip in vips {
            if master {
                self.master_vips.insert(*vip);
            } else {
                self.master_vips.remove(vip);
            }
        }
        let changed: Vec<usize> = (0..self.table.services.len())
            .filter(|&i| self.member_states(i) != before[i])
            .collect();
        for &index in &changed {
            self.write_service(index)?;
        }
        Ok(changed)
    }

    /// The neighbour table's usable MACs: every backend whose MAC was learned, changed
    /// or lost is rewritten, then its service's schedule (a server without a MAC takes
    /// no new flows, and its flows move). Returns the indices of those backends.
    pub fn apply_neighbours(&mut self, macs: &Macs) -> Result<Vec<BackendIndex>, ForwardingError> {
        let changed = self.table.learn_macs(macs);
        let mut services = Vec::new();
        self.write_backends(&changed)?;
        for &index in &changed {
            let service = self.table.backends[index].service;
            if !services.contains(&service) {
                services.push(service);
            }
        }
        for service in services {
            self.write_service(service)?;
        }
        Ok(changed)
    }

    /// Counted connections by backend id (their load, and the new flows since the
    /// last count): every backend's load is recorded, and each lc or wlc service's
    /// schedule is rebuilt from them and written only if it changed. The expected
    /// arrivals until the next count are twice the last interval's (a burst then
    /// still spreads), and at least one per usable server. Returns the services
    /// rewritten.
    pub fn apply_loads(
        &mut self,
        loads: &HashMap<u32, (Load, u64)>,
    ) -> Result<Vec<usize>, ForwardingError> {
        let mut rewritten = Vec::new();
        for index in 0..self.table.services.len() {
            let counted = self.table.services[index].scheduler.counts_connections();
            let before = counted.then(|| self.spec(index));
            let mut arrived = 0;
            let mut usable = 0;
            for &b in &self.table.services[index].backends {
                let backend = &mut self.table.backends[b];
                if let Some((load, new)) = loads.get(&backend.id.0) {
                    backend.load = *load;
                    arrived += new;
                }
                usable += u64::from(backend.usable());
            }
            if let Some(before) = before {
                self.table.services[index].arrivals = (2 * arrived).max(usable).max(1);
                let after = self.spec(index)?;
                if before?.slots != after.slots {
                    self.writer.set_service(&after)?;
                    rewritten.push(index);
                }
            }
        }
        Ok(rewritten)
    }

    /// Switches to a reloaded table. Health verdicts that arrived while it was being
    /// prepared are carried into it (for servers whose check did not change), and
    /// services on VRRP VIPs take the VRRP state of now. Counters of new ids start from
    /// zero; keys no longer served leave first (so the SERVICES map never holds more
    /// than the old or the new table's keys); removed real servers are marked inactive
    /// (their flows move on their next packet) before every entry of the new table is
    /// written.
    pub fn apply_reload(
        &mut self,
        prepared: PreparedReload,
    ) -> Result<Vec<QuorumEdge>, ForwardingError> {
        let PreparedReload {
            mut table,
            reloaded,
            timeouts,
        } = prepared;
        for new in &mut table.backends {
            if !reloaded.carried_health.contains(&new.id) {
                continue;
            }
            if let Some(old) = self.table.backends.iter().find(|b| b.id == new.id) {
                new.healthy = old.healthy;
                new.dynamic_weight = old.dynamic_weight;
                new.transitions = old.transitions;
            }
        }
        for svc in &mut table.services {
            if let Some(old) = self.table.services.iter().find(|s| s.id == svc.id) {
                svc.quorum_ok = old.quorum_ok;
                svc.retired = old.retired;
            }
        }
        // A kept service keeps what its removed real servers forwarded (read before
        // their slots can be handed on and zeroed); what a removed service forwarded
        // stays in the totals of all.
        for &slot in &reloaded.removed_backends {
            let Some(old) = self.table.backends.iter().find(|b| b.id == slot) else {
                continue;
            };
            let id = self.table.services[old.service].id;
            let traffic = self.writer.backend_traffic(slot)?;
            match table.services.iter_mut().find(|s| s.id == id) {
                Some(svc) => svc.retired += traffic,
                None => self.gone += traffic,
            }
        }
        for old in &self.table.services {
            if reloaded.removed_services.contains(&old.id) {
                self.gone += old.retired;
            }
        }
        let edges = quorum_edges(&mut table);
        for key in &reloaded.removed_keys {
            self.writer.remove_service(key)?;
        }
        self.writer
            .reset_counters(&reloaded.new_services, &reloaded.new_backends)?;
        self.writer.reset_rule_counters(&reloaded.new_rules)?;
        for &slot in &reloaded.removed_backends {
            self.writer.set_backend(slot, &BackendValue::default())?;
        }
        self.table = table;
        self.timeouts = timeouts;
        self.write_all()?;
        Ok(edges)
    }

    /// The NAT reply path looks at packets from NAT services' real servers (sorry
    /// servers included); the timeouts are written with them, for NAT's flows and
    /// those of lc and wlc services.
    fn write_aging(&mut self, origins: &NatOrigins) -> Result<(), ForwardingError> {
        let written = self.written_aging.as_ref();
        if written.is_some_and(|(o, t)| o == origins && *t == self.timeouts) {
            return Ok(());
        }
        self.writer.set_nat(origins, &self.timeouts)?;
        self.written_aging = Some((origins.clone(), self.timeouts));
        Ok(())
    }

    /// The NAT ports (first: a new NAT service's replies are recognised from its
    /// first connection on), every backend, then the source filter (into the
    /// generation no service reads, if it changed), then every service (which
    /// switches it to that generation).
    fn write_all(&mut self) -> Result<(), ForwardingError> {
        let origins = self.table.nat_origins();
        self.write_aging(&origins)?;
        let every: Vec<BackendIndex> = self.table.backend_indices().collect();
        self.write_backends_in(&every, &origins)?;
        let entries = self.table.filter_entries();
        if self.written_filter.as_ref() != Some(&entries) {
            let generation = match self.written_filter {
                None => 0,
                Some(_) => 1 - self.filter_generation,
            };
            self.writer.set_filter(generation, &entries)?;
            self.filter_generation = generation;
            self.written_filter = Some(entries);
        }
        for index in 0..self.table.services.len() {
            self.write_service(index)?;
        }
        Ok(())
    }

    /// Rewrites the backends at `indices` (after their health or MAC changed).
    fn write_backends(&mut self, indices: &[BackendIndex]) -> Result<(), ForwardingError> {
        // Most neighbour events change no backend: no origins to derive then.
        if indices.is_empty() {
            return Ok(());
        }
        let origins = self.table.nat_origins();
        self.write_backends_in(indices, &origins)
    }

    /// Writes the backends at `indices`, with the table's NAT origins (`origins`),
    /// derived once by the caller: each value needs them.
    fn write_backends_in(
        &mut self,
        indices: &[BackendIndex],
        origins: &NatOrigins,
    ) -> Result<(), ForwardingError> {
        for &index in indices {
            let value = self.table.backend_value_in(index, origins);
            self.writer
                .set_backend(self.table.backends[index].id, &value)?;
        }
        Ok(())
    }

    fn write_service(&mut self, index: usize) -> Result<(), ForwardingError> {
        let spec = self.spec(index)?;
        Ok(self.writer.set_service(&spec)?)
    }
}

/// Re-evaluates every service's quorum.
fn quorum_edges(table: &mut ServiceTable) -> Vec<QuorumEdge> {
    (0..table.services.len())
        .filter_map(|service| {
            table
                .update_quorum(service)
                .map(|gained| QuorumEdge { service, gained })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
