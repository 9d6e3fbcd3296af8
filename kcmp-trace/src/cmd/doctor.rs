//! `kcmp-trace doctor`: what this kernel allows and what the tracer will use.

use serde::Serialize;

use crate::{
    cli::DoctorArgs,
    loader::{TraceConfig, Tracer},
    plan::Plan,
    probe::Capabilities,
};

#[derive(Serialize)]
struct Doctor {
    #[serde(flatten)]
    capabilities: Capabilities,
    /// fentry tried on __x64_sys_kcmp: attached, or why not.
    fentry: Result<(), String>,
    /// The plan `watch` would use, or why none works.
    plan: Result<Plan, String>,
}

fn try_plan() -> Result<Plan, String> {
    Tracer::start(&TraceConfig::default())
        .map(|t| t.plan.clone())
        .map_err(|e| crate::error::one_line(&e))
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let capabilities = Capabilities::detect();
    let fentry = crate::loader::probe_fentry().map_err(|e| crate::error::one_line(&e));
    let plan = try_plan();
    let doctor = Doctor {
        capabilities,
        fentry,
        plan,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doctor)?);
        return Ok(());
    }
    let c = &doctor.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("kernel            {}", c.kernel);
    println!("privileged        {}", yes(c.privileged));
    println!("BTF               {}", yes(c.btf));
    println!(
        "tracefs           {}",
        c.tracefs
            .as_ref()
            .map_or("no".into(), |p| p.display().to_string())
    );
    println!("kcmp tracepoints  {}", yes(c.kcmp_tracepoints));
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
    Ok(())
}
