//! `cargo xtask bench`: builds the release binaries and measures tracing overhead side by
//! side (`kcmp-trace-bench`) on this machine, in the fast-path kernel under qemu for each attach
//! mode, and in Debian's stock 7.2 and 6.12 under the default plan (where the everyone-else
//! section matters: the kernels users run), writing JSON under target/bench/.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use clap::Args;
use kcmp_trace_common::json::bench::{BenchReport, KcmpBench, Setup, Step, Workload};

use crate::{
    kernel::{Flavour, Kernel, Preempt, Version, ensure_kernel},
    setup,
    target::{Target, static_bench_binary},
    vm::{VmSpec, default_files, run as run_vm},
    workspace::{build_release, cargo, run_checked, workspace_root},
};

/// Counting's (or another setup's) added ns per kcmp call over no tracer, in a run.
fn added(k: &KcmpBench, setup: Setup) -> f64 {
    k.rows
        .iter()
        .find(|row| row.setup == setup)
        .map_or(f64::NAN, |row| row.kcmp_added_ns)
}

/// Per preemption model and attach mode: what counting adds per kcmp call, over no tracer
/// and over the empty programs, as a ratio to the empty programs and to fentry on the same
/// model, and the runs the kernel skipped; then its programs' added run time per call (BPF
/// statistics) and how much of it the cost ladder's steps explain.
fn price_table(rows: &[(String, String, KcmpBench)]) -> String {
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
    for (model, mode, k) in rows {
        let fentry = rows
            .iter()
            .find(|(m, md, _)| m == model && md == "fentry")
            .map_or(f64::NAN, |(_, _, f)| added(f, Setup::Counters));
        let explained = k.explained.iter().find(|e| e.setup == Setup::Counters);
        out += &format!(
            "{:<22} {:<11} {:>14.1} {:>9.2}x {:>9.1} {:>12.2}x {:>9.2}x {:>8} {:>10.1} {:>10.1}\n",
            model,
            mode,
            added(k, Setup::Counters),
            k.counters_vs_empty,
            added(k, Setup::Counters) - added(k, Setup::EmptyPrograms),
            k.events_vs_empty,
            added(k, Setup::Counters) / fentry,
            k.missed_runs,
            explained.map_or(f64::NAN, |e| e.added_ns),
            explained.map_or(f64::NAN, |e| e.explained_ns),
        );
    }
    out
}

/// Per preemption model and attach mode: each step of the cost ladder, ns per run over the
/// empty program on sys_enter_kcmp.
fn ladder_table(rows: &[(String, String, KcmpBench)]) -> String {
    let mut out = format!("{:<22} {:<11}", "kernel", "mode");
    for step in Step::ALL {
        out += &format!(" {:>9}", step.name());
    }
    out.push('\n');
    for (model, mode, k) in rows {
        out += &format!("{model:<22} {mode:<11}");
        for step in Step::ALL {
            let ns = k
                .components
                .iter()
                .find(|c| c.step == Some(step))
                .map_or(f64::NAN, |c| c.added_ns);
            out += &format!(" {ns:>9.1}");
        }
        out.push('\n');
    }
    out
}

