//! A kcmp workload that keeps its own exact count, so the tracer can be held to it.

use std::{
    collections::BTreeMap,
    ffi::CString,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kcmp_trace_common::{
    json::{
        event::{EpollSlotRecord, result_name},
        stress::{ENVIRON, MmReads, OPENED, StressReport},
    },
    kcmp::{
        KCMP_EPOLL_TFD, KCMP_FILE, KCMP_FILES, KCMP_FS, KCMP_IO, KCMP_SIGHAND, KCMP_SYSVSEM,
        KCMP_VM, type_slot, type_slot_name,
    },
    reader::{PROC_READERS, ProcReader},
};

/// argv[1] of a process that only exec()s itself, forever: the write side of exec_update_lock.
pub const EXEC_RACER_ARG: &str = "__exec-racer";
/// argv[1] of a process that takes its exec_update_lock for writing through Landlock TSYNC
/// until told to stop (SIGTERM), then prints how many times it did.
pub const TSYNC_RACER_ARG: &str = "__tsync-racer";
/// What a TSYNC racer prints once its first call succeeded.
const TSYNC_READY: &str = "ready";

/// A pid no kernel hands out (pid_max is at most 2^22).
const DEAD_PID: i32 = i32::MAX;
/// A fd number that is never open here.
const BAD_FD: u64 = 1 << 20;
const BAD_TYPE: u64 = 99;

#[derive(Clone, Debug)]
pub struct StressConfig {
    pub threads: usize,
    pub types: Vec<u32>,
    /// Stop after this many calls in all (exact), or
    pub calls: Option<u64>,
    /// after this long.
    pub duration: Option<Duration>,
    pub bad_fd: u64,
    pub dead_pid: u64,
    pub bad_type: u64,
    /// Calls made by a thread that dropped its privileges, against init (-EPERM).
    pub eperm: u64,
    /// Processes that exec() themselves in a loop; valid calls then compare against them.
    pub exec_racers: usize,
    /// Processes that call landlock_restrict_self() with TSYNC in a loop (7.2): valid calls
    /// compare against them too.
    pub tsync_racers: usize,
    /// Make every call from a thread of its own that exits right after (thread churn).
    pub thread_per_call: bool,
    /// Threads that read /proc/PID/{stack,syscall,wchan} of the racers (or of this process
    /// without racers) while the kcmp threads run: exec_update_lock's /proc readers.
    pub proc_readers: usize,
    /// Threads that open /proc/PID/environ of the same targets in a loop, each open one
    /// mm_access() read of exec_update_lock, counted exactly.
    pub mm_readers: usize,
}

#[derive(Clone, Copy)]
enum Call {
    Valid,
    BadFd,
    DeadPid,
    BadType,
}

/// What each thread must do: its share of the fixed counts.
fn shares(total: u64, threads: usize) -> Vec<u64> {
    let n = threads as u64;
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

/// Resources the valid calls compare, kept open for the whole run.
struct Fixture {
    pid: i32,
    file: OwnedFd,
    epoll: OwnedFd,
    _pipe_write: OwnedFd,
}

impl Fixture {
    fn new() -> anyhow::Result<Fixture> {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid 2-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("pipe2");
        }
        // SAFETY: pipe2 returned two fresh fds that we now own.
        let (read, write) = unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        // SAFETY: plain syscall.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: fresh fd we own.
        let epoll = unsafe {
            use std::os::fd::FromRawFd;
            OwnedFd::from_raw_fd(epfd)
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: valid fds and event.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, read.as_raw_fd(), &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl");
        }
        Ok(Fixture {
            pid: std::process::id() as i32,
            file: read,
            epoll,
            _pipe_write: write,
        })
    }
}

/// struct kcmp_epoll_slot from include/uapi/linux/kcmp.h.
#[repr(C)]
struct EpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

fn kcmp(pid1: i32, pid2: i32, ty: u64, idx1: u64, idx2: u64) -> i64 {
    // SAFETY: kcmp only reads its integer arguments (and, for KCMP_EPOLL_TFD, the slot
    // idx2 points to, which callers keep alive across the call).
    let ret = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, ty, idx1, idx2) };
    if ret < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        ret
    }
}

