//! NAT state sync (keepalived's `lvs_sync_daemon`): the MASTER of the `[sync]
//! instance` sends its NAT connections to its peers, which install them in their own
//! flow and NAT reply tables, so that when one of them becomes MASTER the existing
//! connections keep their real server and their replies are translated back.
//!
//! How the MASTER learns of flows: it walks its NAT reply table every `[sync]
//! interval` (one entry per NAT connection, holding everything a peer needs: client,
//! VIP, real server, service, state, idle time, the client's next-hop MAC), on a
//! thread of its own. The XDP program is not changed (its stack is full, and the hot
//! path pays nothing); the price is that a connection opened less than one interval
//! before the MASTER dies is not on the peer, and that a walk costs the daemon a few
//! microseconds per entry (one syscall pair each).
//!
//! What is sent: an entry that is new, whose state changed (FIN/RST), or that saw
//! traffic and was last sent more than `refresh` ago (a quarter of the shortest NAT
//! timeout, at most 30 s), so the peer's copy never ages out while the connection
//! lives; at most `rate` entries per second (new ones first, the rest wait for the
//! next round). Every ten refresh periods (5 minutes by default) everything is sent
//! again, so a peer that restarted without its pinned state, or lost a datagram, has
//! every connection again within that time. Messages are the datagrams of [`wire`],
//! signed with HMAC-SHA256.
//!
//! How a peer installs: a message is refused whole if it is not from a configured
//! peer, malformed, not authenticated, replayed (accepted before from that peer, or
//! from an earlier boot or too far behind: see `Window`), from a service table other
//! than ours (the fingerprint of `ServiceTable::id_map`, the ids the entries use), for
//! an interface we do not have, or while we are MASTER ourselves; an entry alone is
//! refused if it does not match our table (service, VIP, real server and id) or is
//! already idle past its timeout. Node-local fields are translated: the client-side
//! interface is ours of the same name (its ifindex and MAC); the client's next-hop MAC
//! comes from the entry (the peers share the client segment, VRRP needs that, so the
//! next hop is the same router or client for both); the idle time becomes a last-seen
//! time on our clock. The daemon's own collection of idle entries ages them out as it
//! does its own.
//!
//! Everything here is plain data in and decisions out, tested without root; the
//! daemon (`daemon/syncing.rs`) walks the maps, writes them and owns the socket
//! ([`node`]).

pub mod node;
pub mod wire;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use xdp_lb_common::{ClientHop, FlowKey, FlowValue, IPPROTO_TCP, IPPROTO_UDP, NatValue};

use crate::{
    config::{Forwarding, NatTimeouts},
    services::{ServiceTable, addr16},
};
pub use wire::{Entry, Header, Key, Message, WireError};

