//! HTTP_GET against real servers in a fresh network namespace: hyper, python's
//! http.server (a peer nobody here wrote), and servers that misbehave.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::web::{self, BODY, VHOST};
use common::{addr, closed_port, digest_cli, in_netns, params, probe, probe_with};
use hyper::Version;
use tokio::net::TcpListener;
use xdp_lb_checks::{CheckSpec, Digest, HttpCheck, Phase, Reason, USER_AGENT_VALUE, Up};

async fn http_server() -> (std::net::SocketAddr, web::Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    (server, web::spawn_http(listener))
}

fn get(path: &str) -> HttpCheck {
    HttpCheck::new(path)
}

#[test]
fn a_server_dripping_its_body_fails_at_the_overall_deadline() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        // A byte every 100 ms: every read is well within the 500 ms connect_timeout.
        web::spawn_dripping(
            listener,
            b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n",
            Duration::from_millis(100),
        );
        let check = HttpCheck {
            digest: Some(Digest::Md5(digest_cli("md5sum", b"whatever"))),
            ..get("/")
        };
        let started = std::time::Instant::now();
        let outcome = probe(server, CheckSpec::Http(check)).await;
        let deadline = Duration::from_millis(500) * xdp_lb_checks::DEADLINE_PHASES;
        assert_eq!(outcome, Err(Reason::Deadline { after: deadline }));
        assert!(started.elapsed() < deadline + Duration::from_secs(1));
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "no verdict within 2s in all (a server answering too slowly)"
        );
    });
}

#[test]
fn up_on_200_and_the_request_is_keepalived_s() {
    in_netns(|| async {
        let (server, seen) = http_server().await;
        assert_eq!(
            probe(server, CheckSpec::Http(get("/"))).await,
            Ok(Up::default())
        );
        let head = seen.last();
        assert_eq!(head.version, Version::HTTP_10);
        assert_eq!(head.path, "/");
        assert_eq!(head.host, Some(server.to_string()));
        assert_eq!(head.user_agent.as_deref(), Some(USER_AGENT_VALUE));
        assert_eq!(head.connection.as_deref(), Some("close"));
    });
}

#[test]
fn wrong_status_is_down_with_got_and_expected() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        let outcome = probe(server, CheckSpec::Http(get("/status/503"))).await;
        assert_eq!(
            outcome,
            Err(Reason::Status {
                got: 503,
                expected: vec![200]
            })
        );
        assert_eq!(outcome.unwrap_err().to_string(), "status 503, expected 200");
    });
}

#[test]
fn any_listed_status_is_up() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        let check = HttpCheck {
            status: vec![200, 204, 503],
            ..get("/status/503")
        };
        assert_eq!(
            probe(server, CheckSpec::Http(check)).await,
            Ok(Up::default())
        );
    });
}

#[test]
fn md5_digest_matches_md5sum() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        let check = HttpCheck {
            digest: Some(Digest::Md5(digest_cli("md5sum", BODY))),
            ..get("/")
        };
        assert_eq!(
            probe(server, CheckSpec::Http(check)).await,
            Ok(Up::default())
        );
    });
}

#[test]
fn sha256_digest_of_a_large_body_matches_sha256sum() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        let check = HttpCheck {
            digest: Some(Digest::Sha256(
                digest_cli("sha256sum", &web::big_body()).to_uppercase(),
            )),
            ..get("/big")
        };
        assert_eq!(
            probe(server, CheckSpec::Http(check)).await,
            Ok(Up::default())
        );
    });
}

#[test]
fn digest_mismatch_names_expected_and_got() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        let expected = Digest::Md5("00000000000000000000000000000000".into());
        let check = HttpCheck {
            digest: Some(expected.clone()),
            ..get("/")
        };
        let got = digest_cli("md5sum", BODY);
        let outcome = probe(server, CheckSpec::Http(check)).await;
        assert_eq!(
            outcome,
            Err(Reason::DigestMismatch {
                expected,
                got: got.clone()
            })
        );
        assert_eq!(
            outcome.unwrap_err().to_string(),
            format!("body md5 mismatch: expected 00000000000000000000000000000000, got {got}")
        );
    });
}

