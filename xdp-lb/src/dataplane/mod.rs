//! The data plane as the daemon sees it: the embedded XDP program, its attachment to
//! interfaces, and typed writes to its maps.
//!
//! Writers keep the kernel's view consistent at every instant: a schedule is written
//! into a fresh range of the pool before the service entry that points to it is
//! replaced (one map update), so a packet never sees a half-written schedule. The
//! replaced range is reused only after a grace period (see [`pool`]). Backends are
//! replaced the same way: the new value goes into a spare entry of the value pool
//! `BACKEND_VALUES`, then one u32 write to `BACKEND_SLOT[id]` switches to it.
pub mod by_family;
pub mod filter;
pub mod nat;
pub mod pins;
pub mod pool;
pub mod refusal;
pub mod selector;
pub mod service_index;
pub mod stats;

pub use pins::{Adoption, Pins};
use selector::{PooledSelector, Target};

use std::collections::HashMap as StdHashMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap, LpmTrie, MapData, MapError, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
};
use tracing::warn;
use xdp_lb_common::{
    BACKEND_VALUE_EMPTY, BACKEND_VALUE_SLOTS, BackendStats, BackendValue, CONFIG_FLOW_CACHE,
    FLOW_CACHE_WAYS, FilterKeyV4, FilterKeyV6, FilterValue, FlowCacheConfig, FlowCacheSet, FlowKey,
    FlowKeyV4, MAX_BACKENDS, MAX_FILTER_RULES, NatOrigin, PersistKey, PersistValue,
    SCHEDULE_POOL_SLOTS, SERVICE_F_ACTIVE, SERVICE_F_AGING, SERVICE_F_FILTER, SERVICE_F_FILTER_GEN,
    SERVICE_F_FILTER_GLOBAL, SERVICE_F_NO_FLOW_TABLE, SERVICE_SCRATCH_BASE, ServiceEntryV4,
    ServiceKey, ServiceKeyV4, ServiceStats, ServiceValue,
};

use crate::config;
use pool::{GRACE, PoolExhausted, RangePool, SystemClock};

/// The XDP program, built by build.rs and embedded so one binary is all a host needs.
pub static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb"));
/// A trivial MAC-swap `XDP_TX` program: the floor `cargo xtask bench` compares against.
pub static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-floor"));
/// The minimal DR program `cargo xtask bench` compares against (see its source).
pub static DR_REF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-dr-ref"));

