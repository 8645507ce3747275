//! Announcing VIPs to the local routing daemon, for active-active load balancers behind
//! ECMP routers. Nothing here speaks BGP: a VIP of a virtual server with `announce =
//! true` is put on `[announce] interface` (default `lo`) as a /32 (/128) address while
//! it should be announced, and taken off when not. FRR's zebra sees the address as a
//! connected route at once (netlink), and bgpd announces it under the README's
//! `redistribute connected route-map XDP-LB-VIPS`; removing it withdraws the route.
//! An address rather than a kernel route because an address can carry a lifetime: each
//! is leased for [`LEASE`] and renewed every [`RENEWAL`], so a daemon killed with
//! `kill -9` stops being announced by itself (a route would stay announced for ever).
//!
//! [`Advertiser`] decides, as a plain method ([`Advertiser::apply`]) over the service
//! table: a VIP is announced while every `announce` service on it has quorum and is
//! forwarded here, unless the node drains or stops; it returns the [`Change`]s. The
//! daemon hands the resulting set to [`Announcer`], the one task that writes the
//! addresses (so a renewal never races a withdrawal), and which logs each change once
//! the kernel holds it.
//!
//! A drain ([`Advertiser::drain`]) withdraws every VIP first, keeps forwarding what
//! still arrives (the routers need a moment to move the flows, and established flows
//! go on through the other nodes, which send them to the same real servers by the
//! Maglev hash), and is complete once the announced services saw no packet for
//! `[announce] drain_idle` ([`Advertiser::traffic`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

use crate::{netlink::Netlink, services::ServiceTable};

/// How long an announced VIP's address lives unless renewed.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often announced VIPs' leases are renewed.
pub const RENEWAL: Duration = Duration::from_secs(2);

/// Why a VIP is not announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "services")]
pub enum Why {
    /// These announced services on it have no quorum here.
    NoQuorum(Vec<String>),
    /// These announced services on it are not forwarded here.
    Inactive(Vec<String>),
    /// The node drains (`xdp-lb drain`).
    Draining,
    /// The daemon stops.
    Stopping,
    /// No virtual server announces it any more (a reload).
    NotConfigured,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NoQuorum(s) => write!(f, "quorum lost: {}", s.join(", ")),
            Why::Inactive(s) => write!(f, "not forwarded here: {}", s.join(", ")),
            Why::Draining => f.write_str("draining"),
            Why::Stopping => f.write_str("stopping"),
            Why::NotConfigured => f.write_str("no longer announced by the configuration"),
        }
    }
}

/// What [`Advertiser`] decided for one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Announce(IpAddr),
    Withdraw(IpAddr, Why),
}

/// Whether the node serves, drains or stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serving,
    Draining(Drain),
    Stopping,
}

/// A drain's progress: when the VIPs were withdrawn, and the last traffic seen since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Drain {
    since: Instant,
    /// The announced services' packets when last counted, and when they last grew.
    packets: Option<u64>,
    last_traffic: Instant,
    done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct VipState {
    announced: bool,
    /// Why not, while not announced.
    why: Option<Why>,
    since: Instant,
    /// Announcements and withdrawals so far.
    changes: u64,
}

/// The announcement decision: see the module's documentation.
#[derive(Debug)]
pub struct Advertiser {
    vips: BTreeMap<IpAddr, VipState>,
    mode: Mode,
}

impl Default for Advertiser {
    fn default() -> Self {
        Advertiser {
            vips: BTreeMap::new(),
            mode: Mode::Serving,
        }
    }
}

