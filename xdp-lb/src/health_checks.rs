//! The health checks of a service table's real servers, run on a task of their own.
use std::time::Duration;

use tracing::warn;
use xdp_lb_checks::BackendId;

use crate::services::ServiceTable;

/// Probes in flight at once, however many real servers are checked.
pub(crate) const CHECK_CONCURRENCY: usize = 256;
/// How long shutdown waits for checks (and MISC scripts) to end.
pub(crate) const CHECKS_STOP: Duration = Duration::from_secs(5);

/// The health checks of a table's real servers, on a task of their own.
pub(crate) struct HealthChecks {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl HealthChecks {
    /// Starts every check of `table`, each from its server's verdict there (a server
    /// that is down needs one success to come up, as an `alpha` one does).
    pub(crate) fn start(
        table: &ServiceTable,
    ) -> (
        HealthChecks,
        tokio::sync::mpsc::Receiver<xdp_lb_checks::Transition>,
    ) {
        let (tx, transitions) = tokio::sync::mpsc::channel(1024);
        let checks: Vec<_> = table
            .checks
            .iter()
            .map(|(index, c)| {
                let mut params = c.params.clone();
                params.alpha = !table.backends[*index].healthy;
                (BackendId(index.0), c.spec.clone(), params)
            })
            .collect();
        (HealthChecks::spawn(checks, tx), transitions)
    }

    /// Runs `checks`, sending their transitions to `tx`.
    pub(crate) fn spawn(
        checks: Vec<(
            BackendId,
            xdp_lb_checks::CheckSpec,
            xdp_lb_checks::CheckParams,
        )>,
        tx: tokio::sync::mpsc::Sender<xdp_lb_checks::Transition>,
    ) -> HealthChecks {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(xdp_lb_checks::run(
            checks,
            CHECK_CONCURRENCY,
            tx,
            async move {
                let _ = stopped.await;
            },
        ));
        HealthChecks { task, stop }
    }

    /// No checks (until the first real ones replace it).
    pub(crate) fn idle() -> HealthChecks {
        let (stop, _) = tokio::sync::oneshot::channel();
        HealthChecks {
            task: tokio::spawn(async {}),
            stop,
        }
    }

    /// Stops every check (MISC commands are killed) and waits, bounded.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(CHECKS_STOP, self.task).await.is_err() {
            warn!("health checks did not stop within {CHECKS_STOP:?}");
        }
    }
}
