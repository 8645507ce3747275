//! xdp-lb: the daemon's library. `main.rs` only parses the command line and wires
//! these modules together.
pub mod announce;
pub mod api;
pub mod config;
pub mod connections;
pub mod daemon;
pub mod dataplane;
pub mod dump;
pub mod error_chain;
pub mod failover;
pub mod forwarding;
mod health_checks;
pub mod import;
pub mod log_limit;
pub mod metrics;
pub mod neighbours;
pub mod netlink;
pub mod notify;
pub mod preflight;
pub mod privileges;
pub mod reload;
pub mod schedule;
pub mod services;
pub mod status;
pub mod status_client;
pub mod systemd;
mod tracking;
pub mod vrrp_socket;
