//! Runs every check on its own schedule and reports state changes.
//!
//! One tokio task per check (not a thread: thousands of real servers cost thousands of
//! small futures), a semaphore bounding how many probes run at once, and per check:
//!
//! 1. a random warmup delay up to `warmup`, so checks spread over the interval;
//! 2. an attempt: a probe, and while the server is up, up to `retry` more probes
//!    `delay_before_retry` apart until one succeeds (keepalived's retries; a down server
//!    gets none, and neither does the very first check, as in keepalived);
//! 3. the attempt's outcome fed to [`Health`]; a change is sent as a [`Transition`];
//! 4. `interval` of sleep, measured from the end of the attempt, then 2 again.
//!
//! Nothing is sent for the initial state: a server starts up, or down with `alpha`, and
//! the receiver knows that from the parameters it passed. Each failed probe is logged at
//! debug level; transitions are for the caller to log (their `Display` is the line).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::checker::Checker;
use crate::health::Health;
use crate::reason::{Outcome, Reason};
use crate::spec::{CheckParams, CheckSpec};

/// The data plane's identifier of a real server (its backend map index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {}", self.0)
    }
}

/// A check's verdict on a real server changed (after rise/fall), or its dynamic weight did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub backend: BackendId,
    /// The check's position in the list given to [`run`]: tells apart several checks
    /// of one backend (keepalived counts a server up only while all its checks are).
    pub index: usize,
    /// The new state.
    pub up: bool,
    /// While up: the weight the check reported (`None` = the configured weight).
    pub weight: Option<u32>,
    /// Why it went down: the last failure. `None` when up.
    pub reason: Option<Reason>,
    /// The check, as [`CheckSpec::describe`] names it.
    pub check: String,
}

impl fmt::Display for Transition {
    /// `backend 3: http_get 192.0.2.21:80/ is down: status 503, expected 200`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} is ", self.backend, self.check)?;
        match (self.up, self.weight, &self.reason) {
            (true, Some(weight), _) => write!(f, "up with weight {weight}"),
            (true, None, _) => write!(f, "up"),
            (false, _, Some(reason)) => write!(f, "down: {reason}"),
            (false, _, None) => write!(f, "down"),
        }
    }
}

/// Runs `checks` until `shutdown` resolves (or the receiver of `tx` is dropped), with at
/// most `concurrency` probes in flight (at least 1). Returns once every task has ended;
/// MISC commands still running are killed with their process group.
///
/// A check that cannot be prepared ([`Checker::new`] fails) still runs: every attempt
/// fails with that reason, so the server goes down and the log says why.
///
/// # Panics
///
/// Re-raises the panic of a check task (a bug), rather than leaving a server unchecked.
pub async fn run(
    checks: Vec<(BackendId, CheckSpec, CheckParams)>,
    concurrency: usize,
    tx: mpsc::Sender<Transition>,
    shutdown: impl Future<Output = ()>,
) {
    let prepared = checks
        .into_iter()
        .map(|(backend, spec, params)| {
            let name = spec.describe(&params);
            let checker = Checker::new(&spec, &params);
            (backend, name, params, checker)
        })
        .collect();
    run_probes(prepared, concurrency, tx, shutdown).await;
}

/// Something the scheduler can probe; the real one is [`Checker`], tests script outcomes.
pub(crate) trait Probe: Send + Sync + 'static {
    fn probe(&self) -> impl Future<Output = Outcome> + Send;
}

impl Probe for Checker {
    fn probe(&self) -> impl Future<Output = Outcome> + Send {
        Checker::probe(self)
    }
}

/// A check that could not be prepared fails every time with why.
impl Probe for Result<Checker, Reason> {
    async fn probe(&self) -> Outcome {
        match self {
            Ok(checker) => checker.probe().await,
            Err(reason) => Err(reason.clone()),
        }
    }
}

