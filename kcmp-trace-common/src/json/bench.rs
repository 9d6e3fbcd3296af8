//! What `kcmp-trace-bench --json-out` writes, and `cargo xtask bench` reads back.
//!
//! A figure that could not be measured (no floor on a program's hook, a ratio over nothing)
//! is `null`, never a number that reads as one.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::programs::{self, bench};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Setup {
    NoTracer,
    EmptyPrograms,
    Counters,
    Events,
    /// kcmp-trace counting with `--readers` (the everyone-else section only).
    Readers,
    /// kcmp-trace counting with `--stacks`.
    Stacks,
    /// kcmp-trace counting with `--readers --stacks` (the everyone-else section only).
    ReadersStacks,
    /// bpftrace on the syscall tracepoints: calls by type and result, a log2 latency
    /// histogram.
    BpftraceCounts,
    /// bpftrace printing one line per call.
    BpftraceLines,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::NoTracer => "no_tracer",
            Setup::EmptyPrograms => "empty_programs",
            Setup::Counters => "counters",
            Setup::Events => "events",
            Setup::Readers => "readers",
            Setup::Stacks => "stacks",
            Setup::ReadersStacks => "readers_stacks",
            Setup::BpftraceCounts => "bpftrace_counts",
            Setup::BpftraceLines => "bpftrace_lines",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Row {
    pub setup: Setup,
    #[serde(with = "Measured")]
    pub kcmp_ns: f64,
    #[serde(with = "Measured")]
    pub kcmp_calls_per_s: f64,
    /// Median ns per kcmp call over no tracer.
    #[serde(with = "Measured")]
    pub kcmp_added_ns: f64,
    #[serde(with = "Measured")]
    pub getpid_ns: f64,
    #[serde(with = "Measured")]
    pub getpid_added_ns: f64,
    /// An mmap+munmap pair: takes mm locks through the same rwsem code kcmp's hooks sit on.
    #[serde(with = "Measured")]
    pub mmap_ns: f64,
    /// mmap+munmap slowdown over no tracer, in percent.
    #[serde(with = "Measured")]
    pub mmap_slowdown_pct: f64,
}

/// What the verifier and the JIT made of a program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Image {
    /// Instructions the verifier processed (0 before Linux 5.16).
    pub verified_insns: u32,
    /// The program as the kernel runs it (helpers and map lookups inlined), in bytes.
    pub xlated_bytes: u32,
    /// Machine code, in bytes (0 without the JIT).
    pub jited_bytes: u32,
}

/// A program's average run time, from the kernel's BPF statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgramCost {
    pub setup: Setup,
    pub program: String,
    pub target: String,
    pub runs: u64,
    /// Runs per kcmp call (those of the program on kcmp's entry).
    #[serde(with = "Measured")]
    pub runs_per_call: f64,
    #[serde(with = "Measured")]
    pub ns_per_run: f64,
    /// Over the empty program on the same hook (0 for the empty programs).
    #[serde(with = "Measured")]
    pub added_ns: f64,
    /// The components one run does (the cost ladder's steps), and their added ns summed.
    pub steps: Vec<Step>,
    #[serde(with = "Measured")]
    pub explained_ns: f64,
    #[serde(flatten)]
    pub image: Image,
}

/// One component of the kcmp programs' work, as a program of the cost ladder does it alone
/// (kcmp-trace-ebpf/src/cost.rs, and support.rs's comm_read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// bpf_get_current_pid_tgid().
    PidTgid,
    /// bpf_ktime_get_ns().
    Clock,
    /// The per-thread state lookup in the THREADS LRU hash, an entry found.
    Thread,
    /// The per-process totals: the PROCESSES lookup and the atomic adds.
    Totals,
    /// The per-CPU counter and latency histogram updates.
    Counters,
    /// bpf_get_current_comm().
    Comm,
    /// One event staged and written (a sixteenth of a ring write, the wakeup decided); a
    /// reader drains.
    Event,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::PidTgid,
        Step::Clock,
        Step::Thread,
        Step::Totals,
        Step::Counters,
        Step::Comm,
        Step::Event,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::PidTgid => "pid_tgid",
            Step::Clock => "clock",
            Step::Thread => "thread",
            Step::Totals => "totals",
            Step::Counters => "counters",
            Step::Comm => "comm",
            Step::Event => "event",
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Step::PidTgid => bench::COST_PID_TGID,
            Step::Clock => bench::COST_CLOCK,
            Step::Thread => bench::COST_THREAD,
            Step::Totals => bench::COST_TOTALS,
            Step::Counters => bench::COST_COUNTERS,
            Step::Comm => programs::COMM_READ,
            Step::Event => bench::COST_EVENT,
        }
    }
}

/// A rung of the cost ladder: the empty program (no step), or one step alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Component {
    #[serde(deserialize_with = "super::nullable")]
    pub step: Option<Step>,
    pub program: String,
    pub runs: u64,
    /// Median over the rounds.
    #[serde(with = "Measured")]
    pub ns_per_run: f64,
    /// Over the empty program on the same hook.
    #[serde(with = "Measured")]
    pub added_ns: f64,
    #[serde(flatten)]
    pub image: Image,
}

