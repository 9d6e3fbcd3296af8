//! `cargo xtask bench`: builds the release binary and measures tracing overhead side by side
//! (`kcmp-trace bench`) on this machine and in the fast-path kernel under qemu for each attach
//! mode, writing JSON under target/bench/.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::Args;

use crate::{
    build_release,
    kernel::{Flavour, Kernel, Version, ensure_kernel},
    run_checked, setup,
    vm::{VmSpec, default_files, run as run_vm},
    workspace_root,
};

#[derive(Args)]
pub struct BenchArgs {
    /// Interleaved rounds (medians are reported).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Length of each measurement, e.g. 400ms.
    #[arg(long, default_value = "400ms")]
    round: String,
    /// Only this machine's kernel, no VM.
    #[arg(long)]
    no_vm: bool,
    /// Seconds of stress for the daemon's scrape-latency and memory benchmark (0: skip).
    #[arg(long, default_value_t = 60)]
    serve_secs: u64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let path = setup::ensure()?;
    let bin = build_release(&path)?;
    let out_dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let rounds = args.rounds.to_string();

    eprintln!("bench: this machine");
    run_checked(
        std::process::Command::new(bin)
            .args(["bench", "--rounds", &rounds, "--round", &args.round])
            .arg("--json-out")
            .arg(out_dir.join("host.json")),
    )?;
    if args.serve_secs > 0 {
        eprintln!(
            "bench: the daemon: /metrics scrape latency and RSS over {} s of stress with an /events client",
            args.serve_secs
        );
        run_checked(
            crate::cargo(&path)
                .args(["test", "--release", "-p", "kcmp-trace", "--test", "serve"])
                .args(["--", "--ignored", "--nocapture", "scrape_benchmark"])
                .env("KCMP_TRACE_BENCH_SECS", args.serve_secs.to_string()),
        )?;
    }
    if args.no_vm {
        return Ok(());
    }

    eprintln!(
        "bench: fast-path kernel under qemu (TCG: absolute numbers are emulated; compare ratios)"
    );
    let script: String = ["fentry", "kprobe", "tracepoint"]
        .iter()
        .map(|mode| {
            format!(
                "kcmp-trace bench --attach {mode} --rounds {rounds} --round {} --json-out /results/{mode}.json\n",
                args.round
            )
        })
        .collect();
    let mut spec = VmSpec::new(
        "bench",
        ensure_kernel(Kernel::new(Flavour::Fastpath, Version::V6_1))?,
        format!("set -e\n{script}"),
    );
    spec.files = default_files(&workspace_root())?;
    spec.timeout = Duration::from_secs(900);
    spec.results_dir = Some(out_dir.join("vm"));
    let outcome = run_vm(&spec).context("benchmark guest")?;
    print!("{}", outcome.output);
    ensure!(
        outcome.exit_code == 0,
        "benchmark guest failed ({})",
        outcome.console_log.display()
    );
    eprintln!("bench: JSON in {}", out_dir.display());
    Ok(())
}
