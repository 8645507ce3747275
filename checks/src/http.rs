//! `HTTP_GET` and `SSL_GET`: one GET per URL of the check, over TCP or TLS (rustls, ring
//! provider), each on its own connection; and [`genhash`], keepalived's `genhash` tool.
//!
//! The request is what keepalived sends: `GET <path> HTTP/1.0` with `Host` (the
//! virtualhost, or the address with the port unless it is the scheme's default),
//! `User-Agent: KeepAliveClient` (backends often filter their logs on it) and
//! `Connection: close`. HTTP/1.0 keeps servers from chunking the body, so the digest is
//! of the body bytes exactly as keepalived's `genhash` computes it (hyper would undo
//! chunking anyway). The body is only read when a digest is expected; it is hashed as it
//! streams in, up to [`MAX_BODY`].
//!
//! Every network phase (connect, TLS handshake, response head, each body read) gets the
//! connect timeout, as keepalived's per-operation timers do, and a timeout names its phase;
//! the checker bounds the whole probe, all URLs together (see [`crate::Checker::deadline`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, Uri, Version};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::checker::DEADLINE_PHASES;
use crate::reason::{Outcome, Phase, Reason, Up, io_message, lower_first};
use crate::spec::{CheckParams, CheckSpec, Digest, HashKind, HttpCheck, HttpUrl, TlsCheck};
use crate::tcp;

/// The `User-Agent` of every request: keepalived's, so existing log filters keep working.
pub const USER_AGENT_VALUE: &str = "KeepAliveClient";

/// Largest body hashed for a digest; a longer one fails the check.
pub const MAX_BODY: usize = 32 << 20;

/// A prepared HTTP(S) check: the URLs' request parts, expected statuses and digests,
/// and the TLS client, built once.
///
/// Every URL gets its own connection (and TLS session), one after the other, as
/// keepalived does: the request stays keepalived's `HTTP/1.0` + `Connection: close`
/// (servers see what they saw before; a body is delimited by the close even without a
/// length), one URL's failure cannot leave the next one a half-read stream, and a URL
/// with its own virtualhost gets its own SNI. The extra handshake per URL costs nothing
/// at health-check rates. The first URL that fails ends the probe.
pub(crate) struct HttpProbe {
    target: SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
    urls: Vec<UrlProbe>,
    tls: Option<TlsConnector>,
}

/// One URL of a probe.
struct UrlProbe {
    uri: Uri,
    host: String,
    status: Vec<u16>,
    digest: Option<Digest>,
    /// The SNI name and name verified over TLS.
    server_name: ServerName<'static>,
    /// How a failure names the URL: its path, and its own virtualhost if it has one.
    label: String,
}

/// What one GET brought back.
struct Response {
    status: u16,
    /// The body's digest, when one was asked for.
    digest: Option<String>,
    body_len: usize,
}

impl HttpProbe {
    pub(crate) fn new(
        http: &HttpCheck,
        tls: Option<&TlsCheck>,
        params: &CheckParams,
    ) -> Result<HttpProbe, Reason> {
        let target = params.target();
        let default_port = if tls.is_some() { 443 } else { 80 };
        let urls = http
            .urls
            .iter()
            .map(|url| {
                let uri: Uri = url
                    .path
                    .parse()
                    .map_err(|e| Reason::Invalid(format!("http path {:?}: {e}", url.path)))?;
                // keepalived's order: the url's virtualhost, then the checker's.
                let vhost = url.virtualhost.as_ref().or(http.virtualhost.as_ref());
                let host = match vhost {
                    Some(name) => name.clone(),
                    None if target.port() == default_port => bracketed(target.ip()),
                    None => format!("{}:{}", bracketed(target.ip()), target.port()),
                };
                let name = tls.and_then(|t| t.sni.as_ref()).or(vhost);
                let server_name = match name {
                    Some(name) => ServerName::try_from(name.clone()).map_err(|_| {
                        Reason::Invalid(format!("tls server name {name:?} is not a valid name"))
                    })?,
                    None => ServerName::IpAddress(target.ip().into()),
                };
                let label = match &url.virtualhost {
                    Some(own) => format!("{} (host {own})", url.path),
                    None => url.path.clone(),
                };
                Ok(UrlProbe {
                    uri,
                    host,
                    status: url.status.clone(),
                    digest: url.digest.clone(),
                    server_name,
                    label,
                })
            })
            .collect::<Result<Vec<_>, Reason>>()?;
        let tls = match tls {
            None => None,
            Some(tls) => Some(TlsConnector::from(client_config(tls)?)),
        };
        Ok(HttpProbe {
            target,
            source: params.source,
            timeout: params.connect_timeout,
            urls,
            tls,
        })
    }

