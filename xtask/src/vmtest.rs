//! Tests in real kernels under qemu, across kernel versions and preemption models.
//!
//! Each guest boots one kernel (Debian's stock images, or the project's exec_update_seq
//! kernels, whose test-only oracle /sys/kernel/debug/kcmp_fastpath counts each kcmp call's
//! path as the kernel decides it) under one preemption model and runs a suite: workloads
//! with their own exact count, two tracers attached at once, then the tracers' numbers are
//! held to the workload's and the kernel's counts.
//!
//! A tracer passes when its numbers are exact, or when they say they are not: a report that
//! claims to be exact must equal the truth, and one that is incomplete must fall short by
//! no more than it says. The default plan (no --attach) must be exact everywhere.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::{
    compare, deployed,
    kernel::{Flavour, Kernel, Preempt, Version, ensure_kernel},
    target::Target,
    vm::{VmSpec, default_files, run as run_vm},
    workspace::workspace_root,
};

/// Runs a stress workload gated on a file while tracers attach to its pid first, so every
/// counted call is the workload's. `$1` names the run, the rest are stress arguments; `$T1`
/// and `$T2` are the two tracers' options (empty: the default plan).
const GUEST_LIB: &str = r#"
mkdir -p /tmp
oracle() {
    cat /sys/kernel/debug/kcmp_fastpath > /results/$1.oracle 2>/dev/null || true
    for f in stack syscall wchan; do
        cat /sys/kernel/debug/proc_fastpath/$f > /results/$1.proc_$f.oracle 2>/dev/null || true
    done
}
reset_oracle() {
    echo 0 > /sys/kernel/debug/kcmp_fastpath 2>/dev/null || true
    for f in stack syscall wchan; do
        echo 0 > /sys/kernel/debug/proc_fastpath/$f 2>/dev/null || true
    done
}
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
/// Far more runnable threads than vCPUs: on a preemptible kernel trampoline programs get
/// preempted mid-run, and the kernel skips their runs.
const CROWD: &str = "--duration 4s --threads 12 --exec-racers 4 --types vm,files";
/// Rounds of CROWD before giving up on seeing a skipped run.
const CROWD_ROUNDS: usize = 4;
/// The other writer of exec_update_lock (7.2): processes taking it through Landlock TSYNC,
/// and no exec racer.
const RACE_TSYNC: &str = "--duration 4s --threads 2 --tsync-racers 2 --types vm,files,sighand";

/// exec_update_lock's /proc readers (and environ, an `other` caller) beside kcmp, racing
/// execs or TSYNCs (7.2).
const READERS_EXEC: &str =
    "--duration 4s --threads 2 --exec-racers 2 --proc-readers 2 --types vm,files";
const READERS_TSYNC: &str =
    "--duration 4s --threads 2 --tsync-racers 2 --proc-readers 2 --types vm,files";

/// The readers runs: the default plan and a kprobe + infer tracer, both following readers.
/// Without the series a single run, against exec racers.
fn readers_script(series: bool) -> String {
    let both = r#"T1="--readers" T2="--readers --attach kprobe --strategy infer""#;
    if series {
        format!(
            "\n{both} traced_stress readers_exec {READERS_EXEC}\n\
             {both} traced_stress readers_tsync {READERS_TSYNC}\n"
        )
    } else {
        format!("\n{both} traced_stress readers_stock {READERS_EXEC}\n")
    }
}

/// What a guest runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Suite {
    /// Kernels with the series and the oracle.
    Fastpath,
    /// Debian's kernels: every call that finds its tasks takes the locks.
    Stock,
    /// The stock suite's core, for guests that TCG emulates slowly (arm64 on an x86-64
    /// host): doctor, the syscall boundary, and exec races under fentry and kprobes.
    StockSmoke,
}

/// One boot: a kernel, a preemption model, a suite.
struct Guest {
    kernel: Kernel,
    /// `preempt=` on the command line (PREEMPT_DYNAMIC kernels); None: the kernel's default.
    preempt: Option<Preempt>,
    /// The model `doctor` must report.
    model: &'static str,
    /// Run the crowd: forced fentry tracers until the kernel skips their runs (not with
    /// `no_fentry`), then the default plan under the same crowd.
    crowd: bool,
    /// Only under `cargo xtask test --full`.
    full_only: bool,
    /// Run [`Suite::StockSmoke`] rather than the stock suite.
    smoke: bool,
    /// Run the suite's fentry tracers as kprobe tracers: the kernel oopses in its BPF
    /// trampolines (testing/kernel/README.md, the 7.2 fast-path build).
    no_fentry: bool,
}

impl Guest {
    fn name(&self) -> String {
        match self.preempt {
            Some(p) => format!("{}-{}", self.kernel, p.name()),
            None => self.kernel.to_string(),
        }
    }

    fn suite(&self) -> Suite {
        if self.kernel.flavour.has_series() {
            Suite::Fastpath
        } else if self.smoke {
            Suite::StockSmoke
        } else {
            Suite::Stock
        }
    }

    /// Whether the default plan must pick kprobes (the model preempts kernel code).
    fn preemptible(&self) -> bool {
        matches!(self.model, "full" | "lazy" | "rt")
    }

    /// The kernel runs syscall tracepoint programs faultable (7.2).
    fn faultable_tracepoints(&self) -> bool {
        self.kernel.version == Version::V7_2
    }

    /// Whether the syscall tracepoints can be skipped: faultable, on a kernel that
    /// preempts kernel code.
    fn tracepoints_skippable(&self) -> bool {
        self.faultable_tracepoints() && self.preemptible()
    }

    fn crowd(&self) -> Option<Crowd> {
        match (self.crowd, self.no_fentry) {
            (false, _) => None,
            (true, false) => Some(Crowd::ProvokeSkips),
            (true, true) => Some(Crowd::DefaultOnly),
        }
    }

    /// The kernel has Landlock TSYNC, exec_update_lock's second writer (7.2).
    fn landlock_tsync(&self) -> bool {
        self.kernel.version == Version::V7_2
    }
}

