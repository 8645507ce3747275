//! What outlives the daemon for a hitless restart, pinned on bpffs: the connection
//! state (flow table, NAT replies, persistence) and the XDP attachment of each
//! interface. A restart (or a start after `kill -9`) finds them, keeps forwarding with
//! the old program until the new one, loaded and filled, replaces it in one step
//! (`bpf_link_update`), and carries on with the same connection state. A clean stop
//! removes them, which also detaches XDP.
//!
//! One directory per network namespace (`/sys/fs/bpf/xdp-lb/ns-<inode>`), since each
//! namespace has its own interfaces and daemon. A pinned map whose shape (key or value
//! size, capacity, flags) no longer matches this build is replaced, and said so: its
//! entries would be read as something else, or it would keep another LRU flavour.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapInfo, MapType},
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use tracing::{info, warn};
use xdp_lb_common::{
    FlowKey, FlowKeyV4, FlowValue, NatValue, PersistKey, PersistValue, STATE_MAP_FLAGS,
    STATE_VERSION,
};

use super::FlowCapacity;

/// Where xdp-lb pins, unless the bpffs is elsewhere.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/xdp-lb";

/// Which configured capacity a connection-state map takes (see [`FlowCapacity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizedBy {
    /// `max_flows`: the IPv4 tables, and persistence (of both families' clients).
    MaxFlows,
    /// `max_flows_v6`: the IPv6 tables.
    MaxFlowsV6,
}

/// A map whose entries are connection state, with the shape this build gives it.
#[derive(Debug, Clone, Copy)]
pub struct StateMap {
    pub name: &'static str,
    key: usize,
    value: usize,
    pub sized_by: SizedBy,
}

/// The connection-state maps: sized at load, pinned to outlive a restart.
pub const STATE_MAPS: [StateMap; 5] = [
    StateMap {
        name: super::by_family::FLOW_MAPS[0],
        key: size_of::<FlowKeyV4>(),
        value: size_of::<FlowValue>(),
        sized_by: SizedBy::MaxFlows,
    },
    StateMap {
        name: super::by_family::FLOW_MAPS[1],
        key: size_of::<FlowKey>(),
        value: size_of::<FlowValue>(),
        sized_by: SizedBy::MaxFlowsV6,
    },
    StateMap {
        name: super::by_family::NAT_REPLY_MAPS[0],
        key: size_of::<FlowKeyV4>(),
        value: size_of::<NatValue>(),
        sized_by: SizedBy::MaxFlows,
    },
    StateMap {
        name: super::by_family::NAT_REPLY_MAPS[1],
        key: size_of::<FlowKey>(),
        value: size_of::<NatValue>(),
        sized_by: SizedBy::MaxFlowsV6,
    },
    StateMap {
        name: "PERSIST",
        key: size_of::<PersistKey>(),
        value: size_of::<PersistValue>(),
        sized_by: SizedBy::MaxFlows,
    },
];

/// Where the meaning of the pinned entries' ids is kept (bpffs holds no plain files).
pub const RUN_DIR: &str = "/run/xdp-lb";

/// The pin directory of this network namespace.
#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
    /// `ServiceTable::id_map` of the run that wrote the pinned entries.
    ids: PathBuf,
}

