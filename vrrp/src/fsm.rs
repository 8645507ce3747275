//! The VRRP state machine of RFC 5798 §6 (with the RFC 3768 timers for v2) as a plain
//! value: events and an explicit clock in, actions out.
//!
//! An [`Instance`] owns one virtual router's protocol state, its timers (as deadlines the
//! caller waits for), its effective priority and its counters. It never touches the
//! network, the clock or the log: the daemon feeds it [`Event`]s with the current
//! [`Instant`], carries out the returned [`Action`]s (send the advert, add or remove the
//! VIPs, GARP/NA, notify scripts, log diagnostics) and calls [`Instance::handle`] with
//! [`Event::Timer`] when [`Instance::next_deadline`] passes.
//!
//! Where RFC 5798 leaves room, keepalived's choices are followed so that the two
//! interoperate and fail over alike:
//! - skew time is computed in microseconds from the *effective* priority, and v3 uses the
//!   learned master advertisement interval;
//! - a master that hears a lower-priority advert answers at once with its own advert;
//! - a backup ignores lower-priority adverts when it may preempt and lets its master-down
//!   timer run out (it does not take over on the spot);
//! - `preempt_delay` counts from start and from the first lower-priority advert;
//! - adverts whose address list, version, authentication or (v2) interval differ from ours
//!   are ignored and reported as a [`Clash`];
//! - two address owners (priority 255) on one VRID: the local one drops to 254;
//! - effective priority is base + tracking weights clamped to 1..=254; an owner is fixed;
//! - leaving MASTER for FAULT or at shutdown sends a priority-0 advert.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::packet::{
    AUTH_LEN, Advert, AdvertError, DropReason, Expect, MULTICAST_V4, MULTICAST_V6, Version,
};

/// Priority of the address owner, which takes over at once.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority of the advert a master sends when it stops.
pub const PRIORITY_STOP: u8 = 0;
/// keepalived's default priority.
pub const DEFAULT_PRIORITY: u8 = 100;
/// Default advertisement interval (RFC 3768 and RFC 5798: 1 s).
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// Default minimum time between two reports of the same diagnostic.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// Longest `preempt_delay`, as keepalived allows.
pub const MAX_PREEMPT_DELAY: Duration = Duration::from_secs(1000);
/// A learned master interval is at most this many times our own (see
/// [`Instance::learned_interval`]): a slower real master still works, a spoofed
/// 40.95 s one cannot hold a backup for minutes.
pub const MAX_LEARNED_INTERVAL_FACTOR: u32 = 10;

/// Protocol state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    /// Listening to a master; takes over when the master-down timer runs out.
    Backup,
    /// Holding the virtual addresses and advertising.
    Master,
    /// A tracked interface is down (or a sync-group member is): no adverts, no VIPs.
    Fault,
}

impl State {
    /// Upper-case name as keepalived prints it and notify scripts receive it.
    pub const fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What differs between a peer's adverts for our VRID and our own configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Clash {
    /// The virtual address list.
    Addresses,
    /// The VRRP version.
    Version,
    /// The v2 authentication type or password.
    Auth,
    /// The v2 advertisement interval (v3 learns the master's instead).
    Interval,
    /// Both sides are configured as address owner (priority 255).
    Owner,
}

impl Clash {
    /// Every kind, in counter order ([`Clash::index`]).
    pub const ALL: [Clash; 5] = [
        Clash::Addresses,
        Clash::Version,
        Clash::Auth,
        Clash::Interval,
        Clash::Owner,
    ];

    /// Stable snake_case name, for counters and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Clash::Addresses => "addresses",
            Clash::Version => "version",
            Clash::Auth => "auth",
            Clash::Interval => "interval",
            Clash::Owner => "owner",
        }
    }

    /// Position in [`Clash::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The drop reasons that mean "a peer configured differently for our VRID".
    pub const fn from_drop(reason: DropReason) -> Option<Clash> {
        match reason {
            DropReason::VersionMismatch => Some(Clash::Version),
            DropReason::AuthTypeMismatch | DropReason::AuthMismatch => Some(Clash::Auth),
            _ => None,
        }
    }
}

impl fmt::Display for Clash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Clash::Addresses => "its virtual address list differs from ours",
            Clash::Version => "it speaks the other vrrp version",
            Clash::Auth => "its authentication differs from ours",
            Clash::Interval => "its advertisement interval differs from ours",
            Clash::Owner => "it is also configured as address owner (priority 255)",
        })
    }
}

/// Configuration of one virtual router, as the state machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Base priority, 1..=255; 255 makes this node the address owner.
    pub priority: u8,
    /// Protocol version.
    pub version: Version,
    /// Our advertisement interval (v2: whole seconds; v3: multiple of 10 ms).
    pub advert_interval: Duration,
    /// Preempt a lower-priority master (`false` is keepalived's `nopreempt`). The address
    /// owner always preempts.
    pub preempt: bool,
    /// Wait this long after start, or after first seeing a lower-priority master, before
    /// preempting it.
    pub preempt_delay: Duration,
    /// The virtual addresses we advertise and expect in peers' adverts.
    pub addresses: Vec<IpAddr>,
    /// v2 simple password (see [`crate::packet::simple_password`]).
    pub auth: Option<[u8; AUTH_LEN]>,
    /// Our advert source address: breaks ties between equal priorities and recognises our
    /// own looped-back adverts.
    pub primary_address: IpAddr,
    /// Minimum time between two reports of the same diagnostic.
    pub report_interval: Duration,
    /// While MASTER, do not answer a lower-priority advert with one of ours
    /// (keepalived's `lower_prio_no_advert`; default: answer at once).
    pub lower_prio_no_advert: bool,
    /// While MASTER, answer a higher-priority advert with one of ours before giving way
    /// (keepalived's `higher_prio_send_advert`), so that every node, including a third
    /// that missed the winner's advert, sees the change at once.
    pub higher_prio_send_advert: bool,
}

/// What a running instance may change without a new election ([`Instance::reconfigure`]);
/// everything else in [`Config`] is what the instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    /// 1..=254, or 255 for an owner that stays one.
    pub priority: u8,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub lower_prio_no_advert: bool,
    pub higher_prio_send_advert: bool,
}

impl Config {
    /// This configuration's tunables.
    pub fn tunables(&self) -> Tunables {
        Tunables {
            priority: self.priority,
            preempt: self.preempt,
            preempt_delay: self.preempt_delay,
            lower_prio_no_advert: self.lower_prio_no_advert,
            higher_prio_send_advert: self.higher_prio_send_advert,
        }
    }

    /// keepalived's defaults: priority 100, 1 s, preempt, no delay, no authentication,
    /// version 2 for IPv4 and 3 for IPv6.
    pub fn new(vrid: u8, primary_address: IpAddr) -> Config {
        Config {
            vrid,
            priority: DEFAULT_PRIORITY,
            version: if primary_address.is_ipv6() {
                Version::V3
            } else {
                Version::V2
            },
            advert_interval: DEFAULT_ADVERT_INTERVAL,
            preempt: true,
            preempt_delay: Duration::ZERO,
            addresses: Vec::new(),
            auth: None,
            primary_address,
            report_interval: DEFAULT_REPORT_INTERVAL,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
        }
    }

    /// Checks what the wire format and RFC 5798 allow.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == PRIORITY_STOP {
            return Err(ConfigError::Priority { vrid: self.vrid });
        }
        if self.preempt_delay > MAX_PREEMPT_DELAY {
            return Err(ConfigError::PreemptDelay {
                vrid: self.vrid,
                delay: self.preempt_delay,
            });
        }
        self.advert(self.priority)
            .validate(self.primary_address, self.multicast_group())
            .map_err(|source| ConfigError::Advert {
                vrid: self.vrid,
                source,
            })
    }

    /// The advert this configuration sends with the given priority.
    pub fn advert(&self, priority: u8) -> Advert {
        Advert {
            version: self.version,
            vrid: self.vrid,
            priority,
            max_advert_interval: self.advert_interval,
            auth: self.auth,
            addresses: self.addresses.clone(),
        }
    }

    fn multicast_group(&self) -> IpAddr {
        match self.primary_address {
            IpAddr::V4(_) => IpAddr::V4(MULTICAST_V4),
            IpAddr::V6(_) => IpAddr::V6(MULTICAST_V6),
        }
    }
}

