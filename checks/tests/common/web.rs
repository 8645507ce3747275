//! Small real HTTP(S) servers for the HTTP_GET / SSL_GET tests: hyper serving a few
//! routes over plain TCP or rustls, plus misbehaving servers hyper would never be.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// The body of `/`.
pub const BODY: &[u8] = b"<html><body>hello from xdp-lb-checks</body></html>\n";

/// The virtual host `/vhost` wants.
pub const VHOST: &str = "www.example.test";

/// The body of `/big`: 256 KiB, read in many frames.
pub fn big_body() -> Vec<u8> {
    (0..256 * 1024).map(|i| (i % 251) as u8).collect()
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub version: Version,
    pub path: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub connection: Option<String>,
}

/// The requests a server saw, in order.
#[derive(Debug, Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<RequestHead>>>);

impl Seen {
    /// Every request so far, in order.
    pub fn all(&self) -> Vec<RequestHead> {
        self.0.lock().unwrap().clone()
    }

    pub fn last(&self) -> RequestHead {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request seen")
    }
}

/// Routes: `/` → 200 [`BODY`]; `/status/N` → N; `/slow` → 200 after 10 s; `/vhost` →
/// 200 if the Host is [`VHOST`], else 421; `/big` → 200 [`big_body`]; else 404.
async fn handle(req: Request<Incoming>, seen: Seen) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = header(hyper::header::HOST);
    seen.0.lock().unwrap().push(RequestHead {
        version: req.version(),
        path: req.uri().path().to_owned(),
        host: host.clone(),
        user_agent: header(hyper::header::USER_AGENT),
        connection: header(hyper::header::CONNECTION),
    });
    let path = req.uri().path();
    let (status, body) = if path == "/" {
        (200, BODY.to_vec())
    } else if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(400);
        (code, format!("status {code}\n").into_bytes())
    } else if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(10)).await;
        (200, b"slow\n".to_vec())
    } else if path == "/vhost" {
        match host.as_deref() {
            Some(VHOST) => (200, b"vhost\n".to_vec()),
            _ => (421, b"misdirected\n".to_vec()),
        }
    } else if path == "/big" {
        (200, big_body())
    } else {
        (404, b"not found\n".to_vec())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}

async fn serve<S>(stream: S, seen: Seen)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(req, seen.clone()));
    // Errors are the client's doing (closing early); the tests judge the client.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Serves HTTP on `listener` until the runtime ends.
pub fn spawn_http(listener: TcpListener) -> Seen {
    let seen = Seen::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(stream, seen2.clone()));
        }
    });
    seen
}

/// Serves HTTPS on `listener` with `acceptor` until the runtime ends.
pub fn spawn_https(listener: TcpListener, acceptor: TlsAcceptor) -> Seen {
    let seen = Seen::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve(tls, seen).await;
                }
            });
        }
    });
    seen
}

/// Accepts connections and never says a word.
pub fn spawn_silent(listener: TcpListener) {
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(listener.accept().await.unwrap().0);
        }
    });
}

/// Answers every connection with `reply` and closes it.
pub fn spawn_replying(listener: TcpListener, reply: &'static [u8]) {
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(reply).await;
            let _ = stream.shutdown().await;
        }
    });
}

/// Answers every connection with `reply`, then holds it open without a word more.
pub fn spawn_stalling(listener: TcpListener, reply: &'static [u8]) {
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(reply).await;
            held.push(stream);
        }
    });
}

/// Answers every connection with `head`, then one byte of body every `every`: each
/// read is quick, the whole answer takes long.
pub fn spawn_dripping(listener: TcpListener, head: &'static [u8], every: std::time::Duration) {
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = stream.write_all(head).await;
                loop {
                    tokio::time::sleep(every).await;
                    if stream.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The body [`spawn_quick_then_dripping`] answers its first connections with.
pub const QUICK_BODY: &[u8] = b"ok";

/// Answers the first `quick` connections at once with 200 and [`QUICK_BODY`], every
/// later one as [`spawn_dripping`] does: the URLs of one check after the first are slow.
pub fn spawn_quick_then_dripping(
    listener: TcpListener,
    quick: usize,
    head: &'static [u8],
    every: std::time::Duration,
) {
    tokio::spawn(async move {
        let mut accepted = 0;
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            accepted += 1;
            let fast = accepted <= quick;
            tokio::spawn(async move {
                if fast {
                    let reply = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                        QUICK_BODY.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.write_all(QUICK_BODY).await;
                    let _ = stream.shutdown().await;
                    return;
                }
                let _ = stream.write_all(head).await;
                loop {
                    tokio::time::sleep(every).await;
                    if stream.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A self-signed certificate for `names` (DNS names or IP addresses) and a TLS acceptor
/// serving it.
pub struct SelfSigned {
    pub cert_pem: String,
    pub acceptor: TlsAcceptor,
}

pub fn self_signed(names: &[&str]) -> SelfSigned {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
    SelfSigned {
        cert_pem: certified.cert.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}
