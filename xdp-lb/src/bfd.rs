//! BFD through FRR's bfdd: node death seen in tens of milliseconds.
//!
//! xdp-lb speaks no BFD itself. bfdd (Debian's `frr` package) runs the sessions; xdp-lb
//! talks to it over bfdd's control socket (`bfdd --bfdctl PATH`, default
//! `/var/run/frr/bfdd.sock`): it asks for each `[bfd.NAME]` session (a `REQUEST_ADD`
//! with the peer and timers; bfdd keeps an existing one) and to be told of every
//! session's state changes (`NOTIFY` with the peer-state flag). Each message is an
//! 8-byte header (payload length, u32 big-endian; request id, u16; type, u8; version
//! 1, u8) and a JSON payload; bfdd's `bfdctl.h` defines it.
//!
//! A session whose state goes from up to down because bfdd stopped hearing the peer
//! (diagnostic 1, "control detection time expired") is a [`PeerDown`] for the VRRP
//! instances that name it in `peer_bfd`: a BACKUP whose master is that peer takes over
//! at once instead of waiting out the master-down interval. A peer that says it is
//! going down (diagnostic 3, e.g. its bfdd stopping) is not a death: VRRP's priority 0
//! or its timers decide. The sessions stay in bfdd when xdp-lb stops, so a restart of
//! xdp-lb on one node is nothing the other node sees.
//!
//! Sessions named in `track_bfd` change the instances' priority or FAULT them with
//! keepalived's weight rules: [`run`] reports each session going up or leaving up
//! ([`SessionUp`]; unknown, while bfdd is unreachable, is not up).
//!
//! [`Watch`] is the decision (which notification is a death), unit-tested without a
//! socket; [`run`] is the connection, re-established when bfdd restarts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::BfdSession;
use crate::failover::PeerDown;

/// Message types of bfdd's control protocol (`enum bc_msg_type`).
const RESPONSE: u8 = 1;
const REQUEST_ADD: u8 = 2;
const NOTIFY: u8 = 4;
/// The only protocol version.
const VERSION: u8 = 1;
/// `BCM_NOTIFY_PEER_STATE`: notify every session's state changes (bfdd copies the
/// u64 in its own byte order).
const NOTIFY_PEER_STATE: u64 = 1;
/// Longest payload accepted from bfdd: its JSON messages are a few hundred bytes.
const MAX_PAYLOAD: usize = 64 * 1024;
/// RFC 5880 diagnostic 1: no packet from the peer within the detection time.
const DIAG_DETECTION_TIME_EXPIRED: u8 = 1;
/// How long to wait before connecting again after bfdd went away.
const RECONNECT: Duration = Duration::from_secs(1);

/// One message of the control protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Message {
    /// The header and the payload, as bfdd reads them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.payload.len());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(self.kind);
        out.push(VERSION);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads one message; an error for a closed stream, another version or a payload
    /// over [`MAX_PAYLOAD`].
    pub async fn read(from: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<Message> {
        let mut header = [0u8; 8];
        from.read_exact(&mut header).await?;
        let len = u32::from_be_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let (id, kind, version) = (
            u16::from_be_bytes([header[4], header[5]]),
            header[6],
            header[7],
        );
        if version != VERSION {
            bail!("bfdd sent a message of protocol version {version} (expected {VERSION})");
        }
        if len > MAX_PAYLOAD {
            bail!("bfdd sent a message of {len} bytes (at most {MAX_PAYLOAD} expected)");
        }
        let mut payload = vec![0; len];
        from.read_exact(&mut payload).await?;
        Ok(Message { id, kind, payload })
    }
}

/// The `REQUEST_ADD` payload for `sessions`: bfdd's JSON peer configuration.
pub fn request_add(sessions: &[BfdSession]) -> String {
    let mut families: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for s in sessions {
        let mut peer = serde_json::json!({
            "peer-address": s.peer.to_string(),
            "receive-interval": s.min_rx.as_millis() as u64,
            "transmit-interval": s.min_tx.as_millis() as u64,
            "detect-multiplier": s.multiplier,
        });
        if let Some(local) = s.local {
            peer["local-address"] = local.to_string().into();
        }
        if let Some(interface) = &s.interface {
            peer["local-interface"] = interface.clone().into();
        }
        let family = if s.peer.is_ipv4() { "ipv4" } else { "ipv6" };
        families.entry(family).or_default().push(peer);
    }
    serde_json::to_string(&families).expect("JSON values serialize")
}

