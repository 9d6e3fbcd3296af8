//! The workspace every task works in, and running commands there.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where setup's tools (apt, rustup, cargo install) write their output.
pub fn setup_log() -> PathBuf {
    workspace_root().join("target/setup.log")
}

/// `3m 07s`, or `42s` under a minute: how the stages' times read in the README.
pub fn minutes_and_seconds(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

/// A cargo command in the workspace with bpf-linker on PATH.
pub fn cargo(path: &str) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root()).env("PATH", path);
    cmd
}

pub fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Builds the release binary and returns its path.
pub fn build_release(path: &str) -> anyhow::Result<PathBuf> {
    eprintln!("xtask: building the release binary");
    run_checked(cargo(path).args(["build", "--release", "-p", "kcmp-trace"]))?;
    Ok(workspace_root().join("target/release/kcmp-trace"))
}
