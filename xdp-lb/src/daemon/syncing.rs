//! The NAT sync in the loop (see [`crate::sync`]): while MASTER of `[sync]
//! instance`, every interval the reply table is walked and what is due goes to the
//! peers; otherwise what the peers send (authenticated by the receiving task) is
//! written into the flow and reply tables.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::net::UdpSocket;

use super::{sources::cancel_with, sources::forward, sources::tick, *};
use crate::sync::{
    InstallContext, Key, Receiver, Refusal, SendContext, Sender, backend_index, node, node::Board,
    plan_install, refresh_period, wire::fingerprint,
};

/// The sync on this node.
pub(super) struct SyncRuntime {
    pub(super) board: Board,
    instance: String,
    sender: Sender,
    rounds: mpsc::Sender<Vec<Vec<u8>>>,
    /// Of our service table, kept current every interval (a reload may change it).
    fingerprint: u64,
    master: bool,
}

impl Core {
    /// Opens the sync socket and starts its tasks, if `[sync]` is configured.
    pub(super) fn start_sync(
        &mut self,
        stop: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        let Some(cfg) = self.config.sync.clone() else {
            return Ok(());
        };
        let secret = cfg.secret.read().map_err(node::SyncError::Secret)?;
        let ifindex = match &cfg.interface {
            Some(name) => Some(
                nix::net::if_::if_nametoindex(name.as_str())
                    .map_err(|e| anyhow::anyhow!("[sync] interface {name:?}: {e}"))?,
            ),
            None => None,
        };
        let socket = Arc::new(node::bind(&cfg, ifindex)?);
        let board = Board::new(&cfg);
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let refresh = refresh_period(&self.config.dataplane.nat_timeouts);
        let sender = Sender::new(Key::new(&secret), boot, refresh, cfg.rate, cfg.interval);
        let peers = cfg.peers.iter().map(|&a| a.into()).collect();
        let receiver = Receiver::new(Key::new(&secret), peers);
        let (received_tx, received_rx) = mpsc::channel(64);
        tasks.spawn(cancel_with(
            stop,
            node::receive(socket.clone(), receiver, board.clone(), received_tx),
        ));
        tasks.spawn(cancel_with(
            stop,
            forward(received_rx, self.events.clone(), Event::SyncReceived),
        ));
        let (rounds, rounds_rx) = mpsc::channel(4);
        tasks.spawn(cancel_with(
            stop,
            send(socket, node::targets(&cfg), rounds_rx, board.clone()),
        ));
        tasks.spawn(cancel_with(
            stop,
            tick(cfg.interval, self.events.clone(), || Event::SyncTick),
        ));
        info!(
            instance = %cfg.instance,
            port = cfg.port,
            peers = ?cfg.peers,
            group = ?cfg.group,
            interface = cfg.interface.as_deref().unwrap_or("any"),
            "nat sync: listening; the MASTER of the instance sends its NAT connections"
        );
        self.sync = Some(SyncRuntime {
            board,
            instance: cfg.instance,
            sender,
            rounds,
            fingerprint: fingerprint(&self.forwarding.table().id_map()),
            master: false,
        });
        Ok(())
    }

    /// A VRRP state change: the MASTER of the sync instance sends, the others receive.
    pub(super) fn sync_follows_vrrp(&mut self, event: &FailoverEvent) {
        let Some(rt) = &mut self.sync else { return };
        if event.instance != rt.instance {
            return;
        }
        let master = event.state == xdp_lb_vrrp::State::Master;
        if master == rt.master {
            return;
        }
        rt.master = master;
        rt.board.set_role(master);
        if master {
            // A peer may have missed everything so far: tell it all again.
            rt.sender.reset();
            info!(instance = %rt.instance, "nat sync: MASTER, sending NAT connections to the peers");
        } else {
            info!(instance = %rt.instance, "nat sync: not MASTER, installing what the MASTER sends");
        }
    }

    /// Every interval: the fingerprint follows the table; a MASTER sends what is due.
    pub(super) fn sync_tick(&mut self) {
        let Some(rt) = &mut self.sync else { return };
        let table = self.forwarding.table();
        rt.fingerprint = fingerprint(&table.id_map());
        if !rt.master {
            return;
        }
        let replies = self.forwarding.writer().nat_reply_entries();
        let interfaces: HashMap<u32, String> = self
            .links
            .values()
            .map(|l| (l.index, l.name.clone()))
            .collect();
        let backends = backend_index(table);
        let cx = SendContext {
            fingerprint: rt.fingerprint,
            interfaces: &interfaces,
            backends: &backends,
            now_ns: monotonic_ns(),
        };
        let round = rt.sender.round(&replies, &cx);
        let (messages, entries) = (round.datagrams.len() as u64, round.entries as u64);
        if round.skipped > 0 {
            tracing::debug!(
                skipped = round.skipped,
                "nat sync: entries of interfaces or real servers this node no longer has"
            );
        }
        let mut errors = 0;
        if !round.datagrams.is_empty() && rt.rounds.try_send(round.datagrams).is_err() {
            // The socket is behind by several rounds; these go with the next refresh.
            errors = messages;
            rt.sender.reset();
        }
        rt.board
            .sent(messages, entries, round.deferred as u64, errors);
    }

    /// Connections a peer sent: installed unless we are MASTER or they do not fit.
    pub(super) fn on_sync_received(&mut self, received: node::Received) {
        let Some(rt) = &self.sync else { return };
        let from = received.from;
        if rt.master {
            rt.board.refuse_message(
                from,
                &Refusal::new(
                    "master",
                    format!(
                        "this node is MASTER of {} and sends its own; another MASTER's \
                         entries are not installed (a split brain?)",
                        rt.instance
                    ),
                ),
            );
            return;
        }
        let interfaces: HashMap<String, (u32, [u8; 6])> = self
            .links
            .values()
            .map(|l| (l.name.clone(), (l.index, l.mac)))
            .collect();
        let cx = InstallContext {
            table: self.forwarding.table(),
            fingerprint: rt.fingerprint,
            interfaces: &interfaces,
            timeouts: self.config.dataplane.nat_timeouts,
            now_ns: monotonic_ns(),
        };
        let board = rt.board.clone();
        match plan_install(&received.message, &cx) {
            Err(r) => board.refuse_message(from, &r),
            Ok((installs, refused)) => {
                for r in &refused {
                    board.refuse_entry(from, r);
                }
                match self.forwarding.writer_mut().install_synced(&installs) {
                    Ok(n) => board.installed(from, n),
                    Err(e) => {
                        warn!(peer = %from, error = %Chain(&e), "nat sync: cannot write the entries")
                    }
                }
            }
        }
    }

    pub(super) fn sync_status(&self) -> Option<crate::sync::SyncStatus> {
        self.sync.as_ref().map(|rt| rt.board.status())
    }
}

/// Sends each round's datagrams to every target, in order, at the socket's pace.
async fn send(
    socket: Arc<UdpSocket>,
    targets: Vec<SocketAddr>,
    mut rounds: mpsc::Receiver<Vec<Vec<u8>>>,
    board: Board,
) {
    let mut limit = crate::log_limit::LogLimit::default();
    while let Some(datagrams) = rounds.recv().await {
        let mut errors = 0;
        for d in &datagrams {
            for t in &targets {
                if let Err(e) = socket.send_to(d, t).await {
                    errors += 1;
                    if let Some(suppressed) = limit.allow(std::time::Instant::now()) {
                        warn!(peer = %t, error = %e, suppressed, "nat sync: cannot send");
                    }
                }
            }
        }
        if errors > 0 {
            board.sent(0, 0, 0, errors);
        }
    }
}
