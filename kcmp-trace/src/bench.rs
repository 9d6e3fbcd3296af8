//! Overhead measured side by side: the same kcmp (and getpid, mmap) loop with no tracer,
//! with do-nothing programs on the same hooks, with kcmp-trace counting and streaming, and
//! with bpftrace doing the same two jobs. Rounds interleave the configurations and the
//! medians are reported, so drift on a noisy machine hits every configuration alike.
//!
//! Then, apart from the rounds: where the time goes (each program's run time, from the
//! kernel's BPF statistics, what the verifier and the JIT made of it, and the cost ladder:
//! each component of the programs' work alone on one hook) and how fast the event consumer
//! drains and formats a full ring.
//!
//! Everyone else: loops that never call kcmp ([`everyone_else`]), each with no tracer, the
//! do-nothing programs on the plan's hooks, counting and `--readers`, interleaved likewise.

use std::{
    convert::Infallible,
    io::{BufRead as _, BufReader, Read as _},
    os::fd::AsRawFd as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kcmp_trace_common::{
    event::Event,
    kcmp::KCMP_FILE,
    maps::misc,
    programs::{self, bench},
};
use serde::Serialize;

use crate::{
    bench_attach::{Floor, Solo},
    bpf_info::ProgramCounters,
    config::TraceConfig,
    config::{AttachRequest, StrategyRequest},
    event_stream::{EventReader, EventStream},
    loader::Tracer,
    plan::{Affects, Plan},
    probe::Capabilities,
    sinks::event::EventRecord,
};

pub mod everyone_else;

use everyone_else::{Workbench, Workload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setup {
    NoTracer,
    EmptyPrograms,
    Counters,
    Events,
    /// kcmp-trace counting with `--readers` (the everyone-else section only).
    Readers,
    /// bpftrace on the syscall tracepoints: calls by type and result, a log2 latency
    /// histogram.
    BpftraceCounts,
    /// bpftrace printing one line per call.
    BpftraceLines,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::NoTracer => "no_tracer",
            Setup::EmptyPrograms => "empty_programs",
            Setup::Counters => "counters",
            Setup::Events => "events",
            Setup::Readers => "readers",
            Setup::BpftraceCounts => "bpftrace_counts",
            Setup::BpftraceLines => "bpftrace_lines",
        }
    }

    /// What kcmp-trace is asked for in this setup, on top of counting's `config`.
    fn config(self, config: &TraceConfig) -> TraceConfig {
        TraceConfig {
            events: self == Setup::Events,
            readers: self == Setup::Readers,
            ..config.clone()
        }
    }
}

/// The peer's scripts: the same numbers kcmp-trace keeps (calls by type and result, a log2
/// latency histogram), then one line per call.
const BPFTRACE_COUNTS: &str = "tracepoint:syscalls:sys_enter_kcmp { @start[tid] = nsecs; @type[tid] = args->type; } \
    tracepoint:syscalls:sys_exit_kcmp /@start[tid]/ { @calls[@type[tid], args->ret] = count(); \
    @latency = hist(nsecs - @start[tid]); delete(@start[tid]); delete(@type[tid]); }";
const BPFTRACE_LINES: &str = "tracepoint:syscalls:sys_enter_kcmp { @start[tid] = nsecs; @type[tid] = args->type; } \
    tracepoint:syscalls:sys_exit_kcmp /@start[tid]/ { printf(\"%d %d %d %d %d %llu\\n\", pid, tid, \
    @type[tid], args->ret, args->ret < 0, nsecs - @start[tid]); delete(@start[tid]); delete(@type[tid]); }";

#[derive(Debug, Serialize)]
pub struct Row {
    pub setup: Setup,
    pub kcmp_ns: f64,
    pub kcmp_calls_per_s: f64,
    /// Median ns per kcmp call over no tracer.
    pub kcmp_added_ns: f64,
    pub getpid_ns: f64,
    pub getpid_added_ns: f64,
    /// An mmap+munmap pair: takes mm locks through the same rwsem code kcmp's hooks sit on.
    pub mmap_ns: f64,
    /// mmap+munmap slowdown over no tracer, in percent.
    pub mmap_slowdown_pct: f64,
}

/// What the verifier and the JIT made of a program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Image {
    /// Instructions the verifier processed (0 before Linux 5.16).
    pub verified_insns: u32,
    /// The program as the kernel runs it (helpers and map lookups inlined), in bytes.
    pub xlated_bytes: u32,
    /// Machine code, in bytes (0 without the JIT).
    pub jited_bytes: u32,
}

impl From<&ProgramCounters> for Image {
    fn from(c: &ProgramCounters) -> Image {
        Image {
            verified_insns: c.verified_insns,
            xlated_bytes: c.xlated_bytes,
            jited_bytes: c.jited_bytes,
        }
    }
}

/// A program's average run time, from the kernel's BPF statistics.
#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub setup: Setup,
    pub program: String,
    pub target: String,
    pub runs: u64,
    /// Runs per kcmp call (those of the program on kcmp's entry).
    pub runs_per_call: f64,
    pub ns_per_run: f64,
    /// Over the empty program on the same hook (0 for the empty programs).
    pub added_ns: f64,
    /// The components one run does (the cost ladder's steps), and their added ns summed.
    pub steps: Vec<Step>,
    pub explained_ns: f64,
    #[serde(flatten)]
    pub image: Image,
}

