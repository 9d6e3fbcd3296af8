//! Tests in real kernels under qemu: the stock Debian 6.1 kernel and the project's
//! exec_update_seq kernel, whose test-only oracle (/sys/kernel/debug/kcmp_fastpath) counts
//! each kcmp call's path as the kernel decides it.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::{
    kernel::{KernelKind, ensure_kernel},
    vm::{VmSpec, default_files, run as run_vm},
    workspace_root,
};

/// Runs a stress workload gated on a file while tracers attach to its pid first, so every
/// counted call is the workload's. `$1` names the run, the rest are stress arguments.
const GUEST_LIB: &str = r#"
mkdir -p /tmp
oracle() { cat /sys/kernel/debug/kcmp_fastpath > /results/$1.oracle 2>/dev/null || true; }
reset_oracle() { echo 0 > /sys/kernel/debug/kcmp_fastpath 2>/dev/null || true; }
traced_stress() {
    name=$1; shift
    rm -f /tmp/go
    kcmp-trace stress --json --wait-for /tmp/go "$@" > /results/$name.stress.json &
    sp=$!
    kcmp-trace watch --json $T1 -p $sp > /results/$name.t1.json 2> /results/$name.t1.err &
    p1=$!
    kcmp-trace watch --json $T2 -p $sp > /results/$name.t2.json 2> /results/$name.t2.err &
    p2=$!
    for t in t1 t2; do
        n=0
        until grep -q attached /results/$name.$t.err; do
            sleep 0.2; n=$((n+1))
            [ $n -lt 300 ] || { cat /results/$name.$t.err; return 1; }
        done
    done
    reset_oracle
    touch /tmp/go
    wait $sp
    kill -INT $p1 $p2
    wait $p1 $p2
    oracle $name
}
"#;

/// Invalid calls of every kind, next to valid ones.
const ERROR_MIX: &str =
    "-n 3000 --threads 2 --types all --eperm 100 --dead-pid 50 --bad-fd 60 --bad-type 40";
const RACE: &str = "--duration 4s --threads 2 --exec-racers 2 --types vm,files,sighand";

fn fastpath_script() -> String {
    format!(
        r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
T1="--attach fentry --strategy direct" T2="--attach kprobe --strategy infer" traced_stress calm -n 20000 --threads 2 --types vm,files,file
T1="--attach fentry --strategy direct" T2="--attach fentry --strategy infer" traced_stress race_fentry {RACE}
T1="--attach kprobe --strategy direct" T2="--attach kprobe --strategy infer" traced_stress race_kprobe {RACE}
T1="--attach fentry --strategy direct" T2="--attach kprobe --strategy infer" traced_stress errors {ERROR_MIX}
T1="--attach tracepoint" T2="--attach auto" traced_stress boundary {ERROR_MIX}
rm -f /tmp/go
kcmp-trace stress --json --wait-for /tmp/go {RACE} > /results/writers.stress.json &
sp=$!
kcmp-trace events --json --ring-size 64M -p $sp > /results/writers.events.json 2> /results/writers.events.err &
ep=$!
until grep -q attached /results/writers.events.err; do sleep 0.2; done
touch /tmp/go
wait $sp
kill -INT $ep
wait $ep
"#
    )
}

fn stock_script() -> String {
    format!(
        r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
T1="--attach fentry" T2="--attach kprobe" traced_stress errors {ERROR_MIX}
T1="--attach tracepoint" T2="--attach auto" traced_stress boundary {ERROR_MIX}
"#
    )
}

struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, name: &str, result: anyhow::Result<()>) {
        match result {
            Ok(()) => {
                eprintln!("vm test {name} ... ok");
                self.passed += 1;
            }
            Err(e) => {
                eprintln!("vm test {name} ... FAILED: {e:#}");
                self.failed.push(name.to_owned());
            }
        }
    }
}

fn read_json(dir: &Path, file: &str) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))?;
    serde_json::from_str(text.trim()).with_context(|| format!("parsing {file}"))
}

fn total_of(dir: &Path, file: &str) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["scope"] == "total")
        .with_context(|| format!("no total in {file}: {text}"))
}

fn oracle(dir: &Path, name: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.oracle")))?;
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once(' ')
                .with_context(|| format!("bad oracle line {l:?}"))?;
            Ok((k.to_owned(), v.trim().parse()?))
        })
        .collect()
}

/// Both tracers (tracepoint, and the best mode the guest allows) saw exactly the workload.
fn tracers_match_workload(dir: &Path, name: &str) -> anyhow::Result<()> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    for tracer in ["t1", "t2"] {
        let total = total_of(dir, &format!("{name}.{tracer}.json"))?;
        ensure!(
            total["calls"] == stress["calls"],
            "{tracer}: {} calls, workload {}",
            total["calls"],
            stress["calls"]
        );
        ensure!(
            total["by_result"] == stress["by_result"],
            "{tracer}: by result {} vs workload {}",
            total["by_result"],
            stress["by_result"]
        );
        ensure!(
            total["by_type"] == stress["by_type"],
            "{tracer}: by type {} vs workload {}",
            total["by_type"],
            stress["by_type"]
        );
    }
    Ok(())
}

