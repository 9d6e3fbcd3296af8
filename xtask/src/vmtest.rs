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

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use kcmp_trace_common::{
    classify::Strategy,
    json::{
        event::{EventRecord, WriterKind},
        fallbacks::{FallbackCounts, FallbacksByWriter},
        lines::{Comparison, ReportLine},
        plan::{AttachMode, LockWaits, Model, Plan},
        recording::RecordingLine,
        report::{Counts, KCMP_READER, OTHER_READER, ReaderReport, Report},
        stacks::{FoldBy, LOST_FRAME, StackRow, folded},
        stress::{ENVIRON, MmReads, StressReport},
        timeline::{self, TraceFile},
    },
    outcome::Outcome,
    programs,
    reader::ProcReader,
};
use serde_json::Value;

use crate::{
    compare, criu, deployed,
    kernel::{Flavour, Kernel, Preempt, Version, ensure_kernel},
    output::{self, Watched},
    target::Target,
    vm::{VmSpec, default_files, run as run_vm},
    workspace::workspace_root,
};

// The runs, by the names the guest scripts give their result files (`NAME.stress.json`,
// `NAME.t1.json`, ...) and the checks read them by.
const RUN_CALM: &str = "calm";
const RUN_RACE_FENTRY: &str = "race_fentry";
const RUN_RACE_KPROBE: &str = "race_kprobe";
const RUN_RACE_DEFAULT: &str = "race_default";
const RUN_ERRORS_FENTRY: &str = "errors_fentry";
const RUN_ERRORS_KPROBE: &str = "errors_kprobe";
const RUN_BOUNDARY: &str = "boundary";
const RUN_WRITERS: &str = "writers";
const RUN_BPF_LOG: &str = "bpflog";
const RUN_RACE_TSYNC: &str = "race_tsync";
const RUN_READERS_EXEC: &str = "readers_exec";
const RUN_READERS_TSYNC: &str = "readers_tsync";
const RUN_READERS_STOCK: &str = "readers_stock";
const RUN_CROWD: &str = "crowd";
const RUN_CROWD_DEFAULT: &str = "crowd_default";
/// The two tracers of a run, as `traced_stress` names their files: `$T1`'s, then `$T2`'s.
const TRACERS: [&str; 2] = ["t1", "t2"];

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
    wait_attached /results/$name.t1.err $p1 || return 1
    wait_attached /results/$name.t2.err $p2 || return 1
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

/// Both writers of exec_update_lock at once (7.2), for the events that name them.
const WRITERS_BOTH: &str =
    "--duration 4s --threads 2 --exec-racers 2 --tsync-racers 2 --types vm,files,sighand";

/// exec_update_lock's /proc readers (and environ, an `other` caller) beside kcmp, racing
/// execs or TSYNCs (7.2); against execs an mm reader too, whose environ opens are a known
/// number of mm_access() reads.
const READERS_EXEC: &str = "--duration 4s --threads 2 --exec-racers 2 --proc-readers 2 \
     --mm-readers 1 --types vm,files";
const READERS_TSYNC: &str =
    "--duration 4s --threads 2 --tsync-racers 2 --proc-readers 2 --types vm,files";

/// The readers runs: the default plan and a kprobe + infer tracer, both following readers.
/// Without the series a single run, against exec racers.
fn readers_script(series: bool) -> String {
    let both =
        r#"T1="--readers --stacks" T2="--readers --stacks --attach kprobe --strategy infer""#;
    if series {
        format!(
            "\n{both} traced_stress {RUN_READERS_EXEC} {READERS_EXEC}\n\
             {both} traced_stress {RUN_READERS_TSYNC} {READERS_TSYNC}\n"
        )
    } else {
        format!("\n{both} traced_stress {RUN_READERS_STOCK} {READERS_EXEC}\n")
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
T1="" T2="{second}" traced_stress {RUN_RACE_TSYNC} {RACE_TSYNC}
"#
    )
}

