//! Configuration reload (SIGHUP, as `systemctl reload keepalived` is used): what may
//! change while the daemon runs. Virtual servers and their real servers may change in
//! every way (added, removed, weights, schedulers, checks, sorry servers, quorum);
//! they are applied live, and established connections to real servers that stay keep
//! going. Anything else (`[global]`, `[dataplane]`, `[vrrp.*]`, `[script.*]`,
//! `[vrrp_sync_group.*]`) is refused with the tables named: applying it live would
//! mean re-attaching XDP or restarting VRRP instances, which a restart does more
//! honestly. A refused or invalid reload changes nothing.

use crate::config::Config;

/// Tables whose content differs between the running `old` and the reloaded `new`
/// configuration, besides `[[virtual_server]]`: `[dataplane]`, `[vrrp.VI_1]`, ...
/// Compared as written (a key added with its default value counts as a change).
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        old.others.keys().chain(new.others.keys()).collect();
    for key in keys {
        let (a, b) = (old.others.get(key), new.others.get(key));
        if a == b {
            continue;
        }
        // Named tables (`[vrrp.NAME]`, `[script.NAME]`, ...): name the ones that differ.
        match (a, b) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b)))
                if a.values().chain(b.values()).all(toml::Value::is_table)
                    && matches!(key.as_str(), "vrrp" | "script" | "vrrp_sync_group") =>
            {
                let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for name in names {
                    if a.get(name) != b.get(name) {
                        changed.push(format!("[{key}.{name}]"));
                    }
                }
            }
            _ => changed.push(format!("[{key}]")),
        }
    }
    changed
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
        assert_eq!(changed(&vrrp), ["[vrrp.VI_2]"]);
        let dp = BASE.replace("[dataplane]\n", "[dataplane]\nmax_flows = 4096\n");
        assert_eq!(changed(&dp), ["[dataplane]"]);
        let global = format!("[global]\nrouter_id = \"lb2\"\n{BASE}");
        assert_eq!(changed(&global), ["[global]"]);
        let gone = BASE.replace(
            "[vrrp.VI_2]\ninterface = \"eth0\"\nvirtual_router_id = 52\nvirtual_ipaddresses = [\"192.0.2.101/24\"]\n",
            "",
        );
        assert_eq!(changed(&gone), ["[vrrp.VI_2]"]);
    }
}