/// Counts by (raw type, ret).
type Tally = BTreeMap<(u64, i64), u64>;

struct Worker<'a> {
    fixture: &'a Fixture,
    types: &'a [u32],
    racers: &'a [i32],
    slot: EpollSlot,
    next: usize,
    tally: Tally,
    thread_per_call: bool,
    call_threads: u64,
}

impl Worker<'_> {
    fn call(&mut self, kind: Call) {
        let me = self.fixture.pid;
        let fd = self.fixture.file.as_raw_fd() as u64;
        let (pid1, pid2, ty, idx1, idx2) = match kind {
            Call::BadFd => (me, me, u64::from(KCMP_FILE), BAD_FD, BAD_FD),
            Call::DeadPid => (me, DEAD_PID, u64::from(KCMP_VM), 0, 0),
            Call::BadType => (me, me, BAD_TYPE, 0, 0),
            Call::Valid => {
                let ty = self.types[self.next % self.types.len()];
                let other = if self.racers.is_empty() {
                    me
                } else {
                    self.racers[self.next % self.racers.len()]
                };
                self.next += 1;
                match ty {
                    // Against a racer, compare its stdin with ours: both exist across exec.
                    KCMP_FILE if other != me => (me, other, u64::from(ty), 0, 0),
                    KCMP_FILE => (me, me, u64::from(ty), fd, fd),
                    KCMP_EPOLL_TFD => (me, me, u64::from(ty), fd, &raw const self.slot as u64),
                    _ => (me, other, u64::from(ty), 0, 0),
                }
            }
        };
        let ret = if self.thread_per_call {
            // A thread the kernel could not create leaves the call to this one: still
            // counted, and `call_threads` says how many had their own.
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || kcmp(pid1, pid2, ty, idx1, idx2))
                    .ok()
                    .and_then(|t| t.join().ok())
            })
            .inspect(|_| self.call_threads += 1)
            .unwrap_or_else(|| kcmp(pid1, pid2, ty, idx1, idx2))
        } else {
            kcmp(pid1, pid2, ty, idx1, idx2)
        };
        *self.tally.entry((ty, ret)).or_default() += 1;
    }
}

fn run_thread(
    fixture: &Fixture,
    config: &StressConfig,
    racers: &[i32],
    valid: Option<u64>,
    invalid: [(Call, u64); 3],
    stop: &AtomicBool,
) -> (Tally, u64) {
    let mut w = Worker {
        fixture,
        types: &config.types,
        racers,
        slot: EpollSlot {
            efd: fixture.epoll.as_raw_fd() as u32,
            tfd: fixture.file.as_raw_fd() as u32,
            toff: 0,
        },
        next: 0,
        tally: Tally::new(),
        thread_per_call: config.thread_per_call,
        call_threads: 0,
    };
    let mut invalid = invalid;
    let mut done_valid = 0u64;
    loop {
        let more_valid = match valid {
            Some(n) => done_valid < n,
            None => !stop.load(Ordering::Relaxed),
        };
        let mut did = false;
        if more_valid {
            w.call(Call::Valid);
            done_valid += 1;
            did = true;
        }
        // Spread the invalid calls among the valid ones.
        for (kind, left) in invalid.iter_mut() {
            if *left > 0 {
                w.call(*kind);
                *left -= 1;
                did = true;
            }
        }
        if !did {
            return (w.tally, w.call_threads);
        }
    }
}

