//! The scheduler with real checks in a fresh network namespace: a server that stops
//! listening goes down after `fall` checks, comes back after `rise`, a healthy one stays
//! quiet, and shutdown ends everything, MISC scripts included.

mod common;

use std::time::Duration;

use common::{addr, closed_port, in_netns, params};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use xdp_lb_checks::{BackendId, CheckSpec, MiscCheck, Reason, Transition, run};

/// Generous: the checks below run every 100 ms; this only bounds a hung test.
const PATIENCE: Duration = Duration::from_secs(10);

async fn next(rx: &mut mpsc::Receiver<Transition>) -> Transition {
    timeout(PATIENCE, rx.recv())
        .await
        .expect("no transition within 10 s")
        .expect("scheduler ended")
}

#[test]
fn tcp_server_goes_down_and_comes_back_with_hysteresis() {
    in_netns(|| async {
        let healthy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let flappy_port = closed_port();
        let flappy = addr("127.0.0.1", flappy_port);
        let fast = |server| {
            let mut p = params(server, &CheckSpec::Tcp);
            p.interval = Duration::from_millis(100);
            p.rise = 3;
            p.fall = 2;
            p
        };
        // The flappy server starts "up" (no alpha) but nothing listens yet.
        let checks = vec![
            (
                BackendId(1),
                CheckSpec::Tcp,
                fast(healthy.local_addr().unwrap()),
            ),
            (BackendId(2), CheckSpec::Tcp, fast(flappy)),
        ];
        let (tx, mut rx) = mpsc::channel(8);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = tokio::spawn(run(checks, 2, tx, async {
            let _ = stopped.await;
        }));

        // The first failure of a never-confirmed server is enough (keepalived's rule).
        let down = next(&mut rx).await;
        assert_eq!((down.backend, down.index), (BackendId(2), 1));
        assert!(!down.up);
        assert_eq!(down.reason, Some(Reason::Refused));
        assert_eq!(
            down.to_string(),
            format!("backend 2: tcp_check {flappy} is down: connection refused")
        );

        // It listens again: up after rise = 3 successes, i.e. not before ~200 ms.
        let listening = TcpListener::bind(flappy).await.unwrap();
        let since = Instant::now();
        let up = next(&mut rx).await;
        assert_eq!(
            (up.backend, up.up, up.reason.clone()),
            (BackendId(2), true, None)
        );
        assert!(
            since.elapsed() >= Duration::from_millis(150),
            "{:?}",
            since.elapsed()
        );

        // Stops again: down after fall = 2 failures.
        drop(listening);
        let down = next(&mut rx).await;
        assert_eq!((down.backend, down.up), (BackendId(2), false));

        // Backend 1 never changed, so it never reported.
        stop.send(()).unwrap();
        timeout(PATIENCE, scheduler)
            .await
            .expect("shutdown")
            .unwrap();
        while let Some(t) = rx.recv().await {
            assert_eq!(t.backend, BackendId(2), "unexpected {t}");
        }
    });
}

#[test]
fn shutdown_kills_running_misc_scripts() {
    in_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("sleep.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let spec = CheckSpec::Misc(MiscCheck::new(["/bin/sh", "-c", &script]));
        let p = params(addr("127.0.0.1", 1), &spec);
        let (tx, _rx) = mpsc::channel(8);
        let pid_path = pidfile.clone();
        let shutdown = async move {
            // Shut down once the script is surely running.
            while !std::fs::read_to_string(&pid_path).is_ok_and(|s| s.ends_with('\n')) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(
            PATIENCE,
            run(vec![(BackendId(7), spec, p)], 1, tx, shutdown),
        )
        .await
        .expect("shutdown");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for _ in 0..300 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let dead = state.is_none_or(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            });
            if dead {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the script's child {pid} outlived the scheduler");
    });
}
