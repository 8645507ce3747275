//! Configuration reload (SIGHUP, as `systemctl reload keepalived` is used): what may
//! change while the daemon runs. Virtual servers and their real servers may change in
//! every way (added, removed, weights, schedulers, checks, sorry servers, quorum);
//! they are applied live, and established connections to real servers that stay keep
//! going. A VRRP instance may change what needs no new election ([`LIVE_VRRP_KEYS`]:
//! priority, preemption, announcements, notify commands), applied in place: its state
//! and VIPs stay, and a new priority acts from the next advert on, so lowering the
//! MASTER's priority below its peer's hands the VIPs over as keepalived does. Anything
//! else (`[global]`, `[dataplane]`, other `[vrrp.*]` keys, instances added or removed,
//! a priority to or from 255, `[script.*]`, `[vrrp_sync_group.*]`) is refused with what
//! changed named: applying it live would mean re-attaching XDP or restarting VRRP
//! instances, which a restart does more honestly. A refused or invalid reload changes
//! nothing.

use std::{collections::BTreeSet, time::Duration};

use toml::{Table, Value};

use crate::config::{Config, Location, VrrpInstance, VrrpNotify};

/// `[vrrp.NAME]` keys a reload applies in place (as written; [`fixed_part`] leaves out
/// the same settings once parsed, and the two must name the same ones).
pub const LIVE_VRRP_KEYS: &[&str] = &[
    "priority",
    "preempt",
    "preempt_delay",
    "garp_master_repeat",
    "garp_master_delay",
    "garp_master_refresh",
    "garp_master_refresh_repeat",
    "garp_interval",
    "garp_lower_prio_repeat",
    "garp_lower_prio_delay",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "notify",
];

/// What differs between the running `old` and the reloaded `new` configuration that
/// a reload cannot apply, besides `[[virtual_server]]`: `[dataplane]`,
/// `[vrrp.VI_1] interface`, ... VRRP instances are compared by value (a key written
/// out with its default is no change); other tables as written.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let keys: BTreeSet<&String> = old.others.keys().chain(new.others.keys()).collect();
    for key in keys {
        let (a, b) = (old.others.get(key), new.others.get(key));
        if a == b {
            continue;
        }
        // Named tables (`[vrrp.NAME]`, `[script.NAME]`, ...): name the ones that differ.
        match (a, b) {
            (Some(Value::Table(a)), Some(Value::Table(b)))
                if a.values().chain(b.values()).all(Value::is_table)
                    && matches!(key.as_str(), "vrrp" | "script" | "vrrp_sync_group") =>
            {
                let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for name in names {
                    let table = format!("[{key}.{name}]");
                    match (a.get(name), b.get(name)) {
                        (x, y) if x == y => {}
                        (Some(Value::Table(x)), Some(Value::Table(y))) if key == "vrrp" => {
                            let parsed = |c: &'_ Config| {
                                c.vrrp.iter().find(|v| v.name == **name).map(fixed_part)
                            };
                            let same = parsed(old).is_some() && parsed(old) == parsed(new);
                            if let Some(why) = vrrp_restart(x, y).filter(|_| !same) {
                                changed.push(format!("{table} {why}"));
                            }
                        }
                        (None, _) => changed.push(format!("{table} (added)")),
                        (_, None) => changed.push(format!("{table} (removed)")),
                        _ => changed.push(table),
                    }
                }
            }
            _ => changed.push(format!("[{key}]")),
        }
    }
    changed
}

/// An instance without what a reload applies in place (nor where it was written), so
/// that keys written out with their default value are no change.
fn fixed_part(v: &VrrpInstance) -> VrrpInstance {
    VrrpInstance {
        // Only whether it is the address owner is fixed.
        priority: if v.priority == 255 { 255 } else { 1 },
        preempt: true,
        preempt_delay: Duration::ZERO,
        garp_master_repeat: 0,
        garp_master_delay: Duration::ZERO,
        garp_master_refresh: None,
        garp_master_refresh_repeat: 0,
        garp_interval: Duration::ZERO,
        garp_lower_prio_repeat: 0,
        garp_lower_prio_delay: Duration::ZERO,
        lower_prio_no_advert: false,
        higher_prio_send_advert: false,
        notify: VrrpNotify::default(),
        location: Location::default(),
        ..v.clone()
    }
}