fn fastpath_script(crowd: Option<Crowd>, tsync: bool) -> String {
    let mut script = format!(
        r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
T1="--attach fentry --strategy direct" T2="--attach fentry --strategy infer" traced_stress {RUN_CALM} -n 20000 --threads 2 --types vm,files,file
T1="--attach fentry --strategy direct" T2="--attach fentry --strategy infer" traced_stress {RUN_RACE_FENTRY} {RACE}
T1="--attach kprobe --strategy direct" T2="--attach kprobe --strategy infer" traced_stress {RUN_RACE_KPROBE} {RACE}
T1="" T2="--attach tracepoint" traced_stress {RUN_RACE_DEFAULT} {RACE}
T1="--attach fentry --strategy direct" T2="--attach fentry --strategy infer" traced_stress {RUN_ERRORS_FENTRY} {ERROR_MIX}
T1="--attach kprobe --strategy direct" T2="--attach kprobe --strategy infer" traced_stress {RUN_ERRORS_KPROBE} {ERROR_MIX}
T1="--attach tracepoint" T2="" traced_stress {RUN_BOUNDARY} {ERROR_MIX}
rm -f /tmp/go
kcmp-trace stress --json --wait-for /tmp/go {writers} > /results/{RUN_WRITERS}.stress.json &
sp=$!
kcmp-trace events --json --ring-size 64M -p $sp > /results/{RUN_WRITERS}.events.json 2> /results/{RUN_WRITERS}.events.err &
ep=$!
kcmp-trace record --events -o /tmp/{RUN_WRITERS}.jsonl -p $sp > /dev/null 2> /results/{RUN_WRITERS}.record.err &
rp=$!
wait_attached /results/{RUN_WRITERS}.events.err $ep
wait_attached /results/{RUN_WRITERS}.record.err $rp
touch /tmp/go
wait $sp
kill -INT $ep $rp
wait $ep $rp
kcmp-trace report --json /tmp/{RUN_WRITERS}.jsonl > /results/{RUN_WRITERS}.report.json
kcmp-trace report /tmp/{RUN_WRITERS}.jsonl > /results/{RUN_WRITERS}.report.txt
grep -e '"outcome":"retry"' -e '"outcome":"busy"' /tmp/{RUN_WRITERS}.jsonl > /results/{RUN_WRITERS}.recorded_fallbacks.jsonl || true
grep -c '^{{"kind":"event"' /tmp/{RUN_WRITERS}.jsonl > /results/{RUN_WRITERS}.recorded_events || true
kcmp-trace report --trace /results/{RUN_WRITERS}.trace.json /tmp/{RUN_WRITERS}.jsonl 2> /results/{RUN_WRITERS}.trace.err || echo "report --trace: exit $?" >> /results/{RUN_WRITERS}.trace.err
{bpf_log}"#,
        writers = if tsync { WRITERS_BOTH } else { RACE },
        bpf_log = bpf_log_script()
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
fn bpf_log_script() -> String {
    format!(
        r#"
rm -f /tmp/go
kcmp-trace stress --json --wait-for /tmp/go -n 100 --threads 1 > /results/{RUN_BPF_LOG}.stress.json &
sp=$!
kcmp-trace watch --bpf-log -p $sp > /dev/null 2> /results/{RUN_BPF_LOG}.err &
wp=$!
wait_attached /results/{RUN_BPF_LOG}.err $wp
touch /tmp/go
wait $sp
kill -INT $wp
wait $wp
"#
    )
}

fn stock_script(crowd: Option<Crowd>, tsync: bool) -> String {
    let mut script = format!(
        r#"
set -e
kcmp-trace doctor --json > /results/doctor.json
T1="--attach fentry" T2="--attach fentry" traced_stress {RUN_ERRORS_FENTRY} {ERROR_MIX}
T1="--attach kprobe" T2="--attach kprobe" traced_stress {RUN_ERRORS_KPROBE} {ERROR_MIX}
T1="--attach tracepoint" T2="" traced_stress {RUN_BOUNDARY} {ERROR_MIX}
T1="--attach fentry" T2="--attach fentry" traced_stress {RUN_RACE_FENTRY} {RACE}
T1="--attach kprobe" T2="--attach kprobe" traced_stress {RUN_RACE_KPROBE} {RACE}
T1="" T2="--attach tracepoint" traced_stress {RUN_RACE_DEFAULT} {RACE}
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
T1="--attach tracepoint" T2="" traced_stress {RUN_BOUNDARY} {ERROR_MIX}
T1="--attach fentry" T2="--attach fentry" traced_stress {RUN_RACE_FENTRY} {RACE}
T1="--attach kprobe" T2="--attach kprobe" traced_stress {RUN_RACE_KPROBE} {RACE}
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
T1="" T2="--attach tracepoint" traced_stress {RUN_CROWD_DEFAULT} {CROWD}
"#
    );
    if crowd == Crowd::DefaultOnly {
        return default;
    }
    format!(
        r#"
round=1
while :; do
    T1="--attach fentry --strategy infer" T2="--attach fentry" traced_stress {RUN_CROWD} {CROWD}
    grep -q '"missed_runs":{{"' /results/{RUN_CROWD}.t1.json && break
    [ $round -lt {CROWD_ROUNDS} ] || break
    round=$((round+1))
done
echo $round > /results/{RUN_CROWD}.rounds
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

/// The workload's own count of a run (`NAME.stress.json`).
fn stress_of(dir: &Path, run: &str) -> anyhow::Result<StressReport> {
    output::read(dir, &format!("{run}.stress.json"))
}

/// A tracer's total: the summary `watch --json` printed at exit.
fn total_of(dir: &Path, file: &str) -> anyhow::Result<Report> {
    Ok(Watched::read(dir, file)?.total()?.clone())
}

/// A count by name (a type, a result, an outcome): reports and the workload write only the
/// names with a count, so a name they leave out counted none.
fn named(counts: &Counts, name: &str) -> u64 {
    counts.get(name).copied().unwrap_or_default()
}

fn outcome(total: &Report, o: Outcome) -> u64 {
    named(&total.by_outcome, o.name())
}

fn outcome_result(total: &Report, o: Outcome, result: &str) -> u64 {
    total
        .by_outcome_result
        .get(o.name())
        .map_or(0, |results| named(results, result))
}

/// A reader's report, which every tracer that followed the readers lists.
fn reader_of<'a>(total: &'a Report, reader: &str) -> anyhow::Result<&'a ReaderReport> {
    total
        .by_reader
        .as_ref()
        .context("no by_reader: the readers were not followed")?
        .get(reader)
        .with_context(|| format!("no reader {reader} in by_reader"))
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

/// The paths the oracle counts once per call (its `locked` counts the fallbacks of retry
/// and busy again).
const ORACLE_PATHS: [Outcome; 4] = [
    Outcome::Fast,
    Outcome::Retry,
    Outcome::Busy,
    Outcome::Interrupted,
];

impl Oracle {
    /// The count of a path (0 for paths the oracle does not count).
    fn of(&self, path: Outcome) -> u64 {
        match path {
            Outcome::Fast => self.fast,
            Outcome::Retry => self.retry,
            Outcome::Busy => self.busy,
            Outcome::Locked => self.locked,
            Outcome::Interrupted => self.interrupted,
            Outcome::Unknown | Outcome::NoTask => 0,
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
    let get = |k: Outcome| {
        counts
            .get(k.name())
            .copied()
            .with_context(|| format!("{file}: no {} line in {text:?}", k.name()))
    };
    Ok(Oracle {
        fast: get(Outcome::Fast)?,
        retry: get(Outcome::Retry)?,
        busy: get(Outcome::Busy)?,
        locked: get(Outcome::Locked)?,
        interrupted: get(Outcome::Interrupted)?,
    })
}

/// Which tracers must report exactly (rather than honestly) in a run: a predicate on the
/// tracer's plan.
type Strict<'a> = &'a dyn Fn(&Plan) -> bool;

/// Everything must be exact in the ordinary runs but the modes whose programs the kernel
/// can preempt mid-run and then skip: fentry on a kernel that preempts kernel code, and the
/// syscall tracepoints where they run faultable too.
fn strict_for(guest: &Guest) -> impl Fn(&Plan) -> bool + '_ {
    move |plan: &Plan| {
        !(guest.preemptible() && plan.mode == AttachMode::Fentry
            || guest.tracepoints_skippable() && plan.mode == AttachMode::Tracepoint)
    }
}

/// One tracer of a run: its name and plan ("t1 (kprobe/direct)"), and its total.
struct Tracer {
    name: String,
    plan: Plan,
    total: Report,
}

/// Each tracer of a run; a strict one must claim to be exact.
fn tracers(dir: &Path, run: &str, strict: Strict) -> anyhow::Result<Vec<Tracer>> {
    TRACERS
        .into_iter()
        .map(|t| {
            let watched = Watched::read(dir, &format!("{run}.{t}.json"))?;
            let total = watched.total()?.clone();
            let name = format!("{t} ({})", watched.plan.attach());
            ensure!(
                !strict(&watched.plan) || total.exact,
                "{name}: not exact: missed {:?} incomplete {:?}",
                total.missed_runs,
                total.incomplete
            );
            Ok(Tracer {
                name,
                plan: watched.plan,
                total,
            })
        })
        .collect()
}

/// The syscall boundary shows no path: every counted call is `unknown`.
fn boundary_paths(tracer: &str, total: &Report) -> anyhow::Result<()> {
    ensure!(
        outcome(total, Outcome::Unknown) == total.calls,
        "{tracer}: a boundary tracer classified calls: {:?}",
        total.by_outcome
    );
    Ok(())
}

/// One tracer's total against the truth: exact when it says so, short by no more than it
/// says otherwise. Returns how many calls it may be missing (0 when exact).
fn honest_count(tracer: &str, total: &Report, stress: &StressReport) -> anyhow::Result<u64> {
    let (calls, truth, slack) = (total.calls, stress.calls, total.incomplete.calls);
    ensure!(
        calls <= truth,
        "{tracer}: {calls} calls, more than the workload's {truth}"
    );
    if total.exact {
        ensure!(
            calls == truth,
            "{tracer}: claims exact, counted {calls} of {truth} calls"
        );
        for (key, counted, made) in [
            ("by_result", &total.by_result, &stress.by_result),
            ("by_type", &total.by_type, &stress.by_type),
        ] {
            ensure!(
                counted == made,
                "{tracer}: claims exact, {key} {counted:?} vs workload {made:?}"
            );
        }
    } else {
        ensure!(
            truth - calls <= slack,
            "{tracer}: {calls} of {truth} calls, but says it may be short by only {slack} ({:?})",
            total.incomplete
        );
    }
    Ok(truth - calls)
}

/// The paths counted by a tracer against the kernel's oracle, allowing for what it says it
/// may have missed (an uncounted call, a misread path: each moves the sums by at most 2).
fn honest_paths(tracer: &str, total: &Report, o: &Oracle) -> anyhow::Result<()> {
    let off: u64 = ORACLE_PATHS
        .iter()
        .map(|&p| outcome(total, p).abs_diff(o.of(p)))
        .sum::<u64>()
        + outcome(total, Outcome::Locked)
        + outcome(total, Outcome::Unknown);
    if total.exact {
        ensure!(
            off == 0,
            "{tracer}: claims exact, outcomes {:?} vs the kernel's {o:?}",
            total.by_outcome
        );
    } else {
        let inc = &total.incomplete;
        let slack = inc.calls + 2 * inc.outcomes + total.unclassified;
        ensure!(
            off <= slack,
            "{tracer}: outcomes {:?} are {off} off the kernel's {o:?}, but it allows for {slack} ({inc:?})",
            total.by_outcome
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
    let stress = stress_of(dir, name)?;
    let o = oracle(dir, name)?;
    let reached = stress.reached_comparison;
    eprintln!(
        "vm: {name}: {} calls; oracle fast={} retry={} busy={} locked={} interrupted={}",
        stress.calls, o.fast, o.retry, o.busy, o.locked, o.interrupted
    );
    ensure!(
        o.fast + o.retry + o.busy == reached,
        "oracle {o:?} vs {reached} calls"
    );
    ensure!(o.locked + o.interrupted == o.retry + o.busy, "oracle {o:?}");
    if want_races {
        ensure!(o.retry + o.busy > 0, "no races provoked: {o:?}");
    }
    for Tracer {
        name: tracer,
        plan,
        total,
    } in tracers(dir, name, strict)?
    {
        honest_count(&tracer, &total, &stress)?;
        if plan.strategy == Strategy::Boundary {
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
    plan: &Plan,
    total: &Report,
    locking_calls: u64,
) -> anyhow::Result<()> {
    let Some(timed_by) = plan.lock_waits.filter(|_| total.exact) else {
        return Ok(());
    };
    let waits = total.lock_wait_ns.count;
    ensure!(
        waits == locking_calls,
        "{tracer} (lock waits timed by {timed_by:?}): {waits} lock waits for {locking_calls} \
         calls that took their locks"
    );
    Ok(())
}

/// Both tracers of a run on a kernel without the series: counts honest, every counted call
/// that found its tasks `locked`, none `fast`.
fn run_all_locked(dir: &Path, name: &str, strict: Strict) -> anyhow::Result<()> {
    let stress = stress_of(dir, name)?;
    let reached = stress.reached_comparison;
    for Tracer {
        name: tracer,
        plan,
        total,
    } in tracers(dir, name, strict)?
    {
        let short = honest_count(&tracer, &total, &stress)?;
        if plan.strategy == Strategy::Boundary {
            boundary_paths(&tracer, &total)?;
            continue;
        }
        let locked = outcome(&total, Outcome::Locked) + outcome(&total, Outcome::Interrupted);
        let paths = [Outcome::Fast, Outcome::Retry, Outcome::Busy];
        ensure!(
            paths.iter().map(|&p| outcome(&total, p)).sum::<u64>() == 0,
            "{tracer}: a fast path on a kernel without one: {:?}",
            total.by_outcome
        );
        one_wait_per_locking_call(&tracer, &plan, &total, reached)?;
        if total.exact {
            ensure!(
                locked == reached,
                "{tracer}: claims exact, locked={locked} of {reached}: {:?}",
                total.by_outcome
            );
        } else {
            ensure!(
                locked + outcome(&total, Outcome::Unknown) + short >= reached,
                "{tracer}: locked={locked} of {reached}, short by {short}: {:?}",
                total.by_outcome
            );
        }
    }
    Ok(())
}

/// A tracer's report is exact: no skipped run, nothing unpaired, the workload's count of
/// calls.
fn exact_report(dir: &Path, name: &str, tracer: &str) -> anyhow::Result<()> {
    let total = total_of(dir, &format!("{name}.{tracer}.json"))?;
    let stress = stress_of(dir, name)?;
    ensure!(
        total.exact,
        "{tracer} is not exact: missed {:?} incomplete {:?}",
        total.missed_runs,
        total.incomplete
    );
    ensure!(
        total.calls == stress.calls,
        "{} calls, workload {}",
        total.calls,
        stress.calls
    );
    Ok(())
}

/// Where each invalid call of ERROR_MIX lands: `path` for everything that found its tasks.
fn errors_land_right(dir: &Path, name: &str, path: Outcome, strict: Strict) -> anyhow::Result<()> {
    let stress = stress_of(dir, name)?;
    let reached = stress.reached_comparison;
    for Tracer {
        name: tracer,
        total: t,
        ..
    } in tracers(dir, name, strict)?
    {
        if honest_count(&tracer, &t, &stress)? != 0 {
            // Said so; the breakdown below cannot be held to the workload's.
            continue;
        }
        for (o, result, want) in [
            (path, "EPERM", 100),
            (path, "EBADF", 60),
            (path, "EINVAL", 40),
            (Outcome::NoTask, "ESRCH", 50),
        ] {
            let got = outcome_result(&t, o, result);
            ensure!(
                got == want || !t.exact,
                "{tracer}: {}/{result}={got}, want {want}: {:?}",
                o.name(),
                t.by_outcome_result
            );
        }
        ensure!(
            outcome(&t, path) == reached || !t.exact,
            "{tracer}: {}={} of {reached}",
            path.name(),
            outcome(&t, path)
        );
    }
    Ok(())
}

/// Both tracers (tracepoint, and the default plan) counted the workload exactly; the
/// tracepoint one honestly where the kernel can skip its runs.
fn boundary_counts_exactly(dir: &Path, guest: &Guest) -> anyhow::Result<()> {
    let stress = stress_of(dir, RUN_BOUNDARY)?;
    for tracer in TRACERS {
        let total = total_of(dir, &format!("{RUN_BOUNDARY}.{tracer}.json"))?;
        ensure!(
            total.exact || tracer == TRACERS[0] && guest.tracepoints_skippable(),
            "{tracer}: not exact: {:?}",
            total.incomplete
        );
        honest_count(tracer, &total, &stress)?;
    }
    Ok(())
}

/// The default tracer timed every TSYNC write section the racers went through, and told
/// them apart from execs.
fn tsync_sections_counted(dir: &Path, name: &str) -> anyhow::Result<()> {
    let stress = stress_of(dir, name)?;
    let total = total_of(dir, &format!("{name}.{}.json", TRACERS[0]))?;
    let (want, got) = (stress.tsync_sections, total.tsync_hold_ns.count);
    eprintln!(
        "vm: {name}: {want} TSYNC write sections; the default tracer timed {got}, and {} exec sections",
        total.exec_hold_ns.count
    );
    ensure!(want > 0, "the TSYNC racers went through no write section");
    ensure!(
        got == want && total.exact,
        "{got} TSYNC write sections of the racers' {want} (exact {}, incomplete {:?})",
        total.exact,
        total.incomplete
    );
    Ok(())
}

/// A readers run: the workload's own report and both tracers, which must claim to be exact
/// (both run kprobes, which the kernel does not skip).
fn readers_run(dir: &Path, name: &str) -> anyhow::Result<(StressReport, Vec<Tracer>)> {
    Ok((stress_of(dir, name)?, tracers(dir, name, &|_| true)?))
}

/// Each /proc reader of a run on the fast-path kernel, in both tracers: its calls equal
/// the workload's reads, and its fast, retry, busy and interrupted counts the kernel's own
/// (proc_fastpath/<file>), exactly; kcmp's against its oracle as always.
fn readers_match_oracle(dir: &Path, name: &str, strict: Strict) -> anyhow::Result<()> {
    run_matches_oracle(dir, name, false, strict)?;
    let (stress, both) = readers_run(dir, name)?;
    let mut raced = 0;
    for reader in ProcReader::ALL.map(ProcReader::name) {
        let o = oracle(dir, &format!("{name}.{reader}"))?;
        let reads = named(&stress.proc_reads, reader);
        eprintln!(
            "vm: {name}: {reads} reads by {reader}; oracle fast={} retry={} busy={} locked={} interrupted={}",
            o.fast, o.retry, o.busy, o.locked, o.interrupted
        );
        ensure!(reads > 0, "the workload read nothing {reader} serves");
        ensure!(
            o.fast + o.retry + o.busy == reads,
            "{reader}: oracle {o:?} vs {reads} reads"
        );
        ensure!(
            o.locked + o.interrupted == o.retry + o.busy,
            "{reader}: oracle {o:?}"
        );
        raced += o.retry + o.busy;
        for Tracer { name: t, total, .. } in &both {
            let r = reader_of(total, reader)?;
            ensure!(r.calls == reads, "{t}: {reader} {r:?} vs {reads} reads");
            // The oracle's `locked` counts the retry and busy reads again (the fallback took
            // the lock); a call's outcome is one of the paths.
            for path in ORACLE_PATHS {
                ensure!(
                    named(&r.by_outcome, path.name()) == o.of(path),
                    "{t}: {reader} {:?} vs the kernel's {o:?}",
                    r.by_outcome
                );
            }
            ensure!(
                named(&r.by_outcome, Outcome::Locked.name())
                    + named(&r.by_outcome, Outcome::Unknown.name())
                    == 0,
                "{t}: {reader} {:?}: a path the fast-path kernel does not take",
                r.by_outcome
            );
            // Each fallback waited on the lock once.
            ensure!(
                r.lock_waits == o.locked,
                "{t}: {reader}: {} lock waits, the kernel's fallbacks {o:?}",
                r.lock_waits
            );
        }
    }
    ensure!(raced > 0, "no /proc read raced a writer");
    others_by_site(name, &stress, &both)
}

/// Each /proc reader of a run on a kernel without the series: every read waited for the
/// lock once, and was locked.
fn readers_all_locked(dir: &Path, name: &str, strict: Strict) -> anyhow::Result<()> {
    run_all_locked(dir, name, strict)?;
    let (stress, both) = readers_run(dir, name)?;
    for reader in ProcReader::ALL.map(ProcReader::name) {
        let reads = named(&stress.proc_reads, reader);
        ensure!(reads > 0, "the workload read nothing {reader} serves");
        for Tracer { name: t, total, .. } in &both {
            let r = reader_of(total, reader)?;
            eprintln!("vm: {name}: {t}: {reader}: {r:?} ({reads} reads)");
            ensure!(
                r.lock_waits == reads
                    && named(&r.by_outcome, Outcome::Locked.name()) == reads
                    && r.calls == reads,
                "{t}: {reader} {r:?} vs {reads} reads, each one lock wait"
            );
        }
    }
    others_by_site(name, &stress, &both)
}

/// The symbol `--readers` counts mm_access()'s waits on exec_update_lock under
/// (`other:mm_access`): the caller of down_read_killable().
const MM_ACCESS: &str = "mm_access";

/// The workload's mm_access() reads of exec_update_lock: its /proc readers' environ opens
/// and its mm readers' (absent: none), every one of which must have succeeded (a failed
/// one may not have reached the lock).
fn mm_access_reads(stress: &StressReport) -> anyhow::Result<(u64, Option<&MmReads>)> {
    let environ = named(&stress.proc_reads, ENVIRON);
    let Some(mm) = &stress.mm_reads else {
        return Ok((environ, None));
    };
    ensure!(
        mm.opens > 0 && mm.opened() == mm.opens,
        "the mm readers' opens did not all succeed: {mm:?}"
    );
    Ok((environ + mm.opens, Some(mm)))
}

/// The workload's opens of /proc/PID/environ (its /proc readers' and mm readers') each
/// waited on the target's exec_update_lock in mm_access(), a reader the series leaves
/// alone: counted as `other`, and in kprobe mode under the function that called
/// down_read_killable().
fn others_by_site(name: &str, stress: &StressReport, both: &[Tracer]) -> anyhow::Result<()> {
    let (opens, _) = mm_access_reads(stress)?;
    ensure!(opens > 0, "the workload opened no {ENVIRON}");
    let site = format!("{OTHER_READER}:");
    for Tracer {
        name: t,
        plan,
        total,
    } in both
    {
        let other = reader_of(total, OTHER_READER)?.lock_waits;
        let sites: BTreeMap<&String, u64> = total
            .by_reader
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(&site))
            .map(|(k, v)| (k, v.lock_waits))
            .collect();
        eprintln!(
            "vm: {name}: {t}: other lock waits {other} of {opens} environ opens, sites {sites:?}"
        );
        ensure!(
            other == opens,
            "{t}: other waited {other} times, environ was opened {opens}"
        );
        let placed: u64 = sites.values().sum();
        if plan.mode == AttachMode::Kprobe {
            ensure!(
                placed == opens && total.others_unplaced == 0,
                "{t}: {placed} of {opens} waits under a call site: {sites:?}"
            );
        } else {
            ensure!(
                total.others_unplaced == opens,
                "{t}: {} unplaced of {opens}",
                total.others_unplaced
            );
        }
    }
    Ok(())
}

/// The mm readers' opens (`stress --mm-readers`) are a known number of mm_access() reads
/// of exec_update_lock: with the /proc readers' environ opens, each kprobe tracer's
/// `other:mm_access` call site counted exactly that many lock waits of the workload's.
fn mm_access_site_exact(dir: &Path, name: &str) -> anyhow::Result<()> {
    let (stress, both) = readers_run(dir, name)?;
    let (want, mm) = mm_access_reads(&stress)?;
    let mm = mm.context("the run had no mm readers (no mm_reads)")?;
    let environ = named(&stress.proc_reads, ENVIRON);
    let site = format!("{OTHER_READER}:{MM_ACCESS}");
    let mut held = 0;
    for Tracer {
        name: t,
        plan,
        total,
    } in &both
    {
        // A trampoline program sees no call site: others_by_site holds it to the total.
        if plan.mode != AttachMode::Kprobe {
            continue;
        }
        let got = reader_of(total, &site)?.lock_waits;
        eprintln!(
            "vm: {name}: {t}: {site} {got} lock waits; the workload's mm_access reads {want} \
             ({} mm reader opens of {}, {environ} /proc reader opens of {ENVIRON})",
            mm.opens, mm.file
        );
        ensure!(
            got == want,
            "{t}: {site} counted {got} lock waits, the workload made {want} mm_access reads \
             ({} by its mm readers, {environ} by its /proc readers)",
            mm.opens
        );
        held += 1;
    }
    ensure!(held > 0, "no kprobe tracer in {name}: no call site to hold");
    Ok(())
}

/// With the series, each /proc reader tail-calls this helper (its test kernel's patch 5),
/// so the reader's own frame is gone from the stack of its fallback's lock wait.
const PROC_SERIES_HELPER: &str = "proc_exec_update_show";

/// The function every stack of a waiter or writer passes through: its own, or for a /proc
/// reader on the series' kernel, the helper it tail-calls.
fn own_functions(who: &str) -> Vec<&'static str> {
    match who {
        OTHER_READER => vec![MM_ACCESS],
        "exec" => vec!["begin_new_exec"],
        "tsync" => vec!["landlock_restrict_sibling_threads"],
        w => ProcReader::ALL
            .into_iter()
            .filter(|r| r.name() == w)
            .flat_map(|r| [r.function(), PROC_SERIES_HELPER])
            .collect(),
    }
}

/// `--stacks` in both tracers of a readers run: each waiter's stacks add up exactly to its
/// lock waits (kcmp, each /proc reader, other callers), each writer's to its write
/// sections, with no stack lost or dropped; every /proc reader's stack passes through its
/// own function (or the series' helper it tail-calls), every other caller's (the workload's environ opens, all of it) through
/// mm_access(), exec's through begin_new_exec() and TSYNC's through
/// landlock_restrict_sibling_threads(); the folded lines of other callers, as
/// `report --folded count` prints them, add up to the workload's environ opens; and every
/// holder a wait names is one of the workload's racers, of its kind, with some waits
/// naming one (the readers read the racers' /proc files as they exec or TSYNC).
fn stacks_account_for_every_wait(dir: &Path, name: &str) -> anyhow::Result<()> {
    let (stress, both) = readers_run(dir, name)?;
    let (opens, _) = mm_access_reads(&stress)?;
    let racers = racer_kinds(&stress);
    for Tracer { name: t, total, .. } in &both {
        let rows = total
            .stacks
            .as_deref()
            .with_context(|| format!("{t}: no stacks in the report (--stacks)"))?;
        let unkept: u64 = rows
            .iter()
            .filter(|r| r.frames == [LOST_FRAME])
            .map(|r| r.count)
            .sum();
        ensure!(
            unkept == 0 && total.incomplete.stacks == 0,
            "{t}: {unkept} stacks lost, {} dropped",
            total.incomplete.stacks
        );
        let waiters = [KCMP_READER, OTHER_READER]
            .into_iter()
            .chain(ProcReader::ALL.map(ProcReader::name));
        for reader in waiters {
            let waits = reader_of(total, reader)?.lock_waits;
            let stacked = StackRow::waits_of(rows, reader);
            eprintln!("vm: {name}: {t}: {reader}: {stacked} stacked of {waits} lock waits");
            ensure!(
                stacked == waits,
                "{t}: {reader}'s stacks count {stacked} waits, its lock waits are {waits}"
            );
        }
        for (writer, sections) in [
            ("exec", total.exec_hold_ns.count),
            ("tsync", total.tsync_hold_ns.count),
        ] {
            let stacked = StackRow::waits_of(rows, writer);
            ensure!(
                stacked == sections,
                "{t}: {writer}'s stacks count {stacked} sections, it held the lock {sections} times"
            );
        }
        for row in rows {
            let functions = own_functions(&row.who);
            ensure!(
                functions.is_empty() || row.frames.iter().any(|f| functions.contains(&f.as_str())),
                "{t}: a stack of {} through none of {functions:?}: {:?}",
                row.who,
                row.frames
            );
        }
        let folded_others: u64 = folded(rows, FoldBy::Count, false)
            .lines()
            .filter(|l| l.starts_with(&format!("{OTHER_READER};")))
            .map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()))
            .sum::<Option<u64>>()
            .context("a folded line without a count")?;
        let mut held = BTreeMap::<&str, u64>::new();
        for row in rows {
            let Some(h) = &row.holder else { continue };
            ensure!(
                racers.get(&h.tgid) == Some(&h.kind),
                "{t}: {} waits of {} name {h}, not a racer of its kind ({racers:?})",
                row.count,
                row.who
            );
            *held.entry(row.who.as_str()).or_default() += row.count;
        }
        eprintln!("vm: {name}: {t}: waits held by a racer, by waiter: {held:?}");
        ensure!(
            !held.is_empty(),
            "{t}: no wait named a holder, though the racers held the lock as the readers read"
        );
        eprintln!("vm: {name}: {t}: folded other waits {folded_others}, environ opens {opens}");
        ensure!(
            folded_others == opens,
            "{t}: the folded stacks of other callers count {folded_others} waits, the \
             workload opened {ENVIRON} {opens} times"
        );
    }
    Ok(())
}

/// The eBPF side's diagnostic for the workload's first call came out on stderr.
fn bpf_log_reaches_the_terminal(dir: &Path) -> anyhow::Result<()> {
    let stress = stress_of(dir, RUN_BPF_LOG)?;
    let file = format!("{RUN_BPF_LOG}.err");
    let err =
        std::fs::read_to_string(dir.join(&file)).with_context(|| format!("reading {file}"))?;
    let want = format!("of tgid {} makes its first traced kcmp call", stress.pid);
    ensure!(err.contains(&want), "no {want:?} in:\n{err}");
    Ok(())
}

/// The kind of writer each racer of a workload is: its exec racers come first in
/// `racer_pids`, then its TSYNC racers.
fn racer_kinds(stress: &StressReport) -> BTreeMap<u32, WriterKind> {
    stress
        .racer_pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| {
            let kind = if i < stress.exec_racers {
                WriterKind::Exec
            } else {
                WriterKind::Tsync
            };
            (pid as u32, kind)
        })
        .collect()
}

/// A retry or busy event's writer against the racers: one of them, of its kind. None: the
/// event names no writer.
fn writer_is_a_racer(
    e: &EventRecord,
    racers: &BTreeMap<u32, WriterKind>,
) -> anyhow::Result<Option<WriterKind>> {
    let Some(w) = &e.writer else {
        return Ok(None);
    };
    match racers.get(&w.tgid) {
        Some(&kind) if kind == w.kind => Ok(Some(kind)),
        Some(kind) => bail!("writer {w:?} is a {} racer", kind.name()),
        None => bail!("writer {w:?} is not among the racers {racers:?}"),
    }
}

/// Every retry and busy call names its writer, a racer of the kind the workload ran it as,
/// both in `events` and in a recording's events; `report`'s fallbacks by writer adds up to
/// the recording's retry and busy counts.
fn events_name_the_writers(dir: &Path) -> anyhow::Result<()> {
    let stress = stress_of(dir, RUN_WRITERS)?;
    let racers = racer_kinds(&stress);
    let (out, err) = (
        format!("{RUN_WRITERS}.events.json"),
        format!("{RUN_WRITERS}.events.err"),
    );
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))
    };
    let events: Vec<EventRecord<'static>> = output::lines(&read(&out)?, &out)?;
    let summary = output::events_summary(&read(&err)?, &err)?;
    let (dropped, missing, calls) = (
        summary.events_dropped,
        summary.incomplete.calls,
        stress.calls,
    );
    ensure!(
        events.len() as u64 + dropped <= calls && events.len() as u64 + dropped + missing >= calls,
        "{} events + {dropped} dropped (+ up to {missing} missing) != {calls} calls",
        events.len(),
    );
    let fallback =
        |e: &&EventRecord| e.outcome == Outcome::Retry.name() || e.outcome == Outcome::Busy.name();
    // By the writer's kind; None: no writer named.
    let mut by_kind: BTreeMap<Option<WriterKind>, u64> = BTreeMap::new();
    for e in events.iter().filter(fallback) {
        *by_kind
            .entry(writer_is_a_racer(e, &racers).context(out.clone())?)
            .or_default() += 1;
    }
    eprintln!(
        "vm: writers: {} events, retry/busy by writer {by_kind:?}; racers {racers:?}",
        events.len()
    );
    let wanted: Vec<WriterKind> = racers.values().copied().collect();
    for kind in [WriterKind::Exec, WriterKind::Tsync] {
        ensure!(
            by_kind.contains_key(&Some(kind)) == wanted.contains(&kind),
            "{} writers named in {by_kind:?}, against racers {racers:?}",
            kind.name()
        );
    }
    let unnamed = by_kind.get(&None).copied().unwrap_or_default();
    ensure!(unnamed == 0, "{unnamed} retry/busy events name no writer");

    let recorded_file = format!("{RUN_WRITERS}.recorded_fallbacks.jsonl");
    let recorded: Vec<RecordingLine<'static>> =
        output::lines(&read(&recorded_file)?, &recorded_file)?;
    let mut recorded_counts = FallbackCounts::default();
    for line in &recorded {
        let RecordingLine::Event(e) = line else {
            bail!("{recorded_file}: a reading among the events");
        };
        writer_is_a_racer(e, &racers)?
            .with_context(|| format!("{recorded_file}: {e:?} names no writer"))?;
        if e.outcome == Outcome::Busy.name() {
            recorded_counts.busy += 1;
        } else {
            recorded_counts.retry += 1;
        }
    }
    let report: ReportLine = output::read(dir, &format!("{RUN_WRITERS}.report.json"))?;
    let Some(FallbacksByWriter::Counted(table)) = report.fallbacks_by_writer.as_deref() else {
        bail!("no fallbacks by writer: {:?}", report.fallbacks_by_writer);
    };
    let counted = FallbackCounts {
        retry: outcome(&report.report, Outcome::Retry),
        busy: outcome(&report.report, Outcome::Busy),
    };
    let events_dropped = report.report.events_dropped;
    eprintln!(
        "vm: writers: recorded: table {table:?}; recorded fallback events {recorded_counts:?}; counted {counted:?}; {events_dropped} events dropped"
    );
    for w in &table.writers {
        ensure!(
            racers.get(&w.tgid) == Some(&w.kind),
            "table row {w:?} is not a racer of its kind ({racers:?})"
        );
    }
    ensure!(
        table.no_writer == FallbackCounts::default(),
        "{:?} fallbacks with no writer",
        table.no_writer
    );
    ensure!(
        table.total == recorded_counts,
        "the table's total {:?} is not the recording's {recorded_counts:?} retry/busy events",
        table.total
    );
    // The counters count every call; the table, the calls whose events were delivered.
    let inc = &report.report.incomplete;
    let slack = events_dropped + inc.calls + inc.outcomes;
    let off = table.total.calls().abs_diff(counted.calls());
    if slack == 0 {
        ensure!(
            table.total == counted,
            "the table's total {:?} is not the recording's counted {counted:?}",
            table.total
        );
    } else {
        ensure!(
            table.total.calls() <= counted.calls() + inc.calls + inc.outcomes && off <= slack,
            "the table's total {:?} is {off} off the counted {counted:?}, more than the \
             {events_dropped} events dropped and {inc:?} allow",
            table.total
        );
    }
    Ok(())
}

