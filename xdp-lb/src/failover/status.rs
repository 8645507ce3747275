//! A live view of every instance, for the status API and metrics: the engine writes an
//! instance's entry after each event it handled, readers take a copy.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use xdp_lb_vrrp::{Clash, DropReason, Instance, State};

/// One instance as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    /// Its sync group, if any.
    pub group: Option<String>,
    pub interface: String,
    pub vrid: u8,
    /// `MASTER`, `BACKUP`, `FAULT` or `STOP`.
    pub state: &'static str,
    /// Effective priority (configured, adjusted by tracking).
    pub priority: u8,
    pub base_priority: u8,
    /// The master we last heard (address, priority); ourselves while MASTER.
    pub master: Option<IpAddr>,
    pub master_priority: Option<u8>,
    pub adverts_received: u64,
    pub adverts_sent: u64,
    pub became_master: u64,
    pub split_brain_adverts: u64,
    /// Dropped packets by reason (non-zero ones).
    pub drops: BTreeMap<&'static str, u64>,
    /// Adverts from a differently configured peer, by what differs (non-zero ones).
    pub clashes: BTreeMap<&'static str, u64>,
}

impl InstanceStatus {
    pub(crate) fn of(
        name: &str,
        group: Option<&str>,
        interface: &str,
        fsm: &Instance,
        ours: IpAddr,
    ) -> InstanceStatus {
        let stats = fsm.stats();
        let state = fsm.state();
        let master = match state {
            State::Master => Some((ours, fsm.priority())),
            _ => fsm.master(),
        };
        InstanceStatus {
            name: name.to_owned(),
            group: group.map(str::to_owned),
            interface: interface.to_owned(),
            vrid: fsm.config().vrid,
            state: state_label(state),
            priority: fsm.priority(),
            base_priority: fsm.base_priority(),
            master: master.map(|m| m.0),
            master_priority: master.map(|m| m.1),
            adverts_received: stats.adverts_received,
            adverts_sent: stats.adverts_sent,
            became_master: stats.became_master,
            split_brain_adverts: stats.split_brain_adverts,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name(), stats.drops(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            clashes: Clash::ALL
                .iter()
                .map(|c| (c.name(), stats.clashes(*c)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// keepalived's names for the states (notify arguments, status).
pub(crate) fn state_label(state: State) -> &'static str {
    match state {
        State::Initialize => "STOP",
        other => other.name(),
    }
}

/// Where the engine publishes [`InstanceStatus`]es; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<String, InstanceStatus>>>);

impl StatusBoard {
    /// Every instance, by name.
    pub fn snapshot(&self) -> Vec<InstanceStatus> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn set(&self, status: InstanceStatus) {
        self.lock().insert(status.name.clone(), status);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, InstanceStatus>> {
        // A panic while holding it cannot leave a half-written map: inserts are whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
