//! The `/metrics` families, described once: name, help, type, labels and where each one's
//! series come from ([`FAMILIES`]). `/metrics` is encoded from this table and
//! docs/metrics.md is generated from it, so the two cannot disagree.
//!
//! The kernel owns the counter values, so instead of registering prometheus-client metrics
//! and copying into them, one [`Sample`] of everything is taken per scrape and each family's
//! source writes its series from it: values cannot drift from the kernel's and never go
//! backwards.

use std::{borrow::Cow, collections::BTreeMap, fmt};

use kcmp_trace_common::{
    hist::{HIST_SLOTS, slot_upper_bound},
    json::{
        readout::{CallerRow, HookCounters},
        report::{Incomplete, KCMP_READER, OTHER_READER, missed_since},
        stacks::{StackRow, top_sites},
    },
    kcmp::{TYPE_SLOTS, type_slot_name},
    maps::misc,
    outcome::Outcome,
    reader::{OTHER_SLOT, ProcReader, verdict},
    result::{RESULT_SLOTS, result_slot_name},
    snapshot::Counters,
};
use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, MetricEncoder, NoLabelSet,
    },
    metrics::MetricType,
    registry::Unit,
};

use super::{comms::CommCounts, rejections::Reason};
use crate::plan::{AttachMode, Plan};

/// What every family's name starts with.
pub const PREFIX: &str = "kcmp_trace";

/// Everything one scrape shows, read before encoding.
#[derive(Debug)]
pub struct Sample {
    pub counters: Counters,
    pub plan: std::sync::Arc<Plan>,
    pub comms: Vec<(String, CommCounts)>,
    /// What the kernel counted for each attached program.
    pub programs: Vec<HookCounters>,
    /// Whether the kernel keeps per-program run time and count; None when unreadable.
    pub bpf_stats_enabled: Option<bool>,
    /// Events not delivered to /events clients that read too slowly.
    pub client_drops: u64,
    pub event_clients: usize,
    /// NDJSON bytes waiting to be written to /events clients.
    pub event_queued_bytes: u64,
    /// Connections and requests turned away, by reason.
    pub rejections: [(Reason, u64); Reason::ALL.len()],
    /// Unix time of attach.
    pub start_time_s: f64,
    pub kernel: String,
    /// Other callers by call site: Some when readers are followed (`--readers`), which adds
    /// the `reader_*` families.
    pub callers: Option<Vec<CallerRow>>,
    /// Lock waits and write sections by kernel stack: Some with `--stacks`, which adds the
    /// `stack_*` families.
    pub stacks: Option<Vec<StackRow>>,
}

/// Which daemons serve a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Always,
    /// Only `serve --readers`.
    WithReaders,
    /// Only `serve --stacks`.
    WithStacks,
}

/// One metric family: what `/metrics` declares, and where its series come from.
#[derive(Debug)]
pub struct Family {
    /// Without the prefix, the unit or the type's suffix (`calls`, `call_duration`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub unit: Option<Unit>,
    /// The label names of every series, in order (a histogram's `le` aside).
    pub labels: &'static [&'static str],
    pub served: Served,
    /// When a healthy daemon that has seen calls still declares the family without series,
    /// if it ever does.
    pub no_series_when: Option<&'static str>,
    /// Writes the family's series from a sample.
    source: fn(&Sample, &mut Series) -> fmt::Result,
}

impl Family {
    /// The name PromQL queries, as the Prometheus text format declares it: prefix, name,
    /// unit, and `_total` for a counter or `_info` for an info
    /// (`kcmp_trace_call_duration_seconds`, `kcmp_trace_calls_total`).
    pub fn query_name(&self) -> String {
        let unit = self.unit.as_ref().map(|u| format!("_{}", u.as_str()));
        let suffix = match self.kind {
            MetricType::Counter => "_total",
            MetricType::Info => "_info",
            MetricType::Gauge | MetricType::Histogram | MetricType::Unknown => "",
        };
        format!("{PREFIX}_{}{}{suffix}", self.name, unit.unwrap_or_default())
    }

    fn is_served(&self, sample: &Sample) -> bool {
        match self.served {
            Served::Always => true,
            Served::WithReaders => sample.callers.is_some(),
            Served::WithStacks => sample.stacks.is_some(),
        }
    }
}

