//! `/metrics` in the Prometheus and OpenMetrics text formats, and docs/metrics.md: the two
//! renderings of [`FAMILIES`].

use std::{fmt, path::Path};

use prometheus_client::registry::Registry;

use super::{
    families::{FAMILIES, Family, PREFIX, Sample, Served},
    negotiate::Format,
};

/// Whether the kernel keeps per-program run time and count; None when unreadable.
pub fn bpf_stats_enabled() -> Option<bool> {
    let text = std::fs::read_to_string(Path::new("/proc/sys/kernel/bpf_stats_enabled")).ok()?;
    Some(text.trim() != "0")
}

/// The exposition of one sample.
pub fn encode(sample: Sample, format: Format) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
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

/// How to rewrite docs/metrics.md from the table.
const REGENERATE: &str = "KCMP_TRACE_BLESS=1 cargo test -p kcmp-trace --lib metrics_page";

/// docs/metrics.md: every family with its type, labels and help, in the order `/metrics`
/// serves them.
pub fn page() -> String {
    let mut out = format!(
        "# Metrics\n\n\
         Generated from `FAMILIES` in `kcmp-trace/src/serve/families.rs`, not written by hand: \
         regenerate it with `{REGENERATE}`.\n\n\
         These are the families `kcmp-trace serve` serves on `/metrics` ([daemon.md](daemon.md)), \
         in the order it serves them. Each is declared whether or not it has series yet; \
         *served* says which daemons serve it, and when one that has seen calls still has no \
         series of it.\n\n\
         Names are the ones PromQL queries, as the Prometheus text format declares them: a \
         counter's ends in `_total`, an info's in `_info` (a gauge there, its series 1), and a \
         histogram's series are `NAME_bucket{{le}}`, `NAME_sum` and `NAME_count`. Histogram \
         buckets are exactly the in-kernel log2 slots (`le` = (2^s - 1) ns) and their sums are \
         exact. An OpenMetrics scraper gets the same families under OpenMetrics' names.\n\n\
         | family | type | labels | help | served |\n\
         |---|---|---|---|---|\n"
    );
    for family in FAMILIES {
        out.push_str(&page_row(family));
    }
    out
}

fn page_row(family: &Family) -> String {
    let labels: Vec<String> = family.labels.iter().map(|l| format!("`{l}`")).collect();
    let mut served = match family.served {
        Served::Always => "always".to_owned(),
        Served::WithReaders => "with `serve --readers` only".to_owned(),
        Served::WithStacks => "with `serve --stacks` only".to_owned(),
    };
    if let Some(when) = family.no_series_when {
        served.push_str(&format!("; no series when {when}"));
    }
    let cells = [
        format!("`{}`", family.query_name()),
        family.kind.as_str().to_owned(),
        if labels.is_empty() {
            "none".to_owned()
        } else {
            labels.join(", ")
        },
        family.help.to_owned(),
        served,
    ];
    let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
    format!("| {} |\n", cells.join(" | "))
}

#[cfg(test)]
mod tests {
    use kcmp_trace_common::{
        json::{
            readout::{CallerRow, HookCounters},
            stacks::StackRow,
        },
        kcmp::KCMP_VM,
        outcome::Outcome,
        programs,
        reader::{OTHER_SLOT, ProcReader, verdict},
        result::result_slot,
        snapshot::Counters,
    };

    use super::*;
    use crate::{
        plan::{Affects, AttachMode, Hook, Plan},
        serve::{comms::CommCounts, rejections::Reason},
    };
    use prometheus_client::metrics::MetricType;

