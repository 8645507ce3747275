//! [`Checker`]: a check prepared once (spec validated, TLS client built, user looked up,
//! DNS query name encoded) and probed as often as the scheduler asks.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::dns::DnsProbe;
use crate::http::HttpProbe;
use crate::icmp::IcmpProbe;
use crate::misc::MiscProbe;
use crate::reason::{Outcome, Reason};
use crate::spec::{CheckParams, CheckSpec};
use crate::tcp;
use crate::udp::UdpProbe;

/// A ready-to-run check of one real server.
#[derive(Debug)]
pub struct Checker {
    name: String,
    kind: Kind,
    /// One probe's whole run, whatever its phases: a server that answers a byte at a
    /// time within every per-phase timeout still fails in the end.
    deadline: Duration,
}

/// Phases of a probe that each get `connect_timeout` (connect, TLS handshake, answer,
/// body): its overall deadline is this many of them, for each URL of an HTTP check.
pub const DEADLINE_PHASES: u32 = 4;

#[derive(Debug)]
enum Kind {
    Tcp {
        target: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    },
    Http(Box<HttpProbe>),
    Misc(MiscProbe),
    Udp(UdpProbe),
    Dns(DnsProbe),
    Icmp(IcmpProbe),
}

impl Checker {
    /// Validates `spec` with `params` and prepares it. Fails with [`Reason::Invalid`]
    /// when the check cannot run as configured (bad digest or name, unknown user,
    /// unreadable CA file, mixed address families, ...). May read files (CA file, the
    /// system trust store once per process, the user database).
    pub fn new(spec: &CheckSpec, params: &CheckParams) -> Result<Checker, Reason> {
        spec.validate(params)?;
        let kind = match spec {
            CheckSpec::Tcp => Kind::Tcp {
                target: params.target(),
                source: params.source,
                timeout: params.connect_timeout,
            },
            CheckSpec::Http(http) => Kind::Http(Box::new(HttpProbe::new(http, None, params)?)),
            CheckSpec::Https { http, tls } => {
                Kind::Http(Box::new(HttpProbe::new(http, Some(tls), params)?))
            }
            CheckSpec::Misc(misc) => Kind::Misc(MiscProbe::new(misc, params)?),
            CheckSpec::Udp(udp) => Kind::Udp(UdpProbe::new(udp, params)),
            CheckSpec::Dns(dns) => Kind::Dns(DnsProbe::new(dns, params)?),
            CheckSpec::Icmp => Kind::Icmp(IcmpProbe::new(params)),
        };
        let deadline = match &kind {
            // The command's own timeout, then its TERM/KILL grace: the misc probe ends
            // by itself; this only backs it up.
            Kind::Misc(misc) => misc.longest_run() + Duration::from_secs(1),
            // The URLs are requested one after the other, each with all its phases; one
            // deadline covers them all.
            Kind::Http(http) => {
                params.connect_timeout * DEADLINE_PHASES * http.url_count().max(1) as u32
            }
            _ => params.connect_timeout * DEADLINE_PHASES,
        };
        Ok(Checker {
            name: spec.describe(params),
            kind,
            deadline,
        })
    }

    /// The check as log lines name it, e.g. `http_get 192.0.2.21:80/health`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One probe's overall deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// One attempt, no retries: up, or down with the reason; never longer than
    /// [`Checker::deadline`].
    pub async fn probe(&self) -> Outcome {
        match tokio::time::timeout(self.deadline, self.probe_once()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Reason::Deadline {
                after: self.deadline,
            }),
        }
    }

    async fn probe_once(&self) -> Outcome {
        match &self.kind {
            Kind::Tcp {
                target,
                source,
                timeout,
            } => tcp::probe(*target, *source, *timeout).await,
            Kind::Http(http) => http.probe().await,
            Kind::Misc(misc) => misc.probe().await,
            Kind::Udp(udp) => udp.probe().await,
            Kind::Dns(dns) => dns.probe().await,
            Kind::Icmp(icmp) => icmp.probe().await,
        }
    }
}