/// The series of one family, each given its label values in the order of the family's
/// label names.
struct Series<'m, 'e> {
    metric: &'m mut MetricEncoder<'e>,
    labels: &'static [&'static str],
}

impl Series<'_, '_> {
    fn labelled<'v>(&self, values: &[&'v str]) -> Vec<(&'static str, &'v str)> {
        debug_assert_eq!(
            values.len(),
            self.labels.len(),
            "{values:?} for {:?}",
            self.labels
        );
        self.labels
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect()
    }

    fn counter(&mut self, values: &[&str], v: impl EncodeCounterValue) -> fmt::Result {
        let labels = self.labelled(values);
        self.metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    fn gauge(&mut self, values: &[&str], v: impl EncodeGaugeValue) -> fmt::Result {
        let labels = self.labelled(values);
        self.metric.encode_family(&labels)?.encode_gauge(&v)
    }

    /// A log2 ns histogram with a bucket per slot.
    fn histogram(&mut self, values: &[&str], h: &[u64; HIST_SLOTS], sum_ns: u64) -> fmt::Result {
        let labels = self.labelled(values);
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(HIST_SLOTS);
        buckets.extend(bucket_bounds().iter().copied().zip(h.iter().copied()));
        buckets.push((f64::INFINITY, h[HIST_SLOTS - 1]));
        self.metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(seconds(sum_ns), h.iter().sum(), &buckets, None)
    }

    fn info(&mut self, values: &[&str]) -> fmt::Result {
        let labels = self.labelled(values);
        self.metric.encode_info(&labels)
    }
}

/// Upper bounds (`le`, seconds) of the explicit buckets: slot s holds integer nanoseconds up
/// to 2^s - 1, so `le` = (2^s - 1) ns. The last slot (above 2^63 - 1 ns) is the +Inf bucket.
fn bucket_bounds() -> &'static [f64; HIST_SLOTS - 1] {
    static BOUNDS: std::sync::OnceLock<[f64; HIST_SLOTS - 1]> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| std::array::from_fn(|s| seconds(slot_upper_bound(s))))
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Collector for Sample {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        for family in FAMILIES.iter().filter(|f| f.is_served(self)) {
            let mut metric =
                enc.encode_descriptor(family.name, family.help, family.unit.as_ref(), family.kind)?;
            let mut series = Series {
                metric: &mut metric,
                labels: family.labels,
            };
            (family.source)(self, &mut series)?;
        }
        Ok(())
    }
}

