//! The status API (`[global] api`): `GET /status` (JSON), `GET /metrics`
//! (Prometheus text), `GET /connections` (the flow table) and `GET /explain` (where a
//! connection goes and why); `POST /drain` and `POST /resume` withdraw the announced
//! VIPs and announce them again (see [`crate::advertise`]). Each request asks the daemon's loop for a [`Snapshot`] over a
//! channel, since the loop owns the service table and the maps; rendering happens here.
//!
//! It must never cost the daemon its file descriptors (health checks, VRRP and notify
//! commands need them): at most [`MAX_CONNECTIONS`] are open at once (more wait in the
//! kernel's backlog, holding none of ours), a request's headers must arrive within
//! [`HEADER_TIMEOUT`], and a connection lives at most [`CONNECTION_LIFETIME`]. With
//! `api_token` set, every request must carry it (`Authorization: Bearer <token>`).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot},
};

use crate::{
    advertise::DrainStatus,
    connections::Connections,
    explain::{Explanation, Query},
    metrics,
    status::Snapshot,
};

/// What the API asks the daemon's loop for; it answers on the sender.
pub enum ApiRequest {
    Snapshot(oneshot::Sender<Snapshot>),
    /// The flow table, of one service (`vip:port/proto`) if given.
    Connections {
        service: Option<String>,
        reply: oneshot::Sender<Connections>,
    },
    /// Where a connection goes and why; an error when a map cannot be read.
    Explain {
        query: Query,
        reply: oneshot::Sender<Result<Explanation, String>>,
    },
    /// Withdraw every announced VIP and keep forwarding (a drain).
    Drain(oneshot::Sender<DrainStatus>),
    /// End a drain.
    Resume(oneshot::Sender<DrainStatus>),
}

/// Binds `addr`; a clear error (address in use, not ours) stops the start.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the status API: {e}; set `[global] api` to a free \
             address, or to \"off\""
        )
    })
}

/// API connections open at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Serves until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    requests: mpsc::Sender<ApiRequest>,
    token: Option<String>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let token: Option<Arc<str>> = token.map(Into::into);
    let mut accept_warnings = crate::log_limit::LogLimit::default();
    loop {
        // A permit first: connections beyond the cap wait in the backlog, not in our
        // descriptor table.
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                if let Some(suppressed) = accept_warnings.allow(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "status API: accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| respond(req, requests.clone(), token.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "status API connection ended with an error")
                }
                Err(_) => tracing::debug!(%peer, "status API connection closed: open too long"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    requests: mpsc::Sender<ApiRequest>,
    token: Option<Arc<str>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "send `Authorization: Bearer <api_token>`\n".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return Ok(r);
        }
    }
    let path = req.uri().path();
    let known = matches!(
        path,
        "/" | "/status" | "/metrics" | "/connections" | "/explain" | "/drain" | "/resume"
    );
    if !known {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!(
                "no {path} here; try /status (JSON), /metrics (Prometheus), /connections \
                 (JSON) or /explain (JSON)\n"
            ),
        ));
    }
    if path == "/drain" || path == "/resume" {
        if req.method() != Method::POST {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return Ok(r);
        }
        let (reply, rx) = oneshot::channel();
        let request = if path == "/drain" {
            ApiRequest::Drain(reply)
        } else {
            ApiRequest::Resume(reply)
        };
        let answer = match requests.send(request).await {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        return Ok(match answer {
            Some(status) => json(&status),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is stopping\n".into(),
            ),
        });
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    if path == "/" {
        return Ok(text(
            StatusCode::OK,
            "xdp-lb status API: /status (JSON), /metrics (Prometheus), \
             /connections[?service=VIP:PORT/PROTO] (JSON), \
             /explain?src=IP[&sport=PORT]&dst=VIP&dport=PORT&proto=tcp|udp (JSON), \
             POST /drain, POST /resume (JSON)\n"
                .into(),
        ));
    }
    if path == "/connections" {
        let service = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("service="))
                .map(|s| s.replace("%2F", "/").replace("%2f", "/"))
        });
        let (reply, rx) = oneshot::channel();
        let answer = match requests
            .send(ApiRequest::Connections { service, reply })
            .await
        {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        return Ok(match answer {
            Some(c) => json(&c),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is stopping\n".into(),
            ),
        });
    }
    if path == "/explain" {
        let query = match Query::from_query_string(req.uri().query().unwrap_or("")) {
            Ok(q) => q,
            Err(e) => {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{e}; ask /explain?src=IP[&sport=PORT]&dst=VIP&dport=PORT&proto=tcp|udp\n"
                    ),
                ));
            }
        };
        let (reply, rx) = oneshot::channel();
        let answer = match requests.send(ApiRequest::Explain { query, reply }).await {
            Ok(()) => rx.await.ok(),
            Err(_) => None,
        };
        return Ok(match answer {
            Some(Ok(e)) => json(&e),
            Some(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is stopping\n".into(),
            ),
        });
    }
    let (tx, rx) = oneshot::channel();
    let snapshot = match requests.send(ApiRequest::Snapshot(tx)).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let Some(snapshot) = snapshot else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping\n".into(),
        ));
    };
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if path == "/metrics" && openmetrics {
        (
            metrics::OPENMETRICS_CONTENT_TYPE,
            metrics::render_openmetrics(snapshot),
        )
    } else if path == "/metrics" {
        (metrics::CONTENT_TYPE, metrics::render(snapshot))
    } else {
        return Ok(json(&snapshot));
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    Ok(r)
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string_pretty(value).expect("status types serialize");
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Compares without stopping at the first difference, so the time taken does not tell
/// how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
