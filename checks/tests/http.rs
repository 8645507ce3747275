//! HTTP_GET against real servers in a fresh network namespace: hyper, python's
//! http.server (a peer nobody here wrote), and servers that misbehave.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::web::{self, BODY, VHOST};
use common::{addr, closed_port, digest_cli, in_netns, params, probe, probe_with};
use hyper::Version;
use tokio::net::TcpListener;
use xdp_lb_checks::{
    CheckSpec, DEFAULT_STATUS, Digest, HttpCheck, HttpUrl, Phase, Reason, USER_AGENT_VALUE, Up,
};

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
        let check = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Md5(digest_cli("md5sum", b"whatever"))),
            ..HttpUrl::new("/")
        });
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
fn one_deadline_covers_every_url_of_the_check() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        // The first url is answered at once; the second drips a byte every 100 ms, each
        // read well within the 500 ms connect_timeout.
        web::spawn_quick_then_dripping(
            listener,
            1,
            b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n",
            Duration::from_millis(100),
        );
        let check = HttpCheck::urls(vec![
            HttpUrl {
                digest: Some(Digest::Md5(digest_cli("md5sum", web::QUICK_BODY))),
                ..HttpUrl::new("/quick")
            },
            HttpUrl {
                digest: Some(Digest::Md5(digest_cli("md5sum", b"whatever"))),
                ..HttpUrl::new("/drip")
            },
        ]);
        let spec = CheckSpec::Http(check);
        let p = params(server, &spec);
        let checker = xdp_lb_checks::Checker::new(&spec, &p).unwrap();
        // Two urls, each with all its phases: the deadline is twice a one-url check's.
        let deadline = Duration::from_millis(500) * xdp_lb_checks::DEADLINE_PHASES * 2;
        assert_eq!(checker.deadline(), deadline);
        let started = std::time::Instant::now();
        let outcome = checker.probe().await;
        let took = started.elapsed();
        assert_eq!(outcome, Err(Reason::Deadline { after: deadline }));
        assert!(
            took >= deadline && took < deadline + Duration::from_secs(1),
            "the probe took {took:?}, the deadline is {deadline:?}"
        );
    });
}

#[test]
fn every_url_is_requested_and_all_must_pass() {
    in_netns(|| async {
        let (server, seen) = http_server().await;
        let check = HttpCheck::urls(vec![
            HttpUrl {
                digest: Some(Digest::Md5(digest_cli("md5sum", BODY))),
                ..HttpUrl::new("/")
            },
            // No status given: any 2xx, as keepalived.
            HttpUrl::new("/status/204"),
            HttpUrl {
                status: vec![503],
                ..HttpUrl::new("/status/503")
            },
            HttpUrl {
                virtualhost: Some(VHOST.into()),
                digest: Some(Digest::Sha256(digest_cli("sha256sum", b"vhost\n"))),
                ..HttpUrl::new("/vhost")
            },
        ]);
        assert_eq!(
            probe(server, CheckSpec::Http(check)).await,
            Ok(Up::default())
        );
        let all = seen.all();
        let paths: Vec<&str> = all.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(paths, ["/", "/status/204", "/status/503", "/vhost"]);
        let hosts: Vec<Option<&str>> = all.iter().map(|h| h.host.as_deref()).collect();
        let own = server.to_string();
        assert_eq!(
            hosts,
            [
                Some(own.as_str()),
                Some(own.as_str()),
                Some(own.as_str()),
                Some(VHOST)
            ]
        );
        // One connection per url, each closed after its answer, as keepalived.
        assert!(
            all.iter()
                .all(|h| h.connection.as_deref() == Some("close") && h.version == Version::HTTP_10),
            "{all:?}"
        );
    });
}

#[test]
fn the_first_failing_url_is_named_and_ends_the_probe() {
    in_netns(|| async {
        let (server, seen) = http_server().await;
        let check = HttpCheck::urls(vec![
            HttpUrl::new("/"),
            HttpUrl::new("/status/503"),
            HttpUrl::new("/never"),
        ]);
        let outcome = probe(server, CheckSpec::Http(check)).await;
        assert_eq!(
            outcome,
            Err(Reason::Url {
                url: "/status/503".into(),
                reason: Box::new(Reason::Status {
                    got: 503,
                    expected: DEFAULT_STATUS.collect()
                })
            })
        );
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "url /status/503: status 503, expected 200-299"
        );
        let paths: Vec<String> = seen.all().into_iter().map(|h| h.path).collect();
        assert_eq!(paths, ["/", "/status/503"]);
    });
}