/// Every guest, the default matrix first: the kernels users run (Debian 12's 6.1, 6.12 in
/// its three models, 7.2 in its three), the fast-path kernels that prove classification
/// (6.12 and 7.2), arm64; then what only `--full` boots. The fast-path kernels are built
/// with PREEMPT_DYNAMIC, so one image boots with every model (6.1's keeps tinyconfig's
/// none); Debian's 6.x images boot voluntary unless told, its 7.2 images lazy. arm64 runs
/// Debian's stock 6.12 (voluntary, no PREEMPT_DYNAMIC): the fast-path kernels are built for
/// x86-64 only.
fn matrix() -> Vec<Guest> {
    use Flavour::*;
    use Version::*;
    let guest = |flavour, version, preempt, model, crowd, full_only| Guest {
        kernel: Kernel::new(flavour, version),
        preempt,
        model,
        crowd,
        full_only,
        smoke: false,
        no_fentry: false,
    };
    vec![
        guest(Stock, V6_1, None, "voluntary", false, false),
        guest(Fastpath, V6_12, Some(Preempt::Full), "full", true, false),
        guest(Stock, V6_12, None, "voluntary", false, false),
        guest(Stock, V6_12, Some(Preempt::Full), "full", false, false),
        guest(StockRt, V6_12, None, "rt", false, false),
        guest(Stock, V7_2, None, "lazy", true, false),
        guest(Stock, V7_2, Some(Preempt::Full), "full", false, false),
        guest(StockRt, V7_2, None, "rt", true, false),
        Guest {
            no_fentry: true,
            ..guest(Fastpath, V7_2, None, "lazy", true, false)
        },
        Guest {
            kernel: Kernel::new(Stock, V6_12).on(Target::Aarch64),
            smoke: true,
            ..guest(Stock, V6_12, None, "voluntary", false, false)
        },
        guest(Fastpath, V6_1, None, "none", false, true),
        guest(
            Fastpath,
            V6_12,
            Some(Preempt::Voluntary),
            "voluntary",
            false,
            true,
        ),
        guest(FastpathRt, V6_12, None, "rt", true, true),
        guest(Fastpath, V6_12, Some(Preempt::None), "none", false, true),
        guest(Stock, V6_12, Some(Preempt::None), "none", false, true),
        guest(StockRt, V6_1, None, "rt", false, true),
        Guest {
            no_fentry: true,
            ..guest(Fastpath, V7_2, Some(Preempt::Full), "full", false, true)
        },
        Guest {
            no_fentry: true,
            ..guest(FastpathRt, V7_2, None, "rt", false, true)
        },
    ]
}

// Two tracers run at once, always of one attach mode (or one with the syscall tracepoints):
// Debian's 6.12 kernel booted preempt=full oopses in its text patching (an unclaimed int3
// at a function's ftrace site) when fentry and kprobe programs on the same functions are
// attached and detached together, whatever programs they run.

/// TSYNC racers alone, under the default plan and a second tracer.
fn tsync_script(second: &str) -> String {
    format!(
        r#"
T1="" T2="{second}" traced_stress race_tsync {RACE_TSYNC}
"#
    )
}

fn fastpath_script(crowd: Option<Crowd>, tsync: bool) -> String {
    let mut script = format!(
        r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
T1="--attach fentry --strategy direct" T2="--attach fentry --strategy infer" traced_stress calm -n 20000 --threads 2 --types vm,files,file
T1="--attach fentry --strategy direct" T2="--attach fentry --strategy infer" traced_stress race_fentry {RACE}
T1="--attach kprobe --strategy direct" T2="--attach kprobe --strategy infer" traced_stress race_kprobe {RACE}
T1="" T2="--attach tracepoint" traced_stress race_default {RACE}
T1="--attach fentry --strategy direct" T2="--attach fentry --strategy infer" traced_stress errors_fentry {ERROR_MIX}
T1="--attach kprobe --strategy direct" T2="--attach kprobe --strategy infer" traced_stress errors_kprobe {ERROR_MIX}
T1="--attach tracepoint" T2="" traced_stress boundary {ERROR_MIX}
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
{BPF_LOG}"#
    );
    if tsync {
        script += &tsync_script("--attach kprobe --strategy infer");
        script += &readers_script(true);
    }
    if let Some(crowd) = crowd {
        script += &crowd_script(crowd);
    }
    script
}

/// `watch --bpf-log`: the programs' own diagnostics on the user's terminal.
const BPF_LOG: &str = r#"
rm -f /tmp/go
kcmp-trace stress --json --wait-for /tmp/go -n 100 --threads 1 > /results/bpflog.stress.json &
sp=$!
kcmp-trace watch --bpf-log -p $sp > /dev/null 2> /results/bpflog.err &
wp=$!
until grep -q attached /results/bpflog.err; do sleep 0.2; done
touch /tmp/go
wait $sp
kill -INT $wp
wait $wp
"#;

fn stock_script(crowd: Option<Crowd>, tsync: bool) -> String {
    let mut script = format!(
        r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
T1="--attach fentry" T2="--attach fentry" traced_stress errors_fentry {ERROR_MIX}
T1="--attach kprobe" T2="--attach kprobe" traced_stress errors_kprobe {ERROR_MIX}
T1="--attach tracepoint" T2="" traced_stress boundary {ERROR_MIX}
T1="--attach fentry" T2="--attach fentry" traced_stress race_fentry {RACE}
T1="--attach kprobe" T2="--attach kprobe" traced_stress race_kprobe {RACE}
T1="" T2="--attach tracepoint" traced_stress race_default {RACE}
"#
    );
    if tsync {
        script += &tsync_script("--attach tracepoint");
        script += &readers_script(false);
    }
    if let Some(crowd) = crowd {
        script += &crowd_script(crowd);
    }
    script
}

/// The syscall boundary (the tracepoint tracer beside the default plan) on the error mix,
/// then exec races under two fentry and two kprobe tracers.
fn stock_smoke_script() -> String {
    format!(
        r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
T1="--attach tracepoint" T2="" traced_stress boundary {ERROR_MIX}
T1="--attach fentry" T2="--attach fentry" traced_stress race_fentry {RACE}
T1="--attach kprobe" T2="--attach kprobe" traced_stress race_kprobe {RACE}
"#
    )
}