#[test]
fn virtualhost_is_sent_as_host() {
    in_netns(|| async {
        let (server, seen) = http_server().await;
        let without = probe(server, CheckSpec::Http(get("/vhost"))).await;
        assert_eq!(
            without,
            Err(Reason::Status {
                got: 421,
                expected: vec![200]
            })
        );
        let check = HttpCheck {
            virtualhost: Some(VHOST.into()),
            ..get("/vhost")
        };
        assert_eq!(
            probe(server, CheckSpec::Http(check)).await,
            Ok(Up::default())
        );
        assert_eq!(seen.last().host.as_deref(), Some(VHOST));
    });
}

#[test]
fn refused_when_nothing_listens() {
    in_netns(|| async {
        let server = addr("127.0.0.1", closed_port());
        assert_eq!(
            probe(server, CheckSpec::Http(get("/"))).await,
            Err(Reason::Refused)
        );
    });
}

#[test]
fn slow_response_times_out_waiting_for_the_response() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        let outcome = probe(server, CheckSpec::Http(get("/slow"))).await;
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "timeout after 500ms waiting for the response"
        );
    });
}

#[test]
fn silent_server_times_out_waiting_for_the_response() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        web::spawn_silent(listener);
        let outcome = probe(server, CheckSpec::Http(get("/"))).await;
        assert_eq!(
            outcome,
            Err(Reason::Timeout {
                phase: Phase::Response,
                after: Duration::from_millis(500)
            })
        );
    });
}

#[test]
fn a_body_that_stops_coming_times_out_reading_the_body() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        web::spawn_stalling(
            listener,
            b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\nhalf",
        );
        let check = HttpCheck {
            digest: Some(Digest::Md5(digest_cli("md5sum", b"whatever"))),
            ..get("/")
        };
        let outcome = probe(server, CheckSpec::Http(check)).await;
        assert_eq!(
            outcome,
            Err(Reason::Timeout {
                phase: Phase::Body,
                after: Duration::from_millis(500)
            })
        );
        // Without a digest the body is not read: the status line suffices.
        assert_eq!(
            probe(server, CheckSpec::Http(get("/"))).await,
            Ok(Up::default())
        );
    });
}

#[test]
fn a_server_that_is_not_http_is_an_http_error() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        web::spawn_replying(listener, b"SSH-2.0-OpenSSH_9.6\r\n");
        let outcome = probe(server, CheckSpec::Http(get("/"))).await;
        assert_eq!(
            outcome,
            Err(Reason::Http("invalid HTTP version parsed".into()))
        );
    });
}

#[test]
fn a_connection_closed_mid_headers_is_an_http_error() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        web::spawn_replying(listener, b"HTTP/1.0 200 OK\r\nContent-Le");
        let outcome = probe(server, CheckSpec::Http(get("/"))).await;
        assert_eq!(
            outcome,
            Err(Reason::Http(
                "connection closed before message completed".into()
            ))
        );
    });
}

/// `python3 -m http.server`, killed on drop.
struct PythonServer(Child);

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn python_http_server_page_digest_matches_md5sum() {
    in_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let page = b"<html>served by python's http.server</html>\n";
        std::fs::write(dir.path().join("index.html"), page).unwrap();
        let port = closed_port();
        let _python = PythonServer(
            Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 (the lab needs it too)"),
        );
        let server = addr("127.0.0.1", port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(server).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "python3 -m http.server did not listen on {server} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let check = HttpCheck {
            digest: Some(Digest::Md5(digest_cli("md5sum", page))),
            ..get("/index.html")
        };
        let mut p = params(server, &CheckSpec::Http(check.clone()));
        p.connect_timeout = Duration::from_secs(5);
        assert_eq!(
            probe_with(p.clone(), CheckSpec::Http(check)).await,
            Ok(Up::default())
        );
        assert_eq!(
            probe_with(p, CheckSpec::Http(get("/missing.html"))).await,
            Err(Reason::Status {
                got: 404,
                expected: vec![200]
            })
        );
    });
}
