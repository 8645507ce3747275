//! The Debian package as an operator gets it: built by `cargo xtask package`, unpacked
//! into a scratch root, its files checked, and the packaged daemon run in a lab under
//! exactly the capabilities its systemd unit grants (no more), forwarding real
//! traffic. Needs root; the lab and the scratch root are removed on drop.

use std::{path::Path, process::Command};

use xdp_lb_lab::{Daemon, DrLabOptions, http_get_new_connections};
use xdp_lb_tests::{IO_TIMEOUT, READY_TIMEOUT, config, dr_lab, vip};

/// Builds the package (debug build: same files, faster) into `dir`.
fn build_package(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "package",
            "--debug",
            "--out",
        ])
        .arg(dir)
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask package failed: {status}");
    let deb = dir.join(format!("xdp-lb_{}-1_amd64.deb", env!("CARGO_PKG_VERSION")));
    assert!(deb.exists(), "no {}", deb.display());
    deb
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_package_installs_a_daemon_that_runs_under_its_units_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let contents = output(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/sbin/xdp-lb",
        "./lib/systemd/system/xdp-lb.service",
        "./etc/xdp-lb/lb.toml",
        "./usr/share/man/man8/xdp-lb.8.gz",
        "./usr/share/bash-completion/completions/xdp-lb",
        "./usr/share/zsh/vendor-completions/_xdp-lb",
        "./usr/share/fish/vendor_completions.d/xdp-lb.fish",
        "./usr/share/doc/xdp-lb/README.md",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing from the package:\n{contents}"
        );
    }
    let conffiles = output(
        Command::new("dpkg-deb")
            .args(["--info"])
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/xdp-lb/lb.toml");
    let depends = output(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .arg("Depends"),
    );
    let glibc = depends
        .trim()
        .strip_prefix("libc6 (>= ")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or_else(|| panic!("Depends: {depends}"));

    // Into a scratch root, as dpkg would put it.
    let root = dir.path().join("root");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let daemon = root.join("usr/sbin/xdp-lb");
    let version = output(Command::new(&daemon).arg("--version"));
    assert!(version.contains(&format!("glibc >= {glibc}")), "{version}");
    assert!(version.contains("(commit "), "{version}");
    let man = output(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        root.join("usr/share/man/man8/xdp-lb.8.gz").display()
    )));
    assert!(man.contains(".TH xdp-lb 8"), "{man}");
    let checked = output(
        Command::new(&daemon)
            .args(["check", "--offline", "--config"])
            .arg(root.join("etc/xdp-lb/lb.toml")),
    );
    assert!(checked.contains(": ok ("), "{checked}");

    // The unit's capabilities, and nothing else, for the packaged daemon in a lab.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/xdp-lb.service")).unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(
        unit.contains("Type=notify") && unit.contains("WatchdogSec="),
        "{unit}"
    );
    let wrapper = dir.path().join("as-the-unit");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set=-all,{} --inh-caps=-all {} \"$@\"\n",
            caps.join(","),
            daemon.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let running = Daemon::start(
        &lab.lb,
        &wrapper,
        &config(&lab, &[(80, "tcp", &[1, 1])]),
        READY_TIMEOUT,
    )
    .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_owned();
    let tally = http_get_new_connections(&lab.client, vip(80), 20, IO_TIMEOUT).unwrap();
    assert_eq!(tally.values().sum::<usize>(), 20, "{tally:?}");
    assert_eq!(tally.len(), 2, "{tally:?}");
    eprintln!(
        "measured: package {} KiB; the unit's daemon ran with CapEff {eff} ({})",
        std::fs::metadata(&deb).unwrap().len() / 1024,
        caps.join(",")
    );
    let log = running.stop().unwrap();
    assert!(!log.contains("missing privileges"), "{log}");
}
