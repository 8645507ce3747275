//! keepalived's dumps: on SIGUSR1 a data dump (what the node is and holds: VRRP
//! instances, services, real servers and their health, the flow table), on SIGUSR2 a
//! stats dump (every counter, in the metrics' text format), each written to a file in
//! `[global] dump_dir` (keepalived writes `/tmp/keepalived.data` and
//! `/tmp/keepalived.stats`; these are `xdp-lb.data` and `xdp-lb.stats`). A file is
//! written aside and renamed, so a reader never sees half of one.

use std::path::PathBuf;

use crate::{
    dataplane::{Dataplane, FlowCapacity},
    forwarding::Forwarding,
    status::Snapshot,
};

/// Which dump a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    /// SIGUSR1.
    Data,
    /// SIGUSR2.
    Stats,
}

impl Dump {
    pub fn file_name(self) -> &'static str {
        match self {
            Dump::Data => "xdp-lb.data",
            Dump::Stats => "xdp-lb.stats",
        }
    }

    /// Writes the dump into `dir`; returns its path.
    pub fn write(
        self,
        dir: &std::path::Path,
        snapshot: Snapshot,
        forwarding: &Forwarding<Dataplane>,
        flow_capacity: FlowCapacity,
    ) -> std::io::Result<PathBuf> {
        let text = match self {
            Dump::Data => data(&snapshot, forwarding, flow_capacity),
            Dump::Stats => crate::metrics::render(snapshot),
        };
        let path = dir.join(self.file_name());
        let aside = dir.join(format!(".{}.new", self.file_name()));
        std::fs::write(&aside, text)?;
        std::fs::rename(&aside, &path)?;
        Ok(path)
    }
}

/// The data dump's text: the status, then the flow table.
fn data(snapshot: &Snapshot, forwarding: &Forwarding<Dataplane>, capacity: FlowCapacity) -> String {
    let mut out = format!(
        "xdp-lb {} ({}) data dump\n\n",
        env!("CARGO_PKG_VERSION"),
        env!("XDP_LB_COMMIT")
    );
    out += &crate::status_client::render(snapshot);
    out += "\nFLOWS\n";
    out += &crate::connections::render(&crate::connections::list(forwarding, None, capacity));
    out
}
