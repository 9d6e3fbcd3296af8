//! `/metrics`: the tracer's counters in the Prometheus and OpenMetrics text formats.
//!
//! The kernel owns the counter values, so instead of registering prometheus-client metrics
//! and copying into them, one [`Sample`] of everything is taken per scrape and encoded by a
//! [`Collector`]: values cannot drift from the kernel's and never go backwards.

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    time::{Duration, Instant},
};

use kcmp_trace_common::{
    hist::{HIST_SLOTS, slot_upper_bound},
    kcmp::{TYPE_SLOTS, type_slot_name},
    maps::misc,
    outcome::Outcome,
    result::{RESULT_SLOTS, result_slot_name},
    snapshot::Counters,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use crate::{
    loader::{HookCounters, ProcessRow},
    plan::{AttachMode, Plan},
    report::{Incomplete, missed_since},
};

/// Label value of the series that sums every comm without its own.
pub const OTHER_COMM: &str = "other";

/// Which text format a scraper gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// Picks the format by the Accept header's media ranges and q-values; Prometheus text
    /// when there is no header or OpenMetrics is not preferred.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Whether the kernel keeps per-program run time and count; None when unreadable.
pub fn bpf_stats_enabled() -> Option<bool> {
    let text = std::fs::read_to_string(Path::new("/proc/sys/kernel/bpf_stats_enabled")).ok()?;
    Some(text.trim() != "0")
}

/// Calls and errors of one comm series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommCounts {
    pub calls: u64,
    pub errors: u64,
}

/// Per-comm counters as a bounded top-K plus an `other` series.
///
/// Userspace owns these counters and feeds them per-process deltas, so they only grow: a
/// comm admitted to the top-K starts from zero (its earlier calls stay in `other`), and an
/// evicted comm's calls move to `other`. The sum over all series always equals the calls
/// the process table saw.
#[derive(Debug)]
pub struct CommTable {
    k: usize,
    /// Per tgid: (calls, errors) at the previous update.
    seen: HashMap<u32, (u64, u64)>,
    /// Calls per second, smoothed over about a minute, of every comm recently active.
    rate: HashMap<String, f64>,
    selected: Vec<Selected>,
    other: CommCounts,
}

#[derive(Debug)]
struct Selected {
    comm: String,
    counts: CommCounts,
    since: Instant,
}

/// Smoothing time constant of the comm ranking.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// A comm keeps its series at least this long, so series do not flap.
const MIN_TENURE: Duration = Duration::from_secs(60);
/// A challenger must be this many times busier than the comm it replaces.
const HYSTERESIS: f64 = 2.0;

impl CommTable {
    pub fn new(k: usize) -> CommTable {
        CommTable {
            k,
            seen: HashMap::new(),
            rate: HashMap::new(),
            selected: Vec::new(),
            other: CommCounts::default(),
        }
    }

    /// Takes in the cumulative per-process rows read `dt` after the previous ones.
    pub fn update(&mut self, rows: &[ProcessRow], dt: Duration, now: Instant) {
        let mut deltas: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut seen = HashMap::with_capacity(rows.len());
        for row in rows {
            let (calls, errors) = self.seen.get(&row.tgid).copied().unwrap_or((0, 0));
            let d = (
                row.calls.saturating_sub(calls),
                row.errors.saturating_sub(errors),
            );
            if d != (0, 0) {
                let e = deltas.entry(row.comm.as_str()).or_default();
                e.0 += d.0;
                e.1 += d.1;
            }
            seen.insert(row.tgid, (row.calls, row.errors));
        }
        self.seen = seen;

        let secs = dt.as_secs_f64().max(1e-3);
        let decay = (-secs / RATE_WINDOW.as_secs_f64()).exp();
        for r in self.rate.values_mut() {
            *r *= decay;
        }
        for (comm, (calls, _)) in &deltas {
            *self.rate.entry((*comm).to_owned()).or_default() +=
                (1.0 - decay) * *calls as f64 / secs;
        }
        let selected = &self.selected;
        self.rate
            .retain(|c, r| *r > 1e-3 || selected.iter().any(|s| &s.comm == c));

        self.rerank(now);

        for (comm, (calls, errors)) in deltas {
            let counts = match self.selected.iter_mut().find(|s| s.comm == comm) {
                Some(s) => &mut s.counts,
                None => &mut self.other,
            };
            counts.calls += calls;
            counts.errors += errors;
        }
    }

