//! The BPF_PROG_TEST_RUN tests on an older kernel than the machine's own: Debian 12's
//! Linux 6.1, the oldest kernel this machine's package registry serves and the one
//! most edge hosts of this kind run. A verifier's rules change between kernels (6.1
//! refused a program that 6.18 accepts), so a test on the newest kernel alone says
//! little about what a host will load.
//!
//! The kernel boots under qemu with an initramfs of busybox, the chosen test binaries
//! and the libraries they link; its init runs each binary and prints a result line,
//! which is all that is read back. Software emulation (TCG): KVM is nested on these
//! machines and hung at boot, and TCG boots in seconds (the tests run about nine
//! times slower than natively).
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{cargo, run_cmd, workspace_root};

/// The kernel series, as Debian 12 names its packages (`linux-image-6.1.0-N-cloud-amd64`:
/// the cloud flavour boots fastest and has BPF, XDP and veth).
const SERIES: &str = "6.1.0";
/// The init's line for each binary: the marker, the binary's name and its exit code.
const RESULT: &str = "XDP-LB-OLDER-KERNEL-RESULT";
/// Every test binary of the daemon's package that runs the XDP program through
/// BPF_PROG_TEST_RUN (no namespaces, no other programs: the initramfs has none).
/// `xdp_hostile` sends 20,000 random frames there instead of a million: each run of
/// the program costs about a hundred times more under emulation.
pub const ALL: &[&str] = &[
    "xdp_program",
    "xdp_hostile",
    "xdp_nat",
    "xdp_nat6",
    "xdp_tun",
    "xdp_tun6",
    "xdp_tun_mixed",
    "state_maps",
];

/// What `cargo xtask test` runs on the older kernel: the broadest binary (every
/// forwarding path's fixtures) and the map flavours and sizes (about 4 minutes under
/// emulation; all of `ALL` take about 11).
pub const IN_TEST: &[&str] = &["xdp_program", "state_maps"];

