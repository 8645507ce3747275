//! What the VRRP instances and sync groups are configured with, as the failover runtime
//! takes them (the daemon builds them from the TOML configuration; tests build them in
//! code).

use std::{net::IpAddr, time::Duration};

use xdp_lb_vrrp::{
    Config, Version,
    fsm::{DEFAULT_ADVERT_INTERVAL, DEFAULT_PRIORITY},
    packet::simple_password,
};

/// keepalived's `vrrp_garp_master_repeat` default.
pub const DEFAULT_GARP_REPEAT: u32 = 5;
/// keepalived's `vrrp_garp_master_delay` default: the second burst, 5 s after the first.
pub const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(5);
/// Default bound on one notify command's run time.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// A virtual address held by the MASTER: `addr/prefix` on the instance's interface (or
/// on `device`), with an optional IPv4 label (`eth0:vip`) and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualAddress {
    pub addr: IpAddr,
    pub prefix: u8,
    pub label: Option<String>,
    /// Another interface to hold the address (keepalived's `dev`); its gratuitous ARP or
    /// neighbour advertisement goes out there too.
    pub device: Option<String>,
    /// rtnetlink scope (`RT_SCOPE_*`); `None` is global.
    pub scope: Option<u8>,
}

impl VirtualAddress {
    /// `addr/prefix` on the instance's interface, global scope, no label.
    pub fn new(addr: IpAddr, prefix: u8) -> VirtualAddress {
        VirtualAddress {
            addr,
            prefix,
            label: None,
            device: None,
            scope: None,
        }
    }
}

/// keepalived's `track_interface` entry: while `name` is down, `weight` (negative) is
/// added to the priority, or while it is up `weight` (positive); weight 0 means FAULT
/// while it is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedInterface {
    pub name: String,
    pub weight: i32,
}

/// keepalived's `vrrp_sync_group`: instances (by name) that change state together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupSpec {
    pub name: String,
    pub members: Vec<String>,
    /// The group's notify commands; `generic` gets `GROUP <name> <STATE> 0` appended.
    pub notify: Notify,
}

/// Commands run on state changes. Each is an argv list executed directly (no shell), in
/// order per instance, off the state machine's task, each bounded by `timeout` (killed
/// when it runs over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<Vec<String>>,
    pub backup: Option<Vec<String>>,
    pub fault: Option<Vec<String>>,
    pub stop: Option<Vec<String>>,
    /// Called on every change with keepalived's arguments appended:
    /// `INSTANCE <name> <MASTER|BACKUP|FAULT|STOP> <priority>`.
    pub generic: Option<Vec<String>>,
    pub timeout: Duration,
}

impl Default for Notify {
    fn default() -> Notify {
        Notify {
            master: None,
            backup: None,
            fault: None,
            stop: None,
            generic: None,
            timeout: DEFAULT_NOTIFY_TIMEOUT,
        }
    }
}

/// One VRRP instance (keepalived's `vrrp_instance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Instance name, for logs, events and notify commands.
    pub name: String,
    /// Interface the adverts go out on and the VIPs are added to.
    pub interface: String,
    pub vrid: u8,
    /// 1..=255 (255: address owner).
    pub priority: u8,
    pub version: Version,
    /// v2: whole seconds; v3: a multiple of 10 ms.
    pub advert_interval: Duration,
    /// v2 simple password (first 8 bytes are used, as keepalived does).
    pub auth_pass: Option<String>,
    /// `false` is keepalived's `nopreempt`.
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// All of one family: it decides whether the instance speaks over IPv4 or IPv6.
    pub virtual_addresses: Vec<VirtualAddress>,
    /// Source of our adverts. Default: the interface's first IPv4 address that is not a
    /// VIP, or its IPv6 link-local address.
    pub unicast_source: Option<IpAddr>,
    /// Unicast peers; empty means multicast (224.0.0.18 / ff02::12).
    pub unicast_peers: Vec<IpAddr>,
    /// IPv4 VRRPv3 unicast: checksum over the multicast pseudo-header, as keepalived
    /// before 1.3.6 (`old_unicast_checksum`). Also switched on by hearing a peer do it.
    pub old_unicast_checksum: bool,
    /// Rounds of gratuitous ARP / unsolicited NA in each burst on becoming MASTER
    /// (keepalived's `garp_master_repeat`; see [`crate::announce::Schedule`]).
    pub garp_repeat: u32,
    /// When the second burst follows the first (`garp_master_delay`; zero: none).
    pub garp_delay: Duration,
    /// While MASTER, announce the VIPs again this often (`garp_master_refresh`)...
    pub garp_refresh: Option<Duration>,
    /// ...in this many rounds (`garp_master_refresh_repeat`).
    pub garp_refresh_repeat: u32,
    /// Between two rounds of a burst (`vrrp_garp_interval`).
    pub garp_interval: Duration,
    /// While MASTER, rounds announced when a lower-priority advert arrives
    /// (`garp_lower_prio_repeat`; zero: none)...
    pub garp_lower_prio_repeat: u32,
    /// ...and again this long after the last such advert (`garp_lower_prio_delay`;
    /// zero: once only).
    pub garp_lower_prio_delay: Duration,
    /// Do not answer a lower-priority advert with ours (`lower_prio_no_advert`).
    pub lower_prio_no_advert: bool,
    /// Answer a higher-priority advert before giving way (`higher_prio_send_advert`).
    pub higher_prio_send_advert: bool,
    pub notify: Notify,
    /// Interfaces besides `interface` whose state changes the priority or means FAULT.
    pub track_interfaces: Vec<TrackedInterface>,
}

