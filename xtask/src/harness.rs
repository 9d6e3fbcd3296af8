//! kcmp-trace beside a workload, every wait bounded: the workload waits behind a gate file
//! until each tracer has said it attached. In Rust for runs on this host; as a shell
//! function, [`GUEST_FUNCTIONS`], for the scripts guests run.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// How long a tracer may take to attach.
const ATTACH_WITHIN: Duration = Duration::from_secs(60);
/// How long a process may take to exit once it should: a workload at its end, a tracer
/// told to stop.
const EXIT_WITHIN: Duration = Duration::from_secs(120);

/// Shell functions every guest's script starts with (`vm` puts them first).
///
/// `wait_attached FILE PID` waits until FILE, the stderr of tracer PID, has the tracer's
/// "attached" line. It fails, saying what did not appear and showing FILE, once PID has
/// ended or `$ATTACH_WITHIN` seconds (120: emulated guests are slow) have passed.
pub const GUEST_FUNCTIONS: &str = r#"
ATTACH_WITHIN=120
# Whether process $1 runs (not ended, not a zombie).
running() {
    local state
    state=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' /proc/$1/status 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}
wait_attached() {
    local end why
    end=$(($(date +%s) + ATTACH_WITHIN))
    while :; do
        # Why to stop looking, taken before the look: a line printed just before the
        # tracer ended is still found.
        why=
        if ! running "$2"; then
            why="process $2 ended"
        elif [ "$(date +%s)" -ge "$end" ]; then
            why="$ATTACH_WITHIN s passed"
        fi
        grep -qF 'kcmp-trace: attached' "$1" 2>/dev/null && return 0
        [ -z "$why" ] || break
        sleep 0.2
    done
    echo "wait_attached: no 'kcmp-trace: attached' in $1 before $why; it holds:" >&2
    cat "$1" >&2
    return 1
}
"#;

/// A child killed on drop, its stderr read line by line on a thread, so that no wait for
/// it outlasts a deadline.
pub struct Proc {
    child: Child,
    /// The program and its subcommand, for messages.
    name: String,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    /// Starts `cmd` with its stderr piped.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Proc> {
        let program = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        // `kcmp-trace events`, `bpftrace`.
        let name = match cmd.get_args().next().map(|a| a.to_string_lossy()) {
            Some(subcommand) if !subcommand.starts_with('-') => format!("{program} {subcommand}"),
            _ => program.into_owned(),
        };
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pipe = child.stderr.take().context("stderr")?;
        let (send, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                if send.send(text).is_err() {
                    break;
                }
                line.clear();
            }
        });
        Ok(Proc {
            child,
            name,
            stderr,
            seen: Vec::new(),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> anyhow::Result<ChildStdout> {
        self.child.stdout.take().context("stdout")
    }

    /// Waits for the tracer's "attached" line on stderr.
    pub fn wait_attached(&mut self) -> anyhow::Result<()> {
        let text = "kcmp-trace: attached";
        let deadline = Instant::now() + ATTACH_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let attached = line.contains(text);
                    self.seen.push(line);
                    if attached {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "{} closed its stderr without printing {text:?}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Timeout) => bail!(
                    "{} printed no {text:?} within {} s; it printed:\n{}",
                    self.name,
                    ATTACH_WITHIN.as_secs(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for its exit, at most [`EXIT_WITHIN`].
    fn exit(&mut self) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + EXIT_WITHIN;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "{} did not exit within {} s",
            self.name,
            EXIT_WITHIN.as_secs()
        )
    }

    /// Stops it with SIGINT; what it printed on stderr, all of it.
    pub fn interrupt(mut self) -> anyhow::Result<String> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.exit()?;
        Ok(self.all_stderr())
    }

    /// Everything it printed on stderr, once it has exited: its end of the pipe closed with
    /// it, and a child of its that holds the pipe gets a moment more.
    fn all_stderr(&mut self) -> String {
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kcmp-trace stress --json` held at its gate (a file it waits for), so that tracers can
/// attach to its pid before its first call.
pub struct Gated {
    proc: Proc,
    gate: PathBuf,
}

impl Gated {
    pub fn stress(bin: &Path, gate: &Path, args: &[&str]) -> anyhow::Result<Gated> {
        let _ = std::fs::remove_file(gate);
        let proc = Proc::spawn(
            Command::new(bin)
                .args(["stress", "--json", "--wait-for"])
                .arg(gate)
                .args(args)
                .stdout(Stdio::piped()),
        )?;
        Ok(Gated {
            proc,
            gate: gate.to_owned(),
        })
    }

    pub fn id(&self) -> u32 {
        self.proc.id()
    }

    /// Lets the workload start.
    pub fn open(&self) -> anyhow::Result<()> {
        std::fs::write(&self.gate, b"go")
            .with_context(|| format!("opening the gate {}", self.gate.display()))
    }

    /// Waits for the workload to end; what it printed (its report).
    pub fn report(mut self) -> anyhow::Result<String> {
        let gate = if self.gate.exists() {
            "open"
        } else {
            "never opened"
        };
        let status = self
            .proc
            .exit()
            .with_context(|| format!("stress, its gate {gate}"))?;
        let mut out = String::new();
        self.proc.take_stdout()?.read_to_string(&mut out)?;
        if !status.success() {
            bail!("stress failed ({status}): {}", self.proc.all_stderr());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACHED: &str = "kcmp-trace: attached (kprobe); Ctrl-C to stop";

    /// Runs `script` in `sh` after [`GUEST_FUNCTIONS`], in a directory of its own, with
    /// `$tracer` the pid of a process that runs until the script ends; whether it
    /// succeeded, and its stderr.
    fn guest(name: &str, script: &str) -> (bool, String) {
        let dir = std::env::temp_dir().join(format!("xtask-harness-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{GUEST_FUNCTIONS}\nsleep 60 >/dev/null 2>&1 & tracer=$!\n\
                 {script}\nstatus=$?; kill $tracer; exit $status"
            ))
            .current_dir(&dir)
            .output()
            .expect("sh");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn the_guest_wait_sees_the_line_even_from_a_tracer_that_ended() {
        let late = format!("(sleep 0.5; echo '{ATTACHED}' > err) & wait_attached err $tracer");
        assert_eq!(guest("late", &late), (true, String::new()));
        let ended =
            format!("sh -c \"echo '{ATTACHED}' > err\" & t=$!; sleep 0.5; wait_attached err $t");
        assert_eq!(guest("ended", &ended), (true, String::new()));
    }

    #[test]
    fn the_guest_wait_fails_naming_what_did_not_appear() {
        let (ok, err) = guest(
            "exited",
            "echo 'bad option' > err; sh -c 'exit 2' & t=$!; wait_attached err $t",
        );
        assert!(!ok);
        assert!(
            err.starts_with("wait_attached: no 'kcmp-trace: attached' in err before process ")
                && err.contains(" ended; it holds:\nbad option\n"),
            "{err}"
        );
        let started = Instant::now();
        let (ok, err) = guest(
            "silent",
            "ATTACH_WITHIN=1; echo loading > err; wait_attached err $tracer",
        );
        assert!(!ok);
        assert_eq!(
            err,
            "wait_attached: no 'kcmp-trace: attached' in err before 1 s passed; it holds:\nloading\n"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_host_wait_sees_the_line_and_fails_naming_it_otherwise() {
        let mut tracer = Proc::spawn(
            Command::new("sh").args(["-c", &format!("echo '{ATTACHED}' >&2; exec sleep 30")]),
        )
        .expect("sh");
        tracer.wait_attached().expect("attached");
        let mut failed =
            Proc::spawn(Command::new("sh").args(["-c", "echo 'bad option' >&2"])).expect("sh");
        let err = format!("{:#}", failed.wait_attached().expect_err("never attached"));
        assert_eq!(
            err,
            "sh closed its stderr without printing \"kcmp-trace: attached\"; it printed:\nbad option"
        );
    }
}