pub const PROGRAM_NAME: &str = "xdp_lb";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "missing privileges: loading an XDP program needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    )]
    Privileges,
    #[error("loading the XDP program failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the XDP program was rejected by the kernel: {0}")]
    Verify(#[source] ProgramError),
    #[error(
        "the kernel's verifier refused the XDP program: {reason}\n  after:\n    {context}\n  {hint}"
    )]
    Refused {
        reason: String,
        /// The instructions before the reason, one per line.
        context: String,
        hint: String,
    },
    #[error("the embedded object has no map `{0}`; rebuild with `cargo xtask build-ebpf`")]
    MissingMap(&'static str),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("attaching XDP to `{iface}` in {mode} mode failed: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map `EGRESS`: cannot add ifindex {ifindex} as a redirect target: {reason}")]
    Egress { ifindex: u32, reason: String },
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    #[error("backend id {0} is out of range (max {MAX_BACKENDS})")]
    BackendId(u32),
    #[error("filter rule number {0} is out of range (max {MAX_FILTER_RULES})")]
    FilterRule(u32),
    #[error(transparent)]
    Pool(#[from] PoolExhausted),
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// The error of a failed operation on a [`by_family::ByFamily`] map.
fn failed((name, source): by_family::Failed) -> DataplaneError {
    DataplaneError::Map { name, source }
}

/// How a service is installed: its keys, id, forwarding and the backend ids of its
/// schedule slots (the output of `schedule::*` mapped to backend ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its (first) key, and whether XDP forwards it now (else its packets go to the
    /// kernel: a VRRP instance holding the VIP is not MASTER).
    pub key: ServiceKey,
    pub active: bool,
    /// A server group's further keys, each with its own `active`: they all get the
    /// same value (id, schedule), so flows, counters and persistence are shared.
    pub group_keys: Vec<(ServiceKey, bool)>,
    pub id: u32,
    pub forwarding: u8,
    pub select: u8,
    /// `ServiceValue::persist_secs` (0: no persistence) and the number of leading
    /// bits of the 16-byte client address that make one client.
    pub persist_secs: u32,
    pub persist_prefix: u8,
    /// A consistent-hash service that keeps no flow entries ([`SERVICE_F_NO_FLOW_TABLE`]).
    pub no_flow_table: bool,
    /// Its flows carry a clock and expire ([`SERVICE_F_AGING`]).
    pub ages: bool,
    /// The service has source-filter rules of its own ([`SERVICE_F_FILTER`]).
    pub filtered: bool,
    /// The global deny list is not empty ([`SERVICE_F_FILTER_GLOBAL`]).
    pub global_filter: bool,
    /// The filter generation its packets read (0 or 1, [`SERVICE_F_FILTER_GEN`]).
    pub filter_generation: u32,
    pub slots: Vec<u32>,
}

impl ServiceSpec {
    /// Every key with its `active`, the first key first.
    pub fn entries(&self) -> impl Iterator<Item = (ServiceKey, bool)> + '_ {
        std::iter::once((self.key, self.active)).chain(self.group_keys.iter().copied())
    }

    /// The `SERVICES` value of a key of this spec (forwarded if `active`) once its
    /// slots sit at `sched_base` in the schedule pool.
    pub fn value(&self, sched_base: u32, active: bool) -> ServiceValue {
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        ServiceValue {
            id: self.id,
            flags: flag(active, SERVICE_F_ACTIVE)
                | flag(self.no_flow_table, SERVICE_F_NO_FLOW_TABLE)
                | flag(self.ages, SERVICE_F_AGING)
                | flag(self.filtered, SERVICE_F_FILTER)
                | flag(self.global_filter, SERVICE_F_FILTER_GLOBAL)
                | flag(self.filter_generation & 1 == 1, SERVICE_F_FILTER_GEN),
            forwarding: self.forwarding,
            select: self.select,
            _pad: [0; 2],
            sched_base,
            sched_len: self.slots.len() as u32,
            persist_secs: self.persist_secs,
            persist_mask: xdp_lb_common::prefix_mask(self.persist_prefix),
        }
    }
}

pub struct Dataplane {
    ebpf: Ebpf,
    pub(crate) services: by_family::ServiceMap,
    /// Derived from the IPv4 services, slot by slot (see `service_index`).
    service_index: service_index::ServiceIndex,
    /// `BACKEND_SLOT` → `BACKEND_VALUES`, by backend id.
    pub(crate) backends: PooledSelector<BackendValue>,
    pub(crate) schedule: Array<MapData, u32>,
    egress: DevMapHash<MapData>,
    pub(crate) service_stats: PerCpuArray<MapData, ServiceStats>,
    pub(crate) backend_stats: PerCpuArray<MapData, BackendStats>,
    pub(crate) global_stats: PerCpuArray<MapData, u64>,
    pub(crate) flows: by_family::FlowTable,
    pub(crate) nat_replies: by_family::ReplyTable,
    pub(crate) persist: HashMap<MapData, PersistKey, PersistValue>,
    pub(crate) config: Array<MapData, u64>,
    /// The program's flow cache (`FLOW_CACHE`), read only for [`Dataplane::cached_pin`].
    flow_cache: Array<MapData, FlowCacheSet>,
    /// When the flood guard last saw a SYN flood (`FLOOD_SEEN`).
    pub(crate) flood_seen: Array<MapData, u64>,
    pub(crate) nat_ports: Array<MapData, u64>,
    nat_origins: HashMap<MapData, ServiceKey, NatOrigin>,
    filter_v4: LpmTrie<MapData, FilterKeyV4, FilterValue>,
    filter_v6: LpmTrie<MapData, FilterKeyV6, FilterValue>,
    filter_stats: PerCpuArray<MapData, u64>,
    /// What each filter generation holds: (scope, address, prefix length).
    filter_written: [std::collections::BTreeSet<(u32, std::net::IpAddr, u8)>; 2],
    pool: RangePool,
    /// Live schedule range per service id (a group's keys share one).
    ranges: StdHashMap<u32, std::ops::Range<u32>>,
    /// The service id each installed key's value names.
    owners: StdHashMap<ServiceKey, u32>,
    /// Where the connection state and the attachments are pinned, if anywhere.
    pins: Option<Pins>,
    adopted: Vec<&'static str>,
}