/// What a guest's crowd run does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Crowd {
    /// Forced fentry tracers first, until the kernel skips their runs; then the default plan.
    ProvokeSkips,
    /// The default plan alone: a kernel whose BPF trampolines cannot run (`no_fentry`).
    DefaultOnly,
}

/// Forced fentry tracers under a crowd of threads, repeated until the kernel has skipped
/// a run of theirs (or CROWD_ROUNDS rounds); then the default plan under the same crowd.
fn crowd_script(crowd: Crowd) -> String {
    let default = format!(
        r#"
T1="" T2="--attach tracepoint" traced_stress crowd_default {CROWD}
"#
    );
    if crowd == Crowd::DefaultOnly {
        return default;
    }
    format!(
        r#"
round=1
while :; do
    T1="--attach fentry --strategy infer" T2="--attach fentry" traced_stress crowd {CROWD}
    grep -q '"missed_runs":{{"' /results/crowd.t1.json && break
    [ $round -lt {CROWD_ROUNDS} ] || break
    round=$((round+1))
done
echo $round > /results/crowd.rounds
"#
    ) + &default
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

/// The kernel's own count of each path (testing/kernel/README.md).
#[derive(Debug)]
struct Oracle {
    fast: u64,
    retry: u64,
    busy: u64,
    locked: u64,
    interrupted: u64,
}

impl Oracle {
    /// The count of a path by its outcome name (0 for paths the oracle does not count).
    fn of(&self, path: &str) -> u64 {
        match path {
            "fast" => self.fast,
            "retry" => self.retry,
            "busy" => self.busy,
            "locked" => self.locked,
            "interrupted" => self.interrupted,
            _ => 0,
        }
    }
}

fn oracle(dir: &Path, name: &str) -> anyhow::Result<Oracle> {
    let file = format!("{name}.oracle");
    let text =
        std::fs::read_to_string(dir.join(&file)).with_context(|| format!("reading {file}"))?;
    let counts: BTreeMap<&str, u64> = text
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once(' ')
                .with_context(|| format!("{file}: bad line {l:?}"))?;
            Ok((k, v.trim().parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let get = |k: &str| {
        counts
            .get(k)
            .copied()
            .with_context(|| format!("{file}: no {k} line in {text:?}"))
    };
    Ok(Oracle {
        fast: get("fast")?,
        retry: get("retry")?,
        busy: get("busy")?,
        locked: get("locked")?,
        interrupted: get("interrupted")?,
    })
}

/// A tracer's plan (the first line `watch --json` prints).
fn plan_of(dir: &Path, file: &str) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))?;
    let first: Value = serde_json::from_str(text.lines().next().unwrap_or_default())
        .with_context(|| format!("no plan line in {file}"))?;
    ensure!(first["plan"].is_object(), "no plan in {file}");
    Ok(first["plan"].clone())
}

/// Which tracers must report exactly (rather than honestly) in a run: a predicate on the
/// tracer's plan.
type Strict<'a> = &'a dyn Fn(&Value) -> bool;

/// Everything must be exact in the ordinary runs but the modes whose programs the kernel
/// can preempt mid-run and then skip: fentry on a kernel that preempts kernel code, and the
/// syscall tracepoints where they run faultable too.
fn strict_for(guest: &Guest) -> impl Fn(&Value) -> bool + '_ {
    move |plan: &Value| {
        !(guest.preemptible() && plan["mode"] == "fentry"
            || guest.tracepoints_skippable() && plan["mode"] == "tracepoint")
    }
}

/// Each tracer of a run: its name, plan and total; a strict one must claim to be exact.
fn tracers(dir: &Path, name: &str, strict: Strict) -> anyhow::Result<Vec<(String, Value, Value)>> {
    ["t1", "t2"]
        .into_iter()
        .map(|t| {
            let file = format!("{name}.{t}.json");
            let plan = plan_of(dir, &file)?;
            let total = total_of(dir, &file)?;
            let label = format!("{t} ({} + {})", plan["mode"], plan["strategy"]);
            ensure!(
                !strict(&plan) || total["exact"] == true,
                "{label}: not exact: missed {} incomplete {}",
                total["missed_runs"],
                total["incomplete"]
            );
            Ok((label, plan, total))
        })
        .collect()
}

