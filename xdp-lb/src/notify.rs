//! Notify commands (`quorum_up`, `quorum_down`, and later VRRP's notify scripts): run
//! directly from their argv (no shell unless the argv names one), with a timeout, and
//! in their own task so a slow script never holds up the data plane or a state machine.
use std::time::Duration;

use tokio::{process::Command, task::JoinHandle};
use tracing::{info, warn};

/// A script still running after this is killed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `argv` to completion (or the timeout) and logs the outcome; `what` names the
/// event in the log, e.g. "quorum_down of 192.0.2.100:80/tcp".
pub async fn run(argv: &[String], what: &str) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let mut command = Command::new(program);
    command.args(args).kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn!(command = %argv.join(" "), error = %e, "{what}: cannot start the command");
            return;
        }
    };
    match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            info!(command = %argv.join(" "), "{what}: command ran");
        }
        Ok(Ok(out)) => {
            warn!(command = %argv.join(" "), status = %out.status, "{what}: command failed")
        }
        Ok(Err(e)) => warn!(command = %argv.join(" "), error = %e, "{what}: command failed"),
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => warn!(command = %argv.join(" "), "{what}: command killed after {TIMEOUT:?}"),
    }
}

/// Starts `run` in its own task.
pub fn spawn(argv: Vec<String>, what: String) -> JoinHandle<()> {
    tokio::spawn(async move { run(&argv, &what).await })
}