impl Advertiser {
    /// Decides every VIP again from `table` (`active(i)`: service `i` is forwarded
    /// here) and returns what changed. A VIP is announced while every service with
    /// `announce = true` on it has quorum and is active, and the node neither drains
    /// nor stops; one no service announces any more is withdrawn and forgotten.
    pub fn apply(
        &mut self,
        table: &ServiceTable,
        active: impl Fn(usize) -> bool,
        now: Instant,
    ) -> Vec<Change> {
        // Per VIP: its announced services without quorum, and those not forwarded here.
        let mut problems: BTreeMap<IpAddr, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for (index, svc) in table.services.iter().enumerate() {
            if !svc.announce {
                continue;
            }
            let mut vips: Vec<IpAddr> = svc.members.iter().map(|m| m.vip).collect();
            vips.sort();
            vips.dedup();
            for vip in vips {
                let (no_quorum, inactive) = problems.entry(vip).or_default();
                if !svc.quorum_ok {
                    no_quorum.push(svc.name.clone());
                }
                if !active(index) {
                    inactive.push(svc.name.clone());
                }
            }
        }
        // Quorum is reported first: it is what operators act on.
        let wanted: BTreeMap<IpAddr, Result<(), Why>> = problems
            .into_iter()
            .map(|(vip, (no_quorum, inactive))| {
                let verdict = if !no_quorum.is_empty() {
                    Err(Why::NoQuorum(no_quorum))
                } else if !inactive.is_empty() {
                    Err(Why::Inactive(inactive))
                } else {
                    Ok(())
                };
                (vip, verdict)
            })
            .collect();
        let mode_block = match self.mode {
            Mode::Serving => None,
            Mode::Draining(_) => Some(Why::Draining),
            Mode::Stopping => Some(Why::Stopping),
        };
        let mut changes = Vec::new();
        for (vip, verdict) in &wanted {
            let verdict = match (&mode_block, verdict) {
                (Some(why), _) => Err(why.clone()),
                (None, v) => v.clone(),
            };
            let state = self.vips.entry(*vip).or_insert(VipState {
                announced: false,
                why: None,
                since: now,
                changes: 0,
            });
            match verdict {
                Ok(()) if !state.announced => {
                    *state = VipState {
                        announced: true,
                        why: None,
                        since: now,
                        changes: state.changes + 1,
                    };
                    changes.push(Change::Announce(*vip));
                }
                Ok(()) => {}
                Err(why) if state.announced => {
                    *state = VipState {
                        announced: false,
                        why: Some(why.clone()),
                        since: now,
                        changes: state.changes + 1,
                    };
                    changes.push(Change::Withdraw(*vip, why));
                }
                Err(why) => state.why = Some(why),
            }
        }
        let gone: Vec<IpAddr> = self
            .vips
            .keys()
            .filter(|v| !wanted.contains_key(v))
            .copied()
            .collect();
        for vip in gone {
            if self.vips.remove(&vip).is_some_and(|s| s.announced) {
                changes.push(Change::Withdraw(vip, Why::NotConfigured));
            }
        }
        changes
    }

    /// Starts a drain (nothing if one runs): every VIP is withdrawn (see
    /// [`Advertiser::apply`], whose changes this returns) until [`Advertiser::resume`].
    pub fn drain(
        &mut self,
        table: &ServiceTable,
        active: impl Fn(usize) -> bool,
        now: Instant,
    ) -> Vec<Change> {
        if self.mode == Mode::Serving {
            self.mode = Mode::Draining(Drain {
                since: now,
                packets: None,
                last_traffic: now,
                done: false,
            });
        }
        self.apply(table, active, now)
    }

    /// Ends a drain: VIPs are announced again as their quorum allows.
    pub fn resume(
        &mut self,
        table: &ServiceTable,
        active: impl Fn(usize) -> bool,
        now: Instant,
    ) -> Vec<Change> {
        if matches!(self.mode, Mode::Draining(_)) {
            self.mode = Mode::Serving;
        }
        self.apply(table, active, now)
    }

    /// The daemon stops: every VIP is withdrawn, for good.
    pub fn stop(
        &mut self,
        table: &ServiceTable,
        active: impl Fn(usize) -> bool,
        now: Instant,
    ) -> Vec<Change> {
        self.mode = Mode::Stopping;
        self.apply(table, active, now)
    }

    /// The announced services' packet counter (summed), while draining: the drain is
    /// complete once it has not grown for `idle`. Returns the drain's outcome the first
    /// time it is complete.
    pub fn traffic(&mut self, packets: u64, now: Instant, idle: Duration) -> Option<Drained> {
        let Mode::Draining(drain) = &mut self.mode else {
            return None;
        };
        if drain.packets.is_some_and(|p| p != packets) {
            drain.last_traffic = now;
        }
        drain.packets = Some(packets);
        if drain.done || now.duration_since(drain.last_traffic) < idle {
            return None;
        }
        drain.done = true;
        Some(Drained {
            last_traffic_after: drain.last_traffic.duration_since(drain.since),
            took: now.duration_since(drain.since),
        })
    }

    /// Whether a drain runs (complete or not).
    pub fn draining(&self) -> bool {
        matches!(self.mode, Mode::Draining(_))
    }

    /// The VIPs announced now.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.vips
            .iter()
            .filter(|(_, s)| s.announced)
            .map(|(v, _)| *v)
            .collect()
    }

    /// Every VIP's state and the drain's, for `/status`.
    pub fn status(&self, now: Instant) -> (Vec<AnnouncementStatus>, DrainStatus) {
        let vips = self
            .vips
            .iter()
            .map(|(vip, s)| AnnouncementStatus {
                vip: *vip,
                announced: s.announced,
                why_not: s.why.as_ref().map(ToString::to_string),
                since_seconds: now.duration_since(s.since).as_secs_f64(),
                changes: s.changes,
            })
            .collect();
        let drain = match self.mode {
            Mode::Serving => DrainStatus::default(),
            Mode::Stopping => DrainStatus {
                state: DrainState::Stopping,
                ..DrainStatus::default()
            },
            Mode::Draining(d) => DrainStatus {
                state: if d.done {
                    DrainState::Drained
                } else {
                    DrainState::Draining
                },
                since_seconds: Some(now.duration_since(d.since).as_secs_f64()),
                last_traffic_after_seconds: Some(
                    d.last_traffic.duration_since(d.since).as_secs_f64(),
                ),
            },
        };
        (vips, drain)
    }
}