/// The syscall boundary shows no path: every counted call is `unknown`.
fn boundary_paths(tracer: &str, total: &Value) -> anyhow::Result<()> {
    ensure!(
        outcome(total, "unknown") == count(total, "calls"),
        "{tracer}: a boundary tracer classified calls: {}",
        total["by_outcome"]
    );
    Ok(())
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn outcome(total: &Value, name: &str) -> u64 {
    total["by_outcome"][name].as_u64().unwrap_or(0)
}

fn outcome_result(total: &Value, outcome: &str, result: &str) -> u64 {
    total["by_outcome_result"][outcome][result]
        .as_u64()
        .unwrap_or(0)
}

/// One tracer's total against the truth: exact when it says so, short by no more than it
/// says otherwise. Returns how many calls it may be missing (0 when exact).
fn honest_count(tracer: &str, total: &Value, stress: &Value) -> anyhow::Result<u64> {
    let calls = count(total, "calls");
    let truth = count(stress, "calls");
    let slack = count(&total["incomplete"], "calls");
    ensure!(
        calls <= truth,
        "{tracer}: {calls} calls, more than the workload's {truth}"
    );
    if total["exact"] == true {
        ensure!(
            calls == truth,
            "{tracer}: claims exact, counted {calls} of {truth} calls"
        );
        for key in ["by_result", "by_type"] {
            ensure!(
                total[key] == stress[key],
                "{tracer}: claims exact, {key} {} vs workload {}",
                total[key],
                stress[key]
            );
        }
    } else {
        ensure!(
            truth - calls <= slack,
            "{tracer}: {calls} of {truth} calls, but says it may be short by only {slack} ({})",
            total["incomplete"]
        );
    }
    Ok(truth - calls)
}

/// The paths counted by a tracer against the kernel's oracle, allowing for what it says it
/// may have missed (an uncounted call, a misread path: each moves the sums by at most 2).
fn honest_paths(tracer: &str, total: &Value, o: &Oracle) -> anyhow::Result<()> {
    let paths = ["fast", "retry", "busy", "interrupted"];
    let off: u64 = paths
        .iter()
        .map(|p| outcome(total, p).abs_diff(o.of(p)))
        .sum::<u64>()
        + outcome(total, "locked")
        + outcome(total, "unknown");
    if total["exact"] == true {
        ensure!(
            off == 0,
            "{tracer}: claims exact, outcomes {} vs the kernel's {o:?}",
            total["by_outcome"]
        );
    } else {
        let inc = &total["incomplete"];
        let slack = count(inc, "calls") + 2 * count(inc, "outcomes") + count(total, "unclassified");
        ensure!(
            off <= slack,
            "{tracer}: outcomes {} are {off} off the kernel's {o:?}, but it allows for {slack} ({inc})",
            total["by_outcome"]
        );
    }
    Ok(())
}

/// The workload's calls and the kernel's own paths, against both tracers of a run.
fn run_matches_oracle(
    dir: &Path,
    name: &str,
    want_races: bool,
    strict: Strict,
) -> anyhow::Result<()> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    let o = oracle(dir, name)?;
    let reached = count(&stress, "reached_comparison");
    eprintln!(
        "vm: {name}: {} calls; oracle fast={} retry={} busy={} locked={} interrupted={}",
        stress["calls"], o.fast, o.retry, o.busy, o.locked, o.interrupted
    );
    ensure!(
        o.fast + o.retry + o.busy == reached,
        "oracle {o:?} vs {reached} calls"
    );
    ensure!(o.locked + o.interrupted == o.retry + o.busy, "oracle {o:?}");
    if want_races {
        ensure!(o.retry + o.busy > 0, "no races provoked: {o:?}");
    }
    for (tracer, plan, total) in tracers(dir, name, strict)? {
        honest_count(&tracer, &total, &stress)?;
        if plan["strategy"] == "boundary" {
            boundary_paths(&tracer, &total)?;
        } else {
            honest_paths(&tracer, &total, &o)?;
            one_wait_per_locking_call(&tracer, &plan, &total, o.retry + o.busy)?;
        }
    }
    Ok(())
}

/// An exact tracer that times lock waits counts one per call that took its locks: the
/// kernel's fallbacks, or every call that found its tasks on a kernel without the series.
/// A contended wait is timed, an uncontended one is a wait of 0.
fn one_wait_per_locking_call(
    tracer: &str,
    plan: &Value,
    total: &Value,
    locking_calls: u64,
) -> anyhow::Result<()> {
    if total["exact"] != true || plan["lock_waits"].is_null() {
        return Ok(());
    }
    let waits = count(&total["lock_wait_ns"], "count");
    ensure!(
        waits == locking_calls,
        "{tracer} ({} lock waits): {waits} lock waits for {locking_calls} calls that took their \
         locks",
        plan["lock_waits"]
    );
    Ok(())
}

/// Both tracers of a run on a kernel without the series: counts honest, every counted call
/// that found its tasks `locked`, none `fast`.
fn run_all_locked(dir: &Path, name: &str, strict: Strict) -> anyhow::Result<()> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    let reached = count(&stress, "reached_comparison");
    for (tracer, plan, total) in tracers(dir, name, strict)? {
        let short = honest_count(&tracer, &total, &stress)?;
        if plan["strategy"] == "boundary" {
            boundary_paths(&tracer, &total)?;
            continue;
        }
        let locked = outcome(&total, "locked") + outcome(&total, "interrupted");
        ensure!(
            outcome(&total, "fast") + outcome(&total, "retry") + outcome(&total, "busy") == 0,
            "{tracer}: a fast path on a kernel without one: {}",
            total["by_outcome"]
        );
        one_wait_per_locking_call(&tracer, &plan, &total, reached)?;
        if total["exact"] == true {
            ensure!(
                locked == reached,
                "{tracer}: claims exact, locked={locked} of {reached}: {}",
                total["by_outcome"]
            );
        } else {
            ensure!(
                locked + outcome(&total, "unknown") + short >= reached,
                "{tracer}: locked={locked} of {reached}, short by {short}: {}",
                total["by_outcome"]
            );
        }
    }
    Ok(())
}

/// A tracer's report is exact: no skipped run, nothing unpaired, the workload's count of
/// calls.
fn exact_report(dir: &Path, name: &str, tracer: &str) -> anyhow::Result<()> {
    let total = total_of(dir, &format!("{name}.{tracer}.json"))?;
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    ensure!(
        total["exact"] == true,
        "{tracer} is not exact: missed {} incomplete {}",
        total["missed_runs"],
        total["incomplete"]
    );
    ensure!(
        total["calls"] == stress["calls"],
        "{} calls, workload {}",
        total["calls"],
        stress["calls"]
    );
    Ok(())
}

/// Where each invalid call of ERROR_MIX lands: `path` for everything that found its tasks.
fn errors_land_right(dir: &Path, name: &str, path: &str, strict: Strict) -> anyhow::Result<()> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    let reached = count(&stress, "reached_comparison");
    for (tracer, _, t) in tracers(dir, name, strict)? {
        if honest_count(&tracer, &t, &stress)? != 0 {
            // Said so; the breakdown below cannot be held to the workload's.
            continue;
        }
        for (outcome_name, result, want) in [
            (path, "EPERM", 100),
            (path, "EBADF", 60),
            (path, "EINVAL", 40),
            ("no_task", "ESRCH", 50),
        ] {
            let got = outcome_result(&t, outcome_name, result);
            ensure!(
                got == want || t["exact"] != true,
                "{tracer}: {outcome_name}/{result}={got}, want {want}: {}",
                t["by_outcome_result"]
            );
        }
        ensure!(
            outcome(&t, path) == reached || t["exact"] != true,
            "{tracer}: {path}={} of {reached}",
            outcome(&t, path)
        );
    }
    Ok(())
}

/// Both tracers (tracepoint, and the default plan) counted the workload exactly; the
/// tracepoint one honestly where the kernel can skip its runs.
fn boundary_counts_exactly(dir: &Path, guest: &Guest) -> anyhow::Result<()> {
    let stress = read_json(dir, "boundary.stress.json")?;
    for tracer in ["t1", "t2"] {
        let total = total_of(dir, &format!("boundary.{tracer}.json"))?;
        ensure!(
            total["exact"] == true || tracer == "t1" && guest.tracepoints_skippable(),
            "{tracer}: not exact: {}",
            total["incomplete"]
        );
        honest_count(tracer, &total, &stress)?;
    }
    Ok(())
}