/// How often the idle-entry refresh resends a busy connection (a quarter of the
/// shortest timeout, between 1 s and 30 s).
pub fn refresh_period(t: &NatTimeouts) -> Duration {
    (t.tcp.min(t.tcp_fin).min(t.udp) / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// What was last sent of a connection.
#[derive(Debug, Clone, Copy)]
struct Sent {
    last_seen_ns: u64,
    flags: u16,
    at_ns: u64,
}

/// The sending side's memory: what each peer has been told, the sequence, and the
/// rate budget.
#[derive(Debug)]
pub struct Sender {
    key: Key,
    boot: u64,
    sequence: u64,
    sent: HashMap<FlowKey, Sent>,
    refresh_ns: u64,
    /// When everything was last made due again.
    full_at_ns: Option<u64>,
    rate: u64,
    /// Entries that may go now (a token bucket of one interval's worth).
    tokens: f64,
    burst: f64,
    last_fill_ns: Option<u64>,
}

/// One round's output.
#[derive(Debug, Default)]
pub struct Round {
    pub datagrams: Vec<Vec<u8>>,
    pub entries: usize,
    /// Due but left for the next round by the rate limit.
    pub deferred: usize,
    /// Reply entries that cannot be described (an interface or real server this
    /// node no longer has, e.g. during a reload).
    pub skipped: usize,
}

/// What the daemon knows about its side of a connection, to describe it.
pub struct SendContext<'a> {
    pub fingerprint: u64,
    /// Our client-side interfaces' names by ifindex.
    pub interfaces: &'a HashMap<u32, String>,
    /// Real server ids by (service id, address, port).
    pub backends: &'a HashMap<(u32, Ipv4Addr, u16), u32>,
    pub now_ns: u64,
}

/// The (service id, address, port) → real server id index a [`SendContext`] needs.
pub fn backend_index(table: &ServiceTable) -> HashMap<(u32, Ipv4Addr, u16), u32> {
    table
        .backends
        .iter()
        .filter_map(|b| match b.addr {
            IpAddr::V4(a) => Some(((table.services[b.service].id, a, b.port), b.id.0)),
            IpAddr::V6(_) => None,
        })
        .collect()
}

impl Sender {
    /// `boot` distinguishes this run's sequence from an earlier one's (Unix ms of the
    /// start); `rate` entries per second at most, in rounds `interval` apart.
    pub fn new(key: Key, boot: u64, refresh: Duration, rate: u64, interval: Duration) -> Sender {
        let burst = (rate as f64 * interval.as_secs_f64()).max(wire::MAX_ENTRIES as f64);
        Sender {
            key,
            boot,
            sequence: 0,
            sent: HashMap::new(),
            refresh_ns: refresh.as_nanos() as u64,
            full_at_ns: None,
            rate,
            tokens: burst,
            burst,
            last_fill_ns: None,
        }
    }

    /// Forgets what peers were told, so the next round sends everything again (this
    /// node just became MASTER: a peer may have missed it all).
    pub fn reset(&mut self) {
        self.sent.clear();
        self.full_at_ns = None;
    }

    /// How often everything is sent again: ten refresh periods.
    fn full_every_ns(&self) -> u64 {
        self.refresh_ns.saturating_mul(10)
    }

    /// One round over the reply table `replies` (key as the real server sends, value):
    /// the datagrams to send to every peer.
    pub fn round(&mut self, replies: &[(FlowKey, NatValue)], cx: &SendContext<'_>) -> Round {
        let now = cx.now_ns;
        if let Some(last) = self.last_fill_ns {
            let elapsed = now.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst);
        }
        self.last_fill_ns = Some(now);
        match self.full_at_ns {
            Some(at) if now.saturating_sub(at) >= self.full_every_ns() => {
                self.sent.clear();
                self.full_at_ns = Some(now);
            }
            Some(_) => {}
            None => self.full_at_ns = Some(now),
        }
        // Due entries, new ones first, then state changes, then refreshes.
        let mut due: Vec<(u8, &FlowKey, &NatValue)> = replies
            .iter()
            .filter_map(|(k, v)| {
                let rank = match self.sent.get(k) {
                    None => 0,
                    Some(s) if s.flags != v.flags => 1,
                    Some(s)
                        if s.last_seen_ns != v.last_seen_ns
                            && now.saturating_sub(s.at_ns) >= self.refresh_ns =>
                    {
                        2
                    }
                    Some(_) => return None,
                };
                Some((rank, k, v))
            })
            .collect();
        due.sort_by_key(|(rank, _, _)| *rank);
        let budget = self.tokens.max(0.0) as usize;
        let mut round = Round {
            deferred: due.len().saturating_sub(budget),
            ..Round::default()
        };
        let mut by_interface: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
        for (_, k, v) in due.into_iter().take(budget) {
            // Remembered even when it cannot be described (a real server a reload
            // removed), so it does not take the budget of every round until it expires.
            self.sent.insert(
                *k,
                Sent {
                    last_seen_ns: v.last_seen_ns,
                    flags: v.flags,
                    at_ns: now,
                },
            );
            let described = describe(k, v, cx).zip(cx.interfaces.get(&v.client.ifindex));
            let Some((entry, name)) = described else {
                round.skipped += 1;
                continue;
            };
            by_interface.entry(name).or_default().push(entry);
        }
        // Connections gone from the table are forgotten.
        if self.sent.len() > replies.len() {
            let live: std::collections::HashSet<&FlowKey> =
                replies.iter().map(|(k, _)| k).collect();
            self.sent.retain(|k, _| live.contains(k));
        }
        for (interface, entries) in by_interface {
            for chunk in entries.chunks(wire::MAX_ENTRIES) {
                self.sequence += 1;
                let header = Header {
                    fingerprint: cx.fingerprint,
                    boot: self.boot,
                    sequence: self.sequence,
                    interface: interface.to_owned(),
                };
                round
                    .datagrams
                    .push(wire::encode(&self.key, &header, chunk));
                round.entries += chunk.len();
            }
        }
        self.tokens -= round.entries as f64;
        round
    }
}