/// A status notification (`"op": "status"`), the fields xdp-lb uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    pub op: String,
    #[serde(rename = "peer-address")]
    pub peer: IpAddr,
    #[serde(rename = "local-address")]
    pub local: Option<IpAddr>,
    #[serde(rename = "local-interface")]
    pub interface: Option<String>,
    pub state: String,
    #[serde(default)]
    pub diagnostics: u8,
    #[serde(default, rename = "remote-diagnostics")]
    pub remote_diagnostics: u8,
}

/// What `status` and `/metrics` show of one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub name: String,
    pub peer: IpAddr,
    /// bfdd's word (`up`, `down`, `init`, `adm-down`), or `unknown` while bfdd is not
    /// connected.
    pub state: String,
    /// RFC 5880 diagnostic of the last change (0: none).
    pub diagnostics: u8,
    /// Seconds since the epoch of the last change seen.
    pub since: Option<u64>,
    /// Times the peer was seen to die (up → down, detection time expired).
    pub peer_down_events: u64,
}

/// A session (by its place in the config's `[bfd.NAME]` list) went up or left up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionUp {
    pub index: usize,
    pub up: bool,
}

/// The sessions' latest state, shared with the status API.
#[derive(Debug, Clone, Default)]
pub struct BfdBoard(Arc<Mutex<Vec<SessionStatus>>>);

impl BfdBoard {
    pub fn snapshot(&self) -> Vec<SessionStatus> {
        self.0.lock().expect("board lock").clone()
    }

    fn publish(&self, sessions: Vec<SessionStatus>) {
        *self.0.lock().expect("board lock") = sessions;
    }
}

/// The decision: which notification means a peer died.
#[derive(Debug)]
pub struct Watch {
    sessions: Vec<BfdSession>,
    status: Vec<SessionStatus>,
}

impl Watch {
    pub fn new(sessions: &[BfdSession]) -> Watch {
        let status = sessions
            .iter()
            .map(|s| SessionStatus {
                name: s.name.clone(),
                peer: s.peer,
                state: "unknown".into(),
                diagnostics: 0,
                since: None,
                peer_down_events: 0,
            })
            .collect();
        Watch {
            sessions: sessions.to_vec(),
            status,
        }
    }

    /// Takes one notification; a [`PeerDown`] when it says one of our sessions' peer
    /// stopped answering after the session was up. Notifications of other sessions
    /// (bfdd may run BGP's too) are ignored.
    pub fn notified(&mut self, n: &Notification) -> Option<PeerDown> {
        if n.op != "status" {
            return None;
        }
        let i = self.sessions.iter().position(|s| {
            s.peer == n.peer
                && (s.local.is_none() || s.local == n.local)
                && (s.interface.is_none() || s.interface == n.interface)
        })?;
        let (session, status) = (&self.sessions[i], &mut self.status[i]);
        if status.state == n.state {
            return None;
        }
        let was_up = status.state == "up";
        status.state = n.state.clone();
        status.diagnostics = n.diagnostics;
        status.since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        let died = was_up && n.state == "down" && n.diagnostics == DIAG_DETECTION_TIME_EXPIRED;
        if died {
            status.peer_down_events += 1;
            warn!(
                session = %session.name,
                peer = %session.peer,
                "bfd session down: {} stopped answering within the detection time",
                session.peer
            );
            return Some(PeerDown {
                session: session.name.clone(),
                peer: session.peer,
            });
        }
        if was_up {
            info!(
                session = %session.name,
                peer = %session.peer,
                state = %n.state,
                diagnostics = n.diagnostics,
                remote_diagnostics = n.remote_diagnostics,
                "bfd session left up without the peer going silent (it said so itself): \
                 no takeover, VRRP decides"
            );
        } else {
            info!(session = %session.name, peer = %session.peer, state = %n.state, "bfd session state");
        }
        None
    }

    /// bfdd went away: nothing is known until it is back.
    pub fn disconnected(&mut self) {
        for s in &mut self.status {
            s.state = "unknown".into();
        }
    }

    pub fn status(&self) -> Vec<SessionStatus> {
        self.status.clone()
    }

    /// Whether each session is up.
    pub fn up(&self) -> Vec<bool> {
        self.status.iter().map(|s| s.state == "up").collect()
    }
}

