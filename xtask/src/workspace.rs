//! The workspace every task works in, the cache every task shares, and the helpers they
//! all use: running commands (checked, captured or logged), fresh directories, cache
//! entries assembled under a lock and moved into place, hex.

use std::{
    env,
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// How many of its last lines a failed [`logged`] command shows.
const LOGGED_TAIL_LINES: usize = 40;

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

/// Root of the cache (kernels, Debian packages, roots, bpf-linker): `$KCMP_TRACE_CACHE`, or
/// `/var/cache/kcmp-trace`.
pub fn cache_root() -> PathBuf {
    env::var_os("KCMP_TRACE_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/cache/kcmp-trace"), PathBuf::from)
}

/// This process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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

/// Runs `cmd`, returning stdout; on failure the error carries stderr.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with stdout and stderr appended to `log`; on failure the error carries
/// the tail of what `cmd` wrote there.
pub fn logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let start = fs::metadata(log).map_or(0, |m| m.len());
    let open = || {
        File::options()
            .append(true)
            .create(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))
    };
    let status = cmd
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}); its last lines in {}:\n{}",
            log.display(),
            tail_from(log, start, LOGGED_TAIL_LINES)
        );
    }
    Ok(())
}

/// The last `lines` lines of a (possibly large) text file.
pub fn tail(path: &Path, lines: usize) -> String {
    tail_from(path, 0, lines)
}

/// The last `lines` lines of a text file written from byte `start` on.
fn tail_from(path: &Path, start: u64, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024).max(start)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Holds an exclusive lock on `path` until dropped, so concurrent runs do not download,
/// build or assemble the same cache entry twice.
pub fn lock(path: &Path) -> Result<File> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!("xtask: waiting for another run holding {}", path.display());
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

/// Creates `path` empty, removing leftovers of an interrupted run.
pub fn fresh_dir(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Moves a complete entry into place in one rename.
pub fn publish(out: &Path, entry: &Path) -> Result<()> {
    fs::rename(out, entry)
        .with_context(|| format!("moving {} to {}", out.display(), entry.display()))
}

/// Removes a directory that is no longer needed; a failure is only a warning.
pub fn remove_dir(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        eprintln!("xtask: warning: cannot remove {}: {e}", path.display());
    }
}

/// Bytes as lowercase hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
