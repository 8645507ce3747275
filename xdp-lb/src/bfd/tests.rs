use std::time::Duration;

use tokio::net::UnixListener;

use super::*;

fn session(name: &str, peer: &str) -> BfdSession {
    BfdSession {
        name: name.into(),
        peer: peer.parse().unwrap(),
        local: None,
        interface: None,
        min_rx: Duration::from_millis(20),
        min_tx: Duration::from_millis(20),
        multiplier: 3,
        weight: 0,
    }
}

fn status(peer: &str, state: &str, diagnostics: u8) -> Notification {
    serde_json::from_str(&format!(
        r#"{{"op":"status","ipv6":false,"multihop":false,"peer-address":"{peer}","id":1,
            "remote-id":1,"state":"{state}","diagnostics":{diagnostics},"remote-diagnostics":0}}"#
    ))
    .unwrap()
}

#[test]
fn the_request_is_bfdds_peer_configuration() {
    let mut v6 = session("b", "2001:db8::2");
    v6.local = Some("2001:db8::1".parse().unwrap());
    v6.interface = Some("eth0".into());
    let json: serde_json::Value =
        serde_json::from_str(&request_add(&[session("a", "192.0.2.2"), v6])).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "ipv4": [{"peer-address": "192.0.2.2", "receive-interval": 20,
                      "transmit-interval": 20, "detect-multiplier": 3}],
            "ipv6": [{"peer-address": "2001:db8::2", "local-address": "2001:db8::1",
                      "local-interface": "eth0", "receive-interval": 20,
                      "transmit-interval": 20, "detect-multiplier": 3}],
        })
    );
}

#[test]
fn the_header_is_length_id_type_version() {
    let m = Message {
        id: 0x0102,
        kind: NOTIFY,
        payload: vec![1, 0, 0, 0, 0, 0, 0, 0],
    };
    assert_eq!(m.encode()[..8], [0, 0, 0, 8, 0x01, 0x02, NOTIFY, VERSION]);
}

#[tokio::test]
async fn messages_of_another_version_or_too_long_are_refused() {
    let mut wrong_version: &[u8] = &[0, 0, 0, 2, 0, 0, NOTIFY, 2, b'{', b'}'];
    let e = Message::read(&mut wrong_version).await.unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
    let mut huge: &[u8] = &[0x7f, 0, 0, 0, 0, 0, NOTIFY, VERSION];
    let e = Message::read(&mut huge).await.unwrap_err();
    assert!(e.to_string().contains("bytes"), "{e}");
    let mut cut: &[u8] = &[0, 0, 0, 9, 0, 0, NOTIFY, VERSION, b'{'];
    assert!(Message::read(&mut cut).await.is_err());
}

#[test]
fn a_session_that_was_up_and_timed_out_is_a_peer_down() {
    let mut watch = Watch::new(&[session("to_b", "192.0.2.2")]);
    // Down before it was ever up: bfdd's first report of a new session.
    assert_eq!(watch.notified(&status("192.0.2.2", "down", 0)), None);
    assert_eq!(watch.notified(&status("192.0.2.2", "init", 0)), None);
    assert_eq!(watch.notified(&status("192.0.2.2", "up", 0)), None);
    assert_eq!(watch.status()[0].state, "up");
    assert_eq!(
        watch.notified(&status("192.0.2.2", "down", 1)),
        Some(PeerDown {
            session: "to_b".into(),
            peer: "192.0.2.2".parse().unwrap()
        })
    );
    assert_eq!(watch.status()[0].peer_down_events, 1);
    assert_eq!(watch.status()[0].diagnostics, 1);
    // The same state again is no second death.
    assert_eq!(watch.notified(&status("192.0.2.2", "down", 1)), None);
}

#[test]
fn a_peer_that_says_it_goes_down_is_no_death() {
    let mut watch = Watch::new(&[session("to_b", "192.0.2.2")]);
    watch.notified(&status("192.0.2.2", "up", 0));
    // Diagnostic 3: the neighbour signalled down (its bfdd stopping, AdminDown).
    assert_eq!(watch.notified(&status("192.0.2.2", "down", 3)), None);
    assert_eq!(watch.status()[0].state, "down");
    assert_eq!(watch.status()[0].peer_down_events, 0);
}

