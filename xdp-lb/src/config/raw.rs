//! The TOML file as serde sees it, before validation.
//!
//! Tables are typed so that serde rejects unknown keys (`deny_unknown_fields`, with the
//! key's span). Scalars are kept as spanned `toml::Value`s and typed in `validate.rs`,
//! so a wrong type gets a message that names the key and says what is valid. Every
//! field is optional here; `validate.rs` reports the missing ones.

use serde::Deserialize;
use toml::{Spanned, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConfig {
    pub(super) global: Option<Spanned<RawGlobal>>,
    pub(super) dataplane: Option<Spanned<RawDataplane>>,
    pub(super) filter: Option<Spanned<RawFilter>>,
    pub(super) announce: Option<Spanned<RawAnnounce>>,
    pub(super) sync: Option<Spanned<RawSync>>,
    #[serde(default)]
    pub(super) virtual_server: Vec<Spanned<RawVirtualServer>>,
    /// `[virtual_server_group.NAME]` groups of VIP:port pairs, by name.
    #[serde(default)]
    pub(super) virtual_server_group: std::collections::BTreeMap<String, Spanned<RawServerGroup>>,
    /// `[vrrp.NAME]` instances, by name.
    #[serde(default)]
    pub(super) vrrp: std::collections::BTreeMap<String, Spanned<RawVrrp>>,
    /// `[script.NAME]` track scripts, by name.
    #[serde(default)]
    pub(super) script: std::collections::BTreeMap<String, Spanned<RawScript>>,
    /// `[vrrp_sync_group.NAME]` groups, by name.
    #[serde(default)]
    pub(super) vrrp_sync_group: std::collections::BTreeMap<String, Spanned<RawSyncGroup>>,
    /// `[bfd.NAME]` sessions run by FRR's bfdd, by name.
    #[serde(default)]
    pub(super) bfd: std::collections::BTreeMap<String, Spanned<RawBfd>>,
}

/// `[bfd.NAME]`: a BFD session bfdd runs for us (keepalived's `bfd_instance`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawBfd {
    pub(super) peer: Option<Spanned<Value>>,
    pub(super) local: Option<Spanned<Value>>,
    pub(super) interface: Option<Spanned<Value>>,
    pub(super) min_rx: Option<Spanned<Value>>,
    pub(super) min_tx: Option<Spanned<Value>>,
    pub(super) multiplier: Option<Spanned<Value>>,
    pub(super) weight: Option<Spanned<Value>>,
}

/// `[virtual_server_group.NAME]`: keepalived's `virtual_server_group`, VIP:port pairs
/// (with address and port ranges) that one `[[virtual_server]]` serves as one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawServerGroup {
    pub(super) members: Option<Spanned<Vec<Spanned<Value>>>>,
}

/// `[vrrp_sync_group.NAME]`: keepalived's `vrrp_sync_group`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSyncGroup {
    pub(super) group: Option<Spanned<Value>>,
    pub(super) notify_master: Option<Spanned<Value>>,
    pub(super) notify_backup: Option<Spanned<Value>>,
    pub(super) notify_fault: Option<Spanned<Value>>,
    pub(super) notify_stop: Option<Spanned<Value>>,
    pub(super) notify: Option<Spanned<Value>>,
}

/// `[script.NAME]`: keepalived's `vrrp_script`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawScript {
    pub(super) command: Option<Spanned<Value>>,
    pub(super) interval: Option<Spanned<Value>>,
    pub(super) timeout: Option<Spanned<Value>>,
    pub(super) weight: Option<Spanned<Value>>,
    pub(super) rise: Option<Spanned<Value>>,
    pub(super) fall: Option<Spanned<Value>>,
    pub(super) user: Option<Spanned<Value>>,
    pub(super) shell: Option<Spanned<Value>>,
}