/// `report --trace` of the writers run: a timeline that holds together (`timeline::check`)
/// with a slice per recorded call, a wait slice per fallback that waited, a slice per write
/// section the fallbacks name and an arrow per fallback; nothing left undrawn.
fn timeline_draws_every_fallback(dir: &Path) -> anyhow::Result<()> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))
    };
    let trace_file = format!("{RUN_WRITERS}.trace.json");
    let trace: TraceFile =
        serde_json::from_str(&read(&trace_file)?).with_context(|| trace_file.clone())?;
    let counts = timeline::check(&trace).with_context(|| trace_file.clone())?;
    let said = read(&format!("{RUN_WRITERS}.trace.err"))?;
    let recorded: u64 = read(&format!("{RUN_WRITERS}.recorded_events"))?
        .trim()
        .parse()
        .context("the recording's event count")?;
    let fallbacks_file = format!("{RUN_WRITERS}.recorded_fallbacks.jsonl");
    let fallbacks: Vec<RecordingLine<'static>> =
        output::lines(&read(&fallbacks_file)?, &fallbacks_file)?;
    let (mut waited, mut sections) = (0u64, BTreeSet::new());
    for line in &fallbacks {
        let RecordingLine::Event(e) = line else {
            bail!("{fallbacks_file}: a reading among the events");
        };
        if e.lock_wait_ns > 0 {
            ensure!(
                e.lock_wait_start_ns.is_some(),
                "{fallbacks_file}: a wait without its start: {e:?}"
            );
            waited += 1;
        }
        let w = e
            .writer
            .as_ref()
            .with_context(|| format!("{fallbacks_file}: {e:?} names no writer"))?;
        let start = w
            .start_ns
            .with_context(|| format!("{fallbacks_file}: a section without its start: {w:?}"))?;
        sections.insert((w.tgid, w.pid, start));
    }
    let slices = |cat: &str| counts.slices.get(cat).copied().unwrap_or(0);
    eprintln!(
        "vm: timeline: {} call slices of {recorded} recorded calls, {} wait slices of \
         {waited} fallbacks that waited, {} section slices of {} sections named, {} arrows of \
         {} fallbacks, {} tracks",
        slices("kcmp"),
        slices("lock"),
        slices("writer"),
        sections.len(),
        counts.flows,
        fallbacks.len(),
        counts.tracks
    );
    ensure!(slices("kcmp") == recorded, "call slices != recorded calls");
    ensure!(
        slices("lock") == waited,
        "wait slices != fallbacks that waited"
    );
    ensure!(
        slices("writer") == sections.len() as u64,
        "section slices != sections the fallbacks name"
    );
    ensure!(
        counts.flows == fallbacks.len() as u64,
        "arrows != fallbacks"
    );
    ensure!(
        said.lines().count() == 1,
        "report --trace left something undrawn:\n{said}"
    );
    Ok(())
}