/// The wire entry of one reply-table entry, if it is an IPv4 NAT connection of a
/// real server we know (NAT66 connections are not synced: the format carries IPv4).
fn describe(k: &FlowKey, v: &NatValue, cx: &SendContext<'_>) -> Option<Entry> {
    let is_v4 = |a: &[u8; 16]| std::net::Ipv6Addr::from(*a).to_ipv4_mapped().is_some();
    if !(is_v4(&k.src) && is_v4(&k.dst)) {
        return None;
    }
    let v4 = |a: &[u8; 16]| Ipv4Addr::new(a[12], a[13], a[14], a[15]);
    let real = v4(&k.src);
    let real_port = u16::from_be(k.sport_be);
    let backend = *cx.backends.get(&(v.service, real, real_port))?;
    let idle_ms = cx.now_ns.saturating_sub(v.last_seen_ns) / 1_000_000;
    Some(Entry {
        client: v4(&k.dst),
        vip: v4(&v.vip),
        real,
        client_port: u16::from_be(k.dport_be),
        vport: u16::from_be(v.vport_be),
        real_port,
        proto: k.proto,
        flags: if v.flags & xdp_lb_common::FLOW_F_CLOSING != 0 {
            wire::FLAG_CLOSING
        } else {
            0
        },
        service: v.service,
        backend,
        idle_ms: idle_ms.min(u64::from(u32::MAX)) as u32,
        client_mac: v.client.mac,
    })
}

/// Why a message or an entry was not installed: a counter label and the detail the
/// log line gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

/// The receiving side's memory: the key, who may send, and each peer's replay window.
#[derive(Debug)]
pub struct Receiver {
    key: Key,
    /// Empty: any sender (multicast without `peers`), the HMAC being the gate.
    peers: Vec<IpAddr>,
    windows: HashMap<IpAddr, Window>,
}

/// RFC 4303's anti-replay window: the highest (boot, sequence) accepted from a peer
/// and which of the 64 sequences up to it were seen, so a datagram the network
/// reordered is still accepted once, and none twice.
#[derive(Debug, Clone, Copy)]
struct Window {
    boot: u64,
    top: u64,
    /// Bit i: sequence `top - i` was accepted.
    seen: u64,
}

impl Window {
    const SIZE: u64 = 64;