#[test]
fn other_sessions_and_a_reconnect_are_not_deaths() {
    let mut watch = Watch::new(&[session("to_b", "192.0.2.2")]);
    watch.notified(&status("192.0.2.2", "up", 0));
    // BGP's session to someone else.
    watch.notified(&status("198.51.100.1", "up", 0));
    assert_eq!(watch.notified(&status("198.51.100.1", "down", 1)), None);
    // bfdd restarted: unknown, then its first reports.
    watch.disconnected();
    assert_eq!(watch.status()[0].state, "unknown");
    assert_eq!(watch.notified(&status("192.0.2.2", "down", 1)), None);
    assert_eq!(watch.status()[0].peer_down_events, 0);
}

/// A stand-in for bfdd on a real unix socket: answers the two requests as bfdd does
/// (checking what they carry), then sends `notifications`.
async fn fake_bfdd(listener: UnixListener, notifications: Vec<String>) -> Vec<Message> {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut requests = Vec::new();
    for _ in 0..2 {
        let m = Message::read(&mut stream).await.unwrap();
        let answer = Message {
            id: m.id,
            kind: RESPONSE,
            payload: br#"{"status":"ok"}"#.to_vec(),
        };
        requests.push(m);
        stream.write_all(&answer.encode()).await.unwrap();
    }
    for n in notifications {
        let m = Message {
            id: 0,
            kind: NOTIFY,
            payload: n.into_bytes(),
        };
        stream.write_all(&m.encode()).await.unwrap();
    }
    // Stay connected until the client goes.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    requests
}

#[tokio::test]
async fn the_client_asks_for_its_sessions_and_reports_a_death() {
    let dir = std::env::temp_dir().join(format!("xdp-lb-bfd-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bfdd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let up = r#"{"op":"status","peer-address":"192.0.2.2","state":"up","diagnostics":0}"#;
    let down = r#"{"op":"status","peer-address":"192.0.2.2","state":"down","diagnostics":1}"#;
    let bfdd = tokio::spawn(fake_bfdd(
        listener,
        vec![up.into(), "not json".into(), down.into()],
    ));
    let (tx, mut rx) = mpsc::channel(4);
    let (up_tx, mut up_rx) = mpsc::channel(4);
    let board = BfdBoard::default();
    let stop = CancellationToken::new();
    let reports = Reports {
        peer_down: tx,
        up: up_tx,
    };
    let client = tokio::spawn(run(
        vec![session("to_b", "192.0.2.2")],
        path.clone(),
        reports,
        board.clone(),
        stop.clone(),
    ));
    let down = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a peer-down report")
        .unwrap();
    assert_eq!(down.session, "to_b");
    // The session went up, then left up.
    assert_eq!(up_rx.recv().await, Some(SessionUp { index: 0, up: true }));
    assert_eq!(
        up_rx.recv().await,
        Some(SessionUp {
            index: 0,
            up: false
        })
    );
    assert_eq!(board.snapshot()[0].state, "down");
    stop.cancel();
    client.await.unwrap();
    let requests = bfdd.await.unwrap();
    assert_eq!(requests[0].kind, REQUEST_ADD);
    let add: serde_json::Value = serde_json::from_slice(&requests[0].payload).unwrap();
    assert_eq!(add["ipv4"][0]["peer-address"], "192.0.2.2");
    assert_eq!(requests[1].kind, NOTIFY);
    assert_eq!(requests[1].payload, NOTIFY_PEER_STATE.to_ne_bytes());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_bfdd_the_sessions_are_unknown_and_the_client_keeps_trying() {
    let path = std::env::temp_dir().join(format!("xdp-lb-no-bfdd-{}.sock", std::process::id()));
    let (tx, _rx) = mpsc::channel(4);
    let (up_tx, _up_rx) = mpsc::channel(4);
    let board = BfdBoard::default();
    let stop = CancellationToken::new();
    let client = tokio::spawn(run(
        vec![session("to_b", "192.0.2.2")],
        path,
        Reports {
            peer_down: tx,
            up: up_tx,
        },
        board.clone(),
        stop.clone(),
    ));
    tokio::task::yield_now().await;
    assert_eq!(board.snapshot()[0].state, "unknown");
    assert!(!client.is_finished());
    stop.cancel();
    client.await.unwrap();
}
