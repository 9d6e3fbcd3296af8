//! `cargo xtask test`: the whole suite, from a fresh machine.

use std::process::ExitCode;

use clap::Args;

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
    /// The whole kernel matrix: also the PREEMPT_RT fast-path kernel (an extra kernel
    /// build), preempt=none, and Debian's 6.1 PREEMPT_RT image.
    #[arg(long)]
    pub full: bool,
    /// Only the guests whose name contains this (e.g. `6.12-full`, `aarch64`); skips the
    /// package checks.
    #[arg(long, value_name = "NAME")]
    pub guest: Option<String>,
    /// Pass even if privileged tests skipped themselves (not root); they are still counted.
    #[arg(long)]
    pub allow_skips: bool,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let path = setup::ensure()?;
    let mut failed = Vec::new();

    if !args.vm_only {
        eprintln!(
            "xtask: lint (rustfmt, clippy on the host crates and on the eBPF crate's target)"
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
        for (name, mut lint) in [
            ("cargo fmt", fmt),
            ("clippy", clippy),
            ("clippy (eBPF)", clippy_ebpf),
        ] {
            if !lint.status()?.success() {
                failed.push(name);
            }
        }
        eprintln!("xtask: unit and host tests (real BPF on this kernel)");
        let skip_log = workspace_root().join("target/test-skips.txt");
        let _ = std::fs::remove_file(&skip_log);
        let status = cargo(&path)
            .args(["test", "--workspace", "--exclude", "kcmp-trace-ebpf"])
            .env("KCMP_TRACE_SKIP_LOG", &skip_log)
            .status()?;
        if !status.success() {
            failed.push("cargo test");
        }
        let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
        let skipped: Vec<&str> = skipped.lines().collect();
        if !skipped.is_empty() {
            eprintln!(
                "xtask: {} privileged tests skipped (not root): {}",
                skipped.len(),
                skipped.join(", ")
            );
            if !args.allow_skips {
                failed.push("skipped tests (run as root, or pass --allow-skips)");
            }
        }
    }
    if !args.no_vm {
        eprintln!(
            "xtask: VM tests under qemu: {}",
            crate::vmtest::guests(args.full).join(", ")
        );
        if args.guest.is_none() {
            eprintln!("xtask: packages (cargo xtask dist, then each package checked)");
            crate::dist::run(&path)?;
            for arch in Target::ALL {
                let result = crate::dist::verify(arch);
                match &result {
                    Ok(()) => eprintln!("package {} ... ok", arch.deb_arch()),
                    Err(e) => eprintln!("package {} ... FAILED: {e:#}", arch.deb_arch()),
                }
                if result.is_err() && !failed.contains(&"packages") {
                    failed.push("packages");
                }
            }
        } else {
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
    }

    if failed.is_empty() {
        eprintln!("xtask: all test stages passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: failed stages: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
