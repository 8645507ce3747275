//! MISC_CHECK with real processes: exit codes, dynamic weights, signals, timeouts (and
//! what a timed-out script leaves behind), no shell, another user.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use xdp_lb_checks::{
    CheckParams, CheckSpec, Checker, MiscCheck, Outcome, Reason, ScriptOutput, TERM_GRACE, Up,
};

fn sh(script: &str) -> MiscCheck {
    MiscCheck::new(["/bin/sh", "-c", script])
}

fn checker(misc: MiscCheck) -> Checker {
    let spec = CheckSpec::Misc(misc);
    let params = CheckParams::new("127.0.0.1:80".parse().unwrap(), &spec);
    Checker::new(&spec, &params).unwrap_or_else(|e| panic!("{e}"))
}

async fn run(misc: MiscCheck) -> Outcome {
    checker(misc).probe().await
}

/// Whether `pid` is gone (or only a zombie waiting for its reaper).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Reads the pid a script wrote to `path`, waiting up to 5 s for it.
async fn read_pid(path: &Path) -> i32 {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pid in {} after 5 s", path.display());
}

async fn wait_dead(pid: i32) {
    for _ in 0..300 {
        if is_dead(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("process {pid} still alive 3 s after its check ended");
}

fn exit(code: i32) -> Reason {
    Reason::Exit {
        code,
        output: ScriptOutput::default(),
    }
}

#[tokio::test]
async fn exit_zero_is_up() {
    assert_eq!(run(sh("exit 0")).await, Ok(Up::default()));
}

#[tokio::test]
async fn non_zero_exits_are_down_with_the_code() {
    assert_eq!(run(sh("exit 1")).await, Err(exit(1)));
    let outcome = run(sh("exit 42")).await;
    assert_eq!(outcome, Err(exit(42)));
    assert_eq!(outcome.unwrap_err().to_string(), "exit code 42");
}

/// keepalived logs only the code; the first lines of the output say why.
#[tokio::test]
async fn a_failure_shows_the_first_lines_the_command_printed() {
    let outcome = run(sh(
        "echo checking; echo 'disk /var full' >&2; echo more; echo last; exit 3",
    ))
    .await;
    assert_eq!(
        outcome.unwrap_err().to_string(),
        "exit code 3; output: \"checking\" \"disk /var full\" \"more\""
    );
    // Much more than a pipe holds: read while it runs, so it neither blocks nor gets
    // SIGPIPE, and only the start is kept.
    let outcome = run(sh(
        "echo first; head -c 1000000 /dev/zero | tr '\\0' x; echo; exit 1",
    ))
    .await;
    let shown = outcome.unwrap_err().to_string();
    assert!(
        shown.starts_with("exit code 1; output: \"first\" \"xxxx"),
        "{shown}"
    );
    assert!(shown.len() < 400, "{shown}");
    // Output of a command that succeeds costs nothing and says nothing.
    assert_eq!(
        run(sh("head -c 1000000 /dev/zero; exit 0")).await,
        Ok(Up::default())
    );
}

#[tokio::test]
async fn dynamic_exit_codes_set_the_weight() {
    let dynamic = |script| MiscCheck {
        dynamic: true,
        ..sh(script)
    };
    assert_eq!(run(dynamic("exit 0")).await, Ok(Up { weight: None }));
    assert_eq!(run(dynamic("exit 1")).await, Err(exit(1)));
    assert_eq!(run(dynamic("exit 2")).await, Ok(Up { weight: Some(0) }));
    assert_eq!(run(dynamic("exit 12")).await, Ok(Up { weight: Some(10) }));
    assert_eq!(run(dynamic("exit 255")).await, Ok(Up { weight: Some(253) }));
}

#[tokio::test]
async fn death_by_signal_is_down_with_the_signal() {
    let outcome = run(sh("kill -SEGV $$")).await;
    assert_eq!(
        outcome,
        Err(Reason::Signal {
            signal: 11,
            output: ScriptOutput::default()
        })
    );
    assert_eq!(
        outcome.unwrap_err().to_string(),
        "killed by signal 11 (sigsegv)"
    );
}

#[tokio::test]
async fn arguments_reach_the_program_without_a_shell() {
    // Through a shell, `;exit 3` would run; directly, it is just an argument.
    let misc = MiscCheck::new(["/bin/echo", "$HOME;exit 3"]);
    assert_eq!(run(misc).await, Ok(Up::default()));
}

#[tokio::test]
async fn a_missing_program_is_down_with_why() {
    let outcome = run(MiscCheck::new(["/nonexistent/check-app"])).await;
    assert_eq!(
        outcome.unwrap_err().to_string(),
        "cannot run /nonexistent/check-app: no such file or directory"
    );
}

#[tokio::test]
async fn timeout_kills_the_script_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let misc = MiscCheck {
        timeout: Some(Duration::from_millis(300)),
        ..sh(&script)
    };
    let started = Instant::now();
    let outcome = run(misc).await;
    assert_eq!(
        outcome,
        Err(Reason::KilledAfterTimeout {
            timeout: Duration::from_millis(300)
        })
    );
    assert_eq!(
        outcome.unwrap_err().to_string(),
        "killed after timeout of 300ms"
    );
    // SIGTERM sufficed: no grace period spent.
    assert!(started.elapsed() < TERM_GRACE, "{:?}", started.elapsed());
    wait_dead(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn a_script_ignoring_sigterm_is_killed_after_the_grace() {
    let misc = MiscCheck {
        timeout: Some(Duration::from_millis(200)),
        ..sh("trap '' TERM; sleep 30")
    };
    let started = Instant::now();
    let outcome = run(misc).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(Reason::KilledAfterTimeout { .. })),
        "{outcome:?}"
    );
    assert!(
        took >= TERM_GRACE && took < TERM_GRACE + Duration::from_secs(5),
        "took {took:?}"
    );
}

#[tokio::test]
async fn children_left_behind_by_a_finished_script_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    // Exits at once, leaving a long-lived child in its group (with fds closed, so it
    // does not hold the script's output open).
    let script = format!(
        "sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {}; exit 0",
        pidfile.display()
    );
    assert_eq!(run(sh(&script)).await, Ok(Up::default()));
    wait_dead(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn a_dropped_probe_kills_the_script_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let checker = checker(sh(&script));
    // The scheduler aborting a probe on shutdown drops its future like this.
    let cut = tokio::time::timeout(Duration::from_millis(300), checker.probe()).await;
    assert!(cut.is_err(), "the script should still run: {cut:?}");
    wait_dead(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn runs_as_the_given_user() {
    xdp_lb_lab::require_root().unwrap_or_else(|e| panic!("switching users {e:#}"));
    let nobody = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = format!(
        "test \"$(id -u)\" = {} && test \"$(id -G)\" = \"$(id -g)\"",
        nobody.trim()
    );
    let as_nobody = MiscCheck {
        user: Some("nobody".into()),
        ..sh(&script)
    };
    assert_eq!(run(as_nobody).await, Ok(Up::default()));
    // As ourselves (root) the same test fails: the user switch is what made it pass.
    assert_eq!(run(sh(&script)).await, Err(exit(1)));
}

#[tokio::test]
async fn a_script_others_can_change_is_not_run() {
    xdp_lb_lab::require_root().unwrap_or_else(|e| panic!("judging root-owned files {e:#}"));
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = dir.path().join("check.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o757)).unwrap();
    let outcome = run(MiscCheck::new([script.to_str().unwrap()])).await;
    let why = outcome.unwrap_err().to_string();
    assert!(
        why.starts_with("unsafe permissions found for script")
            && why.contains("writable by anyone"),
        "{why}"
    );
    assert!(!marker.exists(), "the unsafe script ran");
    // Made safe again, it runs.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        run(MiscCheck::new([script.to_str().unwrap()])).await,
        Ok(Up::default())
    );
    assert!(marker.exists());
}