/// `[vrrp.NAME]`: one VRRP instance; keys as keepalived names them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawVrrp {
    pub(super) interface: Option<Spanned<Value>>,
    pub(super) virtual_router_id: Option<Spanned<Value>>,
    pub(super) priority: Option<Spanned<Value>>,
    pub(super) version: Option<Spanned<Value>>,
    pub(super) advert_interval: Option<Spanned<Value>>,
    pub(super) auth_pass: Option<Spanned<Value>>,
    pub(super) preempt: Option<Spanned<Value>>,
    pub(super) preempt_delay: Option<Spanned<Value>>,
    pub(super) virtual_ipaddresses: Option<Spanned<Value>>,
    pub(super) unicast_src_ip: Option<Spanned<Value>>,
    pub(super) mcast_src_ip: Option<Spanned<Value>>,
    pub(super) unicast_peers: Option<Spanned<Value>>,
    pub(super) old_unicast_checksum: Option<Spanned<Value>>,
    pub(super) check_unicast_src: Option<Spanned<Value>>,
    pub(super) check_unicast_ttl: Option<Spanned<Value>>,
    pub(super) garp_master_repeat: Option<Spanned<Value>>,
    pub(super) garp_master_delay: Option<Spanned<Value>>,
    pub(super) garp_master_refresh: Option<Spanned<Value>>,
    pub(super) garp_master_refresh_repeat: Option<Spanned<Value>>,
    pub(super) garp_interval: Option<Spanned<Value>>,
    pub(super) garp_lower_prio_repeat: Option<Spanned<Value>>,
    pub(super) garp_lower_prio_delay: Option<Spanned<Value>>,
    pub(super) lower_prio_no_advert: Option<Spanned<Value>>,
    pub(super) higher_prio_send_advert: Option<Spanned<Value>>,
    pub(super) notify_master: Option<Spanned<Value>>,
    pub(super) notify_backup: Option<Spanned<Value>>,
    pub(super) notify_fault: Option<Spanned<Value>>,
    pub(super) notify_stop: Option<Spanned<Value>>,
    pub(super) notify: Option<Spanned<Value>>,
    pub(super) track_virtual_servers: Option<Spanned<Value>>,
    pub(super) track_scripts: Option<Spanned<Value>>,
    pub(super) track_interfaces: Option<Spanned<Value>>,
    pub(super) peer_bfd: Option<Spanned<Value>>,
    pub(super) track_bfd: Option<Spanned<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawGlobal {
    pub(super) router_id: Option<Spanned<Value>>,
    pub(super) api: Option<Spanned<Value>>,
    pub(super) api_token: Option<Spanned<Value>>,
    pub(super) dump_dir: Option<Spanned<Value>>,
    pub(super) bfdd_socket: Option<Spanned<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawDataplane {
    pub(super) interfaces: Option<Spanned<Vec<Spanned<Value>>>>,
    pub(super) xdp_mode: Option<Spanned<Value>>,
    pub(super) max_flows: Option<Spanned<Value>>,
    pub(super) max_flows_v6: Option<Spanned<Value>>,
    pub(super) neighbour_timeout: Option<Spanned<Value>>,
    pub(super) new_flow_rate: Option<Spanned<Value>>,
    pub(super) pin_dir: Option<Spanned<Value>>,
    pub(super) nat_tcp_timeout: Option<Spanned<Value>>,
    pub(super) nat_tcp_fin_timeout: Option<Spanned<Value>>,
    pub(super) nat_udp_timeout: Option<Spanned<Value>>,
}

/// `[announce]`: where announced VIPs go for the local routing daemon to see.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAnnounce {
    pub(super) interface: Option<Spanned<Value>>,
    pub(super) drain_idle: Option<Spanned<Value>>,
}

/// `[sync]`: NAT connections sent from the MASTER to its peers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSync {
    pub(super) instance: Option<Spanned<Value>>,
    pub(super) interface: Option<Spanned<Value>>,
    pub(super) peers: Option<Spanned<Value>>,
    pub(super) group: Option<Spanned<Value>>,
    pub(super) port: Option<Spanned<Value>>,
    pub(super) secret: Option<Spanned<Value>>,
    pub(super) secret_file: Option<Spanned<Value>>,
    pub(super) interval: Option<Spanned<Value>>,
    pub(super) rate: Option<Spanned<Value>>,
}

