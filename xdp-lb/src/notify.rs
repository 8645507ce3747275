//! Notify commands (`quorum_up`, `quorum_down`, VRRP's `notify_*`): run directly from
//! their argv (no shell unless the argv names one), with a timeout after which they are
//! killed, and outside the caller's loop so a slow script never holds up the data plane
//! or a state machine.
use std::{process::Stdio, time::Duration};

use tokio::{process::Command, task::JoinHandle};
use tracing::{info, warn};

/// A script still running after this is killed (unless the caller gives its own).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `argv` to completion (or `timeout`, when it is killed) and logs the outcome;
/// `what` names the event in the log, e.g. "quorum_down of 192.0.2.100:80/tcp".
/// Returns whether the command exited successfully.
pub async fn run(argv: &[String], what: &str, timeout: Duration) -> bool {
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    // keepalived's script security: never run, as root, what others could change.
    let uid = nix::unistd::geteuid().as_raw();
    if let Err(why) = xdp_lb_checks::script_security::check(program, uid) {
        warn!(command = %argv.join(" "), "{what}: not run: {why}");
        return false;
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn!(command = %argv.join(" "), error = %e, "{what}: cannot start the command");
            return false;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            info!(command = %argv.join(" "), "{what}: command ran");
            true
        }
        Ok(Ok(status)) => {
            warn!(command = %argv.join(" "), %status, "{what}: command failed");
            false
        }
        Ok(Err(e)) => {
            warn!(command = %argv.join(" "), error = %e, "{what}: command failed");
            false
        }
        Err(_) => {
            let _ = child.kill().await;
            warn!(command = %argv.join(" "), "{what}: command killed after {timeout:?}");
            false
        }
    }
}

/// Starts `run` (with the default timeout) in its own task.
pub fn spawn(argv: Vec<String>, what: String) -> JoinHandle<bool> {
    tokio::spawn(async move { run(&argv, &what, TIMEOUT).await })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn a_command_others_can_change_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = dir.path().join("notify.sh");
        std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
        let argv = vec![script.display().to_string()];
        assert!(!run(&argv, "test notify", TIMEOUT).await);
        assert!(!marker.exists(), "an unsafe notify command ran");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(run(&argv, "test notify", TIMEOUT).await);
        assert!(marker.exists());
    }
}
