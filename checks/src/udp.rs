//! `UDP_CHECK`: sends a datagram on a connected UDP socket and waits for a reply.
//!
//! A connected socket is what makes this check worth anything without a reply: the
//! kernel turns an ICMP port unreachable from the target into ECONNREFUSED on the next
//! `recv` (and host/network unreachable into their errors), so "nothing listens there"
//! is told apart from "a server that does not answer this payload". With no expected
//! reply the server is up unless such an error arrives within the connect timeout; with
//! one, a reply starting with the expected bytes is required.
//!
//! A host sends ICMP errors at most about once a second after a short burst
//! (`net.ipv4.icmp_ratelimit`), so after a port unreachable, silence proves nothing
//! for [`ICMP_RATE_WINDOW`]: the port stays closed until a reply, or until silence has
//! lasted longer than the kernel would have kept quiet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::reason::{Outcome, Phase, Reason, Up};
use crate::spec::{CheckParams, UdpCheck};

/// Largest datagram read back.
const MAX_REPLY: usize = 65_535;

/// How long after a port unreachable a silence may still be the target's ICMP rate
/// limit (1 s by default) rather than an open port.
pub const ICMP_RATE_WINDOW: Duration = Duration::from_secs(2);

/// A UDP socket bound to `source` (or any address of the target's family) and
/// connected to `target`.
pub(crate) async fn connected_socket(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> Result<UdpSocket, Reason> {
    let local = source.unwrap_or(if target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    let socket = UdpSocket::bind(SocketAddr::new(local, 0))
        .await
        .map_err(|e| Reason::io(Phase::Socket, &e))?;
    socket
        .connect(target)
        .await
        .map_err(|e| Reason::io(Phase::Connect, &e))?;
    Ok(socket)
}

/// A prepared UDP check.
#[derive(Debug)]
pub(crate) struct UdpProbe {
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    payload: Vec<u8>,
    expect: Option<Vec<u8>>,
    /// When the target last said the port is closed.
    closed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl UdpProbe {
    pub(crate) fn new(udp: &UdpCheck, params: &CheckParams) -> UdpProbe {
        UdpProbe {
            target: params.target(),
            source: params.source,
            timeout: params.connect_timeout,
            payload: udp.payload.clone(),
            expect: udp.expect.clone(),
            closed_at: std::sync::Mutex::new(None),
        }
    }

    pub(crate) async fn probe(&self) -> Outcome {
        let outcome = self.exchange().await;
        let now = tokio::time::Instant::now();
        let mut closed_at = self.closed_at.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Err(Reason::PortUnreachable) => {
                *closed_at = Some(now);
                outcome
            }
            // Silence only: a reply always counts.
            Ok(_)
                if self.expect.is_none()
                    && closed_at.is_some_and(|at| now < at + ICMP_RATE_WINDOW) =>
            {
                Err(Reason::PortUnreachable)
            }
            outcome => outcome,
        }
    }

    async fn exchange(&self) -> Outcome {
        let socket = connected_socket(self.target, self.source).await?;
        socket
            .send(&self.payload)
            .await
            .map_err(|e| Reason::io(Phase::Send, &e))?;
        let mut buf = vec![0u8; MAX_REPLY];
        match tokio::time::timeout(self.timeout, socket.recv(&mut buf)).await {
            Err(_elapsed) => match self.expect {
                None => Ok(Up::default()),
                Some(_) => Err(Reason::Timeout {
                    phase: Phase::Reply,
                    after: self.timeout,
                }),
            },
            Ok(Err(e)) => Err(Reason::io(Phase::Reply, &e)),
            Ok(Ok(len)) => match &self.expect {
                Some(expected) if !buf[..len].starts_with(expected) => {
                    Err(Reason::UnexpectedReply {
                        expected: expected.clone(),
                        got: buf[..len].to_vec(),
                    })
                }
                _ => Ok(Up::default()),
            },
        }
    }
}
