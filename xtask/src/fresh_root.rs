//! `cargo xtask test --fresh-root`: setup proven on a clean root filesystem.
//!
//! A debootstrapped Debian bookworm (minbase, so nothing the project needs is there by
//! chance) gets a fresh clone of HEAD and runs `cargo xtask setup`, which must write nothing
//! on stdout, then the lint, host and package stages, each timed. Only the machine's own
//! prerequisites are there beforehand: rustup and its toolchains (the host's `/root/.rustup`
//! and `/root/.cargo`, bind-mounted), and the Debian packages Rust itself needs before xtask
//! can build. The network is the host's: its resolv.conf and hosts, and its CA bundle for
//! cargo. The chroot has its own cache root, so setup builds its own bpf-linker there.
//!
//! The debootstrap base is cached as a tarball under the cache root, keyed by what it is
//! made of; each run unpacks it afresh into `target/fresh-root/root`, which is kept until
//! the next run for inspection. Every mount lives in a private mount namespace of this
//! process, so the kernel removes them all when it exits, however it exits.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use crate::{
    apt::ensure_packages,
    workspace::{cache_root, fresh_dir, hex, is_root, logged, minutes_and_seconds, workspace_root},
};

/// The Debian release of every debootstrapped root: this check's, and the deployed guests'.
pub const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
/// What a Rust toolchain needs of Debian before any crate builds, xtask included: a C
/// linker with its C library, and CA certificates for cargo's HTTPS (the README's
/// prerequisites, with rustup).
const RUST_NEEDS: &[&str] = &["gcc", "libc6-dev", "ca-certificates"];
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// Where the clone sits inside the root.
const CLONE: &str = "/src/kcmp-trace";
/// The host's CA bundle, inside the root.
const HOST_CAS: &str = "/etc/ssl/host-ca-certificates.crt";
/// The machine's own prerequisites, shared with the chroot at the same paths.
const RUST_TOOLCHAINS: &[&str] = &["/root/.rustup", "/root/.cargo"];

const SETUP: &str = "setup";
/// What runs in the chroot, in order: a name and `cargo xtask` arguments.
const PARTS: &[(&str, &[&str])] = &[
    (SETUP, &["setup"]),
    ("lint", &["test", "--stages", "lint"]),
    ("unit and host tests", &["test", "--stages", "host"]),
    ("packages", &["test", "--stages", "packages"]),
];

fn step(msg: &str) {
    eprintln!("fresh-root: {msg}");
}

