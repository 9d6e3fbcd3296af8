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
//!
//! A binary of its own: the product binary carries no bench program. `cargo xtask bench`
//! runs it here and in the guests.

mod everyone_else;
mod floor;
mod kcmp;
mod peer;
mod report;
mod rounds;
mod table;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use kcmp_trace::{
    cli::parse_duration,
    config::{AttachRequest, StrategyRequest, TraceConfig},
    error,
    loader::Tracer,
    probe::Capabilities,
};

use crate::{everyone_else::Workbench, report::BenchReport};

/// Measure what tracing kcmp costs here: no tracer, empty programs on the same hooks,
/// kcmp-trace counting and streaming, bpftrace; and what processes that never call kcmp pay.
#[derive(Debug, Parser)]
#[command(name = "kcmp-trace-bench", version)]
struct Args {
    /// Attach mode to measure.
    #[arg(long, value_enum, default_value_t = AttachRequest::Auto)]
    attach: AttachRequest,
    /// Strategy to measure.
    #[arg(long, value_enum, default_value_t = StrategyRequest::Auto)]
    strategy: StrategyRequest,
    /// Interleaved rounds; medians are reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Length of each measurement.
    #[arg(long, value_parser = parse_duration, default_value = "400ms")]
    round: Duration,
    /// Run one section only: `kcmp` (what kcmp calls pay) or `everyone-else` (loops that
    /// never call kcmp: getpid, /proc/PID/maps, process_vm_readv, exec, a ps-style scan,
    /// mmap).
    #[arg(long, value_enum, value_name = "SECTION")]
    only: Option<Section>,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "PATH")]
    json_out: Option<PathBuf>,
}

/// A part of the bench, run alone with `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// kcmp calls: the floor, counting, streaming, bpftrace, and where the time goes.
    Kcmp,
    /// Loops that never call kcmp, beside the floor, counting and --readers.
    EveryoneElse,
}

fn main() -> ExitCode {
    // The exec loop's child: exits at once.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == everyone_else::EXIT_ARG)
    {
        return ExitCode::SUCCESS;
    }
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "kcmp-trace-bench: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(error::exit::USAGE);
        }
    };
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_env("KCMP_TRACE_LOG")
        .init();
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kcmp-trace-bench: {}", error::one_line(&err));
            error::exit_code_of(&err)
        }
    }
}

fn bench(args: &Args) -> anyhow::Result<()> {
    let report = run(
        args.attach,
        args.strategy,
        args.rounds,
        args.round,
        args.only,
    )?;
    print!("{}", table::report(&report));
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn run(
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
    // The floor goes where counting's programs go, and only attaching tells where: the
    // verifier and the kernel's privileges have their say in the plan.
    let plan = Tracer::start_with(&config, &caps)?.plan.clone();
    let kcmp = runs(Section::Kcmp)
        .then(|| kcmp::measure(&plan, &caps, &config, rounds, round))
        .transpose()?;
    let everyone_else = workbench
        .map(|mut bench| everyone_else::measure(&mut bench, &plan, &caps, &config, rounds, round))
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