    fn plan() -> std::sync::Arc<Plan> {
        std::sync::Arc::new(Plan {
            mode: AttachMode::Tracepoint,
            strategy: kcmp_trace_common::classify::Strategy::Boundary,
            series: false,
            preemption: crate::probe::preempt::Preemption {
                model: Some(crate::probe::preempt::Model::Full),
                dynamic: true,
                source: "test".into(),
            },
            why: "test".into(),
            hooks: vec![Hook {
                target: "syscalls/sys_enter_kcmp".into(),
                program: programs::KCMP_TP_ENTER.into(),
                affects: vec![Affects::CallEntry],
                outside_kcmp: None,
            }],
            lock_waits: None,
            lock_waits_why: String::new(),
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
            stacks: None,
        }
    }

    #[test]
    fn stacks_give_a_bounded_set_of_call_sites_that_add_up_to_every_wait() {
        let c = Counters::ZERO;
        let plain = encode(sample(c), Format::Prometheus).unwrap();
        assert!(!plain.contains("kcmp_trace_stack_"), "{plain}");
        // Twelve call sites of kcmp's waits, site i waited i + 1 times for 1 us each.
        let rows = (0..12u64)
            .map(|i| StackRow {
                who: "kcmp".into(),
                outcome: Some("locked".into()),
                frames: vec![format!("site{i:02}"), "down_read_killable".into()],
                count: i + 1,
                time_ns: (i + 1) * 1_000,
                holder: None,
            })
            .collect();
        let mut with = sample(c);
        with.stacks = Some(rows);
        let text = encode(with, Format::Prometheus).unwrap();
        let sites: Vec<(&str, f64)> = text
            .lines()
            .filter(|l| l.starts_with("kcmp_trace_stack_site_lock_waits_total{"))
            .filter_map(|l| {
                let (series, n) = l.rsplit_once(' ')?;
                Some((series, n.parse().ok()?))
            })
            .collect();
        assert_eq!(
            sites.len(),
            crate::serve::families::STACK_SITES + 1,
            "{text}"
        );
        assert_eq!(sites.iter().map(|(_, n)| n).sum::<f64>(), 78.0);
        assert_eq!(
            value(
                &text,
                r#"kcmp_trace_stack_site_lock_waits_total{reader="kcmp",site="site11"}"#
            ),
            Some(12.0)
        );
        // The two least waiting sites: 1 + 2 waits.
        assert_eq!(
            value(
                &text,
                r#"kcmp_trace_stack_site_lock_waits_total{reader="kcmp",site="other"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"kcmp_trace_stack_site_lock_wait_seconds_total{reader="kcmp",site="other"}"#
            ),
            Some(3e-6)
        );
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
        s.stacks = Some(vec![StackRow {
            who: "other".into(),
            outcome: None,
            frames: vec!["proc_pid_environ".into(), "mm_access".into()],
            count: 1,
            time_ns: 1_000,
            holder: None,
        }]);
        s
    }

    /// Every family of the table is served, with series, in the full state, under the name
    /// the page gives it (each series' labels are the table's: `Series` asserts it).
    #[test]
    fn every_family_has_series_in_the_full_state() {
        let text = encode(full_sample(), Format::Prometheus).unwrap();
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        let names: Vec<String> = FAMILIES.iter().map(Family::query_name).collect();
        assert_eq!(declared, names, "{text}");
        for (family, name) in FAMILIES.iter().zip(&names) {
            let suffixes: &[&str] = match family.kind {
                MetricType::Histogram => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            let has_series = text.lines().any(|l| {
                suffixes.iter().any(|suffix| {
                    l.strip_prefix(name.as_str())
                        .and_then(|rest| rest.strip_prefix(suffix))
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
            });
            assert!(
                has_series,
                "{name} has no series in the full state:\n{text}"
            );
        }
    }

    /// docs/metrics.md is the page the table renders.
    #[test]
    fn metrics_page_is_the_tables() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        let page = page();
        if std::env::var_os("KCMP_TRACE_BLESS").is_some() {
            std::fs::write(&path, &page).expect("writing docs/metrics.md");
            return;
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        let first_difference = kept
            .lines()
            .zip(page.lines())
            .position(|(kept, rendered)| kept != rendered)
            .map_or(kept.lines().count().min(page.lines().count()), |i| i);
        assert!(
            kept == page,
            "docs/metrics.md differs from the table from line {}; regenerate it with `{REGENERATE}`",
            first_difference + 1
        );
    }
}