pub fn run() -> Result<ExitCode> {
    if !is_root() {
        bail!("--fresh-root needs root (debootstrap, chroot and mounts)");
    }
    // First, while this process has one thread: unshare() refuses a threaded caller.
    private_mount_namespace()?;
    let dir = workspace_root().join("target/fresh-root");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut timings = Vec::new();
    let mut timed = |what: &str, started: Instant| {
        let line = format!("{what}: {}", minutes_and_seconds(started.elapsed()));
        step(&line);
        timings.push(line);
    };

    let started = Instant::now();
    let (base, built) = debootstrap_base(&dir)?;
    let verb = if built { "debootstrap" } else { "cached" };
    timed(&format!("base {} ({verb})", base.display()), started);

    let started = Instant::now();
    let root = unpack(&base, &dir.join("root"))?;
    let commit = clone_head(&root)?;
    enter_ready(&root)?;
    timed(&format!("unpack, clone {commit}, mounts"), started);

    let mut failed = None;
    for (name, args) in PARTS {
        step(&format!("{name}: cargo xtask {}", args.join(" ")));
        let started = Instant::now();
        let mut cmd = in_chroot(&root, args);
        let running = || format!("running chroot {}", root.display());
        let passed = if *name == SETUP {
            // Setup runs before the tool in `cargo xtask run -- watch`, whose stdout is the
            // tool's: on a fresh machine, where setup does the most, it must write none.
            let out = cmd
                .stderr(Stdio::inherit())
                .output()
                .with_context(running)?;
            let stray = String::from_utf8_lossy(&out.stdout);
            if !stray.is_empty() {
                step(&format!("setup wrote on stdout:\n{stray}"));
            }
            out.status.success() && stray.is_empty()
        } else {
            cmd.status().with_context(running)?.success()
        };
        let verdict = if passed { "passed" } else { "FAILED" };
        timed(&format!("{name} {verdict}"), started);
        if !passed {
            failed = Some(*name);
            break;
        }
    }

    let summary = dir.join("timings.txt");
    fs::write(&summary, timings.join("\n") + "\n")
        .with_context(|| format!("writing {}", summary.display()))?;
    step(&format!(
        "timings in {}; the root stays in {} until the next run",
        summary.display(),
        root.display()
    ));
    match failed {
        None => {
            step("setup and the lint, host and package stages passed on a fresh root");
            Ok(ExitCode::SUCCESS)
        }
        Some(part) => {
            step(&format!("{part} failed on a fresh root"));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Moves this process into a mount namespace of its own whose mounts propagate nowhere:
/// they end with the process, on every exit path, and the host never sees them.
fn private_mount_namespace() -> Result<()> {
    // SAFETY: unshare touches only this process's namespaces; no other thread exists yet.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
    }
    mount(&["--make-rprivate", "/"])
}

fn mount(args: &[&str]) -> Result<()> {
    let status = Command::new("mount")
        .args(args)
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!("mount {} failed: {status}", args.join(" "));
    }
    Ok(())
}

fn sources_list() -> String {
    format!(
        "deb {MIRROR} {SUITE} main\n\
         deb {MIRROR} {SUITE}-updates main\n\
         deb {SECURITY_MIRROR} {SUITE}-security main\n"
    )
}

/// What [`debootstrap`] makes a root of: part of the key of every cached root built on it.
pub fn debootstrap_recipe(include: &[&str]) -> String {
    format!(
        "debootstrap --variant={VARIANT} --include={} --arch=amd64 {SUITE} {MIRROR}\n{}",
        include.join(","),
        sources_list()
    )
}

/// Debootstraps a minimal Debian (minbase, amd64) with the `include` packages into `tree`,
/// and gives it the suite's apt sources, updates and security included. What debootstrap
/// prints goes to `log`.
pub fn debootstrap(tree: &Path, include: &[&str], log: &Path) -> Result<()> {
    ensure_packages(&["debootstrap"])?;
    logged(
        Command::new("debootstrap")
            .arg(format!("--variant={VARIANT}"))
            .arg(format!("--include={}", include.join(",")))
            .args(["--arch=amd64", SUITE])
            .arg(tree)
            .arg(MIRROR),
        log,
    )?;
    fs::write(tree.join("etc/apt/sources.list"), sources_list())
        .context("writing the root's apt sources")
}

/// The debootstrapped base as a tarball, built on first use; says whether it was built now.
fn debootstrap_base(work: &Path) -> Result<(PathBuf, bool)> {
    let recipe = debootstrap_recipe(RUST_NEEDS);
    let key = &hex(&Sha256::digest(recipe.as_bytes()))[..12];
    let cache = cache_root().join("fresh-root");
    let tarball = cache.join(format!("{SUITE}-{VARIANT}-amd64-{key}.tar"));
    if tarball.is_file() {
        return Ok((tarball, false));
    }
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    // Per process, so two first runs at once do not share a half-made tree.
    let tmp = fresh_dir(&cache.join(format!(".tmp-{key}-{}", std::process::id())))?;
    let tree = tmp.join("root");
    let log = work.join("debootstrap.log");
    let _ = fs::remove_file(&log);
    step(&format!(
        "debootstrap {SUITE} ({VARIANT}) into {} (a few minutes, once; log: {})",
        tree.display(),
        log.display()
    ));
    debootstrap(&tree, RUST_NEEDS, &log)?;
    let partial = tmp.join("base.tar");
    logged(
        Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .args(["--numeric-owner", "-cf"])
            .arg(&partial)
            .arg("."),
        &log,
    )?;
    fs::rename(&partial, &tarball)
        .with_context(|| format!("moving the base to {}", tarball.display()))?;
    fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    Ok((tarball, true))
}

/// A fresh copy of the base at `root`, after the last run's copy is gone.
fn unpack(base: &Path, root: &Path) -> Result<PathBuf> {
    // Removing a tree with something mounted in it would remove what is mounted.
    if let Some(mounted) = mounts_under(root)?.first() {
        bail!(
            "{mounted} is mounted inside {}: unmount it before a new run",
            root.display()
        );
    }
    let root = fresh_dir(root)?;
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "-xf"])
        .arg(base)
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("unpacking {} failed: {status}", base.display());
    }
    Ok(root)
}

