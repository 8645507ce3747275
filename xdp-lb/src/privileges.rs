//! Checks the capabilities the daemon needs before it touches anything, so a missing
//! privilege is one clear line instead of an EPERM from deep inside a syscall.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "missing privileges: xdp-lb needs root or the capabilities {missing} (loads XDP programs, manages neighbours)"
)]
pub struct MissingPrivileges {
    pub missing: String,
}

/// Effective capabilities from `/proc/self/status` (`CapEff:` as hex).
fn effective_caps(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// What is missing from `caps` (a CapEff bit set); BPF+PERFMON may stand in for SYS_ADMIN.
fn missing(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    missing
}

pub fn check() -> Result<(), MissingPrivileges> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing = missing(effective_caps(&status));
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingPrivileges {
            missing: missing.join(", "),
        })
    }
}

/// Raises the soft limit on open files to the hard one (as systemd's LimitNOFILE does
/// for a unit), so many checks, API clients and notify commands fit; logs the result.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), soft = limit.rlim_cur, "cannot raise the open-file limit");
            return;
        }
        limit = raised;
    }
    tracing::info!(open_files = limit.rlim_cur, "open-file limit");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert!(missing(effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n")).is_empty());
    }

    #[test]
    fn an_unprivileged_process_is_told_what_it_lacks() {
        let m = missing(effective_caps("CapEff:\t0000000000000000\n"));
        assert_eq!(m, vec!["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"]);
    }

    #[test]
    fn bpf_and_perfmon_replace_sys_admin() {
        let caps = (1u64 << CAP_NET_ADMIN) | (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert!(missing(caps).is_empty());
    }
}