/// The program's flow cache (see its `flow_cache`): each CPU's sets of `ways` flows,
/// and the generation they count in (the daemon starts a new one every second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowCacheState {
    pub sets_per_cpu: u32,
    pub ways: u32,
    pub generation: u32,
}

/// A flow's entry in a CPU's flow cache: its real server, under its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedPin {
    pub backend: u16,
    pub service: u16,
}

/// Where and how the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    Driver,
    Generic,
}

impl AttachedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Generic => "generic",
        }
    }
}

/// Attaches `program` to `iface` in `mode` (see [`Dataplane::attach`]).
fn attach_in_mode(
    program: &mut Xdp,
    iface: &str,
    mode: config::XdpMode,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachedMode), DataplaneError> {
    let attach = |program: &mut Xdp, m: AttachedMode| {
        let flags = match m {
            AttachedMode::Driver => XdpMode::Driver,
            AttachedMode::Generic => XdpMode::Skb,
        };
        program
            .attach(iface, flags)
            .map(|id| (id, m))
            .map_err(|source| DataplaneError::Attach {
                iface: iface.to_string(),
                mode: m.as_str(),
                source,
            })
    };
    match mode {
        config::XdpMode::Driver => attach(program, AttachedMode::Driver),
        config::XdpMode::Generic => attach(program, AttachedMode::Generic),
        config::XdpMode::Auto => match attach(program, AttachedMode::Driver) {
            Ok(m) => Ok(m),
            Err(e) => {
                warn!(interface = iface, error = %e, "driver-mode XDP unavailable, falling back to generic mode (slower)");
                attach(program, AttachedMode::Generic)
            }
        },
    }
}

/// How many CPU ids there can be: one more than the highest possible CPU's
/// (`/sys/devices/system/cpu/possible`, e.g. `0-63`).
fn possible_cpu_ids() -> Result<u32, DataplaneError> {
    const POSSIBLE: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(POSSIBLE).map_err(DataplaneError::Cpus)?;
    cpu_ids_end(&text).ok_or_else(|| {
        DataplaneError::Cpus(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{POSSIBLE} holds {text:?}, not a CPU list"),
        ))
    })
}

/// One more than the highest CPU id of a kernel CPU list (`0-3,8-11` → 12).
fn cpu_ids_end(list: &str) -> Option<u32> {
    list.trim()
        .split(',')
        .map(|range| {
            let last = range.rsplit('-').next()?;
            last.trim().parse::<u32>().ok()?.checked_add(1)
        })
        .try_fold(0, |end, range_end| Some(end.max(range_end?)))
}

/// The capacity of the connection-state tables: `[dataplane] max_flows` entries for
/// the IPv4 ones and persistence, `max_flows_v6` for the IPv6 ones (0: no IPv6 table,
/// made as small as the kernel allows). They are preallocated, so this is their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowCapacity {
    pub max_flows: u32,
    pub max_flows_v6: u32,
}

impl FlowCapacity {
    /// The entries state map `map` is created with (a map holds at least one).
    pub fn entries(&self, map: &pins::StateMap) -> u32 {
        match map.sized_by {
            pins::SizedBy::MaxFlows => self.max_flows,
            pins::SizedBy::MaxFlowsV6 => self.max_flows_v6,
        }
        .max(1)
    }
}

/// The same capacity for both IP versions.
impl From<u32> for FlowCapacity {
    fn from(max_flows: u32) -> Self {
        FlowCapacity {
            max_flows,
            max_flows_v6: max_flows,
        }
    }
}