/// Every family `/metrics` serves, in the order it serves them.
pub static FAMILIES: &[Family] = &[
    Family {
        name: "reader_calls",
        help: "Calls of exec_update_lock's readers followed call by call (kcmp, /proc stack, syscall, wchan), by kernel path (outcome).",
        kind: MetricType::Counter,
        unit: None,
        labels: &["reader", "outcome"],
        served: Served::WithReaders,
        no_series_when: None,
        source: reader_calls,
    },
    Family {
        name: "reader_lock_waits",
        help: "exec_update_lock waits by reader.",
        kind: MetricType::Counter,
        unit: None,
        labels: &["reader"],
        served: Served::WithReaders,
        no_series_when: None,
        source: |s, out| {
            for (reader, waits, _) in reader_lock_waits(s) {
                out.counter(&[&reader], waits)?;
            }
            Ok(())
        },
    },
    Family {
        name: "reader_lock_wait",
        help: "Time spent waiting for exec_update_lock, by reader.",
        kind: MetricType::Counter,
        unit: Some(Unit::Seconds),
        labels: &["reader"],
        served: Served::WithReaders,
        no_series_when: None,
        source: |s, out| {
            for (reader, _, sum_ns) in reader_lock_waits(s) {
                out.counter(&[&reader], seconds(sum_ns))?;
            }
            Ok(())
        },
    },
    Family {
        name: "stack_site_lock_waits",
        help: "exec_update_lock waits of the call sites with the most, by waiter (kcmp, a /proc reader, other) and the function that asked for the lock, from the waits' kernel stacks (--stacks): the 10 sites with the most waits, each waiter's rest under site=\"other\".",
        kind: MetricType::Counter,
        unit: None,
        labels: &["reader", "site"],
        served: Served::WithStacks,
        no_series_when: Some("no exec_update_lock wait was seen"),
        source: |s, out| {
            for (reader, site, waits, _) in stack_sites(s) {
                out.counter(&[&reader, &site], waits)?;
            }
            Ok(())
        },
    },
    Family {
        name: "stack_site_lock_wait",
        help: "Time spent waiting for exec_update_lock at the call sites of stack_site_lock_waits.",
        kind: MetricType::Counter,
        unit: Some(Unit::Seconds),
        labels: &["reader", "site"],
        served: Served::WithStacks,
        no_series_when: Some("no exec_update_lock wait was seen"),
        source: |s, out| {
            for (reader, site, _, sum_ns) in stack_sites(s) {
                out.counter(&[&reader, &site], seconds(sum_ns))?;
            }
            Ok(())
        },
    },
    Family {
        name: "reader_helper_calls",
        help: "exec_update_speculate_try_begin/retry calls of other callers, by verdict (begin_ok, begin_failed, valid, retry).",
        kind: MetricType::Counter,
        unit: None,
        labels: &["reader", "verdict"],
        served: Served::WithReaders,
        no_series_when: Some(
            "no other caller of the speculation helpers ran (kernels with the series only)",
        ),
        source: reader_helper_calls,
    },
    Family {
        name: "calls",
        help: "kcmp calls by type, kernel path (outcome) and result.",
        kind: MetricType::Counter,
        unit: None,
        labels: &["type", "outcome", "result"],
        served: Served::Always,
        no_series_when: None,
        source: calls,
    },
    Family {
        name: "call_duration",
        help: "kcmp latency from syscall entry to exit, by outcome; buckets are the in-kernel log2 ns slots.",
        kind: MetricType::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["outcome"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            let c = &s.counters;
            for o in Outcome::ALL {
                let h = &c.latency[o as usize];
                if h.iter().any(|&n| n != 0) {
                    out.histogram(&[o.name()], h, c.latency_sum_ns[o as usize])?;
                }
            }
            Ok(())
        },
    },
    Family {
        name: "lock_wait",
        help: "Time calls waited for exec_update_lock (calls that took the locks).",
        kind: MetricType::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.histogram(&[], &s.counters.lock_wait, s.counters.lock_wait_sum_ns),
    },
    Family {
        name: "exec_write_section",
        help: "exec_update_lock write sections (execs) and how long each held the lock.",
        kind: MetricType::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.histogram(&[], &s.counters.exec_hold, s.counters.exec_hold_sum_ns),
    },
    Family {
        name: "tsync_write_section",
        help: "exec_update_lock write sections of Landlock TSYNC (landlock_restrict_self with LANDLOCK_RESTRICT_SELF_TSYNC) and how long each held the lock.",
        kind: MetricType::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.histogram(&[], &s.counters.tsync_hold, s.counters.tsync_hold_sum_ns),
    },
    Family {
        name: "events_sent",
        help: "Per-call events the kernel put in the ring buffer.",
        kind: MetricType::Counter,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.counter(&[], s.counters.misc[misc::EVENTS_SENT]),
    },
    Family {
        name: "events_dropped",
        help: "Per-call events lost: ring_buffer = the ring was full in the kernel, slow_client = an /events client read too slowly.",
        kind: MetricType::Counter,
        unit: None,
        labels: &["reason"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            out.counter(&["ring_buffer"], s.counters.misc[misc::EVENTS_DROPPED])?;
            out.counter(&["slow_client"], s.client_drops)
        },
    },
    Family {
        name: "event_clients",
        help: "Connected /events clients.",
        kind: MetricType::Gauge,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.gauge(&[], s.event_clients as i64),
    },
    Family {
        name: "event_queued_bytes",
        help: "NDJSON waiting to be written to /events clients (bounded by --event-buffer-total).",
        kind: MetricType::Gauge,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.gauge(&[], s.event_queued_bytes as i64),
    },
    Family {
        name: "http_rejected",
        help: "Connections and requests turned away: unauthorized (401), forbidden (403, per-call data), misdirected (421, Host), plain_http_to_tls, tls_handshake, idle_evicted (closed at --max-connections to let a new one in), events_full and events_client_share (503).",
        kind: MetricType::Counter,
        unit: None,
        labels: &["reason"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for (reason, n) in s.rejections {
                out.counter(&[reason.name()], n)?;
            }
            Ok(())
        },
    },
    Family {
        name: "unpaired_exits",
        help: "Syscall exits without a recorded entry (call began before attach, its state was evicted, or the entry program's run was skipped); not counted as calls.",
        kind: MetricType::Counter,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.counter(&[], s.counters.misc[misc::UNPAIRED_EXITS]),
    },
    Family {
        name: "lost_exits",
        help: "Calls whose exit was never seen (the exit program's run was skipped), found at the thread's next call; not counted as calls.",
        kind: MetricType::Counter,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.counter(&[], s.counters.misc[misc::LOST_EXITS]),
    },
    Family {
        name: "unclassified",
        help: "Calls whose probe trail fit no kernel path (they count as outcome=\"unknown\").",
        kind: MetricType::Counter,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.counter(&[], s.counters.misc[misc::UNCLASSIFIED]),
    },
    Family {
        name: "lock_waits_unfinished",
        help: "exec_update_lock waits whose end was never seen; left out of lock_wait.",
        kind: MetricType::Counter,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.counter(&[], s.counters.misc[misc::LOCK_WAITS_UNFINISHED]),
    },
    Family {
        name: "unattributed_calls",
        help: "Calls counted everywhere but in per-process and per-comm totals: the per-process map was full (serve --max-processes).",
        kind: MetricType::Counter,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.counter(&[], s.counters.misc[misc::UNATTRIBUTED]),
    },
    Family {
        name: "program_misses",
        help: "Runs of each attached program the kernel skipped (recursion misses; for kprobes also the probe's own misses, reported from Linux 6.7 on).",
        kind: MetricType::Counter,
        unit: None,
        labels: &["program", "target"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for p in &s.programs {
                out.counter(&[&p.program, &p.target], p.misses)?;
            }
            Ok(())
        },
    },
    Family {
        name: "incomplete",
        help: "Upper bound, since attach, on what skipped program runs and unpaired calls left out of the other series: calls missing from calls_total, counted calls whose outcome may be wrong, lock waits and exec and TSYNC write sections missing from their histograms, /proc reader calls missing or misread (--readers), lock waits and write sections missing from the stacks (--stacks). All 0 when the numbers are exact.",
        kind: MetricType::Counter,
        unit: None,
        labels: &["numbers"],
        served: Served::Always,
        no_series_when: None,
        source: incomplete,
    },
    Family {
        name: "comm_calls",
        help: "kcmp calls of the busiest comms (each counted from when it got its series); comm=\"other\" has the rest.",
        kind: MetricType::Counter,
        unit: None,
        labels: &["comm"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for (comm, n) in &s.comms {
                out.counter(&[comm], n.calls)?;
            }
            Ok(())
        },
    },
    Family {
        name: "comm_errors",
        help: "kcmp calls that failed, for the same comm series as comm_calls.",
        kind: MetricType::Counter,
        unit: None,
        labels: &["comm"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for (comm, n) in &s.comms {
                out.counter(&[comm], n.errors)?;
            }
            Ok(())
        },
    },
    Family {
        name: "attach_mode",
        help: "1 for the attach mode in use, 0 for the others.",
        kind: MetricType::Gauge,
        unit: None,
        labels: &["mode"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for mode in [
                AttachMode::Fentry,
                AttachMode::Kprobe,
                AttachMode::Tracepoint,
            ] {
                out.gauge(&[mode.name()], i64::from(mode == s.plan.mode))?;
            }
            Ok(())
        },
    },
    Family {
        name: "plan",
        help: "How calls are classified: attach mode, strategy, and whether the kernel has the exec_update_seq series.",
        kind: MetricType::Info,
        unit: None,
        labels: &["mode", "strategy", "exec_update_seq"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            let series = if s.plan.series { "present" } else { "absent" };
            out.info(&[s.plan.mode.name(), s.plan.strategy.name(), series])
        },
    },
    Family {
        name: "attach_rejected",
        help: "Attach mode/strategy pairs tried before the one in use and refused (reasons in /api/v1/snapshot).",
        kind: MetricType::Gauge,
        unit: None,
        labels: &["candidate"],
        served: Served::Always,
        no_series_when: Some("the first plan tried attached"),
        source: |s, out| {
            for (candidate, _) in &s.plan.rejected {
                out.gauge(&[candidate], 1i64)?;
            }
            Ok(())
        },
    },
    Family {
        name: "probe_attached",
        help: "Attached BPF programs and their hooks.",
        kind: MetricType::Gauge,
        unit: None,
        labels: &["program", "target", "mode"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for hook in &s.plan.hooks {
                out.gauge(&[&hook.program, &hook.target, s.plan.mode.name()], 1i64)?;
            }
            Ok(())
        },
    },
    Family {
        name: "probe_skipped",
        help: "Optional hooks that did not attach (reasons in /api/v1/snapshot).",
        kind: MetricType::Gauge,
        unit: None,
        labels: &["target"],
        served: Served::Always,
        no_series_when: Some("every optional hook attached"),
        source: |s, out| {
            for (target, _) in &s.plan.skipped {
                out.gauge(&[target], 1i64)?;
            }
            Ok(())
        },
    },
    Family {
        name: "bpf_stats_enabled",
        help: "1 when kernel.bpf_stats_enabled is on; otherwise bpf_program_run_* stay flat.",
        kind: MetricType::Gauge,
        unit: None,
        labels: &[],
        served: Served::Always,
        no_series_when: Some("/proc/sys/kernel/bpf_stats_enabled cannot be read"),
        source: |s, out| match s.bpf_stats_enabled {
            Some(on) => out.gauge(&[], i64::from(on)),
            None => Ok(()),
        },
    },
    Family {
        name: "bpf_program_run",
        help: "Time the kernel spent running each program (counted while kernel.bpf_stats_enabled=1).",
        kind: MetricType::Counter,
        unit: Some(Unit::Seconds),
        labels: &["program"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for p in &s.programs {
                out.counter(&[&p.program], seconds(p.run_time_ns))?;
            }
            Ok(())
        },
    },
    Family {
        name: "hook_runs_outside_kcmp",
        help: "Runs of each hook on a function every process calls that found no kcmp call: the work the tracer taxes on the rest of the host (always counted; their time is in bpf_program_run_seconds_total).",
        kind: MetricType::Counter,
        unit: None,
        labels: &["program", "target"],
        served: Served::Always,
        no_series_when: Some("the plan hooks no function every process calls"),
        source: |s, out| {
            for p in &s.programs {
                if let Some(runs) = p.runs_outside_kcmp {
                    out.counter(&[&p.program, &p.target], runs)?;
                }
            }
            Ok(())
        },
    },
    Family {
        name: "bpf_program_runs",
        help: "Runs of each program (counted while kernel.bpf_stats_enabled=1).",
        kind: MetricType::Counter,
        unit: None,
        labels: &["program"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| {
            for p in &s.programs {
                out.counter(&[&p.program], p.run_count)?;
            }
            Ok(())
        },
    },
    Family {
        name: "start_time",
        help: "Unix time the tracer attached.",
        kind: MetricType::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.gauge(&[], s.start_time_s),
    },
    Family {
        name: "build",
        help: "kcmp-trace version and kernel.",
        kind: MetricType::Info,
        unit: None,
        labels: &["version", "kernel"],
        served: Served::Always,
        no_series_when: None,
        source: |s, out| out.info(&[env!("CARGO_PKG_VERSION"), &s.kernel]),
    },
];

fn calls(s: &Sample, out: &mut Series) -> fmt::Result {
    for o in Outcome::ALL {
        for t in 0..TYPE_SLOTS {
            for r in 0..RESULT_SLOTS {
                let n = s.counters.calls[o as usize][t][r];
                // A cell that ever counted stays non-zero, so no series vanishes.
                if n != 0 {
                    let labels = [
                        type_slot_name(t as u32),
                        o.name(),
                        result_slot_name(r as u32),
                    ];
                    out.counter(&labels, n)?;
                }
            }
        }
    }
    Ok(())
}

fn incomplete(s: &Sample, out: &mut Series) -> fmt::Result {
    let incomplete = Incomplete::of(&s.counters, &missed_since(&s.programs, &[]));
    for (numbers, n) in [
        ("calls", incomplete.calls),
        ("outcomes", incomplete.outcomes),
        ("lock_wait", incomplete.lock_wait),
        ("exec_write_sections", incomplete.exec_write_sections),
        ("tsync_write_sections", incomplete.tsync_write_sections),
        ("reader_calls", incomplete.reader_calls),
        ("stacks", incomplete.stacks),
    ] {
        out.counter(&[numbers], n)?;
    }
    Ok(())
}

/// Call sites shown by their own labels in the `stack_site_*` families: a bounded label set,
/// whatever the kernel's paths.
pub const STACK_SITES: usize = 10;

/// The `STACK_SITES` waiting call sites with the most waits, and the rest summed under
/// site `other` per waiter, so that the series add up to every wait.
fn stack_sites(s: &Sample) -> Vec<(String, String, u64, u64)> {
    let rows = s.stacks.as_deref().unwrap_or_default();
    let all = top_sites(rows, usize::MAX);
    let mut shown: Vec<_> = all.iter().take(STACK_SITES).cloned().collect();
    let mut rest: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (who, _, waits, ns) in all.into_iter().skip(STACK_SITES) {
        let r = rest.entry(who).or_default();
        r.0 += waits;
        r.1 += ns;
    }
    shown.extend(
        rest.into_iter()
            .map(|(who, (waits, ns))| (who, OTHER_SITE.to_owned(), waits, ns)),
    );
    shown
}

/// The site label of the waits beyond the top `STACK_SITES`.
const OTHER_SITE: &str = "other";

/// The call sites of other callers, empty without `--readers`.
fn sites(s: &Sample) -> &[CallerRow] {
    s.callers.as_deref().unwrap_or_default()
}

/// The `reader` of other callers at one call site: `other:SYMBOL`.
fn site_reader(site: &CallerRow) -> Cow<'static, str> {
    Cow::Owned(format!("{OTHER_READER}:{}", site.symbol))
}