/// One component of the kcmp programs' work, as a program of the cost ladder does it alone
/// (kcmp-trace-ebpf/src/cost.rs, and support.rs's comm_read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// bpf_get_current_pid_tgid().
    PidTgid,
    /// bpf_ktime_get_ns().
    Clock,
    /// The per-thread state lookup in the THREADS LRU hash, an entry found.
    Thread,
    /// The per-process totals: the PROCESSES lookup and the atomic adds.
    Totals,
    /// The per-CPU counter and latency histogram updates.
    Counters,
    /// bpf_get_current_comm().
    Comm,
    /// One event staged and written (a sixteenth of a ring write, the wakeup decided); a
    /// reader drains.
    Event,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::PidTgid,
        Step::Clock,
        Step::Thread,
        Step::Totals,
        Step::Counters,
        Step::Comm,
        Step::Event,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::PidTgid => "pid_tgid",
            Step::Clock => "clock",
            Step::Thread => "thread",
            Step::Totals => "totals",
            Step::Counters => "counters",
            Step::Comm => "comm",
            Step::Event => "event",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Step::PidTgid => bench::COST_PID_TGID,
            Step::Clock => bench::COST_CLOCK,
            Step::Thread => bench::COST_THREAD,
            Step::Totals => bench::COST_TOTALS,
            Step::Counters => bench::COST_COUNTERS,
            Step::Comm => programs::COMM_READ,
            Step::Event => bench::COST_EVENT,
        }
    }

    /// The steps one run of a kcmp-trace program takes on the bench's calls (the eBPF
    /// crate's `calls::kcmp`), by what its hook is for.
    fn of(affects: &[Affects], events: bool) -> Vec<Step> {
        use Step::*;
        if affects.contains(&Affects::CallEntry) {
            vec![PidTgid, Clock, Thread]
        } else if affects.contains(&Affects::CallExit) {
            let mut steps = vec![PidTgid, Thread, Clock, Counters, Totals];
            if events {
                steps.extend([Event, Comm]);
            }
            steps
        } else if affects.contains(&Affects::LockWait) {
            vec![PidTgid, Thread, Clock]
        } else if affects.contains(&Affects::Outcome) {
            vec![PidTgid, Thread]
        } else {
            // The exec side: the bench's loop execs nothing.
            Vec::new()
        }
    }
}

/// The hook every step of the ladder runs on: it exists on every kernel kcmp-trace runs on.
const LADDER_HOOK: &str = "syscalls/sys_enter_kcmp";

/// A rung of the cost ladder: the empty program (no step), or one step alone.
#[derive(Debug, Serialize)]
pub struct Component {
    pub step: Option<Step>,
    pub program: &'static str,
    pub runs: u64,
    /// Median over the rounds.
    pub ns_per_run: f64,
    /// Over the empty program on the same hook.
    pub added_ns: f64,
    #[serde(flatten)]
    pub image: Image,
}

/// Per kcmp call: what a setup's programs add over the empty ones on the same hooks, and how
/// much of that the ladder's steps account for.
#[derive(Debug, Serialize)]
pub struct Explained {
    pub setup: Setup,
    pub added_ns: f64,
    pub explained_ns: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub attach_mode: String,
    pub strategy: String,
    /// The kernel's preemption model, which decides the default attach mode.
    pub preemption: String,
    pub rounds: usize,
    pub round_ms: u64,
    /// What a kcmp call pays (absent with `--only everyone-else`).
    #[serde(flatten)]
    pub kcmp: Option<KcmpBench>,
    /// What processes that never call kcmp pay (absent with `--only kcmp`).
    pub everyone_else: Option<EveryoneElse>,
}

#[derive(Debug, Serialize)]
pub struct KcmpBench {
    pub rows: Vec<Row>,
    /// kcmp-trace's added cost per kcmp call over that of the empty programs (target <= 1.3).
    pub counters_vs_empty: f64,
    pub events_vs_empty: f64,
    /// Streaming's added cost over counting's (target <= 1.3).
    pub events_vs_counters: f64,
    /// kcmp-trace's added cost over bpftrace's doing the same job (None without bpftrace).
    pub counters_vs_bpftrace: Option<f64>,
    pub events_vs_bpftrace_lines: Option<f64>,
    /// Why the bpftrace rows are missing, when they are.
    pub peer_missing: Option<String>,
    pub events_delivered: u64,
    pub events_dropped: u64,
    /// Runs of kcmp-trace's programs the kernel skipped while they were measured.
    pub missed_runs: u64,
    /// Where the time goes: every program's ns per run (counted apart from the rounds).
    pub program_costs: Vec<ProgramCost>,
    /// The cost ladder: each component of the programs' work alone on sys_enter_kcmp.
    pub components: Vec<Component>,
    /// Counting's and streaming's programs per kcmp call, against what the ladder explains.
    pub explained: Vec<Explained>,
    /// Events per second the consumer drains from a full ring and formats as NDJSON.
    pub consumer_events_per_s: f64,
}