/// Why a [`Config`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// VRID 0.
    #[error("virtual_router_id 0 is not valid; use 1 to 255")]
    Vrid,
    /// Priority 0.
    #[error(
        "virtual router {vrid}: priority 0 is reserved for the stop advertisement; use 1 to 254, or 255 on the address owner"
    )]
    Priority {
        /// The virtual router.
        vrid: u8,
    },
    /// `preempt_delay` too long.
    #[error("virtual router {vrid}: preempt_delay {delay:?} is too long; use at most 1000 s")]
    PreemptDelay {
        /// The virtual router.
        vrid: u8,
        /// The delay given.
        delay: Duration,
    },
    /// The adverts could not be encoded.
    #[error("virtual router {vrid}: cannot be advertised")]
    Advert {
        /// The virtual router.
        vrid: u8,
        /// What is wrong with the advert.
        #[source]
        source: AdvertError,
    },
}

/// Input to [`Instance::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start the instance (RFC 5798 Startup event).
    Start,
    /// Start the instance as MASTER at once: this node was MASTER a moment ago and its
    /// daemon restarted (its VIPs are still in place), so it carries on advertising
    /// before any backup's Master_Down_Interval runs out, and the peers see no change.
    /// A faulted instance starts in FAULT as with [`Event::Start`]; if another router
    /// took over meanwhile, the usual advert comparison settles it.
    Resume,
    /// [`Instance::next_deadline`] has passed. Harmless when nothing is due.
    Timer,
    /// A valid advert for this VRID arrived from `from` (already decoded and checked).
    Advert {
        /// Its source address.
        from: IpAddr,
        /// The advert.
        advert: Advert,
    },
    /// A packet for this VRID from `from` was dropped by [`crate::packet::decode`]: counted,
    /// and reported as a [`Clash`] when it shows a peer configured differently.
    Dropped {
        /// Its source address.
        from: IpAddr,
        /// Why it was dropped.
        reason: DropReason,
    },
    /// The sum of all tracking weights now in force (not a delta): effective priority =
    /// base + this, clamped to 1..=254 unless we are the address owner.
    PriorityAdjust(i32),
    /// A tracked interface went down (`true`) or every one is up again (`false`).
    FaultSet(bool),
    /// Something outside VRRP that watches `peer` closely (a BFD session) saw it die.
    /// A BACKUP whose accepted master is `peer` acts as if the Master_Down_Interval had
    /// just run out, instead of waiting for it; anything else ignores it (counted).
    PeerDown {
        /// The address the dead peer's adverts came from.
        peer: IpAddr,
    },
    /// Stop the instance (RFC 5798 Shutdown event).
    Shutdown,
}

/// Output of [`Instance::handle`], to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority ([`Instance::advert`] builds it).
    SendAdvert {
        /// Priority to advertise; 0 when leaving MASTER.
        priority: u8,
    },
    /// Now MASTER: add the VIPs, send GARP / unsolicited NA, run the master notify.
    BecomeMaster,
    /// Still MASTER, but a lower-priority advert arrived: its sender may have held the
    /// addresses, so hosts may cache its MAC. Announce the addresses again (keepalived's
    /// `garp_lower_prio_repeat` / `garp_lower_prio_delay`).
    Reannounce,
    /// Now BACKUP: remove the VIPs if held, run the backup notify.
    BecomeBackup,
    /// Now FAULT: remove the VIPs if held, run the fault notify.
    BecomeFault,
    /// Stopped: remove the VIPs if held, run the stop notify.
    Stop,
    /// We are MASTER and a peer keeps claiming MASTER with a priority that loses to ours:
    /// it does not hear our adverts. Reported at most once per report interval.
    SplitBrain {
        /// The other master.
        peer: IpAddr,
        /// The priority it advertises.
        peer_priority: u8,
    },
    /// A peer advertises our VRID with a different configuration; its adverts are ignored.
    /// Reported at most once per report interval and kind.
    VridClash {
        /// The peer.
        peer: IpAddr,
        /// What differs.
        what: Clash,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SendAdvert { priority } => write!(f, "send advert with priority {priority}"),
            Action::BecomeMaster => f.write_str("enter MASTER state"),
            Action::Reannounce => f.write_str("announce the addresses again"),
            Action::BecomeBackup => f.write_str("enter BACKUP state"),
            Action::BecomeFault => f.write_str("enter FAULT state"),
            Action::Stop => f.write_str("stop"),
            Action::SplitBrain {
                peer,
                peer_priority,
            } => write!(
                f,
                "split brain: {peer} keeps advertising as master with priority {peer_priority} \
                 while we are master; it does not hear our adverts, most likely because vrrp \
                 multicast or ip protocol 112 is filtered between the nodes"
            ),
            Action::VridClash { peer, what } => write!(
                f,
                "vrid clash: {peer} advertises our virtual router but {what}; its adverts are ignored"
            ),
        }
    }
}

/// Counters of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid adverts for our VRID that were considered.
    pub adverts_received: u64,
    /// Adverts we asked to send (all priorities).
    pub adverts_sent: u64,
    /// Priority-0 adverts received.
    pub priority_zero_received: u64,
    /// Priority-0 adverts we asked to send.
    pub priority_zero_sent: u64,
    /// Transitions to MASTER.
    pub became_master: u64,
    /// Transitions out of MASTER.
    pub released_master: u64,
    /// Dropped packets by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Clashing adverts by [`Clash::index`].
    pub clashes: [u64; Clash::ALL.len()],
    /// Adverts from another master received once it should have stepped down.
    pub split_brain_adverts: u64,
    /// [`Action::SplitBrain`] reports issued.
    pub split_brain_reports: u64,
    /// Learned master intervals capped at [`MAX_LEARNED_INTERVAL_FACTOR`] x ours.
    pub capped_intervals: u64,
    /// Adverts for another VRID handed to this instance (a dispatch mistake).
    pub other_vrid: u64,
    /// Our own adverts looped back.
    pub own_adverts: u64,
    /// [`Event::PeerDown`] about our master that cut the master-down wait short.
    pub peer_down_takeovers: u64,
    /// [`Event::PeerDown`] ignored: not BACKUP, or the peer is not our master.
    pub peer_down_ignored: u64,
}

