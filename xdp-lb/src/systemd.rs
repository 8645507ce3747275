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