/// Makes `n` calls that ptrace_may_access() refuses: this thread alone drops to nobody
/// (the raw syscall changes only the calling thread's credentials) and compares init.
fn run_unprivileged(me: i32, n: u64) -> anyhow::Result<Tally> {
    const NOBODY: libc::uid_t = 65534;
    // SAFETY: plain syscalls; only this thread's credentials change.
    let dropped = unsafe {
        libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY) == 0
            && libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY) == 0
    };
    if !dropped {
        bail!(crate::error::Error::Usage(
            "--eperm needs root (to drop to nobody)".into()
        ));
    }
    let mut tally = Tally::new();
    for _ in 0..n {
        let ret = kcmp(me, 1, u64::from(KCMP_VM), 0, 0);
        *tally.entry((u64::from(KCMP_VM), ret)).or_default() += 1;
    }
    Ok(tally)
}

/// The files a `--proc-readers` thread reads: the /proc readers' (`ProcReader` order), then
/// /proc/PID/environ, whose open waits on exec_update_lock in mm_access(): a reader the
/// series leaves alone, for the tracer's `other` callers.
const PROC_FILES: [&str; PROC_READERS + 1] = [
    ProcReader::Stack.file(),
    ProcReader::Syscall.file(),
    ProcReader::Wchan.file(),
    ENVIRON,
];

/// The file an `--mm-readers` thread opens: each open is one mm_access(), one read of the
/// target's exec_update_lock, and nothing else of an open and close takes that lock.
const MM_FILES: [&str; 1] = [ENVIRON];

/// Opens by file (an index into a [`ProcLoop`]'s files), then by result: 0 for an open
/// that succeeded, else its errno.
type OpenTally = Vec<BTreeMap<i32, u64>>;

/// Threads that open files under /proc/PID/ of the targets in a loop for as long as the
/// kcmp threads run, counting every open by its result: the `--proc-readers` and the
/// `--mm-readers`.
struct ProcLoop {
    /// The files, under /proc/PID/.
    files: &'static [&'static str],
    /// Read each opened file once: a /proc reader's function runs on read() (a single_open
    /// seq file whose output fits a page), mm_access() on open().
    read: bool,
    /// What its threads are, for errors.
    what: &'static str,
}

static PROC_READER_LOOP: ProcLoop = ProcLoop {
    files: &PROC_FILES,
    read: true,
    what: "a /proc reader",
};

static MM_READER_LOOP: ProcLoop = ProcLoop {
    files: &MM_FILES,
    read: false,
    what: "an mm reader",
};

impl ProcLoop {
    /// One thread's loop: opens each file of each target in turn, starting at `first`,
    /// until stopped, at least once.
    fn run(&self, targets: &[i32], first: usize, stop: &AtomicBool) -> OpenTally {
        use std::io::Read as _;
        let n = self.files.len();
        let mut opens: OpenTally = vec![BTreeMap::new(); n];
        let mut page = vec![0u8; 4096];
        let mut i = first;
        // At least one open, however short the run.
        loop {
            let f = i % n;
            let target = targets[(i / n) % targets.len()];
            i += 1;
            let path = format!("/proc/{target}/{}", self.files[f]);
            let result = match std::fs::File::open(&path) {
                Ok(mut file) => {
                    if self.read {
                        // Refused reads (EPERM, EACCES) ran the function too.
                        let _ = file.read(&mut page);
                    }
                    0
                }
                Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
            };
            *opens[f].entry(result).or_default() += 1;
            if stop.load(Ordering::Relaxed) {
                return opens;
            }
        }
    }

    /// Starts `n` threads on the targets, pinned to CPUs from `cpu` on.
    fn spawn<'scope, 'env>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        n: usize,
        cpu: usize,
        targets: &'env [i32],
        stop: &'env AtomicBool,
    ) -> Vec<std::thread::ScopedJoinHandle<'scope, OpenTally>> {
        (0..n)
            .map(|r| {
                scope.spawn(move || {
                    pin(0, (cpu + r) % cpus());
                    self.run(targets, r, stop)
                })
            })
            .collect()
    }

    /// Waits for the threads and adds up their opens.
    fn join(
        &self,
        handles: Vec<std::thread::ScopedJoinHandle<'_, OpenTally>>,
    ) -> anyhow::Result<OpenTally> {
        let mut sum: OpenTally = vec![BTreeMap::new(); self.files.len()];
        for h in handles {
            let theirs = h
                .join()
                .map_err(|_| anyhow::anyhow!("{} thread panicked", self.what))?;
            for (sum, theirs) in sum.iter_mut().zip(theirs) {
                for (result, n) in theirs {
                    *sum.entry(result).or_default() += n;
                }
            }
        }
        Ok(sum)
    }
}

