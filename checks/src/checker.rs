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
}

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
        Ok(Checker {
            name: spec.describe(params),
            kind,
        })
    }

    /// The check as log lines name it, e.g. `http_get 192.0.2.21:80/health`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One attempt, no retries: up, or down with the reason.
    pub async fn probe(&self) -> Outcome {
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
