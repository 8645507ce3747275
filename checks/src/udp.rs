//! `UDP_CHECK`: sends a datagram on a connected UDP socket and waits for a reply.
//!
//! A connected socket is what makes this check worth anything without a reply: the
//! kernel turns an ICMP port unreachable from the target into ECONNREFUSED on the next
//! `recv` (and host/network unreachable into their errors), so "nothing listens there"
//! is told apart from "a server that does not answer this payload". With no expected
//! reply the server is up unless such an error arrives within the connect timeout; with
//! one, a reply starting with the expected bytes is required.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::reason::{Outcome, Phase, Reason, Up};
use crate::spec::{CheckParams, UdpCheck};

/// Largest datagram read back.
const MAX_REPLY: usize = 65_535;

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
}

impl UdpProbe {
    pub(crate) fn new(udp: &UdpCheck, params: &CheckParams) -> UdpProbe {
        UdpProbe {
            target: params.target(),
            source: params.source,
            timeout: params.connect_timeout,
            payload: udp.payload.clone(),
            expect: udp.expect.clone(),
        }
    }

    pub(crate) async fn probe(&self) -> Outcome {
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
