//! What a kcmp call pays: the kcmp loop (and getpid, mmap) beside every setup, then where
//! the time goes (each program's run time, from the kernel's BPF statistics, what the
//! verifier and the JIT made of it, and the cost ladder: each component of the programs'
//! work alone on one hook) and how fast the event consumer drains and formats a full ring.

use std::{
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use kcmp_trace::{
    bpf_info::{self, ProgramCounters},
    config::TraceConfig,
    event_stream::{Drained, EventReader, EventSink, EventStream},
    loader::Tracer,
    plan::{Affects, Plan},
    probe::Capabilities,
    sinks::event::EventRecord,
};
use kcmp_trace_common::{event::Event, kcmp::KCMP_FILE, maps::misc, programs::bench};

use crate::{
    floor::{Floor, Solo},
    peer,
    report::{
        Component, Explained, Image, KcmpBench, ProgramCost, Row, Setup, Step, image_of, steps_of,
    },
    rounds::{Attached, attach, interleaved, median, slowdown_pct, time_loop, traced_as},
};

/// The hook every step of the ladder runs on: it exists on every kernel kcmp-trace runs on.
pub const LADDER_HOOK: &str = "syscalls/sys_enter_kcmp";

/// The kcmp loop (and getpid, mmap) under every setup, interleaved; then where the time
/// goes and the consumer's ceiling.
pub fn measure(
    plan: &Plan,
    caps: &Capabilities,
    config: &TraceConfig,
    rounds: usize,
    round: Duration,
) -> anyhow::Result<KcmpBench> {
    let events_config = traced_as(Setup::Events, config);
    let peer_missing = peer::peer_missing();
    let setups: Vec<Setup> = [
        Setup::NoTracer,
        Setup::EmptyPrograms,
        Setup::Counters,
        Setup::Events,
        Setup::Stacks,
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
    let (mut delivered, mut dropped, mut unflushed, mut missed) = (0u64, 0u64, 0u64, 0u64);
    for i in interleaved(rounds, setups.len()) {
        let attached = attach(setups[i], plan, caps, config)?;
        time_loop(round / 10, kcmp); // warm caches and the JIT'd path
        kcmp_ns[i].push(time_loop(round, kcmp));
        getpid_ns[i].push(time_loop(round, crate::everyone_else::getpid));
        mmap_ns[i].push(time_loop(round, crate::everyone_else::mmap_munmap));
        if let Attached::Tracer(t, drain) = attached {
            missed += t.hook_counters()?.iter().map(|h| h.misses).sum::<u64>();
            if let Some(drain) = drain {
                dropped += t.counters()?.misc[misc::EVENTS_DROPPED];
                drop(t);
                let drained = drain.finish()?;
                delivered += drained.read;
                unflushed += drained.unflushed.total();
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
        let _stats =
            bpf_info::enable_run_time_stats().context("enabling BPF run-time statistics")?;
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
        stacks_vs_counters: added(Setup::Stacks).unwrap_or(f64::NAN) / counters,
        counters_vs_bpftrace: added(Setup::BpftraceCounts).map(|b| counters / b),
        events_vs_bpftrace_lines: added(Setup::BpftraceLines).map(|b| events / b),
        peer_missing,
        rows,
        events_delivered: delivered,
        events_dropped: dropped,
        events_unflushed: unflushed,
        missed_runs: missed,
        program_costs,
        components,
        explained,
        consumer_events_per_s: consumer_ceiling(caps, &events_config, kcmp)?,
    })
}

fn per_run(c: &ProgramCounters) -> f64 {
    bpf_info::ns_per_run(c.run_time_ns, c.run_count).unwrap_or(0.0)
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
        image: image_of(c),
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
            .map(|h| tracer.program_counters(&h.program))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let share = per_call(&stats.iter().map(|c| c.run_count).collect::<Vec<_>>());
        for ((hook, c), share) in tracer.plan.hooks.iter().zip(&stats).zip(share) {
            let steps = steps_of(&hook.affects, config.events);
            costs.push(ProgramCost {
                runs_per_call: share,
                ..cost(setup, &hook.program, &hook.target, c, steps)
            });
        }
        drop(tracer);
        if let Some(drain) = drain {
            drain.finish()?;
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
            drain.finish()?;
        }
        ns[i].push(per_run(&c));
        runs[i] += c.run_count;
        images[i] = image_of(&c);
    }
    let ns: Vec<f64> = ns.into_iter().map(median).collect();
    Ok(rungs
        .iter()
        .enumerate()
        .map(|(i, &(step, program))| Component {
            step,
            program: program.to_owned(),
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
    let rt = kcmp_trace::lifecycle::runtime()?;
    let _rt = rt.enter();
    let reader = EventReader::new(tracer.take_events().context("event ring")?)?;
    let target = u64::from(RING / 2) / (size_of::<Event>() as u64 + 8);
    while tracer.counters()?.misc[misc::EVENTS_SENT] < target {
        for _ in 0..4096 {
            kcmp();
        }
    }
    let started = Instant::now();
    // Stopped before it starts: the reader goes straight to its last drain, of everything.
    let drained = rt.block_on(reader.run(
        &mut Formatted(Vec::with_capacity(1 << 16)),
        std::future::ready(()),
    ))?;
    Ok(drained.read as f64 / started.elapsed().as_secs_f64())
}

/// Reads the event ring as `events --json` does (drain, format, write, drop), so events
/// mode is measured delivering.
pub struct EventDrain {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<Drained>>,
}

impl EventDrain {
    pub fn start(ring: EventStream) -> EventDrain {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            kcmp_trace::lifecycle::runtime()?.block_on(async {
                let reader = EventReader::new(ring)?;
                let stop = async {
                    let _ = stopped.await;
                };
                reader
                    .run(&mut Formatted(Vec::with_capacity(1 << 16)), stop)
                    .await
            })
        });
        EventDrain { stop, thread }
    }

    /// Events read, and what stayed staged.
    pub fn finish(self) -> anyhow::Result<Drained> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the event reader panicked"))?
    }
}

/// Formats each event as an NDJSON line, emptied as it fills, as a pipe would be.
struct Formatted(Vec<u8>);

impl EventSink for Formatted {
    fn take(&mut self, event: &Event) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.0, &EventRecord::from(event))?;
        self.0.push(b'\n');
        if self.0.len() > 1 << 16 {
            self.0.clear();
        }
        Ok(())
    }
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
            added_ns,
            ..Component::default()
        }
    }

    #[test]
    fn steps_follow_what_a_hook_is_for() {
        use Step::*;
        assert_eq!(
            steps_of(&[Affects::CallEntry], true),
            [PidTgid, Clock, Thread]
        );
        assert_eq!(
            steps_of(&[Affects::CallExit], false),
            [PidTgid, Thread, Clock, Counters, Totals]
        );
        assert_eq!(
            steps_of(&[Affects::CallExit], true),
            [PidTgid, Thread, Clock, Counters, Totals, Event, Comm]
        );
        assert_eq!(
            steps_of(&[Affects::Outcome, Affects::LockWait], false),
            [PidTgid, Thread, Clock]
        );
        assert_eq!(steps_of(&[Affects::Outcome], false), [PidTgid, Thread]);
        assert!(steps_of(&[Affects::ExecSections], true).is_empty());
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
