//! `/metrics`: the tracer's counters in the Prometheus and OpenMetrics text formats.
//!
//! The kernel owns the counter values, so instead of registering prometheus-client metrics
//! and copying into them, one [`Sample`] of everything is taken per scrape and encoded by a
//! [`Collector`]: values cannot drift from the kernel's and never go backwards.

use std::{fmt, path::Path};

use kcmp_trace_common::{
    hist::{HIST_SLOTS, slot_upper_bound},
    kcmp::{TYPE_SLOTS, type_slot_name},
    maps::misc,
    outcome::Outcome,
    reader::{OTHER_SLOT, ProcReader, verdict},
    result::{RESULT_SLOTS, result_slot_name},
    snapshot::Counters,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{comms::CommCounts, negotiate::Format, rejections::Reason};
use crate::{
    plan::{AttachMode, Plan},
    readout::{CallerRow, HookCounters},
    report::{Incomplete, KCMP_READER, OTHER_READER, missed_since},
};

/// Whether the kernel keeps per-program run time and count; None when unreadable.
pub fn bpf_stats_enabled() -> Option<bool> {
    let text = std::fs::read_to_string(Path::new("/proc/sys/kernel/bpf_stats_enabled")).ok()?;
    Some(text.trim() != "0")
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

impl Sample {
    /// The `reader_*` families: kcmp beside exec_update_lock's other readers, by `reader`
    /// (kcmp, proc_stack, proc_syscall, proc_wchan, other, other:SYMBOL).
    fn encode_readers(&self, enc: &mut DescriptorEncoder, sites: &[CallerRow]) -> fmt::Result {
        let c = &self.counters;
        let procs = ProcReader::ALL.map(|r| (r.name(), &c.readers[r as usize]));
        let other = &c.readers[OTHER_SLOT];
        {
            let mut m = enc.encode_descriptor(
                "reader_calls",
                "Calls of exec_update_lock's readers followed call by call (kcmp, /proc stack, syscall, wchan), by kernel path (outcome).",
                None,
                MetricType::Counter,
            )?;
            for o in Outcome::ALL {
                let kcmp = c.calls_by_outcome(o);
                let rows = std::iter::once((KCMP_READER, kcmp))
                    .chain(procs.iter().map(|(name, r)| (*name, r.calls[o as usize])));
                for (reader, n) in rows.filter(|&(_, n)| n != 0) {
                    counter(&mut m, &[("reader", reader), ("outcome", o.name())], n)?;
                }
            }
        }
        let site_names: Vec<String> = sites
            .iter()
            .map(|s| format!("{OTHER_READER}:{}", s.symbol))
            .collect();
        let slots: Vec<(&str, _)> = procs.into_iter().chain([(OTHER_READER, other)]).collect();
        let waits = std::iter::once((KCMP_READER, hist_total(&c.lock_wait), c.lock_wait_sum_ns))
            .chain(
                slots
                    .iter()
                    .map(|(name, r)| (*name, r.lock_waits(), r.lock_wait_sum_ns)),
            )
            .chain(
                site_names
                    .iter()
                    .zip(sites)
                    .map(|(name, s)| (name.as_str(), s.lock_waits, s.lock_wait_sum_ns)),
            );
        let waits: Vec<_> = waits.collect();
        {
            let mut m = enc.encode_descriptor(
                "reader_lock_waits",
                "exec_update_lock waits by reader.",
                None,
                MetricType::Counter,
            )?;
            for &(reader, n, _) in &waits {
                counter(&mut m, &[("reader", reader)], n)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "reader_lock_wait",
                "Time spent waiting for exec_update_lock, by reader.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for &(reader, _, sum_ns) in &waits {
                m.encode_family(&[("reader", reader)])?
                    .encode_counter::<NoLabelSet, _, f64>(&(sum_ns as f64 / 1e9), None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "reader_helper_calls",
            "exec_update_speculate_try_begin/retry calls of other callers, by verdict (begin_ok, begin_failed, valid, retry).",
            None,
            MetricType::Counter,
        )?;
        let rows = std::iter::once((OTHER_READER, &other.verdicts)).chain(
            site_names
                .iter()
                .zip(sites)
                .map(|(name, s)| (name.as_str(), &s.verdicts)),
        );
        for (reader, verdicts) in rows {
            for (name, &n) in verdict::NAMES.iter().zip(verdicts) {
                if n != 0 {
                    counter(&mut m, &[("reader", reader), ("verdict", name)], n)?;
                }
            }
        }
        Ok(())
    }
}

fn hist_total(h: &[u64; HIST_SLOTS]) -> u64 {
    h.iter().sum()
}

impl Collector for Sample {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = &self.counters;
        let seconds = Unit::Seconds;
        if let Some(sites) = &self.callers {
            self.encode_readers(&mut enc, sites)?;
        }
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
        encode_hist(
            &mut enc.encode_descriptor(
                "tsync_write_section",
                "exec_update_lock write sections of Landlock TSYNC (landlock_restrict_self with LANDLOCK_RESTRICT_SELF_TSYNC) and how long each held the lock.",
                Some(&seconds),
                MetricType::Histogram,
            )?,
            &c.tsync_hold,
            c.tsync_hold_sum_ns,
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
        gauge(
            &mut enc.encode_descriptor(
                "event_queued_bytes",
                "NDJSON waiting to be written to /events clients (bounded by --event-buffer-total).",
                None,
                MetricType::Gauge,
            )?,
            &[],
            self.event_queued_bytes as i64,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "http_rejected",
                "Connections and requests turned away: unauthorized (401), forbidden (403, per-call data), misdirected (421, Host), plain_http_to_tls, tls_handshake, idle_evicted (closed at --max-connections to let a new one in), events_full and events_client_share (503).",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in self.rejections {
                counter(&mut m, &[("reason", reason.name())], n)?;
            }
        }
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
            (
                "unattributed_calls",
                "Calls counted everywhere but in per-process and per-comm totals: the per-process map was full (serve --max-processes).",
                c.misc[misc::UNATTRIBUTED],
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
                ("tsync_write_sections", incomplete.tsync_write_sections),
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
                    ("program", hook.program),
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
                "hook_runs_outside_kcmp",
                "Runs of each hook on a function every process calls that found no kcmp call: the work the tracer taxes on the rest of the host (always counted; their time is in bpf_program_run_seconds_total).",
                None,
                MetricType::Counter,
            )?;
            for p in &self.programs {
                if let Some(runs) = p.runs_outside_kcmp {
                    let labels = [
                        ("program", p.program.as_str()),
                        ("target", p.target.as_str()),
                    ];
                    counter(&mut m, &labels, runs)?;
                }
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
    use kcmp_trace_common::{kcmp::KCMP_VM, programs, result::result_slot};

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
                program: programs::KCMP_TP_ENTER,
                affects: &[Affects::CallEntry],
                outside_kcmp: None,
                outside_slot: None,
                noop: programs::bench::NOOP_TP,
            }],
            lock_waits: None,
            lock_waits_why: "",
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
                program: programs::KCMP_TP_EXIT.into(),
                target: "syscalls/sys_exit_kcmp".into(),
                affects: vec![Affects::CallExit],
                misses: 4,
                run_time_ns: 1_500_000_000,
                run_count: 7,
                runs_outside_kcmp: Some(12),
            }],
            bpf_stats_enabled: Some(false),
            client_drops: 2,
            event_clients: 1,
            event_queued_bytes: 512,
            rejections: Reason::ALL.map(|r| (r, u64::from(r == Reason::Unauthorized))),
            start_time_s: 1.0,
            kernel: "6.1".into(),
            callers: None,
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
        assert_eq!(value(&text, "kcmp_trace_event_queued_bytes"), Some(512.0));
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
        assert_eq!(
            value(
                &text,
                "kcmp_trace_hook_runs_outside_kcmp_total{program=\"kcmp_tp_exit\",target=\"syscalls/sys_exit_kcmp\"}"
            ),
            Some(12.0)
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
    fn readers_get_their_own_families_and_a_reader_label() {
        let mut c = Counters::ZERO;
        c.calls[Outcome::Fast as usize][KCMP_VM as usize][0] = 9;
        c.lock_wait[10] = 2;
        let wchan = &mut c.readers[ProcReader::Wchan as usize];
        wchan.calls[Outcome::Busy as usize] = 3;
        wchan.lock_wait[11] = 3;
        wchan.lock_wait_sum_ns = 6_000;
        c.readers[OTHER_SLOT].lock_wait[12] = 4;
        // kcmp-only: no reader family at all.
        let plain = encode(sample(c), Format::Prometheus).unwrap();
        assert!(!plain.contains("kcmp_trace_reader_"), "{plain}");
        let mut with = sample(c);
        with.callers = Some(vec![CallerRow {
            symbol: "mm_access".into(),
            lock_waits: 4,
            lock_wait_sum_ns: 8_000,
            ..CallerRow::default()
        }]);
        let text = encode(with, Format::Prometheus).unwrap();
        let v = |series: &str| {
            value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        };
        assert_eq!(
            v(r#"kcmp_trace_reader_calls_total{reader="kcmp",outcome="fast"}"#),
            9.0
        );
        assert_eq!(
            v(r#"kcmp_trace_reader_calls_total{reader="proc_wchan",outcome="busy"}"#),
            3.0
        );
        assert_eq!(
            v(r#"kcmp_trace_reader_lock_waits_total{reader="kcmp"}"#),
            2.0
        );
        assert_eq!(
            v(r#"kcmp_trace_reader_lock_waits_total{reader="proc_wchan"}"#),
            3.0
        );
        assert_eq!(
            v(r#"kcmp_trace_reader_lock_waits_total{reader="other"}"#),
            4.0
        );
        assert_eq!(
            v(r#"kcmp_trace_reader_lock_waits_total{reader="other:mm_access"}"#),
            4.0
        );
        assert_eq!(
            v(r#"kcmp_trace_reader_lock_wait_seconds_total{reader="proc_wchan"}"#),
            6e-6
        );
        // The kcmp families keep their labels: a dashboard built on them sees no change.
        assert!(
            text.contains(
                r#"kcmp_trace_calls_total{type="KCMP_VM",outcome="fast",result="equal"} 9"#
            )
        );
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let text = encode(sample(Counters::ZERO), Format::OpenMetrics).unwrap();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE kcmp_trace_calls counter"));
        assert!(text.contains("# UNIT kcmp_trace_call_duration_seconds seconds"));
    }

    /// Every family with series in it: readers on, a hook skipped, bpf stats on, and
    /// something counted everywhere.
    fn full_sample() -> Sample {
        let mut c = Counters::ZERO;
        for o in Outcome::ALL {
            c.calls[o as usize][KCMP_VM as usize][0] = 1;
            c.latency[o as usize][10] = 1;
        }
        c.lock_wait[10] = 1;
        c.exec_hold[12] = 1;
        c.tsync_hold[12] = 1;
        c.misc.fill(1);
        for r in &mut c.readers {
            r.calls.fill(1);
            r.verdicts.fill(1);
            r.lock_wait[11] = 1;
            r.lock_wait_sum_ns = 2_000;
        }
        let mut s = sample(c);
        std::sync::Arc::get_mut(&mut s.plan)
            .expect("a plan of its own")
            .skipped = vec![("lock/contention_begin".into(), "test".into())];
        s.bpf_stats_enabled = Some(true);
        s.callers = Some(vec![CallerRow {
            symbol: "mm_access".into(),
            verdicts: [1; verdict::SLOTS],
            lock_waits: 1,
            lock_wait_sum_ns: 1_000,
        }]);
        s
    }

    /// The metric names a PromQL expression uses (label values and numbers left out).
    fn promql_names(expr: &str) -> Vec<&str> {
        let (bytes, mut names, mut i) = (expr.as_bytes(), Vec::new(), 0);
        while i < bytes.len() {
            let c = bytes[i];
            if c == b'"' {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            } else if c.is_ascii_alphanumeric() || c == b'_' || c == b':' {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                if !c.is_ascii_digit() {
                    names.push(&expr[start..i]);
                }
            } else {
                i += 1;
            }
        }
        names
    }

    fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => dashboard_exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
            _ => {}
        }
    }

    /// Each family the daemon serves has a panel: a family added without one fails here.
    #[test]
    fn the_dashboard_shows_every_family() {
        let text = encode(full_sample(), Format::Prometheus).unwrap();
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .collect();
        assert!(families.len() >= 30, "{text}");
        // The state is full: every family has series, the readers' included.
        for (family, kind) in &families {
            let sample = match *kind {
                "histogram" => format!("{family}_bucket"),
                _ => (*family).to_owned(),
            };
            let has_series = text.lines().any(|l| {
                l.strip_prefix(sample.as_str())
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            });
            assert!(
                has_series,
                "{family} has no series in the full state:\n{text}"
            );
        }
        assert!(
            families
                .iter()
                .any(|(f, _)| f.starts_with("kcmp_trace_reader_"))
        );

        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../contrib/grafana-dashboard.json"))
                .expect("the dashboard's JSON");
        let mut exprs = Vec::new();
        dashboard_exprs(&dashboard, &mut exprs);
        let used: std::collections::BTreeSet<&str> =
            exprs.iter().flat_map(|e| promql_names(e)).collect();
        let missing: Vec<&str> = families
            .iter()
            .map(|&(family, _)| family)
            .filter(|family| {
                !["", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| used.contains(format!("{family}{suffix}").as_str()))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "families /metrics serves that no panel of contrib/grafana-dashboard.json queries: \
             {missing:?}"
        );
    }
}
