//! The rounds: each setup attached in turn, a loop timed beside it, medians of the rounds.

use std::time::{Duration, Instant};

use kcmp_trace::{config::TraceConfig, loader::Tracer, plan::Plan, probe::Capabilities};

use crate::{
    floor::Floor,
    kcmp::EventDrain,
    peer::{self, Peer},
    report::Setup,
};

/// What kcmp-trace is asked for in `setup`, on top of counting's `config`.
pub fn traced_as(setup: Setup, config: &TraceConfig) -> TraceConfig {
    TraceConfig {
        events: setup == Setup::Events,
        readers: matches!(setup, Setup::Readers | Setup::ReadersStacks),
        stacks: matches!(setup, Setup::Stacks | Setup::ReadersStacks),
        ..config.clone()
    }
}

/// ns per call of `f`, run for `len`. Batches grow to 256 calls: a fast call reads the clock
/// rarely, and a slow one (an exec under emulation) overruns `len` by little.
pub fn time_loop(len: Duration, mut f: impl FnMut()) -> f64 {
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

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Something attached for one measurement, detached on drop.
pub enum Attached {
    None,
    Floor(#[allow(dead_code)] Floor),
    Tracer(Box<Tracer>, Option<EventDrain>),
    Peer(#[allow(dead_code)] Peer),
}

/// Attaches a setup: `plan` places the floor, `config` is what counting is asked for.
pub fn attach(
    setup: Setup,
    plan: &Plan,
    caps: &Capabilities,
    config: &TraceConfig,
) -> anyhow::Result<Attached> {
    Ok(match setup {
        Setup::NoTracer => Attached::None,
        Setup::EmptyPrograms => Attached::Floor(Floor::attach(plan, caps)?),
        Setup::Counters | Setup::Events | Setup::Readers | Setup::Stacks | Setup::ReadersStacks => {
            let mut tracer = Tracer::start_with(&traced_as(setup, config), caps)?;
            let drain = tracer.take_events().map(EventDrain::start);
            Attached::Tracer(Box::new(tracer), drain)
        }
        Setup::BpftraceCounts => Attached::Peer(Peer::start(peer::BPFTRACE_COUNTS)?),
        Setup::BpftraceLines => Attached::Peer(Peer::start(peer::BPFTRACE_LINES)?),
    })
}

/// Indices of `setups` setups, round after round; each round's order is rotated so that no
/// setup always runs first or last.
pub fn interleaved(rounds: usize, setups: usize) -> impl Iterator<Item = usize> {
    (0..rounds).flat_map(move |r| (0..setups).map(move |k| (k + r) % setups))
}

/// `ns` over `base`, in percent.
pub fn slowdown_pct(ns: f64, base: f64) -> f64 {
    (ns / base - 1.0) * 100.0
}
