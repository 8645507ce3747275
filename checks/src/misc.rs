//! `MISC_CHECK`: runs a command directly (no shell) and judges its exit status.
//!
//! Exit 0 is up. With `dynamic` (keepalived's `misc_dynamic`), exit 2..=255 is up with
//! weight `code - 2` and exit 1 is down; otherwise any non-zero exit is down. Death by a
//! signal is down.
//!
//! The command runs in its own process group, stdin on /dev/null, stdout and stderr
//! into one pipe of which the first lines are kept for the log of a failure (keepalived
//! logs only the code). A timeout ends everything it started: like keepalived, SIGTERM
//! to the group, then SIGKILL after [`TERM_GRACE`]. When the command exits, whatever it left running in
//! its group is killed too, and if the probe itself is dropped (scheduler shutdown) a
//! guard SIGKILLs the group: no script's children pile up or outlive the checker.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};

use crate::reason::{Outcome, Phase, Reason, ScriptOutput, Up, io_message};
use crate::spec::{CheckParams, MiscCheck};

/// How long a timed-out command gets between SIGTERM and SIGKILL (keepalived: 2 s).
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// A prepared MISC check: argv, resolved timeout and user.
#[derive(Debug)]
pub(crate) struct MiscProbe {
    argv: Vec<String>,
    timeout: Duration,
    dynamic: bool,
    /// (uid, gid) to run as, from `user`.
    ids: Option<(u32, u32)>,
}

impl MiscProbe {
    pub(crate) fn new(misc: &MiscCheck, params: &CheckParams) -> Result<MiscProbe, Reason> {
        if misc.argv.first().is_none_or(String::is_empty) {
            return Err(Reason::Invalid("misc command is empty".into()));
        }
        let ids = match &misc.user {
            None => None,
            Some(name) => match User::from_name(name) {
                Ok(Some(user)) => Some((user.uid.as_raw(), user.gid.as_raw())),
                Ok(None) => {
                    return Err(Reason::Invalid(format!(
                        "misc user {name:?} does not exist"
                    )));
                }
                Err(errno) => {
                    return Err(Reason::Invalid(format!(
                        "cannot look up misc user {name:?}: {}",
                        crate::reason::lower_first(errno.desc())
                    )));
                }
            },
        };
        Ok(MiscProbe {
            argv: misc.argv.clone(),
            timeout: misc.timeout.unwrap_or(params.interval),
            dynamic: misc.dynamic,
            ids,
        })
    }

    /// The longest one run may take: the timeout, then SIGTERM's and SIGKILL's grace.
    pub(crate) fn longest_run(&self) -> Duration {
        self.timeout + TERM_GRACE * 2
    }

    pub(crate) async fn probe(&self) -> Outcome {
        let program = &self.argv[0];
        // Checked before every run, so a script made unsafe after the start is caught:
        // it is not run if anyone but root or its user could have changed it.
        let uid = self
            .ids
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid);
        crate::script_security::check(program, uid).map_err(Reason::Unsafe)?;
        let no_pipe = |e: std::io::Error| Reason::Spawn {
            program: program.clone(),
            message: format!("no pipe for its output: {}", io_message(&e)),
        };
        let (output, into_child) = tokio::net::unix::pipe::pipe()
            .and_then(|(tx, rx)| Ok((rx, tx.into_blocking_fd()?)))
            .map_err(no_pipe)?;
        let to_stderr = into_child.try_clone().map_err(no_pipe)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(into_child)
            .stderr(to_stderr)
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().map_err(|e| Reason::Spawn {
            program: program.clone(),
            message: io_message(&e),
        })?;
        // The command's copies of the write end are its own now (the Command is dropped
        // when it is): EOF comes when it and everything it started are gone.
        drop(cmd);
        let mut output = Head::drain(output);
        let group = GroupGuard(child.id().map(|pid| Pid::from_raw(pid as i32)));
        match tokio::time::timeout(self.timeout, child.wait()).await {
            // The guard kills what the command left running in its group.
            Ok(Ok(status)) => match judge(status, self.dynamic) {
                Ok(up) => Ok(up),
                Err(reason) => {
                    // What it left running goes first, so the pipe reaches its end.
                    group.signal(Signal::SIGKILL);
                    Err(reason.with_output(output.finish().await))
                }
            },
            Ok(Err(e)) => Err(Reason::io(Phase::Wait, &e)),
            Err(_elapsed) => {
                group.signal(Signal::SIGTERM);
                if tokio::time::timeout(TERM_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    group.signal(Signal::SIGKILL);
                    // SIGKILL cannot be ignored; the bound only guards against a process
                    // stuck in the kernel, which kill_on_drop and tokio's reaper handle.
                    let _ = tokio::time::timeout(TERM_GRACE, child.wait()).await;
                }
                // The guard SIGKILLs what is left of the group, as keepalived does.
                Err(Reason::KilledAfterTimeout {
                    timeout: self.timeout,
                })
            }
        }
    }
}

