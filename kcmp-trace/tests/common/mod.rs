//! Helpers for tests that run the real binary against the real kernel.
#![allow(dead_code)] // each test file uses its own subset

pub mod promql;
pub mod skip;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Child, ChildStderr, Command, Stdio},
    time::{Duration, Instant},
};

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

/// A child process killed on drop, so a failing test leaves nothing behind.
pub struct Proc {
    pub child: Child,
    pub stderr_lines: Vec<String>,
    stderr: Option<BufReader<ChildStderr>>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        let mut child = kcmp_trace()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kcmp-trace");
        let stderr = child.stderr.take().map(BufReader::new);
        Proc {
            child,
            stderr_lines: Vec::new(),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the tracer's "attached" line on stderr.
    pub fn wait_attached(&mut self) {
        let stderr = self.stderr.as_mut().expect("stderr");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            if stderr.read_line(&mut line).expect("read stderr") == 0 {
                panic!("tracer exited before attaching: {:?}", self.stderr_lines);
            }
            self.stderr_lines.push(line.trim_end().to_owned());
            if line.contains("kcmp-trace: attached") {
                return;
            }
        }
        panic!("tracer did not attach within 60 s");
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops with SIGINT and returns (exit code, stdout, remaining stderr).
    pub fn stop(self) -> (i32, String, String) {
        self.signal(libc::SIGINT);
        self.finish()
    }

    /// Waits for exit and returns (exit code, stdout, remaining stderr).
    pub fn finish(mut self) -> (i32, String, String) {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out).expect("read stdout");
        }
        let mut err = self.stderr_lines.join("\n");
        if let Some(mut stderr) = self.stderr.take() {
            let mut rest = String::new();
            stderr.read_to_string(&mut rest).expect("read stderr");
            err.push('\n');
            err.push_str(&rest);
        }
        let status = self.child.wait().expect("wait");
        (status.code().unwrap_or(-1), out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stress process that waits for a start file, so a tracer can attach to its pid first.
pub struct Gated {
    pub proc: Proc,
    gate: PathBuf,
}

impl Gated {
    pub fn new(stress_args: &[&str]) -> Gated {
        let gate = std::env::temp_dir().join(format!(
            "kcmp-trace-gate-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_file(&gate);
        let mut args = vec![
            "stress",
            "--json",
            "--wait-for",
            gate.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(stress_args);
        Gated {
            proc: Proc::spawn(&args),
            gate,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Opens the gate and returns stress's own report.
    pub fn run(self) -> serde_json::Value {
        std::fs::write(&self.gate, b"go").expect("open gate");
        let gate = self.gate.clone();
        let (code, out, err) = self.proc.finish();
        let _ = std::fs::remove_file(gate);
        assert_eq!(code, 0, "stress failed: {err}");
        serde_json::from_str(out.trim()).expect("stress JSON")
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs kcmp-trace to completion.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = kcmp_trace().args(args).output().expect("run kcmp-trace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last JSON line whose "scope" is "total".
pub fn total_line(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["scope"] == "total")
        .unwrap_or_else(|| panic!("no total line in {stdout}"))
}