/// Loops that never call kcmp, beside no tracer, the floor, counting and `--readers`.
#[derive(Debug, Serialize)]
pub struct EveryoneElse {
    /// What each setup hooks (the floor hooks what counting does).
    pub hooks: Vec<SetupHooks>,
    /// Why there is no readers setup, when there is none.
    pub readers_missing: Option<String>,
    pub rows: Vec<OtherRow>,
}

#[derive(Debug, Serialize)]
pub struct SetupHooks {
    pub setup: Setup,
    /// Kernel functions or tracepoints, one per attached program.
    pub targets: Vec<String>,
}

/// One loop under one setup, medians of the rounds.
#[derive(Debug, Serialize)]
pub struct OtherRow {
    pub workload: Workload,
    pub setup: Setup,
    pub ns_per_op: f64,
    pub ops_per_s: f64,
    /// Slowdown in percent: over no tracer, and over the empty programs on the plan's hooks.
    pub vs_no_tracer_pct: f64,
    pub vs_floor_pct: f64,
}

/// A part of the bench, run alone with `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// kcmp calls: the floor, counting, streaming, bpftrace, and where the time goes.
    Kcmp,
    /// Loops that never call kcmp, beside the floor, counting and --readers.
    EveryoneElse,
}

/// ns per call of `f`, run for `len`. Batches grow to 256 calls: a fast call reads the clock
/// rarely, and a slow one (an exec under emulation) overruns `len` by little.
fn time_loop(len: Duration, mut f: impl FnMut()) -> f64 {
    const BATCH: u64 = 256;
    let start = Instant::now();
    let (mut calls, mut batch) = (0u64, 1u64);
    while start.elapsed() < len {
        for _ in 0..batch {
            f();
        }
        calls += batch;
        batch = (batch * 2).min(BATCH);
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Something attached for one measurement, detached on drop.
enum Attached {
    None,
    Floor(#[allow(dead_code)] Floor),
    Tracer(Box<Tracer>, Option<EventDrain>),
    Peer(#[allow(dead_code)] Peer),
}

/// Reads the event ring as `events --json` does (drain, format, write, drop), so events
/// mode is measured delivering.
struct EventDrain {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<u64>>,
}

impl EventDrain {
    fn start(ring: EventStream) -> EventDrain {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            crate::lifecycle::runtime()?.block_on(async {
                let mut reader = EventReader::new(ring)?;
                let mut out = Vec::with_capacity(1 << 16);
                let mut n = 0u64;
                loop {
                    tokio::select! {
                        ready = reader.ready() => {
                            ready?;
                            n += format_all(&mut reader, &mut out);
                        }
                        _ = &mut stopped => break,
                    }
                }
                if let Err(e) = reader.flush_all() {
                    log::warn!("flushing the staged events: {e:#}");
                }
                Ok(n + format_all(&mut reader, &mut out))
            })
        });
        EventDrain { stop, thread }
    }

    fn finish(self) -> u64 {
        let _ = self.stop.send(());
        match self.thread.join() {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                log::warn!("draining the events: {e:#}");
                0
            }
            Err(_) => 0,
        }
    }
}

/// Drains the ring, formatting each event as an NDJSON line into `out` (emptied as it
/// fills, as a pipe would be); returns the events read.
fn format_all(ring: &mut EventReader, out: &mut Vec<u8>) -> u64 {
    let Ok(n) = ring.drain::<Infallible>(u64::MAX, |event| {
        let _ = serde_json::to_writer(&mut *out, &EventRecord::from(event));
        out.push(b'\n');
        if out.len() > 1 << 16 {
            out.clear();
        }
        Ok(())
    });
    n
}

/// bpftrace running a script, its output drained by a thread as a reader would.
struct Peer {
    child: Child,
}

impl Peer {
    fn start(script: &str) -> anyhow::Result<Peer> {
        // Unbuffered, so that its "Attaching" line arrives while it runs.
        let mut child = Command::new("bpftrace")
            .args(["-B", "none", "-e", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let mut out = BufReader::new(child.stdout.take().context("bpftrace stdout")?);
        let mut first = String::new();
        out.read_line(&mut first).context("reading bpftrace")?;
        if !first.starts_with("Attaching") {
            let _ = child.kill();
            bail!("bpftrace did not attach: {first:?}");
        }
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while out.read(&mut buf).is_ok_and(|n| n > 0) {}
        });
        Ok(Peer { child })
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
fn peer_missing() -> Option<String> {
    match Peer::start(BPFTRACE_COUNTS) {
        Ok(peer) => {
            drop(peer);
            None
        }
        Err(e) => Some(crate::error::one_line(&e)),
    }
}

/// Attaches a setup: `plan` places the floor, `config` is what counting is asked for.
fn attach(
    setup: Setup,
    plan: &Plan,
    caps: &Capabilities,
    config: &TraceConfig,
) -> anyhow::Result<Attached> {
    Ok(match setup {
        Setup::NoTracer => Attached::None,
        Setup::EmptyPrograms => Attached::Floor(Floor::attach(plan, caps)?),
        Setup::Counters | Setup::Events | Setup::Readers => {
            let mut tracer = Tracer::start_with(&setup.config(config), caps)?;
            let drain = tracer.take_events().map(EventDrain::start);
            Attached::Tracer(Box::new(tracer), drain)
        }
        Setup::BpftraceCounts => Attached::Peer(Peer::start(BPFTRACE_COUNTS)?),
        Setup::BpftraceLines => Attached::Peer(Peer::start(BPFTRACE_LINES)?),
    })
}

/// Indices of `setups` setups, round after round; each round's order is rotated so that no
/// setup always runs first or last.
fn interleaved(rounds: usize, setups: usize) -> impl Iterator<Item = usize> {
    (0..rounds).flat_map(move |r| (0..setups).map(move |k| (k + r) % setups))
}

pub fn run(
    attach: AttachRequest,
    strategy: StrategyRequest,
    rounds: usize,
    round: Duration,
    only: Option<Section>,
) -> anyhow::Result<BenchReport> {
    let runs = |section| only.is_none_or(|only| only == section);
    // Forked before anything is attached (Workbench::new says why).
    let workbench = runs(Section::EveryoneElse)
        .then(Workbench::new)
        .transpose()?;
    let config = TraceConfig {
        attach,
        strategy,
        ..TraceConfig::default()
    };
    let caps = Capabilities::detect();
    // The plan the tracer picks decides where the floor goes.
    let plan = Tracer::start_with(&config, &caps)?.plan.clone();
    let kcmp = runs(Section::Kcmp)
        .then(|| kcmp_calls(&plan, &caps, &config, rounds, round))
        .transpose()?;
    let everyone_else = workbench
        .map(|mut bench| other_loops(&mut bench, &plan, &caps, &config, rounds, round))
        .transpose()?;
    Ok(BenchReport {
        attach_mode: plan.mode.name().to_owned(),
        strategy: plan.strategy.name().to_owned(),
        preemption: plan.preemption.describe(),
        rounds,
        round_ms: round.as_millis() as u64,
        kcmp,
        everyone_else,
    })
}

/// The kcmp loop (and getpid, mmap) under every setup, interleaved; then where the time
/// goes and the consumer's ceiling.
fn kcmp_calls(
    plan: &Plan,
    caps: &Capabilities,
    config: &TraceConfig,
    rounds: usize,
    round: Duration,
) -> anyhow::Result<KcmpBench> {
    let events_config = Setup::Events.config(config);
    let peer_missing = peer_missing();
    let setups: Vec<Setup> = [
        Setup::NoTracer,
        Setup::EmptyPrograms,
        Setup::Counters,
        Setup::Events,
    ]
    .into_iter()
    .chain(
        peer_missing
            .is_none()
            .then_some([Setup::BpftraceCounts, Setup::BpftraceLines])
            .into_iter()
            .flatten(),
    )
    .collect();

    let file = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let fd = file.as_raw_fd() as u64;
    let me = std::process::id() as i64;
    let kcmp = || {
        // SAFETY: kcmp with integer arguments only.
        unsafe { libc::syscall(libc::SYS_kcmp, me, me, KCMP_FILE as i64, fd, fd) };
    };

    let mut kcmp_ns = vec![Vec::new(); setups.len()];
    let mut getpid_ns = vec![Vec::new(); setups.len()];
    let mut mmap_ns = vec![Vec::new(); setups.len()];
    let (mut delivered, mut dropped, mut missed) = (0u64, 0u64, 0u64);
    for i in interleaved(rounds, setups.len()) {
        let attached = attach(setups[i], plan, caps, config)?;
        time_loop(round / 10, kcmp); // warm caches and the JIT'd path
        kcmp_ns[i].push(time_loop(round, kcmp));
        getpid_ns[i].push(time_loop(round, everyone_else::getpid));
        mmap_ns[i].push(time_loop(round, everyone_else::mmap_munmap));
        if let Attached::Tracer(t, drain) = attached {
            missed += t.hook_counters()?.iter().map(|h| h.misses).sum::<u64>();
            if let Some(drain) = drain {
                dropped += t.counters()?.misc[misc::EVENTS_DROPPED];
                drop(t);
                delivered += drain.finish();
            }
        }
    }

    let k: Vec<f64> = kcmp_ns.into_iter().map(median).collect();
    let g: Vec<f64> = getpid_ns.into_iter().map(median).collect();
    let m: Vec<f64> = mmap_ns.into_iter().map(median).collect();
    let rows: Vec<Row> = setups
        .iter()
        .enumerate()
        .map(|(i, &setup)| Row {
            setup,
            kcmp_ns: k[i],
            kcmp_calls_per_s: 1e9 / k[i],
            kcmp_added_ns: k[i] - k[0],
            getpid_ns: g[i],
            getpid_added_ns: g[i] - g[0],
            mmap_ns: m[i],
            mmap_slowdown_pct: slowdown_pct(m[i], m[0]),
        })
        .collect();
    let added = |setup: Setup| {
        rows.iter()
            .find(|r| r.setup == setup)
            .map(|r| r.kcmp_added_ns)
    };
    let floor = added(Setup::EmptyPrograms).unwrap_or(f64::NAN);
    let counters = added(Setup::Counters).unwrap_or(f64::NAN);
    let events = added(Setup::Events).unwrap_or(f64::NAN);
    let (mut program_costs, components) = {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics: {e}"))?;
        (
            program_costs(round, plan, caps, config, &events_config, kcmp)?,
            ladder(rounds, round / 2, config, caps, kcmp)?,
        )
    };
    attribute(&mut program_costs, &components);
    let explained = explain(&program_costs);
    Ok(KcmpBench {
        counters_vs_empty: counters / floor,
        events_vs_empty: events / floor,
        events_vs_counters: events / counters,
        counters_vs_bpftrace: added(Setup::BpftraceCounts).map(|b| counters / b),
        events_vs_bpftrace_lines: added(Setup::BpftraceLines).map(|b| events / b),
        peer_missing,
        rows,
        events_delivered: delivered,
        events_dropped: dropped,
        missed_runs: missed,
        program_costs,
        components,
        explained,
        consumer_events_per_s: consumer_ceiling(caps, &events_config, kcmp)?,
    })
}

/// `ns` over `base`, in percent.
fn slowdown_pct(ns: f64, base: f64) -> f64 {
    (ns / base - 1.0) * 100.0
}

/// Every loop of [`Workload::ALL`] under no tracer, the floor, counting and `--readers`,
/// interleaved as the kcmp loop's setups are.
fn other_loops(
    bench: &mut Workbench,
    plan: &Plan,
    caps: &Capabilities,
    config: &TraceConfig,
    rounds: usize,
    round: Duration,
) -> anyhow::Result<EveryoneElse> {
    // Following the readers needs the kernel's BTF to place exec_update_lock.
    let (readers, readers_missing) = match Tracer::start_with(&Setup::Readers.config(config), caps)
    {
        Ok(tracer) => (Some(tracer.plan.clone()), None),
        Err(e) => (None, Some(crate::error::one_line(&e))),
    };
    let targets = |plan: &Plan| plan.hooks.iter().map(|h| h.target.clone()).collect();
    let mut setups = vec![Setup::NoTracer, Setup::EmptyPrograms, Setup::Counters];
    let mut hooks = vec![
        SetupHooks {
            setup: Setup::EmptyPrograms,
            targets: targets(plan),
        },
        SetupHooks {
            setup: Setup::Counters,
            targets: targets(plan),
        },
    ];
    if let Some(readers) = &readers {
        setups.push(Setup::Readers);
        hooks.push(SetupHooks {
            setup: Setup::Readers,
            targets: targets(readers),
        });
    }

    let mut ns = vec![vec![Vec::new(); setups.len()]; Workload::ALL.len()];
    for i in interleaved(rounds, setups.len()) {
        let _attached = attach(setups[i], plan, caps, config)?;
        for (w, &workload) in Workload::ALL.iter().enumerate() {
            let len = workload.len(round);
            // Failures were ruled out when the workbench was made; timing ignores them.
            let mut op = || {
                let _ = bench.op(workload);
            };
            time_loop(len / 10, &mut op); // warm caches and the hooks' paths
            ns[w][i].push(time_loop(len, &mut op));
        }
    }

    let mut rows = Vec::new();
    for (workload, ns) in Workload::ALL.into_iter().zip(ns) {
        let ns: Vec<f64> = ns.into_iter().map(median).collect();
        let (none, floor) = (ns[0], ns[1]);
        rows.extend(setups.iter().zip(ns).map(|(&setup, ns)| OtherRow {
            workload,
            setup,
            ns_per_op: ns,
            ops_per_s: 1e9 / ns,
            vs_no_tracer_pct: slowdown_pct(ns, none),
            vs_floor_pct: slowdown_pct(ns, floor),
        }));
    }
    Ok(EveryoneElse {
        hooks,
        readers_missing,
        rows,
    })
}

fn per_run(c: &ProgramCounters) -> f64 {
    if c.run_count == 0 {
        0.0
    } else {
        c.run_time_ns as f64 / c.run_count as f64
    }
}

/// Each program's ns per run, one measurement per setup, BPF statistics on (they cost every
/// run a clock read or two, so they stay off during the rounds).
fn program_costs(
    round: Duration,
    plan: &Plan,
    caps: &Capabilities,
    config: &TraceConfig,
    events_config: &TraceConfig,
    kcmp: impl Fn() + Copy,
) -> anyhow::Result<Vec<ProgramCost>> {
    let mut costs = Vec::new();
    // Runs per kcmp call: each program's runs over those of the program on kcmp's entry.
    let per_call = |runs: &[u64]| -> Vec<f64> {
        let calls = plan
            .hooks
            .iter()
            .position(|h| h.affects.contains(&Affects::CallEntry))
            .map_or(0, |i| runs[i]);
        runs.iter()
            .map(|&r| {
                if calls == 0 {
                    0.0
                } else {
                    r as f64 / calls as f64
                }
            })
            .collect()
    };
    let cost = |setup, program: &str, target: &str, c: &ProgramCounters, steps| ProgramCost {
        setup,
        program: program.to_owned(),
        target: target.to_owned(),
        runs: c.run_count,
        runs_per_call: 0.0,
        ns_per_run: per_run(c),
        added_ns: 0.0,
        steps,
        explained_ns: 0.0,
        image: Image::from(c),
    };
    let floor = Floor::attach(plan, caps)?;
    time_loop(round, kcmp);
    let stats = floor.run_stats()?;
    drop(floor);
    let share = per_call(
        &stats
            .iter()
            .map(|(_, _, c)| c.run_count)
            .collect::<Vec<_>>(),
    );
    for ((program, target, c), share) in stats.iter().zip(share) {
        costs.push(ProgramCost {
            runs_per_call: share,
            ..cost(Setup::EmptyPrograms, program, target, c, Vec::new())
        });
    }
    for (setup, config) in [(Setup::Counters, config), (Setup::Events, events_config)] {
        let mut tracer = Tracer::start_with(config, caps)?;
        let drain = tracer.take_events().map(EventDrain::start);
        time_loop(round, kcmp);
        let stats = tracer
            .plan
            .hooks
            .iter()
            .map(|h| tracer.program_counters(h.program))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let share = per_call(&stats.iter().map(|c| c.run_count).collect::<Vec<_>>());
        for ((hook, c), share) in tracer.plan.hooks.iter().zip(&stats).zip(share) {
            let steps = Step::of(hook.affects, config.events);
            costs.push(ProgramCost {
                runs_per_call: share,
                ..cost(setup, hook.program, &hook.target, c, steps)
            });
        }
        drop(tracer);
        if let Some(drain) = drain {
            drain.finish();
        }
    }
    Ok(costs)
}

/// The cost ladder: the empty program, then each step's program, alone on the same hook,
/// in rotated order each round; medians of ns per run. Each is loaded as the tracer loads
/// its object (globals, map sizes), and the event step has a reader draining its ring.
fn ladder(
    rounds: usize,
    len: Duration,
    config: &TraceConfig,
    caps: &Capabilities,
    kcmp: impl Fn() + Copy,
) -> anyhow::Result<Vec<Component>> {
    let rungs: Vec<(Option<Step>, &'static str)> = std::iter::once((None, bench::NOOP_TP))
        .chain(Step::ALL.map(|s| (Some(s), s.program())))
        .collect();
    let mut ns = vec![Vec::new(); rungs.len()];
    let mut runs = vec![0u64; rungs.len()];
    let mut images = vec![Image::default(); rungs.len()];
    for i in interleaved(rounds, rungs.len()) {
        let (step, program) = rungs[i];
        let mut solo = Solo::attach(config, caps, program, LADDER_HOOK)?;
        let drain = match step {
            Some(Step::Event) => Some(EventDrain::start(solo.take_events()?)),
            _ => None,
        };
        time_loop(len, kcmp);
        let c = solo.program_counters()?;
        drop(solo);
        if let Some(drain) = drain {
            drain.finish();
        }
        ns[i].push(per_run(&c));
        runs[i] += c.run_count;
        images[i] = Image::from(&c);
    }
    let ns: Vec<f64> = ns.into_iter().map(median).collect();
    Ok(rungs
        .iter()
        .enumerate()
        .map(|(i, &(step, program))| Component {
            step,
            program,
            runs: runs[i],
            ns_per_run: ns[i],
            added_ns: ns[i] - ns[0],
            image: images[i],
        })
        .collect())
}

/// Fills in each program's added ns (over the empty program on its hook) and explained ns
/// (its steps' added ns, from the ladder).
fn attribute(costs: &mut [ProgramCost], components: &[Component]) {
    let floors: Vec<(String, f64)> = costs
        .iter()
        .filter(|c| c.setup == Setup::EmptyPrograms)
        .map(|c| (c.target.clone(), c.ns_per_run))
        .collect();
    let step_ns = |step: Step| {
        components
            .iter()
            .find(|c| c.step == Some(step))
            .map_or(f64::NAN, |c| c.added_ns)
    };
    for cost in costs.iter_mut().filter(|c| c.setup != Setup::EmptyPrograms) {
        cost.added_ns = floors
            .iter()
            .find(|(target, _)| *target == cost.target)
            .map_or(f64::NAN, |(_, ns)| cost.ns_per_run - ns);
        cost.explained_ns = cost.steps.iter().fold(0.0, |sum, &s| sum + step_ns(s));
    }
}

/// Per kcmp call, for counting and streaming: their programs' added ns and explained ns,
/// each program weighted by its runs per call.
fn explain(costs: &[ProgramCost]) -> Vec<Explained> {
    [Setup::Counters, Setup::Events]
        .into_iter()
        .filter(|&setup| costs.iter().any(|c| c.setup == setup))
        .map(|setup| {
            let of = costs.iter().filter(|c| c.setup == setup);
            Explained {
                setup,
                added_ns: of.clone().map(|c| c.added_ns * c.runs_per_call).sum(),
                explained_ns: of.map(|c| c.explained_ns * c.runs_per_call).sum(),
            }
        })
        .collect()
}

/// Events per second the consumer drains and formats, the workload out of the way: the
/// ring fills (to half, so nothing drops) while nobody reads, then is drained and timed.
fn consumer_ceiling(
    caps: &Capabilities,
    events_config: &TraceConfig,
    kcmp: impl Fn(),
) -> anyhow::Result<f64> {
    const RING: u32 = 128 << 20;
    let config = TraceConfig {
        tgids: vec![std::process::id()],
        ring_bytes: RING,
        ..events_config.clone()
    };
    let mut tracer = Tracer::start_with(&config, caps)?;
    let rt = crate::lifecycle::runtime()?;
    let _rt = rt.enter();
    let mut ring = EventReader::new(tracer.take_events().context("event ring")?)?;
    let target = u64::from(RING / 2) / (size_of::<Event>() as u64 + 8);
    while tracer.counters()?.misc[misc::EVENTS_SENT] < target {
        for _ in 0..4096 {
            kcmp();
        }
    }
    let mut out = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    let drained = format_all(&mut ring, &mut out);
    Ok(drained as f64 / started.elapsed().as_secs_f64())
}

pub fn table(r: &BenchReport) -> String {
    let mut out = format!(
        "kcmp-trace overhead, attach mode {} (strategy {}), preemption {}, {} interleaved rounds of {} ms, medians\n",
        r.attach_mode, r.strategy, r.preemption, r.rounds, r.round_ms
    );
    if let Some(k) = &r.kcmp {
        out.push_str(&kcmp_table(k, r.rounds));
    }
    if let Some(e) = &r.everyone_else {
        out.push_str(&everyone_else_table(e));
    }
    out
}

fn kcmp_table(r: &KcmpBench, rounds: usize) -> String {
    let mut out = format!(
        "{:<16} {:>10} {:>13} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
        "setup",
        "kcmp ns",
        "kcmp calls/s",
        "kcmp +ns",
        "getpid ns",
        "getpid +ns",
        "mmap ns",
        "mmap +%"
    );
    for row in &r.rows {
        out.push_str(&format!(
            "{:<16} {:>10.1} {:>13.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.2}\n",
            row.setup.name(),
            row.kcmp_ns,
            row.kcmp_calls_per_s,
            row.kcmp_added_ns,
            row.getpid_ns,
            row.getpid_added_ns,
            row.mmap_ns,
            row.mmap_slowdown_pct
        ));
    }
    out.push_str(&format!(
        "added cost per kcmp call: counters {:.2}x the empty programs (target <= 1.30x), events {:.2}x counting (target <= 1.30x)\n",
        r.counters_vs_empty, r.events_vs_counters
    ));
    match (r.counters_vs_bpftrace, r.events_vs_bpftrace_lines, &r.peer_missing) {
        (Some(c), Some(e), _) => out.push_str(&format!(
            "against bpftrace doing the same job: counters {c:.2}x bpftrace's counts, events {e:.2}x bpftrace's lines (below 1: kcmp-trace is cheaper)\n"
        )),
        (_, _, Some(why)) => out.push_str(&format!("no bpftrace rows: {why}\n")),
        _ => {}
    }
    out.push_str(&format!(
        "events mode: {} delivered, {} dropped; program runs the kernel skipped while measured: {}\n",
        r.events_delivered, r.events_dropped, r.missed_runs
    ));
    out.push_str(&format!(
        "consumer: drains and formats {:.0} events/s from a full ring (target >= 1,000,000)\n",
        r.consumer_events_per_s
    ));
    out.push_str(&where_the_time_goes(r, rounds));
    out
}

/// Per loop that never calls kcmp, each setup's ns per op and slowdown; a setup is not
/// compared with itself.
fn everyone_else_table(e: &EveryoneElse) -> String {
    let mut out = String::from(
        "everyone else: loops that never call kcmp, ns per op; slowdown over no tracer and over \
         the floor (the empty programs on counting's hooks)\n",
    );
    for h in &e.hooks {
        out.push_str(&format!(
            "  {} hooks {}: {}\n",
            h.setup.name(),
            h.targets.len(),
            h.targets.join(", ")
        ));
    }
    if let Some(why) = &e.readers_missing {
        out.push_str(&format!("  no readers rows: {why}\n"));
    }
    out.push_str(&format!(
        "{:<18} {:<16} {:>12} {:>12} {:>13} {:>9}\n",
        "loop", "setup", "ns/op", "ops/s", "vs no tracer", "vs floor"
    ));
    let pct = |shown: bool, x: f64| {
        if shown {
            format!("{x:+.1}%")
        } else {
            String::new()
        }
    };
    for row in &e.rows {
        let line = format!(
            "{:<18} {:<16} {:>12.1} {:>12.1} {:>13} {:>9}",
            row.workload.name(),
            row.setup.name(),
            row.ns_per_op,
            row.ops_per_s,
            pct(row.setup != Setup::NoTracer, row.vs_no_tracer_pct),
            pct(
                !matches!(row.setup, Setup::NoTracer | Setup::EmptyPrograms),
                row.vs_floor_pct
            ),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Each program's run time and image, the ladder's steps, and how much of counting's and
/// streaming's added time the steps account for.
fn where_the_time_goes(r: &KcmpBench, rounds: usize) -> String {
    let mut out = String::from(
        "where the time goes (BPF statistics, ns per run; +ns: over the empty program on the same hook; \
         explained: the +ns of the steps one run takes; instructions verified, bytes xlated and JIT'd):\n",
    );
    out.push_str(&format!(
        "  {:<16} {:<52} {:>8} {:>8} {:>10} {:>9} {:>7} {:>7}  {}\n",
        "setup",
        "program on hook",
        "ns/run",
        "+ns",
        "explained",
        "verified",
        "xlated",
        "jited",
        "runs"
    ));
    for c in &r.program_costs {
        // Programs that did not run here (the exec side, lock waits) show only their image.
        let (added, explained) = match c.setup {
            Setup::EmptyPrograms => (String::new(), String::new()),
            _ if c.runs == 0 => (String::new(), String::new()),
            _ => (
                format!("{:.1}", c.added_ns),
                format!("{:.1}", c.explained_ns),
            ),
        };
        out.push_str(&format!(
            "  {:<16} {:<52} {:>8.1} {:>8} {:>10} {:>9} {:>7} {:>7}  {}\n",
            c.setup.name(),
            format!("{} on {}", c.program, c.target),
            c.ns_per_run,
            added,
            explained,
            c.image.verified_insns,
            c.image.xlated_bytes,
            c.image.jited_bytes,
            c.runs
        ));
    }
    out.push_str(&format!(
        "the steps, each alone on {LADDER_HOOK} (medians of {rounds} rounds):\n"
    ));
    for c in &r.components {
        out.push_str(&format!(
            "  {:<16} {:<52} {:>8.1} {:>8.1} {:>10} {:>9} {:>7} {:>7}  {}\n",
            c.step.map_or("(empty)", Step::name),
            c.program,
            c.ns_per_run,
            c.added_ns,
            "",
            c.image.verified_insns,
            c.image.xlated_bytes,
            c.image.jited_bytes,
            c.runs
        ));
    }
    for e in &r.explained {
        out.push_str(&format!(
            "per kcmp call, {} programs add {:.1} ns over the empty ones; the steps explain {:.1} ns ({:.0}%)\n",
            e.setup.name(),
            e.added_ns,
            e.explained_ns,
            e.explained_ns / e.added_ns * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(
        setup: Setup,
        target: &str,
        runs_per_call: f64,
        ns: f64,
        steps: Vec<Step>,
    ) -> ProgramCost {
        ProgramCost {
            setup,
            program: String::new(),
            target: target.to_owned(),
            runs: 0,
            runs_per_call,
            ns_per_run: ns,
            added_ns: 0.0,
            steps,
            explained_ns: 0.0,
            image: Image::default(),
        }
    }

    fn rung(step: Option<Step>, added_ns: f64) -> Component {
        Component {
            step,
            program: "",
            runs: 0,
            ns_per_run: 0.0,
            added_ns,
            image: Image::default(),
        }
    }

    #[test]
    fn steps_follow_what_a_hook_is_for() {
        use Step::*;
        assert_eq!(
            Step::of(&[Affects::CallEntry], true),
            [PidTgid, Clock, Thread]
        );
        assert_eq!(
            Step::of(&[Affects::CallExit], false),
            [PidTgid, Thread, Clock, Counters, Totals]
        );
        assert_eq!(
            Step::of(&[Affects::CallExit], true),
            [PidTgid, Thread, Clock, Counters, Totals, Event, Comm]
        );
        assert_eq!(
            Step::of(&[Affects::Outcome, Affects::LockWait], false),
            [PidTgid, Thread, Clock]
        );
        assert_eq!(Step::of(&[Affects::Outcome], false), [PidTgid, Thread]);
        assert!(Step::of(&[Affects::ExecSections], true).is_empty());
    }

    #[test]
    fn programs_are_measured_against_the_floor_on_their_own_hook() {
        let mut costs = vec![
            cost(Setup::EmptyPrograms, "enter", 1.0, 50.0, Vec::new()),
            cost(Setup::EmptyPrograms, "perm", 2.0, 30.0, Vec::new()),
            cost(
                Setup::Counters,
                "enter",
                1.0,
                200.0,
                vec![Step::Clock, Step::Thread],
            ),
            cost(Setup::Counters, "perm", 2.0, 40.0, vec![Step::Thread]),
            cost(Setup::Counters, "elsewhere", 1.0, 40.0, Vec::new()),
        ];
        let ladder = [
            rung(None, 0.0),
            rung(Some(Step::Clock), 100.0),
            rung(Some(Step::Thread), 20.0),
        ];
        attribute(&mut costs, &ladder);
        assert_eq!(costs[0].added_ns, 0.0);
        assert_eq!((costs[2].added_ns, costs[2].explained_ns), (150.0, 120.0));
        assert_eq!((costs[3].added_ns, costs[3].explained_ns), (10.0, 20.0));
        assert!(costs[4].added_ns.is_nan(), "no floor on that hook");
        assert!(
            costs[4].explained_ns.is_sign_positive(),
            "no steps: 0, not -0"
        );

        costs.pop();
        let explained = explain(&costs);
        assert_eq!(explained.len(), 1, "only setups that ran");
        assert_eq!(explained[0].setup, Setup::Counters);
        // Per call: the perm program runs twice.
        assert_eq!(explained[0].added_ns, 150.0 + 2.0 * 10.0);
        assert_eq!(explained[0].explained_ns, 120.0 + 2.0 * 20.0);
    }

    #[test]
    fn a_step_the_ladder_lacks_explains_nothing_known() {
        let mut costs = vec![cost(Setup::Events, "exit", 1.0, 9.0, vec![Step::Comm])];
        attribute(&mut costs, &[rung(None, 0.0)]);
        assert!(costs[0].explained_ns.is_nan());
    }

    #[test]
    fn every_step_has_its_own_ladder_program() {
        let mut programs: Vec<_> = Step::ALL.iter().map(|s| s.program()).collect();
        programs.sort_unstable();
        programs.dedup();
        assert_eq!(programs.len(), Step::ALL.len());
        assert!(
            programs.iter().all(|p| p.len() <= 15),
            "the kernel keeps 15 bytes"
        );
    }
}
