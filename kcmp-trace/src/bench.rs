//! Overhead measured side by side: the same kcmp (and getpid) loop with no tracer, with
//! do-nothing programs on the same hooks, and with kcmp-trace in each collection mode.
//! Rounds interleave the configurations and the medians are reported, so drift on a noisy
//! machine hits every configuration alike.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use kcmp_trace_common::kcmp::KCMP_FILE;
use serde::Serialize;

use crate::{
    loader::{Floor, TraceConfig, Tracer},
    plan::{AttachRequest, StrategyRequest},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setup {
    NoTracer,
    EmptyPrograms,
    Counters,
    Events,
}

const SETUPS: [Setup; 4] = [
    Setup::NoTracer,
    Setup::EmptyPrograms,
    Setup::Counters,
    Setup::Events,
];

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
    pub events_delivered: u64,
    pub events_dropped: u64,
    /// Runs of kcmp-trace's programs the kernel skipped while they were measured.
    pub missed_runs: u64,
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
}

/// Reads the event ring as a real consumer would, so events mode is measured delivering.
struct EventDrain {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl EventDrain {
    fn start(mut ring: aya::maps::RingBuf<aya::maps::MapData>) -> EventDrain {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                let stopping = flag.load(Ordering::Relaxed);
                while ring.next().is_some() {
                    n += 1;
                }
                if stopping {
                    return n;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        EventDrain { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
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
    let caps = crate::probe::Capabilities::detect();
    // The plan the tracer picks decides where the floor goes.
    let plan = Tracer::start_with(&config, &caps)?.plan.clone();

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

    let mut kcmp_ns = vec![Vec::new(); SETUPS.len()];
    let mut getpid_ns = vec![Vec::new(); SETUPS.len()];
    let mut mmap_ns = vec![Vec::new(); SETUPS.len()];
    let (mut delivered, mut dropped, mut missed) = (0u64, 0u64, 0u64);
    for r in 0..rounds {
        // Rotate the order so no setup always runs first or last in a round.
        for k in 0..SETUPS.len() {
            let i = (k + r) % SETUPS.len();
            let attached = match SETUPS[i] {
                Setup::NoTracer => Attached::None,
                Setup::EmptyPrograms => Attached::Floor(Floor::attach(&plan, &caps)?),
                Setup::Counters => {
                    Attached::Tracer(Box::new(Tracer::start_with(&config, &caps)?), None)
                }
                Setup::Events => {
                    let mut t = Tracer::start_with(
                        &TraceConfig {
                            events: true,
                            ..config.clone()
                        },
                        &caps,
                    )?;
                    let drain = t.take_events().map(EventDrain::start);
                    Attached::Tracer(Box::new(t), drain)
                }
            };
            time_loop(round / 10, kcmp); // warm caches and the JIT'd path
            kcmp_ns[i].push(time_loop(round, kcmp));
            getpid_ns[i].push(time_loop(round, getpid));
            mmap_ns[i].push(time_loop(round, mmap));
            if let Attached::Tracer(t, drain) = attached {
                missed += t.hook_counters()?.iter().map(|h| h.misses).sum::<u64>();
                if let Some(drain) = drain {
                    let counters = t.counters()?;
                    dropped += counters.misc[kcmp_trace_common::maps::misc::EVENTS_DROPPED];
                    drop(t);
                    delivered += drain.finish();
                }
            }
        }
    }

    let k: Vec<f64> = kcmp_ns.into_iter().map(median).collect();
    let g: Vec<f64> = getpid_ns.into_iter().map(median).collect();
    let m: Vec<f64> = mmap_ns.into_iter().map(median).collect();
    let rows: Vec<Row> = SETUPS
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
    let floor = rows[1].kcmp_added_ns;
    Ok(BenchReport {
        attach_mode: plan.mode.name().to_owned(),
        strategy: plan.strategy.name().to_owned(),
        preemption: plan.preemption.describe(),
        rounds,
        round_ms: round.as_millis() as u64,
        counters_vs_empty: rows[2].kcmp_added_ns / floor,
        events_vs_empty: rows[3].kcmp_added_ns / floor,
        rows,
        events_delivered: delivered,
        events_dropped: dropped,
        missed_runs: missed,
    })
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
        let name = serde_json::to_value(row.setup)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<16} {:>10.1} {:>13.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.2}\n",
            name,
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
        "added cost per kcmp call vs empty programs: counters {:.2}x, events {:.2}x (target <= 1.30x counters)\n",
        r.counters_vs_empty, r.events_vs_empty
    ));
    out.push_str(&format!(
        "events mode: {} delivered, {} dropped; program runs the kernel skipped while measured: {}\n",
        r.events_delivered, r.events_dropped, r.missed_runs
    ));
    out
}
