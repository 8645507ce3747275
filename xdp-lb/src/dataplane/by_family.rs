//! A map of the program's kept as two, one per IP version, seen as one. The program
//! looks up the flow table and the services on every packet, and the kernel hashes and
//! compares a whole key each time: IPv4 entries live in their own map under a short
//! key ([`FlowKeyV4`], 16 bytes; [`ServiceKeyV4`], 8), IPv6 ones under the full one
//! ([`FlowKey`], 40; [`ServiceKey`], 20). The daemon speaks only of full keys; which
//! map holds one is decided by the short key's `stored`, in `xdp-lb-common`, and
//! nothing outside this module sees the split.
use aya::{
    Pod,
    maps::{HashMap, MapData, MapError},
};
use xdp_lb_common::{
    FlowKey, FlowKeyV4, FlowValue, NatValue, ServiceKey, ServiceKeyV4, ServiceValue,
};

/// A full key and the short form IPv4 ones are stored under.
pub trait FamilyKey: Pod {
    type V4: Pod;
    /// The short form when the key is stored in the IPv4 map.
    fn stored_v4(&self) -> Option<Self::V4>;
    fn from_v4(short: &Self::V4) -> Self;
}

impl FamilyKey for FlowKey {
    type V4 = FlowKeyV4;
    fn stored_v4(&self) -> Option<FlowKeyV4> {
        FlowKeyV4::stored(self)
    }
    fn from_v4(short: &FlowKeyV4) -> Self {
        short.flow()
    }
}

impl FamilyKey for ServiceKey {
    type V4 = ServiceKeyV4;
    fn stored_v4(&self) -> Option<ServiceKeyV4> {
        ServiceKeyV4::stored(self)
    }
    fn from_v4(short: &ServiceKeyV4) -> Self {
        short.key()
    }
}

/// A failed map operation, with the name of the map it failed on.
pub type Failed = (&'static str, MapError);

pub struct ByFamily<K: FamilyKey, V: Pod> {
    v4: HashMap<MapData, K::V4, V>,
    v6: HashMap<MapData, K, V>,
    names: [&'static str; 2],
}

/// The flow table: `FLOWS_V4` and `FLOWS`.
pub type FlowTable = ByFamily<FlowKey, FlowValue>;
/// The NAT reply table: `NAT_REPLIES_V4` and `NAT_REPLIES`.
pub type ReplyTable = ByFamily<FlowKey, NatValue>;
/// The services: `SERVICES_V4` and `SERVICES`.
pub type ServiceMap = ByFamily<ServiceKey, ServiceValue>;

/// The program's names of the maps (IPv4, IPv6), for loading, errors and pinning.
pub const FLOW_MAPS: [&str; 2] = ["FLOWS_V4", "FLOWS"];
pub const SERVICE_MAPS: [&str; 2] = ["SERVICES_V4", "SERVICES"];
pub const NAT_REPLY_MAPS: [&str; 2] = ["NAT_REPLIES_V4", "NAT_REPLIES"];

impl<K: FamilyKey, V: Pod> ByFamily<K, V> {
    pub fn new(
        v4: HashMap<MapData, K::V4, V>,
        v6: HashMap<MapData, K, V>,
        names: [&'static str; 2],
    ) -> Self {
        ByFamily { v4, v6, names }
    }

    /// The entry of `key`; `Err(KeyNotFound)` when there is none, as aya's `get`.
    pub fn get(&self, key: &K) -> Result<V, Failed> {
        match key.stored_v4() {
            Some(k) => self.v4.get(&k, 0).map_err(|e| (self.names[0], e)),
            None => self.v6.get(key, 0).map_err(|e| (self.names[1], e)),
        }
    }

    /// Writes the entry of `key`, replacing any.
    pub fn insert(&mut self, key: &K, value: V) -> Result<(), Failed> {
        match key.stored_v4() {
            Some(k) => self.v4.insert(k, value, 0).map_err(|e| (self.names[0], e)),
            None => self
                .v6
                .insert(key, value, 0)
                .map_err(|e| (self.names[1], e)),
        }
    }

    /// Removes the entry of `key`; `Err(KeyNotFound)` when there was none.
    pub fn remove(&mut self, key: &K) -> Result<(), Failed> {
        match key.stored_v4() {
            Some(k) => self.v4.remove(&k).map_err(|e| (self.names[0], e)),
            None => self.v6.remove(key).map_err(|e| (self.names[1], e)),
        }
    }

    /// Every entry, IPv4 first (an entry that vanishes while read is an error item).
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, V), MapError>> + '_ {
        let v4 = self.v4.iter().map(|r| r.map(|(k, v)| (K::from_v4(&k), v)));
        v4.chain(self.v6.iter())
    }

    /// A second handle on the same two maps (duplicated descriptors), for another
    /// thread to read.
    pub fn duplicate(&self) -> Result<Self, Failed> {
        use aya::maps::IterableMap as _;
        Ok(ByFamily {
            v4: reopen(self.v4.map()).map_err(|e| (self.names[0], e))?,
            v6: reopen(self.v6.map()).map_err(|e| (self.names[1], e))?,
            names: self.names,
        })
    }

    /// Every key, as [`ByFamily::iter`].
    pub fn keys(&self) -> impl Iterator<Item = Result<K, MapError>> + '_ {
        let v4 = self.v4.keys().map(|r| r.map(|k| K::from_v4(&k)));
        v4.chain(self.v6.keys())
    }
}

/// A hash map on a duplicate of `map`'s descriptor.
fn reopen<K: Pod, V: Pod>(map: &MapData) -> Result<HashMap<MapData, K, V>, MapError> {
    use std::os::fd::AsFd as _;
    let fd = map.fd().as_fd().try_clone_to_owned().map_err(|e| {
        MapError::from(aya::sys::SyscallError {
            call: "dup",
            io_error: e,
        })
    })?;
    HashMap::try_from(aya::maps::Map::from_map_data(MapData::from_fd(fd)?)?)
}
