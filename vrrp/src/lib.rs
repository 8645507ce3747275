//! VRRP for xdp-lb: the wire codec and the state machine, with no sockets, no clock and
//! no root.
//!
//! - [`packet`]: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) advertisements, byte-exact with
//!   keepalived; [`decode`] says why a packet is dropped ([`DropReason`]).
//! - [`checksum`]: the Internet checksum over the message (v2) or with the IPv4/IPv6
//!   pseudo-header (v3).
//! - [`fsm`]: one virtual router ([`Instance`]) as a value driven by [`Event`]s and an
//!   explicit [`std::time::Instant`], returning [`Action`]s; split-brain and VRID-clash
//!   diagnostics come out as actions and counters, not log lines.
//! - [`sync_group`]: [`SyncGroup`], members that change state together.
//!
//! The daemon owns everything around it: raw sockets (IP protocol 112, multicast
//! 224.0.0.18 / ff02::12 or unicast peers), timers, VIPs via rtnetlink, gratuitous ARP and
//! unsolicited neighbour advertisements, notify scripts and tracking.
//!
//! ```
//! use std::net::IpAddr;
//! use std::time::{Duration, Instant};
//! use xdp_lb_vrrp::{Action, Config, Event, Instance, State, Version, encode, packet};
//!
//! let me: IpAddr = "192.0.2.11".parse().unwrap();
//! let mut cfg = Config::new(51, me);
//! cfg.version = Version::V3;
//! cfg.priority = 150;
//! cfg.addresses = vec!["192.0.2.200".parse().unwrap()];
//! let mut vr = Instance::new(cfg).unwrap();
//!
//! let t0 = Instant::now();
//! assert_eq!(vr.handle(t0, Event::Start), vec![Action::BecomeBackup]);
//! // Nobody else advertises: MASTER once the master-down interval has passed.
//! let deadline = vr.next_deadline().unwrap();
//! assert_eq!(deadline - t0, Duration::from_micros(3_414_062));
//! let actions = vr.handle(deadline, Event::Timer);
//! assert_eq!(actions, vec![Action::SendAdvert { priority: 150 }, Action::BecomeMaster]);
//! assert_eq!(vr.state(), State::Master);
//!
//! let group = IpAddr::V4(packet::MULTICAST_V4);
//! let bytes = encode(&vr.advert(150), me, group).unwrap();
//! assert_eq!(bytes[..4], [0x31, 51, 150, 1]);
//! ```

pub mod checksum;
pub mod fsm;
pub mod packet;
pub mod sync_group;

pub use fsm::{Action, Clash, Config, ConfigError, Event, Instance, State, Stats, Tunables};
pub use packet::{
    Advert, AdvertError, ChecksumForm, DropReason, Expect, Ipv4Header, Version, decode,
    decode_form, decode_ipv4, encode, encode_ipv4,
};
pub use sync_group::SyncGroup;