impl Stats {
    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Clashing adverts of kind `what`.
    pub fn clashes(&self, what: Clash) -> u64 {
        self.clashes[what.index()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conflict {
    peer: IpAddr,
    since: Instant,
    last: Instant,
}

/// One VRRP virtual router.
#[derive(Debug, Clone)]
pub struct Instance {
    cfg: Config,
    /// The configured priority, lowered to 254 when another owner shows up.
    base_priority: u8,
    adjust: i32,
    /// Effective priority.
    priority: u8,
    state: State,
    fault: bool,
    group_fault: bool,
    synced: bool,
    /// In a sync group, the master-down timer ran out but the group holds us in BACKUP.
    wants_master: bool,
    master_adver_interval: Duration,
    adver_at: Option<Instant>,
    /// When a lower-priority advert was last answered: at most one answer per advert
    /// interval, so a flood of them is not echoed 1:1 in adverts and announcements.
    answered_at: Option<Instant>,
    down_at: Option<Instant>,
    preempt_at: Option<Instant>,
    master: Option<(IpAddr, u8)>,
    conflict: Option<Conflict>,
    last_split_report: Option<Instant>,
    last_clash_report: [Option<Instant>; Clash::ALL.len()],
    stats: Stats,
}

impl Instance {
    /// A stopped instance; send [`Event::Start`] to run it.
    pub fn new(cfg: Config) -> Result<Instance, ConfigError> {
        cfg.validate()?;
        Ok(Instance {
            base_priority: cfg.priority,
            adjust: 0,
            priority: cfg.priority,
            state: State::Initialize,
            fault: false,
            group_fault: false,
            synced: false,
            wants_master: false,
            master_adver_interval: cfg.advert_interval,
            adver_at: None,
            answered_at: None,
            down_at: None,
            preempt_at: None,
            master: None,
            conflict: None,
            last_split_report: None,
            last_clash_report: [None; Clash::ALL.len()],
            stats: Stats::default(),
            cfg,
        })
    }

    /// Feeds one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.start(now, &mut out),
            Event::Resume => self.resume(now, &mut out),
            Event::Timer => self.timer(now, &mut out),
            Event::Advert { from, advert } => self.advert_received(now, from, &advert, &mut out),
            Event::Dropped { from, reason } => {
                self.stats.drops[reason.index()] += 1;
                if let Some(what) = Clash::from_drop(reason) {
                    self.clash(now, from, what, &mut out);
                }
            }
            Event::PriorityAdjust(total) => {
                self.adjust = total;
                self.update_priority();
            }
            Event::FaultSet(fault) => {
                self.fault = fault;
                self.apply_fault(now, &mut out);
            }
            Event::PeerDown { peer } => self.peer_down(now, peer, &mut out),
            Event::Shutdown => self.shutdown(&mut out),
        }
        out
    }

    /// When to deliver the next [`Event::Timer`], if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Master => self.adver_at,
            State::Backup => self.down_at,
            State::Initialize | State::Fault => None,
        }
    }

    /// A master's Max Advert Interval as learned (VRRPv3), capped at
    /// [`MAX_LEARNED_INTERVAL_FACTOR`] times ours: one spoofed advert with a 40.95 s
    /// interval would otherwise hold every backup for two minutes after the real
    /// master dies. Capped values are counted (`Stats::capped_intervals`).
    fn learned_interval(&mut self, advertised: Duration) -> Duration {
        let cap = self.cfg.advert_interval * MAX_LEARNED_INTERVAL_FACTOR;
        if advertised > cap {
            self.stats.capped_intervals += 1;
            cap
        } else {
            advertised
        }
    }

    /// The advert to send for [`Action::SendAdvert`].
    pub fn advert(&self, priority: u8) -> Advert {
        self.cfg.advert(priority)
    }

    /// What [`crate::packet::decode`] should require for this instance (multicast, TTL
    /// checked); adjust `unicast` / `check_ttl` for unicast peers.
    pub fn expect(&self) -> Expect {
        Expect {
            auth: self.cfg.auth,
            ..Expect::new(self.cfg.version)
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Base priority (the configured one unless lowered by an owner clash).
    pub fn base_priority(&self) -> u8 {
        self.base_priority
    }

    /// Applies a changed configuration in place (a reload), keeping the state, timers
    /// and what was learnt of the master. Only what needs no new election may change:
    /// the priority (not to or from 255, the address owner), preempt, preempt_delay,
    /// the advert answer switches and the report interval. Otherwise nothing changes
    /// and the first field that differs is named. A new priority takes effect as
    /// tracking does: a MASTER advertises it from its next advert on, a BACKUP weighs
    /// the master's next advert with it.
    pub fn reconfigure(&mut self, t: &Tunables) -> Result<(), &'static str> {
        // Only tunables can be given; of those, becoming or ceasing to be the address
        // owner is a new election, and priority 0 is no priority.
        if (self.cfg.priority == PRIORITY_OWNER) != (t.priority == PRIORITY_OWNER) {
            return Err("priority 255 (address owner)");
        }
        if t.priority == PRIORITY_STOP {
            return Err("priority 0");
        }
        let cfg = &mut self.cfg;
        cfg.priority = t.priority;
        cfg.preempt = t.preempt;
        cfg.preempt_delay = t.preempt_delay;
        cfg.lower_prio_no_advert = t.lower_prio_no_advert;
        cfg.higher_prio_send_advert = t.higher_prio_send_advert;
        let cfg = &self.cfg;
        // An owner stays one (checked above): its base is 255, or 254 after an owner
        // clash, and stays so.
        if cfg.priority != PRIORITY_OWNER {
            self.base_priority = cfg.priority;
        }
        self.update_priority();
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The master we last accepted, with its priority, while BACKUP.
    pub fn master(&self) -> Option<(IpAddr, u8)> {
        self.master
    }

    /// Whether our own tracked interfaces put us in FAULT (not counting a sync group).
    pub fn is_faulted(&self) -> bool {
        self.fault
    }

    /// In a sync group: our master-down timer ran out and we wait for the other members.
    pub fn wants_master(&self) -> bool {
        self.wants_master
    }

    /// The master's advertisement interval (v3 learns it; v2 requires it equal to ours).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew time: (256 - priority) / 256 of a second for v2, of the master advertisement
    /// interval for v3, truncated to microseconds as keepalived does.
    pub fn skew_time(&self) -> Duration {
        let share = u128::from(256 - u16::from(self.priority));
        let base = match self.cfg.version {
            Version::V2 => Duration::from_secs(1),
            Version::V3 => self.master_adver_interval,
        };
        let micros = base.as_micros() * share / 256;
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// Master-down interval: 3 × master advertisement interval + skew time.
    pub fn master_down_interval(&self) -> Duration {
        let interval = match self.cfg.version {
            Version::V2 => self.cfg.advert_interval,
            Version::V3 => self.master_adver_interval,
        };
        interval.saturating_mul(3).saturating_add(self.skew_time())
    }

    pub(crate) fn set_synced(&mut self, synced: bool) {
        self.synced = synced;
        if !synced {
            self.group_fault = false;
            self.wants_master = false;
        }
    }

    pub(crate) fn group_fault(&self) -> bool {
        self.group_fault
    }

    pub(crate) fn set_group_fault(&mut self, now: Instant, fault: bool) -> Vec<Action> {
        let mut out = Vec::new();
        self.group_fault = fault;
        self.apply_fault(now, &mut out);
        out
    }

    /// Sync group: another member left MASTER for BACKUP.
    pub(crate) fn force_backup(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Master {
            self.master_adver_interval = self.cfg.advert_interval;
            self.enter_backup(now, &mut out);
        }
        out
    }

    /// Sync group: every member wants MASTER, or another member became MASTER.
    pub(crate) fn force_master(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Backup {
            self.enter_master(now, &mut out);
        }
        out
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            return;
        }
        self.master_adver_interval = self.cfg.advert_interval;
        if self.fault || self.group_fault {
            self.state = State::Fault;
            out.push(Action::BecomeFault);
        } else if self.base_priority == PRIORITY_OWNER {
            self.enter_master(now, out);
        } else {
            self.enter_backup(now, out);
            if !self.cfg.preempt_delay.is_zero() {
                self.preempt_at = Some(now + self.cfg.preempt_delay);
            }
        }
    }

    fn resume(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            return;
        }
        if self.fault || self.group_fault {
            self.start(now, out);
            return;
        }
        self.master_adver_interval = self.cfg.advert_interval;
        self.enter_master(now, out);
    }

    fn timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Master => {
                if let Some(at) = self.adver_at.filter(|&at| now >= at) {
                    self.send(self.priority, out);
                    let next = at + self.cfg.advert_interval;
                    // After a stall, advertise from now on rather than in a burst.
                    self.adver_at = Some(if next > now {
                        next
                    } else {
                        now + self.cfg.advert_interval
                    });
                }
            }
            State::Backup => {
                if self.down_at.is_some_and(|at| now >= at) {
                    self.down_at = None;
                    if self.synced {
                        self.wants_master = true;
                    } else {
                        self.enter_master(now, out);
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    /// [`Event::PeerDown`]: the master-down timer fires now if `peer` is our master. The
    /// RFC's timer only stands in for "the master stopped talking"; a faster witness of
    /// that changes when, not what, so a sync group still waits for all its members.
    fn peer_down(&mut self, now: Instant, peer: IpAddr, out: &mut Vec<Action>) {
        let follows_peer = self.master.is_some_and(|(master, _)| master == peer);
        if self.state != State::Backup || !follows_peer {
            self.stats.peer_down_ignored += 1;
            return;
        }
        self.stats.peer_down_takeovers += 1;
        self.down_at = Some(now);
        self.timer(now, out);
    }

    fn advert_received(
        &mut self,
        now: Instant,
        from: IpAddr,
        advert: &Advert,
        out: &mut Vec<Action>,
    ) {
        if advert.vrid != self.cfg.vrid {
            self.stats.other_vrid += 1;
            return;
        }
        if self.state == State::Initialize {
            return;
        }
        if from == self.cfg.primary_address {
            self.stats.own_adverts += 1;
            return;
        }
        if let Some(what) = self.clash_with(advert) {
            self.clash(now, from, what, out);
            return;
        }
        self.stats.adverts_received += 1;
        if advert.priority == PRIORITY_STOP {
            self.stats.priority_zero_received += 1;
        }
        match self.state {
            State::Backup => self.backup_advert(now, from, advert),
            State::Master => self.master_advert(now, from, advert, out),
            State::Initialize | State::Fault => {}
        }
    }

    /// RFC 5798 §6.4.2, "If an ADVERTISEMENT is received".
    fn backup_advert(&mut self, now: Instant, from: IpAddr, advert: &Advert) {
        if advert.priority == PRIORITY_STOP {
            self.down_at = Some(now + self.skew_time());
            return;
        }
        self.master = Some((from, advert.priority));
        let delay = self.cfg.preempt_delay;
        let delaying = !delay.is_zero() && self.preempt_at.is_none_or(|at| at > now);
        if !self.may_preempt() || advert.priority >= self.priority || delaying {
            if self.cfg.version == Version::V3 {
                self.master_adver_interval = self.learned_interval(advert.max_advert_interval);
            }
            self.down_at = Some(now + self.master_down_interval());
            self.wants_master = false;
            if !delay.is_zero() {
                if advert.priority >= self.priority {
                    self.preempt_at = None;
                } else if self.preempt_at.is_none() {
                    self.preempt_at = Some(now + delay);
                }
            }
        }
        // Otherwise a lower-priority master is to be preempted: ignore its adverts and let
        // the master-down timer run out.
    }

    /// RFC 5798 §6.4.3, "If an ADVERTISEMENT is received", plus keepalived's owner clash
    /// handling and our split-brain detection.
    fn master_advert(
        &mut self,
        now: Instant,
        from: IpAddr,
        advert: &Advert,
        out: &mut Vec<Action>,
    ) {
        if advert.priority == PRIORITY_STOP {
            self.send(self.priority, out);
            self.adver_at = Some(now + self.cfg.advert_interval);
            return;
        }
        if advert.priority == PRIORITY_OWNER && self.priority == PRIORITY_OWNER {
            self.clash(now, from, Clash::Owner, out);
            self.base_priority = PRIORITY_OWNER - 1;
            self.update_priority();
        }
        let peer_wins = advert.priority > self.priority
            || (advert.priority == self.priority && from > self.cfg.primary_address);
        if peer_wins {
            if self.cfg.higher_prio_send_advert {
                self.send(self.priority, out);
            }
            if self.cfg.version == Version::V3 {
                self.master_adver_interval = self.learned_interval(advert.max_advert_interval);
            }
            self.enter_backup(now, out);
            self.master = Some((from, advert.priority));
        } else {
            // Answer at once so that the other master hears a better one (keepalived's
            // "forcing new election"); a real master sends one advert per interval, so
            // answering more often only feeds a flood.
            let answered_lately = self
                .answered_at
                .is_some_and(|at| now < at + self.cfg.advert_interval);
            if !answered_lately {
                self.answered_at = Some(now);
                if !self.cfg.lower_prio_no_advert {
                    self.send(self.priority, out);
                }
                out.push(Action::Reannounce);
            }
            self.note_conflict(now, from, advert.priority, out);
        }
    }

    /// A losing peer that still advertises a master-down interval after it first did
    /// cannot be hearing us.
    fn note_conflict(
        &mut self,
        now: Instant,
        peer: IpAddr,
        peer_priority: u8,
        out: &mut Vec<Action>,
    ) {
        let grace = self.master_down_interval();
        let conflict = match self.conflict {
            Some(c) if c.peer == peer && now.saturating_duration_since(c.last) <= grace => {
                Conflict { last: now, ..c }
            }
            _ => Conflict {
                peer,
                since: now,
                last: now,
            },
        };
        self.conflict = Some(conflict);
        if now.saturating_duration_since(conflict.since) < grace {
            return;
        }
        self.stats.split_brain_adverts += 1;
        if due(self.last_split_report, now, self.cfg.report_interval) {
            self.last_split_report = Some(now);
            self.stats.split_brain_reports += 1;
            out.push(Action::SplitBrain {
                peer,
                peer_priority,
            });
        }
    }

    fn clash_with(&self, advert: &Advert) -> Option<Clash> {
        if advert.version != self.cfg.version {
            return Some(Clash::Version);
        }
        if self.cfg.version == Version::V2 {
            if advert.auth != self.cfg.auth {
                return Some(Clash::Auth);
            }
            if advert.max_advert_interval != self.cfg.advert_interval {
                return Some(Clash::Interval);
            }
        }
        // keepalived: same count, and every one of our addresses present.
        let ours = &self.cfg.addresses;
        if advert.addresses.len() != ours.len()
            || !ours.iter().all(|a| advert.addresses.contains(a))
        {
            return Some(Clash::Addresses);
        }
        None
    }

    fn clash(&mut self, now: Instant, peer: IpAddr, what: Clash, out: &mut Vec<Action>) {
        self.stats.clashes[what.index()] += 1;
        let last = &mut self.last_clash_report[what.index()];
        if due(*last, now, self.cfg.report_interval) {
            *last = Some(now);
            out.push(Action::VridClash { peer, what });
        }
    }

    fn may_preempt(&self) -> bool {
        // RFC 5798 §6.1: the address owner always preempts.
        self.cfg.preempt || self.base_priority == PRIORITY_OWNER
    }

    fn update_priority(&mut self) {
        let new = if self.base_priority == PRIORITY_OWNER {
            PRIORITY_OWNER
        } else {
            let total = i64::from(self.base_priority) + i64::from(self.adjust);
            // Clamped to 1..=254, so the conversion cannot fail.
            u8::try_from(total.clamp(1, i64::from(PRIORITY_OWNER - 1))).unwrap_or(1)
        };
        if new == self.priority {
            return;
        }
        let old_skew = self.skew_time();
        self.priority = new;
        // The skew is part of a running master-down timer: move the deadline with it.
        if let Some(at) = self.down_at {
            self.down_at = Some(
                at.checked_sub(old_skew)
                    .map_or(at, |t| t + self.skew_time()),
            );
        }
    }

    fn apply_fault(&mut self, now: Instant, out: &mut Vec<Action>) {
        let faulted = self.fault || self.group_fault;
        match (self.state, faulted) {
            (State::Master, true) => {
                self.send(PRIORITY_STOP, out);
                self.stats.released_master += 1;
                self.enter_fault(out);
            }
            (State::Backup, true) => self.enter_fault(out),
            (State::Fault, false) => {
                self.master_adver_interval = self.cfg.advert_interval;
                if self.base_priority == PRIORITY_OWNER {
                    self.enter_master(now, out);
                } else {
                    self.enter_backup(now, out);
                }
            }
            _ => {}
        }
    }

    fn shutdown(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Initialize => return,
            State::Master => {
                self.send(PRIORITY_STOP, out);
                self.stats.released_master += 1;
            }
            State::Backup | State::Fault => {}
        }
        out.push(Action::Stop);
        self.state = State::Initialize;
        self.reset_timers();
    }

    fn enter_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        // Advert first, so the old master lets go of the VIPs before our GARPs go out.
        self.send(self.priority, out);
        out.push(Action::BecomeMaster);
        self.reset_timers();
        self.state = State::Master;
        self.master_adver_interval = self.cfg.advert_interval;
        self.adver_at = Some(now + self.cfg.advert_interval);
        self.stats.became_master += 1;
    }

    fn enter_backup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Master {
            self.stats.released_master += 1;
        }
        out.push(Action::BecomeBackup);
        self.reset_timers();
        self.state = State::Backup;
        self.down_at = Some(now + self.master_down_interval());
    }

    fn enter_fault(&mut self, out: &mut Vec<Action>) {
        out.push(Action::BecomeFault);
        self.reset_timers();
        self.state = State::Fault;
    }

    /// Stops every timer and forgets what was learnt in the state being left.
    fn reset_timers(&mut self) {
        self.adver_at = None;
        self.down_at = None;
        self.preempt_at = None;
        self.wants_master = false;
        self.master = None;
        self.conflict = None;
    }

    fn send(&mut self, priority: u8, out: &mut Vec<Action>) {
        self.stats.adverts_sent += 1;
        if priority == PRIORITY_STOP {
            self.stats.priority_zero_sent += 1;
        }
        out.push(Action::SendAdvert { priority });
    }
}

