//! The peer: bpftrace doing the same two jobs as kcmp-trace, on the syscall tracepoints.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The peer's scripts: the same numbers kcmp-trace keeps (calls by type and result, a log2
/// latency histogram), then one line per call.
pub const BPFTRACE_COUNTS: &str = "tracepoint:syscalls:sys_enter_kcmp { @start[tid] = nsecs; @type[tid] = args->type; } \
    tracepoint:syscalls:sys_exit_kcmp /@start[tid]/ { @calls[@type[tid], args->ret] = count(); \
    @latency = hist(nsecs - @start[tid]); delete(@start[tid]); delete(@type[tid]); }";
pub const BPFTRACE_LINES: &str = "tracepoint:syscalls:sys_enter_kcmp { @start[tid] = nsecs; @type[tid] = args->type; } \
    tracepoint:syscalls:sys_exit_kcmp /@start[tid]/ { printf(\"%d %d %d %d %d %llu\\n\", pid, tid, \
    @type[tid], args->ret, args->ret < 0, nsecs - @start[tid]); delete(@start[tid]); delete(@type[tid]); }";

/// How long bpftrace may take to say it attached (it compiles its script first: seconds under
/// emulation).
const ATTACH_DEADLINE: Duration = Duration::from_secs(60);

/// bpftrace running a script, its output drained by a thread as a reader would.
pub struct Peer {
    child: Child,
}

impl Peer {
    pub fn start(script: &str) -> anyhow::Result<Peer> {
        // Unbuffered, so that its "Attaching" line arrives while it runs.
        let mut child = Command::new("bpftrace")
            .args(["-B", "none", "-e", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let mut out = BufReader::new(child.stdout.take().context("bpftrace stdout")?);
        // The drain thread reads the first line too and hands it over, so a bpftrace that
        // never prints (stuck compiling or attaching) costs the deadline, not a hang.
        let (first_line, attached) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let read = out.read_line(&mut first).map(|_| first);
            let _ = first_line.send(read);
            let mut buf = vec![0u8; 1 << 16];
            while out.read(&mut buf).is_ok_and(|n| n > 0) {}
        });
        let peer = Peer { child };
        match attached.recv_timeout(ATTACH_DEADLINE) {
            Ok(Ok(first)) if first.starts_with("Attaching") => Ok(peer),
            Ok(Ok(first)) => bail!("bpftrace did not attach: {first:?}"),
            Ok(Err(e)) => Err(e).context("reading bpftrace"),
            Err(_) => bail!(
                "bpftrace printed nothing in {} s: it did not attach",
                ATTACH_DEADLINE.as_secs()
            ),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SIGINT: bpftrace prints its maps and detaches.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether bpftrace can run its peer scripts here; None if it can, else why not.
pub fn peer_missing() -> Option<String> {
    match Peer::start(BPFTRACE_COUNTS) {
        Ok(peer) => {
            drop(peer);
            None
        }
        Err(e) => Some(kcmp_trace::error::one_line(&e)),
    }
}