/// How much of a command's output is kept: enough for its first lines.
const HEAD_BYTES: usize = 4096;

/// The start of a command's output, read while it runs. The rest is read and dropped,
/// so a chatty command never blocks on a full pipe (nor dies of SIGPIPE).
struct Head {
    kept: Arc<Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Head {
    fn drain(mut pipe: tokio::net::unix::pipe::Receiver) -> Head {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&kept);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                let room = HEAD_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        Head { kept, reader }
    }

    /// The output up to its end; a process that left the group and still holds the
    /// pipe is not waited for beyond [`TERM_GRACE`].
    async fn finish(&mut self) -> ScriptOutput {
        let _ = tokio::time::timeout(TERM_GRACE, &mut self.reader).await;
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        ScriptOutput::from_head(&kept)
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The verdict on an exit status.
fn judge(status: ExitStatus, dynamic: bool) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(0) => Ok(Up::default()),
        Some(code @ 2..=255) if dynamic => Ok(Up {
            weight: Some(code as u32 - 2),
        }),
        Some(code) => Err(Reason::Exit {
            code,
            output: ScriptOutput::default(),
        }),
        None => Err(Reason::Signal {
            signal: status.signal().unwrap_or(0),
            output: ScriptOutput::default(),
        }),
    }
}

/// SIGKILLs a process group when dropped, unless cleared.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.0 {
            // ESRCH (all gone) is the expected end, not an error.
            let _ = killpg(pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit(code: i32) -> Reason {
        Reason::Exit {
            code,
            output: ScriptOutput::default(),
        }
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exit_codes_are_judged_like_keepalived() {
        assert_eq!(judge(exited(0), false), Ok(Up { weight: None }));
        assert_eq!(judge(exited(1), false), Err(exit(1)));
        assert_eq!(judge(exited(7), false), Err(exit(7)));
        assert_eq!(judge(exited(0), true), Ok(Up { weight: None }));
        assert_eq!(judge(exited(1), true), Err(exit(1)));
        assert_eq!(judge(exited(2), true), Ok(Up { weight: Some(0) }));
        assert_eq!(judge(exited(255), true), Ok(Up { weight: Some(253) }));
        assert_eq!(
            judge(ExitStatus::from_raw(9), false),
            Err(Reason::Signal {
                signal: 9,
                output: ScriptOutput::default()
            })
        );
    }

    #[test]
    fn unknown_users_are_rejected_up_front() {
        let misc = MiscCheck {
            user: Some("no-such-user-xdp-lb".into()),
            ..MiscCheck::new(["/bin/true"])
        };
        let params = CheckParams::new("127.0.0.1:1".parse().unwrap(), &crate::CheckSpec::Tcp);
        assert_eq!(
            MiscProbe::new(&misc, &params).unwrap_err().to_string(),
            "invalid check: misc user \"no-such-user-xdp-lb\" does not exist"
        );
    }
}