/// Per kcmp call: what a setup's programs add over the empty ones on the same hooks, and how
/// much of that the ladder's steps account for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Explained {
    pub setup: Setup,
    #[serde(with = "Measured")]
    pub added_ns: f64,
    #[serde(with = "Measured")]
    pub explained_ns: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BenchReport {
    pub attach_mode: String,
    pub strategy: String,
    /// The kernel's preemption model, which decides the default attach mode.
    pub preemption: String,
    pub rounds: usize,
    pub round_ms: u64,
    /// What a kcmp call pays (null with `--only everyone-else`). A key of its own, not
    /// flattened: serde reads a flattened `Option` that fails to parse as absent.
    #[serde(deserialize_with = "super::nullable")]
    pub kcmp: Option<KcmpBench>,
    /// What processes that never call kcmp pay (null with `--only kcmp`).
    #[serde(deserialize_with = "super::nullable")]
    pub everyone_else: Option<EveryoneElse>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KcmpBench {
    pub rows: Vec<Row>,
    /// kcmp-trace's added cost per kcmp call over that of the empty programs (target <= 1.3).
    #[serde(with = "Measured")]
    pub counters_vs_empty: f64,
    #[serde(with = "Measured")]
    pub events_vs_empty: f64,
    /// Streaming's added cost over counting's (target <= 1.3).
    #[serde(with = "Measured")]
    pub events_vs_counters: f64,
    /// Counting with `--stacks`: its added cost over counting's.
    #[serde(with = "Measured")]
    pub stacks_vs_counters: f64,
    /// kcmp-trace's added cost over bpftrace's doing the same job (None without bpftrace).
    #[serde(deserialize_with = "super::nullable")]
    pub counters_vs_bpftrace: Option<f64>,
    #[serde(deserialize_with = "super::nullable")]
    pub events_vs_bpftrace_lines: Option<f64>,
    /// Why the bpftrace rows are missing, when they are.
    #[serde(deserialize_with = "super::nullable")]
    pub peer_missing: Option<String>,
    pub events_delivered: u64,
    pub events_dropped: u64,
    /// Events still staged in the kernel when a reader stopped: not delivered.
    pub events_unflushed: u64,
    /// Runs of kcmp-trace's programs the kernel skipped while they were measured.
    pub missed_runs: u64,
    /// Where the time goes: every program's ns per run (counted apart from the rounds).
    pub program_costs: Vec<ProgramCost>,
    /// The cost ladder: each component of the programs' work alone on sys_enter_kcmp.
    pub components: Vec<Component>,
    /// Counting's and streaming's programs per kcmp call, against what the ladder explains.
    pub explained: Vec<Explained>,
    /// Events per second the consumer drains from a full ring and formats as NDJSON.
    #[serde(with = "Measured")]
    pub consumer_events_per_s: f64,
}

/// Loops that never call kcmp, beside no tracer, the floor, counting and `--readers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EveryoneElse {
    /// What each setup hooks (the floor hooks what counting does).
    pub hooks: Vec<SetupHooks>,
    /// Why there is no readers setup, when there is none.
    #[serde(deserialize_with = "super::nullable")]
    pub readers_missing: Option<String>,
    pub rows: Vec<OtherRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SetupHooks {
    pub setup: Setup,
    /// Kernel functions or tracepoints, one per attached program.
    pub targets: Vec<String>,
}

/// One loop under one setup, medians of the rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OtherRow {
    pub workload: Workload,
    pub setup: Setup,
    #[serde(with = "Measured")]
    pub ns_per_op: f64,
    #[serde(with = "Measured")]
    pub ops_per_s: f64,
    /// Slowdown in percent: over no tracer, and over the empty programs on the plan's hooks.
    #[serde(with = "Measured")]
    pub vs_no_tracer_pct: f64,
    #[serde(with = "Measured")]
    pub vs_floor_pct: f64,
}

/// A loop that never calls kcmp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// getpid(): a syscall and nothing else.
    Getpid,
    /// A child's /proc/PID/maps opened, read whole and closed (mm_access, then mmap_lock).
    ProcMaps,
    /// process_vm_readv() of a few pages of a child (mm_access).
    ProcessVmReadv,
    /// This binary spawned (vfork and exec) with an argument that makes it exit at once, and
    /// waited for.
    Exec,
    /// What ps does: /proc/PID/stat and /proc/PID/wchan of every process, one scan per op.
    PsScan,
    /// An anonymous page mapped and unmapped (mmap_lock for writing).
    Mmap,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Getpid,
        Workload::ProcMaps,
        Workload::ProcessVmReadv,
        Workload::Exec,
        Workload::PsScan,
        Workload::Mmap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Getpid => "getpid",
            Workload::ProcMaps => "proc_maps",
            Workload::ProcessVmReadv => "process_vm_readv",
            Workload::Exec => "exec",
            Workload::PsScan => "ps_scan",
            Workload::Mmap => "mmap_munmap",
        }
    }
}

/// A figure that may not have been measured, for `#[serde(with = "Measured")]`: NaN and the
/// infinities as `null` and back (serde_json would write `null` and then refuse to read it
/// into an `f64`), and in the schema a number or `null`.
struct Measured;

impl Measured {
    fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_none()
        }
    }

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

impl JsonSchema for Measured {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        Option::<f64>::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        Option::<f64>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_that_was_not_measured_reads_back_as_not_measured() {
        let explained = Explained {
            setup: Setup::Counters,
            added_ns: 12.5,
            explained_ns: f64::NAN,
        };
        let line = serde_json::to_string(&explained).expect("serializes");
        assert_eq!(
            line,
            r#"{"setup":"counters","added_ns":12.5,"explained_ns":null}"#
        );
        let back: Explained = serde_json::from_str(&line).expect("reads back");
        assert_eq!(back.added_ns, 12.5);
        assert!(back.explained_ns.is_nan());
        let missing = r#"{"setup":"counters","added_ns":12.5}"#;
        assert!(serde_json::from_str::<Explained>(missing).is_err());
    }
}