impl InstanceSpec {
    /// keepalived's defaults: VRRPv3, priority 100, 1 s, preempt, multicast, two bursts
    /// of five announcements 5 s apart, no refresh, no notify commands.
    pub fn new(
        name: impl Into<String>,
        interface: impl Into<String>,
        vrid: u8,
        virtual_addresses: Vec<VirtualAddress>,
    ) -> InstanceSpec {
        InstanceSpec {
            name: name.into(),
            interface: interface.into(),
            vrid,
            priority: DEFAULT_PRIORITY,
            version: Version::V3,
            advert_interval: DEFAULT_ADVERT_INTERVAL,
            auth_pass: None,
            preempt: true,
            preempt_delay: Duration::ZERO,
            virtual_addresses,
            unicast_source: None,
            unicast_peers: Vec::new(),
            old_unicast_checksum: false,
            garp_repeat: DEFAULT_GARP_REPEAT,
            garp_delay: DEFAULT_GARP_DELAY,
            garp_refresh: None,
            garp_refresh_repeat: 1,
            garp_interval: Duration::ZERO,
            garp_lower_prio_repeat: DEFAULT_GARP_REPEAT,
            garp_lower_prio_delay: DEFAULT_GARP_DELAY,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            notify: Notify::default(),
            track_interfaces: Vec::new(),
        }
    }

    /// Whether the instance speaks VRRP over IPv6 (its VIPs are IPv6).
    pub fn is_ipv6(&self) -> bool {
        self.virtual_addresses
            .first()
            .is_some_and(|v| v.addr.is_ipv6())
    }

    /// Whether adverts go to unicast peers rather than the multicast group.
    pub fn is_unicast(&self) -> bool {
        !self.unicast_peers.is_empty()
    }

    /// The VIPs without prefixes.
    pub fn vips(&self) -> Vec<IpAddr> {
        self.virtual_addresses.iter().map(|v| v.addr).collect()
    }

    /// The state machine's configuration, with `primary` as our advert source.
    pub fn fsm_config(&self, primary: IpAddr) -> Config {
        let mut cfg = Config::new(self.vrid, primary);
        cfg.priority = self.priority;
        cfg.version = self.version;
        cfg.advert_interval = self.advert_interval;
        cfg.preempt = self.preempt;
        cfg.preempt_delay = self.preempt_delay;
        cfg.lower_prio_no_advert = self.lower_prio_no_advert;
        cfg.higher_prio_send_advert = self.higher_prio_send_advert;
        cfg.addresses = self.vips();
        cfg.auth = self
            .auth_pass
            .as_ref()
            .map(|p| simple_password(p.as_bytes()));
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsm_config_carries_the_spec() {
        let vip = VirtualAddress::new("192.0.2.200".parse().unwrap(), 24);
        let mut spec = InstanceSpec::new("VI_1", "eth0", 51, vec![vip]);
        spec.version = Version::V2;
        spec.priority = 150;
        spec.auth_pass = Some("secret12345".into());
        spec.lower_prio_no_advert = true;
        let cfg = spec.fsm_config("192.0.2.1".parse().unwrap());
        assert!(cfg.lower_prio_no_advert && !cfg.higher_prio_send_advert);
        assert_eq!(cfg.vrid, 51);
        assert_eq!(cfg.priority, 150);
        assert_eq!(cfg.auth, Some(*b"secret12"));
        assert_eq!(
            cfg.addresses,
            vec!["192.0.2.200".parse::<IpAddr>().unwrap()]
        );
        assert!(!spec.is_ipv6());
        assert!(!spec.is_unicast());
        assert!(cfg.validate().is_ok());
    }
}