/// The default tracer timed every TSYNC write section the racers went through, and told
/// them apart from execs.
fn tsync_sections_counted(dir: &Path, name: &str) -> anyhow::Result<()> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    let total = total_of(dir, &format!("{name}.t1.json"))?;
    let want = count(&stress, "tsync_sections");
    let got = count(&total["tsync_hold_ns"], "count");
    eprintln!(
        "vm: {name}: {want} TSYNC write sections; the default tracer timed {got}, and {} exec sections",
        count(&total["exec_hold_ns"], "count")
    );
    ensure!(want > 0, "the TSYNC racers went through no write section");
    ensure!(
        got == want && total["exact"] == true,
        "{got} TSYNC write sections of the racers' {want} (exact {}, incomplete {})",
        total["exact"],
        total["incomplete"]
    );
    Ok(())
}

/// The /proc readers the workload reads, as the oracle's files and the tracer name them.
const PROC_READERS: [&str; 3] = ["stack", "syscall", "wchan"];

/// A readers run: the workload's own report and both tracers' totals, which must claim to
/// be exact (both run kprobes, which the kernel does not skip).
fn readers_run(dir: &Path, name: &str) -> anyhow::Result<(Value, [Value; 2])> {
    let stress = read_json(dir, &format!("{name}.stress.json"))?;
    let totals = [
        total_of(dir, &format!("{name}.t1.json"))?,
        total_of(dir, &format!("{name}.t2.json"))?,
    ];
    for (t, total) in ["t1", "t2"].iter().zip(&totals) {
        ensure!(
            total["exact"] == true,
            "{t}: not exact: {}",
            total["incomplete"]
        );
    }
    Ok((stress, totals))
}

/// Each /proc reader of a run on the fast-path kernel, in both tracers: its calls equal
/// the workload's reads, and its fast, retry, busy and interrupted counts the kernel's own
/// (proc_fastpath/<file>), exactly; kcmp's against its oracle as always.
fn readers_match_oracle(dir: &Path, name: &str, strict: Strict) -> anyhow::Result<()> {
    run_matches_oracle(dir, name, false, strict)?;
    let (stress, totals) = readers_run(dir, name)?;
    let mut raced = 0;
    for file in PROC_READERS {
        let reader = format!("proc_{file}");
        let o = oracle(dir, &format!("{name}.{reader}"))?;
        let reads = count(&stress["proc_reads"], &reader);
        eprintln!(
            "vm: {name}: {reads} reads of {file}; oracle fast={} retry={} busy={} locked={} interrupted={}",
            o.fast, o.retry, o.busy, o.locked, o.interrupted
        );
        ensure!(reads > 0, "the workload read no {file}");
        ensure!(
            o.fast + o.retry + o.busy == reads,
            "{file}: oracle {o:?} vs {reads} reads"
        );
        ensure!(
            o.locked + o.interrupted == o.retry + o.busy,
            "{file}: oracle {o:?}"
        );
        raced += o.retry + o.busy;
        for (t, total) in ["t1", "t2"].iter().zip(&totals) {
            let r = &total["by_reader"][&reader];
            ensure!(
                count(r, "calls") == reads,
                "{t}: {reader} {r} vs {reads} reads"
            );
            // The oracle's `locked` counts the retry and busy reads again (the fallback took
            // the lock); a call's outcome is one of the paths.
            for path in ["fast", "retry", "busy", "interrupted"] {
                ensure!(
                    count(&r["by_outcome"], path) == o.of(path),
                    "{t}: {reader} {} vs the kernel's {o:?}",
                    r["by_outcome"]
                );
            }
            ensure!(
                count(&r["by_outcome"], "locked") + count(&r["by_outcome"], "unknown") == 0,
                "{t}: {reader} {}: a path the fast-path kernel does not take",
                r["by_outcome"]
            );
            // Each fallback waited on the lock once.
            ensure!(
                count(r, "lock_waits") == o.locked,
                "{t}: {reader}: {} lock waits, the kernel's fallbacks {o:?}",
                r["lock_waits"]
            );
        }
    }
    ensure!(raced > 0, "no /proc read raced a writer");
    others_by_site(dir, name, &stress, &totals)
}

/// Each /proc reader of a run on a kernel without the series: every read waited for the
/// lock once, and was locked.
fn readers_all_locked(dir: &Path, name: &str, strict: Strict) -> anyhow::Result<()> {
    run_all_locked(dir, name, strict)?;
    let (stress, totals) = readers_run(dir, name)?;
    for file in PROC_READERS {
        let reader = format!("proc_{file}");
        let reads = count(&stress["proc_reads"], &reader);
        ensure!(reads > 0, "the workload read no {file}");
        for (t, total) in ["t1", "t2"].iter().zip(&totals) {
            let r = &total["by_reader"][&reader];
            eprintln!("vm: {name}: {t}: {reader}: {r} ({reads} reads)");
            ensure!(
                count(r, "lock_waits") == reads
                    && count(&r["by_outcome"], "locked") == reads
                    && count(r, "calls") == reads,
                "{t}: {reader} {r} vs {reads} reads, each one lock wait"
            );
        }
    }
    others_by_site(dir, name, &stress, &totals)
}