/// kcmp beside exec_update_lock's other readers, by outcome.
fn reader_calls(s: &Sample, out: &mut Series) -> fmt::Result {
    let c = &s.counters;
    for o in Outcome::ALL {
        let procs = ProcReader::ALL.map(|r| (r.name(), c.readers[r as usize].calls[o as usize]));
        let rows = std::iter::once((KCMP_READER, c.calls_by_outcome(o))).chain(procs);
        for (reader, n) in rows.filter(|&(_, n)| n != 0) {
            out.counter(&[reader, o.name()], n)?;
        }
    }
    Ok(())
}

/// Each reader's exec_update_lock waits and their total in ns: kcmp, the /proc readers,
/// other callers, and other callers by call site (`other:SYMBOL`).
fn reader_lock_waits(s: &Sample) -> Vec<(Cow<'static, str>, u64, u64)> {
    let c = &s.counters;
    let kcmp = (
        Cow::Borrowed(KCMP_READER),
        c.lock_wait.iter().sum(),
        c.lock_wait_sum_ns,
    );
    let procs = ProcReader::ALL
        .into_iter()
        .map(|r| (r.name(), &c.readers[r as usize]))
        .chain([(OTHER_READER, &c.readers[OTHER_SLOT])])
        .map(|(name, r)| (Cow::Borrowed(name), r.lock_waits(), r.lock_wait_sum_ns));
    let sites = sites(s)
        .iter()
        .map(|site| (site_reader(site), site.lock_waits, site.lock_wait_sum_ns));
    std::iter::once(kcmp).chain(procs).chain(sites).collect()
}

/// Other callers' speculation helper calls by verdict, in all and by call site.
fn reader_helper_calls(s: &Sample, out: &mut Series) -> fmt::Result {
    let other = (
        Cow::Borrowed(OTHER_READER),
        &s.counters.readers[OTHER_SLOT].verdicts,
    );
    let sites = sites(s)
        .iter()
        .map(|site| (site_reader(site), &site.verdicts));
    for (reader, verdicts) in std::iter::once(other).chain(sites) {
        for (name, &n) in verdict::NAMES.iter().zip(verdicts) {
            if n != 0 {
                out.counter(&[&reader, name], n)?;
            }
        }
    }
    Ok(())
}
