//! Checks the capabilities the daemon needs before it touches anything, so a missing
//! privilege is one clear line instead of an EPERM from deep inside a syscall.

const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("missing privileges: xdp-lb needs root or the capabilities {missing}")]
pub struct MissingPrivileges {
    /// Each missing capability with what it is for.
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

/// A capability the daemon will use, and what for.
type Need = (&'static str, u32, &'static str);

/// What `config` makes the daemon use. The systemd unit grants the same set.
fn needs(config: &crate::config::Config) -> Vec<Need> {
    let mut needs: Vec<Need> = vec![
        (
            "CAP_NET_ADMIN",
            CAP_NET_ADMIN,
            "attaches XDP, manages neighbours and VIPs",
        ),
        (
            "CAP_NET_RAW",
            CAP_NET_RAW,
            "VRRP, ICMP checks and gratuitous ARP use raw sockets",
        ),
    ];
    let as_user = config.scripts.iter().any(|s| s.user.is_some())
        || config.virtual_servers.iter().any(|v| {
            v.real_servers.iter().any(|r| {
                r.check.as_ref().is_some_and(
                    |c| matches!(&c.spec, xdp_lb_checks::CheckSpec::Misc(m) if m.user.is_some()),
                )
            })
        });
    if as_user {
        needs.push(("CAP_SETUID", CAP_SETUID, "runs scripts as their `user`"));
        needs.push((
            "CAP_SETGID",
            CAP_SETGID,
            "runs scripts as their `user`'s group",
        ));
        needs.push((
            "CAP_KILL",
            CAP_KILL,
            "stops timed-out scripts of another user",
        ));
    }
    if config.global.api.is_some_and(|a| a.port() < 1024) {
        needs.push((
            "CAP_NET_BIND_SERVICE",
            CAP_NET_BIND_SERVICE,
            "the API's port is below 1024",
        ));
    }
    needs
}

/// What is missing from `caps` (a CapEff bit set) of `needs`, and of loading BPF
/// (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN in their place).
fn missing(caps: u64, needs: &[Need]) -> Vec<String> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing: Vec<String> = needs
        .iter()
        .filter(|(_, cap, _)| !has(*cap))
        .map(|(name, _, why)| format!("{name} ({why})"))
        .collect();
    if !has(CAP_SYS_ADMIN) {
        for (name, cap) in [("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON)] {
            if !has(cap) {
                missing.push(format!("{name} (loads the XDP program and its maps)"));
            }
        }
    }
    missing
}

/// Checks, before anything is touched, that this process has every capability
/// `config` will need.
pub fn check(config: &crate::config::Config) -> Result<(), MissingPrivileges> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing = missing(effective_caps(&status), &needs(config));
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

    fn config(extra: &str) -> crate::config::Config {
        let text = format!("{extra}\n[dataplane]\ninterfaces = [\"eth0\"]\n");
        crate::config::parse(&text, "lb.toml").unwrap()
    }

    #[test]
    fn root_has_everything() {
        let caps = effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n");
        assert!(missing(caps, &needs(&config(""))).is_empty());
    }

    #[test]
    fn an_unprivileged_process_is_told_what_it_lacks_and_why() {
        let m = missing(0, &needs(&config("")));
        let names: Vec<&str> = m.iter().map(|m| m.split(' ').next().unwrap()).collect();
        assert_eq!(
            names,
            ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON"]
        );
        assert!(m[1].contains("raw sockets"), "{m:?}");
    }

    #[test]
    fn bpf_and_perfmon_replace_sys_admin() {
        let caps =
            (1u64 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert!(missing(caps, &needs(&config(""))).is_empty());
    }

    #[test]
    fn scripts_as_another_user_and_a_low_api_port_need_more() {
        let c = config(
            "[global]\napi = \"127.0.0.1:80\"\n\n[script.chk]\ncommand = [\"/bin/true\"]\nuser = \"nobody\"\n",
        );
        let names: Vec<&str> = needs(&c).iter().map(|n| n.0).collect();
        for cap in [
            "CAP_SETUID",
            "CAP_SETGID",
            "CAP_KILL",
            "CAP_NET_BIND_SERVICE",
        ] {
            assert!(names.contains(&cap), "{names:?}");
        }
    }
}