/// The mount points at or below `dir`, as this process sees them.
fn mounts_under(dir: &Path) -> Result<Vec<String>> {
    let table = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    Ok(mount_points_under(&table, &dir.to_string_lossy()))
}

/// The mount points in a mountinfo table at or below `dir`.
fn mount_points_under(mountinfo: &str, dir: &str) -> Vec<String> {
    // mountinfo escapes a space in a path as \040.
    let dir = dir.trim_end_matches('/').replace(' ', "\\040");
    mountinfo
        .lines()
        // The mount point is the fifth field.
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| {
            m.strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(str::to_owned)
        .collect()
}

/// Clones this checkout's HEAD (committed work only, as a fresh clone has) into the root.
fn clone_head(root: &Path) -> Result<String> {
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git")
            .current_dir(workspace_root())
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .context("running git")?;
        if !out.status.success() {
            bail!("git {} failed: {}", args.join(" "), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        step(&format!(
            "uncommitted changes are not in the check: it runs commit {commit}"
        ));
    }
    let clone = root.join(CLONE.trim_start_matches('/'));
    let clone = clone.to_string_lossy();
    git(&["clone", "--quiet", "--no-checkout", ".", &clone])?;
    git(&["-C", &clone, "checkout", "--quiet", "--detach", &commit])?;
    Ok(commit)
}

/// The host's network settings, and the mounts the stages need: /proc, /sys, /dev and the
/// Rust toolchains. tracefs is left to setup, which must mount it itself.
fn enter_ready(root: &Path) -> Result<()> {
    let inside = |path: &str| root.join(path.trim_start_matches('/'));
    // debootstrap writes no /etc/hosts (an installer does), and `localhost` must resolve.
    for file in ["/etc/resolv.conf", "/etc/hosts"] {
        let _ = fs::remove_file(inside(file));
        fs::copy(file, inside(file)).with_context(|| format!("copying {file}"))?;
    }
    // A network that intercepts TLS adds its CA to the host's bundle, which Debian's bundle
    // in the root lacks: cargo gets the host's (CARGO_HTTP_CAINFO).
    let host_cas = std::env::var_os("SSL_CERT_FILE").map_or_else(
        || PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        PathBuf::from,
    );
    fs::copy(&host_cas, inside(HOST_CAS))
        .with_context(|| format!("copying {}", host_cas.display()))?;
    let target = |path: &str| -> Result<String> {
        let dir = inside(path);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir.to_string_lossy().into_owned())
    };
    mount(&["-t", "proc", "proc", &target("/proc")?])?;
    mount(&["--bind", "/sys", &target("/sys")?])?;
    mount(&["--rbind", "/dev", &target("/dev")?])?;
    for dir in RUST_TOOLCHAINS {
        mount(&["--bind", dir, &target(dir)?])?;
    }
    Ok(())
}

/// `cargo xtask ARGS` in the clone, as root in the chroot, with nothing of this process's
/// environment but the terminal: an environment a fresh login would have.
fn in_chroot(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.env_clear()
        .envs(std::env::var_os("TERM").map(|t| ("TERM", t)))
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env(
            "PATH",
            "/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("RUSTUP_HOME", RUST_TOOLCHAINS[0])
        .env("CARGO_HOME", RUST_TOOLCHAINS[1])
        .env("CARGO_HTTP_CAINFO", HOST_CAS)
        // The chroot's own, not the host's: setup builds bpf-linker afresh.
        .env("KCMP_TRACE_CACHE", "/var/cache/kcmp-trace")
        .arg(root)
        .args(["/usr/bin/env", "-C", CLONE, "cargo", "xtask"])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_inside_the_root_are_found_and_its_neighbours_are_not() {
        let table = "\
22 1 0:21 / /proc rw - proc proc rw
90 1 0:5 / /work/t/root/dev rw - devtmpfs udev rw
91 90 0:6 / /work/t/root/dev/pts rw - devpts devpts rw
92 1 0:7 / /work/t/root-old rw - tmpfs tmpfs rw
93 1 0:8 / /work/t/my\\040root/proc rw - proc proc rw
";
        assert_eq!(
            mount_points_under(table, "/work/t/root/"),
            ["/work/t/root/dev", "/work/t/root/dev/pts"]
        );
        assert_eq!(
            mount_points_under(table, "/work/t/my root"),
            ["/work/t/my\\040root/proc"]
        );
        assert!(mount_points_under(table, "/work/t/other").is_empty());
    }
}
