//! Notify commands: run directly (argv, no shell), one at a time per instance on a task
//! of their own, each bounded by a timeout, so a slow or hung script never holds up the
//! state machine.

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

/// Queue depth per instance; beyond it, commands are dropped with a warning (a script
/// that far behind is stuck, and its timeout will clear it).
const QUEUE: usize = 32;

/// The queue of one instance's notify commands.
pub struct Notifier {
    instance: String,
    tx: mpsc::Sender<Vec<String>>,
    worker: JoinHandle<()>,
}

impl Notifier {
    /// Starts the worker of instance `instance`.
    pub fn start(instance: &str, timeout: Duration) -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = tokio::spawn(worker(instance.to_string(), rx, timeout));
        Notifier {
            instance: instance.to_string(),
            tx,
            worker,
        }
    }

    /// Queues `argv`; never waits.
    pub fn run(&self, argv: Vec<String>) {
        if argv.is_empty() {
            return;
        }
        if let Err(e) = self.tx.try_send(argv) {
            tracing::warn!(
                instance = %self.instance,
                "notify command not run: the queue of earlier commands is full or closed ({e})"
            );
        }
    }

    /// Lets the queued commands finish (each within its timeout).
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.worker.await;
    }
}

async fn worker(instance: String, mut rx: mpsc::Receiver<Vec<String>>, timeout: Duration) {
    while let Some(argv) = rx.recv().await {
        run_one(&instance, &argv, timeout).await;
    }
}

/// Runs `argv` to completion or until `timeout`, when it is killed. Returns whether it
/// exited successfully.
pub async fn run_one(instance: &str, argv: &[String], timeout: Duration) -> bool {
    crate::notify::run(argv, &format!("vrrp instance {instance} notify"), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[tokio::test]
    async fn commands_run_in_order_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let n = Notifier::start("VI_1", Duration::from_secs(5));
        let script = format!("echo \"$@\" >> {}", out.display());
        n.run(argv(&["/bin/sh", "-c", &script, "sh", "first", "a b"]));
        n.run(argv(&["/bin/sh", "-c", &script, "sh", "second"]));
        n.finish().await;
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "first a b\nsecond\n"
        );
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_timeout() {
        let started = std::time::Instant::now();
        let ok = run_one(
            "VI_1",
            &argv(&["/bin/sleep", "30"]),
            Duration::from_millis(200),
        )
        .await;
        assert!(!ok);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_not_fatal() {
        assert!(
            !run_one(
                "VI_1",
                &argv(&["/nonexistent/notify"]),
                Duration::from_secs(1)
            )
            .await
        );
    }
}
