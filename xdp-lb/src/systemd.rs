//! Telling systemd what the daemon is doing (`Type=notify`): READY once forwarding,
//! RELOADING while a reload is prepared, STOPPING on the way out, and the watchdog
//! ping, sent by the daemon's event loop itself (so a stuck loop is restarted, not a
//! loop whose timer task still runs). Without `NOTIFY_SOCKET` (not under systemd)
//! every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

/// The daemon is up (again): forwarding, with `status` shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload started; [`ready`] follows when it is applied or refused.
pub fn reloading() {
    // systemd 253+ wants the clock with RELOADING=1 to match it to the reload.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half its timeout, if the unit has one.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// How long `systemctl list-jobs` may take before a SIGTERM is taken as a stop.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the SIGTERM just received is the stop half of a restart of this service
/// (`systemctl restart`, or a package upgrade's `try-restart`): systemd runs a restart
/// as one job that stops the unit and is then turned into a start, so while we stop,
/// `systemctl list-jobs` shows our unit's job as `restart`. A plain stop shows `stop`.
/// Not under systemd (no `INVOCATION_ID`), or anything unclear, is a stop: keepalived's
/// meaning.
pub async fn restart_in_progress() -> bool {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return false;
    }
    let Some(unit) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| own_unit(&text))
    else {
        return false;
    };
    let asked = tokio::process::Command::new("systemctl")
        .args(["list-jobs", "--no-legend", "--plain", "--full", "--"])
        .arg(&unit)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(ASK_TIMEOUT, asked).await {
        Ok(Ok(out)) if out.status.success() => {
            let job = job_type(&String::from_utf8_lossy(&out.stdout), &unit);
            tracing::info!(unit = %unit, job = %job.as_deref().unwrap_or("none"), "systemd's job for this service");
            matches!(job.as_deref(), Some("restart" | "try-restart"))
        }
        Ok(Ok(out)) => {
            tracing::warn!(unit = %unit, status = %out.status, "systemctl list-jobs failed: stopping, not handing over");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(unit = %unit, error = %e, "cannot run systemctl: stopping, not handing over");
            false
        }
        Err(_) => {
            tracing::warn!(unit = %unit, "systemctl list-jobs took over {ASK_TIMEOUT:?}: stopping, not handing over");
            false
        }
    }
}

/// The service this process runs in, from `/proc/self/cgroup`: the last `.service`
/// component of the unified hierarchy's path (`0::`), or of systemd's own on a hybrid
/// one (`name=systemd`).
pub fn own_unit(cgroup: &str) -> Option<String> {
    let path = |controllers: &str| {
        cgroup.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, c, path) = (fields.next()?, fields.next()?, fields.next()?);
            (c == controllers).then_some(path)
        })
    };
    [path(""), path("name=systemd")]
        .into_iter()
        .flatten()
        .find_map(|p| {
            p.rsplit('/')
                .find(|c| c.ends_with(".service"))
                .map(str::to_owned)
        })
}

/// The type of `unit`'s job in `systemctl list-jobs --no-legend --plain` output (`JOB
/// UNIT TYPE STATE` per line).
pub fn job_type(list: &str, unit: &str) -> Option<String> {
    list.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, u, kind, ..] if *u == unit => Some((*kind).to_owned()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_comes_from_the_unified_or_systemds_hierarchy() {
        let unified = "0::/system.slice/xdp-lb.service\n";
        assert_eq!(own_unit(unified).as_deref(), Some("xdp-lb.service"));
        let hybrid = "9:name=systemd:/system.slice/xdp-lb@eth0.service\n4:memory:/x\n0::/\n";
        assert_eq!(own_unit(hybrid).as_deref(), Some("xdp-lb@eth0.service"));
        let nested = "0::/system.slice/xdp-lb.service/payload\n";
        assert_eq!(own_unit(nested).as_deref(), Some("xdp-lb.service"));
        assert_eq!(own_unit("0::/user.slice/session-3.scope\n"), None);
        assert_eq!(own_unit("0::/\n"), None);
    }

    #[test]
    fn the_job_type_is_the_units_third_column() {
        let list = "1204 nginx.service start waiting\n1203 xdp-lb.service restart running\n";
        assert_eq!(job_type(list, "xdp-lb.service").as_deref(), Some("restart"));
        assert_eq!(job_type(list, "nginx.service").as_deref(), Some("start"));
        assert_eq!(job_type("", "xdp-lb.service"), None);
        assert_eq!(job_type("garbage\n", "xdp-lb.service"), None);
    }
}