    /// How many URLs one probe requests.
    pub(crate) fn url_count(&self) -> usize {
        self.urls.len()
    }

    /// Every URL in turn; up only if all pass. With several URLs a failure names the
    /// URL (with one, the check's own name already does).
    pub(crate) async fn probe(&self) -> Outcome {
        let many = self.urls.len() > 1;
        for url in &self.urls {
            if let Err(reason) = self.check_url(url).await {
                return Err(if many {
                    Reason::Url {
                        url: url.label.clone(),
                        reason: Box::new(reason),
                    }
                } else {
                    reason
                });
            }
        }
        Ok(Up::default())
    }

    async fn check_url(&self, url: &UrlProbe) -> Outcome {
        let hash = url.digest.as_ref().map(Digest::kind);
        let response = self.fetch(url, hash, true).await?;
        if let (Some(expected), Some(got)) = (&url.digest, response.digest)
            && !got.eq_ignore_ascii_case(expected.hex())
        {
            return Err(Reason::DigestMismatch {
                expected: expected.clone(),
                got,
            });
        }
        Ok(Up::default())
    }

    /// One GET of `url` on a new connection; the body hashed with `hash` if given.
    /// With `judge`, a status `url` does not accept fails before the body is read.
    async fn fetch(
        &self,
        url: &UrlProbe,
        hash: Option<HashKind>,
        judge: bool,
    ) -> Result<Response, Reason> {
        let stream = tcp::connect(self.target, self.source, self.timeout).await?;
        match &self.tls {
            None => self.exchange(stream, url, hash, judge).await,
            Some(connector) => {
                let handshake = connector.connect(url.server_name.clone(), stream);
                let stream = match tokio::time::timeout(self.timeout, handshake).await {
                    Err(_elapsed) => {
                        return Err(Reason::Timeout {
                            phase: Phase::TlsHandshake,
                            after: self.timeout,
                        });
                    }
                    Ok(Err(e)) => return Err(tls_error(&e)),
                    Ok(Ok(stream)) => stream,
                };
                self.exchange(stream, url, hash, judge).await
            }
        }
    }

    /// Sends the GET on an open stream and reads the response (see [`HttpProbe::fetch`]).
    async fn exchange<S>(
        &self,
        stream: S,
        url: &UrlProbe,
        hash: Option<HashKind>,
        judge: bool,
    ) -> Result<Response, Reason>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        let request = Request::get(url.uri.clone())
            .version(Version::HTTP_10)
            .header(HOST, &url.host)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Reason::Invalid(format!("http request: {e}")))?;
        let timeout = self.timeout;
        let exchange = async move {
            let response = match tokio::time::timeout(timeout, sender.send_request(request)).await {
                Err(_elapsed) => {
                    return Err(Reason::Timeout {
                        phase: Phase::Response,
                        after: timeout,
                    });
                }
                Ok(result) => result.map_err(http_error)?,
            };
            let status = response.status().as_u16();
            if judge && !url.status.contains(&status) {
                return Err(Reason::Status {
                    got: status,
                    expected: url.status.clone(),
                });
            }
            let (digest, body_len) = match hash {
                Some(kind) => {
                    let (hex, len) = hash_body(response.into_body(), kind, timeout).await?;
                    (Some(hex), len)
                }
                None => (None, 0),
            };
            Ok(Response {
                status,
                digest,
                body_len,
            })
        };
        // The connection future drives the socket; the exchange only sees channels. Poll
        // both, but never wait for the connection once the exchange has its answer.
        let mut exchange = pin!(exchange);
        let mut conn = pin!(conn);
        tokio::select! {
            biased;
            outcome = &mut exchange => outcome,
            ended = &mut conn => match ended {
                // Closed after a complete response: the exchange finishes from what was read.
                Ok(()) => exchange.await,
                // The connection's error is the precise one; the exchange's would only
                // say the request was cancelled.
                Err(e) => match exchange.await {
                    Err(Reason::Http(_)) => Err(http_error(e)),
                    other => other,
                },
            },
        }
    }
}

/// What `xdp-lb genhash` asks for: keepalived's `genhash -s SERVER -p PORT -u URL
/// [-S] [-V VIRTUALHOST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genhash {
    pub server: SocketAddr,
    pub path: String,
    /// The `Host` header (and SNI name over TLS); default the address and port.
    pub virtualhost: Option<String>,
    /// Over TLS (`-S`), accepting any certificate as keepalived's `genhash` does.
    pub tls: bool,
    pub hash: HashKind,
    /// Each network phase's limit; the whole fetch gets [`crate::DEADLINE_PHASES`] of them.
    pub timeout: Duration,
}

