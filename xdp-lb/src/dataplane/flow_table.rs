//! The flow table as one map of [`FlowKey`] → [`FlowValue`], over the program's two:
//! IPv4 flows live in `FLOWS_V4` under a 16-byte [`FlowKeyV4`] (cheaper for the kernel
//! to hash and compare on every packet), IPv6 ones in `FLOWS`. Which map holds a flow
//! is decided in one place, [`FlowKeyV4::stored`]; nothing outside this module sees
//! the split.
use aya::maps::{HashMap, MapData, MapError};
use xdp_lb_common::{FlowKey, FlowKeyV4, FlowValue};

pub struct FlowTable {
    v4: HashMap<MapData, FlowKeyV4, FlowValue>,
    v6: HashMap<MapData, FlowKey, FlowValue>,
}

/// The program's names of the two maps, for errors and pinning.
pub const V4_MAP: &str = "FLOWS_V4";
pub const V6_MAP: &str = "FLOWS";

impl FlowTable {
    pub fn new(
        v4: HashMap<MapData, FlowKeyV4, FlowValue>,
        v6: HashMap<MapData, FlowKey, FlowValue>,
    ) -> Self {
        FlowTable { v4, v6 }
    }

    /// The entry of `key`; `Err(KeyNotFound)` when there is none, as aya's `get`.
    /// On error, the name of the map that failed comes with it.
    pub fn get(&self, key: &FlowKey) -> Result<FlowValue, (&'static str, MapError)> {
        match FlowKeyV4::stored(key) {
            Some(k) => self.v4.get(&k, 0).map_err(|e| (V4_MAP, e)),
            None => self.v6.get(key, 0).map_err(|e| (V6_MAP, e)),
        }
    }

    /// Writes the entry of `key`, replacing any.
    pub fn insert(
        &mut self,
        key: &FlowKey,
        value: FlowValue,
    ) -> Result<(), (&'static str, MapError)> {
        match FlowKeyV4::stored(key) {
            Some(k) => self.v4.insert(k, value, 0).map_err(|e| (V4_MAP, e)),
            None => self.v6.insert(key, value, 0).map_err(|e| (V6_MAP, e)),
        }
    }

    /// Removes the entry of `key`; whether there was one.
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        match FlowKeyV4::stored(key) {
            Some(k) => self.v4.remove(&k).is_ok(),
            None => self.v6.remove(key).is_ok(),
        }
    }

    /// Every entry, IPv4 first (an entry that vanishes while read is an error item).
    pub fn iter(&self) -> impl Iterator<Item = Result<(FlowKey, FlowValue), MapError>> + '_ {
        let v4 = self.v4.iter().map(|r| r.map(|(k, v)| (k.flow(), v)));
        v4.chain(self.v6.iter())
    }

    /// Every key, as [`FlowTable::iter`].
    pub fn keys(&self) -> impl Iterator<Item = Result<FlowKey, MapError>> + '_ {
        let v4 = self.v4.keys().map(|r| r.map(|k| k.flow()));
        v4.chain(self.v6.keys())
    }
}