/// `[filter]`: the source filter's global deny list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawFilter {
    pub(super) deny: Option<Spanned<Vec<Spanned<Value>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawVirtualServer {
    pub(super) vip: Option<Spanned<Value>>,
    pub(super) port: Option<Spanned<Value>>,
    /// The name of a `[virtual_server_group.NAME]`, instead of `vip` and `port`.
    pub(super) group: Option<Spanned<Value>>,
    pub(super) protocol: Option<Spanned<Value>>,
    pub(super) scheduler: Option<Spanned<Value>>,
    pub(super) forwarding: Option<Spanned<Value>>,
    pub(super) sorry_server: Option<Spanned<Value>>,
    pub(super) quorum: Option<Spanned<Value>>,
    pub(super) hysteresis: Option<Spanned<Value>>,
    pub(super) quorum_up: Option<Spanned<Value>>,
    pub(super) quorum_down: Option<Spanned<Value>>,
    pub(super) omega: Option<Spanned<Value>>,
    pub(super) persistence_timeout: Option<Spanned<Value>>,
    pub(super) flow_table: Option<Spanned<Value>>,
    pub(super) persistence_granularity: Option<Spanned<Value>>,
    pub(super) allow: Option<Spanned<Vec<Spanned<Value>>>>,
    pub(super) deny: Option<Spanned<Vec<Spanned<Value>>>>,
    pub(super) announce: Option<Spanned<Value>>,
    #[serde(default)]
    pub(super) real_server: Vec<Spanned<RawRealServer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRealServer {
    pub(super) address: Option<Spanned<Value>>,
    pub(super) port: Option<Spanned<Value>>,
    pub(super) weight: Option<Spanned<Value>>,
    pub(super) inhibit_on_failure: Option<Spanned<Value>>,
    pub(super) check: Option<Spanned<RawCheck>>,
}

/// One entry of an http check's `urls = [{ path = "/a", ... }, ...]`: keepalived's
/// `url { path; status_code; digest; virtualhost }`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { path = \"/health\", status = [200] }"
)]
pub(super) struct RawUrl {
    pub(super) path: Option<Spanned<Value>>,
    pub(super) status: Option<Spanned<Value>>,
    pub(super) digest: Option<Spanned<Value>>,
    pub(super) virtualhost: Option<Spanned<Value>>,
}

/// `check = { type = "http", ... }` of a real server; keys as keepalived names them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table such as { type = \"tcp\" }")]
pub(super) struct RawCheck {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<Value>>,
    pub(super) interval: Option<Spanned<Value>>,
    pub(super) warmup: Option<Spanned<Value>>,
    pub(super) connect_timeout: Option<Spanned<Value>>,
    pub(super) retry: Option<Spanned<Value>>,
    pub(super) delay_before_retry: Option<Spanned<Value>>,
    pub(super) rise: Option<Spanned<Value>>,
    pub(super) fall: Option<Spanned<Value>>,
    pub(super) source: Option<Spanned<Value>>,
    pub(super) connect_ip: Option<Spanned<Value>>,
    pub(super) connect_port: Option<Spanned<Value>>,
    pub(super) alpha: Option<Spanned<Value>>,
    pub(super) path: Option<Spanned<Value>>,
    pub(super) status: Option<Spanned<Value>>,
    pub(super) digest: Option<Spanned<Value>>,
    pub(super) virtualhost: Option<Spanned<Value>>,
    pub(super) urls: Option<Spanned<Vec<Spanned<RawUrl>>>>,
    pub(super) verify_certificate: Option<Spanned<Value>>,
    pub(super) ca_file: Option<Spanned<Value>>,
    pub(super) sni: Option<Spanned<Value>>,
    pub(super) command: Option<Spanned<Value>>,
    pub(super) timeout: Option<Spanned<Value>>,
    pub(super) dynamic: Option<Spanned<Value>>,
    pub(super) user: Option<Spanned<Value>>,
    pub(super) payload: Option<Spanned<Value>>,
    pub(super) expect: Option<Spanned<Value>>,
    pub(super) name: Option<Spanned<Value>>,
    pub(super) qtype: Option<Spanned<Value>>,
}