fn boot(kind: KernelKind, script: &str, dir: &Path) -> anyhow::Result<()> {
    let kernel = ensure_kernel(kind)?;
    let _ = std::fs::remove_dir_all(dir);
    let name = format!("test-{kind:?}").to_lowercase();
    let mut spec = VmSpec::new(name, kernel, format!("{GUEST_LIB}\n{script}"));
    spec.files = default_files(&workspace_root())?;
    spec.timeout = Duration::from_secs(240);
    spec.results_dir = Some(dir.to_path_buf());
    let outcome = run_vm(&spec)?;
    if outcome.exit_code != 0 {
        bail!(
            "guest script failed with {} (console: {}):\n{}",
            outcome.exit_code,
            outcome.console_log.display(),
            outcome.output
        );
    }
    eprintln!(
        "vm: {kind:?} guest done in {:.1} s",
        outcome.elapsed.as_secs_f64()
    );
    Ok(())
}

fn outcome(total: &Value, name: &str) -> u64 {
    total["by_outcome"][name].as_u64().unwrap_or(0)
}

fn outcome_result(total: &Value, outcome: &str, result: &str) -> u64 {
    total["by_outcome_result"][outcome][result]
        .as_u64()
        .unwrap_or(0)
}

/// Both tracers' fast/retry/busy equal the kernel's own counts, and add up to the calls
/// that reached the comparison.
fn outcomes_match_oracle(dir: &Path, name: &str, want_races: bool) -> anyhow::Result<()> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    let o = oracle(dir, name)?;
    let reached = stress["reached_comparison"].as_u64().context("reached")?;
    eprintln!(
        "vm: {name}: {} calls; oracle fast={} retry={} busy={} locked={} interrupted={}",
        stress["calls"], o["fast"], o["retry"], o["busy"], o["locked"], o["interrupted"]
    );
    ensure!(
        o["fast"] + o["retry"] + o["busy"] == reached,
        "oracle {o:?} vs {reached} calls"
    );
    ensure!(
        o["locked"] + o["interrupted"] == o["retry"] + o["busy"],
        "oracle {o:?}"
    );
    if want_races {
        ensure!(o["retry"] + o["busy"] > 0, "no races provoked: {o:?}");
    }
    for tracer in ["t1", "t2"] {
        let total = total_of(dir, &format!("{name}.{tracer}.json"))?;
        for path in ["fast", "retry", "busy", "interrupted"] {
            ensure!(
                outcome(&total, path) == o[path],
                "{tracer}: {path}={} but the kernel counted {} ({})",
                outcome(&total, path),
                o[path],
                total["by_outcome"]
            );
        }
        ensure!(
            outcome(&total, "locked") == 0,
            "{tracer}: locked on a fast-path kernel"
        );
        ensure!(
            outcome(&total, "unknown") == 0,
            "{tracer}: unclassified calls {}",
            total["by_outcome"]
        );
    }
    Ok(())
}

/// Where each invalid call of ERROR_MIX lands: `path` for everything that found its tasks.
fn errors_land_right(dir: &Path, name: &str, path: &str) -> anyhow::Result<()> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    let reached = stress["reached_comparison"].as_u64().context("reached")?;
    for tracer in ["t1", "t2"] {
        let t = total_of(dir, &format!("{name}.{tracer}.json"))?;
        for (outcome_name, result, want) in [
            (path, "EPERM", 100),
            (path, "EBADF", 60),
            (path, "EINVAL", 40),
            ("no_task", "ESRCH", 50),
        ] {
            let got = outcome_result(&t, outcome_name, result);
            ensure!(
                got == want,
                "{tracer}: {outcome_name}/{result}={got}, want {want}: {}",
                t["by_outcome_result"]
            );
        }
        ensure!(
            outcome(&t, path) == reached,
            "{tracer}: {path}={} of {reached}",
            outcome(&t, path)
        );
    }
    Ok(())
}

/// Events of retries and busy fallbacks name the exec'ing writer, and it is one of the racers.
fn events_name_the_writers(dir: &Path) -> anyhow::Result<()> {
    let stress = read_json(dir, "writers.stress.json")?;
    let racers: Vec<u64> = stress["racer_pids"]
        .as_array()
        .context("racer_pids")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let text = std::fs::read_to_string(dir.join("writers.events.json"))?;
    let events: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing the NDJSON events")?;
    let err = std::fs::read_to_string(dir.join("writers.events.err"))?;
    let summary: Value = err
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("no events summary")?;
    let dropped = summary["events_dropped"].as_u64().context("dropped")?;
    ensure!(
        events.len() as u64 + dropped == stress["calls"].as_u64().context("calls")?,
        "{} events + {dropped} dropped != {} calls",
        events.len(),
        stress["calls"]
    );
    let slow: Vec<&Value> = events
        .iter()
        .filter(|e| e["outcome"] == "retry" || e["outcome"] == "busy")
        .collect();
    let named: Vec<u64> = slow
        .iter()
        .filter_map(|e| e["writer_tgid"].as_u64())
        .collect();
    eprintln!(
        "vm: writers: {} events, {} retry/busy, {} name their writer",
        events.len(),
        slow.len(),
        named.len()
    );
    ensure!(!slow.is_empty(), "no retry or busy events");
    ensure!(!named.is_empty(), "no retry/busy event names a writer");
    ensure!(
        named.iter().all(|w| racers.contains(w)),
        "writers {named:?} not among the racers {racers:?}"
    );
    Ok(())
}