#[test]
fn each_url_has_its_own_digest_and_virtualhost() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        // `/`'s digest given to `/big`: `/` passes, `/big` fails with what it got.
        let wrong = Digest::Md5(digest_cli("md5sum", BODY));
        let check = HttpCheck::urls(vec![
            HttpUrl {
                digest: Some(wrong.clone()),
                ..HttpUrl::new("/")
            },
            HttpUrl {
                digest: Some(wrong.clone()),
                ..HttpUrl::new("/big")
            },
        ]);
        assert_eq!(
            probe(server, CheckSpec::Http(check)).await,
            Err(Reason::Url {
                url: "/big".into(),
                reason: Box::new(Reason::DigestMismatch {
                    expected: wrong,
                    got: digest_cli("md5sum", &web::big_body()),
                })
            })
        );
        // The check's virtualhost for `/vhost`, a url's own one winning over it.
        let check = HttpCheck {
            urls: vec![
                HttpUrl::new("/vhost"),
                HttpUrl {
                    virtualhost: Some("other.example.test".into()),
                    ..HttpUrl::new("/vhost")
                },
            ],
            virtualhost: Some(VHOST.into()),
        };
        let outcome = probe(server, CheckSpec::Http(check)).await;
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "url /vhost (host other.example.test): status 421, expected 200-299"
        );
    });
}

#[test]
fn any_2xx_is_up_by_default_and_a_redirect_is_not() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        assert_eq!(
            probe(server, CheckSpec::Http(get("/status/204"))).await,
            Ok(Up::default())
        );
        assert_eq!(
            probe(server, CheckSpec::Http(get("/status/301"))).await,
            Err(Reason::Status {
                got: 301,
                expected: DEFAULT_STATUS.collect()
            })
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
                expected: DEFAULT_STATUS.collect()
            })
        );
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "status 503, expected 200-299"
        );
    });
}

#[test]
fn any_listed_status_is_up() {
    in_netns(|| async {
        let (server, _) = http_server().await;
        let check = HttpCheck::url(HttpUrl {
            status: vec![200, 204, 503],
            ..HttpUrl::new("/status/503")
        });
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
        let check = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Md5(digest_cli("md5sum", BODY))),
            ..HttpUrl::new("/")
        });
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
        let check = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Sha256(
                digest_cli("sha256sum", &web::big_body()).to_uppercase(),
            )),
            ..HttpUrl::new("/big")
        });
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
        let check = HttpCheck::url(HttpUrl {
            digest: Some(expected.clone()),
            ..HttpUrl::new("/")
        });
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
                expected: DEFAULT_STATUS.collect()
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
        let check = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Md5(digest_cli("md5sum", b"whatever"))),
            ..HttpUrl::new("/")
        });
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
        let check = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Md5(digest_cli("md5sum", page))),
            ..HttpUrl::new("/index.html")
        });
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
                expected: DEFAULT_STATUS.collect()
            })
        );
    });
}

fn genhash_of(server: std::net::SocketAddr, path: &str) -> xdp_lb_checks::Genhash {
    xdp_lb_checks::Genhash {
        server,
        path: path.into(),
        virtualhost: None,
        tls: false,
        hash: xdp_lb_checks::HashKind::Md5,
        timeout: Duration::from_millis(500),
    }
}

#[test]
fn genhash_digest_is_md5sum_of_the_body_whatever_the_status() {
    in_netns(|| async {
        let (server, seen) = http_server().await;
        let fetched = xdp_lb_checks::genhash(&genhash_of(server, "/"))
            .await
            .unwrap();
        assert_eq!(fetched.digest, digest_cli("md5sum", BODY));
        assert_eq!((fetched.status, fetched.body_len), (200, BODY.len()));
        // keepalived's genhash hashes a 404's body too; the status is reported.
        let missing = xdp_lb_checks::genhash(&genhash_of(server, "/missing"))
            .await
            .unwrap();
        assert_eq!(missing.status, 404);
        assert_eq!(missing.digest, digest_cli("md5sum", b"not found\n"));
        // The virtualhost is the Host header; sha256 on request.
        let vhost = xdp_lb_checks::Genhash {
            virtualhost: Some(VHOST.into()),
            hash: xdp_lb_checks::HashKind::Sha256,
            ..genhash_of(server, "/vhost")
        };
        let fetched = xdp_lb_checks::genhash(&vhost).await.unwrap();
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.digest, digest_cli("sha256sum", b"vhost\n"));
        assert_eq!(seen.last().host.as_deref(), Some(VHOST));
        // The digest genhash prints is one the check accepts.
        let check = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Md5(
                xdp_lb_checks::genhash(&genhash_of(server, "/big"))
                    .await
                    .unwrap()
                    .digest,
            )),
            ..HttpUrl::new("/big")
        });
        assert_eq!(
            probe(server, CheckSpec::Http(check)).await,
            Ok(Up::default())
        );
    });
}

#[test]
fn genhash_fails_with_the_check_s_reasons() {
    in_netns(|| async {
        let closed = addr("127.0.0.1", closed_port());
        assert_eq!(
            xdp_lb_checks::genhash(&genhash_of(closed, "/")).await,
            Err(Reason::Refused)
        );
        let bad_path = xdp_lb_checks::genhash(&genhash_of(closed, "index.html")).await;
        assert!(matches!(bad_path, Err(Reason::Invalid(_))), "{bad_path:?}");
    });
}