impl Dataplane {
    /// Loads the embedded program (verifier included) and opens its maps.
    pub fn load(capacity: impl Into<FlowCapacity>) -> Result<Dataplane, DataplaneError> {
        Self::load_object(PROGRAM_OBJECT, capacity.into(), None)
    }

    /// [`Dataplane::load`] with the connection state pinned in `pins`: what an earlier
    /// run left there (and this build can read) is adopted; see [`pins`].
    pub fn load_pinned(capacity: FlowCapacity, pins: Pins) -> Result<Dataplane, DataplaneError> {
        Self::load_object(PROGRAM_OBJECT, capacity, Some(pins))
    }

    fn load_object(
        object: &[u8],
        capacity: FlowCapacity,
        pins: Option<Pins>,
    ) -> Result<Dataplane, DataplaneError> {
        let mut loader = EbpfLoader::new();
        for map in pins::STATE_MAPS {
            loader.map_max_entries(map.name, capacity.entries(&map));
        }
        let cpus = possible_cpu_ids()?;
        // The pool of service entries, then a scratch entry for each possible CPU id.
        loader.map_max_entries("SERVICE_ENTRIES_V4", SERVICE_SCRATCH_BASE + cpus);
        // The flow cache: a run of sets for each possible CPU id.
        let cache_bits = xdp_lb_common::flow_cache_bits(capacity.max_flows, cpus);
        loader.map_max_entries("FLOW_CACHE", cpus << cache_bits);
        let adopted = match &pins {
            Some(p) => {
                let kept = p.check_state_maps(capacity);
                for map in pins::STATE_MAPS {
                    loader.map_pin_path(map.name, p.map(map.name));
                }
                kept
            }
            None => Vec::new(),
        };
        let mut ebpf = loader.load(object).map_err(|e| {
            if is_permission_error(&e) {
                DataplaneError::Privileges
            } else {
                DataplaneError::Load(Box::new(e))
            }
        })?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingMap("program xdp_lb"))?
            .try_into()
            .map_err(DataplaneError::Verify)?;
        program.load().map_err(load_error)?;

