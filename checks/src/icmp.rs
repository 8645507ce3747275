//! `PING_CHECK`: one ICMP or ICMPv6 echo request, up on the matching echo reply.
//!
//! An unprivileged "ping" socket (`SOCK_DGRAM`, allowed by `net.ipv4.ping_group_range`)
//! is tried first; where that is refused (the default range, and every fresh network
//! namespace, allows nobody) a raw socket is used, which needs CAP_NET_RAW (the daemon
//! runs as root). The socket is connected to the target so the kernel filters replies
//! by source and reports ICMP errors about our request (host or network unreachable)
//! as socket errors. A raw socket still sees every echo of that peer (and, on loopback,
//! our own request), so replies are matched on identifier and sequence.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::reason::{Outcome, Phase, Reason, Up, libc_errno, reply_before};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const UNREACHABLE_V4: u8 = 3;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const UNREACHABLE_V6: u8 = 1;
const PAYLOAD: &[u8] = b"xdp-lb-checks ping";

/// A prepared ICMP check.
#[derive(Debug)]
pub(crate) struct IcmpProbe {
    target: IpAddr,
    source: Option<IpAddr>,
    timeout: Duration,
}

/// Which kind of socket carries the echo; it decides what `recv` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Ping socket: ICMP message only; the kernel owns the identifier.
    Dgram,
    /// Raw socket: IPv4 header first (not for IPv6); we own the identifier.
    Raw,
}

impl IcmpProbe {
    pub(crate) fn new(params: &crate::CheckParams) -> IcmpProbe {
        IcmpProbe {
            target: params.target().ip(),
            source: params.source,
            timeout: params.connect_timeout,
        }
    }

    pub(crate) async fn probe(&self) -> Outcome {
        let v6 = self.target.is_ipv6();
        let (socket, kind) = open(v6).map_err(|e| Reason::io(Phase::Socket, &e))?;
        if let Some(source) = self.source {
            socket
                .bind(&SocketAddr::new(source, 0).into())
                .map_err(|e| Reason::io(Phase::Socket, &e))?;
        }
        socket
            .connect(&SocketAddr::new(self.target, 0).into())
            .map_err(|e| Reason::io(Phase::Connect, &e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Reason::io(Phase::Socket, &e))?;
        // tokio's UdpSocket is a plain datagram-fd wrapper: send/recv on any datagram
        // socket, raw and ping ones included.
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))
            .map_err(|e| Reason::io(Phase::Socket, &e))?;
        let random = crate::random_u64();
        let (ident, seq) = (random as u16, (random >> 16) as u16);
        socket
            .send(&echo_request(v6, ident, seq))
            .await
            .map_err(|e| Reason::io(Phase::Send, &e))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 1500];
        loop {
            let len = reply_before(deadline, self.timeout, socket.recv(&mut buf)).await?;
            let message = match (kind, v6) {
                (Kind::Raw, false) => strip_ipv4_header(&buf[..len]),
                _ => Some(&buf[..len]),
            };
            // The kernel sets the identifier of a ping socket; it also filters on it.
            let ident = (kind == Kind::Raw).then_some(ident);
            match message.map(|m| classify(m, v6, ident, seq)) {
                Some(Some(outcome)) => return outcome,
                _ => continue,
            }
        }
    }
}

/// A ping socket if allowed, else a raw one.
fn open(v6: bool) -> std::io::Result<(Socket, Kind)> {
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(socket) => Ok((socket, Kind::Dgram)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc_errno::EACCES | libc_errno::EPERM)
            ) =>
        {
            Socket::new(domain, Type::RAW, Some(protocol)).map(|s| (s, Kind::Raw))
        }
        Err(e) => Err(e),
    }
}