/// What changed between two [`Watch::up`]s.
fn up_changes(before: &[bool], after: &[bool]) -> Vec<SessionUp> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| b != a)
        .map(|(index, (_, &up))| SessionUp { index, up })
        .collect()
}

/// Where [`run`] reports.
pub struct Reports {
    /// Deaths, to the VRRP runtime.
    pub peer_down: mpsc::Sender<PeerDown>,
    /// Sessions going up or leaving up, to `track_bfd`.
    pub up: mpsc::Sender<SessionUp>,
}

/// Keeps the sessions in bfdd and reports deaths to the VRRP instances until
/// `shutdown`; reconnects (and asks for the sessions again) when bfdd restarts.
pub async fn run(
    sessions: Vec<BfdSession>,
    socket: PathBuf,
    reports: Reports,
    board: BfdBoard,
    shutdown: CancellationToken,
) {
    let mut watch = Watch::new(&sessions);
    board.publish(watch.status());
    let mut reported_outage = false;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = session(&sessions, &socket, &mut watch, &reports, &board, &mut reported_outage) => outcome,
        };
        let before = watch.up();
        watch.disconnected();
        board.publish(watch.status());
        for change in up_changes(&before, &watch.up()) {
            if reports.up.send(change).await.is_err() {
                return;
            }
        }
        if let Err(e) = outcome
            && !reported_outage
        {
            warn!(
                socket = %socket.display(),
                "bfd sessions unknown: {e:#}; is bfdd running with `--bfdctl {}`? Trying again \
                 every {}s; VRRP's own timers apply meanwhile",
                socket.display(),
                RECONNECT.as_secs()
            );
            reported_outage = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

/// One connection to bfdd, until it closes.
async fn session(
    sessions: &[BfdSession],
    socket: &Path,
    watch: &mut Watch,
    reports: &Reports,
    board: &BfdBoard,
    reported_outage: &mut bool,
) -> anyhow::Result<()> {
    let mut stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    subscribe(&mut stream, sessions).await?;
    if *reported_outage {
        info!(socket = %socket.display(), "bfdd reachable again: bfd sessions watched");
        *reported_outage = false;
    } else {
        info!(socket = %socket.display(), sessions = sessions.len(), "bfd sessions asked of bfdd and watched");
    }
    loop {
        let message = Message::read(&mut stream)
            .await
            .context("reading from bfdd")?;
        if message.kind != NOTIFY {
            continue;
        }
        let notification: Notification = match serde_json::from_slice(&message.payload) {
            Ok(n) => n,
            Err(e) => {
                warn!(
                    "bfdd sent a notification xdp-lb cannot read ({e}): {}",
                    String::from_utf8_lossy(&message.payload)
                );
                continue;
            }
        };
        let before = watch.up();
        let died = watch.notified(&notification);
        board.publish(watch.status());
        if let Some(down) = died
            && reports.peer_down.send(down).await.is_err()
        {
            bail!("the vrrp runtime has stopped");
        }
        for change in up_changes(&before, &watch.up()) {
            if reports.up.send(change).await.is_err() {
                bail!("the daemon has stopped");
            }
        }
    }
}

/// Asks for the sessions, then for notifications; each answered "ok" or the error
/// names bfdd's reason.
async fn subscribe(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    sessions: &[BfdSession],
) -> anyhow::Result<()> {
    let requests = [
        (
            1,
            REQUEST_ADD,
            request_add(sessions).into_bytes(),
            "adding the sessions",
        ),
        (
            2,
            NOTIFY,
            NOTIFY_PEER_STATE.to_ne_bytes().to_vec(),
            "asking for notifications",
        ),
    ];
    for (id, kind, payload, what) in requests {
        let message = Message { id, kind, payload };
        stream.write_all(&message.encode()).await?;
        // Notifications may come before the answer.
        let answer = loop {
            let m = Message::read(stream).await?;
            if m.kind == RESPONSE && m.id == id {
                break m;
            }
        };
        #[derive(Deserialize)]
        struct Response {
            status: String,
            error: Option<String>,
        }
        let response: Response = serde_json::from_slice(&answer.payload)
            .with_context(|| format!("bfdd's answer to {what}"))?;
        if response.status != "ok" {
            bail!(
                "bfdd refused {what}: {} (request: {})",
                response.error.unwrap_or(response.status),
                if kind == REQUEST_ADD {
                    request_add(sessions)
                } else {
                    "notify".into()
                }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
