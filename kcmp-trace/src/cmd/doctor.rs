//! `kcmp-trace doctor`: what this kernel allows and what the tracer will use.

use std::os::fd::AsFd as _;

use serde::Serialize;

use crate::{
    cli::DoctorArgs,
    config::TraceConfig,
    hook_cost::{self, HookCosts},
    loader::Tracer,
    plan::Plan,
    probe::{Capabilities, privilege::Privilege},
};

#[derive(Serialize)]
struct Doctor {
    #[serde(flatten)]
    capabilities: Capabilities,
    /// What this process may do: effective capabilities, perf_event_paranoid, perf events.
    privilege: Privilege,
    /// fentry tried on kcmp's syscall wrapper: attached, or why not.
    fentry: Result<(), String>,
    /// Comms read straight from task_struct (at this offset), or why the programs call
    /// bpf_get_current_comm() instead.
    direct_comm: Result<u32, String>,
    /// The plan `watch` would use, or why none works.
    plan: Result<Plan, String>,
    /// With `--cost`: what each of the plan's hooks ran and took per run over a workload
    /// that makes them all fire, or why that could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<Result<HookCosts, String>>,
    /// kcmp-trace programs loaded on this system now (a running daemon, another watch).
    loaded: Vec<LoadedProgram>,
    /// Map reads can run at SCHED_FIFO 1, so a reader preempted mid-read cannot make the
    /// kernel skip kcmp's probes on its CPU.
    unpreempted_reads: bool,
}

/// A kcmp-trace program some process has loaded, and what the kernel counted for it.
#[derive(Serialize)]
struct LoadedProgram {
    id: u32,
    name: String,
    /// Runs the kernel skipped: recursion misses, plus its kprobe's own misses.
    misses: u64,
    /// Runs (counted while kernel.bpf_stats_enabled=1).
    run_count: u64,
}

/// Our programs among those loaded, by name; the do-nothing ones of `bench` are left out.
fn loaded_programs() -> anyhow::Result<Vec<LoadedProgram>> {
    let ours = crate::plan::program_names();
    let link_misses: Vec<(u32, u64)> = aya::programs::loaded_links()
        .flatten()
        .map(|l| {
            let missed = crate::bpf_info::kprobe_link_missed(l.id()).unwrap_or(0);
            (l.program_id(), missed)
        })
        .collect();
    let mut loaded = Vec::new();
    for info in aya::programs::loaded_programs() {
        let info = info?;
        let Some(name) = info.name_as_str().filter(|n| ours.iter().any(|o| o == n)) else {
            continue;
        };
        // Unloaded since it was listed (another tracer detaching): no longer loaded.
        let Ok(fd) = info.fd() else {
            continue;
        };
        let counters = crate::bpf_info::program_counters(fd.as_fd())?;
        let probe: u64 = link_misses
            .iter()
            .filter(|(prog, _)| *prog == info.id())
            .map(|(_, n)| n)
            .sum();
        loaded.push(LoadedProgram {
            id: info.id(),
            name: name.to_owned(),
            misses: counters.recursion_misses + probe,
            run_count: counters.run_count,
        });
    }
    Ok(loaded)
}