    /// Whether (boot, seq) is new; if so it is recorded.
    fn accept(&mut self, boot: u64, seq: u64) -> bool {
        if boot > self.boot {
            *self = Window {
                boot,
                top: seq,
                seen: 1,
            };
            return true;
        }
        if boot < self.boot {
            return false;
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= Self::SIZE {
                0
            } else {
                self.seen << shift
            } | 1;
            self.top = seq;
            return true;
        }
        let back = self.top - seq;
        if back >= Self::SIZE || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

impl Receiver {
    pub fn new(key: Key, peers: Vec<IpAddr>) -> Receiver {
        Receiver {
            key,
            peers,
            windows: HashMap::new(),
        }
    }

    /// A datagram from `from`: the message if it is from a peer, well formed,
    /// authentic and not accepted before (see [`Window`]).
    pub fn open(&mut self, from: IpAddr, datagram: &[u8]) -> Result<Message, Refusal> {
        if !self.peers.is_empty() && !self.peers.contains(&from) {
            return Err(Refusal::new(
                "unknown_peer",
                format!("{from} is none of `[sync] peers`"),
            ));
        }
        let msg = wire::decode(&self.key, datagram)
            .map_err(|e| Refusal::new(e.reason(), e.to_string()))?;
        let (boot, seq) = (msg.header.boot, msg.header.sequence);
        let window = self.windows.entry(from).or_insert(Window {
            boot: 0,
            top: 0,
            seen: 0,
        });
        let before = *window;
        if !window.accept(boot, seq) {
            return Err(Refusal::new(
                "replayed",
                format!(
                    "boot {boot} sequence {seq}: accepted before, or older than the window \
                     (last accepted boot {} sequence {})",
                    before.boot, before.top
                ),
            ));
        }
        Ok(msg)
    }
}

/// What the receiving node knows to translate entries into its own terms.
pub struct InstallContext<'a> {
    pub table: &'a ServiceTable,
    pub fingerprint: u64,
    /// Our interfaces: name → (ifindex, MAC).
    pub interfaces: &'a HashMap<String, (u32, [u8; 6])>,
    pub timeouts: NatTimeouts,
    pub now_ns: u64,
}

/// One connection to write: its flow entry and its reply entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Install {
    pub flow: (FlowKey, FlowValue),
    pub reply: (FlowKey, NatValue),
}

/// An accepted message's entries in our terms, or why the whole message is refused;
/// with the entries refused alone.
pub fn plan_install(
    msg: &Message,
    cx: &InstallContext<'_>,
) -> Result<(Vec<Install>, Vec<Refusal>), Refusal> {
    if msg.header.fingerprint != cx.fingerprint {
        return Err(Refusal::new(
            "service_table",
            format!(
                "the sender's virtual and real servers (or their ids) differ from ours \
                 (fingerprint {:016x}, ours {:016x}): configure the same services on both \
                 and restart the later one",
                msg.header.fingerprint, cx.fingerprint
            ),
        ));
    }
    let Some(&(ifindex, lb_mac)) = cx.interfaces.get(&msg.header.interface) else {
        return Err(Refusal::new(
            "unknown_interface",
            format!(
                "entries of client-side interface {:?}, which is none of ours \
                 (`[dataplane] interfaces`): name it alike on every node",
                msg.header.interface
            ),
        ));
    };
    let mut installs = Vec::new();
    let mut refused = Vec::new();
    for e in &msg.entries {
        match install_one(e, cx, ifindex, lb_mac) {
            Ok(i) => installs.push(i),
            Err(r) => refused.push(r),
        }
    }
    Ok((installs, refused))
}

