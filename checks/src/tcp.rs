//! `TCP_CHECK`: up when a TCP connection to the target opens within the connect timeout.
//!
//! Also owns [`connect`], the connect step HTTP and HTTPS share: optional source
//! address, timeout, and refusals told apart from other errors.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::reason::{Outcome, Phase, Reason, Up};

/// Opens a connection to `target` from `source` (any local address if `None`).
pub(crate) async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Reason> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| Reason::io(Phase::Socket, &e))?;
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| Reason::io(Phase::Socket, &e))?;
    }
    match tokio::time::timeout(timeout, socket.connect(target)).await {
        Err(_elapsed) => Err(Reason::Timeout {
            phase: Phase::Connect,
            after: timeout,
        }),
        Ok(result) => result.map_err(|e| Reason::io(Phase::Connect, &e)),
    }
}

/// One TCP check: connect, then close.
pub(crate) async fn probe(
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Outcome {
    connect(target, source, timeout).await?;
    Ok(Up::default())
}
