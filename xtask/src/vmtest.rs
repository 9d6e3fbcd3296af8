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
traced_stress() {
    name=$1; shift
    rm -f /tmp/go
    kcmp-trace stress --json --wait-for /tmp/go "$@" > /results/$name.stress.json &
    sp=$!
    kcmp-trace watch --json --attach tracepoint -p $sp > /results/$name.tp.json 2> /results/$name.tp.err &
    tp=$!
    kcmp-trace watch --json --attach auto -p $sp > /results/$name.auto.json 2> /results/$name.auto.err &
    ap=$!
    for f in tp auto; do
        n=0
        until grep -q attached /results/$name.$f.err; do
            sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || { cat /results/$name.$f.err; return 1; }
        done
    done
    touch /tmp/go
    wait $sp
    kill -INT $tp $ap
    wait $tp $ap
}
oracle() { cat /sys/kernel/debug/kcmp_fastpath > /results/$1.oracle; }
reset_oracle() { echo 0 > /sys/kernel/debug/kcmp_fastpath; }
"#;

const FASTPATH_SCRIPT: &str = r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
reset_oracle
kcmp-trace stress --json -n 20000 --threads 2 --types vm,files,file > /results/calm.stress.json
oracle calm
reset_oracle
traced_stress race --duration 4s --threads 2 --exec-racers 2 --types vm,files,sighand
oracle race
traced_stress mix -n 5000 --threads 2 --types all --bad-fd 100 --dead-pid 50 --bad-type 20
"#;

const STOCK_SCRIPT: &str = r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
traced_stress mix -n 5000 --threads 2 --types all --bad-fd 100 --dead-pid 50 --bad-type 20
"#;

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
    for tracer in ["tp", "auto"] {
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

/// Runs every VM test; returns (passed, failed names).
pub fn run() -> (usize, Vec<String>) {
    let mut checks = Checks {
        passed: 0,
        failed: Vec::new(),
    };
    let base = workspace_root().join("target/vm-results");

    let fast = base.join("fastpath");
    let booted = boot(KernelKind::Fastpath, FASTPATH_SCRIPT, &fast);
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
                Ok(())
            })(),
        );
        checks.check(
            "fastpath_calm_calls_all_fast",
            (|| {
                let stress = read_json(&fast, "calm.stress.json")?;
                let o = oracle(&fast, "calm")?;
                let reached = stress["reached_comparison"].as_u64().context("reached")?;
                ensure!(reached == 20000, "workload reached {reached}");
                ensure!(o["fast"] == reached, "oracle {o:?} vs {reached} calls");
                ensure!(
                    o["retry"] + o["busy"] + o["locked"] + o["interrupted"] == 0,
                    "oracle {o:?}"
                );
                Ok(())
            })(),
        );
        checks.check("fastpath_racers_provoke_retries_and_busy", (|| {
            let stress = read_json(&fast, "race.stress.json")?;
            let o = oracle(&fast, "race")?;
            let reached = stress["reached_comparison"].as_u64().context("reached")?;
            eprintln!(
                "vm: race mix: {} calls, oracle fast={} retry={} busy={} locked={} interrupted={}",
                stress["calls"], o["fast"], o["retry"], o["busy"], o["locked"], o["interrupted"]
            );
            ensure!(o["fast"] + o["retry"] + o["busy"] == reached, "oracle {o:?} vs {reached}");
            ensure!(o["locked"] + o["interrupted"] == o["retry"] + o["busy"], "oracle {o:?}");
            ensure!(o["retry"] + o["busy"] > 0, "no races provoked: {o:?}");
            Ok(())
        })());
        checks.check(
            "fastpath_tracers_count_race_exactly",
            tracers_match_workload(&fast, "race"),
        );
        checks.check(
            "fastpath_tracers_count_mix_exactly",
            tracers_match_workload(&fast, "mix"),
        );
    }

    let stock = base.join("stock");
    let booted = boot(KernelKind::Stock, STOCK_SCRIPT, &stock);
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
                    d["plan"]["Ok"]["mode"].is_string(),
                    "no plan: {}",
                    d["plan"]
                );
                Ok(())
            })(),
        );
        checks.check(
            "stock_tracers_count_mix_exactly",
            tracers_match_workload(&stock, "mix"),
        );
    }
    (checks.passed, checks.failed)
}
