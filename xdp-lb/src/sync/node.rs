//! The sync's I/O and bookkeeping on a running node: the UDP socket, the task that
//! receives, authenticates and relays messages, and the board of counters that
//! `xdp-lb status` and the metrics read. The decisions are in [`super`].

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{info, warn};

use super::{Message, PeerStatus, Receiver, Refusal, SyncStatus};
use crate::{config::SyncConfig, log_limit::LogLimit};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("[sync]: {0}")]
    Secret(String),
    #[error("[sync]: cannot open UDP port {port}{on}: {source}")]
    Socket {
        port: u16,
        on: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the sync port (on `[sync] interface` if set, joining `group` there).
pub fn bind(cfg: &SyncConfig, ifindex: Option<u32>) -> Result<UdpSocket, SyncError> {
    use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
    let on = cfg
        .interface
        .as_ref()
        .map(|i| format!(" on {i}"))
        .unwrap_or_default();
    let err = |source| SyncError::Socket {
        port: cfg.port,
        on: on.clone(),
        source,
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if let Some(name) = &cfg.interface {
        socket.bind_device(Some(name.as_bytes())).map_err(err)?;
    }
    if let Some(group) = cfg.group {
        let index = InterfaceIndexOrAddress::Index(ifindex.unwrap_or(0));
        socket.join_multicast_v4_n(&group, &index).map_err(err)?;
        socket.set_multicast_loop_v4(false).map_err(err)?;
        // keepalived's default TTL: the sync stays on the segment.
        socket.set_multicast_ttl_v4(1).map_err(err)?;
    }
    big_buffers(&socket);
    socket.set_nonblocking(true).map_err(err)?;
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.port));
    socket.bind(&addr.into()).map_err(err)?;
    UdpSocket::from_std(socket.into()).map_err(err)
}

/// Room for a round's burst (up to `rate` entries in 32-entry datagrams) in the
/// sender's and the receiver's socket: 4 MiB each way, beyond the system's default
/// maximum where the daemon may (CAP_NET_ADMIN), else as much as it allows. A
/// datagram dropped for want of room is sent again with the next full round.
fn big_buffers(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd as _;
    const SIZE: libc::c_int = 4 << 20;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: a valid socket descriptor, and a c_int option value with its size.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&SIZE as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

/// Where the MASTER sends: every peer, and the group.
pub fn targets(cfg: &SyncConfig) -> Vec<SocketAddr> {
    cfg.peers
        .iter()
        .chain(cfg.group.iter())
        .map(|a| SocketAddr::V4(SocketAddrV4::new(*a, cfg.port)))
        .collect()
}

/// The counters, shared by the receiving task and the daemon's loop.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<BoardInner>>);

#[derive(Debug, Default)]
struct BoardInner {
    status: SyncStatus,
    last_sent: Option<Instant>,
    last_message: HashMap<String, Instant>,
    /// One warning per reason per period.
    limits: HashMap<&'static str, LogLimit>,
}

impl Board {
    pub fn new(cfg: &SyncConfig) -> Board {
        let board = Board::default();
        {
            let mut b = board.lock();
            b.status.instance = cfg.instance.clone();
            b.status.role = "receiving".into();
            b.status.port = cfg.port;
        }
        board
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardInner> {
        // A panic while holding it leaves counters, nothing to protect.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_role(&self, sending: bool) {
        self.lock().status.role = if sending { "sending" } else { "receiving" }.into();
    }

    pub fn sent(&self, messages: u64, entries: u64, deferred: u64, errors: u64) {
        let mut b = self.lock();
        b.status.messages_sent += messages;
        b.status.entries_sent += entries;
        b.status.entries_deferred += deferred;
        b.status.send_errors += errors;
        if messages > 0 {
            b.last_sent = Some(Instant::now());
        }
    }

    fn peer(b: &mut BoardInner, from: IpAddr) -> &mut PeerStatus {
        b.status.peers.entry(from.to_string()).or_default()
    }

    /// A message accepted on the wire (authentic, in order).
    pub fn received(&self, from: IpAddr, entries: usize) {
        let mut b = self.lock();
        b.last_message.insert(from.to_string(), Instant::now());
        let p = Self::peer(&mut b, from);
        p.messages_received += 1;
        p.entries_received += entries as u64;
    }

    pub fn installed(&self, from: IpAddr, entries: usize) {
        let mut b = self.lock();
        Self::peer(&mut b, from).entries_installed += entries as u64;
    }

    /// A message refused whole, counted and logged (at most once per 10 s a reason).
    pub fn refuse_message(&self, from: IpAddr, r: &Refusal) {
        let mut b = self.lock();
        *Self::peer(&mut b, from)
            .messages_refused
            .entry(r.reason.to_owned())
            .or_default() += 1;
        Self::log(&mut b, from, r, "message");
    }

    /// An entry refused alone.
    pub fn refuse_entry(&self, from: IpAddr, r: &Refusal) {
        let mut b = self.lock();
        *Self::peer(&mut b, from)
            .entries_refused
            .entry(r.reason.to_owned())
            .or_default() += 1;
        Self::log(&mut b, from, r, "entry");
    }

    fn log(b: &mut BoardInner, from: IpAddr, r: &Refusal, what: &str) {
        let limit = b.limits.entry(r.reason).or_default();
        if let Some(suppressed) = limit.allow(Instant::now()) {
            warn!(
                peer = %from,
                reason = r.reason,
                suppressed,
                "nat sync: {what} refused: {}",
                r.detail
            );
        }
    }

    /// The status with ages as of now.
    pub fn status(&self) -> SyncStatus {
        let b = self.lock();
        let now = Instant::now();
        let mut s = b.status.clone();
        s.last_sent_seconds_ago = b.last_sent.map(|t| now.duration_since(t).as_secs_f64());
        for (peer, p) in s.peers.iter_mut() {
            p.last_message_seconds_ago = b
                .last_message
                .get(peer)
                .map(|t| now.duration_since(*t).as_secs_f64());
        }
        s
    }
}

/// An accepted message, for the loop to install.
#[derive(Debug)]
pub struct Received {
    pub from: IpAddr,
    pub message: Message,
}

/// Receives datagrams until the socket fails or the loop is gone: authenticates them
/// here, off the loop, so a flood of forgeries costs the loop nothing; relays the
/// accepted ones.
pub async fn receive(
    socket: Arc<UdpSocket>,
    mut receiver: Receiver,
    board: Board,
    out: mpsc::Sender<Received>,
) {
    let mut buf = vec![0u8; 2048];
    let mut heard: BTreeSet<IpAddr> = BTreeSet::new();
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "nat sync: receiving failed; no more sync messages");
                return;
            }
        };
        let from = from.ip();
        match receiver.open(from, &buf[..n]) {
            Ok(message) => {
                board.received(from, message.entries.len());
                if heard.insert(from) {
                    info!(peer = %from, "nat sync: first message from peer");
                }
                if out.send(Received { from, message }).await.is_err() {
                    return;
                }
            }
            Err(r) => board.refuse_message(from, &r),
        }
    }
}
