//! Everything a fresh machine needs, installed idempotently: each step says in one line on
//! stderr what it does and skips what is already there. What the tools it runs print goes to
//! a log file (stdout belongs to the command setup runs before, e.g. `watch`); a step that
//! fails shows the log's path and its last lines.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    apt::ensure_packages,
    target::Target,
    workspace::{cache_root, logged},
};

/// Debian packages, with why we need them.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links against LLVM 22 (the nightly's LLVM)",
    ),
    ("libpolly-22-dev", "bpf-linker's LLVM link line"),
    ("libzstd-dev", "bpf-linker's LLVM link line"),
    ("zlib1g-dev", "bpf-linker's LLVM link line"),
    ("bpftrace", "peer tool the tests cross-check counts with"),
    ("bpftool", "tests check no program is left loaded"),
    (
        "prometheus",
        "the daemon tests scrape with a real Prometheus server",
    ),
    ("qemu-system-x86", "VM tests boot real kernels"),
    (
        "qemu-system-arm",
        "VM tests boot arm64 kernels (qemu-system-aarch64)",
    ),
    (
        "musl-tools",
        "musl-gcc: ring's C code in the static x86_64 binary",
    ),
    (
        "gcc-aarch64-linux-gnu",
        "ring's C code and the link of the static aarch64 binary",
    ),
    (
        "libc6-dev-arm64-cross",
        "the aarch64 C headers ring's C code includes (gcc-aarch64-linux-gnu only recommends it)",
    ),
    ("file", "dist checks its binaries are static"),
    ("systemd", "systemd-analyze verify checks the packaged unit"),
    (
        "man-db",
        "man, with which systemd-analyze verify looks up the unit's Documentation=",
    ),
    (
        "manpages-dev",
        "kcmp(2), the unit's Documentation= page that systemd-analyze verify looks up",
    ),
    ("busybox-static", "the VM initramfs"),
    ("cpio", "the VM initramfs"),
    (
        "debootstrap",
        "the Debian root of the deployed-daemon guests, and test --fresh-root",
    ),
    ("util-linux", "setpriv, for the unprivileged-user tests"),
    ("passwd", "useradd and groupadd, for the socket-group test"),
    ("openssl", "a test certificate for the daemon's TLS test"),
    ("curl", "HTTPS and Unix-socket requests in the daemon tests"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";

fn step(msg: &str) {
    eprintln!("setup: {msg}");
}

/// Runs one of setup's tools with its output in the log.
fn quietly(cmd: &mut Command) -> anyhow::Result<()> {
    logged(cmd, &crate::workspace::setup_log())
}

fn rust_src() -> anyhow::Result<()> {
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("rustup is needed to build the eBPF programs")?;
    if !String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        bail!(
            "the `nightly` Rust toolchain is missing (needed for -Z build-std=core on the BPF target)"
        );
    }
    let comps = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup component list")?;
    if String::from_utf8_lossy(&comps.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    step("rustup component add rust-src --toolchain nightly");
    quietly(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker built against LLVM 22, cached by version and LLVM major.
fn bpf_linker() -> anyhow::Result<PathBuf> {
    let root = cache_root().join(format!("bpf-linker-{BPF_LINKER_VERSION}-llvm{LLVM_MAJOR}"));
    let bin = root.join("bin");
    if bin.join("bpf-linker").is_file() {
        return Ok(bin);
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} into {} (about 2 min, once)",
        root.display()
    ));
    let llvm = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    quietly(
        Command::new(cargo)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .arg("--root")
            .arg(&root)
            .env("PATH", path)
            .env(format!("LLVM_SYS_{LLVM_MAJOR}1_PREFIX"), &llvm),
    )
    .context("building bpf-linker")?;
    Ok(bin)
}

/// The static binaries' Rust targets.
fn rust_targets() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup target list")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for target in Target::ALL {
        if !installed.lines().any(|l| l.trim() == target.triple()) {
            step(&format!("rustup target add {}", target.triple()));
            quietly(Command::new("rustup").args(["target", "add", target.triple()]))?;
        }
    }
    Ok(())
}

/// arm64 as a foreign architecture, so that apt can download its kernels and busybox.
fn arm64_packages() -> anyhow::Result<()> {
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .context("dpkg --print-foreign-architectures")?;
    if String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|a| a.trim() == "arm64")
    {
        return Ok(());
    }
    step("dpkg --add-architecture arm64 && apt-get update");
    quietly(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    quietly(Command::new("apt-get").args(["update", "-q"]))
}

fn tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    step("mount -t tracefs nodev /sys/kernel/tracing");
    quietly(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
        .context("mounting tracefs")
}

/// Runs every step; returns the PATH that builds must use (bpf-linker first).
pub fn ensure() -> anyhow::Result<String> {
    let log = crate::workspace::setup_log();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&log, "").with_context(|| format!("starting {}", log.display()))?;
    let packages: Vec<&str> = APT_PACKAGES.iter().map(|(p, _)| *p).collect();
    ensure_packages(&packages)?;
    arm64_packages()?;
    rust_src()?;
    rust_targets()?;
    let linker = bpf_linker()?;
    tracefs()?;
    let path = format!(
        "{}:{}",
        linker.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    step("ready");
    Ok(path)
}

/// Why each package is installed, for `cargo xtask setup --list`.
pub fn describe() -> impl Iterator<Item = String> {
    APT_PACKAGES.iter().map(|(p, why)| format!("{p:<18} {why}"))
}
