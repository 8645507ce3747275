//! Configuration reload (SIGHUP, as `systemctl reload keepalived` is used): what may
//! change while the daemon runs. Virtual servers and their real servers may change in
//! every way (added, removed, weights, schedulers, checks, sorry servers, quorum);
//! they are applied live, and established connections to real servers that stay keep
//! going. So are the source filter's rules (a virtual server's `allow` and `deny`, and
//! `[filter] deny`): a changed set is switched to whole, and a rule that stays keeps
//! its counter. A VRRP instance may change what needs no new election (its tunables:
//! priority, preemption, announcements, notify commands), applied in place: its state
//! and VIPs stay, and a new priority acts from the next advert on, so lowering the
//! MASTER's priority below its peer's hands the VIPs over as keepalived does. So is
//! the flood guard's rate (`[dataplane] new_flow_rate`, one map value). Anything
//! else (`[global]`, other `[dataplane]` keys, `[announce]`, `[sync]`, other `[vrrp.*]` keys,
//! instances added or removed, a priority to or from 255, `[script.*]`,
//! `[vrrp_sync_group.*]`, `[bfd.*]`) is refused with what
//! changed named: applying it live would mean re-attaching XDP or restarting VRRP
//! instances, which a restart does more honestly. A refused or invalid reload changes
//! nothing.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::{Config, VrrpInstance};

/// What differs between the running `old` and the reloaded `new` configuration that
/// a reload cannot apply, besides `[[virtual_server]]` and `[dataplane] new_flow_rate`,
/// each as `[table] key`:
/// `[dataplane] max_flows`, `[vrrp.VI_1] interface`, `[vrrp.VI_3] (added)`, ... Tables
/// are compared by value, so a key written out with its default is no change; a VRRP
/// instance by its identity (its tunables apply in place), and a priority to or from
/// 255 is a new election.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    changed_keys("[global]", &old.global, &new.global, &mut changed);
    // The flood guard's rate is one map value: a reload sets it in place, so an
    // operator can turn the guard on or tighten it during an attack.
    let dataplane_but_live = crate::config::Dataplane {
        new_flow_rate: old.dataplane.new_flow_rate,
        ..new.dataplane.clone()
    };
    changed_keys(
        "[dataplane]",
        &old.dataplane,
        &dataplane_but_live,
        &mut changed,
    );
    changed_keys("[announce]", &old.announce, &new.announce, &mut changed);
    // The sync socket, its peers and its key are set up at start.
    if old.sync != new.sync {
        match (&old.sync, &new.sync) {
            (Some(a), Some(b)) => changed_keys("[sync]", a, b, &mut changed),
            (None, _) => changed.push("[sync] (added)".into()),
            (_, None) => changed.push("[sync] (removed)".into()),
        }
    }
    named(
        "script",
        &old.scripts,
        &new.scripts,
        |s| &s.name,
        &mut changed,
        changed_keys,
    );
    named(
        "bfd",
        &old.bfd,
        &new.bfd,
        |s| &s.name,
        &mut changed,
        changed_keys,
    );
    named(
        "vrrp_sync_group",
        &old.sync_groups,
        &new.sync_groups,
        |g| &g.name,
        &mut changed,
        changed_keys,
    );
    named(
        "vrrp",
        &old.vrrp,
        &new.vrrp,
        |v| &v.name,
        &mut changed,
        vrrp_changes,
    );
    changed
}

/// A VRRP instance: its identity by value, and the address-owner rule.
fn vrrp_changes(table: &str, old: &VrrpInstance, new: &VrrpInstance, out: &mut Vec<String>) {
    changed_keys(table, &old.identity, &new.identity, out);
    let owner = |v: &VrrpInstance| v.tunables.priority == 255;
    if owner(old) != owner(new) {
        out.push(format!(
            "{table} priority (to or from 255, the address owner, is a new election)"
        ));
    }
}

/// `[kind.NAME]` tables matched by name: added, removed, or compared by `compare`.
fn named<T>(
    kind: &str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    out: &mut Vec<String>,
    compare: impl Fn(&str, &T, &T, &mut Vec<String>),
) {
    let names: BTreeSet<&String> = old.iter().chain(new).map(&name).collect();
    for n in names {
        let table = format!("[{kind}.{n}]");
        match (
            old.iter().find(|t| name(t) == n),
            new.iter().find(|t| name(t) == n),
        ) {
            (Some(a), Some(b)) => compare(&table, a, b, out),
            (None, _) => out.push(format!("{table} (added)")),
            (_, None) => out.push(format!("{table} (removed)")),
        }
    }
}

/// `table key` for each key whose value differs between `a` and `b`: the keys are the
/// types' own field names (serde), which are the config file's.
fn changed_keys<T: Serialize>(table: &str, a: &T, b: &T, out: &mut Vec<String>) {
    let value = |t: &T| serde_json::to_value(t).expect("configuration types serialize");
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (value(a), value(b)) else {
        return;
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        if a.get(key) != b.get(key) {
            out.push(format!("{table} {key}"));
        }
    }
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
    fn the_flood_guard_rate_applies_in_place() {
        let guarded = BASE.replace("[dataplane]\n", "[dataplane]\nnew_flow_rate = 1000\n");
        assert!(changed(&guarded).is_empty());
        // Beside a key that does need a restart, only that one is named.
        let both = BASE.replace(
            "[dataplane]\n",
            "[dataplane]\nnew_flow_rate = 1000\nmax_flows_v6 = 0\n",
        );
        assert_eq!(changed(&both), ["[dataplane] max_flows_v6"]);
    }

    #[test]
    fn other_tables_are_named() {
        let vrrp = BASE.replace("virtual_router_id = 52", "virtual_router_id = 53");
        assert_eq!(changed(&vrrp), ["[vrrp.VI_2] virtual_router_id"]);
        let dp = BASE.replace("[dataplane]\n", "[dataplane]\nmax_flows = 4096\n");
        // The IPv6 tables' capacity follows `max_flows` unless set.
        assert_eq!(
            changed(&dp),
            ["[dataplane] max_flows", "[dataplane] max_flows_v6"]
        );
        let global = format!("[global]\nrouter_id = \"lb2\"\n{BASE}");
        assert_eq!(changed(&global), ["[global] router_id"]);
        let gone = BASE.replace(
            "[vrrp.VI_2]\ninterface = \"eth0\"\nvirtual_router_id = 52\nvirtual_ipaddresses = [\"192.0.2.101/24\"]\n",
            "",
        );
        assert_eq!(changed(&gone), ["[vrrp.VI_2] (removed)"]);
    }

    #[test]
    fn sync_changes_need_a_restart_and_name_the_key_not_the_secret() {
        let sync = |extra: &str| {
            format!(
                "{BASE}\n[sync]\ninstance = \"VI_1\"\npeers = [\"192.0.2.3\"]\n\
                 secret = \"0123456789abcdef\"\n{extra}"
            )
        };
        let old = parse(&sync(""), "old.toml").unwrap();
        let new = |text: &str| restart_needed(&old, &parse(text, "new.toml").unwrap());
        assert!(new(&sync("")).is_empty());
        assert_eq!(new(&sync("rate = 1000\n")), ["[sync] rate"]);
        let other = sync("").replace("0123456789abcdef", "fedcba9876543210");
        let changes = new(&other);
        assert_eq!(changes, ["[sync] secret"]);
        assert_eq!(new(BASE), ["[sync] (removed)"]);
        assert_eq!(changed(&sync("")), ["[sync] (added)"]);
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