pub(crate) async fn run_probes<P: Probe>(
    checks: Vec<(BackendId, String, CheckParams, P)>,
    concurrency: usize,
    tx: mpsc::Sender<Transition>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, (backend, check, params, probe)) in checks.into_iter().enumerate() {
        tasks.spawn(supervise(
            (backend, index),
            check,
            params,
            probe,
            permits.clone(),
            tx.clone(),
        ));
    }
    drop(tx);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            joined = tasks.join_next() => match joined {
                // Every task ended: the receiver is gone.
                None => return,
                Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Some(_) => {}
            },
        }
    }
    // Aborting drops each task's future where it waits: sockets close, and a MISC
    // probe's guard kills its process group.
    tasks.shutdown().await;
}

/// The life of one check.
async fn supervise<P: Probe>(
    (backend, index): (BackendId, usize),
    check: String,
    params: CheckParams,
    probe: P,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Transition>,
) {
    let mut health = Health::new(params.rise, params.fall, params.alpha);
    tokio::time::sleep(jitter(params.warmup)).await;
    loop {
        let retries = if health.is_up() && health.is_settled() {
            params.retry
        } else {
            0
        };
        let outcome = attempt(
            &probe,
            &permits,
            retries,
            params.delay_before_retry,
            |reason| tracing::debug!(%backend, %check, %reason, "check failed"),
        )
        .await;
        if let Some(change) = health.observe(&outcome) {
            let transition = Transition {
                backend,
                index,
                up: change.up,
                weight: change.weight,
                reason: change.reason,
                check: check.clone(),
            };
            if tx.send(transition).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(params.interval).await;
    }
}

/// One probe plus up to `retries` more after failures, `delay` apart. A permit is held
/// only while a probe runs, not during the delays.
async fn attempt<P: Probe>(
    probe: &P,
    permits: &Semaphore,
    retries: u32,
    delay: Duration,
    on_failure: impl Fn(&Reason),
) -> Outcome {
    let mut left = retries;
    loop {
        let outcome = {
            let _permit = permits
                .acquire()
                .await
                .expect("the semaphore is never closed");
            probe.probe().await
        };
        match outcome {
            Err(reason) => {
                on_failure(&reason);
                if left == 0 {
                    return Err(reason);
                }
                left -= 1;
                tokio::time::sleep(delay).await;
            }
            up => return up,
        }
    }
}

/// A random delay in `0..=max`.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(crate::random_u64() % nanos.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Up;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::Instant;

    /// A probe that plays a script of outcomes (the last one repeats), each taking
    /// `takes`, and records when it was called and how many ran at once.
    #[derive(Clone)]
    struct Scripted {
        script: Arc<Mutex<VecDeque<Outcome>>>,
        calls: Arc<Mutex<Vec<Instant>>>,
        takes: Duration,
        running: Arc<AtomicUsize>,
        max_running: Arc<AtomicUsize>,
    }

    impl Scripted {
        fn new(script: Vec<Outcome>) -> Scripted {
            Scripted {
                script: Arc::new(Mutex::new(script.into())),
                calls: Arc::default(),
                takes: Duration::ZERO,
                running: Arc::default(),
                max_running: Arc::default(),
            }
        }

        /// Seconds since `start` of each call.
        fn call_times(&self, start: Instant) -> Vec<f64> {
            let calls = self.calls.lock().unwrap();
            calls.iter().map(|t| (*t - start).as_secs_f64()).collect()
        }
    }

    impl Probe for Scripted {
        async fn probe(&self) -> Outcome {
            self.calls.lock().unwrap().push(Instant::now());
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.takes).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            let mut script = self.script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                script.front().cloned().unwrap_or(OK)
            }
        }
    }

    const OK: Outcome = Ok(Up { weight: None });

    fn down() -> Outcome {
        Err(Reason::Refused)
    }

    fn params(interval: u64, retry: u32, rise: u32, fall: u32) -> CheckParams {
        let mut p = CheckParams::new("192.0.2.1:80".parse().unwrap(), &CheckSpec::Tcp);
        p.interval = Duration::from_secs(interval);
        p.warmup = Duration::ZERO;
        p.retry = retry;
        p.delay_before_retry = Duration::from_secs(1);
        p.rise = rise;
        p.fall = fall;
        p
    }

    /// Runs one scripted check until `until` (paused time) and returns the transitions
    /// with the second they arrived at.
    async fn run_one(probe: Scripted, params: CheckParams, until: u64) -> Vec<(f64, Transition)> {
        let (tx, mut rx) = mpsc::channel(16);
        let start = Instant::now();
        let checks = vec![(BackendId(1), "scripted".to_owned(), params, probe)];
        let runner = tokio::spawn(run_probes(
            checks,
            4,
            tx,
            tokio::time::sleep(Duration::from_secs(until)),
        ));
        let mut seen = Vec::new();
        while let Some(t) = rx.recv().await {
            seen.push(((Instant::now() - start).as_secs_f64(), t));
        }
        runner.await.unwrap();
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn goes_down_after_fall_failed_checks_and_up_after_rise() {
        let probe = Scripted::new(vec![OK, down(), down(), down(), OK, OK, OK]);
        let seen = run_one(probe.clone(), params(10, 0, 2, 3), 100).await;
        let summary: Vec<(f64, bool)> = seen.iter().map(|(at, t)| (*at, t.up)).collect();
        // Checks at 0, 10, 20, 30, ...: failures at 10, 20, 30 → down at 30; successes
        // at 40, 50 → up at 50.
        assert_eq!(summary, [(30.0, false), (50.0, true)]);
        let down = &seen[0].1;
        assert_eq!(down.reason, Some(Reason::Refused));
        assert_eq!((down.backend, down.index), (BackendId(1), 0));
        assert_eq!(down.check, "scripted");
        assert_eq!(
            down.to_string(),
            "backend 1: scripted is down: connection refused"
        );
        assert_eq!(seen[1].1.to_string(), "backend 1: scripted is up");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_hide_a_single_failure_while_up() {
        // Up (settled by the first check), then one failure healed by the retry.
        let probe = Scripted::new(vec![OK, down(), OK]);
        let seen = run_one(probe.clone(), params(10, 2, 1, 1), 35).await;
        assert!(seen.is_empty(), "{seen:?}");
        let start = Instant::now() - Duration::from_secs(35);
        // 0: ok; 10: fail; 11: retry ok; then 21, 31.
        assert_eq!(probe.call_times(start), [0.0, 10.0, 11.0, 21.0, 31.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_retries_count_as_one_failed_check() {
        let probe = Scripted::new(vec![OK, down()]);
        let seen = run_one(probe.clone(), params(10, 2, 1, 1), 30).await;
        let start = Instant::now() - Duration::from_secs(30);
        // 10, 11, 12 fail → down at 12; a down server gets no retries: 22 only.
        assert_eq!(probe.call_times(start), [0.0, 10.0, 11.0, 12.0, 22.0]);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].0, seen[0].1.up), (12.0, false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_failure_needs_no_retries() {
        let probe = Scripted::new(vec![down()]);
        let seen = run_one(probe.clone(), params(10, 3, 1, 1), 5).await;
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].0, seen[0].1.up), (0.0, false));
    }

    #[tokio::test(start_paused = true)]
    async fn alpha_starts_down_and_reports_the_first_success() {
        let probe = Scripted::new(vec![OK]);
        let mut p = params(10, 1, 3, 3);
        p.alpha = true;
        let seen = run_one(probe, p, 25).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!((seen[0].0, seen[0].1.up), (0.0, true));
    }

    #[tokio::test(start_paused = true)]
    async fn dynamic_weight_changes_are_reported() {
        let probe = Scripted::new(vec![
            Ok(Up { weight: Some(5) }),
            Ok(Up { weight: Some(5) }),
            Ok(Up { weight: Some(9) }),
        ]);
        let seen = run_one(probe, params(10, 0, 1, 1), 25).await;
        let weights: Vec<(f64, bool, Option<u32>)> =
            seen.iter().map(|(at, t)| (*at, t.up, t.weight)).collect();
        assert_eq!(weights, [(0.0, true, Some(5)), (20.0, true, Some(9))]);
        assert_eq!(
            seen[1].1.to_string(),
            "backend 1: scripted is up with weight 9"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_runs_from_the_end_of_a_slow_check() {
        let mut probe = Scripted::new(vec![OK]);
        probe.takes = Duration::from_secs(3);
        run_one(probe.clone(), params(10, 0, 1, 1), 30).await;
        let start = Instant::now() - Duration::from_secs(30);
        assert_eq!(probe.call_times(start), [0.0, 13.0, 26.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_semaphore_bounds_concurrent_probes() {
        let mut probe = Scripted::new(vec![OK]);
        probe.takes = Duration::from_secs(1);
        let checks = (0..20)
            .map(|i| {
                (
                    BackendId(i),
                    format!("c{i}"),
                    params(5, 0, 1, 1),
                    probe.clone(),
                )
            })
            .collect();
        let (tx, _rx) = mpsc::channel(16);
        let start = Instant::now();
        run_probes(checks, 3, tx, tokio::time::sleep(Duration::from_secs(30))).await;
        assert_eq!(probe.max_running.load(Ordering::SeqCst), 3);
        // 20 probes of 1 s, 3 at a time: the first round alone takes 7 s.
        let times = probe.call_times(start);
        assert!(times.len() >= 60, "{} probes", times.len());
        assert!(times.iter().take(20).any(|t| *t >= 6.0), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn warmup_spreads_first_checks_within_the_warmup() {
        let probe = Scripted::new(vec![OK]);
        let checks = (0..50)
            .map(|i| {
                let mut p = params(60, 0, 1, 1);
                p.warmup = Duration::from_secs(10);
                (BackendId(i), format!("c{i}"), p, probe.clone())
            })
            .collect();
        let (tx, _rx) = mpsc::channel(16);
        let start = Instant::now();
        run_probes(checks, 100, tx, tokio::time::sleep(Duration::from_secs(11))).await;
        let times = probe.call_times(start);
        assert_eq!(times.len(), 50);
        assert!(times.iter().all(|t| *t <= 10.0), "{times:?}");
        let distinct: std::collections::BTreeSet<u64> =
            times.iter().map(|t| (t * 1000.0) as u64).collect();
        assert!(distinct.len() > 10, "first checks not spread: {times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_run_in_the_middle_of_probes() {
        let mut probe = Scripted::new(vec![OK]);
        probe.takes = Duration::from_secs(3600);
        let (tx, _rx) = mpsc::channel(16);
        let start = Instant::now();
        let checks = vec![(BackendId(0), "slow".to_owned(), params(10, 0, 1, 1), probe)];
        run_probes(checks, 1, tx, tokio::time::sleep(Duration::from_secs(2))).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_receiver_ends_the_run() {
        let probe = Scripted::new(vec![down()]);
        let (tx, rx) = mpsc::channel(16);
        drop(rx);
        let checks = vec![(BackendId(0), "c".to_owned(), params(10, 0, 1, 1), probe)];
        let forever = std::future::pending::<()>();
        tokio::time::timeout(Duration::from_secs(60), run_probes(checks, 1, tx, forever))
            .await
            .expect("run ends when nobody listens");
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_check_goes_down_with_its_reason() {
        let spec = CheckSpec::Misc(crate::MiscCheck::new(Vec::<String>::new()));
        let p = params(10, 0, 1, 1);
        let (tx, mut rx) = mpsc::channel(16);
        let run = run(vec![(BackendId(4), spec, p)], 1, tx, std::future::pending());
        tokio::select! {
            () = run => panic!("run ended"),
            t = rx.recv() => {
                let t = t.unwrap();
                assert_eq!(t.to_string(), "backend 4: misc_check (no command) is down: invalid check: misc command is empty");
            }
        }
    }

    #[test]
    fn jitter_stays_within_bounds() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..1000 {
            assert!(jitter(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }
}