/// What [`genhash`] brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The response's status; `genhash` hashes the body whatever it is.
    pub status: u16,
    /// The body's digest in lowercase hex: what a check's `digest` must be.
    pub digest: String,
    pub body_len: usize,
}

/// Fetches one URL exactly as an HTTP(S) check with that URL would, and hashes its
/// body whatever the status: the digest to put in the check.
pub async fn genhash(req: &Genhash) -> Result<Fetched, Reason> {
    let url = HttpUrl {
        virtualhost: req.virtualhost.clone(),
        ..HttpUrl::new(req.path.clone())
    };
    let http = HttpCheck::url(url);
    let tls = req.tls.then(TlsCheck::default);
    let spec = match &tls {
        None => CheckSpec::Http(http.clone()),
        Some(tls) => CheckSpec::Https {
            http: http.clone(),
            tls: tls.clone(),
        },
    };
    let mut params = CheckParams::new(req.server, &spec);
    params.connect_timeout = req.timeout;
    spec.validate(&params)?;
    let probe = HttpProbe::new(&http, tls.as_ref(), &params)?;
    let deadline = req.timeout * DEADLINE_PHASES;
    let fetch = probe.fetch(&probe.urls[0], Some(req.hash), false);
    let response = tokio::time::timeout(deadline, fetch)
        .await
        .map_err(|_| Reason::Deadline { after: deadline })??;
    Ok(Fetched {
        status: response.status,
        digest: response.digest.unwrap_or_default(),
        body_len: response.body_len,
    })
}

/// Streams the body into a `kind` hash; each read gets `timeout`. The digest in
/// lowercase hex and the body's length.
async fn hash_body(
    mut body: hyper::body::Incoming,
    kind: HashKind,
    timeout: Duration,
) -> Result<(String, usize), Reason> {
    enum Hasher {
        Md5(md5::Context),
        Sha256(ring::digest::Context),
    }
    let mut hasher = match kind {
        HashKind::Md5 => Hasher::Md5(md5::Context::new()),
        HashKind::Sha256 => Hasher::Sha256(ring::digest::Context::new(&ring::digest::SHA256)),
    };
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_elapsed) => {
                return Err(Reason::Timeout {
                    phase: Phase::Body,
                    after: timeout,
                });
            }
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(http_error)?,
        };
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > MAX_BODY {
                return Err(Reason::BodyTooLarge { limit: MAX_BODY });
            }
            match &mut hasher {
                Hasher::Md5(ctx) => ctx.consume(&data),
                Hasher::Sha256(ctx) => ctx.update(&data),
            }
        }
    }
    let hex = match hasher {
        Hasher::Md5(ctx) => crate::spec::to_hex(&ctx.finalize().0),
        Hasher::Sha256(ctx) => crate::spec::to_hex(ctx.finish().as_ref()),
    };
    Ok((hex, total))
}

fn bracketed(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// A hyper error with its causes: "connection closed before message completed",
/// "error reading a body from connection: connection reset by peer".
fn http_error(err: hyper::Error) -> Reason {
    let mut message = lower_first(&err.to_string());
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io_message(io),
            None => lower_first(&cause.to_string()),
        };
        message.push_str(": ");
        message.push_str(&text);
        source = cause.source();
    }
    Reason::Http(message)
}

/// A failed handshake: rustls' verdict when there is one, else the OS error.
fn tls_error(err: &std::io::Error) -> Reason {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Reason::Tls(tls_message(tls)),
        None => Reason::io(Phase::TlsHandshake, err),
    }
}

/// rustls' message in lowercase words: its Debug-named variants ("UnknownIssuer") are
/// spelled out ("unknown issuer").
fn tls_message(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate signed by an unknown issuer".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired) => {
            "certificate expired".into()
        }
        other => other
            .to_string()
            .split(' ')
            .map(decamel)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `HandshakeFailure` → `handshake failure`; anything else unchanged.
fn decamel(word: &str) -> String {
    let camel = word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphanumeric())
        && word.chars().any(|c| c.is_ascii_lowercase());
    if !camel {
        return word.to_owned();
    }
    let mut out = String::new();
    for (i, c) in word.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// The client config of one HTTPS check.