/// Per loop that never calls kcmp, per kernel: each setup's slowdown in percent over no
/// tracer, and counting's, `--stacks`', `--readers`' and `--readers --stacks`' over the
/// floor (the empty programs on counting's hooks).
fn everyone_else_table(rows: &[(String, BenchReport)]) -> String {
    let mut out = format!(
        "{:<18} {:<22} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "loop",
        "kernel",
        "mode",
        "floor",
        "counters",
        "vs floor",
        "stacks",
        "readers",
        "vs floor",
        "+stacks"
    );
    for workload in Workload::ALL {
        for (kernel, r) in rows {
            let Some(e) = &r.everyone_else else { continue };
            let pct = |setup: Setup, vs_floor: bool| {
                e.rows
                    .iter()
                    .find(|row| row.workload == workload && row.setup == setup)
                    .map_or("-".to_owned(), |row| {
                        let x = if vs_floor {
                            row.vs_floor_pct
                        } else {
                            row.vs_no_tracer_pct
                        };
                        format!("{x:+.1}%")
                    })
            };
            out += &format!(
                "{:<18} {:<22} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                workload.name(),
                kernel,
                r.attach_mode,
                pct(Setup::EmptyPrograms, false),
                pct(Setup::Counters, false),
                pct(Setup::Counters, true),
                pct(Setup::Stacks, true),
                pct(Setup::Readers, false),
                pct(Setup::Readers, true),
                pct(Setup::ReadersStacks, true),
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

/// A guest that runs `kcmp-trace-bench` once per (name, arguments); each run's JSON is
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
    fn run(&self, args: &BenchArgs, out_dir: &Path) -> anyhow::Result<Vec<BenchReport>> {
        let label = self.label();
        eprintln!("bench: {label} (TCG: absolute numbers are emulated; compare ratios)");
        let script: String = self
            .runs
            .iter()
            .map(|(name, extra)| {
                format!(
                    "kcmp-trace-bench {extra} --rounds {} --round {} --json-out /results/{name}.json\n",
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
        spec.files.push((
            static_bench_binary(Target::X86_64),
            "/usr/bin/kcmp-trace-bench".to_owned(),
        ));
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

/// A run's JSON, read into the bench's own types: a key missing on either side is an error.
fn read_report(path: &Path) -> anyhow::Result<BenchReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let path = setup::ensure()?;
    let bin = build_release(&path)?;
    crate::dist::check_no_bench_programs(&bin)?;
    run_checked(cargo(&path).args(["build", "--release", "-p", "kcmp-trace-bench"]))?;
    let bench = bin.with_file_name("kcmp-trace-bench");
    if !args.no_vm {
        crate::dist::build_static(&path, &[Target::X86_64])?;
        crate::dist::build_static_bench(&path, Target::X86_64)?;
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
        std::process::Command::new(&bench)
            .args(["--rounds", &rounds, "--round", &args.round])
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
            let scrape = crate::scrape::run(&bin, &out_dir, args.serve_secs)?;
            print!("{}", crate::scrape::table(&scrape));
            let json = out_dir.join("serve.json");
            std::fs::write(&json, serde_json::to_string_pretty(&scrape)?)
                .with_context(|| format!("writing {}", json.display()))?;
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
            let kcmp = report
                .kcmp
                .with_context(|| format!("{}: {mode} has no kcmp section", guest.label()))?;
            prices.push((guest.label(), (*mode).to_owned(), kcmp));
        }
    }
    for guest in [
        stock(Version::V7_2, Preempt::Lazy),
        stock(Version::V6_12, Preempt::Voluntary),
    ] {
        for report in guest.run(&args, &out_dir)? {
            if let Some(kcmp) = &report.kcmp {
                prices.push((guest.label(), report.attach_mode.clone(), kcmp.clone()));
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
    use kcmp_trace_common::json::bench::{Component, EveryoneElse, Explained, OtherRow, Row};

    use super::*;

    fn row(setup: Setup, kcmp_added_ns: f64) -> Row {
        Row {
            setup,
            kcmp_ns: 0.0,
            kcmp_calls_per_s: 0.0,
            kcmp_added_ns,
            getpid_ns: 0.0,
            getpid_added_ns: 0.0,
            mmap_ns: 0.0,
            mmap_slowdown_pct: 0.0,
        }
    }

    fn rung(step: Option<Step>, added_ns: f64) -> Component {
        Component {
            step,
            added_ns,
            ..Component::default()
        }
    }

    fn kcmp(counters_ns: f64, clock_ns: f64) -> KcmpBench {
        KcmpBench {
            rows: vec![
                row(Setup::EmptyPrograms, 100.0),
                row(Setup::Counters, counters_ns),
            ],
            counters_vs_empty: counters_ns / 100.0,
            events_vs_empty: 3.0,
            events_vs_counters: 1.0,
            stacks_vs_counters: 1.0,
            counters_vs_bpftrace: None,
            events_vs_bpftrace_lines: None,
            peer_missing: None,
            events_delivered: 0,
            events_dropped: 0,
            events_unflushed: 0,
            missed_runs: 0,
            program_costs: Vec::new(),
            components: vec![rung(None, 0.0), rung(Some(Step::Clock), clock_ns)],
            explained: vec![Explained {
                setup: Setup::Counters,
                added_ns: 150.0,
                explained_ns: 120.0,
            }],
            consumer_events_per_s: 0.0,
        }
    }

    #[test]
    fn price_table_carries_counting_over_the_empty_programs_and_the_explained_part() {
        let rows = [
            ("7.2-lazy".to_owned(), "fentry".to_owned(), kcmp(200.0, 1.0)),
            ("7.2-lazy".to_owned(), "kprobe".to_owned(), kcmp(400.0, 2.0)),
        ];
        let table = price_table(&rows);
        let kprobe: Vec<&str> = table
            .lines()
            .nth(2)
            .expect("a line per run")
            .split_whitespace()
            .collect();
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
                kcmp(200.0, 1.5),
            ),
            (
                "6.12-full".to_owned(),
                "tracepoint".to_owned(),
                kcmp(200.0, 2.5),
            ),
        ];
        let table = ladder_table(&rows);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "kernel", "mode", "pid_tgid", "clock", "thread", "totals", "counters", "comm",
                "event"
            ]
        );
        assert_eq!(lines[2][..4], ["6.12-full", "tracepoint", "NaN", "2.5"]);
    }

    #[test]
    fn everyone_else_table_has_a_row_per_loop_and_kernel() {
        let report = |mode: &str, counters: f64| {
            let row = |workload, setup, none, floor| OtherRow {
                workload,
                setup,
                ns_per_op: 1.0,
                ops_per_s: 1e9,
                vs_no_tracer_pct: none,
                vs_floor_pct: floor,
            };
            BenchReport {
                attach_mode: mode.to_owned(),
                strategy: "stock".to_owned(),
                preemption: "lazy".to_owned(),
                rounds: 1,
                round_ms: 1,
                kcmp: None,
                everyone_else: Some(EveryoneElse {
                    hooks: Vec::new(),
                    readers_missing: None,
                    rows: vec![
                        row(Workload::Getpid, Setup::NoTracer, 0.0, -2.0),
                        row(Workload::Getpid, Setup::EmptyPrograms, 2.0, 0.0),
                        row(Workload::Getpid, Setup::Counters, counters, 1.0),
                        row(Workload::Getpid, Setup::ReadersStacks, 9.0, 7.0),
                        row(Workload::Exec, Setup::Counters, 30.0, 20.0),
                    ],
                }),
            }
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
        assert_eq!(lines.len(), 13, "a header, six loops by two kernels");
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
                "-",
                "-",
                "+7.0%"
            ]
        );
        assert_eq!(
            lines[7][..6],
            ["exec", "host", "tracepoint", "-", "+30.0%", "+20.0%"]
        );
    }

    #[test]
    fn a_run_s_json_missing_a_key_is_refused() {
        let mut report = serde_json::to_value(BenchReport {
            attach_mode: "kprobe".to_owned(),
            strategy: "stock".to_owned(),
            preemption: "lazy".to_owned(),
            rounds: 1,
            round_ms: 1,
            kcmp: Some(kcmp(200.0, 1.0)),
            everyone_else: None,
        })
        .expect("serializes");
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("run.json");
        std::fs::write(&path, report.to_string()).expect("written");
        assert!(read_report(&path).is_ok());
        // As if the bench had renamed the key and the table still read the old name.
        let kcmp = report["kcmp"].as_object_mut().expect("kcmp is an object");
        let renamed = kcmp.remove("events_unflushed").expect("the key is written");
        kcmp.insert("events_left_staged".to_owned(), renamed);
        std::fs::write(&path, report.to_string()).expect("written");
        let err = read_report(&path).expect_err("a renamed key");
        assert!(
            format!("{err:#}").contains("missing field `events_unflushed`"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
