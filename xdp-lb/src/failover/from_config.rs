//! The runtime's view of the `[vrrp.*]` and `[vrrp_sync_group.*]` tables.
use super::{InstanceSpec, Notify, SyncGroupSpec, TrackedInterface, VirtualAddress};

/// The runtime's view of a `[vrrp.NAME]` table.
pub(crate) fn instance_spec(vi: &crate::config::VrrpInstance) -> InstanceSpec {
    let vips = vi
        .virtual_ipaddresses
        .iter()
        .map(|a| VirtualAddress {
            addr: a.addr,
            prefix: a.prefix,
            label: a.label.clone(),
            device: a.device.clone(),
            scope: a.scope,
        })
        .collect();
    let mut spec = InstanceSpec::new(&vi.name, &vi.interface, vi.vrid, vips);
    spec.priority = vi.priority;
    spec.version = if vi.version == 2 {
        xdp_lb_vrrp::Version::V2
    } else {
        xdp_lb_vrrp::Version::V3
    };
    spec.advert_interval = vi.advert_interval;
    spec.auth_pass = vi.auth_pass.clone();
    spec.preempt = vi.preempt;
    spec.preempt_delay = vi.preempt_delay;
    spec.unicast_source = vi.unicast_src_ip;
    spec.unicast_peers = vi.unicast_peers.clone();
    spec.old_unicast_checksum = vi.old_unicast_checksum;
    spec.garp_repeat = vi.garp_master_repeat;
    spec.garp_delay = vi.garp_master_delay;
    spec.garp_refresh = vi.garp_master_refresh;
    spec.garp_refresh_repeat = vi.garp_master_refresh_repeat;
    spec.garp_interval = vi.garp_interval;
    spec.garp_lower_prio_repeat = vi.garp_lower_prio_repeat;
    spec.garp_lower_prio_delay = vi.garp_lower_prio_delay;
    spec.lower_prio_no_advert = vi.lower_prio_no_advert;
    spec.higher_prio_send_advert = vi.higher_prio_send_advert;
    spec.notify = notify_spec(&vi.notify);
    spec.track_interfaces = vi
        .track_interfaces
        .iter()
        .map(|t| TrackedInterface {
            name: t.name.clone(),
            weight: t.weight,
        })
        .collect();
    spec
}

/// The runtime's view of a `[vrrp_sync_group.NAME]` table.
pub(crate) fn sync_group_spec(g: &crate::config::SyncGroup) -> SyncGroupSpec {
    SyncGroupSpec {
        name: g.name.clone(),
        members: g.members.clone(),
        notify: notify_spec(&g.notify),
    }
}

fn notify_spec(n: &crate::config::VrrpNotify) -> Notify {
    Notify {
        master: n.master.clone(),
        backup: n.backup.clone(),
        fault: n.fault.clone(),
        stop: n.stop.clone(),
        generic: n.generic.clone(),
        ..Notify::default()
    }
}