    fn rate_of(&self, comm: &str) -> f64 {
        self.rate.get(comm).copied().unwrap_or(0.0)
    }

    fn rerank(&mut self, now: Instant) {
        let mut challengers: Vec<(&String, f64)> = self
            .rate
            .iter()
            // A process named like the catch-all series stays in it, and so does an empty
            // comm (an empty label value is no label at all to Prometheus).
            .filter(|(c, r)| {
                **r > 0.0
                    && c.as_str() != OTHER_COMM
                    && !c.is_empty()
                    && !self.selected.iter().any(|s| &s.comm == *c)
            })
            .map(|(c, r)| (c, *r))
            .collect();
        challengers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let challengers: Vec<(String, f64)> = challengers
            .into_iter()
            .take(self.k)
            .map(|(c, r)| (c.clone(), r))
            .collect();
        for (comm, rate) in challengers {
            if self.selected.len() < self.k {
                self.admit(comm, now);
                continue;
            }
            let weakest = self
                .selected
                .iter()
                .enumerate()
                .filter(|(_, s)| now.duration_since(s.since) >= MIN_TENURE)
                .min_by(|a, b| self.rate_of(&a.1.comm).total_cmp(&self.rate_of(&b.1.comm)))
                .map(|(i, s)| (i, self.rate_of(&s.comm)));
            match weakest {
                Some((i, weak)) if rate > HYSTERESIS * weak => {
                    let evicted = self.selected.swap_remove(i);
                    self.other.calls += evicted.counts.calls;
                    self.other.errors += evicted.counts.errors;
                    self.admit(comm, now);
                }
                // Challengers come busiest first: if this one cannot get in, none can.
                _ => break,
            }
        }
    }

    fn admit(&mut self, comm: String, now: Instant) {
        self.selected.push(Selected {
            comm,
            counts: CommCounts::default(),
            since: now,
        });
    }

    /// The series to show: selected comms (busiest first) and `other`.
    pub fn series(&self) -> Vec<(String, CommCounts)> {
        let mut rows: Vec<(String, CommCounts)> = self
            .selected
            .iter()
            .map(|s| (s.comm.clone(), s.counts.clone()))
            .collect();
        rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
        rows.push((OTHER_COMM.to_owned(), self.other.clone()));
        rows
    }
}

/// Everything one scrape shows, read before encoding.
#[derive(Debug)]
pub struct Sample {
    pub counters: Counters,
    pub plan: std::sync::Arc<Plan>,
    pub comms: Vec<(String, CommCounts)>,
    /// What the kernel counted for each attached program.
    pub programs: Vec<HookCounters>,
    pub bpf_stats_enabled: Option<bool>,
    /// Events not delivered to /events clients that read too slowly.
    pub client_drops: u64,
    pub event_clients: usize,
    /// Unix time of attach.
    pub start_time_s: f64,
    pub kernel: String,
}

/// Upper bounds (`le`, seconds) of the explicit buckets: slot s holds integer nanoseconds up
/// to 2^s - 1, so `le` = (2^s - 1) ns. The last slot (above 2^63 - 1 ns) is the +Inf bucket.
fn bucket_bounds() -> &'static [f64; HIST_SLOTS - 1] {
    static BOUNDS: std::sync::OnceLock<[f64; HIST_SLOTS - 1]> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| std::array::from_fn(|s| slot_upper_bound(s) as f64 / 1e9))
}

/// Encodes one log2 ns histogram with a bucket per slot.
fn encode_hist(m: &mut MetricEncoder, h: &[u64; HIST_SLOTS], sum_ns: u64) -> fmt::Result {
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(HIST_SLOTS);
    buckets.extend(bucket_bounds().iter().copied().zip(h.iter().copied()));
    buckets.push((f64::INFINITY, h[HIST_SLOTS - 1]));
    let count: u64 = h.iter().sum();
    m.encode_histogram::<NoLabelSet>(sum_ns as f64 / 1e9, count, &buckets, None)
}

