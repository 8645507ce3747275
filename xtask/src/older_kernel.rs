//! The tests on an older kernel than the machine's own: Debian 12's Linux 6.1, the
//! oldest kernel this machine's package registry serves and the one most edge hosts
//! of this kind run. A verifier's rules change between kernels (6.1 refused a program
//! that 6.18 accepts), so a test on the newest kernel alone says little about what a
//! host will load.
//!
//! The kernel boots under qemu with a small initramfs (busybox, and the modules that
//! mount the host's file system read-only over 9p, with a tmpfs overlay for writes).
//! Its init loads the network modules the labs use, then runs each test binary in a
//! chroot of the host's file system, so every path is the same as on the host and
//! the network-namespace tests find `ip`, python and the daemon where they expect.
//! It prints a result line per binary, which is all that is read back. Software
//! emulation (TCG): KVM is nested on these machines and hung at boot, and TCG boots
//! in seconds (the tests run about ten times slower than natively).
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{cargo, run_cmd, setup, workspace_root};

/// The kernel series and flavour, as Debian 12 names its packages
/// (`linux-image-6.1.0-N-amd64`: the generic flavour, whose modules include 9p).
const SERIES: &str = "6.1.0";
const FLAVOUR: &str = "amd64";
/// The init's line for each binary: the marker, the binary's name and its exit code.
const RESULT: &str = "XDP-LB-OLDER-KERNEL-RESULT";
/// Every test binary of the daemon's package that runs the XDP program through
/// BPF_PROG_TEST_RUN. `xdp_hostile` sends 20,000 random frames there instead of a
/// million: each run of the program costs about a hundred times more under
/// emulation.
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
/// Mounting the host's file system: virtio, 9p and overlayfs (with what they need, as
/// `modules.dep` says), put in the initramfs; every other module loads from the host's
/// copy of the kernel package once it is mounted.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];
/// What the labs build: veth pairs, bridges, VLANs, tunnels, nftables (whose
/// libcrc32c needs a crc32c first: a soft dependency `modules.dep` does not list).
const LAB_MODULES: &[&str] = &[
    "veth",
    "bridge",
    "8021q",
    "dummy",
    "tun",
    "ipip",
    "ip6_tunnel",
    "crc32c_generic",
    "nf_tables",
];

/// What `cargo xtask test` runs on the older kernel: the broadest binary (every
/// forwarding path's fixtures) and the map flavours and sizes (about 5 minutes under
/// emulation; all of `ALL` take about 15).
pub const IN_TEST: &[&str] = &["xdp_program", "state_maps"];

