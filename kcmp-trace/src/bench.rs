//! Overhead measured side by side: the same kcmp (and getpid, mmap) loop with no tracer,
//! with do-nothing programs on the same hooks, with kcmp-trace counting and streaming, and
//! with bpftrace doing the same two jobs. Rounds interleave the configurations and the
//! medians are reported, so drift on a noisy machine hits every configuration alike.
//!
//! Then, apart from the rounds: where the time goes (each program's run time, from the
//! kernel's BPF statistics) and how fast the event consumer drains and formats a full ring.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    os::fd::AsRawFd as _,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kcmp_trace_common::{event::Event, kcmp::KCMP_FILE, maps::misc};
use serde::Serialize;

use crate::{
    loader::{Floor, TraceConfig, Tracer},
    plan::{AttachRequest, StrategyRequest},
    probe::Capabilities,
    sinks::event::EventRecord,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setup {
    NoTracer,
    EmptyPrograms,
    Counters,
    Events,
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
            Setup::BpftraceCounts => "bpftrace_counts",
            Setup::BpftraceLines => "bpftrace_lines",
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

/// A program's average run time, from the kernel's BPF statistics.
#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub setup: Setup,
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub attach_mode: String,
    pub strategy: String,
    /// The kernel's preemption model, which decides the default attach mode.
    pub preemption: String,
    pub rounds: usize,
    pub round_ms: u64,
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
    /// Events per second the consumer drains from a full ring and formats as NDJSON.
    pub consumer_events_per_s: f64,
}

/// ns per call of `f`, run for `len`.
fn time_loop(len: Duration, mut f: impl FnMut()) -> f64 {
    const BATCH: u64 = 256;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < len {
        for _ in 0..BATCH {
            f();
        }
        calls += BATCH;
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
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl EventDrain {
    fn start(mut ring: aya::maps::RingBuf<aya::maps::MapData>) -> EventDrain {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::with_capacity(1 << 16);
            let mut n = 0u64;
            loop {
                let stopping = flag.load(Ordering::Relaxed);
                n += format_all(&mut ring, &mut out);
                if stopping {
                    return n;
                }
                // Woken by the kernel past the backlog mark, else on the drain timer.
                let mut pfd = libc::pollfd {
                    fd: ring.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; the ring keeps its fd open.
                unsafe {
                    libc::poll(
                        &mut pfd,
                        1,
                        kcmp_trace_common::maps::EVENT_DRAIN_MS as libc::c_int,
                    )
                };
            }
        });
        EventDrain { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Drains the ring, formatting each event as an NDJSON line into `out` (emptied as it
/// fills, as a pipe would be); returns the events read.
fn format_all(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, out: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    while let Some(item) = ring.next() {
        if item.len() >= size_of::<Event>() {
            // SAFETY: the eBPF side writes whole `Event`s; read_unaligned copes with alignment.
            let event: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            let _ = serde_json::to_writer(&mut *out, &EventRecord::from(&event));
            out.push(b'\n');
            if out.len() > 1 << 16 {
                out.clear();
            }
            n += 1;
        }
    }
    n
}

/// bpftrace running a script, its output drained by a thread as a reader would.
struct Peer {
    child: Child,
}

impl Peer {
    fn start(script: &str) -> anyhow::Result<Peer> {
        let mut child = Command::new("bpftrace")
            .args(["-e", script])
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

pub fn run(
    attach: AttachRequest,
    strategy: StrategyRequest,
    rounds: usize,
    round: Duration,
) -> anyhow::Result<BenchReport> {
    let config = TraceConfig {
        attach,
        strategy,
        ..TraceConfig::default()
    };
    let events_config = TraceConfig {
        events: true,
        ..config.clone()
    };
    let caps = Capabilities::detect();
    // The plan the tracer picks decides where the floor goes.
    let plan = Tracer::start_with(&config, &caps)?.plan.clone();
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
    let getpid = || {
        // SAFETY: no arguments.
        unsafe { libc::syscall(libc::SYS_getpid) };
    };
    let mmap = || {
        // SAFETY: an anonymous private page, unmapped at once.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                libc::munmap(p, 4096);
            }
        }
    };
    let attach_setup = |setup: Setup| -> anyhow::Result<Attached> {
        Ok(match setup {
            Setup::NoTracer => Attached::None,
            Setup::EmptyPrograms => Attached::Floor(Floor::attach(&plan, &caps)?),
            Setup::Counters => {
                Attached::Tracer(Box::new(Tracer::start_with(&config, &caps)?), None)
            }
            Setup::Events => {
                let mut t = Tracer::start_with(&events_config, &caps)?;
                let drain = t.take_events().map(EventDrain::start);
                Attached::Tracer(Box::new(t), drain)
            }
            Setup::BpftraceCounts => Attached::Peer(Peer::start(BPFTRACE_COUNTS)?),
            Setup::BpftraceLines => Attached::Peer(Peer::start(BPFTRACE_LINES)?),
        })
    };

    let mut kcmp_ns = vec![Vec::new(); setups.len()];
    let mut getpid_ns = vec![Vec::new(); setups.len()];
    let mut mmap_ns = vec![Vec::new(); setups.len()];
    let (mut delivered, mut dropped, mut missed) = (0u64, 0u64, 0u64);
    for r in 0..rounds {
        // Rotate the order so no setup always runs first or last in a round.
        for k in 0..setups.len() {
            let i = (k + r) % setups.len();
            let attached = attach_setup(setups[i])?;
            time_loop(round / 10, kcmp); // warm caches and the JIT'd path
            kcmp_ns[i].push(time_loop(round, kcmp));
            getpid_ns[i].push(time_loop(round, getpid));
            mmap_ns[i].push(time_loop(round, mmap));
            if let Attached::Tracer(t, drain) = attached {
                missed += t.hook_counters()?.iter().map(|h| h.misses).sum::<u64>();
                if let Some(drain) = drain {
                    dropped += t.counters()?.misc[misc::EVENTS_DROPPED];
                    drop(t);
                    delivered += drain.finish();
                }
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
            mmap_slowdown_pct: (m[i] / m[0] - 1.0) * 100.0,
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
    Ok(BenchReport {
        attach_mode: plan.mode.name().to_owned(),
        strategy: plan.strategy.name().to_owned(),
        preemption: plan.preemption.describe(),
        rounds,
        round_ms: round.as_millis() as u64,
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
        program_costs: program_costs(round, &plan, &caps, &config, &events_config, kcmp)?,
        consumer_events_per_s: consumer_ceiling(&caps, &events_config, kcmp)?,
    })
}

/// Each program's ns per run, with the kernel's BPF statistics on for one measurement per
/// setup (they cost every run a clock read or two, so they stay off during the rounds).
fn program_costs(
    round: Duration,
    plan: &crate::plan::Plan,
    caps: &Capabilities,
    config: &TraceConfig,
    events_config: &TraceConfig,
    kcmp: impl Fn() + Copy,
) -> anyhow::Result<Vec<ProgramCost>> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics: {e}"))?;
    let mut costs = Vec::new();
    let cost = |setup, program: String, runs: u64, ns: u64| ProgramCost {
        setup,
        program,
        runs,
        ns_per_run: if runs == 0 {
            0.0
        } else {
            ns as f64 / runs as f64
        },
    };
    let floor = Floor::attach(plan, caps)?;
    time_loop(round, kcmp);
    for (program, c) in floor.run_stats()? {
        costs.push(cost(
            Setup::EmptyPrograms,
            program,
            c.run_count,
            c.run_time_ns,
        ));
    }
    drop(floor);
    for (setup, config) in [(Setup::Counters, config), (Setup::Events, events_config)] {
        let mut tracer = Tracer::start_with(config, caps)?;
        let drain = tracer.take_events().map(EventDrain::start);
        time_loop(round, kcmp);
        for h in tracer.hook_counters()? {
            let program = format!("{} on {}", h.program, h.target);
            costs.push(cost(setup, program, h.run_count, h.run_time_ns));
        }
        drop(tracer);
        if let Some(drain) = drain {
            drain.finish();
        }
    }
    Ok(costs)
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
    let mut ring = tracer.take_events().context("event ring")?;
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
    out.push_str(&format!(
        "{:<16} {:>10} {:>13} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
        "setup",
        "kcmp ns",
        "kcmp calls/s",
        "kcmp +ns",
        "getpid ns",
        "getpid +ns",
        "mmap ns",
        "mmap +%"
    ));
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
    out.push_str("where the time goes (BPF statistics, ns per run):\n");
    for c in &r.program_costs {
        out.push_str(&format!(
            "  {:<16} {:<52} {:>8.1} ns  ({} runs)\n",
            c.setup.name(),
            c.program,
            c.ns_per_run,
            c.runs
        ));
    }
    out
}