/// Whether a report last made at `last` may be repeated at `now`.
fn due(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= every)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "192.0.2.11";
    const PEER: &str = "192.0.2.12";
    const VIP: &str = "192.0.2.200";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn cfg(priority: u8) -> Config {
        Config {
            priority,
            addresses: vec![ip(VIP)],
            ..Config::new(51, ip(ME))
        }
    }

    fn started(cfg: Config, t0: Instant) -> Instance {
        let mut vr = Instance::new(cfg).unwrap();
        vr.handle(t0, Event::Start);
        vr
    }

    fn advert_from(vr: &Instance, priority: u8) -> Event {
        Event::Advert {
            from: ip(PEER),
            advert: vr.advert(priority),
        }
    }

    /// Runs `vr` as the only node to `MASTER` and returns the time it got there.
    fn to_master(vr: &mut Instance) -> Instant {
        let at = vr.next_deadline().unwrap();
        vr.handle(at, Event::Timer);
        assert_eq!(vr.state(), State::Master);
        at
    }

    #[test]
    fn timers_follow_rfc_formulas() {
        let t0 = Instant::now();
        // v2: skew (256 - 100) / 256 s = 0.609375 s.
        let vr = started(cfg(100), t0);
        assert_eq!(vr.skew_time(), Duration::from_micros(609_375));
        assert_eq!(vr.master_down_interval(), Duration::from_micros(3_609_375));
        // v3 at 100 ms: skew (256 - 150) * 100 ms / 256 = 41.40625 ms, truncated to µs.
        let vr = started(
            Config {
                version: Version::V3,
                advert_interval: Duration::from_millis(100),
                ..cfg(150)
            },
            t0,
        );
        assert_eq!(vr.skew_time(), Duration::from_micros(41_406));
        assert_eq!(vr.master_down_interval(), Duration::from_micros(341_406));
    }

    #[test]
    fn resume_starts_as_master_at_once_unless_faulted_and_yields_to_a_better_peer() {
        let t0 = Instant::now();
        let mut vr = Instance::new(cfg(100)).unwrap();
        let out = vr.handle(t0, Event::Resume);
        assert_eq!(vr.state(), State::Master);
        assert!(
            matches!(out.first(), Some(Action::SendAdvert { priority: 100 })),
            "an advert first: {out:?}"
        );
        assert!(out.contains(&Action::BecomeMaster), "{out:?}");
        assert_eq!(vr.next_deadline(), Some(t0 + Duration::from_secs(1)));
        // Resume only starts: a running instance ignores it.
        assert!(vr.handle(t0, Event::Resume).is_empty());
        // Someone took over meanwhile with a higher priority: we step down.
        let peer = advert_from(&vr, 150);
        vr.handle(t0 + secs(0.1), peer);
        assert_eq!(vr.state(), State::Backup);

        // A faulted instance resumes into FAULT.
        let mut vr = Instance::new(cfg(100)).unwrap();
        vr.handle(t0, Event::FaultSet(true));
        vr.handle(t0, Event::Resume);
        assert_eq!(vr.state(), State::Fault);
    }

    #[test]
    fn starts_as_backup_then_master_after_master_down_interval() {
        let t0 = Instant::now();
        let mut vr = Instance::new(cfg(100)).unwrap();
        assert_eq!(vr.state(), State::Initialize);
        assert_eq!(vr.next_deadline(), None);
        assert_eq!(vr.handle(t0, Event::Start), vec![Action::BecomeBackup]);
        let down = t0 + Duration::from_micros(3_609_375);
        assert_eq!(vr.next_deadline(), Some(down));

        // An early timer does nothing.
        assert!(
            vr.handle(down - Duration::from_micros(1), Event::Timer)
                .is_empty()
        );
        assert_eq!(vr.state(), State::Backup);

        assert_eq!(
            vr.handle(down, Event::Timer),
            vec![Action::SendAdvert { priority: 100 }, Action::BecomeMaster]
        );
        assert_eq!(vr.next_deadline(), Some(down + Duration::from_secs(1)));
        assert_eq!(
            vr.handle(down + Duration::from_secs(1), Event::Timer),
            vec![Action::SendAdvert { priority: 100 }]
        );
        // A late timer does not cause a burst.
        let late = down + Duration::from_secs(10);
        assert_eq!(vr.handle(late, Event::Timer).len(), 1);
        assert_eq!(vr.next_deadline(), Some(late + Duration::from_secs(1)));
        assert_eq!(vr.stats().became_master, 1);
        assert_eq!(vr.stats().adverts_sent, 3);
        // Start again is ignored.
        assert!(vr.handle(late, Event::Start).is_empty());
    }

    #[test]
    fn higher_priority_master_keeps_us_backup() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        for i in 1..=20 {
            let actions = vr.handle(t0 + secs(f64::from(i)), advert_from(&vr, 150));
            assert!(actions.is_empty());
            let at = t0 + secs(f64::from(i));
            assert_eq!(vr.next_deadline(), Some(at + vr.master_down_interval()));
            vr.handle(at, Event::Timer);
            assert_eq!(vr.state(), State::Backup);
        }
        assert_eq!(vr.master(), Some((ip(PEER), 150)));
        assert_eq!(vr.stats().adverts_received, 20);
    }

    #[test]
    fn equal_priority_master_keeps_us_backup() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        vr.handle(t0 + secs(1.0), advert_from(&vr, 100));
        assert_eq!(
            vr.next_deadline(),
            Some(t0 + secs(1.0) + vr.master_down_interval())
        );
    }

    #[test]
    fn v3_backup_learns_master_interval() {
        let t0 = Instant::now();
        let mut vr = started(
            Config {
                version: Version::V3,
                ..cfg(200)
            },
            t0,
        );
        let mut advert = vr.advert(250);
        advert.max_advert_interval = Duration::from_millis(100);
        let t1 = t0 + secs(0.5);
        vr.handle(
            t1,
            Event::Advert {
                from: ip(PEER),
                advert,
            },
        );
        assert_eq!(vr.master_adver_interval(), Duration::from_millis(100));
        // 3 * 100 ms + (56 * 100 ms / 256 = 21.875 ms).
        assert_eq!(
            vr.next_deadline(),
            Some(t1 + Duration::from_micros(321_875))
        );
        // Once master, our own interval again.
        let at = to_master(&mut vr);
        assert_eq!(vr.master_adver_interval(), Duration::from_secs(1));
        assert_eq!(vr.next_deadline(), Some(at + Duration::from_secs(1)));
    }

    #[test]
    fn preempts_lower_priority_master_when_master_down_timer_runs_out() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let down = t0 + vr.master_down_interval();
        let mut t = t0;
        while t + secs(1.0) < down {
            t += secs(1.0);
            // Lower-priority adverts are ignored: the timer is not reset.
            assert!(vr.handle(t, advert_from(&vr, 100)).is_empty());
            assert_eq!(vr.next_deadline(), Some(down));
        }
        assert_eq!(to_master(&mut vr), down);
        // The old master's next advert is answered at once, and since hosts may still
        // hold its MAC for the addresses, they are announced again.
        assert_eq!(
            vr.handle(down + secs(0.2), advert_from(&vr, 100)),
            vec![Action::SendAdvert { priority: 150 }, Action::Reannounce]
        );
    }

    #[test]
    fn nopreempt_stays_backup_under_lower_priority_master() {
        let t0 = Instant::now();
        let mut vr = started(
            Config {
                preempt: false,
                ..cfg(150)
            },
            t0,
        );
        for i in 1..=20 {
            let t = t0 + secs(f64::from(i));
            vr.handle(t, advert_from(&vr, 100));
            vr.handle(t, Event::Timer);
        }
        assert_eq!(vr.state(), State::Backup);
        // The master goes away: we take over after the master-down interval.
        let last = t0 + secs(20.0);
        assert_eq!(vr.next_deadline(), Some(last + vr.master_down_interval()));
        to_master(&mut vr);
    }

    #[test]
    fn owner_preempts_even_with_nopreempt() {
        let t0 = Instant::now();
        let mut vr = started(
            Config {
                preempt: false,
                ..cfg(200)
            },
            t0,
        );
        // Forge an owner that started as backup: only reachable through a sync group,
        // so check the rule itself.
        vr.base_priority = PRIORITY_OWNER;
        assert!(vr.may_preempt());
    }

    #[test]
    fn preempt_delay_holds_back_preemption() {
        let t0 = Instant::now();
        let mut vr = started(
            Config {
                preempt_delay: secs(10.0),
                ..cfg(150)
            },
            t0,
        );
        let mut became_master = None;
        for i in 1..=30 {
            let t = t0 + secs(f64::from(i));
            if let Some(at) = vr.next_deadline().filter(|&at| at <= t)
                && vr.handle(at, Event::Timer).contains(&Action::BecomeMaster)
            {
                became_master = Some(at);
                break;
            }
            vr.handle(t, advert_from(&vr, 100));
        }
        // The lower master's adverts held us back until the delay (from start) ran out at
        // 10 s; the last one accepted came at 9 s, so MASTER at 9 s + master-down.
        assert_eq!(
            became_master,
            Some(t0 + secs(9.0) + vr.master_down_interval())
        );
        assert_eq!(vr.master_down_interval(), Duration::from_micros(3_414_062));
    }

    #[test]
    fn preempt_delay_restarts_after_higher_priority_master() {
        let t0 = Instant::now();
        let mut vr = started(
            Config {
                preempt_delay: secs(5.0),
                ..cfg(150)
            },
            t0,
        );
        // A better master first: the delay is cleared.
        vr.handle(t0 + secs(1.0), advert_from(&vr, 200));
        assert_eq!(vr.preempt_at, None);
        // Then a worse one at t=20: the delay starts from there.
        let t = t0 + secs(20.0);
        vr.handle(t0 + secs(2.0), advert_from(&vr, 200));
        vr.down_at = Some(t + secs(100.0)); // keep the timer out of the way
        vr.handle(t, advert_from(&vr, 100));
        assert_eq!(vr.preempt_at, Some(t + secs(5.0)));
        // While it runs, lower adverts still reset the timer.
        vr.handle(t + secs(4.0), advert_from(&vr, 100));
        assert_eq!(
            vr.next_deadline(),
            Some(t + secs(4.0) + vr.master_down_interval())
        );
        // After it, they do not.
        vr.handle(t + secs(5.0), advert_from(&vr, 100));
        assert_eq!(
            vr.next_deadline(),
            Some(t + secs(4.0) + vr.master_down_interval())
        );
    }

    #[test]
    fn peer_down_of_the_master_takes_over_at_once() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        vr.handle(t0 + secs(1.0), advert_from(&vr, 200));
        let t = t0 + secs(1.2);
        let actions = vr.handle(t, Event::PeerDown { peer: ip(PEER) });
        assert!(actions.contains(&Action::BecomeMaster), "{actions:?}");
        assert_eq!(vr.state(), State::Master);
        assert_eq!(vr.stats().peer_down_takeovers, 1);
        // As MASTER, a second report changes nothing.
        assert!(vr.handle(t, Event::PeerDown { peer: ip(PEER) }).is_empty());
        assert_eq!(vr.stats().peer_down_ignored, 1);
    }

    #[test]
    fn peer_down_of_another_router_or_before_any_master_is_ignored() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        // No master heard yet: the RFC's timers decide.
        assert!(vr.handle(t0, Event::PeerDown { peer: ip(PEER) }).is_empty());
        vr.handle(t0 + secs(1.0), advert_from(&vr, 200));
        let other: IpAddr = "192.0.2.77".parse().unwrap();
        let deadline = vr.next_deadline();
        assert!(
            vr.handle(t0 + secs(1.1), Event::PeerDown { peer: other })
                .is_empty()
        );
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(vr.next_deadline(), deadline);
        assert_eq!(vr.stats().peer_down_ignored, 2);
        assert_eq!(vr.stats().peer_down_takeovers, 0);
    }

    #[test]
    fn priority_zero_means_takeover_after_skew_time() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        vr.handle(t0 + secs(1.0), advert_from(&vr, 200));
        let t = t0 + secs(1.5);
        assert!(vr.handle(t, advert_from(&vr, 0)).is_empty());
        assert_eq!(vr.next_deadline(), Some(t + Duration::from_micros(414_062)));
        assert_eq!(to_master(&mut vr), t + Duration::from_micros(414_062));
        assert_eq!(vr.stats().priority_zero_received, 1);
    }

    #[test]
    fn master_answers_priority_zero_with_an_advert() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        let t = at + secs(0.3);
        assert_eq!(
            vr.handle(t, advert_from(&vr, 0)),
            vec![Action::SendAdvert { priority: 150 }]
        );
        assert_eq!(vr.next_deadline(), Some(t + secs(1.0)));
        assert_eq!(vr.state(), State::Master);
    }

    #[test]
    fn master_steps_down_for_higher_priority_or_higher_address() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        assert_eq!(
            vr.handle(at, advert_from(&vr, 151)),
            vec![Action::BecomeBackup]
        );
        assert_eq!(vr.master(), Some((ip(PEER), 151)));
        assert_eq!(vr.stats().released_master, 1);

        // Equal priority: the higher primary address wins (PEER .12 > ME .11).
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        assert_eq!(
            vr.handle(at, advert_from(&vr, 150)),
            vec![Action::BecomeBackup]
        );

        // Equal priority from a lower address: we stay and answer.
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        let low = Event::Advert {
            from: ip("192.0.2.10"),
            advert: vr.advert(150),
        };
        assert_eq!(
            vr.handle(at, low),
            vec![Action::SendAdvert { priority: 150 }, Action::Reannounce]
        );
        assert_eq!(vr.state(), State::Master);
    }

    #[test]
    fn master_answers_a_lower_priority_advert_and_announces_again() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        let sent = vr.stats().adverts_sent;
        assert_eq!(
            vr.handle(at, advert_from(&vr, 100)),
            vec![Action::SendAdvert { priority: 150 }, Action::Reannounce]
        );
        assert_eq!(vr.stats().adverts_sent, sent + 1);
        assert_eq!(vr.state(), State::Master);

        // A flood of them is answered once per advert interval, not 1:1.
        let interval = cfg(150).advert_interval;
        for n in 1..100u32 {
            let at = at + interval * n / 100;
            assert_eq!(vr.handle(at, advert_from(&vr, 100)), vec![], "advert {n}");
        }
        assert_eq!(
            vr.handle(at + interval, advert_from(&vr, 100)),
            vec![Action::SendAdvert { priority: 150 }, Action::Reannounce]
        );
        assert_eq!(vr.state(), State::Master);

        // lower_prio_no_advert: the addresses are announced, no advert is sent.
        let mut vr = started(
            Config {
                lower_prio_no_advert: true,
                ..cfg(150)
            },
            t0,
        );
        let at = to_master(&mut vr);
        let sent = vr.stats().adverts_sent;
        assert_eq!(
            vr.handle(at, advert_from(&vr, 100)),
            vec![Action::Reannounce]
        );
        assert_eq!(vr.stats().adverts_sent, sent);
    }

    #[test]
    fn reconfigure_changes_priority_and_preemption_in_place() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        vr.handle(at, Event::PriorityAdjust(-20));
        assert_eq!(vr.priority(), 130);
        assert_eq!(
            vr.reconfigure(&Tunables {
                preempt: false,
                ..cfg(50).tunables()
            }),
            Ok(())
        );
        // Still MASTER (no new election), now with base 50 and the tracking kept.
        assert_eq!(vr.state(), State::Master);
        assert_eq!((vr.base_priority(), vr.priority()), (50, 30));
        assert!(!vr.config().preempt);
        let t = at + secs(1.0);
        assert_eq!(
            vr.handle(t, Event::Timer),
            vec![Action::SendAdvert { priority: 30 }]
        );
        // A peer at 100 now wins.
        assert_eq!(
            vr.handle(t, advert_from(&vr, 100)),
            vec![Action::BecomeBackup]
        );

        // A BACKUP raised above the master preempts it once its timer runs out.
        let mut vr = started(cfg(100), t0);
        assert!(vr.handle(t0, advert_from(&vr, 150)).is_empty());
        vr.reconfigure(&cfg(200).tunables()).unwrap();
        let down = vr.next_deadline().unwrap();
        assert!(
            vr.handle(down - secs(0.5), advert_from(&vr, 150))
                .is_empty()
        );
        assert_eq!(
            vr.next_deadline(),
            Some(down),
            "a lower master no longer holds us"
        );
        assert_eq!(to_master(&mut vr), down);
    }

    #[test]
    fn a_learned_master_interval_is_capped_at_ten_times_ours() {
        let t0 = Instant::now();
        let v3 = |p| Config {
            version: Version::V3,
            advert_interval: Duration::from_millis(100),
            ..cfg(p)
        };
        let mut vr = started(v3(100), t0);
        let mut slow = advert_from(&vr, 200);
        if let Event::Advert { advert, .. } = &mut slow {
            advert.max_advert_interval = Duration::from_millis(40_950);
        }
        assert!(vr.handle(t0, slow).is_empty());
        assert_eq!(vr.master_adver_interval(), Duration::from_secs(1));
        assert_eq!(vr.stats().capped_intervals, 1);
        // Master-down is then 3 x 1 s plus skew, not two minutes.
        let down = vr.next_deadline().unwrap();
        assert!(down - t0 < Duration::from_secs(4), "{:?}", down - t0);
    }

    #[test]
    fn reconfigure_refuses_to_make_or_unmake_an_owner() {
        // Only tunables can be given at all: the vrid, interval, addresses and
        // authentication are not among them, so no reload can change them in place.
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let before = vr.config().clone();
        for (new, why) in [(255, "priority 255 (address owner)"), (0, "priority 0")] {
            assert_eq!(vr.reconfigure(&cfg(new).tunables()), Err(why));
            assert_eq!(vr.config(), &before, "nothing changed");
        }
        let mut owner = started(cfg(255), t0);
        assert_eq!(
            owner.reconfigure(&cfg(254).tunables()),
            Err("priority 255 (address owner)")
        );
        assert_eq!(owner.reconfigure(&cfg(255).tunables()), Ok(()));
    }

    #[test]
    fn higher_prio_send_advert_answers_before_giving_way() {
        let t0 = Instant::now();
        let mut vr = started(
            Config {
                higher_prio_send_advert: true,
                ..cfg(150)
            },
            t0,
        );
        let at = to_master(&mut vr);
        assert_eq!(
            vr.handle(at, advert_from(&vr, 200)),
            vec![Action::SendAdvert { priority: 150 }, Action::BecomeBackup]
        );
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(vr.master(), Some((ip(PEER), 200)));
        // As BACKUP it stays silent under the new master.
        assert!(vr.handle(at, advert_from(&vr, 200)).is_empty());
    }

    #[test]
    fn owner_goes_master_at_once_and_ignores_tracking() {
        let t0 = Instant::now();
        let mut vr = Instance::new(cfg(255)).unwrap();
        assert_eq!(
            vr.handle(t0, Event::Start),
            vec![Action::SendAdvert { priority: 255 }, Action::BecomeMaster]
        );
        vr.handle(t0, Event::PriorityAdjust(-100));
        assert_eq!(vr.priority(), 255);
        assert_eq!(
            vr.handle(t0 + secs(1.0), Event::Timer),
            vec![Action::SendAdvert { priority: 255 }]
        );
    }

    #[test]
    fn two_owners_the_local_one_steps_down_to_254() {
        let t0 = Instant::now();
        let mut vr = started(cfg(255), t0);
        let actions = vr.handle(t0 + secs(0.5), advert_from(&vr, 255));
        assert_eq!(
            actions,
            vec![
                Action::VridClash {
                    peer: ip(PEER),
                    what: Clash::Owner
                },
                Action::BecomeBackup
            ]
        );
        assert_eq!(vr.priority(), 254);
        assert_eq!(vr.base_priority(), 254);
        assert_eq!(vr.stats().clashes(Clash::Owner), 1);
    }

    #[test]
    fn tracking_weights_clamp_like_keepalived() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        vr.handle(t0, Event::PriorityAdjust(-30));
        assert_eq!(vr.priority(), 70);
        vr.handle(t0, Event::PriorityAdjust(-200));
        assert_eq!(vr.priority(), 1);
        vr.handle(t0, Event::PriorityAdjust(200));
        assert_eq!(vr.priority(), 254);
        vr.handle(t0, Event::PriorityAdjust(i32::MIN));
        assert_eq!(vr.priority(), 1);
        vr.handle(t0, Event::PriorityAdjust(0));
        assert_eq!(vr.priority(), 100);
        assert_eq!(vr.base_priority(), 100);
    }

    #[test]
    fn priority_change_moves_a_running_master_down_timer() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        assert_eq!(
            vr.next_deadline(),
            Some(t0 + Duration::from_micros(3_609_375))
        );
        vr.handle(t0 + secs(1.0), Event::PriorityAdjust(100));
        // Skew for 200: 56 / 256 s = 218 750 µs.
        assert_eq!(
            vr.next_deadline(),
            Some(t0 + Duration::from_micros(3_218_750))
        );
    }

    #[test]
    fn master_keeps_advertising_its_lowered_priority() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        assert!(vr.handle(at, Event::PriorityAdjust(-60)).is_empty());
        assert_eq!(vr.state(), State::Master);
        assert_eq!(
            vr.handle(at + secs(1.0), Event::Timer),
            vec![Action::SendAdvert { priority: 90 }]
        );
    }

    #[test]
    fn fault_and_recovery() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        assert_eq!(
            vr.handle(at, Event::FaultSet(true)),
            vec![Action::SendAdvert { priority: 0 }, Action::BecomeFault]
        );
        assert_eq!(vr.state(), State::Fault);
        assert_eq!(vr.next_deadline(), None);
        assert!(vr.handle(at, Event::FaultSet(true)).is_empty());
        // Adverts do not move a faulted instance.
        assert!(vr.handle(at + secs(1.0), advert_from(&vr, 1)).is_empty());
        assert_eq!(vr.state(), State::Fault);

        let t = at + secs(5.0);
        assert_eq!(
            vr.handle(t, Event::FaultSet(false)),
            vec![Action::BecomeBackup]
        );
        assert_eq!(vr.next_deadline(), Some(t + vr.master_down_interval()));
        assert_eq!(vr.stats().priority_zero_sent, 1);

        // Backup to fault sends nothing.
        assert_eq!(
            vr.handle(t, Event::FaultSet(true)),
            vec![Action::BecomeFault]
        );
    }

    #[test]
    fn fault_before_start_starts_in_fault() {
        let t0 = Instant::now();
        let mut vr = Instance::new(cfg(150)).unwrap();
        assert!(vr.handle(t0, Event::FaultSet(true)).is_empty());
        assert_eq!(vr.handle(t0, Event::Start), vec![Action::BecomeFault]);
        assert_eq!(
            vr.handle(t0, Event::FaultSet(false)),
            vec![Action::BecomeBackup]
        );
    }

    #[test]
    fn owner_leaves_fault_as_master() {
        let t0 = Instant::now();
        let mut vr = started(cfg(255), t0);
        vr.handle(t0, Event::FaultSet(true));
        assert_eq!(
            vr.handle(t0 + secs(1.0), Event::FaultSet(false)),
            vec![Action::SendAdvert { priority: 255 }, Action::BecomeMaster]
        );
    }

    #[test]
    fn shutdown_sends_priority_zero_only_from_master() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        assert_eq!(
            vr.handle(at, Event::Shutdown),
            vec![Action::SendAdvert { priority: 0 }, Action::Stop]
        );
        assert_eq!(vr.state(), State::Initialize);
        assert_eq!(vr.next_deadline(), None);
        assert!(vr.handle(at, Event::Shutdown).is_empty());
        // Adverts to a stopped instance are ignored.
        assert!(vr.handle(at, advert_from(&vr, 200)).is_empty());

        let mut vr = started(cfg(150), t0);
        assert_eq!(vr.handle(t0, Event::Shutdown), vec![Action::Stop]);
        // And it can start again.
        assert_eq!(vr.handle(t0, Event::Start), vec![Action::BecomeBackup]);
    }

    #[test]
    fn split_brain_is_reported_once_per_interval() {
        let t0 = Instant::now();
        let mut vr = started(
            Config {
                report_interval: secs(30.0),
                ..cfg(150)
            },
            t0,
        );
        let at = to_master(&mut vr);
        let grace = vr.master_down_interval();
        let mut reports = Vec::new();
        for i in 0..=70 {
            let t = at + secs(f64::from(i)) + secs(0.5);
            for a in vr.handle(t, advert_from(&vr, 100)) {
                if let Action::SplitBrain { .. } = a {
                    reports.push((t - at, a));
                }
            }
        }
        // First report once the peer kept advertising for a master-down interval
        // (3.41 s: at its 5th advert, 4 s after the first), then every 30 s.
        assert_eq!(reports.len(), 3);
        assert_eq!(reports[0].0, secs(4.5));
        assert!(secs(4.0) >= grace);
        assert_eq!(reports[1].0, secs(34.5));
        assert_eq!(reports[2].0, secs(64.5));
        assert_eq!(
            reports[0].1,
            Action::SplitBrain {
                peer: ip(PEER),
                peer_priority: 100
            }
        );
        assert_eq!(vr.stats().split_brain_reports, 3);
        assert_eq!(vr.stats().split_brain_adverts, 71 - 4);
        assert!(reports[0].1.to_string().contains("protocol 112"));
        assert_eq!(vr.state(), State::Master);
    }

    #[test]
    fn one_late_advert_after_takeover_is_not_split_brain() {
        let t0 = Instant::now();
        let mut vr = started(cfg(150), t0);
        let at = to_master(&mut vr);
        // The old master's in-flight advert, then it hears us and stops.
        vr.handle(at + secs(0.1), advert_from(&vr, 100));
        // Much later, a restarted peer briefly claims master again.
        vr.handle(at + secs(60.0), advert_from(&vr, 100));
        vr.handle(at + secs(61.0), advert_from(&vr, 100));
        assert_eq!(vr.stats().split_brain_adverts, 0);
    }

    #[test]
    fn address_clash_is_counted_reported_and_ignored() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        let down = vr.next_deadline();
        let mut advert = vr.advert(200);
        advert.addresses = vec![ip("192.0.2.201")];
        let ev = |t| {
            (
                t,
                Event::Advert {
                    from: ip(PEER),
                    advert: advert.clone(),
                },
            )
        };
        let (t, e) = ev(t0 + secs(1.0));
        assert_eq!(
            vr.handle(t, e),
            vec![Action::VridClash {
                peer: ip(PEER),
                what: Clash::Addresses
            }]
        );
        let (t, e) = ev(t0 + secs(2.0));
        assert!(vr.handle(t, e).is_empty());
        assert_eq!(vr.stats().clashes(Clash::Addresses), 2);
        // The clashing master does not hold us back.
        assert_eq!(vr.next_deadline(), down);
        assert_eq!(vr.stats().adverts_received, 0);
        // Same addresses in another order are not a clash.
        let mut vr2 = started(
            Config {
                addresses: vec![ip(VIP), ip("192.0.2.201")],
                ..cfg(100)
            },
            t0,
        );
        let mut advert = vr2.advert(200);
        advert.addresses.reverse();
        let ev = Event::Advert {
            from: ip(PEER),
            advert,
        };
        assert!(vr2.handle(t0, ev).is_empty());
        assert_eq!(vr2.stats().adverts_received, 1);
    }

    #[test]
    fn v2_interval_and_auth_clashes() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        let mut advert = vr.advert(200);
        advert.max_advert_interval = secs(2.0);
        let a = vr.handle(
            t0,
            Event::Advert {
                from: ip(PEER),
                advert,
            },
        );
        assert_eq!(
            a,
            vec![Action::VridClash {
                peer: ip(PEER),
                what: Clash::Interval
            }]
        );
        let mut advert = vr.advert(200);
        advert.auth = Some(*b"1111\0\0\0\0");
        vr.handle(
            t0,
            Event::Advert {
                from: ip(PEER),
                advert,
            },
        );
        assert_eq!(vr.stats().clashes(Clash::Auth), 1);
        assert_eq!(vr.state(), State::Backup);
    }

    #[test]
    fn dropped_packets_are_counted_and_clashes_reported() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        let drop = |reason| Event::Dropped {
            from: ip(PEER),
            reason,
        };
        assert!(vr.handle(t0, drop(DropReason::BadChecksum)).is_empty());
        assert!(vr.handle(t0, drop(DropReason::BadTtl)).is_empty());
        assert_eq!(
            vr.handle(t0, drop(DropReason::AuthMismatch)),
            vec![Action::VridClash {
                peer: ip(PEER),
                what: Clash::Auth
            }]
        );
        assert!(
            vr.handle(t0 + secs(1.0), drop(DropReason::AuthTypeMismatch))
                .is_empty()
        );
        assert_eq!(
            vr.handle(t0 + secs(1.0), drop(DropReason::VersionMismatch)),
            vec![Action::VridClash {
                peer: ip(PEER),
                what: Clash::Version
            }]
        );
        // Reported again once the report interval has passed.
        assert_eq!(
            vr.handle(t0 + DEFAULT_REPORT_INTERVAL, drop(DropReason::AuthMismatch))
                .len(),
            1
        );
        let s = vr.stats();
        assert_eq!(s.drops(DropReason::BadChecksum), 1);
        assert_eq!(s.drops(DropReason::AuthMismatch), 2);
        assert_eq!(s.clashes(Clash::Auth), 3);
        assert_eq!(vr.state(), State::Backup);
    }

    #[test]
    fn own_and_foreign_adverts_are_ignored() {
        let t0 = Instant::now();
        let mut vr = started(cfg(100), t0);
        let down = vr.next_deadline();
        let own = Event::Advert {
            from: ip(ME),
            advert: vr.advert(200),
        };
        assert!(vr.handle(t0 + secs(1.0), own).is_empty());
        let mut advert = vr.advert(200);
        advert.vrid = 52;
        let other = Event::Advert {
            from: ip(PEER),
            advert,
        };
        assert!(vr.handle(t0 + secs(1.0), other).is_empty());
        assert_eq!(vr.next_deadline(), down);
        assert_eq!(vr.stats().own_adverts, 1);
        assert_eq!(vr.stats().other_vrid, 1);
    }

    #[test]
    fn config_validation() {
        let me = ip(ME);
        assert_eq!(
            Instance::new(Config::new(0, me)).unwrap_err(),
            ConfigError::Vrid
        );
        let c = Config {
            priority: 0,
            ..Config::new(1, me)
        };
        assert_eq!(
            Instance::new(c).unwrap_err(),
            ConfigError::Priority { vrid: 1 }
        );
        let c = Config {
            advert_interval: secs(0.5),
            ..Config::new(1, me)
        };
        let err = Instance::new(c).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Advert {
                vrid: 1,
                source: AdvertError::IntervalV2 { .. }
            }
        ));
        assert_eq!(err.to_string(), "virtual router 1: cannot be advertised");
        let c = Config {
            advert_interval: secs(0.5),
            version: Version::V3,
            ..Config::new(1, me)
        };
        assert!(Instance::new(c).is_ok());
        let c = Config {
            addresses: vec![ip("2001:db8::1")],
            ..Config::new(1, me)
        };
        assert!(Instance::new(c).is_err());
        // IPv6 defaults to version 3, as in keepalived; v2 over IPv6 is refused.
        let c = Config {
            preempt_delay: secs(1001.0),
            ..Config::new(1, me)
        };
        assert!(matches!(
            Instance::new(c),
            Err(ConfigError::PreemptDelay { vrid: 1, .. })
        ));
        let c = Config::new(1, ip("fe80::1"));
        assert_eq!(c.version, Version::V3);
        assert!(Instance::new(c).is_ok());
        assert!(
            Instance::new(Config {
                version: Version::V2,
                ..Config::new(1, ip("fe80::1"))
            })
            .is_err()
        );
    }

    #[test]
    fn expect_matches_config() {
        let vr = Instance::new(Config {
            auth: Some(*b"pass\0\0\0\0"),
            ..cfg(100)
        })
        .unwrap();
        let e = vr.expect();
        assert_eq!(e.version, Version::V2);
        assert_eq!(e.auth, Some(*b"pass\0\0\0\0"));
        assert!(e.check_ttl);
        assert!(!e.unicast);
    }

    #[test]
    fn names() {
        assert_eq!(State::Master.to_string(), "MASTER");
        for (i, c) in Clash::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(Clash::from_drop(DropReason::BadChecksum), None);
    }
}