/// The workload's opens of /proc/PID/environ each waited on the target's exec_update_lock
/// in mm_access(), a reader the series leaves alone: counted as `other`, and in kprobe
/// mode under the function that called down_read_killable().
fn others_by_site(
    dir: &Path,
    name: &str,
    stress: &Value,
    totals: &[Value; 2],
) -> anyhow::Result<()> {
    let opens = count(&stress["proc_reads"], "environ");
    ensure!(opens > 0, "the workload opened no environ");
    for (t, total) in ["t1", "t2"].iter().zip(totals) {
        let plan = plan_of(dir, &format!("{name}.{t}.json"))?;
        let readers = total["by_reader"].as_object().context("no by_reader")?;
        let other = count(&readers["other"], "lock_waits");
        let sites: BTreeMap<&String, u64> = readers
            .iter()
            .filter(|(k, _)| k.starts_with("other:"))
            .map(|(k, v)| (k, count(v, "lock_waits")))
            .collect();
        eprintln!(
            "vm: {name}: {t}: other lock waits {other} of {opens} environ opens, sites {sites:?}"
        );
        ensure!(
            other == opens,
            "{t}: other waited {other} times, environ was opened {opens}"
        );
        let placed: u64 = sites.values().sum();
        if plan["mode"] == "kprobe" {
            ensure!(
                placed == opens && total.get("others_unplaced").is_none(),
                "{t}: {placed} of {opens} waits under a call site: {sites:?}"
            );
        } else {
            ensure!(
                count(total, "others_unplaced") == opens,
                "{t}: {} unplaced of {opens}",
                total["others_unplaced"]
            );
        }
    }
    Ok(())
}

/// The eBPF side's diagnostic for the workload's first call came out on stderr.
fn bpf_log_reaches_the_terminal(dir: &Path) -> anyhow::Result<()> {
    let stress = read_json(dir, "bpflog.stress.json")?;
    let err = std::fs::read_to_string(dir.join("bpflog.err")).context("reading bpflog.err")?;
    let want = format!("of tgid {} makes its first traced kcmp call", stress["pid"]);
    ensure!(err.contains(&want), "no {want:?} in:\n{err}");
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
    let dropped = count(&summary, "events_dropped");
    let missing = count(&summary["incomplete"], "calls");
    let calls = count(&stress, "calls");
    ensure!(
        events.len() as u64 + dropped <= calls && events.len() as u64 + dropped + missing >= calls,
        "{} events + {dropped} dropped (+ up to {missing} missing) != {calls} calls",
        events.len(),
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

/// The crowd run: the forced fentry tracer saw the kernel skip runs and says by how much;
/// both tracers stay honest.
fn skipped_runs_are_reported(dir: &Path, suite: Suite) -> anyhow::Result<()> {
    let rounds = std::fs::read_to_string(dir.join("crowd.rounds")).unwrap_or_default();
    let fentry = total_of(dir, "crowd.t1.json")?;
    let missed: u64 = fentry["missed_runs"]
        .as_object()
        .context("missed_runs")?
        .values()
        .filter_map(Value::as_u64)
        .sum();
    eprintln!(
        "vm: crowd: fentry tracer: {missed} skipped runs {} after {} round(s); incomplete {}",
        fentry["missed_runs"],
        rounds.trim(),
        fentry["incomplete"]
    );
    ensure!(
        missed > 0,
        "no skipped run in {CROWD_ROUNDS} rounds: nothing was provoked"
    );
    ensure!(
        fentry["exact"] == false,
        "skipped runs, yet the report claims to be exact"
    );
    match suite {
        Suite::Fastpath => run_matches_oracle(dir, "crowd", false, &|_| false),
        Suite::Stock | Suite::StockSmoke => run_all_locked(dir, "crowd", &|_| false),
    }
}

fn doctor_matches(dir: &Path, guest: &Guest) -> anyhow::Result<()> {
    let d = read_json(dir, "doctor.json")?;
    let arch = guest.kernel.arch.tracer_arch();
    ensure!(
        d["arch"] == arch.name(),
        "arch {} (want {})",
        d["arch"],
        arch.name()
    );
    let wrapper = d["symbols"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == arch.kcmp_wrapper()));
    ensure!(
        wrapper.is_some_and(|w| w["kallsyms"] == true && w["btf"] == true),
        "kcmp's wrapper {} not found: {wrapper:?}",
        arch.kcmp_wrapper()
    );
    // Every kernel in the matrix has BTF: comms are read straight from task_struct, where
    // BTF places comm (the verifier checks the read against it).
    ensure!(
        d["direct_comm"]["Ok"].as_u64().is_some()
            && d["direct_comm"]["Ok"] == d["task_comm_offset"],
        "comm read through the helper: {} (task_struct.comm at {})",
        d["direct_comm"],
        d["task_comm_offset"]
    );
    let series = guest.suite() == Suite::Fastpath;
    ensure!(
        d["series"]["btf_member"] == series && d["series"]["helpers_out_of_line"] == series,
        "series: {}",
        d["series"]
    );
    ensure!(
        d["preemption"]["model"] == guest.model,
        "preemption {} (want {})",
        d["preemption"],
        guest.model
    );
    let plan = &d["plan"]["Ok"];
    // Each skipped hook is said once (an entry and a return hook share the verdict).
    let skipped: Vec<&Value> = plan["skipped"]
        .as_array()
        .map(|s| s.iter().map(|pair| &pair[0]).collect())
        .unwrap_or_default();
    let mut unique = skipped.clone();
    unique.sort_by_key(|v| v.to_string());
    unique.dedup();
    ensure!(unique.len() == skipped.len(), "skipped twice: {skipped:?}");
    ensure!(
        d["syscall_tracepoints_faultable"] == guest.faultable_tracepoints(),
        "syscall tracepoints faultable: {} (want {})",
        d["syscall_tracepoints_faultable"],
        guest.faultable_tracepoints()
    );
    let strategy = if series { "direct" } else { "stock" };
    let mode = if guest.preemptible() {
        "kprobe"
    } else {
        "fentry"
    };
    ensure!(
        plan["strategy"] == strategy && plan["mode"] == mode,
        "plan {} + {} (want {mode} + {strategy}): {}",
        plan["mode"],
        plan["strategy"],
        plan["why"]
    );
    // Nothing every process calls is hooked, but on PREEMPT_RT, where down_read_killable()
    // times the waits (rwbase_rt fires contention_end preemptible).
    let everyones = [
        "down_read_killable",
        "down_read_killable_nested",
        "ptrace_may_access",
    ];
    let taxing: Vec<&Value> = plan["hooks"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|h| everyones.iter().any(|f| h["target"] == *f))
                .collect()
        })
        .unwrap_or_default();
    let (waits, taxed) = if guest.model == "rt" {
        ("probes", true)
    } else {
        ("contention", false)
    };
    ensure!(
        plan["lock_waits"] == waits && taxing.is_empty() != taxed,
        "lock waits {} (want {waits}), hooks on every process's functions: {taxing:?}",
        plan["lock_waits"]
    );
    // Kprobe mode measures the syscall at its tracepoints only where they see every call.
    if mode == "kprobe" {
        let exit = if guest.tracepoints_skippable() {
            "kcmp_kretprobe"
        } else {
            "kcmp_tp_exit"
        };
        ensure!(
            plan["hooks"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h["program"] == exit)),
            "kcmp's exit is not {exit}: {}",
            plan["hooks"]
        );
    }
    Ok(())
}