/// A guest command that hangs fails the run with what it printed, not a silent wait.
fn a_hang_is_reported() -> anyhow::Result<()> {
    let mut spec = VmSpec::new(
        "test-hang",
        ensure_kernel(KernelKind::Fastpath)?,
        "echo about to hang; sleep 600",
    );
    spec.timeout = Duration::from_secs(5);
    match run_vm(&spec) {
        Ok(outcome) => bail!("a hung command returned {}", outcome.exit_code),
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(msg.contains("timed out"), "unexpected error: {msg}");
            ensure!(
                msg.contains("about to hang"),
                "the output is missing: {msg}"
            );
            Ok(())
        }
    }
}

/// Runs every VM test; returns (passed, failed names).
pub fn run() -> (usize, Vec<String>) {
    let mut checks = Checks {
        passed: 0,
        failed: Vec::new(),
    };
    let base = workspace_root().join("target/vm-results");

    let fast = base.join("fastpath");
    let booted = boot(KernelKind::Fastpath, &fastpath_script(), &fast);
    let fast_ok = booted.is_ok();
    checks.check("fastpath_guest_runs", booted);
    if fast_ok {
        checks.check(
            "fastpath_doctor_sees_series",
            (|| {
                let d = read_json(&fast, "doctor.json")?;
                ensure!(d["series"]["btf_member"] == true, "series: {}", d["series"]);
                ensure!(
                    d["series"]["helpers_out_of_line"] == true,
                    "series: {}",
                    d["series"]
                );
                ensure!(
                    d["plan"]["Ok"]["strategy"] == "direct",
                    "plan: {}",
                    d["plan"]
                );
                Ok(())
            })(),
        );
        checks.check(
            "fastpath_calm_calls_all_fast",
            (|| {
                outcomes_match_oracle(&fast, "calm", false)?;
                let o = oracle(&fast, "calm")?;
                ensure!(o["fast"] == 20000, "oracle {o:?}");
                Ok(())
            })(),
        );
        for name in ["race_fentry", "race_kprobe"] {
            checks.check(
                &format!("fastpath_{name}_direct_and_infer_equal_oracle"),
                outcomes_match_oracle(&fast, name, true),
            );
            checks.check(
                &format!("fastpath_{name}_counts_exact"),
                tracers_match_workload(&fast, name),
            );
        }
        checks.check(
            "fastpath_errors_land_right",
            errors_land_right(&fast, "errors", "fast"),
        );
        checks.check(
            "fastpath_errors_match_oracle",
            outcomes_match_oracle(&fast, "errors", false),
        );
        checks.check(
            "fastpath_boundary_tracers_count_exactly",
            tracers_match_workload(&fast, "boundary"),
        );
        checks.check(
            "fastpath_events_name_the_writers",
            events_name_the_writers(&fast),
        );
    }

    checks.check("runner_reports_a_hang", a_hang_is_reported());

    let stock = base.join("stock");
    let booted = boot(KernelKind::Stock, &stock_script(), &stock);
    let stock_ok = booted.is_ok();
    checks.check("stock_guest_runs", booted);
    if stock_ok {
        checks.check(
            "stock_doctor_sees_no_series",
            (|| {
                let d = read_json(&stock, "doctor.json")?;
                ensure!(
                    d["series"]["btf_member"] == false,
                    "series: {}",
                    d["series"]
                );
                ensure!(
                    d["series"]["helpers_out_of_line"] == false,
                    "series: {}",
                    d["series"]
                );
                ensure!(
                    d["plan"]["Ok"]["strategy"] == "infer",
                    "plan: {}",
                    d["plan"]
                );
                Ok(())
            })(),
        );
        checks.check(
            "stock_every_call_locked",
            (|| {
                errors_land_right(&stock, "errors", "locked")?;
                for tracer in ["t1", "t2"] {
                    let t = total_of(&stock, &format!("errors.{tracer}.json"))?;
                    ensure!(outcome(&t, "fast") == 0, "{tracer}: fast on a stock kernel");
                }
                Ok(())
            })(),
        );
        checks.check(
            "stock_counts_exact",
            tracers_match_workload(&stock, "errors"),
        );
        checks.check(
            "stock_boundary_tracers_count_exactly",
            tracers_match_workload(&stock, "boundary"),
        );
    }
    (checks.passed, checks.failed)
}
