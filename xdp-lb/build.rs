//! Builds the XDP programs (nightly, `bpfel-unknown-none`, BTF) into OUT_DIR so the
//! daemon can embed them: one binary is all a host needs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
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