/// An echo request; the IPv4 checksum is ours, the kernel fills in ICMPv6's.
fn echo_request(v6: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn strip_ipv4_header(packet: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    packet.get(ihl..)
}

/// What an ICMP message means for our echo: `None` if it is not about it.
fn classify(message: &[u8], v6: bool, ident: Option<u16>, seq: u16) -> Option<Outcome> {
    let (reply, unreachable) = if v6 {
        (ECHO_REPLY_V6, UNREACHABLE_V6)
    } else {
        (ECHO_REPLY_V4, UNREACHABLE_V4)
    };
    let ours = |echo: &[u8]| {
        echo.len() >= 8
            && ident.is_none_or(|id| echo[4..6] == id.to_be_bytes())
            && echo[6..8] == seq.to_be_bytes()
    };
    match *message.first()? {
        t if t == reply && ours(message) => Some(Ok(Up::default())),
        t if t == unreachable => {
            // The error quotes our packet: the IPv4 header (variable) or the fixed
            // 40-byte IPv6 header, then our ICMP header.
            let quoted = message.get(8..)?;
            let echo = if v6 {
                quoted.get(40..)?
            } else {
                strip_ipv4_header(quoted)?
            };
            ours(echo).then(|| Err(Reason::Unreachable(unreachable_name(v6, message[1]))))
        }
        _ => None,
    }
}

fn unreachable_name(v6: bool, code: u8) -> String {
    let name = match (v6, code) {
        (false, 0) => "network unreachable",
        (false, 1) => "host unreachable",
        (false, 2) => "protocol unreachable",
        (false, 3) => "port unreachable",
        (false, 9 | 10 | 13) => "communication administratively prohibited",
        (true, 0) => "no route to destination",
        (true, 1) => "communication administratively prohibited",
        (true, 3) => "address unreachable",
        (true, 4) => "port unreachable",
        (true, 5 | 6) => "source address failed policy",
        _ => return format!("destination unreachable (code {code})"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_follows_rfc_1071() {
        // RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2 (complement 220d).
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        let request = echo_request(false, 0x1234, 7);
        assert_eq!(
            checksum(&request),
            0,
            "a packet with its checksum sums to zero"
        );
        assert_eq!(&request[..2], &[8, 0]);
        // Odd lengths pad with a zero byte.
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn replies_and_errors_are_matched_to_our_echo() {
        let mut reply = echo_request(false, 0x1234, 7);
        reply[0] = ECHO_REPLY_V4;
        assert_eq!(
            classify(&reply, false, Some(0x1234), 7),
            Some(Ok(Up::default()))
        );
        assert_eq!(classify(&reply, false, Some(0x1234), 8), None);
        assert_eq!(classify(&reply, false, Some(0x9999), 7), None);
        // A ping socket: the kernel owns the identifier.
        assert_eq!(classify(&reply, false, None, 7), Some(Ok(Up::default())));
        // Our own request (raw socket on loopback) is not a reply.
        assert_eq!(
            classify(&echo_request(false, 0x1234, 7), false, Some(0x1234), 7),
            None
        );

        // Host unreachable quoting a 20-byte IPv4 header and our echo.
        let mut error = vec![UNREACHABLE_V4, 1, 0, 0, 0, 0, 0, 0, 0x45];
        error.extend_from_slice(&[0; 19]);
        error.extend_from_slice(&echo_request(false, 0x1234, 7)[..8]);
        assert_eq!(
            classify(&error, false, Some(0x1234), 7),
            Some(Err(Reason::Unreachable("host unreachable".into())))
        );
        assert_eq!(classify(&error, false, Some(0x1234), 9), None);

        let mut v6_error = vec![UNREACHABLE_V6, 3, 0, 0, 0, 0, 0, 0];
        v6_error.extend_from_slice(&[0; 40]);
        v6_error.extend_from_slice(&echo_request(true, 1, 2)[..8]);
        assert_eq!(
            classify(&v6_error, true, Some(1), 2),
            Some(Err(Reason::Unreachable("address unreachable".into())))
        );
    }

    #[test]
    fn ipv4_headers_are_stripped_by_their_length() {
        let mut packet = vec![0x46];
        packet.extend_from_slice(&[0; 23]);
        packet.push(ECHO_REPLY_V4);
        assert_eq!(strip_ipv4_header(&packet), Some(&[ECHO_REPLY_V4][..]));
        assert_eq!(strip_ipv4_header(&[]), None);
    }
}
