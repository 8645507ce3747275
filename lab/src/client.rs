//! Client-side probes run inside a namespace (usually the lab's client):
//! HTTP over new connections or one keep-alive connection, UDP from many
//! source ports, and TCP reachability checks.
//!
//! Each answer is a backend's name; results are tallies or sequences of names
//! so tests can assert on the spread. Timeouts apply per attempt (connect,
//! each read and write), not to the whole run.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::Netns;

/// Opens `n` TCP connections to `addr` one after another, sends one
/// `GET /` on each (`Connection: close`) and tallies the names answered.
/// The error says which attempt failed and how.
pub fn http_get_new_connections(
    ns: &Netns,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>> {
    http_get_new_connections_from(ns, None, addr, n, timeout)
}

/// [`http_get_new_connections`] from source address `source` (one of the namespace's
/// addresses; the kernel's choice when `None`): one client among several.
pub fn http_get_new_connections_from(
    ns: &Netns,
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>> {
    let where_ = ns.name().to_owned();
    ns.run(move || -> Result<BTreeMap<String, usize>> {
        let mut tally = BTreeMap::new();
        for i in 1..=n {
            let from = source.map(|ip| SocketAddr::new(ip, 0));
            let name = http_get_once(from, addr, timeout, false).with_context(|| {
                format!("from netns {where_}: new connection {i} of {n} to http://{addr}/")
            })?;
            *tally.entry(name).or_insert(0) += 1;
        }
        Ok(tally)
    })?
}

/// One `GET /` on a new connection from `source`, a fixed port (to open the next one
/// from the same port): the connection ends with an RST (SO_LINGER 0), so the port is
/// free again at once. Returns the name answered. The calling thread is pinned to CPU
/// 0 first, so rr's per-CPU cursor sees each connection.
pub fn http_get_from_port(
    ns: &Netns,
    source: SocketAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<String> {
    ns.run(move || -> Result<String> {
        crate::cpu::pin_to_cpu(0)?;
        http_get_once(Some(source), addr, timeout, true)
    })?
}

/// Sends `requests` GETs over ONE TCP connection (HTTP/1.1 keep-alive) and
/// returns the names answered, in order.
pub fn http_get_keepalive(
    ns: &Netns,
    addr: SocketAddr,
    requests: usize,
    timeout: Duration,
) -> Result<Vec<String>> {
    let mut connection = KeepAlive::open(ns, addr, timeout)?;
    (0..requests).map(|_| connection.get()).collect()
}

/// One HTTP/1.1 keep-alive connection opened from a namespace (the socket stays in
/// it), whose requests can be spread over time, e.g. across a failover.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
    describe: String,
    sent: usize,
}

impl KeepAlive {
    pub fn open(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<KeepAlive> {
        Self::open_from(ns, None, addr, timeout)
    }

    /// [`KeepAlive::open`] from a given source address and port (`source`, one of the
    /// namespace's addresses), so a test knows the connection's 5-tuple beforehand.
    pub fn open_from(
        ns: &Netns,
        source: Option<SocketAddr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<KeepAlive> {
        let where_ = ns.name().to_owned();
        let stream = ns.run(move || {
            match source {
                None => connect(addr, timeout),
                Some(source) => connect_from(source, addr, timeout),
            }
            .with_context(|| format!("from netns {where_}: keep-alive connection to {addr}"))
        })??;
        let describe = format!(
            "keep-alive connection {} -> {addr} from netns {}",
            stream.local_addr().map_or("?".into(), |l| l.to_string()),
            ns.name()
        );
        Ok(KeepAlive {
            reader: BufReader::new(stream),
            addr,
            describe,
            sent: 0,
        })
    }

    /// The connection's source address and port.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    /// One GET on the connection; the name that answered.
    pub fn get(&mut self) -> Result<String> {
        self.sent += 1;
        http_exchange(&mut self.reader, self.addr, false)
            .with_context(|| format!("request {} on the {}", self.sent, self.describe))
    }
}

/// Sends `n` datagrams to `addr`, each from a different source port, and
/// tallies the names answered. A datagram is resent a few times within
/// `timeout` before the attempt counts as failed.
pub fn udp_query(
    ns: &Netns,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>> {
    let where_ = ns.name().to_owned();
    ns.run(move || -> Result<BTreeMap<String, usize>> {
        let mut tally = BTreeMap::new();
        let mut used_ports = HashSet::new();
        for i in 1..=n {
            let name = udp_query_once(addr, i, timeout, &mut used_ports).with_context(|| {
                format!("from netns {where_}: datagram {i} of {n} to udp://{addr}")
            })?;
            *tally.entry(name).or_insert(0) += 1;
        }
        Ok(tally)
    })?
}

/// Waits until every address in `addrs` answers a TCP connect, counting a
/// refusal (RST) as an answer: it proves the path and ARP work even when
/// nothing listens. Polls until `timeout`; the error names what stayed silent.
pub fn wait_tcp_reachable(ns: &Netns, addrs: &[SocketAddr], timeout: Duration) -> Result<()> {
    wait_tcp(ns, addrs, timeout, true)
}

/// Waits until a server listens at every address in `addrs`: a connect succeeds
/// (a refusal, its kernel's answer before the server is up, is polled past).
pub fn wait_tcp_listening(ns: &Netns, addrs: &[SocketAddr], timeout: Duration) -> Result<()> {
    wait_tcp(ns, addrs, timeout, false)
}

fn wait_tcp(
    ns: &Netns,
    addrs: &[SocketAddr],
    timeout: Duration,
    refusal_answers: bool,
) -> Result<()> {
    let addrs = addrs.to_vec();
    let where_ = ns.name().to_owned();
    ns.run(move || -> Result<()> {
        let deadline = Instant::now() + timeout;
        for addr in addrs {
            loop {
                let attempt = Duration::from_secs(1);
                let err = match TcpStream::connect_timeout(&addr, attempt) {
                    Ok(_) => break,
                    Err(e) if refusal_answers && e.kind() == ErrorKind::ConnectionRefused => break,
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    let what = if refusal_answers {
                        "unreachable"
                    } else {
                        "not listening"
                    };
                    bail!("from netns {where_}: {addr} still {what} after {timeout:?}: {err}");
                }
                // Bounded polling while the kernel brings links and neighbours up, or
                // the server starts.
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    })?
}

/// [`connect`] from a given source address (and port, 0 for the kernel's choice).
fn connect_from(
    source: impl Into<SocketAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let source: SocketAddr = source.into();
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket
        .bind(&source.into())
        .with_context(|| format!("binding to {source}"))?;
    socket
        .connect_timeout(&addr.into(), timeout)
        .map_err(|e| anyhow!("connect from {source} failed: {}", describe_io(&e, timeout)))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| anyhow!("connect failed: {}", describe_io(&e, timeout)))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One `GET /` on a new connection from `source` (the kernel's choice when `None`);
/// with `reset`, the connection ends with an RST (SO_LINGER 0) rather than a FIN.
fn http_get_once(
    source: Option<SocketAddr>,
    addr: SocketAddr,
    timeout: Duration,
    reset: bool,
) -> Result<String> {
    let stream = match source {
        None => connect(addr, timeout)?,
        Some(source) => connect_from(source, addr, timeout)?,
    };
    if reset {
        // Linger applies at close only: set now, the drop below sends the RST.
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    }
    let local = stream.local_addr().ok();
    let mut reader = BufReader::new(stream);
    http_exchange(&mut reader, addr, true)
        .with_context(|| format!("from {}", local.map_or("?".into(), |l| l.to_string())))
}

/// Sends one GET on the connection and reads one response; returns the body
/// trimmed (the backend's name).
fn http_exchange(
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    close: bool,
) -> Result<String> {
    let timeout = reader.get_ref().read_timeout()?.unwrap_or_default();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xdp-lb-lab\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| anyhow!("sending the request failed: {}", describe_io(&e, timeout)))?;
    let response = read_response(reader)
        .map_err(|e| anyhow!("reading the response failed: {}", describe_err(&e, timeout)))?;
    if response.status != 200 {
        bail!(
            "expected status 200, got {}: {}",
            response.status,
            response.body.trim()
        );
    }
    Ok(response.body.trim().to_owned())
}

/// One parsed HTTP response.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: String,
}

/// Reads one HTTP/1.x response with a Content-Length body (what the lab's
/// servers send), or a body running to EOF when there is no length.
fn read_response(reader: &mut impl BufRead) -> Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("connection closed before a status line");
    }
    let mut parts = line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .with_context(|| format!("bad status line {:?}", line.trim_end()))?,
        _ => bail!("bad status line {:?}", line.trim_end()),
    };
    let mut content_length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((key, value)) = header.split_once(':')
            && key.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .with_context(|| format!("bad header {header:?}"))?,
            );
        }
    }
    let mut body = Vec::new();
    match content_length {
        Some(len) => {
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn udp_query_once(
    addr: SocketAddr,
    i: usize,
    timeout: Duration,
    used_ports: &mut HashSet<u16>,
) -> Result<String> {
    // Keep sockets whose port was used before open while binding again, so the
    // kernel has to hand out a port this run has not used yet.
    let mut held = Vec::new();
    let sock = loop {
        let any: std::net::IpAddr = if addr.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let sock = UdpSocket::bind((any, 0)).context("bind")?;
        let port = sock.local_addr()?.port();
        if used_ports.insert(port) {
            break sock;
        }
        held.push(sock);
        if held.len() > 64 {
            bail!("no unused source port after 64 binds");
        }
    };
    drop(held);
    let local = sock.local_addr()?;
    sock.connect(addr).context("connect")?;
    let payload = format!("xdp-lb-lab query {i}");
    // Resend a few times inside the timeout: the first datagram of a flow can
    // be lost to neighbour resolution on a busy machine.
    let tries = 3u32;
    let per_try = (timeout / tries).max(Duration::from_millis(10));
    let mut buf = [0u8; 2048];
    let mut last_err = None;
    for _ in 0..tries {
        sock.send(payload.as_bytes())
            .with_context(|| format!("send from {local}"))?;
        sock.set_read_timeout(Some(per_try))?;
        match sock.recv(&mut buf) {
            Ok(len) => return Ok(String::from_utf8_lossy(&buf[..len]).trim().to_owned()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                last_err = Some(e);
            }
            Err(e) => bail!("receive on {local} failed: {}", describe_io(&e, per_try)),
        }
    }
    let e = last_err.expect("at least one try");
    bail!(
        "no answer to {local} after {tries} sends: {}",
        describe_io(&e, per_try)
    )
}

fn describe_io(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("timed out after {timeout:?}"),
        ErrorKind::ConnectionRefused => "connection refused (RST)".into(),
        ErrorKind::ConnectionReset => "connection reset by peer".into(),
        _ => e.to_string(),
    }
}

fn describe_err(e: &anyhow::Error, timeout: Duration) -> String {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => describe_io(io, timeout),
        None => format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn parses_content_length_response_and_leaves_the_rest() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 3\r\n\r\nb1\nHTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy";
        let mut r = Cursor::new(raw.as_bytes());
        assert_eq!(
            read_response(&mut r).unwrap(),
            Response {
                status: 200,
                body: "b1\n".into()
            }
        );
        assert_eq!(
            read_response(&mut r).unwrap(),
            Response {
                status: 503,
                body: "busy".into()
            }
        );
    }

    #[test]
    fn body_without_length_runs_to_eof() {
        let mut r = Cursor::new(&b"HTTP/1.0 200 OK\r\n\r\nb2\n"[..]);
        assert_eq!(read_response(&mut r).unwrap().body, "b2\n");
    }

    #[test]
    fn truncated_responses_are_errors() {
        for raw in [
            &b""[..],
            b"garbage\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nb",
        ] {
            assert!(read_response(&mut Cursor::new(raw)).is_err(), "{raw:?}");
        }
    }
}
