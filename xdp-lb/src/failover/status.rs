//! A live view of every instance, for the status API and metrics: the engine writes an
//! instance's entry after each event it handled, readers take a copy. Packets no
//! instance could be given (too short to name a VRID, or for a VRID nobody here uses)
//! are counted per socket.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use xdp_lb_vrrp::{Clash, DropReason, Instance, State};

/// A fixed name (a state, a reason) in the daemon; owned once read back by a client.
pub type Label = std::borrow::Cow<'static, str>;

/// One instance as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    /// Its sync group, if any.
    pub group: Option<String>,
    pub interface: String,
    pub vrid: u8,
    /// `MASTER`, `BACKUP`, `FAULT` or `STOP`.
    pub state: Label,
    /// Effective priority (configured, adjusted by tracking).
    pub priority: u8,
    pub base_priority: u8,
    /// The master we last heard (address, priority); ourselves while MASTER.
    pub master: Option<IpAddr>,
    pub master_priority: Option<u8>,
    pub adverts_received: u64,
    pub adverts_sent: u64,
    /// Priority-0 adverts (a MASTER stepping down) received and sent.
    pub priority_zero_received: u64,
    pub priority_zero_sent: u64,
    pub became_master: u64,
    pub split_brain_adverts: u64,
    /// Dropped packets by reason (non-zero ones).
    pub drops: BTreeMap<Label, u64>,
    /// Adverts from a differently configured peer, by what differs (non-zero ones).
    pub clashes: BTreeMap<Label, u64>,
    /// The last time a peer's advert took MASTER from this node.
    #[serde(default)]
    pub last_takeover: Option<Takeover>,
    /// Times another MAC announced or answered for one of its VIPs while MASTER (ARP:
    /// seen even when VRRP is blocked both ways), and the last one.
    #[serde(default)]
    pub vip_conflicts: u64,
    #[serde(default)]
    pub last_vip_conflict: Option<VipConflict>,
}

/// Another MAC announcing or answering for a VIP this node holds as MASTER.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipConflict {
    pub vip: IpAddr,
    pub mac: String,
}

/// A peer's advert made this MASTER step down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    pub peer: IpAddr,
    pub priority: u8,
    /// Its first advert this node ever heard: a node nobody expected (a spoofed advert,
    /// a rogue router, another cluster) rather than the usual peer.
    pub first_heard: bool,
}

impl InstanceStatus {
    pub(crate) fn of(
        name: &str,
        group: Option<&str>,
        interface: &str,
        fsm: &Instance,
        ours: IpAddr,
        last_takeover: Option<Takeover>,
        (vip_conflicts, last_vip_conflict): (u64, Option<VipConflict>),
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
            state: state_label(state).into(),
            priority: fsm.priority(),
            base_priority: fsm.base_priority(),
            master: master.map(|m| m.0),
            master_priority: master.map(|m| m.1),
            adverts_received: stats.adverts_received,
            adverts_sent: stats.adverts_sent,
            priority_zero_received: stats.priority_zero_received,
            priority_zero_sent: stats.priority_zero_sent,
            became_master: stats.became_master,
            split_brain_adverts: stats.split_brain_adverts,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().into(), stats.drops(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            clashes: Clash::ALL
                .iter()
                .map(|c| (c.name().into(), stats.clashes(*c)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            last_takeover,
            vip_conflicts,
            last_vip_conflict,
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

/// One VRRP socket (an interface and address family): what arrived on it that no
/// instance was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStatus {
    pub interface: String,
    /// `ipv4` or `ipv6`.
    pub family: Label,
    /// Adverts for a VRID that none of our instances on this socket uses (another
    /// router group on the segment: normal, and not a drop).
    pub other_vrid: u64,
    /// Packets too broken to name a VRID, by reason (non-zero ones).
    pub drops: BTreeMap<Label, u64>,
}

impl SocketStatus {
    pub(crate) fn of(
        interface: &str,
        v6: bool,
        other_vrid: u64,
        drops: &[u64; DropReason::ALL.len()],
    ) -> SocketStatus {
        SocketStatus {
            interface: interface.to_owned(),
            family: if v6 { "ipv6" } else { "ipv4" }.into(),
            other_vrid,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().into(), drops[r.index()]))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Where the engine publishes [`InstanceStatus`]es and [`SocketStatus`]es; cheap to
/// clone and share.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    instances: Arc<Mutex<BTreeMap<String, InstanceStatus>>>,
    sockets: Arc<Mutex<BTreeMap<(String, Label), SocketStatus>>>,
}

impl StatusBoard {
    /// Every instance, by name.
    pub fn snapshot(&self) -> Vec<InstanceStatus> {
        lock(&self.instances).values().cloned().collect()
    }

    /// Every socket, by interface and family.
    pub fn sockets(&self) -> Vec<SocketStatus> {
        lock(&self.sockets).values().cloned().collect()
    }

    pub(crate) fn set(&self, status: InstanceStatus) {
        lock(&self.instances).insert(status.name.clone(), status);
    }

    pub(crate) fn set_socket(&self, status: SocketStatus) {
        lock(&self.sockets).insert((status.interface.clone(), status.family.clone()), status);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it cannot leave a half-written map: inserts are whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