/// The crowd run: the forced fentry tracer saw the kernel skip runs and says by how much;
/// both tracers stay honest.
fn skipped_runs_are_reported(dir: &Path, suite: Suite) -> anyhow::Result<()> {
    let rounds =
        std::fs::read_to_string(dir.join(format!("{RUN_CROWD}.rounds"))).unwrap_or_default();
    let fentry = total_of(dir, &format!("{RUN_CROWD}.{}.json", TRACERS[0]))?;
    let missed: u64 = fentry.missed_runs.values().sum();
    eprintln!(
        "vm: crowd: fentry tracer: {missed} skipped runs {:?} after {} round(s); incomplete {:?}",
        fentry.missed_runs,
        rounds.trim(),
        fentry.incomplete
    );
    ensure!(
        missed > 0,
        "no skipped run in {CROWD_ROUNDS} rounds: nothing was provoked"
    );
    ensure!(
        !fentry.exact,
        "skipped runs, yet the report claims to be exact"
    );
    match suite {
        Suite::Fastpath => run_matches_oracle(dir, RUN_CROWD, false, &|_| false),
        Suite::Stock | Suite::StockSmoke => run_all_locked(dir, RUN_CROWD, &|_| false),
    }
}

/// `doctor --json` (its own shape, not a published format: each key is held to a value,
/// so a missing one fails), and the plan in it, read as the plan's type.
fn doctor_matches(dir: &Path, guest: &Guest) -> anyhow::Result<()> {
    let d: Value = output::read(dir, "doctor.json")?;
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
    ensure!(
        d["syscall_tracepoints_faultable"] == guest.faultable_tracepoints(),
        "syscall tracepoints faultable: {} (want {})",
        d["syscall_tracepoints_faultable"],
        guest.faultable_tracepoints()
    );
    let plan: Result<Plan, String> =
        serde_json::from_value(d["plan"].clone()).context("parsing doctor's plan")?;
    let plan = plan.map_err(|why| anyhow::anyhow!("doctor found no plan: {why}"))?;
    // Each skipped hook is said once (an entry and a return hook share the verdict).
    let skipped: Vec<&String> = plan.skipped.iter().map(|(hook, _)| hook).collect();
    let mut unique = skipped.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == skipped.len(), "skipped twice: {skipped:?}");
    let strategy = if series {
        Strategy::Direct
    } else {
        Strategy::Stock
    };
    let mode = if guest.preemptible() {
        AttachMode::Kprobe
    } else {
        AttachMode::Fentry
    };
    ensure!(
        plan.strategy == strategy && plan.mode == mode,
        "plan {} (want {}/{}): {}",
        plan.attach(),
        mode.name(),
        strategy.name(),
        plan.why
    );
    // Nothing every process calls is hooked, but on PREEMPT_RT, where down_read_killable()
    // times the waits (rwbase_rt fires contention_end preemptible).
    let everyones = [
        "down_read_killable",
        "down_read_killable_nested",
        "ptrace_may_access",
    ];
    let taxing: Vec<&str> = plan
        .hooks
        .iter()
        .map(|h| h.target.as_str())
        .filter(|target| everyones.contains(target))
        .collect();
    let (waits, taxed) = if guest.model == Model::Rt.name() {
        (LockWaits::Probes, true)
    } else {
        (LockWaits::Contention, false)
    };
    ensure!(
        plan.lock_waits == Some(waits) && taxing.is_empty() != taxed,
        "lock waits {:?} (want {waits:?}), hooks on every process's functions: {taxing:?}",
        plan.lock_waits
    );
    // Kprobe mode measures the syscall at its tracepoints only where they see every call.
    if mode == AttachMode::Kprobe {
        let exit = if guest.tracepoints_skippable() {
            programs::KCMP_RETURN.kprobe
        } else {
            programs::KCMP_TP_EXIT
        };
        ensure!(
            plan.hooks.iter().any(|h| h.program == exit),
            "kcmp's exit is not {exit}: {:?}",
            plan.hooks
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
                    run_matches_oracle(dir, RUN_CALM, false, strict)?;
                    let o = oracle(dir, RUN_CALM)?;
                    ensure!(o.fast == 20000, "oracle {o:?}");
                    Ok(())
                })(),
            );
            for run in [RUN_RACE_FENTRY, RUN_RACE_KPROBE, RUN_RACE_DEFAULT] {
                checks.check(
                    &test(&format!("{run}_direct_and_infer_equal_oracle")),
                    run_matches_oracle(dir, run, true, strict),
                );
            }
            for run in [RUN_ERRORS_FENTRY, RUN_ERRORS_KPROBE] {
                checks.check(
                    &test(&format!("{run}_land_right")),
                    errors_land_right(dir, run, Outcome::Fast, strict)
                        .and_then(|()| run_matches_oracle(dir, run, false, strict)),
                );
            }
            checks.check(
                &test("events_name_the_writers"),
                events_name_the_writers(dir),
            );
            checks.check(
                &test("timeline_draws_every_fallback"),
                timeline_draws_every_fallback(dir),
            );
            if guest.landlock_tsync() {
                for run in [RUN_READERS_EXEC, RUN_READERS_TSYNC] {
                    checks.check(
                        &test(&format!("{run}_each_reader_equals_its_oracle")),
                        readers_match_oracle(dir, run, strict),
                    );
                }
                checks.check(
                    &test(&format!(
                        "{RUN_READERS_EXEC}_mm_access_equals_the_mm_readers"
                    )),
                    mm_access_site_exact(dir, RUN_READERS_EXEC),
                );
                for run in [RUN_READERS_EXEC, RUN_READERS_TSYNC] {
                    checks.check(
                        &test(&format!("{run}_stacks_account_for_every_wait")),
                        stacks_account_for_every_wait(dir, run),
                    );
                }
            }
            checks.check(
                &test("bpf_log_reaches_the_terminal"),
                bpf_log_reaches_the_terminal(dir),
            );
        }
        Suite::StockSmoke => {
            for run in [RUN_RACE_FENTRY, RUN_RACE_KPROBE] {
                checks.check(
                    &test(&format!("{run}_every_call_locked")),
                    run_all_locked(dir, run, strict),
                );
            }
        }
        Suite::Stock => {
            for run in [RUN_ERRORS_FENTRY, RUN_ERRORS_KPROBE] {
                checks.check(
                    &test(&format!("{run}_land_right")),
                    errors_land_right(dir, run, Outcome::Locked, strict),
                );
            }
            for run in [RUN_RACE_FENTRY, RUN_RACE_KPROBE, RUN_RACE_DEFAULT] {
                checks.check(
                    &test(&format!("{run}_every_call_locked")),
                    run_all_locked(dir, run, strict),
                );
            }
            if guest.landlock_tsync() {
                checks.check(
                    &test("readers_lock_once_per_read"),
                    readers_all_locked(dir, RUN_READERS_STOCK, strict),
                );
                checks.check(
                    &test(&format!(
                        "{RUN_READERS_STOCK}_mm_access_equals_the_mm_readers"
                    )),
                    mm_access_site_exact(dir, RUN_READERS_STOCK),
                );
                checks.check(
                    &test(&format!(
                        "{RUN_READERS_STOCK}_stacks_account_for_every_wait"
                    )),
                    stacks_account_for_every_wait(dir, RUN_READERS_STOCK),
                );
            }
        }
    }
    checks.check(
        &test("default_plan_exact"),
        match guest.suite() {
            Suite::StockSmoke => Ok(()),
            _ => exact_report(dir, RUN_RACE_DEFAULT, TRACERS[0]),
        }
        .and_then(|()| exact_report(dir, RUN_BOUNDARY, TRACERS[1])),
    );
    checks.check(
        &test("boundary_counts_exactly"),
        boundary_counts_exactly(dir, guest),
    );
    if guest.landlock_tsync() {
        checks.check(
            &test("race_tsync_paths_and_sections"),
            match guest.suite() {
                Suite::Fastpath => run_matches_oracle(dir, RUN_RACE_TSYNC, true, strict),
                Suite::Stock | Suite::StockSmoke => run_all_locked(dir, RUN_RACE_TSYNC, strict),
            }
            .and_then(|()| exact_report(dir, RUN_RACE_TSYNC, TRACERS[0]))
            .and_then(|()| tsync_sections_counted(dir, RUN_RACE_TSYNC)),
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
                Suite::Fastpath => run_matches_oracle(dir, RUN_CROWD_DEFAULT, false, &|_| false),
                Suite::Stock | Suite::StockSmoke => {
                    run_all_locked(dir, RUN_CROWD_DEFAULT, &|_| false)
                }
            })
            .and_then(|()| exact_report(dir, RUN_CROWD_DEFAULT, TRACERS[0]))
            .and_then(|()| {
                if guest.tracepoints_skippable() {
                    Ok(())
                } else {
                    exact_report(dir, RUN_CROWD_DEFAULT, TRACERS[1])
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
        stacks: false,
        events: false,
        out: out.clone(),
    })?;
    let text = std::fs::read_to_string(&done.report_json).context("reading report.json")?;
    let report: Comparison = output::parse(&text, "report.json")?;
    let sides = [
        ("a", &report.a.total.report, &done.stock),
        ("b", &report.b.total.report, &done.fastpath),
    ];
    for (side, total, dir) in sides {
        let stress: StressReport = output::read(dir, "workload.out")?;
        ensure!(
            stress.calls == 30000,
            "{side}: the workload made {}",
            stress.calls
        );
        ensure!(
            total.calls == stress.calls && total.exact,
            "{side}: {} calls of the workload's {}, exact {}",
            total.calls,
            stress.calls,
            total.exact
        );
        // The /proc readers side by side: every read waited on stock, and took a path on
        // the fast path.
        for reader in ProcReader::ALL.map(ProcReader::name) {
            let n = named(&stress.proc_reads, reader);
            let r = reader_of(total, reader)?;
            ensure!(
                n > 0 && r.calls == n && (side == "b" || r.lock_waits == n),
                "{side}: {reader} {r:?} of {n} reads"
            );
        }
    }
    let (stock, fastpath) = (&report.a.total.report, &report.b.total.report);
    ensure!(
        stock.by_outcome == Counts::from([(Outcome::Locked.name().to_owned(), 30000)]),
        "stock: {:?}",
        stock.by_outcome
    );
    let fast = outcome(fastpath, Outcome::Fast);
    let paths = fast + outcome(fastpath, Outcome::Retry) + outcome(fastpath, Outcome::Busy);
    ensure!(
        fast > 0 && paths == 30000,
        "fast path: {:?}",
        fastpath.by_outcome
    );
    // The comparison has the readers' rows.
    ensure!(
        report
            .rows
            .iter()
            .any(|r| r.metric == "reader proc_wchan lock waits"),
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
        .chain(criu::guests().iter().map(criu::Guest::name))
        .chain([COMPARE_NAME.to_owned()])
        .collect()
}

/// The deployments `run` boots with `only`.
fn deployments(only: Option<&str>) -> impl Iterator<Item = deployed::Guest> {
    deployed::guests()
        .into_iter()
        .filter(move |g| only.is_none_or(|o| g.name().contains(o)))
}

/// The CRIU guests `run` boots with `only`.
fn criu_guests(only: Option<&str>) -> impl Iterator<Item = criu::Guest> {
    criu::guests()
        .into_iter()
        .filter(move |g| only.is_none_or(|o| g.name().contains(o)))
}

/// The architectures of the guests `run` boots with these arguments.
pub fn arches(full: bool, only: Option<&str>) -> Vec<Target> {
    let mut arches: Vec<Target> = selected(full, only)
        .map(|g| g.kernel.arch)
        .chain(deployments(only).map(|_| deployed::ARCH))
        .chain(criu_guests(only).map(|_| criu::ARCH))
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
    let criu_guests: Vec<criu::Guest> = criu_guests(only).collect();
    criu::run(&criu_guests, &mut |name, result| checks.check(name, result));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `watch --json` beside `stress` and stress's own report, captured on this project's
    /// host (the syscall tracepoints only): what a guest leaves for a tracer of a run.
    const WATCHED: &str = include_str!("testdata/watch.json");
    const STRESS: &str = include_str!("testdata/stress.json");

    /// A results directory of one boundary run, both tracers' output being `watched`.
    fn results(name: &str, watched: &str, stress: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-vmtest-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("results dir");
        std::fs::write(dir.join(format!("{RUN_BOUNDARY}.stress.json")), stress).expect("write");
        for t in TRACERS {
            std::fs::write(dir.join(format!("{RUN_BOUNDARY}.{t}.json")), watched).expect("write");
        }
        dir
    }

    fn failure(check: anyhow::Result<()>) -> String {
        format!("{:#}", check.expect_err("the check must fail"))
    }

    #[test]
    fn checks_read_captured_runs_and_fail_on_a_renamed_key() {
        let dir = results("captured", WATCHED, STRESS);
        let strict: Strict = &|_| true;
        exact_report(&dir, RUN_BOUNDARY, TRACERS[0]).expect("the captured run is exact");
        run_all_locked(&dir, RUN_BOUNDARY, strict).expect("every call counted, all unknown");
        std::fs::remove_dir_all(&dir).expect("cleanup");

        // Renamed in the tracer's output only: the key the check reads is missing.
        let dir = results(
            "renamed",
            &WATCHED.replace("\"exact\":", "\"exactly\":"),
            STRESS,
        );
        let err = failure(exact_report(&dir, RUN_BOUNDARY, TRACERS[0]));
        assert!(
            err.contains("boundary.t1.json") && err.contains("missing field `exact`"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");

        // And in the workload's: no 0 calls to hold the tracer to.
        let dir = results(
            "renamed-stress",
            WATCHED,
            &STRESS.replace("\"calls\":", "\"made\":"),
        );
        let err = failure(run_all_locked(&dir, RUN_BOUNDARY, strict));
        assert!(
            err.contains("boundary.stress.json") && err.contains("missing field `calls`"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