        macro_rules! take {
            ($name:expr) => {{
                let map = ebpf
                    .take_map($name)
                    .ok_or(DataplaneError::MissingMap($name))?;
                map.try_into().map_err(map_err($name))?
            }};
        }
        // A map per IP version, taken by their pair of names.
        macro_rules! take_pair {
            ($names:expr) => {
                by_family::ByFamily::new(take!($names[0]), take!($names[1]), $names)
            };
        }
        let mut config: Array<MapData, u64> = take!("CONFIG");
        // Generation 1: the cache is on (see `renew_flow_cache`).
        let cache = FlowCacheConfig {
            generation: 1,
            bits: cache_bits,
        };
        config
            .set(CONFIG_FLOW_CACHE, cache.word(), 0)
            .map_err(map_err("CONFIG"))?;
        Ok(Dataplane {
            services: take_pair!(by_family::SERVICE_MAPS),
            service_index: service_index::ServiceIndex::new(
                take!("SERVICE_INDEX_V4"),
                take!("SERVICE_ENTRIES_V4"),
            ),
            backends: PooledSelector::new(
                (take!("BACKEND_SLOT"), take!("BACKEND_VALUES")),
                ("BACKEND_SLOT", "BACKEND_VALUES"),
                "backend value pool",
                BACKEND_VALUE_EMPTY + 1..BACKEND_VALUE_SLOTS,
                0,
            ),
            schedule: take!("SCHEDULE"),
            egress: take!("EGRESS"),
            service_stats: take!("SERVICE_STATS"),
            backend_stats: take!("BACKEND_STATS"),
            global_stats: take!("GLOBAL_STATS"),
            flows: take_pair!(by_family::FLOW_MAPS),
            nat_replies: take_pair!(by_family::NAT_REPLY_MAPS),
            persist: take!("PERSIST"),
            config,
            flow_cache: take!("FLOW_CACHE"),
            flood_seen: take!("FLOOD_SEEN"),
            nat_ports: take!("NAT_PORTS"),
            nat_origins: take!("NAT_ORIGINS"),
            filter_v4: take!("FILTER_V4"),
            filter_v6: take!("FILTER_V6"),
            filter_stats: take!("FILTER_STATS"),
            filter_written: Default::default(),
            ebpf,
            pool: RangePool::new("schedule pool", 0..SCHEDULE_POOL_SLOTS, GRACE),
            ranges: StdHashMap::new(),
            owners: StdHashMap::new(),
            pins,
            adopted,
        })
    }

    /// The state maps taken over from an earlier run (empty when none was pinned).
    pub fn adopted(&self) -> &[&'static str] {
        &self.adopted
    }

    /// Starts a new generation of the flow cache: every CPU's cached pins stop
    /// counting, so each cached flow's next packet looks itself up in the flow table
    /// (which keeps its LRU place) and caches what it finds there. The daemon calls it
    /// every second, and it follows every removal of flow entries.
    pub fn renew_flow_cache(&mut self) -> Result<(), DataplaneError> {
        let config = self.flow_cache_config()?;
        if config.generation == 0 {
            return Ok(()); // off
        }
        let renewed = config.renewed();
        self.config
            .set(CONFIG_FLOW_CACHE, renewed.word(), 0)
            .map_err(map_err("CONFIG"))
    }

    /// The flow cache's size and generation.
    pub fn flow_cache_state(&self) -> Result<FlowCacheState, DataplaneError> {
        let config = self.flow_cache_config()?;
        Ok(FlowCacheState {
            sets_per_cpu: config.sets_per_cpu(),
            ways: FLOW_CACHE_WAYS,
            generation: config.generation,
        })
    }

    fn flow_cache_config(&self) -> Result<FlowCacheConfig, DataplaneError> {
        let word = self
            .config
            .get(&CONFIG_FLOW_CACHE, 0)
            .map_err(map_err("CONFIG"))?;
        Ok(FlowCacheConfig::of(word))
    }

    /// The pin CPU `cpu`'s flow cache holds for IPv4 `flow` in the current generation
    /// (see the program's `flow_cache`), if any.
    pub fn cached_pin(
        &self,
        flow: &FlowKey,
        cpu: u32,
    ) -> Result<Option<CachedPin>, DataplaneError> {
        if FlowKeyV4::stored(flow).is_none() {
            return Ok(None);
        }
        let Ok(service) = self.service(&ServiceKey::of_flow(flow)) else {
            return Ok(None);
        };
        let config = self.flow_cache_config()?;
        let key = FlowCacheSet::key(flow, service.id);
        let set = self
            .flow_cache
            .get(&config.set_index(cpu, key), 0)
            .map_err(map_err("FLOW_CACHE"))?;
        if config.generation == 0 || set.generation != config.generation {
            return Ok(None);
        }
        Ok(set
            .keys
            .iter()
            .zip(set.backends)
            .find(|(k, _)| **k == key)
            .map(|(_, backend)| CachedPin {
                backend,
                service: service.id as u16,
            }))
    }

    /// Forgets every connection: flow, NAT reply and persistence entries.
    pub fn clear_connection_state(&mut self) -> usize {
        let mut removed = 0;
        let flows: Vec<FlowKey> = self.flows.keys().filter_map(Result::ok).collect();
        for k in &flows {
            removed += usize::from(self.flows.remove(k).is_ok());
        }
        let replies: Vec<FlowKey> = self.nat_replies.keys().filter_map(Result::ok).collect();
        for k in &replies {
            let _ = self.nat_replies.remove(k);
        }
        let persisted: Vec<PersistKey> = self.persist.keys().filter_map(Result::ok).collect();
        for k in &persisted {
            let _ = self.persist.remove(k);
        }
        if let Err(e) = self.renew_flow_cache() {
            warn!(error = %e, "could not renew the flow cache: cached flows keep their pins");
        }
        removed
    }

    pub fn pins(&self) -> Option<&Pins> {
        self.pins.as_ref()
    }

    /// A clean stop: the pins go, so XDP detaches when this process lets go of it.
    pub fn release_pins(&self) {
        if let Some(p) = &self.pins {
            p.remove();
        }
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .expect("program loaded in Dataplane::load")
    }

    /// The memory the connection-state tables lock, in bytes, as the kernel accounts
    /// it (`memlock` of each map's fdinfo); `None` if the kernel does not say.
    pub fn state_memory(&self) -> Option<u64> {
        let info = self.program().info().ok()?;
        let mut total = 0;
        for id in info.map_ids().ok()??.into_iter() {
            let map = aya::maps::MapInfo::from_id(id).ok()?;
            let name = map.name_as_str()?;
            if !pins::STATE_MAPS.iter().any(|m| m.name == name) {
                continue;
            }
            let fd = map.fd().ok()?;
            let fdinfo = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&fd))
            ))
            .ok()?;
            total += fdinfo
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))?
                .trim()
                .parse::<u64>()
                .ok()?;
        }
        Some(total)
    }

    /// Attaches to `iface`. `Auto` tries driver mode and falls back to generic mode
    /// with a warning; `Driver` and `Generic` insist. The attachment is a bpf_link:
    /// unpinned, it goes away with this process; pinned ([`pins`]), it stays until a
    /// clean stop, and a restart takes it over (`None`: the mode of the run that made it).
    pub fn attach(
        &mut self,
        iface: &str,
        mode: config::XdpMode,
    ) -> Result<Option<AttachedMode>, DataplaneError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .expect("program loaded in Dataplane::load");
        let mut chosen = None;
        let mut attach = |program: &mut Xdp| {
            let (id, m) = attach_in_mode(program, iface, mode)?;
            chosen = Some(m);
            Ok(id)
        };
        match &self.pins {
            Some(pins) => {
                pins.attach(program, iface, attach)?;
            }
            None => {
                attach(program)?;
            }
        }
        Ok(chosen)
    }

    /// Makes `ifindex` a redirect target (needed when a backend's egress interface is
    /// not the one its packets arrive on).
    pub fn add_egress(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::Egress {
                ifindex,
                reason: e.to_string(),
            })
    }

    /// Installs or replaces backend `id` in one visible step: the value is written to
    /// a spare entry of the value pool, then `BACKEND_SLOT[id]` is switched to it. The
    /// replaced entry is reused only after a grace period. An all-zero value (a
    /// removed backend) points the id at the shared empty entry and takes no space.
    pub fn set_backend(&mut self, id: u32, value: &BackendValue) -> Result<(), DataplaneError> {
        if id >= MAX_BACKENDS {
            return Err(DataplaneError::BackendId(id));
        }
        let target = if *value == BackendValue::default() {
            Target::Marker(BACKEND_VALUE_EMPTY)
        } else {
            Target::Value(value)
        };
        self.backends.select(id, target)?;
        // A real server that comes back active must not draw the flows some CPU cached
        // before it went away, which the flow table has moved since.
        self.renew_flow_cache()
    }

    /// The current value of backend `id`, as the program reads it.
    pub fn backend(&self, id: u32) -> Result<BackendValue, DataplaneError> {
        // The base is 0: every code selects an entry (the empty one included).
        Ok(self.backends.selected(id)?.unwrap_or_default())
    }

    /// Installs or replaces a service and its schedule: the schedule is written
    /// aside, then each key switches to it in one map update (a group's keys one
    /// after the other, each always seeing a whole schedule). If the schedule pool is
    /// short only because replaced ranges are in their grace period, this blocks
    /// until they are free (at most [`GRACE`]).
    pub fn set_service(&mut self, spec: &ServiceSpec) -> Result<(), DataplaneError> {
        let range = self
            .pool
            .allocate_waiting(spec.slots.len() as u32, &SystemClock)?;
        for (slot, backend) in range.clone().zip(&spec.slots) {
            if let Err(e) = self.schedule.set(slot, backend, 0) {
                // Nothing points at the range yet.
                self.pool.unused(range);
                return Err(map_err("SCHEDULE")(e));
            }
        }
        // The switch: from here on new flows of the first key read the new range.
        let value = spec.value(range.start, spec.active);
        let mut switched = false;
        let installed = self.change_service(&spec.key, |dp| {
            dp.services.insert(&spec.key, value).map_err(failed)?;
            switched = true;
            dp.own(spec.key, spec.id);
            Ok(())
        });
        if !switched {
            // Nothing points at the range.
            self.pool.unused(range);
            return installed;
        }
        if let Some(old) = self.ranges.insert(spec.id, range.clone()) {
            self.pool.retire(old, std::time::Instant::now());
        }
        installed?;
        for &(key, active) in &spec.group_keys {
            self.change_service(&key, |dp| {
                dp.services
                    .insert(&key, spec.value(range.start, active))
                    .map_err(failed)?;
                dp.own(key, spec.id);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Changes what the services map holds under `key` with `change`, keeping the IPv4
    /// service index true: the key's slot is marked shared first (its packets look
    /// their key up in the map while it changes) and settled from what is installed
    /// afterwards, whatever the change's outcome.
    fn change_service(
        &mut self,
        key: &ServiceKey,
        change: impl FnOnce(&mut Self) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        let Some(slot) = service_index::slot_of(key) else {
            return change(self);
        };
        self.service_index.open(slot)?;
        let changed = change(self);
        let settled = self.settle_index_slot(slot);
        changed.and(settled)
    }

    /// Settles an index slot from the installed IPv4 services whose keys hash to it
    /// (their values read back from the map, the authority).
    fn settle_index_slot(&mut self, slot: u32) -> Result<(), DataplaneError> {
        let mut installed = Vec::new();
        for key in self.owners.keys() {
            let Some(word) = ServiceKeyV4::stored(key).map(|k| k.word()) else {
                continue;
            };
            if ServiceKeyV4::index_slot(word) != slot {
                continue;
            }
            let value = self.services.get(key).map_err(failed)?;
            installed.push(ServiceEntryV4 { key: word, value });
            if installed.len() > 1 {
                break;
            }
        }
        self.service_index
            .settle(slot, service_index::SlotPlan::of(&installed))
    }

    /// Records that `key` names service `id`; a service that no key names any more
    /// (its keys went to another one) has its range retired.
    fn own(&mut self, key: ServiceKey, id: u32) {
        if let Some(before) = self.owners.insert(key, id)
            && before != id
        {
            self.release(before);
        }
    }

    /// Retires service `id`'s schedule range once no key names it.
    fn release(&mut self, id: u32) {
        if !self.owners.values().any(|owner| *owner == id)
            && let Some(old) = self.ranges.remove(&id)
        {
            self.pool.retire(old, std::time::Instant::now());
        }
    }

    /// Takes a key out (a reload dropped its service, or the member from a group): its
    /// packets go to the kernel again. The schedule range is retired with the
    /// service's last key.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        self.change_service(key, |dp| {
            match dp.services.remove(key) {
                Ok(()) | Err((_, MapError::KeyNotFound)) => {}
                Err(e) => return Err(failed(e)),
            }
            if let Some(id) = dp.owners.remove(key) {
                dp.release(id);
            }
            Ok(())
        })
    }

    /// Zeroes the counters of a service id and backend slots that a reload hands to
    /// new services and real servers.
    pub fn reset_counters(
        &mut self,
        service_ids: &[u32],
        backend_slots: &[u32],
    ) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
        for &id in service_ids {
            let zero = aya::maps::PerCpuValues::try_from(vec![ServiceStats::default(); cpus])
                .map_err(DataplaneError::Cpus)?;
            self.service_stats
                .set(id, zero, 0)
                .map_err(map_err("SERVICE_STATS"))?;
        }
        for &slot in backend_slots {
            let zero = aya::maps::PerCpuValues::try_from(vec![BackendStats::default(); cpus])
                .map_err(DataplaneError::Cpus)?;
            self.backend_stats
                .set(slot, zero, 0)
                .map_err(map_err("BACKEND_STATS"))?;
        }
        Ok(())
    }

    pub fn service(&self, key: &ServiceKey) -> Result<ServiceValue, DataplaneError> {
        self.services.get(key).map_err(failed)
    }

    /// The backend ids of a service's live schedule, in slot order.
    pub fn schedule_of(&self, key: &ServiceKey) -> Result<Vec<u32>, DataplaneError> {
        let value = self.service(key)?;
        (value.sched_base..value.sched_base + value.sched_len)
            .map(|slot| self.schedule.get(&slot, 0).map_err(map_err("SCHEDULE")))
            .collect()
    }
}

