//! Processes under test, every wait for them bounded: a child's pipes are read by threads,
//! so waiting for a line, for an exit or for a gated workload's report ends at a deadline
//! with a message that names what did not appear.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use super::kcmp_trace;

/// How long a tracer may take to attach: a debug build loads and verifies every program.
pub const ATTACH_WITHIN: Duration = Duration::from_secs(60);
/// How long a process may take to exit once it should: a workload at its end, a tracer
/// told to stop.
pub const EXIT_WITHIN: Duration = Duration::from_secs(120);
/// How long a pipe may stay open after its process exited (a child of its may hold it).
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// One of a child's pipes, read line by line on a thread as the child writes.
struct Lines {
    incoming: Receiver<String>,
    seen: Vec<String>,
    /// How many of `seen` [`Lines::next`] has handed out.
    handed_out: usize,
    closed: bool,
}

impl Lines {
    fn read(pipe: impl Read + Send + 'static) -> Lines {
        let (send, incoming) = mpsc::channel();
        thread::spawn(move || {
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                if send
                    .send(text.trim_end_matches(['\n', '\r']).to_owned())
                    .is_err()
                {
                    break;
                }
                line.clear();
            }
        });
        Lines {
            incoming,
            seen: Vec::new(),
            handed_out: 0,
            closed: false,
        }
    }

    /// Takes the next line into `seen`, waiting until `deadline`; false if none came.
    fn take(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        match self
            .incoming
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => {
                self.seen.push(line);
                true
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// The first line containing `text`, seen already or arriving by `deadline`.
    fn find(&mut self, text: &str, deadline: Instant) -> Option<String> {
        let mut at = 0;
        loop {
            if let Some(line) = self.seen[at..].iter().find(|l| l.contains(text)) {
                return Some(line.clone());
            }
            at = self.seen.len();
            if !self.take(deadline) {
                return None;
            }
        }
    }

    /// The line after the last one this handed out, if it arrives by `deadline`.
    fn next(&mut self, deadline: Instant) -> Option<String> {
        if self.handed_out == self.seen.len() && !self.take(deadline) {
            return None;
        }
        self.handed_out += 1;
        Some(self.seen[self.handed_out - 1].clone())
    }

    /// Every line so far, without waiting.
    fn so_far(&mut self) -> String {
        while self.take(Instant::now()) {}
        self.text()
    }

    /// Every line, once the pipe closed; None if it is still open at `deadline`.
    fn all(mut self, deadline: Instant) -> Option<String> {
        while self.take(deadline) {}
        self.closed.then(|| self.text())
    }

    fn text(&self) -> String {
        self.seen.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// The first line of `pipe` (`name`'s `stream`) that contains `text`, seen already or
/// arriving within `within`; a panic saying which line did not come, and why, if none does.
fn wait_line(pipe: &mut Lines, name: &str, stream: &str, text: &str, within: Duration) -> String {
    if let Some(line) = pipe.find(text, Instant::now() + within) {
        return line;
    }
    let printed = pipe.text();
    if pipe.closed {
        panic!("{name} closed its {stream} without printing {text:?}; it printed:\n{printed}");
    }
    panic!(
        "{name} printed no {text:?} on {stream} within {} s; it printed:\n{printed}",
        within.as_secs_f64()
    );
}

/// A child process killed on drop, so a failing test leaves nothing behind. What it pipes
/// is read as it comes: no wait for its output or its exit outlasts a deadline.
pub struct Proc {
    pub child: Child,
    /// The program and its first argument, for messages: `kcmp-trace watch`.
    name: String,
    stdout: Option<Lines>,
    stderr: Option<Lines>,
}

impl Proc {
    /// kcmp-trace with `args`, its stdout and stderr read.
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::start(
            kcmp_trace()
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    /// Starts `cmd`; the pipes it was given are read.
    pub fn start(cmd: &mut Command) -> Proc {
        let program = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        // `kcmp-trace watch`, `bpftrace`.
        let name = match cmd.get_args().next().map(|a| a.to_string_lossy()) {
            Some(first) if !first.starts_with('-') => format!("{program} {first}"),
            _ => program.into_owned(),
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().map(Lines::read);
        let stderr = child.stderr.take().map(Lines::read);
        Proc {
            child,
            name,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the tracer's "attached" line on stderr.
    pub fn wait_attached(&mut self) {
        self.wait_stderr("kcmp-trace: attached", ATTACH_WITHIN);
    }

    /// Waits, at most `within`, for a line on stderr that contains `text`; returns it.
    pub fn wait_stderr(&mut self, text: &str, within: Duration) -> String {
        let stderr = self.stderr.as_mut().expect("a piped stderr");
        wait_line(stderr, &self.name, "stderr", text, within)
    }

    /// Waits, at most `within`, for a line on stdout that contains `text`; returns it.
    pub fn wait_stdout(&mut self, text: &str, within: Duration) -> String {
        let stdout = self.stdout.as_mut().expect("a piped stdout");
        wait_line(stdout, &self.name, "stdout", text, within)
    }

    /// The next line on stdout (after the last one this returned), within `within`.
    pub fn next_stdout(&mut self, within: Duration) -> String {
        let stdout = self.stdout.as_mut().expect("a piped stdout");
        stdout.next(Instant::now() + within).unwrap_or_else(|| {
            if stdout.closed {
                panic!("{} closed its stdout before a further line", self.name);
            }
            panic!(
                "{} printed no further line on stdout within {} s",
                self.name,
                within.as_secs_f64()
            );
        })
    }

    /// What it has printed on stderr so far.
    pub fn stderr_so_far(&mut self) -> String {
        self.stderr.as_mut().map(Lines::so_far).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Its exit status, if it exits within `within`.
    pub fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops with SIGINT and returns (exit code, stdout, stderr).
    pub fn stop(self) -> (i32, String, String) {
        self.signal(libc::SIGINT);
        self.finish()
    }

    /// Waits for its exit and returns (exit code, stdout, stderr).
    pub fn finish(mut self) -> (i32, String, String) {
        let Some(status) = self.exited_within(EXIT_WITHIN) else {
            let stderr = self.stderr_so_far();
            panic!(
                "{} did not exit within {} s; its stderr:\n{stderr}",
                self.name,
                EXIT_WITHIN.as_secs(),
            );
        };
        let deadline = Instant::now() + CLOSE_WITHIN;
        let name = self.name.clone();
        let all = |pipe: Option<Lines>, stream: &str| {
            pipe.map_or(Some(String::new()), |p| p.all(deadline))
                .unwrap_or_else(|| panic!("{name} exited, but its {stream} stayed open"))
        };
        let out = all(self.stdout.take(), "stdout");
        let err = all(self.stderr.take(), "stderr");
        (status.code().unwrap_or(-1), out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stress workload held at its gate (a file it waits for), so that tracers can attach to
/// its pid before its first call.
pub struct Gated {
    pub proc: Proc,
    gate: PathBuf,
    _dir: TempDir,
}

impl Gated {
    pub fn new(stress_args: &[&str]) -> Gated {
        let dir = TempDir::new("gate");
        let gate = dir.path().join("go");
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
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Lets the workload start.
    pub fn open(&self) {
        std::fs::write(&self.gate, b"go").expect("opening the gate");
    }

    /// Waits for the workload to end; its own report.
    pub fn report(mut self) -> serde_json::Value {
        if self.proc.exited_within(EXIT_WITHIN).is_none() {
            let gate = if self.gate.exists() {
                "open"
            } else {
                "never opened"
            };
            panic!(
                "stress (its gate {gate}) did not end within {} s",
                EXIT_WITHIN.as_secs()
            );
        }
        let (code, out, err) = self.proc.finish();
        assert_eq!(code, 0, "stress failed: {err}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("stress's report: {e}: {out}"))
    }

    /// Opens the gate; the workload's report once it ends.
    pub fn run(self) -> serde_json::Value {
        self.open();
        self.report()
    }
}

/// A scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kcmp-trace-test-{}-{tag}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory of an earlier process with this pid.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asks `f` every 200 ms until it answers; panics naming `what` once `within` has passed.
pub fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed() < within,
            "timed out after {} s waiting for {what}",
            within.as_secs_f64()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
