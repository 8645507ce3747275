//! "Write aside, switch, retire": a u32 array whose entries select values in a pooled
//! array, so that a value the program may be reading is never rewritten in place. A
//! new value is written into a free pool entry, the selector switches to it with one
//! u32 write, and the entry it replaced is reused only after a grace period (`GRACE`),
//! by which time no packet that read the old selector is still running. Backends
//! (`BACKEND_SLOT` → `BACKEND_VALUES`) and the IPv4 service index
//! (`SERVICE_INDEX_V4` → `SERVICE_ENTRIES_V4`) are written this way.
use std::{collections::HashMap, ops::Range, time::Instant};

use aya::{
    Pod,
    maps::{Array, MapData},
};

use super::{
    DataplaneError, map_err,
    pool::{GRACE, RangePool, SystemClock},
};

/// What a selector is switched to.
pub enum Target<'a, V> {
    /// A code the program reads as such (no pool entry): an empty backend, a shared
    /// index slot.
    Marker(u32),
    /// A value, written into a pool entry of its own first.
    Value(&'a V),
}

pub struct PooledSelector<V: Pod> {
    selectors: Array<MapData, u32>,
    values: Array<MapData, V>,
    /// `(selectors, values)` map names, for errors.
    names: (&'static str, &'static str),
    pool: RangePool,
    /// The selector code of pool entry 0: entry `e` is selected by `e + base`.
    base: u32,
    /// The pool entry each selector switched to a value points at.
    held: HashMap<u32, u32>,
}

impl<V: Pod> PooledSelector<V> {
    /// Over freshly loaded maps: every selector holds a marker; `entries` are the pool
    /// entries values may take (the others are the program's, never written here).
    pub fn new(
        (selectors, values): (Array<MapData, u32>, Array<MapData, V>),
        names: (&'static str, &'static str),
        pool_name: &'static str,
        entries: Range<u32>,
        base: u32,
    ) -> Self {
        PooledSelector {
            selectors,
            values,
            names,
            pool: RangePool::new(pool_name, entries, GRACE),
            base,
            held: HashMap::new(),
        }
    }

    /// Switches `selector` to `target` and retires the entry it held, if any. If
    /// the pool is short only because replaced entries are in their grace period,
    /// this waits for them (at most `GRACE`).
    pub fn select(&mut self, selector: u32, target: Target<'_, V>) -> Result<(), DataplaneError> {
        let (code, entry) = match target {
            Target::Marker(code) => (code, None),
            Target::Value(value) => {
                let range = self.pool.allocate_waiting(1, &SystemClock)?;
                if let Err(e) = self.values.set(range.start, value, 0) {
                    self.pool.unused(range);
                    return Err(map_err(self.names.1)(e));
                }
                (range.start + self.base, Some(range.start))
            }
        };
        // The switch: from here on packets read the new code.
        if let Err(e) = self.selectors.set(selector, code, 0) {
            if let Some(entry) = entry {
                self.pool.unused(entry..entry + 1);
            }
            return Err(map_err(self.names.0)(e));
        }
        let old = match entry {
            Some(entry) => self.held.insert(selector, entry),
            None => self.held.remove(&selector),
        };
        if let Some(old) = old {
            self.pool.retire(old..old + 1, Instant::now());
        }
        Ok(())
    }

    /// The value `selector` selects, as the program reads it; `None` for a marker
    /// below the base.
    pub fn selected(&self, selector: u32) -> Result<Option<V>, DataplaneError> {
        let code = self
            .selectors
            .get(&selector, 0)
            .map_err(map_err(self.names.0))?;
        let Some(entry) = code.checked_sub(self.base) else {
            return Ok(None);
        };
        let value = self.values.get(&entry, 0).map_err(map_err(self.names.1))?;
        Ok(Some(value))
    }
}
