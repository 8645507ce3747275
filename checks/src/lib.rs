//! Health checkers for xdp-lb real servers, with keepalived's checks and parameters.
//!
//! - [`spec`]: what to check ([`CheckSpec`]: TCP, HTTP, HTTPS, MISC, UDP, DNS, ICMP) and
//!   the common [`CheckParams`] with keepalived's defaults.
//! - [`Checker`]: a check prepared once and probed on demand; one probe gives an
//!   [`Outcome`]: [`Up`] (maybe with a dynamic weight) or a [`Reason`] that says exactly
//!   what failed, in lowercase words for log lines.
//! - [`health`]: rise/fall hysteresis and `alpha`, a pure state machine.
//! - [`scheduler`]: [`run`] drives many checks on tokio with bounded concurrency and
//!   sends a [`Transition`] whenever a server's verdict (or dynamic weight) changes.
//!
//! One module per checker: `tcp`, `http` (HTTP and HTTPS), `misc`, `udp`, `dns`, `icmp`.
//! The daemon maps configuration onto these types and transitions onto schedules.

mod checker;
mod dns;
pub mod health;
mod http;
mod icmp;
mod misc;
mod reason;
pub mod scheduler;
pub mod script_security;
pub mod spec;
mod tcp;
mod udp;

pub use checker::{Checker, DEADLINE_PHASES};
pub use health::{Change, Health};
pub use http::{Fetched, Genhash, MAX_BODY, USER_AGENT_VALUE, genhash};
pub use misc::TERM_GRACE;
pub use reason::{Dur, Outcome, Phase, Reason, ScriptOutput, Up};
pub use scheduler::{BackendId, Transition, run};
pub use spec::{
    CheckParams, CheckSpec, DEFAULT_STATUS, Digest, DnsCheck, HashKind, HttpCheck, HttpUrl,
    MiscCheck, QType, TlsCheck, UdpCheck,
};

/// 64 random bits for DNS ids, ICMP identifiers and warmup jitter: not secret, only
/// different each time. std's `RandomState` is seeded randomly per thread and stepped
/// on every `new`, which is enough and needs no dependency.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish()
}
