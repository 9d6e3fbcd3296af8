//! `cargo xtask test`: the whole suite, from a fresh machine.

use std::{process::ExitCode, time::Instant};

use clap::{Args, ValueEnum};

use crate::{
    setup,
    target::Target,
    workspace::{cargo, workspace_root},
};

#[derive(Args)]
pub struct TestArgs {
    /// Skip the static builds, the package checks and the VM tests (they boot real
    /// kernels under TCG).
    #[arg(long, conflicts_with = "vm_only")]
    pub no_vm: bool,
    /// Only the static builds, the package checks and the VM tests.
    #[arg(long)]
    pub vm_only: bool,
    /// Only these stages, in the suite's order (comma-separated), e.g.
    /// `--stages lint,host,packages`.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["no_vm", "vm_only"])]
    pub stages: Vec<Stage>,
    /// The whole kernel matrix: also the fast-path 6.1 kernel and the PREEMPT_RT fast-path
    /// 6.12 and 7.2 kernels (three more kernel builds), the other preemption models of the
    /// fast-path and stock kernels, and Debian's 6.1 PREEMPT_RT image.
    #[arg(long)]
    pub full: bool,
    /// Only the guests whose name contains this (e.g. `6.12-full`, `aarch64`); skips the
    /// package checks.
    #[arg(long, value_name = "NAME")]
    pub guest: Option<String>,
    /// Pass even if tests skipped themselves for want of root or of the kernel's BTF; they
    /// are still counted.
    #[arg(long)]
    pub allow_skips: bool,
    /// Prove setup on a clean root filesystem: a debootstrapped Debian bookworm chroot with
    /// a fresh clone of HEAD runs `cargo xtask setup`, then the lint, host and package
    /// stages (not the VM stage).
    #[arg(long, conflicts_with_all = ["no_vm", "vm_only", "stages", "full", "guest", "allow_skips"])]
    pub fresh_root: bool,
}

/// The suite's stages, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Stage {
    /// rustfmt, clippy on the host crates and on the eBPF crate's target.
    Lint,
    /// `cargo test`: unit tests and real BPF on this kernel.
    Host,
    /// The static binaries and packages, each package checked.
    Packages,
    /// The guest matrix under qemu.
    Vm,
}

impl TestArgs {
    fn selected(&self) -> Vec<Stage> {
        let mut stages = if !self.stages.is_empty() {
            self.stages.clone()
        } else if self.no_vm {
            vec![Stage::Lint, Stage::Host]
        } else if self.vm_only {
            vec![Stage::Packages, Stage::Vm]
        } else {
            vec![Stage::Lint, Stage::Host, Stage::Packages, Stage::Vm]
        };
        stages.sort();
        stages.dedup();
        stages
    }
}

/// The test binaries' skip log: tests that lack root or the kernel's BTF append their names.
const SKIP_LOG: &str = "target/test-skips.txt";

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    if args.fresh_root {
        return crate::fresh_root::run();
    }
    let path = setup::ensure()?;
    let stages = args.selected();
    let mut failed = Vec::new();

    if stages.contains(&Stage::Lint) {
        let started = stage_start(
            "lint (rustfmt, clippy on the host crates and on the eBPF crate's target, the layers)",
        );
        let mut fmt = cargo(&path);
        fmt.args(["fmt", "--all", "--", "--check"]);
        let mut clippy = cargo(&path);
        clippy.args(["clippy", "--workspace", "--exclude", "kcmp-trace-ebpf"]);
        clippy.args(["--all-targets", "--", "-D", "warnings"]);
        // The eBPF crate only builds for its own target, with the nightly toolchain.
        let mut clippy_ebpf = std::process::Command::new("rustup");
        clippy_ebpf
            .current_dir(workspace_root().join("kcmp-trace-ebpf"))
            .env("PATH", &path)
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .args(["run", "nightly", "cargo", "clippy", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"]);
        let before = failed.len();
        for (name, mut lint) in [
            ("cargo fmt", fmt),
            ("clippy", clippy),
            ("clippy (eBPF)", clippy_ebpf),
        ] {
            if !lint.status()?.success() {
                failed.push(name);
            }
        }
        if let Err(e) = crate::layers::check() {
            eprintln!("layers: docs/architecture.md's picture does not hold:\n{e:#}");
            failed.push("layers");
        }
        stage_end("lint", started, failed.len() == before);
    }
    if stages.contains(&Stage::Host) {
        let started = stage_start("unit and host tests (real BPF on this kernel)");
        let before = failed.len();
        let skip_log = workspace_root().join(SKIP_LOG);
        let _ = std::fs::remove_file(&skip_log);
        // Tests that need root or the kernel's BTF are #[ignore = "needs ..."] so that plain
        // `cargo test` shows them as not run; the suite runs them.
        let status = cargo(&path)
            .args(["test", "--workspace", "--exclude", "kcmp-trace-ebpf"])
            .args(["--", "--include-ignored"])
            .env("KCMP_TRACE_SKIP_LOG", &skip_log)
            .status()?;
        if !status.success() {
            failed.push("cargo test");
        }
        let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
        let skipped: Vec<&str> = skipped.lines().collect();
        if !skipped.is_empty() {
            eprintln!(
                "xtask: {} tests skipped (no root, or no kernel BTF): {}",
                skipped.len(),
                skipped.join(", ")
            );
            if !args.allow_skips {
                failed.push("skipped tests (run as root, or pass --allow-skips)");
            }
        }
        stage_end("unit and host tests", started, failed.len() == before);
    }
    // With --guest the packages are not built: the guests need only their own binaries.
    let packages = stages.contains(&Stage::Packages) && args.guest.is_none();
    if packages {
        let started = stage_start("packages (cargo xtask dist, then each package checked)");
        crate::dist::run(&path)?;
        let mut passed = true;
        for arch in Target::ALL {
            let result = crate::dist::verify(arch);
            match &result {
                Ok(()) => eprintln!("package {} ... ok", arch.deb_arch()),
                Err(e) => eprintln!("package {} ... FAILED: {e:#}", arch.deb_arch()),
            }
            passed &= result.is_ok();
        }
        if !passed {
            failed.push("packages");
        }
        stage_end("packages", started, passed);
    }
    if stages.contains(&Stage::Vm) {
        let started = stage_start(&format!(
            "VM tests under qemu: {}",
            crate::vmtest::guests(args.full).join(", ")
        ));
        if !packages {
            crate::dist::build_static(
                &path,
                &crate::vmtest::arches(args.full, args.guest.as_deref()),
            )?;
        }
        let (passed, vm_failed) = crate::vmtest::run(args.full, args.guest.as_deref());
        if !vm_failed.is_empty() {
            failed.push("vm tests");
        }
        println!("vm: {passed} passed, {} failed", vm_failed.len());
        // Named again at the end, where a truncated log still shows them.
        for name in &vm_failed {
            println!("vm test {name} ... FAILED (its error is above)");
        }
        stage_end("VM tests", started, vm_failed.is_empty());
    }

    if failed.is_empty() {
        eprintln!("xtask: all test stages passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: failed stages: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

fn stage_start(what: &str) -> Instant {
    eprintln!("xtask: {what}");
    Instant::now()
}

fn stage_end(stage: &str, started: Instant, passed: bool) {
    let verdict = if passed { "passed" } else { "FAILED" };
    eprintln!(
        "xtask: {stage} {verdict} in {}",
        crate::workspace::minutes_and_seconds(started.elapsed())
    );
}