/// A complete drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// From the withdrawal to the last packet the announced services saw.
    pub last_traffic_after: Duration,
    /// From the withdrawal to now (the last packet plus `drain_idle`).
    pub took: Duration,
}

/// One VIP in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnouncementStatus {
    pub vip: IpAddr,
    pub announced: bool,
    /// Why it is not announced.
    pub why_not: Option<String>,
    /// Since its last change (or since the start).
    pub since_seconds: f64,
    /// Announcements and withdrawals so far.
    pub changes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainState {
    #[default]
    Serving,
    /// Withdrawn; traffic still arrives (or stopped less than `drain_idle` ago).
    Draining,
    /// Withdrawn, and no packet for `drain_idle`.
    Drained,
    Stopping,
}

impl std::fmt::Display for DrainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DrainState::Serving => "serving",
            DrainState::Draining => "draining",
            DrainState::Drained => "drained",
            DrainState::Stopping => "stopping",
        })
    }
}

/// The node's drain, in `/status` and the answer to `POST /drain`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub state: DrainState,
    /// Since the VIPs were withdrawn.
    pub since_seconds: Option<f64>,
    /// From the withdrawal to the last packet seen so far.
    pub last_traffic_after_seconds: Option<f64>,
}

/// The task that holds the announced VIPs' addresses on the interface: it is given
/// the set to announce ([`Announcer::set`]), adds and removes addresses to match, and
/// renews the leases of those it holds every [`RENEWAL`].
pub struct Announcer {
    wanted: watch::Sender<BTreeSet<IpAddr>>,
    task: JoinHandle<()>,
}

impl Announcer {
    pub fn spawn(netlink: Netlink, interface: String) -> Announcer {
        let (wanted, rx) = watch::channel(BTreeSet::new());
        let task = tokio::spawn(hold(netlink, interface, rx));
        Announcer { wanted, task }
    }

    /// Announce exactly `vips` from now on.
    pub fn set(&self, vips: BTreeSet<IpAddr>) {
        self.wanted.send_replace(vips);
    }

    /// Withdraws every VIP and waits until the addresses are gone.
    pub async fn finish(self) {
        self.wanted.send_replace(BTreeSet::new());
        drop(self.wanted);
        let _ = self.task.await;
    }

    /// A handover to the next start: the addresses stay (leased), so the routes stay
    /// announced while the next start takes over.
    pub fn leave(self) {
        self.task.abort();
    }
}

fn prefix_len(vip: IpAddr) -> u8 {
    if vip.is_ipv4() { 32 } else { 128 }
}

/// The [`Announcer`]'s task: until the sender is dropped (then with every address
/// removed).
async fn hold(netlink: Netlink, interface: String, mut wanted: watch::Receiver<BTreeSet<IpAddr>>) {
    let mut held: BTreeSet<IpAddr> = BTreeSet::new();
    let mut ifindex: Option<u32> = None;
    let mut renew = tokio::time::interval(RENEWAL);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warnings = crate::log_limit::LogLimit::default();
    loop {
        let closed = tokio::select! {
            changed = wanted.changed() => changed.is_err(),
            _ = renew.tick() => false,
        };
        let target = if closed {
            BTreeSet::new()
        } else {
            wanted.borrow_and_update().clone()
        };
        let index = match ifindex {
            Some(i) => i,
            None => match netlink.link_index(&interface).await {
                Ok(i) => *ifindex.insert(i),
                Err(e) => {
                    if !target.is_empty() {
                        error!(%interface, "cannot announce VIPs: {e}");
                    }
                    if closed {
                        return;
                    }
                    continue;
                }
            },
        };
        for vip in held.difference(&target).copied().collect::<Vec<_>>() {
            match netlink.remove_address(index, vip).await {
                Ok(_) => {
                    held.remove(&vip);
                    info!(%vip, %interface, "VIP withdrawn: its address is off the interface, the routing daemon withdraws the route");
                }
                Err(e) => error!(%vip, %interface, "cannot withdraw VIP: {e}"),
            }
        }
        for &vip in &target {
            let secs = LEASE.as_secs() as u32;
            match netlink
                .lease_address(index, vip, prefix_len(vip), None, None, secs)
                .await
            {
                Ok(()) => {
                    if held.insert(vip) {
                        info!(%vip, %interface, "VIP announced: its address is on the interface for the routing daemon");
                    }
                }
                Err(e) => {
                    if let Some(suppressed) = warnings.allow(std::time::Instant::now()) {
                        warn!(%vip, %interface, suppressed, "cannot announce VIP: {e}");
                    }
                }
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