/// Why one instance's changes need a restart, if they do: the keys outside
/// [`LIVE_VRRP_KEYS`] that differ, or a priority to or from 255.
fn vrrp_restart(old: &Table, new: &Table) -> Option<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let fixed: Vec<&str> = keys
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k) && !LIVE_VRRP_KEYS.contains(&k.as_str()))
        .map(String::as_str)
        .collect();
    if !fixed.is_empty() {
        return Some(fixed.join(", "));
    }
    let owner = |t: &Table| t.get("priority").and_then(Value::as_integer) == Some(255);
    (owner(old) != owner(new))
        .then(|| "priority (to or from 255, the address owner, is a new election)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const BASE: &str = r#"
[dataplane]
interfaces = ["eth0"]

[vrrp.VI_1]
interface = "eth0"
virtual_router_id = 51
virtual_ipaddresses = ["192.0.2.100/24"]

[vrrp.VI_2]
interface = "eth0"
virtual_router_id = 52
virtual_ipaddresses = ["192.0.2.101/24"]

[[virtual_server]]
vip = "192.0.2.100"
port = 80
  [[virtual_server.real_server]]
  address = "192.0.2.11"
"#;

    fn changed(new: &str) -> Vec<String> {
        let old = parse(BASE, "old.toml").unwrap();
        let new = parse(new, "new.toml").unwrap();
        restart_needed(&old, &new)
    }

    #[test]
    fn virtual_server_changes_and_layout_need_no_restart() {
        let more = BASE.replace(
            "  address = \"192.0.2.11\"\n",
            "  address = \"192.0.2.11\"\n  weight = 3\n  [[virtual_server.real_server]]\n  address = \"192.0.2.12\"\n",
        );
        assert!(changed(&more).is_empty());
        // Comments and blank lines move every line: still nothing to restart for.
        let moved = format!("# reloaded\n\n{BASE}");
        assert!(changed(&moved).is_empty());
    }

    #[test]
    fn other_tables_are_named() {
        let vrrp = BASE.replace("virtual_router_id = 52", "virtual_router_id = 53");
        assert_eq!(changed(&vrrp), ["[vrrp.VI_2] virtual_router_id"]);
        let dp = BASE.replace("[dataplane]\n", "[dataplane]\nmax_flows = 4096\n");
        assert_eq!(changed(&dp), ["[dataplane]"]);
        let global = format!("[global]\nrouter_id = \"lb2\"\n{BASE}");
        assert_eq!(changed(&global), ["[global]"]);
        let gone = BASE.replace(
            "[vrrp.VI_2]\ninterface = \"eth0\"\nvirtual_router_id = 52\nvirtual_ipaddresses = [\"192.0.2.101/24\"]\n",
            "",
        );
        assert_eq!(changed(&gone), ["[vrrp.VI_2] (removed)"]);
    }

    #[test]
    fn vrrp_priority_preemption_and_notify_apply_in_place() {
        let live = BASE.replace(
            "virtual_router_id = 52\n",
            "virtual_router_id = 52\npriority = 50\npreempt = false\npreempt_delay = \"10s\"\n\
             notify_master = [\"/bin/true\"]\ngarp_master_repeat = 2\n",
        );
        assert!(changed(&live).is_empty(), "{:?}", changed(&live));
        // Mixed with one that is not: only that one is named.
        let mixed = live.replace(
            "virtual_router_id = 52",
            "virtual_router_id = 52\nversion = 3",
        );
        assert_eq!(changed(&mixed), ["[vrrp.VI_2] version"]);
        let owner = BASE.replace(
            "virtual_router_id = 52\n",
            "virtual_router_id = 52\npriority = 255\n",
        );
        assert_eq!(
            changed(&owner),
            ["[vrrp.VI_2] priority (to or from 255, the address owner, is a new election)"]
        );
        let added = format!(
            "{BASE}\n[vrrp.VI_3]\ninterface = \"eth0\"\nvirtual_router_id = 53\n\
             virtual_ipaddresses = [\"192.0.2.102/24\"]\n"
        );
        assert_eq!(changed(&added), ["[vrrp.VI_3] (added)"]);
        // A fixed key written out with the value it had by default is no change.
        let explicit = BASE.replace(
            "virtual_router_id = 52\n",
            "virtual_router_id = 52\nversion = 2\nadvert_interval = \"1s\"\n",
        );
        assert!(changed(&explicit).is_empty(), "{:?}", changed(&explicit));
    }
}