/// The opens of one file that succeeded.
fn opened(opens: &BTreeMap<i32, u64>) -> u64 {
    opens.get(&0).copied().unwrap_or_default()
}

/// An open's result as the report names it: `ok`, or the errno's name.
fn open_result_name(errno: i32) -> String {
    match errno {
        0 => OPENED.to_owned(),
        libc::EACCES => "EACCES".to_owned(),
        e => result_name(-i64::from(e)).into_owned(),
    }
}

/// Pins a thread (0: the caller) or process to one CPU. With exec racers, kcmp threads and
/// the racers they compare run on different CPUs: on a non-preemptive kernel the scheduler
/// otherwise keeps a caller and its target on one CPU, and their critical sections never
/// overlap.
fn pin(pid: libc::pid_t, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for any cpu below
    // CPU_SETSIZE, and sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set);
        // Best effort: a CPU outside the cgroup's set just leaves the thread unpinned.
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts `n` racer processes of one kind (`arg`), after `offset` others. Racers that
/// `report` tell how they did on their stdout and stderr.
fn spawn_racers(
    n: usize,
    arg: &str,
    offset: usize,
    report: bool,
) -> anyhow::Result<Vec<std::process::Child>> {
    use std::process::Stdio;
    // Resolved by the child's execve: readlink(/proc/self/exe) here would wait on this
    // process's exec_update_lock, a read the workload does not count.
    let exe = std::path::Path::new("/proc/self/exe");
    let output = || {
        if report {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    (0..n)
        .map(|j| {
            let child = std::process::Command::new(exe)
                .arg(arg)
                .stdin(Stdio::null())
                .stdout(output())
                .stderr(output())
                .spawn()
                .with_context(|| format!("spawning a racer ({arg})"))?;
            // Affinity survives exec; racer j shares a CPU with no kcmp thread of its index.
            pin(child.id() as libc::pid_t, (offset + j + 1) % cpus());
            Ok(child)
        })
        .collect()
}

/// The body of an exec racer: replace ourselves with ourselves, forever.
pub fn exec_racer_loop() -> ! {
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let arg0 = CString::new("kcmp-racer").expect("no NUL");
    let arg1 = CString::new(EXEC_RACER_ARG).expect("no NUL");
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: NUL-terminated strings and arrays that outlive the call.
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    eprintln!(
        "exec racer: execve failed: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(1)
}

/// Set by SIGTERM in a TSYNC racer.
static TSYNC_STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn stop_tsync_racer(_: libc::c_int) {
    TSYNC_STOP.store(true, Ordering::Relaxed);
}

/// landlock_restrict_self(-1, LOG_SUBDOMAINS_OFF | TSYNC): no ruleset, so no domain is
/// stacked, but TSYNC still takes the process's exec_update_lock for writing (7.2's
/// landlock_restrict_sibling_threads()).
fn tsync_once() -> std::io::Result<()> {
    const LOG_SUBDOMAINS_OFF: libc::c_uint = 1 << 2;
    const TSYNC: libc::c_uint = 1 << 3;
    // SAFETY: plain syscall, no pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_restrict_self,
            -1,
            LOG_SUBDOMAINS_OFF | TSYNC,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The body of a TSYNC racer: TSYNC calls until SIGTERM, then their count on stdout.
pub fn tsync_racer_loop() -> ! {
    use std::io::Write as _;
    // SAFETY: the handler only stores to an atomic; no_new_privs is what Landlock asks of
    // an unprivileged caller, and harmless for a privileged one.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            stop_tsync_racer as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    if let Err(e) = tsync_once() {
        eprintln!("landlock_restrict_self with TSYNC failed: {e}");
        std::process::exit(3);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{TSYNC_READY}");
    let _ = out.flush();
    let mut calls = 1u64;
    while !TSYNC_STOP.load(Ordering::Relaxed) {
        if tsync_once().is_ok() {
            calls += 1;
        }
    }
    let _ = writeln!(out, "{calls}");
    std::process::exit(0)
}

/// Waits for each TSYNC racer's first successful call, so that the workload never starts
/// against a kernel without TSYNC.
fn await_tsync_ready(racers: &mut [std::process::Child]) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    for racer in racers {
        let mut line = String::new();
        if let Some(out) = racer.stdout.as_mut() {
            // One line: the reader is dropped right after, taking nothing else.
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != TSYNC_READY {
            let _ = racer.kill();
            let out = stderr_line(racer);
            bail!(crate::error::Error::Usage(format!(
                "--tsync-racers needs Landlock TSYNC (Linux 7.2 or later, Landlock enabled): {out}"
            )));
        }
    }
    Ok(())
}

/// Waits for a racer that reports, and returns its stderr in one line.
fn stderr_line(racer: &mut std::process::Child) -> String {
    use std::io::Read as _;
    let _ = racer.wait();
    let mut err = String::new();
    if let Some(e) = racer.stderr.as_mut() {
        let _ = e.read_to_string(&mut err);
    }
    err.trim().replace('\n', "; ")
}

/// Stops the TSYNC racers and adds up the write sections they went through.
fn stop_tsync_racers(racers: Vec<std::process::Child>) -> anyhow::Result<u64> {
    let mut sections = 0;
    for racer in racers {
        let pid = racer.id();
        // SAFETY: signalling our own child, which has not been waited for.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let out = racer
            .wait_with_output()
            .with_context(|| format!("waiting for TSYNC racer {pid}"))?;
        let count = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<u64>().ok())
            .with_context(|| {
                format!(
                    "TSYNC racer {pid} ended without its count ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        sections += count;
    }
    Ok(sections)
}

pub fn run(config: &StressConfig) -> anyhow::Result<StressReport> {
    if config.threads == 0 {
        bail!(crate::error::Error::Usage(
            "--threads must be at least 1".into()
        ));
    }
    if config.types.is_empty() {
        bail!(crate::error::Error::Usage(
            "--types must name at least one type".into()
        ));
    }
    let invalid_total = config.bad_fd + config.dead_pid + config.bad_type + config.eperm;
    let valid_total = match (config.calls, config.duration) {
        (Some(calls), _) if calls < invalid_total => bail!(crate::error::Error::Usage(format!(
            "--calls {calls} is less than the {invalid_total} invalid calls asked for"
        ))),
        (Some(calls), _) => Some(calls - invalid_total),
        (None, Some(_)) => None,
        (None, None) => bail!(crate::error::Error::Usage(
            "give --calls or --duration".into()
        )),
    };

    let fixture = Fixture::new()?;
    let mut racer_children = spawn_racers(config.exec_racers, EXEC_RACER_ARG, 0, false)?;
    let mut tsync_children = spawn_racers(
        config.tsync_racers,
        TSYNC_RACER_ARG,
        config.exec_racers,
        true,
    )?;
    await_tsync_ready(&mut tsync_children)?;
    let racers: Vec<i32> = racer_children
        .iter()
        .chain(&tsync_children)
        .map(|c| c.id() as i32)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let valid_shares = valid_total.map(|v| shares(v, config.threads));
    let share_of = |total: u64| shares(total, config.threads);
    let (bad_fd, dead_pid, bad_type) = (
        share_of(config.bad_fd),
        share_of(config.dead_pid),
        share_of(config.bad_type),
    );

    let proc_targets: Vec<i32> = if racers.is_empty() {
        vec![fixture.pid]
    } else {
        racers.clone()
    };
    let proc_stop = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let proc_readers = PROC_READER_LOOP.spawn(
            scope,
            config.proc_readers,
            config.threads,
            &proc_targets,
            &proc_stop,
        );
        let mm_readers = MM_READER_LOOP.spawn(
            scope,
            config.mm_readers,
            config.threads + config.proc_readers,
            &proc_targets,
            &proc_stop,
        );
        let unprivileged = (config.eperm > 0).then(|| {
            let me = fixture.pid;
            scope.spawn(move || run_unprivileged(me, config.eperm))
        });
        let handles: Vec<_> = (0..config.threads)
            .map(|t| {
                let (fixture, racers, stop) = (&fixture, &racers, &*stop);
                let valid = valid_shares.as_ref().map(|s| s[t]);
                let invalid = [
                    (Call::BadFd, bad_fd[t]),
                    (Call::DeadPid, dead_pid[t]),
                    (Call::BadType, bad_type[t]),
                ];
                scope.spawn(move || {
                    if !racers.is_empty() {
                        pin(0, t % cpus());
                    }
                    run_thread(fixture, config, racers, valid, invalid, stop)
                })
            })
            .collect();
        if let Some(d) = config.duration.filter(|_| valid_total.is_none()) {
            std::thread::sleep(d);
            stop.store(true, Ordering::Relaxed);
        }
        let mut tallies = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a stress thread panicked"))
            })
            .collect::<anyhow::Result<Vec<(Tally, u64)>>>()?;
        if let Some(h) = unprivileged {
            let tally = h
                .join()
                .map_err(|_| anyhow::anyhow!("the unprivileged thread panicked"))??;
            tallies.push((tally, 0));
        }
        // The readers run for as long as the kcmp threads did.
        proc_stop.store(true, Ordering::Relaxed);
        let reads = PROC_READER_LOOP.join(proc_readers)?;
        let mm_opens = MM_READER_LOOP.join(mm_readers)?;
        anyhow::Ok((tallies, reads, mm_opens))
    });
    let elapsed = started.elapsed().as_secs_f64();
    for child in &mut racer_children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let tsync_sections = stop_tsync_racers(tsync_children)?;
    let (tallies, reads, mm_opens) = result?;

    let mut report = StressReport {
        pid: std::process::id(),
        threads: config.threads,
        exec_racers: config.exec_racers,
        tsync_racers: config.tsync_racers,
        racer_pids: racers,
        tsync_sections,
        elapsed_s: elapsed,
        epoll_slot: config
            .types
            .contains(&KCMP_EPOLL_TFD)
            .then(|| EpollSlotRecord {
                efd: fixture.epoll.as_raw_fd() as u32,
                tfd: fixture.file.as_raw_fd() as u32,
                toff: 0,
            }),
        // An open that fails (the target exiting) ran no reader: not counted.
        proc_reads: if config.proc_readers > 0 {
            ProcReader::ALL
                .iter()
                .map(|&r| (r.name().to_owned(), opened(&reads[r as usize])))
                .chain([(ENVIRON.to_owned(), opened(&reads[PROC_READERS]))])
                .collect()
        } else {
            BTreeMap::new()
        },
        mm_reads: (config.mm_readers > 0).then(|| {
            let opens = &mm_opens[0];
            MmReads {
                threads: config.mm_readers,
                file: MM_FILES[0].to_owned(),
                opens: opens.values().sum(),
                by_result: opens
                    .iter()
                    .map(|(&errno, &n)| (open_result_name(errno), n))
                    .collect(),
            }
        }),
        ..Default::default()
    };
    report.call_threads = tallies.iter().map(|(_, spawned)| spawned).sum();
    for ((ty, ret), n) in tallies.iter().flat_map(|(tally, _)| tally) {
        report.calls += n;
        *report
            .by_type
            .entry(type_slot_name(type_slot(*ty)).to_owned())
            .or_default() += n;
        *report
            .by_result
            .entry(result_name(*ret).into_owned())
            .or_default() += n;
        if *ret != -(libc::ESRCH as i64) {
            report.reached_comparison += n;
        }
    }
    report.calls_per_s = report.calls as f64 / elapsed.max(1e-9);
    Ok(report)
}

/// Every kcmp type, for `--types all`.
pub const ALL_TYPES: [u32; 8] = [
    KCMP_FILE,
    KCMP_VM,
    KCMP_FILES,
    KCMP_FS,
    KCMP_SIGHAND,
    KCMP_IO,
    KCMP_SYSVSEM,
    KCMP_EPOLL_TFD,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(shares(20_000, 7).iter().sum::<u64>(), 20_000);
    }

    #[test]
    fn counts_are_exact_and_results_as_expected() {
        let report = run(&StressConfig {
            threads: 3,
            types: ALL_TYPES.to_vec(),
            calls: Some(1_000),
            duration: None,
            bad_fd: 50,
            dead_pid: 20,
            bad_type: 10,
            eperm: 0,
            exec_racers: 0,
            tsync_racers: 0,
            thread_per_call: false,
            proc_readers: 2,
            mm_readers: 2,
        })
        .expect("stress");
        assert_eq!(report.calls, 1_000);
        // This process's own files: every read got past open().
        assert_eq!(report.proc_reads.len(), PROC_FILES.len());
        assert!(report.proc_reads.values().sum::<u64>() > 0);
        // Every open of its own environ succeeded, and each counted once.
        let mm = report.mm_reads.as_ref().expect("mm_reads");
        assert!(mm.opens > 0);
        assert_eq!((mm.threads, mm.file.as_str()), (2, ENVIRON));
        assert_eq!(
            mm.by_result,
            BTreeMap::from([(OPENED.to_owned(), mm.opens)])
        );
        assert_eq!(mm.opened(), mm.opens);
        assert_eq!(report.by_result.get("EBADF"), Some(&50));
        assert_eq!(report.by_result.get("ESRCH"), Some(&20));
        assert_eq!(report.by_result.get("EINVAL"), Some(&10));
        // Every valid self-comparison is equal, whatever the type.
        assert_eq!(report.by_result.get("equal"), Some(&920));
        assert_eq!(report.by_type.get("invalid"), Some(&10));
        assert_eq!(report.reached_comparison, 980);
        assert_eq!(report.call_threads, 0);
    }

    #[test]
    fn failed_opens_are_counted_by_errno() {
        let stop = AtomicBool::new(true);
        // A pid no kernel hands out: its /proc directory does not exist.
        let opens = MM_READER_LOOP.run(&[DEAD_PID], 0, &stop);
        assert_eq!(opens, vec![BTreeMap::from([(libc::ENOENT, 1)])]);
        assert_eq!(opened(&opens[0]), 0);
        assert_eq!(open_result_name(0), OPENED);
        assert_eq!(open_result_name(libc::ENOENT), "ENOENT");
        assert_eq!(open_result_name(libc::EACCES), "EACCES");
        assert_eq!(open_result_name(libc::ENOMEM), "errno12");
    }

    #[test]
    fn a_thread_per_call() {
        let report = run(&StressConfig {
            threads: 2,
            types: vec![KCMP_VM],
            calls: Some(300),
            duration: None,
            bad_fd: 10,
            dead_pid: 0,
            bad_type: 0,
            eperm: 0,
            exec_racers: 0,
            tsync_racers: 0,
            thread_per_call: true,
            proc_readers: 0,
            mm_readers: 0,
        })
        .expect("stress");
        assert_eq!(report.calls, 300);
        assert_eq!(report.call_threads, 300);
        assert_eq!(report.mm_reads, None);
        assert_eq!(report.by_result.get("EBADF"), Some(&10));
    }
}