/// The plan `watch` would attach, attached and detached again; with `cost`, what its hooks
/// cost while it is attached.
fn try_plan(
    caps: &Capabilities,
    cost: bool,
) -> (Result<Plan, String>, Option<Result<HookCosts, String>>) {
    let one_line = |e: anyhow::Error| crate::error::one_line(&e);
    match Tracer::start_with(&TraceConfig::default(), caps) {
        Ok(tracer) => (
            Ok(tracer.plan.clone()),
            cost.then(|| {
                hook_cost::measure(&tracer, hook_cost::Workload::DOCTOR).map_err(one_line)
            }),
        ),
        Err(e) => {
            let why = one_line(e);
            (
                Err(why.clone()),
                cost.then(|| Err(format!("no plan: {why}"))),
            )
        }
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let capabilities = Capabilities::detect();
    // Before trying anything ourselves, so only other processes' programs are listed.
    let loaded = loaded_programs()?;
    let fentry =
        crate::plan::checks::fentry_attaches(&capabilities).map_err(|e| crate::error::one_line(&e));
    let direct_comm =
        crate::plan::checks::direct_comm(&capabilities).map_err(|e| crate::error::one_line(&e));
    let (plan, cost) = try_plan(&capabilities, args.cost);
    let doctor = Doctor {
        capabilities,
        privilege: Privilege::read(),
        fentry,
        direct_comm,
        plan,
        cost,
        loaded,
        unpreempted_reads: crate::unpreempted::unpreempted_reads_possible(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doctor)?);
        return Ok(());
    }
    let c = &doctor.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("kernel            {}", c.kernel);
    println!(
        "arch              {} (kcmp's wrapper: {})",
        c.arch,
        kcmp_trace_common::arch::NATIVE.kcmp_wrapper()
    );
    println!("privileged        {}", yes(c.privileged));
    let p = &doctor.privilege;
    let caps = |held: bool| {
        let caps: Vec<&str> = (p.capabilities.iter())
            .filter(|&(_, &h)| h == held)
            .map(|(&cap, _)| cap)
            .collect();
        if caps.is_empty() {
            "none".to_owned()
        } else {
            caps.join(" ")
        }
    };
    if p.capabilities.is_empty() {
        println!("capabilities      unknown (/proc/self/status unreadable)");
    } else {
        println!(
            "capabilities      held: {}; missing: {}",
            caps(true),
            caps(false)
        );
    }
    println!(
        "perf_event_paranoid {}",
        p.perf_event_paranoid
            .map_or("unknown".into(), |level| level.to_string())
    );
    match &p.perf_events {
        Ok(()) => println!(
            "perf events       allowed: kprobe mode (and tracepoint mode) can attach through \
             perf_event_open"
        ),
        Err(why) => println!(
            "perf events       refused, so kprobe and tracepoint mode cannot attach: {why}"
        ),
    }
    println!("BTF               {}", yes(c.btf));
    match &doctor.direct_comm {
        Ok(offset) => println!("comm read         task_struct+{offset} (two loads)"),
        Err(why) => println!("comm read         bpf_get_current_comm() ({why})"),
    }
    match &c.tracefs {
        Ok(path) => println!("tracefs           {}", path.display()),
        Err(why) => println!("tracefs           no ({why})"),
    }
    println!("kcmp tracepoints  {}", yes(c.kcmp_tracepoints));
    println!(
        "tracepoint runs   {}",
        if c.syscall_tracepoints_faultable {
            "faultable (trace_call_bpf_faultable in kallsyms): preemptible, a program \
             preempted mid-run makes the kernel skip its other runs on that CPU"
        } else {
            "with preemption off (no trace_call_bpf_faultable in kallsyms)"
        }
    );
    match &c.kretprobe_instances_limited {
        None => println!(
            "kretprobes        {} instances each (defined in tracefs kprobe_events)",
            c.kretprobe_instances
        ),
        Some(why) => println!(
            "kretprobes        {} instances each, the kernel's default for perf kprobes ({why})",
            c.kretprobe_instances
        ),
    }
    println!("kprobes           {}", yes(c.kprobes));
    println!("preemption        {}", c.preemption.describe());
    println!(
        "skipped runs      {}",
        match (c.recursion_misses_readable, c.probe_misses_readable) {
            (true, true) => "counted per program and per kprobe",
            (true, false) =>
                "counted per program; a kprobe's own misses are not reported before Linux 6.7",
            _ => "not reported before Linux 5.12",
        }
    );
    println!(
        "map reads         {}",
        if doctor.unpreempted_reads {
            "at SCHED_FIFO 1: a reader preempted mid-read cannot make the kernel skip runs"
        } else {
            "at the caller's priority (SCHED_FIFO not allowed: no CAP_SYS_NICE or \
             RLIMIT_RTPRIO); on a preemptible kernel a read preempted midway makes the \
             kernel skip kprobe and tracepoint runs on its CPU (counted and shown)"
        }
    );
    match &doctor.fentry {
        Ok(()) => println!("fentry            yes"),
        Err(why) => println!("fentry            no ({why})"),
    }
    println!(
        "bpf_stats         {}",
        if c.bpf_stats_enabled {
            "on"
        } else {
            "off (sysctl kernel.bpf_stats_enabled=1 to see program run time)"
        }
    );
    println!(
        "exec_update_seq   {} (BTF member: {}, helpers out of line: {})",
        if c.series.present() {
            "present"
        } else {
            "absent"
        },
        yes(c.series.btf_member),
        yes(c.series.helpers_out_of_line)
    );
    println!("symbols           kallsyms  BTF");
    for s in &c.symbols {
        println!("  {:<34} {:<8}  {}", s.name, yes(s.kallsyms), yes(s.btf));
    }
    match &doctor.plan {
        Ok(plan) => {
            println!("plan");
            for line in plan.describe() {
                println!("  {line}");
            }
        }
        Err(why) => println!("plan              none: {why}"),
    }
    match &doctor.cost {
        Some(Ok(costs)) => {
            println!("cost");
            for line in costs.describe() {
                println!("  {line}");
            }
        }
        Some(Err(why)) => println!("cost              not measured: {why}"),
        None => {}
    }
    if doctor.loaded.is_empty() {
        println!("loaded            no kcmp-trace programs loaded by other processes");
    } else {
        let skipped: u64 = doctor.loaded.iter().map(|p| p.misses).sum();
        println!(
            "loaded            {} kcmp-trace programs, {skipped} runs skipped by the kernel",
            doctor.loaded.len()
        );
        for p in &doctor.loaded {
            println!("  {:<6} {:<16} skipped {}", p.id, p.name, p.misses);
        }
    }
    Ok(())
}
