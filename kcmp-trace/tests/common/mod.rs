//! Helpers for tests that run the real binary against the real kernel.
#![allow(dead_code)] // each test file uses its own subset

mod harness;
pub mod promql;
pub mod schema;
pub mod skip;

#[allow(unused_imports)] // each test file uses its own subset
pub use harness::{ATTACH_WITHIN, Gated, Proc, TempDir, wait_until, which};

use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_kcmp-trace");

/// A command for the binary that dies with the test process, so a test killed midway
/// (timeout, OOM) leaves no tracer attached.
pub fn kcmp_trace() -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(BIN);
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Privileged tests need root: they are `#[ignore = "needs root"]`, so plain `cargo test`
/// lists them as ignored, and `cargo xtask test` runs them with `--include-ignored`. Run
/// that way without root, a test skips itself here ([`skip::skip`]) and `cargo xtask test`
/// counts the skip. In CI a missing privilege is a failure, never a skip.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip::skip("root");
    false
}

/// Runs kcmp-trace to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    Proc::spawn(args).finish()
}

/// The last JSON line whose "scope" is "total".
pub fn total_line(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["scope"] == "total")
        .unwrap_or_else(|| panic!("no total line in {stdout}"))
}
