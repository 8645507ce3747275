//! Throwaway labs in network namespaces for xdp-lb's demo and integration tests.
//!
//! - [`netns`]: [`Netns`], a named namespace as an RAII guard (kill + delete on drop),
//!   with helpers to run commands or Rust closures inside it.
//! - [`topology`]: [`DrLab`], the LVS-DR topology (client, LB, real servers joined by
//!   bridges), one-arm or two-arm.
//! - [`backends`]: [`BackendServer`], python3 HTTP/UDP servers answering a name.
//! - [`client`]: probes run from a namespace: HTTP over new or keep-alive connections,
//!   UDP from many source ports, reachability waits.
//! - [`capture`]: [`Capture`], an AF_PACKET capture on one interface of a namespace.
//! - [`cpu`]: keeping a thread on one CPU ([`cpu::pin_to_cpu`]), for the data plane's
//!   per-CPU state and for benchmarks.
//! - [`daemon`]: [`Daemon`], the xdp-lb binary run in a namespace, its log awaited line by line.
//! - [`keepalived`]: [`Keepalived`], real keepalived (VRRP only) in a namespace, with a
//!   one-instance configuration ([`KaConf`]), stopped gracefully or killed like a crash.
//! - [`probe`]: a failover as a client sees it: a UDP [`Probe`] that records who answers
//!   a virtual address every few milliseconds, per-node [`Responder`]s, the
//!   [`Handover`] analysis, and the [`ProbeLab`] segment (two nodes and a client).
//! - [`ecmp`]: [`ecmp::EcmpLab`], active-active LBs behind an ECMP router, each
//!   announcing the VIP over BGP with its own FRR ([`frr::Frr`]).
//! - [`xdp`]: tiny XDP programs from bytecode: the pass-through program the lab puts on
//!   the LB-facing veth peers (so `XDP_TX` is delivered), and a loader for test programs.
//!
//! Everything needs root ([`require_root`]) and the `ip` (iproute2), `ethtool` and
//! `python3` programs. Addresses come from the documentation ranges and exist only
//! inside the lab's namespaces; the host's interfaces and routes are never touched.

pub mod backends;
pub mod capture;
pub mod client;
pub mod cpu;
pub mod daemon;
pub mod ecmp;
pub mod frr;
pub mod keepalived;
pub mod netns;
pub mod probe;
pub mod topology;
pub mod xdp;

pub use backends::{BackendServer, ServerKind};
pub use capture::Capture;
pub use client::{
    KeepAlive, http_get_from_port, http_get_keepalive, http_get_new_connections,
    http_get_new_connections_from, udp_query, wait_tcp_listening, wait_tcp_reachable,
};
pub use daemon::Daemon;
pub use frr::Frr;
pub use keepalived::{KaConf, Keepalived};
pub use netns::{Netns, namespaces_with_prefix, require_root, veth_pair};
pub use probe::{Handover, Probe, ProbeLab, Reply, Responder};
pub use topology::{Backend, DrLab, DrLabOptions};