fn is_permission_error(e: &aya::EbpfError) -> bool {
    // Map creation is the first privileged step of a load.
    let text = format!("{e:?}");
    text.contains("EPERM")
        || text.contains("Operation not permitted")
        || text.contains("PermissionDenied")
}

/// Loads the floor program for the benchmark.
pub fn load_floor() -> Result<Ebpf, DataplaneError> {
    load_reference(FLOOR_OBJECT, &["xdp_floor"])
}

/// Loads the veth benchmark's traffic program (`xdp_loop`; see the floor's source).
pub fn load_traffic() -> Result<Ebpf, DataplaneError> {
    load_reference(FLOOR_OBJECT, &["xdp_loop"])
}

/// Loads the minimal DR reference with one service, `vip:port`/tcp, over backends with
/// these MACs.
pub fn load_dr_ref(vip: [u8; 4], port: u16, macs: &[[u8; 6]]) -> Result<Ebpf, DataplaneError> {
    let mut ebpf = load_reference(DR_REF_OBJECT, &["xdp_dr_ref"])?;
    let mut backends: Array<_, [u8; 8]> = Array::try_from(
        ebpf.map_mut("REF_BACKENDS")
            .ok_or(DataplaneError::MissingMap("REF_BACKENDS"))?,
    )
    .map_err(map_err("REF_BACKENDS"))?;
    for (i, mac) in macs.iter().enumerate() {
        let mut padded = [0u8; 8];
        padded[..6].copy_from_slice(mac);
        backends
            .set(i as u32, padded, 0)
            .map_err(map_err("REF_BACKENDS"))?;
    }
    let mut services: HashMap<_, u64, [u32; 2]> = HashMap::try_from(
        ebpf.map_mut("REF_SERVICES")
            .ok_or(DataplaneError::MissingMap("REF_SERVICES"))?,
    )
    .map_err(map_err("REF_SERVICES"))?;
    // The program reads the address and port as they lie in the packet.
    let key =
        u64::from(u32::from_ne_bytes(vip)) | u64::from(u32::from(port.to_be())) << 32 | 6u64 << 48;
    services
        .insert(key, [0, macs.len() as u32], 0)
        .map_err(map_err("REF_SERVICES"))?;
    Ok(ebpf)
}