fn boot(guest: &Guest, dir: &Path) -> anyhow::Result<()> {
    let kernel = ensure_kernel(guest.kernel)?;
    let _ = std::fs::remove_dir_all(dir);
    let mut script = match guest.suite() {
        Suite::Fastpath => fastpath_script(guest.crowd(), guest.landlock_tsync()),
        Suite::Stock => stock_script(guest.crowd(), guest.landlock_tsync()),
        Suite::StockSmoke => stock_smoke_script(),
    };
    if guest.no_fentry {
        script = script.replace("--attach fentry", "--attach kprobe");
    }
    let mut spec = VmSpec::new(
        format!("test-{}", guest.name()),
        kernel,
        format!("{GUEST_LIB}\n{script}"),
    );
    spec.arch = guest.kernel.arch;
    spec.cmdline.extend(guest.preempt.map(Preempt::cmdline));
    spec.files = default_files(guest.kernel.arch)?;
    spec.timeout = Duration::from_secs(480);
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
        "vm: {} guest done in {:.1} s",
        guest.name(),
        outcome.elapsed.as_secs_f64()
    );
    Ok(())
}

fn check_guest(checks: &mut Checks, guest: &Guest, dir: &Path) {
    let name = guest.name();
    let booted = boot(guest, dir);
    let ok = booted.is_ok();
    checks.check(&format!("{name}_guest_runs"), booted);
    if !ok {
        return;
    }
    let test = |what: &str| format!("{name}_{what}");
    let strict = &strict_for(guest);
    checks.check(&test("doctor"), doctor_matches(dir, guest));
    match guest.suite() {
        Suite::Fastpath => {
            checks.check(
                &test("calm_calls_all_fast"),
                (|| {
                    run_matches_oracle(dir, "calm", false, strict)?;
                    let o = oracle(dir, "calm")?;
                    ensure!(o.fast == 20000, "oracle {o:?}");
                    Ok(())
                })(),
            );
            for run in ["race_fentry", "race_kprobe", "race_default"] {
                checks.check(
                    &test(&format!("{run}_direct_and_infer_equal_oracle")),
                    run_matches_oracle(dir, run, true, strict),
                );
            }
            for run in ["errors_fentry", "errors_kprobe"] {
                checks.check(
                    &test(&format!("{run}_land_right")),
                    errors_land_right(dir, run, "fast", strict)
                        .and_then(|()| run_matches_oracle(dir, run, false, strict)),
                );
            }
            checks.check(
                &test("events_name_the_writers"),
                events_name_the_writers(dir),
            );
            if guest.landlock_tsync() {
                for run in ["readers_exec", "readers_tsync"] {
                    checks.check(
                        &test(&format!("{run}_each_reader_equals_its_oracle")),
                        readers_match_oracle(dir, run, strict),
                    );
                }
            }
            checks.check(
                &test("bpf_log_reaches_the_terminal"),
                bpf_log_reaches_the_terminal(dir),
            );
        }
        Suite::StockSmoke => {
            for run in ["race_fentry", "race_kprobe"] {
                checks.check(
                    &test(&format!("{run}_every_call_locked")),
                    run_all_locked(dir, run, strict),
                );
            }
        }
        Suite::Stock => {
            for run in ["errors_fentry", "errors_kprobe"] {
                checks.check(
                    &test(&format!("{run}_land_right")),
                    errors_land_right(dir, run, "locked", strict),
                );
            }
            for run in ["race_fentry", "race_kprobe", "race_default"] {
                checks.check(
                    &test(&format!("{run}_every_call_locked")),
                    run_all_locked(dir, run, strict),
                );
            }
            if guest.landlock_tsync() {
                checks.check(
                    &test("readers_lock_once_per_read"),
                    readers_all_locked(dir, "readers_stock", strict),
                );
            }
        }
    }
    checks.check(
        &test("default_plan_exact"),
        match guest.suite() {
            Suite::StockSmoke => Ok(()),
            _ => exact_report(dir, "race_default", "t1"),
        }
        .and_then(|()| exact_report(dir, "boundary", "t2")),
    );
    checks.check(
        &test("boundary_counts_exactly"),
        boundary_counts_exactly(dir, guest),
    );
    if guest.landlock_tsync() {
        checks.check(
            &test("race_tsync_paths_and_sections"),
            match guest.suite() {
                Suite::Fastpath => run_matches_oracle(dir, "race_tsync", true, strict),
                Suite::Stock | Suite::StockSmoke => run_all_locked(dir, "race_tsync", strict),
            }
            .and_then(|()| exact_report(dir, "race_tsync", "t1"))
            .and_then(|()| tsync_sections_counted(dir, "race_tsync")),
        );
    }
    if guest.crowd() == Some(Crowd::ProvokeSkips) {
        checks.check(
            &test("skipped_runs_are_reported"),
            skipped_runs_are_reported(dir, guest.suite()),
        );
    }
    if guest.crowd().is_some() {
        // More kcmp threads than vCPUs, and more calls in flight than perf's kretprobes
        // have instances: the default plan is exact all the same (its return probes have
        // room for every call); tracepoint mode is exact where the kernel cannot skip its
        // runs, and honest where it can.
        checks.check(
            &test("crowd_default_exact"),
            (match guest.suite() {
                Suite::Fastpath => run_matches_oracle(dir, "crowd_default", false, &|_| false),
                Suite::Stock | Suite::StockSmoke => {
                    run_all_locked(dir, "crowd_default", &|_| false)
                }
            })
            .and_then(|()| exact_report(dir, "crowd_default", "t1"))
            .and_then(|()| {
                if guest.tracepoints_skippable() {
                    Ok(())
                } else {
                    exact_report(dir, "crowd_default", "t2")
                }
            }),
        );
    }
}

