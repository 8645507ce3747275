//! Builds the XDP programs (nightly, `bpfel-unknown-none`, BTF) into OUT_DIR so the
//! daemon can embed them: one binary is all a host needs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    commit();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("xdp-lb has no parent directory"))?
        .join("xdp-lb-ebpf");
    let root = root.to_str().context("non-UTF-8 path to xdp-lb-ebpf")?;
    let package = Package {
        name: "xdp-lb-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the XDP program failed: the compiler's output is in the cargo:warning \
         lines above; if the nightly rust-src component or bpf-linker is missing, run \
         `cargo xtask setup`",
    )
}

/// The commit being built, for `--version` and `xdp_lb_build_info` (`unknown` outside a
/// git checkout, e.g. from a source package).
fn commit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=XDP_LB_COMMIT={commit}");
    for path in [".git/HEAD", ".git/refs/heads"] {
        if root.join(path).exists() {
            println!("cargo:rerun-if-changed={}", root.join(path).display());
        }
    }
}