impl Pins {
    /// The directory under `root` for the network namespace this process runs in,
    /// created if needed; `None` (with a warning) when bpffs is not mounted there or
    /// not writable: then nothing is pinned and a restart reschedules connections.
    pub fn under(root: &Path) -> Option<Pins> {
        let name = namespace_name()?;
        let dir = root.join(&name);
        let ids = Path::new(RUN_DIR).join(format!("{name}.ids"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warn!(
                dir = %dir.display(),
                error = %e,
                "cannot pin on bpffs (is it mounted there? see `pin_dir`): a restart will \
                 reschedule connections and briefly stop forwarding"
            );
            return None;
        }
        if !on_bpffs(&dir) {
            warn!(
                dir = %dir.display(),
                "`pin_dir` is not on bpffs (mount -t bpf bpf <dir>): nothing is pinned, and a \
                 restart will reschedule connections and briefly stop forwarding"
            );
            return None;
        }
        Some(Pins { dir, ids })
    }

    /// Whether the pinned entries mean, to this build and the id map `ids`, what they
    /// meant to the run that wrote them.
    pub fn adoption(&self, ids: &str) -> Adoption {
        adoption(std::fs::read_to_string(&self.ids).ok().as_deref(), ids)
    }

    /// Records the id map the entries are written under from now on, stamped with this
    /// build's [`STATE_VERSION`].
    pub fn record_ids(&self, ids: &str) {
        let write =
            std::fs::create_dir_all(RUN_DIR).and_then(|()| std::fs::write(&self.ids, stamped(ids)));
        if let Err(e) = write {
            warn!(
                path = %self.ids.display(),
                error = %e,
                "cannot record the ids of the pinned state: the next start will reschedule connections"
            );
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn link(&self, iface: &str) -> PathBuf {
        self.dir.join(format!("link-{iface}"))
    }

    /// Removes pinned state maps that this build cannot read or would not create
    /// (another key or value size, capacity, or flags), with the reason; returns the
    /// names of those kept (adopted when the program loads).
    pub fn check_state_maps(&self, capacity: FlowCapacity) -> Vec<&'static str> {
        let mut kept = Vec::new();
        for map in STATE_MAPS {
            let name = map.name;
            let path = self.map(name);
            if !path.exists() {
                continue;
            }
            let why = match MapInfo::from_pin(&path) {
                Err(e) => Some(format!("cannot read it: {e}")),
                Ok(info) => {
                    let found = (
                        info.key_size(),
                        info.value_size(),
                        info.max_entries(),
                        info.map_flags(),
                    );
                    let wanted = (
                        map.key as u32,
                        map.value as u32,
                        capacity.entries(&map),
                        STATE_MAP_FLAGS,
                    );
                    let lru = matches!(
                        info.map_type(),
                        Ok(MapType::LruHash | MapType::LruPerCpuHash)
                    );
                    (found != wanted || !lru).then(|| {
                        format!(
                            "key/value/capacity/flags {}/{}/{}/{:#x} where this build has \
                             {}/{}/{}/{:#x}",
                            found.0,
                            found.1,
                            found.2,
                            found.3,
                            wanted.0,
                            wanted.1,
                            wanted.2,
                            wanted.3
                        )
                    })
                }
            };
            match why {
                None => kept.push(name),
                Some(why) => {
                    warn!(
                        map = name,
                        path = %path.display(),
                        "a pinned map from an earlier run does not fit this version ({why}): \
                         replaced, so connections it held are rescheduled"
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        kept
    }

    /// Attaches `program` to `iface` through its pinned link when a run left one
    /// (replacing the old program in one step, so no packet misses XDP), otherwise
    /// with `attach` and pins the new link. Returns whether a link was taken over.
    pub fn attach(
        &self,
        program: &mut Xdp,
        iface: &str,
        attach: impl FnOnce(&mut Xdp) -> Result<aya::programs::xdp::XdpLinkId, super::DataplaneError>,
    ) -> Result<bool, super::DataplaneError> {
        let path = self.link(iface);
        if path.exists() {
            match take_over(program, &path) {
                Ok(()) => return Ok(true),
                Err(why) => {
                    warn!(
                        interface = iface,
                        "cannot take over the XDP link an earlier run left ({why}): attaching anew"
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let id = attach(program)?;
        let pinned = program
            .take_link(id)
            .map_err(|e| e.to_string())
            .and_then(|link| FdLink::try_from(link).map_err(|e| e.to_string()))
            .and_then(|fd| fd.pin(&path).map_err(|e| e.to_string()));
        match pinned {
            // The pin holds the attachment; this process need not.
            Ok(link) => drop(link),
            Err(e) => warn!(
                interface = iface,
                error = %e,
                "cannot pin the XDP link: a restart will briefly stop forwarding"
            ),
        }
        Ok(false)
    }

    /// A clean stop: every pin goes, and with the link pins the attachments.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.ids);
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => info!(dir = %self.dir.display(), "pinned XDP state removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot remove the pinned XDP state")
            }
        }
    }
}

fn take_over(program: &mut Xdp, path: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| e.to_string())?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    program.attach_to_link(link).map_err(|e| e.to_string())?;
    // The program keeps its copy of the link: closing it (at exit, however the
    // process ends) leaves the attachment to the pin.
    Ok(())
}

/// `ns-<inode>` of this process's network namespace.
fn namespace_name() -> Option<String> {
    match std::fs::metadata("/proc/self/ns/net") {
        Ok(m) => Some(format!("ns-{}", m.ino())),
        Err(e) => {
            warn!(error = %e, "cannot identify the network namespace: nothing is pinned");
            None
        }
    }
}

/// `dir` is on a BPF file system, where objects can be pinned.
fn on_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain integers; all zeros is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs buffer of the right type.
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut fs) } == 0;
    ok && fs.f_type as i64 == BPF_FS_MAGIC
}

/// What a start does with pinned connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Written by a build of this state version under the same id map: kept.
    Adopt,
    /// Written under another id map (the virtual or real servers changed), or nothing
    /// says under which: cleared.
    ServersChanged,
    /// Written by a build whose entries mean something else (`None`: one from before
    /// the stamp): cleared.
    OtherVersion(Option<u32>),
}

const VERSION_PREFIX: &str = "state-version ";

/// The record file's text: the version line, then the id map.
fn stamped(ids: &str) -> String {
    format!("{VERSION_PREFIX}{STATE_VERSION}\n{ids}")
}

/// The decision behind [`Pins::adoption`], on the record file's text.
pub fn adoption(written: Option<&str>, ids: &str) -> Adoption {
    let Some(written) = written else {
        return Adoption::ServersChanged;
    };
    let (version, rest) = match written
        .strip_prefix(VERSION_PREFIX)
        .and_then(|r| r.split_once('\n'))
    {
        Some((v, rest)) => (v.parse::<u32>().ok(), rest),
        None => (None, written),
    };
    if version != Some(STATE_VERSION) {
        Adoption::OtherVersion(version)
    } else if rest == ids {
        Adoption::Adopt
    } else {
        Adoption::ServersChanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_version_and_ids_adopt_and_anything_else_clears() {
        let ids = "service 1 a\nbackend 1 a 192.0.2.11:80\n";
        assert_eq!(adoption(Some(&stamped(ids)), ids), Adoption::Adopt);
        assert_eq!(
            adoption(Some(&stamped(ids)), "service 1 b\n"),
            Adoption::ServersChanged
        );
        assert_eq!(adoption(None, ids), Adoption::ServersChanged);
        // A record from before the stamp, or from a build whose entries mean another
        // thing, is never adopted, even with the same ids.
        assert_eq!(adoption(Some(ids), ids), Adoption::OtherVersion(None));
        let other = format!("{VERSION_PREFIX}{}\n{ids}", STATE_VERSION + 1);
        assert_eq!(
            adoption(Some(&other), ids),
            Adoption::OtherVersion(Some(STATE_VERSION + 1))
        );
    }
}