/// Runs `tests` on the older kernel; fails unless each passed. A name of `ALL` is a
/// BPF test binary of the daemon's package; one ending in `_netns` is a
/// network-namespace test of the end-to-end package (about fifteen times its
/// native time here).
pub fn run(tests: &[&str]) -> anyhow::Result<()> {
    let mut binaries = Vec::new();
    for t in tests {
        let package = if ALL.contains(t) {
            "xdp-lb"
        } else if t.ends_with("_netns") {
            "xdp-lb-tests"
        } else {
            bail!(
                "{t} is neither a BPF test binary ({}) nor a network-namespace test",
                ALL.join(", ")
            );
        };
        binaries.push((*t, test_binary(package, t)?));
    }
    if binaries.iter().any(|(t, _)| t.ends_with("_netns")) {
        // The labs build the daemon on first use: built here, that is a no-op there.
        run_cmd(&mut cargo(&[
            "build", "-q", "-p", "xdp-lb", "--bin", "xdp-lb",
        ]))?;
    }
    let dir = workspace_root().join("target/older-kernel");
    let kernel = kernel(&dir)?;
    let initramfs = initramfs(&dir, &kernel, &binaries)?;
    println!(
        "older kernel: booting {} to run {}",
        kernel.vmlinuz.display(),
        tests.join(", ")
    );
    let results = boot(&kernel.vmlinuz, &initramfs)?;
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

/// A kernel package unpacked: its image, and its modules' directory (one release).
struct Kernel {
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// The newest Debian 12 kernel of the series, downloaded and unpacked once into
/// `dir`, with the module index busybox's modprobe reads.
fn kernel(dir: &Path) -> anyhow::Result<Kernel> {
    let package = match newest_kernel_package()? {
        Some(p) => p,
        None => {
            // No package lists yet (or stale ones): fetch them once.
            run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
            newest_kernel_package()?.with_context(|| {
                format!("no linux-image-{SERIES}-N-{FLAVOUR} package in Debian's lists")
            })?
        }
    };
    let release = package.trim_start_matches("linux-image-").to_string();
    let root = dir.join(&package);
    let kernel = Kernel {
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        modules: root.join("lib/modules").join(&release),
    };
    if kernel.modules.join("modules.dep").exists() {
        return Ok(kernel);
    }
    let _ = fs::remove_dir_all(&root);
    setup::unpack_debian_package(&package, &root)?;
    run_cmd(
        Command::new("busybox")
            .args(["depmod", "-b"])
            .arg(&root)
            .arg(&release),
    )?;
    Ok(kernel)
}

/// The name of the newest `linux-image-6.1.0-N-amd64` in the package lists.
fn newest_kernel_package() -> anyhow::Result<Option<String>> {
    let search = Command::new("apt-cache")
        .args(["search", "--names-only"])
        .arg(format!(
            "^linux-image-{}-[0-9]+-{FLAVOUR}$",
            SERIES.replace('.', "\\.")
        ))
        .output()
        .context("apt-cache")?;
    Ok(String::from_utf8_lossy(&search.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| {
            let abi = p.strip_prefix(&format!("linux-image-{SERIES}-"))?;
            let (number, flavour) = abi.split_once('-')?;
            (flavour == FLAVOUR).then_some((number.parse::<u32>().ok()?, p.to_string()))
        })
        .max()
        .map(|(_, package)| package))
}

/// The path of the test binary `name` of `package`, built if needed.
fn test_binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    let out = cargo(&["test", "-p", package, "--test", name, "--no-run"])
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

/// An initramfs (gzip'd newc cpio) of busybox, the modules that mount the host's
/// file system, and an init that runs each binary in a chroot of it and powers off.
/// No tmpfs over the chroot's /tmp: the workspace may live there (CI's clone does),
/// and the overlay already takes the guest's writes.
fn initramfs(dir: &Path, kernel: &Kernel, binaries: &[(&str, PathBuf)]) -> anyhow::Result<PathBuf> {
    let root = dir.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for sub in ["bin", "sbin", "usr/bin", "usr/sbin", "lib/modules"] {
        fs::create_dir_all(root.join(sub))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("busybox (Debian's busybox-static) is missing")?;
    let release = kernel.modules.file_name().expect("a release directory");
    let modules = root.join("lib/modules").join(release);
    fs::create_dir_all(&modules)?;
    fs::copy(
        kernel.modules.join("modules.dep"),
        modules.join("modules.dep"),
    )?;
    for file in boot_module_files(&kernel.modules)? {
        let to = modules.join(&file);
        fs::create_dir_all(to.parent().expect("has a parent"))?;
        fs::copy(kernel.modules.join(&file), to)?;
    }
    let workspace = workspace_root();
    let mut init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s\n\
         mkdir -p /proc /sys /dev /host /upper /merged\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         for m in {boot}; do modprobe $m || echo \"modprobe $m failed\"; done\n\
         mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 host /host\n\
         mount --bind /host{modules} /lib/modules/{release}\n\
         echo /sbin/modprobe > /proc/sys/kernel/modprobe\n\
         for m in {lab}; do modprobe $m || echo \"modprobe $m failed\"; done\n\
         mount -t tmpfs upper /upper\n\
         mkdir -p /upper/data /upper/work\n\
         mount -t overlay overlay \
           -o lowerdir=/host,upperdir=/upper/data,workdir=/upper/work /merged\n\
         mount -t proc proc /merged/proc\n\
         mount -t sysfs sys /merged/sys\n\
         mount -t devtmpfs dev /merged/dev\n\
         mount -t bpf bpf /merged/sys/fs/bpf\n\
         mount -t cgroup2 cgroup2 /merged/sys/fs/cgroup\n\
         mount -t tmpfs run /merged/run\n\
         echo \"kernel $(cat /proc/sys/kernel/osrelease)\"\n",
        boot = BOOT_MODULES.join(" "),
        lab = LAB_MODULES.join(" "),
        modules = kernel.modules.display(),
        release = release.to_string_lossy(),
    );
    for (name, path) in binaries {
        // Their output too: what a test measured on this kernel (the verifier's
        // count, for one).
        init.push_str(&format!(
            "chroot /merged /bin/sh -c 'cd {workspace} && \
               export CI=true XDP_LB_HOSTILE_FRAMES=20000 HOME={home} PATH={path} && \
               ip link set lo up && \
               {binary} --test-threads=1 --show-output'\n\
             echo \"{RESULT} {name} $?\"\n",
            workspace = workspace.display(),
            binary = path.display(),
            // The host's, so the labs' cargo finds rustc as on the host.
            home = std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            path = std::env::var("PATH").context("PATH is not set")?,
        ));
    }
    init.push_str("poweroff -f\n");
    let init_path = root.join("init");
    fs::write(&init_path, init)?;
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))?;
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

/// The module files (relative to `modules`) of `BOOT_MODULES` and all they depend on.
fn boot_module_files(modules: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dep = fs::read_to_string(modules.join("modules.dep"))?;
    let mut files = Vec::new();
    for module in BOOT_MODULES {
        let line = dep
            .lines()
            .find(|l| {
                l.split_once(':').is_some_and(|(file, _)| {
                    Path::new(file).file_stem().is_some_and(|s| s == *module)
                })
            })
            .with_context(|| format!("module {module} is not in modules.dep"))?;
        for file in line.split(|c: char| c == ':' || c.is_whitespace()) {
            if !file.is_empty() && !files.iter().any(|f: &PathBuf| f == Path::new(file)) {
                files.push(PathBuf::from(file));
            }
        }
    }
    Ok(files)
}

/// Boots the kernel, echoes its console, and returns each binary's exit code.
fn boot(kernel: &Path, initramfs: &Path) -> anyhow::Result<Vec<(String, i32)>> {
    let mut qemu = Command::new("timeout")
        // A hung guest must not hang CI: `cargo xtask test`'s take about 5 minutes.
        .args(["3600", "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max"])
        .args([
            "-m",
            "3072",
            // Two CPUs, as this machine has: per-CPU maps and the LRU's per-CPU free
            // lists behave as on a real host (with one, a flood evicted nothing).
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        // The host's file system, read-only: the guest's writes go to its overlay.
        .args([
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        ])
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