/// Runs `tests` (binaries of `ALL`) on the older kernel; fails unless each passed.
pub fn run(tests: &[&str]) -> anyhow::Result<()> {
    for t in tests {
        if !ALL.contains(t) {
            bail!(
                "{t} is not one of the BPF test binaries: {}",
                ALL.join(", ")
            );
        }
    }
    let dir = workspace_root().join("target/older-kernel");
    let kernel = kernel(&dir)?;
    let binaries = tests
        .iter()
        .map(|t| Ok((*t, test_binary(t)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let initramfs = initramfs(&dir, &binaries)?;
    println!(
        "older kernel: booting {} to run {}",
        kernel.display(),
        tests.join(", ")
    );
    let results = boot(&kernel, &initramfs)?;
    let mut failed = Vec::new();
    for t in tests {
        match results.iter().find(|(name, _)| name == t) {
            Some((_, 0)) => {}
            Some((_, code)) => failed.push(format!("{t} (exit code {code})")),
            None => failed.push(format!("{t} (no result: the kernel stopped before it)")),
        }
    }
    if !failed.is_empty() {
        bail!("on Linux {SERIES}: {} failed", failed.join(", "));
    }
    println!(
        "older kernel: all of {} passed on Linux {SERIES}",
        tests.join(", ")
    );
    Ok(())
}

/// The newest Debian 12 kernel of the series, downloaded once into `dir`.
fn kernel(dir: &Path) -> anyhow::Result<PathBuf> {
    let package = match newest_kernel_package()? {
        Some(p) => p,
        None => {
            // No package lists yet (or stale ones): fetch them once.
            run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
            newest_kernel_package()?.with_context(|| {
                format!("no linux-image-{SERIES}-N-cloud-amd64 package in Debian's lists")
            })?
        }
    };
    let vmlinuz = dir.join(&package).join("vmlinuz");
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    let download = dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    run_cmd(
        Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&download),
    )?;
    let deb = fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = download.join("root");
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let boot = fs::read_dir(root.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the kernel package holds no /boot/vmlinuz-*")?;
    fs::create_dir_all(vmlinuz.parent().expect("has a parent"))?;
    fs::copy(&boot, &vmlinuz)?;
    fs::remove_dir_all(&download)?;
    Ok(vmlinuz)
}

/// The name of the newest `linux-image-6.1.0-N-cloud-amd64` in the package lists.
fn newest_kernel_package() -> anyhow::Result<Option<String>> {
    let search = Command::new("apt-cache")
        .args(["search", "--names-only"])
        .arg(format!(
            "^linux-image-{}-[0-9]+-cloud-amd64$",
            SERIES.replace('.', "\\.")
        ))
        .output()
        .context("apt-cache")?;
    Ok(String::from_utf8_lossy(&search.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| {
            let abi = p.strip_prefix(&format!("linux-image-{SERIES}-"))?;
            Some((abi.split('-').next()?.parse::<u32>().ok()?, p.to_string()))
        })
        .max()
        .map(|(_, package)| package))
}

/// The path of the test binary `name` of the daemon's package, built if needed.
fn test_binary(name: &str) -> anyhow::Result<PathBuf> {
    let out = cargo(&["test", "-p", "xdp-lb", "--test", name, "--no-run"])
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binary {name} failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no executable for the test {name}"))
}

/// An initramfs (gzip'd newc cpio) of busybox, the binaries, their libraries and an
/// init that runs each binary and powers off.
fn initramfs(dir: &Path, binaries: &[(&str, PathBuf)]) -> anyhow::Result<PathBuf> {
    let root = dir.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for sub in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("busybox (Debian's busybox-static) is missing")?;
    for applet in ["sh", "mount", "cat", "echo", "poweroff"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let mut init = String::from(
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         mount -t bpf bpf /sys/fs/bpf\n\
         mount -t tmpfs tmp /tmp\n\
         echo \"kernel $(cat /proc/sys/kernel/osrelease)\"\n\
         export CI=true\n\
         export XDP_LB_HOSTILE_FRAMES=20000\n",
    );
    for (name, path) in binaries {
        fs::copy(path, root.join("bin").join(name))?;
        for lib in libraries(path)? {
            let to = root.join(lib.strip_prefix("/").expect("ldd gives absolute paths"));
            fs::create_dir_all(to.parent().expect("has a parent"))?;
            fs::copy(&lib, &to)?;
        }
        init.push_str(&format!(
            // Their output too: what a test measured on this kernel (the verifier's
            // count, for one).
            "/bin/{name} --test-threads=1 --show-output\necho \"{RESULT} {name} $?\"\n"
        ));
    }
    init.push_str("poweroff -f\n");
    let init_path = root.join("init");
    fs::write(&init_path, init)?;
    run_cmd(Command::new("chmod").arg("+x").arg(&init_path))?;
    let image = dir.join("initramfs.gz");
    run_cmd(
        Command::new("sh")
            .arg("-c")
            .arg("find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > \"$0\"")
            .arg(&image)
            .current_dir(&root),
    )?;
    Ok(image)
}

/// The shared libraries `binary` loads (with the dynamic loader), as `ldd` lists them.
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Boots the kernel, echoes its console, and returns each binary's exit code.
fn boot(kernel: &Path, initramfs: &Path) -> anyhow::Result<Vec<(String, i32)>> {
    let mut qemu = Command::new("timeout")
        // A hung guest must not hang CI: the tests take about 4 minutes here.
        .args(["1800", "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max"])
        .args([
            "-m",
            "3072",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("qemu-system-x86_64 (Debian's qemu-system-x86) is missing")?;
    let console = qemu.stdout.take().expect("piped");
    let mut results = Vec::new();
    for line in BufReader::new(console).split(b'\n') {
        // The firmware's screen codes and the like: the console is read as text.
        let line: String = String::from_utf8_lossy(&line?)
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        println!("  | {line}");
        if let Some(rest) = line.split(RESULT).nth(1) {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(Ok(code))) = (words.next(), words.next().map(str::parse)) {
                results.push((name.to_string(), code));
            }
        }
    }
    let status = qemu.wait()?;
    if !status.success() {
        bail!("qemu ended with {status}");
    }
    Ok(results)
}