fn install_one(
    e: &Entry,
    cx: &InstallContext<'_>,
    ifindex: u32,
    lb_mac: [u8; 6],
) -> Result<Install, Refusal> {
    let what = || {
        format!(
            "{}:{} -> {}:{} via {}:{}",
            e.client, e.client_port, e.vip, e.vport, e.real, e.real_port
        )
    };
    let proto = match e.proto {
        IPPROTO_TCP | IPPROTO_UDP => e.proto,
        p => {
            return Err(Refusal::new(
                "malformed",
                format!("{}: protocol {p}", what()),
            ));
        }
    };
    let c = e.client;
    if c.is_unspecified()
        || c.is_loopback()
        || c.is_multicast()
        || c.is_broadcast()
        || e.client_port == 0
        || e.client_mac[0] & 1 != 0
        || e.client_mac == [0; 6]
        || e.flags & !wire::FLAG_CLOSING != 0
    {
        return Err(Refusal::new(
            "malformed",
            format!("{}: impossible client, MAC or flags", what()),
        ));
    }
    let table = cx.table;
    let inconsistent = |why: &str| Refusal::new("inconsistent", format!("{}: {why}", what()));
    let (si, svc) = table
        .services
        .iter()
        .enumerate()
        .find(|(_, s)| s.id == e.service)
        .ok_or_else(|| inconsistent("no service has its id"))?;
    if svc.forwarding != Forwarding::Nat {
        return Err(inconsistent("its service is not NAT"));
    }
    let member = svc
        .members
        .iter()
        .any(|m| m.vip == IpAddr::V4(e.vip) && m.port == e.vport && m.key.proto == proto);
    if !member {
        return Err(inconsistent("the VIP:port is not its service's"));
    }
    table
        .backends
        .iter()
        .find(|b| {
            b.id.0 == e.backend
                && b.service == si
                && b.addr == IpAddr::V4(e.real)
                && b.port == e.real_port
        })
        .ok_or_else(|| inconsistent("no real server of its service has that id and address"))?;
    let closing = if e.flags & wire::FLAG_CLOSING != 0 {
        xdp_lb_common::FLOW_F_CLOSING
    } else {
        0
    };
    let timeout = cx.timeouts.for_entry(proto, closing);
    let idle = Duration::from_millis(u64::from(e.idle_ms));
    if idle >= timeout {
        return Err(Refusal::new(
            "expired",
            format!("{}: idle {idle:?}, past its timeout", what()),
        ));
    }
    // On our clock; never 0, which the collector reads as "not aging".
    let last_seen_ns = cx.now_ns.saturating_sub(idle.as_nanos() as u64).max(1);
    let client = addr16(IpAddr::V4(e.client));
    let vip = addr16(IpAddr::V4(e.vip));
    let real = addr16(IpAddr::V4(e.real));
    // Our own side: the interface of the peer's name, and its MAC.
    let hop = ClientHop {
        mac: e.client_mac,
        lb_mac,
        ifindex,
    };
    Ok(Install {
        flow: (
            FlowKey {
                src: client,
                dst: vip,
                sport_be: e.client_port.to_be(),
                dport_be: e.vport.to_be(),
                proto,
                _pad: [0; 3],
            },
            FlowValue {
                backend: e.backend,
                // A configured service's id (found above): below MAX_SERVICES.
                service: e.service as u16,
                last_seen_ns,
                flags: closing,
                client: hop,
            },
        ),
        reply: (
            FlowKey {
                src: real,
                dst: client,
                sport_be: e.real_port.to_be(),
                dport_be: e.client_port.to_be(),
                proto,
                _pad: [0; 3],
            },
            NatValue {
                vip,
                vport_be: e.vport.to_be(),
                _pad: [0; 2],
                client: hop,
                _pad2: 0,
                last_seen_ns,
                flags: closing,
                _pad3: 0,
                service: e.service,
            },
        ),
    })
}

/// The sync state for `xdp-lb status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The VRRP instance whose MASTER sends.
    pub instance: String,
    /// `sending` (MASTER) or `receiving`.
    pub role: String,
    pub port: u16,
    pub messages_sent: u64,
    pub entries_sent: u64,
    /// Due entries left for a later round by `rate`.
    pub entries_deferred: u64,
    pub send_errors: u64,
    pub last_sent_seconds_ago: Option<f64>,
    /// By peer address (or sender, without `peers`).
    pub peers: BTreeMap<String, PeerStatus>,
}

/// What one peer sent us.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub last_message_seconds_ago: Option<f64>,
    pub messages_received: u64,
    pub entries_received: u64,
    pub entries_installed: u64,
    /// Messages refused whole, by reason.
    pub messages_refused: BTreeMap<String, u64>,
    /// Entries refused alone, by reason.
    pub entries_refused: BTreeMap<String, u64>,
}

impl PeerStatus {
    pub fn refused(&self) -> u64 {
        self.messages_refused.values().sum::<u64>() + self.entries_refused.values().sum::<u64>()
    }
}