/// A failed program load, told as the operator needs it: missing privileges, or the
/// verifier's reason (its whole log goes to the debug log).
fn load_error(e: ProgramError) -> DataplaneError {
    let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    else {
        return DataplaneError::Verify(e);
    };
    if io_error.raw_os_error() == Some(libc::EPERM) {
        return DataplaneError::Privileges;
    }
    let log = verifier_log.to_string();
    tracing::debug!(log = %log, "the verifier's whole log");
    match refusal::read(&log) {
        Some(r) => DataplaneError::Refused {
            reason: r.reason,
            context: r.context.join("\n    "),
            hint: refusal::kernel_hint(&refusal::kernel_release()),
        },
        None => DataplaneError::Verify(e),
    }
}

fn load_reference(object: &[u8], names: &[&'static str]) -> Result<Ebpf, DataplaneError> {
    let mut ebpf = Ebpf::load(object).map_err(|e| DataplaneError::Load(Box::new(e)))?;
    for &name in names {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?
            .try_into()
            .map_err(DataplaneError::Verify)?;
        program.load().map_err(DataplaneError::Verify)?;
    }
    Ok(ebpf)
}

#[cfg(test)]
mod tests {
    use super::cpu_ids_end;

    #[test]
    fn a_cpu_list_ends_after_its_highest_id() {
        assert_eq!(cpu_ids_end("0-63\n"), Some(64));
        assert_eq!(cpu_ids_end("0"), Some(1));
        assert_eq!(cpu_ids_end("0-3,8-11"), Some(12));
        assert_eq!(cpu_ids_end(""), None);
        assert_eq!(cpu_ids_end("0-x"), None);
    }
}