/// The comparison the VM stage runs: 7.2 stock against fast path, each in its default model
/// (lazy), a counted workload.
const COMPARE_NAME: &str = "compare-7.2";
const COMPARE_WORKLOAD: &str = "kcmp-trace stress --json -n 30000 --threads 2 --exec-racers 2 \
     --types vm,files --proc-readers 1";

/// `cargo xtask compare` on a short counted workload: each side's recording counts every
/// call of its workload, every call on the stock kernel took the locks, and the fast-path
/// kernel took the fast path; the report links its plots.
fn compare_counts_every_call() -> anyhow::Result<()> {
    let out = workspace_root()
        .join("target/vm-results")
        .join(COMPARE_NAME);
    let _ = std::fs::remove_dir_all(&out);
    let done = compare::compare(&compare::Plan {
        version: Version::V7_2,
        preempt: None,
        interval: "500ms".into(),
        timeout: Duration::from_secs(300),
        files: Vec::new(),
        workload: COMPARE_WORKLOAD.into(),
        readers: true,
        out: out.clone(),
    })?;
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&done.report_json)?)?;
    for (side, dir) in [("a", &done.stock), ("b", &done.fastpath)] {
        let stress = read_json(dir, "workload.out")?;
        let total = &report[side]["total"];
        ensure!(
            stress["calls"] == 30000,
            "{side}: the workload made {}",
            stress["calls"]
        );
        ensure!(
            total["calls"] == stress["calls"] && total["exact"] == true,
            "{side}: {} calls of the workload's {}, exact {}",
            total["calls"],
            stress["calls"],
            total["exact"]
        );
    }
    let (stock, fastpath) = (&report["a"]["total"], &report["b"]["total"]);
    let only_locked = serde_json::json!({ "locked": 30000 });
    ensure!(
        stock["by_outcome"] == only_locked,
        "stock: {}",
        stock["by_outcome"]
    );
    let fast = outcome(fastpath, "fast");
    let paths = fast + outcome(fastpath, "retry") + outcome(fastpath, "busy");
    ensure!(
        fast > 0 && paths == 30000,
        "fast path: {}",
        fastpath["by_outcome"]
    );
    // The /proc readers side by side: every read waited on stock, and took a path on the
    // fast path; the comparison has their rows.
    for (side, dir) in [("a", &done.stock), ("b", &done.fastpath)] {
        let reads = &read_json(dir, "workload.out")?["proc_reads"];
        for file in PROC_READERS {
            let reader = format!("proc_{file}");
            let n = count(reads, &reader);
            let r = &report[side]["total"]["by_reader"][&reader];
            let waits = count(r, "lock_waits");
            ensure!(
                n > 0 && count(r, "calls") == n && (side == "b" || waits == n),
                "{side}: {reader} {r} of {n} reads"
            );
        }
    }
    let rows = report["rows"].as_array().context("no compare rows")?;
    ensure!(
        rows.iter()
            .any(|r| r["metric"] == "reader proc_wchan lock waits"),
        "no per-reader rows in the comparison"
    );
    let page = std::fs::read_to_string(out.join("index.html"))?;
    for svg in [
        "latency.svg",
        "outcomes.svg",
        "lock_wait.svg",
        "exec_write_sections.svg",
        "lock_wait_by_reader.svg",
    ] {
        ensure!(
            out.join(svg).is_file() && page.contains(&format!("src=\"{svg}\"")),
            "{svg} missing or not on the page"
        );
    }
    Ok(())
}

/// A guest command that hangs fails the run with what it printed, not a silent wait.
fn a_hang_is_reported() -> anyhow::Result<()> {
    let mut spec = VmSpec::new(
        "test-hang",
        ensure_kernel(Kernel::new(Flavour::Stock, Version::V6_12))?,
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

/// The guests `cargo xtask test` boots: the default matrix, or all of it with `full`, the
/// deployments and the comparison.
pub fn guests(full: bool) -> Vec<String> {
    matrix()
        .iter()
        .filter(|g| full || !g.full_only)
        .map(Guest::name)
        .chain(deployed::guests().iter().map(deployed::Guest::name))
        .chain([COMPARE_NAME.to_owned()])
        .collect()
}

/// The deployments `run` boots with `only`.
fn deployments(only: Option<&str>) -> impl Iterator<Item = deployed::Guest> {
    deployed::guests()
        .into_iter()
        .filter(move |g| only.is_none_or(|o| g.name().contains(o)))
}

/// The architectures of the guests `run` boots with these arguments.
pub fn arches(full: bool, only: Option<&str>) -> Vec<Target> {
    let mut arches: Vec<Target> = selected(full, only)
        .map(|g| g.kernel.arch)
        .chain(deployments(only).map(|_| deployed::ARCH))
        .collect();
    arches.sort_by_key(|a| a.name());
    arches.dedup();
    arches
}

fn selected(full: bool, only: Option<&str>) -> impl Iterator<Item = Guest> {
    matrix()
        .into_iter()
        .filter(move |g| full || !g.full_only)
        .filter(move |g| only.is_none_or(|o| g.name().contains(o)))
}

/// Runs the VM tests; returns (passed, failed names). `only` limits them to guests whose
/// name contains it.
pub fn run(full: bool, only: Option<&str>) -> (usize, Vec<String>) {
    let mut checks = Checks {
        passed: 0,
        failed: Vec::new(),
    };
    let base = workspace_root().join("target/vm-results");
    for guest in selected(full, only) {
        check_guest(&mut checks, &guest, &base.join(guest.name()));
    }
    let deployments: Vec<deployed::Guest> = deployments(only).collect();
    deployed::run(&deployments, &mut |name, result| checks.check(name, result));
    if only.is_none_or(|o| COMPARE_NAME.contains(o)) {
        checks.check(
            &format!("{COMPARE_NAME}_stock_locked_fastpath_fast"),
            compare_counts_every_call(),
        );
    }
    if only.is_none() {
        checks.check("runner_reports_a_hang", a_hang_is_reported());
    }
    (checks.passed, checks.failed)
}