fn client_config(tls: &TlsCheck) -> Result<Arc<ClientConfig>, Reason> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Reason::Invalid(format!("tls: {e}")))?;
    let config = if tls.verify_certificate {
        let roots = match &tls.ca_file {
            Some(path) => Arc::new(load_ca_file(path)?),
            None => native_roots(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, Reason> {
    let cannot =
        |what: String| Reason::Invalid(format!("cannot read ca file {}: {what}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| cannot(pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cannot(pem_error(&e)))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(cannot("no usable certificate in it".into()));
    }
    Ok(roots)
}

fn pem_error(err: &rustls_pki_types::pem::Error) -> String {
    match err {
        rustls_pki_types::pem::Error::Io(io) => io_message(io),
        other => lower_first(&other.to_string()),
    }
}

/// The system's trust store, loaded once per process (reading it is not cheap and it
/// does not change under a running daemon). Unreadable entries are skipped.
fn native_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// `verify_certificate = false`: any certificate is accepted, as keepalived's `SSL_GET`
/// does, but the handshake signatures are still checked so the TLS session is real.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<&Uri> = self.urls.iter().map(|u| &u.uri).collect();
        f.debug_struct("HttpProbe")
            .field("target", &self.target)
            .field("urls", &paths)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::CheckSpec;

    fn params(server: &str) -> CheckParams {
        CheckParams::new(server.parse().unwrap(), &CheckSpec::Tcp)
    }

    #[test]
    fn host_header_omits_the_default_port() {
        let http = HttpCheck::default();
        let host = |p: HttpProbe| p.urls[0].host.clone();
        let p = HttpProbe::new(&http, None, &params("192.0.2.1:80")).unwrap();
        assert_eq!(host(p), "192.0.2.1");
        let p = HttpProbe::new(&http, None, &params("192.0.2.1:8080")).unwrap();
        assert_eq!(host(p), "192.0.2.1:8080");
        let p = HttpProbe::new(&http, None, &params("[2001:db8::1]:8080")).unwrap();
        assert_eq!(host(p), "[2001:db8::1]:8080");
        let tls = TlsCheck::default();
        let p = HttpProbe::new(&http, Some(&tls), &params("192.0.2.1:443")).unwrap();
        assert_eq!(host(p), "192.0.2.1");
        let vhost = HttpCheck {
            virtualhost: Some("www.example.test".into()),
            ..HttpCheck::default()
        };
        let p = HttpProbe::new(&vhost, Some(&tls), &params("192.0.2.1:443")).unwrap();
        assert_eq!(p.urls[0].host, "www.example.test");
        assert_eq!(
            p.urls[0].server_name,
            ServerName::try_from("www.example.test").unwrap()
        );
    }

    #[test]
    fn a_url_s_own_virtualhost_wins_for_host_and_sni_but_not_over_sni() {
        let http = HttpCheck {
            urls: vec![
                HttpUrl::new("/a"),
                HttpUrl {
                    virtualhost: Some("b.example.test".into()),
                    ..HttpUrl::new("/b")
                },
            ],
            virtualhost: Some("www.example.test".into()),
        };
        let tls = TlsCheck::default();
        let p = HttpProbe::new(&http, Some(&tls), &params("192.0.2.1:443")).unwrap();
        let hosts: Vec<&str> = p.urls.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, ["www.example.test", "b.example.test"]);
        assert_eq!(
            p.urls[1].server_name,
            ServerName::try_from("b.example.test").unwrap()
        );
        assert_eq!(p.urls[1].label, "/b (host b.example.test)");
        assert_eq!(p.urls[0].label, "/a");
        // An explicit `sni` is every URL's TLS name.
        let sni = TlsCheck {
            sni: Some("tls.example.test".into()),
            ..TlsCheck::default()
        };
        let p = HttpProbe::new(&http, Some(&sni), &params("192.0.2.1:443")).unwrap();
        assert!(
            p.urls
                .iter()
                .all(|u| u.server_name == ServerName::try_from("tls.example.test").unwrap())
        );
        assert_eq!(p.url_count(), 2);
    }

    #[test]
    fn tls_messages_are_words() {
        assert_eq!(decamel("HandshakeFailure"), "handshake failure");
        assert_eq!(decamel("TLS"), "TLS");
        assert_eq!(decamel("\"localhost\""), "\"localhost\"");
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(
            tls_message(&alert),
            "received fatal alert: handshake failure"
        );
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(
            tls_message(&unknown),
            "certificate signed by an unknown issuer"
        );
    }

    #[test]
    fn a_missing_ca_file_is_an_invalid_check() {
        let tls = TlsCheck {
            verify_certificate: true,
            ca_file: Some("/nonexistent/ca.pem".into()),
            sni: None,
        };
        let err = HttpProbe::new(&HttpCheck::default(), Some(&tls), &params("192.0.2.1:443"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid check: cannot read ca file /nonexistent/ca.pem: no such file or directory"
        );
    }
}
