//! The NAT sync on a running node (see [`crate::sync`]). While MASTER of `[sync]
//! instance`, a task of its own walks the reply table every interval (through a
//! duplicated map descriptor, on a blocking thread: a walk of a big table takes a
//! while and the loop must not wait for it), decides what is due and sends it to the
//! peers, at the socket's pace. Otherwise what the peers send (authenticated by the
//! receiving task) is written into the flow and reply tables by the loop, which owns
//! the maps' writes. The loop also keeps the sending task's view of the service
//! table current (ids change on reloads).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::{net::UdpSocket, sync::watch};

use super::{sources::cancel_with, sources::forward, sources::tick, *};
use crate::{
    dataplane::nat::ReplyWalker,
    sync::{
        InstallContext, Key, Receiver, Refusal, SendContext, Sender, backend_index, node,
        node::Board, plan_install, refresh_period, wire::fingerprint,
    },
};

/// The sync on this node.
pub(super) struct SyncRuntime {
    pub(super) board: Board,
    instance: String,
    /// Of our service table, kept current every interval (a reload may change it).
    fingerprint: u64,
    master: bool,
    /// What the sending task needs of the table, and whether it sends.
    table: watch::Sender<Arc<SendTable>>,
    sending: watch::Sender<bool>,
}

/// What the sending task needs to describe our connections.
#[derive(Debug, Default)]
struct SendTable {
    fingerprint: u64,
    interfaces: HashMap<u32, String>,
    backends: HashMap<(u32, std::net::Ipv4Addr, u16), u32>,
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
        let walker = self.forwarding.writer().reply_walker()?;
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
        let send_table = Arc::new(self.send_table());
        let fingerprint = send_table.fingerprint;
        let (table, table_rx) = watch::channel(send_table);
        let (sending, sending_rx) = watch::channel(false);
        let rounds = Rounds {
            walker,
            sender,
            table: table_rx,
            sending: sending_rx,
            interval: cfg.interval,
            socket,
            targets: node::targets(&cfg),
            board: board.clone(),
        };
        tasks.spawn(cancel_with(stop, rounds.run()));
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
            fingerprint,
            master: false,
            table,
            sending,
        });
        Ok(())
    }

    fn send_table(&self) -> SendTable {
        let table = self.forwarding.table();
        SendTable {
            fingerprint: fingerprint(&table.id_map()),
            interfaces: self
                .links
                .values()
                .map(|l| (l.index, l.name.clone()))
                .collect(),
            backends: backend_index(table),
        }
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
        // The sending task tells the peers everything again when it starts sending.
        rt.sending.send_replace(master);
        if master {
            info!(instance = %rt.instance, "nat sync: MASTER, sending NAT connections to the peers");
        } else {
            info!(instance = %rt.instance, "nat sync: not MASTER, installing what the MASTER sends");
        }
    }

    /// Every interval: our fingerprint, and the sending task's view of the table,
    /// follow the table (a reload may change ids).
    pub(super) fn sync_tick(&mut self) {
        let Some(rt) = &self.sync else { return };
        let now = fingerprint(&self.forwarding.table().id_map());
        if now == rt.fingerprint {
            return;
        }
        let table = Arc::new(self.send_table());
        let Some(rt) = &mut self.sync else { return };
        rt.fingerprint = now;
        rt.table.send_replace(table);
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

/// The sending side's task: every interval, while MASTER, a walk of the reply table
/// and a round of [`Sender`], sent to every target before the next.
struct Rounds {
    walker: ReplyWalker,
    sender: Sender,
    table: watch::Receiver<Arc<SendTable>>,
    sending: watch::Receiver<bool>,
    interval: std::time::Duration,
    socket: Arc<UdpSocket>,
    targets: Vec<SocketAddr>,
    board: Board,
}

impl Rounds {
    async fn run(self) {
        let Rounds {
            walker,
            sender,
            table,
            sending,
            interval,
            socket,
            targets,
            board,
        } = self;
        let mut every = tokio::time::interval(interval);
        // A round that takes longer than the interval delays the next: that is the
        // pace the table and the socket allow.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_sending = false;
        let mut state = Some((walker, sender));
        let mut limit = crate::log_limit::LogLimit::default();
        loop {
            every.tick().await;
            let now_sending = *sending.borrow();
            if !now_sending {
                was_sending = false;
                continue;
            }
            let Some((walker, mut sender)) = state.take() else {
                return;
            };
            if !was_sending {
                // A peer may have missed everything so far: tell it all again.
                sender.reset();
                was_sending = true;
            }
            let t = table.borrow().clone();
            let walked = tokio::task::spawn_blocking(move || {
                let replies = walker.entries();
                let cx = SendContext {
                    fingerprint: t.fingerprint,
                    interfaces: &t.interfaces,
                    backends: &t.backends,
                    now_ns: monotonic_ns(),
                };
                let round = sender.round(&replies, &cx);
                (walker, sender, round)
            })
            .await;
            let Ok((walker, sender, round)) = walked else {
                warn!("nat sync: the walk of the NAT table failed; no more sync sent");
                return;
            };
            state = Some((walker, sender));
            if round.skipped > 0 {
                tracing::debug!(
                    skipped = round.skipped,
                    "nat sync: entries of interfaces or real servers this node no longer has"
                );
            }
            let mut errors = 0;
            // A big round is spread over half the interval, so a peer's socket is
            // not flooded by one burst.
            let chunks = round.datagrams.len().div_ceil(32).max(1) as u32;
            let gap = (interval / 2) / chunks;
            for (i, d) in round.datagrams.iter().enumerate() {
                if i > 0 && i % 32 == 0 {
                    tokio::time::sleep(gap).await;
                }
                for t in &targets {
                    if let Err(e) = socket.send_to(d, t).await {
                        errors += 1;
                        if let Some(suppressed) = limit.allow(std::time::Instant::now()) {
                            warn!(peer = %t, error = %e, suppressed, "nat sync: cannot send");
                        }
                    }
                }
            }
            board.sent(
                round.datagrams.len() as u64,
                round.entries as u64,
                round.deferred as u64,
                errors,
            );
        }
    }
}
