//! The bench's tables.

use kcmp_trace::sinks::columns::{
    Align::{Left, Right},
    Columns,
};

use crate::{
    kcmp::LADDER_HOOK,
    report::{BenchReport, EveryoneElse, KcmpBench, Setup, Step},
};

pub fn report(r: &BenchReport) -> String {
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
    let mut table = Columns::new(&[
        ("setup", 16, Left),
        ("kcmp ns", 10, Right),
        ("kcmp calls/s", 13, Right),
        ("kcmp +ns", 10, Right),
        ("getpid ns", 10, Right),
        ("getpid +ns", 10, Right),
        ("mmap ns", 10, Right),
        ("mmap +%", 9, Right),
    ]);
    for row in &r.rows {
        table.row(&[
            row.setup.name().into(),
            format!("{:.1}", row.kcmp_ns),
            format!("{:.0}", row.kcmp_calls_per_s),
            format!("{:.1}", row.kcmp_added_ns),
            format!("{:.1}", row.getpid_ns),
            format!("{:.1}", row.getpid_added_ns),
            format!("{:.1}", row.mmap_ns),
            format!("{:.2}", row.mmap_slowdown_pct),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!(
        "added cost per kcmp call: counters {:.2}x the empty programs (target <= 1.30x), events {:.2}x counting (target <= 1.30x), --stacks {:.2}x counting\n",
        r.counters_vs_empty, r.events_vs_counters, r.stacks_vs_counters
    ));
    match (r.counters_vs_bpftrace, r.events_vs_bpftrace_lines, &r.peer_missing) {
        (Some(c), Some(e), _) => out.push_str(&format!(
            "against bpftrace doing the same job: counters {c:.2}x bpftrace's counts, events {e:.2}x bpftrace's lines (below 1: kcmp-trace is cheaper)\n"
        )),
        (_, _, Some(why)) => out.push_str(&format!("no bpftrace rows: {why}\n")),
        _ => {}
    }
    out.push_str(&format!(
        "events mode: {} delivered, {} dropped, {} left staged; program runs the kernel skipped while measured: {}\n",
        r.events_delivered, r.events_dropped, r.events_unflushed, r.missed_runs
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
    let mut table = Columns::new(&[
        ("loop", 18, Left),
        ("setup", 16, Left),
        ("ns/op", 12, Right),
        ("ops/s", 12, Right),
        ("vs no tracer", 13, Right),
        ("vs floor", 9, Right),
    ]);
    let pct = |shown: bool, x: f64| {
        if shown {
            format!("{x:+.1}%")
        } else {
            String::new()
        }
    };
    for row in &e.rows {
        table.row(&[
            row.workload.name().into(),
            row.setup.name().into(),
            format!("{:.1}", row.ns_per_op),
            format!("{:.1}", row.ops_per_s),
            pct(row.setup != Setup::NoTracer, row.vs_no_tracer_pct),
            pct(
                !matches!(row.setup, Setup::NoTracer | Setup::EmptyPrograms),
                row.vs_floor_pct,
            ),
        ]);
    }
    out + &table.render()
}

/// Each program's run time and image, the ladder's steps, and how much of counting's and
/// streaming's added time the steps account for.
fn where_the_time_goes(r: &KcmpBench, rounds: usize) -> String {
    let mut out = String::from(
        "where the time goes (BPF statistics, ns per run; +ns: over the empty program on the same hook; \
         explained: the +ns of the steps one run takes; instructions verified, bytes xlated and JIT'd):\n",
    );
    // Two tables under one header: the programs measured, then the ladder's steps.
    let columns = [
        ("setup", 16, Left),
        ("program on hook", 52, Left),
        ("ns/run", 8, Right),
        ("+ns", 8, Right),
        ("explained", 10, Right),
        ("verified", 9, Right),
        ("xlated", 7, Right),
        ("jited", 7, Right),
        (" runs", 0, Left),
    ];
    let mut programs = Columns::new(&columns).indented("  ");
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
        programs.row(&[
            c.setup.name().into(),
            format!("{} on {}", c.program, c.target),
            format!("{:.1}", c.ns_per_run),
            added,
            explained,
            c.image.verified_insns.to_string(),
            c.image.xlated_bytes.to_string(),
            c.image.jited_bytes.to_string(),
            format!(" {}", c.runs),
        ]);
    }
    out.push_str(&programs.render());
    out.push_str(&format!(
        "the steps, each alone on {LADDER_HOOK} (medians of {rounds} rounds):\n"
    ));
    let mut steps = Columns::new(&columns).indented("  ");
    for c in &r.components {
        steps.row(&[
            c.step.map_or("(empty)", Step::name).into(),
            c.program.clone(),
            format!("{:.1}", c.ns_per_run),
            format!("{:.1}", c.added_ns),
            String::new(),
            c.image.verified_insns.to_string(),
            c.image.xlated_bytes.to_string(),
            c.image.jited_bytes.to_string(),
            format!(" {}", c.runs),
        ]);
    }
    // The ladder's own header would repeat the programs' one.
    out.extend(steps.render().lines().skip(1).map(|l| format!("{l}\n")));
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
