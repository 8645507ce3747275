//! `cargo xtask package`: a Debian package of the daemon, built once on a build host so
//! the target host needs no Rust (the XDP program is embedded in the binary). It holds
//! the binary, the systemd unit, a default configuration (a conffile), the man page and
//! shell completions generated from the command line's own definition, and the README.
//! Built with Debian's own `dpkg-deb`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cargo, run_cmd, workspace_root};

/// Where each generated file goes, and the `xdp-lb generate` argument that prints it.
const GENERATED: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/xdp-lb"),
    ("zsh", "usr/share/zsh/vendor-completions/_xdp-lb"),
    ("fish", "usr/share/fish/vendor_completions.d/xdp-lb.fish"),
];

/// Builds the package into `out`; returns its path.
pub fn build(release: bool, out: &Path) -> anyhow::Result<PathBuf> {
    let mut build = cargo(&["build", "--package", "xdp-lb", "--bin", "xdp-lb"]);
    if release {
        build.arg("--release");
    }
    run_cmd(&mut build)?;
    let root = workspace_root();
    let binary = root
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("xdp-lb");
    let version = env!("CARGO_PKG_VERSION");
    let stage = out.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    let put = |path: &str, bytes: &[u8], mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let to = stage.join(path);
        std::fs::create_dir_all(to.parent().expect("a file in a folder"))?;
        std::fs::write(&to, bytes).with_context(|| format!("writing {}", to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put("usr/sbin/xdp-lb", &std::fs::read(&binary)?, 0o755)?;
    // Debug info and symbols stay on the build host.
    run_cmd(Command::new("strip").arg(stage.join("usr/sbin/xdp-lb")))?;
    put(
        "lib/systemd/system/xdp-lb.service",
        &std::fs::read(root.join("packaging/xdp-lb.service"))?,
        0o644,
    )?;
    put(
        "etc/xdp-lb/lb.toml",
        &std::fs::read(root.join("config/lb.example.toml"))?,
        0o644,
    )?;
    put(
        "usr/share/doc/xdp-lb/README.md",
        &std::fs::read(root.join("README.md"))?,
        0o644,
    )?;
    put(
        "usr/share/doc/xdp-lb/copyright",
        b"xdp-lb\nLicense: MIT OR Apache-2.0\n",
        0o644,
    )?;
    let generate = |what: &str| -> anyhow::Result<Vec<u8>> {
        let out = Command::new(&binary).args(["generate", what]).output()?;
        if !out.status.success() {
            bail!(
                "xdp-lb generate {what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    };
    put(
        "usr/share/man/man8/xdp-lb.8.gz",
        &gzip(&generate("man")?)?,
        0o644,
    )?;
    for (shell, path) in GENERATED {
        put(path, &generate(shell)?, 0o644)?;
    }
    let glibc = glibc_needed(&binary)?;
    let size_kib = dir_size(&stage)? / 1024;
    let control = format!(
        "Package: xdp-lb\nVersion: {version}-1\nArchitecture: amd64\nMaintainer: xdp-lb developers <xdp-lb@example.org>\n\
         Installed-Size: {size_kib}\nDepends: libc6 (>= {glibc})\nSection: net\nPriority: optional\n\
         Description: XDP load balancer with VRRP failover and health checks\n \
         keepalived + LVS/IPVS in one daemon: an XDP program forwards virtual-service\n \
         traffic (DR, NAT, TUN) at the NIC driver; VRRP (wire-compatible with\n \
         keepalived), health checks and VIP management run in the daemon.\n \
         Needs Linux >= 6.1.\n"
    );
    put("DEBIAN/control", control.as_bytes(), 0o644)?;
    put("DEBIAN/conffiles", b"/etc/xdp-lb/lb.toml\n", 0o644)?;
    // Installed and reloaded, never started: the configuration must be edited first.
    // An upgrade restarts a running daemon, which hands over (the unit's restart is
    // hitless): the new binary takes over XDP, the connections and the VIPs.
    put(
        "DEBIAN/postinst",
        b"#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n  systemctl daemon-reload || true\n  \
          if [ \"$1\" = configure ] && [ -n \"$2\" ]; then systemctl try-restart xdp-lb.service || true; fi\nfi\n",
        0o755,
    )?;
    put(
        "DEBIAN/prerm",
        b"#!/bin/sh\nset -e\nif [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n  systemctl stop xdp-lb.service || true\nfi\n",
        0o755,
    )?;
    let deb = out.join(format!("xdp-lb_{version}-1_amd64.deb"));
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    let _ = std::fs::remove_dir_all(&stage);
    Ok(deb)
}

/// The newest glibc symbol version the binary links against.
fn glibc_needed(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .context("objdump (binutils) reads the binary's glibc symbols")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut versions: Vec<Vec<u32>> = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| v.split('.').map(|n| n.parse().ok()).collect())
        .collect();
    versions.sort();
    let newest = versions
        .last()
        .context("the binary links no glibc symbols?")?;
    Ok(newest
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(bytes)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
