//! SSL_GET against a real rustls server with a self-signed certificate made in the
//! test, in a fresh network namespace: verification off and on (system roots, a CA
//! file, names), digests over TLS, and TLS failures.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::web::{self, BODY};
use common::{digest_cli, in_netns, probe};
use tokio::net::TcpListener;
use xdp_lb_checks::{
    CheckSpec, Checker, DEFAULT_STATUS, Digest, HttpCheck, HttpUrl, Phase, Reason, TlsCheck, Up,
};

/// An HTTPS server on 127.0.0.1 with a certificate for `localhost` and `127.0.0.1`;
/// returns its address and the certificate's PEM.
async fn https_server() -> (SocketAddr, String) {
    let cert = web::self_signed(&["localhost", "127.0.0.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    web::spawn_https(listener, cert.acceptor);
    (server, cert.cert_pem)
}

fn https(http: HttpCheck, tls: TlsCheck) -> CheckSpec {
    CheckSpec::Https { http, tls }
}

fn verify_with(ca_file: &std::path::Path, sni: Option<&str>) -> TlsCheck {
    TlsCheck {
        verify_certificate: true,
        ca_file: Some(ca_file.to_owned()),
        sni: sni.map(str::to_owned),
    }
}

#[test]
fn self_signed_is_up_without_verification() {
    in_netns(|| async {
        let (server, _) = https_server().await;
        let spec = https(HttpCheck::new("/"), TlsCheck::default());
        assert_eq!(probe(server, spec).await, Ok(Up::default()));
    });
}

#[test]
fn self_signed_is_down_with_verification_against_system_roots() {
    in_netns(|| async {
        let (server, _) = https_server().await;
        let tls = TlsCheck {
            verify_certificate: true,
            ..TlsCheck::default()
        };
        let outcome = probe(server, https(HttpCheck::new("/"), tls)).await;
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "tls: certificate signed by an unknown issuer"
        );
    });
}

#[test]
fn verified_with_the_ca_file_by_name_and_by_address() {
    in_netns(|| async {
        let (server, pem) = https_server().await;
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), pem).unwrap();
        let by_name = https(
            HttpCheck::new("/"),
            verify_with(ca.path(), Some("localhost")),
        );
        assert_eq!(probe(server, by_name).await, Ok(Up::default()));
        // No SNI and no virtualhost: the IP address is the name checked.
        let by_address = https(HttpCheck::new("/"), verify_with(ca.path(), None));
        assert_eq!(probe(server, by_address).await, Ok(Up::default()));
        // The virtualhost is the default SNI name.
        let by_vhost = https(
            HttpCheck {
                virtualhost: Some("localhost".into()),
                ..HttpCheck::new("/")
            },
            verify_with(ca.path(), None),
        );
        assert_eq!(probe(server, by_vhost).await, Ok(Up::default()));
    });
}

#[test]
fn each_url_gets_its_own_tls_session_named_by_its_virtualhost() {
    in_netns(|| async {
        let (server, pem) = https_server().await;
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), pem).unwrap();
        let url = |path: &str, host: &str| HttpUrl {
            virtualhost: Some(host.into()),
            digest: Some(Digest::Md5(digest_cli("md5sum", BODY))),
            ..HttpUrl::new(path)
        };
        // Both urls' names are in the certificate: up.
        let both = https(
            HttpCheck::urls(vec![url("/", "localhost"), url("/", "127.0.0.1")]),
            verify_with(ca.path(), None),
        );
        assert_eq!(probe(server, both).await, Ok(Up::default()));
        // The second url's name is not: its own session fails, and it is named.
        let second = https(
            HttpCheck::urls(vec![url("/", "localhost"), url("/", "other.example.test")]),
            verify_with(ca.path(), None),
        );
        let outcome = probe(server, second).await;
        let Err(Reason::Url { url, reason }) = &outcome else {
            panic!("expected the second url to fail, got {outcome:?}");
        };
        assert_eq!(url, "/ (host other.example.test)");
        assert!(
            matches!(**reason, Reason::Tls(ref m) if m.contains("not valid for name")),
            "{reason}"
        );
    });
}

#[test]
fn a_name_the_certificate_lacks_is_down() {
    in_netns(|| async {
        let (server, pem) = https_server().await;
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), pem).unwrap();
        let spec = https(
            HttpCheck::new("/"),
            verify_with(ca.path(), Some("other.example.test")),
        );
        let message = probe(server, spec).await.unwrap_err().to_string();
        assert_eq!(
            message,
            "tls: invalid peer certificate: certificate not valid for name \"other.example.test\"; \
             certificate is only valid for DnsName(\"localhost\") or IpAddress(127.0.0.1)"
        );
    });
}

#[test]
fn digest_and_status_work_over_tls() {
    in_netns(|| async {
        let (server, _) = https_server().await;
        let good = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Md5(digest_cli("md5sum", BODY))),
            ..HttpUrl::new("/")
        });
        assert_eq!(
            probe(server, https(good, TlsCheck::default())).await,
            Ok(Up::default())
        );
        let bad = HttpCheck::url(HttpUrl {
            digest: Some(Digest::Sha256("ab".repeat(32))),
            ..HttpUrl::new("/")
        });
        let outcome = probe(server, https(bad, TlsCheck::default())).await;
        assert!(
            matches!(outcome, Err(Reason::DigestMismatch { .. })),
            "{outcome:?}"
        );
        let status = probe(
            server,
            https(HttpCheck::new("/status/500"), TlsCheck::default()),
        )
        .await;
        assert_eq!(
            status,
            Err(Reason::Status {
                got: 500,
                expected: DEFAULT_STATUS.collect()
            })
        );
    });
}

#[test]
fn tls_to_a_plain_http_server_is_a_tls_error() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        web::spawn_http(listener);
        let outcome = probe(server, https(HttpCheck::new("/"), TlsCheck::default())).await;
        // The server's "HTTP/1.1 400 Bad Request" is not a TLS record.
        assert_eq!(
            outcome,
            Err(Reason::Tls(
                "received corrupt message of type invalid content type".into()
            ))
        );
    });
}

#[test]
fn silent_server_times_out_in_the_handshake() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        web::spawn_silent(listener);
        let outcome = probe(server, https(HttpCheck::new("/"), TlsCheck::default())).await;
        assert_eq!(
            outcome,
            Err(Reason::Timeout {
                phase: Phase::TlsHandshake,
                after: Duration::from_millis(500)
            })
        );
        assert_eq!(
            outcome.unwrap_err().to_string(),
            "timeout after 500ms in the tls handshake"
        );
    });
}

#[test]
fn bad_tls_settings_are_rejected_up_front() {
    let server: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let spec = https(
        HttpCheck::new("/"),
        TlsCheck {
            sni: Some("not a name".into()),
            ..TlsCheck::default()
        },
    );
    let err = Checker::new(&spec, &common::params(server, &spec)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid check: tls server name \"not a name\" is not a valid name"
    );
    let empty_ca = tempfile::NamedTempFile::new().unwrap();
    let spec = https(HttpCheck::new("/"), verify_with(empty_ca.path(), None));
    let err = Checker::new(&spec, &common::params(server, &spec)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid check: cannot read ca file {}: no usable certificate in it",
            empty_ca.path().display()
        )
    );
}
