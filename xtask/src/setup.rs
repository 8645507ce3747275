//! Installs what a bare machine of this kind lacks, and nothing twice:
//! Debian packages, the nightly's rust-src (for `-Z build-std=core`), and bpf-linker
//! built against the same LLVM major as the nightly (22).
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::run_cmd;

/// llvm/polly: bpf-linker's build. iproute2/ethtool/python3/tcpdump: the labs.
/// keepalived: the real VRRP peer of the failover tests (and its genhash); nftables:
/// their split brain. openssl: the TLS server `genhash -S` is compared against.
/// frr: the routers and the LBs' BGP speakers of the ECMP lab (bgpd, zebra, vtysh).
/// qemu-system-x86, busybox-static: the guest that runs the BPF tests on Linux 6.1.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "ethtool",
    "python3",
    "tcpdump",
    "curl",
    "keepalived",
    "nftables",
    "openssl",
    "frr",
    "qemu-system-x86",
    "busybox-static",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";

pub fn install() -> anyhow::Result<()> {
    apt()?;
    promtool()?;
    nightly_rust_src()?;
    bpf_linker()?;
    Ok(())
}

/// `promtool`, which the tests run on `/metrics`: taken out of Debian's prometheus
/// package without installing it (no server, no service started).
fn promtool() -> anyhow::Result<()> {
    if quiet(Command::new("promtool").arg("--version")) {
        return Ok(());
    }
    eprintln!("setup: installing promtool (from Debian's prometheus package)");
    let dir = std::env::temp_dir().join("xdp-lb-setup-promtool");
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    unpack_debian_package("prometheus", &root)?;
    std::fs::copy(root.join("usr/bin/promtool"), "/usr/local/bin/promtool")
        .context("installing promtool into /usr/local/bin")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Downloads Debian's package `name` (the version apt would install) and unpacks its
/// files under `into`, without installing it: for a tool or a kernel the machine
/// should not run as its own. Fetches the package lists first on a fresh machine.
pub fn unpack_debian_package(name: &str, into: &Path) -> anyhow::Result<()> {
    // A sibling of `into`: the same file system, and nothing left inside `into`.
    let mut download = into.as_os_str().to_owned();
    download.push(".download");
    let download = std::path::PathBuf::from(download);
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    let fetch = || {
        Command::new("apt-get")
            .args(["download", "-q", name])
            .current_dir(&download)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !fetch() {
        // No package lists yet on a fresh machine.
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        if !fetch() {
            bail!("cannot download Debian's package {name}");
        }
    }
    let deb = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(into))?;
    std::fs::remove_dir_all(&download)?;
    Ok(())
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    // A fresh machine has no package lists yet.
    run_cmd(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run_cmd(&mut install).context("installing Debian packages")
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .output()
        .context("rustup is required (the machine's Rust toolchain manager)")?;
    if !installed.status.success() {
        bail!(
            "the `{NIGHTLY}` toolchain is missing; it builds the XDP program (toolchain \
             auto-install is off here, so it must come with the machine)"
        );
    }
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the {NIGHTLY} toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 80 s)");
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22", "--force"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )?;
    if !quiet(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker was installed but is not on PATH; add ~/.cargo/bin to PATH");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { crate::libc_geteuid() == 0 }
}
