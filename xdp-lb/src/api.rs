//! The status API (`[global] api`): `GET /status` (JSON) and `GET /metrics`
//! (Prometheus text). Each request asks the daemon's loop for a [`Snapshot`] over a
//! channel, since the loop owns the service table and the maps; rendering happens here.

use std::{convert::Infallible, net::SocketAddr};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::{metrics, status::Snapshot};

/// A request for a snapshot: the daemon's loop answers on the sender.
pub type SnapshotRequest = oneshot::Sender<Snapshot>;

/// Binds `addr`; a clear error (address in use, not ours) stops the start.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for the status API ([global] api): {e}")
    })
}

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, requests: mpsc::Sender<SnapshotRequest>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "status API: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, requests.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "status API connection ended with an error");
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    requests: mpsc::Sender<SnapshotRequest>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let known = matches!(path, "/" | "/status" | "/metrics");
    if !known {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!("no {path} here; try /status (JSON) or /metrics (Prometheus)\n"),
        ));
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
            "xdp-lb status API: /status (JSON), /metrics (Prometheus)\n".into(),
        ));
    }
    let (tx, rx) = oneshot::channel();
    let snapshot = match requests.send(tx).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let Some(snapshot) = snapshot else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping\n".into(),
        ));
    };
    let (content_type, body) = if path == "/metrics" {
        (metrics::CONTENT_TYPE, metrics::render(snapshot))
    } else {
        let mut json = serde_json::to_string_pretty(&snapshot).expect("a snapshot serializes");
        json.push('\n');
        ("application/json", json)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    Ok(r)
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
