//! `cargo xtask bench`: builds the release binary and measures tracing overhead side by side
//! (`kcmp-trace bench`) on this machine, in the fast-path kernel under qemu for each attach
//! mode, and in Debian's stock 7.2 and 6.12 under the default plan (where the everyone-else
//! section matters: the kernels users run), writing JSON under target/bench/.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use clap::Args;

use crate::{
    kernel::{Flavour, Kernel, Preempt, Version, ensure_kernel},
    setup,
    target::Target,
    vm::{VmSpec, default_files, run as run_vm},
    workspace::{build_release, cargo, run_checked, workspace_root},
};

/// Per preemption model and attach mode: what counting adds per kcmp call, over no tracer
/// and over the empty programs, as a ratio to the empty programs and to fentry on the same
/// model, and the runs the kernel skipped; then its programs' added run time per call (BPF
/// statistics) and how much of it the cost ladder's steps explain.
fn price_table(rows: &[(String, String, serde_json::Value)]) -> String {
    let added = |r: &serde_json::Value, setup: &str| {
        r["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["setup"] == setup))
            .and_then(|row| row["kcmp_added_ns"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let explained = |r: &serde_json::Value, field: &str| {
        r["explained"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["setup"] == "counters"))
            .and_then(|e| e[field].as_f64())
            .unwrap_or(f64::NAN)
    };
    let mut out = format!(
        "{:<22} {:<11} {:>14} {:>10} {:>9} {:>13} {:>10} {:>8} {:>10} {:>10}\n",
        "kernel",
        "mode",
        "counters +ns",
        "vs empty",
        "+ns",
        "events/empty",
        "vs fentry",
        "skipped",
        "BPF +ns",
        "explained"
    );
    for (model, mode, r) in rows {
        let fentry = rows
            .iter()
            .find(|(m, md, _)| m == model && md == "fentry")
            .map_or(f64::NAN, |(_, _, f)| added(f, "counters"));
        out += &format!(
            "{:<22} {:<11} {:>14.1} {:>9.2}x {:>9.1} {:>12.2}x {:>9.2}x {:>8} {:>10.1} {:>10.1}\n",
            model,
            mode,
            added(r, "counters"),
            r["counters_vs_empty"].as_f64().unwrap_or(f64::NAN),
            added(r, "counters") - added(r, "empty_programs"),
            r["events_vs_empty"].as_f64().unwrap_or(f64::NAN),
            added(r, "counters") / fentry,
            r["missed_runs"]
                .as_u64()
                .map_or("?".into(), |n| n.to_string()),
            explained(r, "added_ns"),
            explained(r, "explained_ns")
        );
    }
    out
}

/// Per preemption model and attach mode: each step of the cost ladder, ns per run over the
/// empty program on sys_enter_kcmp.
fn ladder_table(rows: &[(String, String, serde_json::Value)]) -> String {
    let steps: Vec<String> = rows
        .first()
        .and_then(|(_, _, r)| r["components"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c["step"].as_str().map(str::to_owned))
        .collect();
    let mut out = format!("{:<22} {:<11}", "kernel", "mode");
    for step in &steps {
        out += &format!(" {step:>9}");
    }
    out.push('\n');
    for (model, mode, r) in rows {
        out += &format!("{model:<22} {mode:<11}");
        for step in &steps {
            let ns = r["components"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["step"] == step.as_str()))
                .and_then(|c| c["added_ns"].as_f64())
                .unwrap_or(f64::NAN);
            out += &format!(" {ns:>9.1}");
        }
        out.push('\n');
    }
    out
}

/// Per loop that never calls kcmp, per kernel: each setup's slowdown in percent over no
/// tracer, and counting's and `--readers`' over the floor (the empty programs on counting's
/// hooks).
fn everyone_else_table(rows: &[(String, serde_json::Value)]) -> String {
    let mut out = format!(
        "{:<18} {:<22} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "loop", "kernel", "mode", "floor", "counters", "vs floor", "readers", "vs floor"
    );
    let loops: Vec<String> = rows
        .first()
        .and_then(|(_, r)| r["everyone_else"]["rows"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|row| row["workload"].as_str().map(str::to_owned))
        .fold(Vec::new(), |mut loops, w| {
            if !loops.contains(&w) {
                loops.push(w);
            }
            loops
        });
    for workload in &loops {
        for (kernel, r) in rows {
            let pct = |setup: &str, field: &str| {
                r["everyone_else"]["rows"]
                    .as_array()
                    .and_then(|rows| {
                        rows.iter().find(|row| {
                            row["workload"] == workload.as_str() && row["setup"] == setup
                        })
                    })
                    .and_then(|row| row[field].as_f64())
                    .map_or("-".to_owned(), |x| format!("{x:+.1}%"))
            };
            out += &format!(
                "{:<18} {:<22} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                workload,
                kernel,
                r["attach_mode"].as_str().unwrap_or("?"),
                pct("empty_programs", "vs_no_tracer_pct"),
                pct("counters", "vs_no_tracer_pct"),
                pct("counters", "vs_floor_pct"),
                pct("readers", "vs_no_tracer_pct"),
                pct("readers", "vs_floor_pct"),
            );
        }
    }
    out
}

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
    /// Only the everyone-else section (loops that never call kcmp), on this machine and in
    /// the stock guests: no streaming, no daemon, no fast-path guests.
    #[arg(long)]
    everyone_else: bool,
    /// Seconds of stress for the daemon's scrape-latency and memory benchmark (0: skip).
    #[arg(long, default_value_t = 60)]
    serve_secs: u64,
}

/// A guest that runs `kcmp-trace bench` once per (name, arguments); each run's JSON is
/// `<name>.json` in the guest's directory under `out_dir`.
struct BenchGuest<'a> {
    kernel: Kernel,
    preempt: Preempt,
    runs: Vec<(&'a str, String)>,
}

impl BenchGuest<'_> {
    fn label(&self) -> String {
        format!("{}-{}", self.kernel, self.preempt.name())
    }

    /// Boots the guest, runs the benches and reads their reports back, in `runs` order.
    fn run(&self, args: &BenchArgs, out_dir: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
        let label = self.label();
        eprintln!("bench: {label} (TCG: absolute numbers are emulated; compare ratios)");
        let script: String = self
            .runs
            .iter()
            .map(|(name, extra)| {
                format!(
                    "kcmp-trace bench {extra} --rounds {} --round {} --json-out /results/{name}.json\n",
                    args.rounds, args.round
                )
            })
            .collect();
        let mut spec = VmSpec::new(
            format!("bench-{label}"),
            ensure_kernel(self.kernel)?,
            format!("set -e\n{script}"),
        );
        spec.cmdline.push(self.preempt.cmdline());
        spec.files = default_files(Target::X86_64)?;
        spec.timeout = Duration::from_secs(1800);
        let dir = out_dir.join(format!("vm-{label}"));
        spec.results_dir = Some(dir.clone());
        let outcome = run_vm(&spec).context("benchmark guest")?;
        print!("{}", outcome.output);
        ensure!(
            outcome.exit_code == 0,
            "benchmark guest failed ({})",
            outcome.console_log.display()
        );
        self.runs
            .iter()
            .map(|(name, _)| read_report(&dir.join(format!("{name}.json"))))
            .collect()
    }
}

fn read_report(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let path = setup::ensure()?;
    let bin = build_release(&path)?;
    if !args.no_vm {
        crate::dist::build_static(&path, &[Target::X86_64])?;
    }
    let out_dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let rounds = args.rounds.to_string();
    let only: &[&str] = if args.everyone_else {
        &["--only", "everyone-else"]
    } else {
        &[]
    };

    eprintln!("bench: this machine");
    let host_json = out_dir.join("host.json");
    run_checked(
        std::process::Command::new(&bin)
            .args(["bench", "--rounds", &rounds, "--round", &args.round])
            .args(only)
            .arg("--json-out")
            .arg(&host_json),
    )?;
    if !args.everyone_else {
        eprintln!(
            "bench: streaming every call: two stress threads through `events --json` into a pipe and through the daemon's /events; a lone call's latency"
        );
        let stream = crate::stream::run(&bin, &out_dir)?;
        print!("{}", crate::stream::table(&stream));
        if args.serve_secs > 0 {
            eprintln!(
                "bench: the daemon: /metrics scrape latency and RSS over {} s of stress with an /events client",
                args.serve_secs
            );
            run_checked(
                cargo(&path)
                    .args(["test", "--release", "-p", "kcmp-trace", "--test", "serve"])
                    .args(["--", "--ignored", "--nocapture", "scrape_benchmark"])
                    .env("KCMP_TRACE_BENCH_SECS", args.serve_secs.to_string())
                    .env("KCMP_TRACE_BENCH_OUT", out_dir.join("serve.json")),
            )?;
        }
    }
    if args.no_vm {
        return Ok(());
    }

    // The price of each attach mode under each preemption model the 6.12 kernel boots
    // with (auto picks fentry where kernel code is not preempted, kprobes where it is), and
    // on 7.2 under its default, lazy, where kprobe mode hooks the syscall with kprobes too.
    let modes = ["fentry", "kprobe", "tracepoint"];
    let fastpath = |version, preempt| BenchGuest {
        kernel: Kernel::new(Flavour::Fastpath, version),
        preempt,
        runs: modes
            .iter()
            .map(|&mode| (mode, format!("--attach {mode} --only kcmp")))
            .collect(),
    };
    // What everyone else pays on the kernels users run, per attach mode: Debian's 7.2
    // under its default model, and 6.12 under its own.
    let stock = |version, preempt| BenchGuest {
        kernel: Kernel::new(Flavour::Stock, version),
        preempt,
        runs: modes
            .iter()
            .map(|&mode| (mode, format!("--attach {mode} {}", only.join(" "))))
            .collect(),
    };
    let fastpath_guests = if args.everyone_else {
        Vec::new()
    } else {
        vec![
            fastpath(Version::V6_12, Preempt::Voluntary),
            fastpath(Version::V6_12, Preempt::Full),
            fastpath(Version::V7_2, Preempt::Lazy),
        ]
    };
    let mut prices = Vec::new();
    let mut everyone_else = vec![("host".to_owned(), read_report(&host_json)?)];
    for guest in fastpath_guests {
        for ((mode, _), report) in guest.runs.iter().zip(guest.run(&args, &out_dir)?) {
            prices.push((guest.label(), (*mode).to_owned(), report));
        }
    }
    for guest in [
        stock(Version::V7_2, Preempt::Lazy),
        stock(Version::V6_12, Preempt::Voluntary),
    ] {
        for report in guest.run(&args, &out_dir)? {
            if report.get("rows").is_some() {
                let mode = report["attach_mode"].as_str().unwrap_or("?").to_owned();
                prices.push((guest.label(), mode, report.clone()));
            }
            everyone_else.push((guest.label(), report));
        }
    }
    if !prices.is_empty() {
        println!("{}", price_table(&prices));
        println!(
            "the cost ladder: ns per run each step adds alone on sys_enter_kcmp\n{}",
            ladder_table(&prices)
        );
    }
    println!(
        "everyone else: slowdown over no tracer, and over the floor, under the default plan's mode\n{}",
        everyone_else_table(&everyone_else)
    );
    eprintln!("bench: JSON in {}", out_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(counters_ns: f64, clock_ns: f64) -> serde_json::Value {
        serde_json::json!({
            "rows": [
                {"setup": "empty_programs", "kcmp_added_ns": 100.0},
                {"setup": "counters", "kcmp_added_ns": counters_ns},
            ],
            "counters_vs_empty": counters_ns / 100.0,
            "events_vs_empty": 3.0,
            "missed_runs": 0,
            "explained": [{"setup": "counters", "added_ns": 150.0, "explained_ns": 120.0}],
            "components": [
                {"step": null, "added_ns": 0.0},
                {"step": "clock", "added_ns": clock_ns},
            ],
        })
    }

    #[test]
    fn price_table_carries_counting_over_the_empty_programs_and_the_explained_part() {
        let rows = [
            (
                "7.2-lazy".to_owned(),
                "fentry".to_owned(),
                report(200.0, 1.0),
            ),
            (
                "7.2-lazy".to_owned(),
                "kprobe".to_owned(),
                report(400.0, 2.0),
            ),
        ];
        let table = price_table(&rows);
        let kprobe: Vec<&str> = table.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(
            kprobe,
            [
                "7.2-lazy", "kprobe", "400.0", "4.00x", "300.0", "3.00x", "2.00x", "0", "150.0",
                "120.0"
            ]
        );
    }

    #[test]
    fn ladder_table_has_a_column_per_step() {
        let rows = [
            (
                "6.12-voluntary".to_owned(),
                "fentry".to_owned(),
                report(200.0, 1.5),
            ),
            (
                "6.12-full".to_owned(),
                "tracepoint".to_owned(),
                report(200.0, 2.5),
            ),
        ];
        let table = ladder_table(&rows);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], ["kernel", "mode", "clock"]);
        assert_eq!(lines[2], ["6.12-full", "tracepoint", "2.5"]);
    }

    #[test]
    fn everyone_else_table_has_a_row_per_loop_and_kernel() {
        let report = |mode: &str, counters: f64| {
            let row = |workload: &str, setup: &str, none: f64, floor: f64| {
                serde_json::json!({
                    "workload": workload, "setup": setup,
                    "vs_no_tracer_pct": none, "vs_floor_pct": floor,
                })
            };
            serde_json::json!({
                "attach_mode": mode,
                "everyone_else": {"rows": [
                    row("getpid", "no_tracer", 0.0, -2.0),
                    row("getpid", "empty_programs", 2.0, 0.0),
                    row("getpid", "counters", counters, 1.0),
                    row("exec", "counters", 30.0, 20.0),
                ]},
            })
        };
        let rows = [
            ("host".to_owned(), report("tracepoint", 3.0)),
            ("stock-7.2-lazy".to_owned(), report("kprobe", 4.5)),
        ];
        let table = everyone_else_table(&rows);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 5, "a header, two loops by two kernels");
        assert_eq!(
            lines[2],
            [
                "getpid",
                "stock-7.2-lazy",
                "kprobe",
                "+2.0%",
                "+4.5%",
                "+1.0%",
                "-",
                "-"
            ]
        );
        assert_eq!(
            lines[3][..6],
            ["exec", "host", "tracepoint", "-", "+30.0%", "+20.0%"]
        );
    }
}