fn counter(m: &mut MetricEncoder, labels: &[(&str, &str)], v: u64) -> fmt::Result {
    if labels.is_empty() {
        m.encode_counter::<NoLabelSet, _, u64>(&v, None)
    } else {
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    m: &mut MetricEncoder,
    labels: &[(&str, &str)],
    v: V,
) -> fmt::Result {
    if labels.is_empty() {
        m.encode_gauge(&v)
    } else {
        m.encode_family(&labels)?.encode_gauge(&v)
    }
}

impl Collector for Sample {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = &self.counters;
        let seconds = Unit::Seconds;
        {
            let mut m = enc.encode_descriptor(
                "calls",
                "kcmp calls by type, kernel path (outcome) and result.",
                None,
                MetricType::Counter,
            )?;
            for o in Outcome::ALL {
                for t in 0..TYPE_SLOTS {
                    for r in 0..RESULT_SLOTS {
                        let n = c.calls[o as usize][t][r];
                        // A cell that ever counted stays non-zero, so no series vanishes.
                        if n != 0 {
                            let labels = [
                                ("type", type_slot_name(t as u32)),
                                ("outcome", o.name()),
                                ("result", result_slot_name(r as u32)),
                            ];
                            counter(&mut m, &labels, n)?;
                        }
                    }
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "call_duration",
                "kcmp latency from syscall entry to exit, by outcome; buckets are the in-kernel log2 ns slots.",
                Some(&seconds),
                MetricType::Histogram,
            )?;
            for o in Outcome::ALL {
                let h = &c.latency[o as usize];
                if h.iter().any(|&n| n != 0) {
                    let labels = [("outcome", o.name())];
                    encode_hist(
                        &mut m.encode_family(&labels)?,
                        h,
                        c.latency_sum_ns[o as usize],
                    )?;
                }
            }
        }
        encode_hist(
            &mut enc.encode_descriptor(
                "lock_wait",
                "Time calls waited for exec_update_lock (calls that took the locks).",
                Some(&seconds),
                MetricType::Histogram,
            )?,
            &c.lock_wait,
            c.lock_wait_sum_ns,
        )?;
        encode_hist(
            &mut enc.encode_descriptor(
                "exec_write_section",
                "exec_update_lock write sections (execs) and how long each held the lock.",
                Some(&seconds),
                MetricType::Histogram,
            )?,
            &c.exec_hold,
            c.exec_hold_sum_ns,
        )?;
        counter(
            &mut enc.encode_descriptor(
                "events_sent",
                "Per-call events the kernel put in the ring buffer.",
                None,
                MetricType::Counter,
            )?,
            &[],
            c.misc[misc::EVENTS_SENT],
        )?;
        {
            let mut m = enc.encode_descriptor(
                "events_dropped",
                "Per-call events lost: ring_buffer = the ring was full in the kernel, slow_client = an /events client read too slowly.",
                None,
                MetricType::Counter,
            )?;
            counter(
                &mut m,
                &[("reason", "ring_buffer")],
                c.misc[misc::EVENTS_DROPPED],
            )?;
            counter(&mut m, &[("reason", "slow_client")], self.client_drops)?;
        }
        gauge(
            &mut enc.encode_descriptor(
                "event_clients",
                "Connected /events clients.",
                None,
                MetricType::Gauge,
            )?,
            &[],
            self.event_clients as i64,
        )?;
        for (name, help, value) in [
            (
                "unpaired_exits",
                "Syscall exits without a recorded entry (call began before attach, its state was evicted, or the entry program's run was skipped); not counted as calls.",
                c.misc[misc::UNPAIRED_EXITS],
            ),
            (
                "lost_exits",
                "Calls whose exit was never seen (the exit program's run was skipped), found at the thread's next call; not counted as calls.",
                c.misc[misc::LOST_EXITS],
            ),
            (
                "unclassified",
                "Calls whose probe trail fit no kernel path (they count as outcome=\"unknown\").",
                c.misc[misc::UNCLASSIFIED],
            ),
            (
                "lock_waits_unfinished",
                "exec_update_lock waits whose end was never seen; left out of lock_wait.",
                c.misc[misc::LOCK_WAITS_UNFINISHED],
            ),
        ] {
            counter(
                &mut enc.encode_descriptor(name, help, None, MetricType::Counter)?,
                &[],
                value,
            )?;
        }
        {
            let mut m = enc.encode_descriptor(
                "program_misses",
                "Runs of each attached program the kernel skipped (recursion misses; for kprobes also the probe's own misses, reported from Linux 6.7 on).",
                None,
                MetricType::Counter,
            )?;
            for p in &self.programs {
                let labels = [
                    ("program", p.program.as_str()),
                    ("target", p.target.as_str()),
                ];
                counter(&mut m, &labels, p.misses)?;
            }
        }
        {
            let incomplete = Incomplete::of(c, &missed_since(&self.programs, &[]));
            let mut m = enc.encode_descriptor(
                "incomplete",
                "Upper bound, since attach, on what skipped program runs and unpaired calls left out of the other series: calls missing from calls_total, counted calls whose outcome may be wrong, lock waits and exec write sections missing from their histograms. All 0 when the numbers are exact.",
                None,
                MetricType::Counter,
            )?;
            for (numbers, n) in [
                ("calls", incomplete.calls),
                ("outcomes", incomplete.outcomes),
                ("lock_wait", incomplete.lock_wait),
                ("exec_write_sections", incomplete.exec_write_sections),
            ] {
                counter(&mut m, &[("numbers", numbers)], n)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "comm_calls",
                "kcmp calls of the busiest comms (each counted from when it got its series); comm=\"other\" has the rest.",
                None,
                MetricType::Counter,
            )?;
            for (comm, n) in &self.comms {
                counter(&mut m, &[("comm", comm)], n.calls)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "comm_errors",
                "kcmp calls that failed, for the same comm series as comm_calls.",
                None,
                MetricType::Counter,
            )?;
            for (comm, n) in &self.comms {
                counter(&mut m, &[("comm", comm)], n.errors)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "attach_mode",
                "1 for the attach mode in use, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for mode in [
                AttachMode::Fentry,
                AttachMode::Kprobe,
                AttachMode::Tracepoint,
            ] {
                let on = i64::from(mode == self.plan.mode);
                gauge(&mut m, &[("mode", mode.name())], on)?;
            }
        }
        enc.encode_descriptor(
            "plan",
            "How calls are classified: attach mode, strategy, and whether the kernel has the exec_update_seq series.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[
            ("mode", self.plan.mode.name()),
            ("strategy", self.plan.strategy.name()),
            (
                "exec_update_seq",
                if self.plan.series { "present" } else { "absent" },
            ),
        ])?;
        {
            let mut m = enc.encode_descriptor(
                "attach_rejected",
                "Attach mode/strategy pairs tried before the one in use and refused (reasons in /api/v1/snapshot).",
                None,
                MetricType::Gauge,
            )?;
            for (candidate, _) in &self.plan.rejected {
                gauge(&mut m, &[("candidate", candidate.as_str())], 1i64)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "probe_attached",
                "Attached BPF programs and their hooks.",
                None,
                MetricType::Gauge,
            )?;
            for hook in &self.plan.hooks {
                let labels = [
                    ("program", hook.program.as_str()),
                    ("target", hook.target.as_str()),
                    ("mode", self.plan.mode.name()),
                ];
                gauge(&mut m, &labels, 1i64)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "probe_skipped",
                "Optional hooks that did not attach (reasons in /api/v1/snapshot).",
                None,
                MetricType::Gauge,
            )?;
            for (target, _) in &self.plan.skipped {
                gauge(&mut m, &[("target", target.as_str())], 1i64)?;
            }
        }
        if let Some(on) = self.bpf_stats_enabled {
            gauge(
                &mut enc.encode_descriptor(
                    "bpf_stats_enabled",
                    "1 when kernel.bpf_stats_enabled is on; otherwise bpf_program_run_* stay flat.",
                    None,
                    MetricType::Gauge,
                )?,
                &[],
                i64::from(on),
            )?;
        }
        {
            let mut m = enc.encode_descriptor(
                "bpf_program_run",
                "Time the kernel spent running each program (counted while kernel.bpf_stats_enabled=1).",
                Some(&seconds),
                MetricType::Counter,
            )?;
            for p in &self.programs {
                m.encode_family(&[("program", p.program.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&(p.run_time_ns as f64 / 1e9), None)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "bpf_program_runs",
                "Runs of each program (counted while kernel.bpf_stats_enabled=1).",
                None,
                MetricType::Counter,
            )?;
            for p in &self.programs {
                counter(&mut m, &[("program", p.program.as_str())], p.run_count)?;
            }
        }
        gauge(
            &mut enc.encode_descriptor(
                "start_time",
                "Unix time the tracer attached.",
                Some(&seconds),
                MetricType::Gauge,
            )?,
            &[],
            self.start_time_s,
        )?;
        enc.encode_descriptor(
            "build",
            "kcmp-trace version and kernel.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("kernel", self.kernel.as_str()),
        ])?;
        Ok(())
    }
}

/// The exposition of one sample.
pub fn encode(sample: Sample, format: Format) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("kcmp_trace");
    registry.register_collector(Box::new(sample));
    let mut out = String::with_capacity(32 * 1024);
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Affects, Hook};
    use kcmp_trace_common::{kcmp::KCMP_VM, result::result_slot};

    fn plan() -> std::sync::Arc<Plan> {
        std::sync::Arc::new(Plan {
            mode: AttachMode::Tracepoint,
            strategy: kcmp_trace_common::classify::Strategy::Boundary,
            series: false,
            preemption: crate::probe::preempt::Preemption {
                model: Some(crate::probe::preempt::Model::Full),
                dynamic: true,
                source: "test",
            },
            why: "test".into(),
            hooks: vec![Hook {
                target: "syscalls/sys_enter_kcmp".into(),
                program: "kcmp_tp_enter".into(),
                affects: &[Affects::CallEntry],
                noop: "noop_tp",
            }],
            skipped: Vec::new(),
            rejected: vec![("fentry/direct".into(), "no".into())],
            accuracy: Vec::new(),
        })
    }

    fn sample(c: Counters) -> Sample {
        Sample {
            counters: c,
            plan: plan(),
            comms: vec![(
                "stress".into(),
                CommCounts {
                    calls: 5,
                    errors: 1,
                },
            )],
            programs: vec![HookCounters {
                program: "kcmp_tp_exit".into(),
                target: "syscalls/sys_exit_kcmp".into(),
                affects: vec![Affects::CallExit],
                misses: 4,
                run_time_ns: 1_500_000_000,
                run_count: 7,
            }],
            bpf_stats_enabled: Some(false),
            client_drops: 2,
            event_clients: 1,
            start_time_s: 1.0,
            kernel: "6.1".into(),
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn histogram_buckets_are_the_kernel_slots() {
        let mut c = Counters::ZERO;
        c.calls[Outcome::Unknown as usize][KCMP_VM as usize][result_slot(-9) as usize] = 4;
        c.latency[Outcome::Unknown as usize][0] = 1; // 0 ns
        c.latency[Outcome::Unknown as usize][11] = 2; // [1024, 2047] ns
        c.latency[Outcome::Unknown as usize][64] = 1; // beyond 2^63 - 1 ns
        let text = encode(sample(c), Format::Prometheus).unwrap();
        let b = |le: &str| {
            value(
                &text,
                &format!(
                    "kcmp_trace_call_duration_seconds_bucket{{outcome=\"unknown\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(b("0"), Some(1.0), "{text}");
        // 2^10 - 1 = 1023 ns holds nothing above slot 0; 2047 ns holds slot 11 too.
        assert_eq!(b("1.023e-06"), Some(1.0));
        assert_eq!(b("2.047e-06"), Some(3.0));
        assert_eq!(b("+Inf"), Some(4.0));
        assert_eq!(
            value(
                &text,
                "kcmp_trace_call_duration_seconds_count{outcome=\"unknown\"}"
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                "kcmp_trace_calls_total{type=\"KCMP_VM\",outcome=\"unknown\",result=\"EBADF\"}"
            ),
            Some(4.0)
        );
        // Outcomes that never happened have no series.
        assert!(!text.contains("outcome=\"fast\""));
        assert_eq!(
            value(
                &text,
                "kcmp_trace_events_dropped_total{reason=\"slow_client\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "kcmp_trace_bpf_program_run_seconds_total{program=\"kcmp_tp_exit\"}"
            ),
            Some(1.5)
        );
        assert_eq!(
            value(
                &text,
                "kcmp_trace_program_misses_total{program=\"kcmp_tp_exit\",target=\"syscalls/sys_exit_kcmp\"}"
            ),
            Some(4.0)
        );
        // Four skipped exits: up to four calls missing, nothing else.
        assert_eq!(
            value(&text, "kcmp_trace_incomplete_total{numbers=\"calls\"}"),
            Some(4.0)
        );
        assert_eq!(
            value(&text, "kcmp_trace_incomplete_total{numbers=\"outcomes\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "kcmp_trace_attach_mode{mode=\"tracepoint\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "kcmp_trace_attach_mode{mode=\"fentry\"}"),
            Some(0.0)
        );
        assert!(text.contains("kcmp_trace_build_info{version="));
        // Empty histograms are still there (dashboards query them).
        assert_eq!(
            value(&text, "kcmp_trace_lock_wait_seconds_count"),
            Some(0.0)
        );
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let text = encode(sample(Counters::ZERO), Format::OpenMetrics).unwrap();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE kcmp_trace_calls counter"));
        assert!(text.contains("# UNIT kcmp_trace_call_duration_seconds seconds"));
    }

    #[test]
    fn accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=1, application/openmetrics-text;q=0.5")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
    }

    fn row(tgid: u32, comm: &str, calls: u64) -> ProcessRow {
        ProcessRow {
            tgid,
            comm: comm.into(),
            calls,
            errors: calls / 10,
            latency_sum_ns: 0,
        }
    }

    fn total(t: &CommTable) -> u64 {
        t.series().iter().map(|(_, n)| n.calls).sum()
    }

    #[test]
    fn comm_series_are_bounded_monotonic_and_sum_up() {
        let start = Instant::now();
        let step = Duration::from_secs(1);
        let mut t = CommTable::new(2);
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut check = |t: &CommTable, want_total: u64| {
            let series = t.series();
            assert!(series.len() <= 3);
            assert_eq!(total(t), want_total);
            for (comm, n) in &series {
                // A series that stays never goes backwards.
                if let Some(&before) = last.get(comm) {
                    assert!(n.calls >= before, "{comm}");
                }
            }
            last = series.into_iter().map(|(c, n)| (c, n.calls)).collect();
        };
        // a and b take the two slots; c is busier but new, so it waits out their tenure.
        t.update(&[row(1, "a", 10), row(2, "b", 20)], step, start);
        check(&t, 30);
        t.update(
            &[row(1, "a", 11), row(2, "b", 21), row(3, "c", 1000)],
            step,
            start + step,
        );
        check(&t, 1032);
        assert!(t.series().iter().all(|(c, _)| c != "c"));
        // After the tenure, c replaces the quietest one; a's calls move to other.
        let later = start + MIN_TENURE + step * 2;
        t.update(
            &[row(1, "a", 11), row(2, "b", 500), row(3, "c", 5000)],
            step,
            later,
        );
        check(&t, 5511);
        let names: Vec<String> = t.series().into_iter().map(|(c, _)| c).collect();
        assert!(
            names.contains(&"c".to_string()) && !names.contains(&"a".to_string()),
            "{names:?}"
        );
        // A process that vanished leaves its counts where they are.
        t.update(&[row(3, "c", 5001)], step, later + step);
        check(&t, 5512);
        // Comms named "other" never get a series of their own.
        let mut t = CommTable::new(2);
        t.update(&[row(9, OTHER_COMM, 3)], step, start);
        assert_eq!(
            t.series(),
            vec![(
                OTHER_COMM.to_string(),
                CommCounts {
                    calls: 3,
                    errors: 0
                }
            )]
        );
    }
}
