//! One interval's numbers, as every sink shows them (table, JSON, HTTP snapshot), made from
//! the counters; two sessions' side by side.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    is_zero, nullable,
    plan::Affects,
    readout::{CallerRow, HookCounters, ProcessRow},
    stacks::StackRow,
};
use crate::{
    hist::{self, HIST_SLOTS},
    kcmp::{TYPE_SLOTS, type_slot_name},
    maps::misc,
    outcome::Outcome,
    reader::{OTHER_SLOT, ProcReader, ReaderCounters, verdict},
    result::{RESULT_SLOTS, result_slot_name},
    snapshot::Counters,
};

/// Counts by name (type, result, outcome, verdict): only names with a count are written.
pub type Counts = BTreeMap<String, u64>;

/// A log2 histogram's count and quantiles, in ns; null where it has no samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Quantiles {
    pub count: u64,
    #[serde(deserialize_with = "nullable")]
    pub p50: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    pub p90: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    pub p99: Option<u64>,
    /// Upper bound of the highest non-empty log2 slot.
    #[serde(deserialize_with = "nullable")]
    pub max: Option<u64>,
}

impl Quantiles {
    pub fn of(h: &[u64]) -> Quantiles {
        Quantiles {
            count: hist::total(h),
            p50: hist::quantile(h, 0.50),
            p90: hist::quantile(h, 0.90),
            p99: hist::quantile(h, 0.99),
            max: hist::max_bound(h),
        }
    }
}

/// The numbers of an interval, or of everything since attach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Seconds covered by this report.
    pub interval_s: f64,
    pub calls: u64,
    pub calls_per_s: f64,
    pub errors: u64,
    pub by_type: Counts,
    pub by_result: Counts,
    pub by_outcome: Counts,
    /// Outcome, then result: where each kind of result went.
    pub by_outcome_result: BTreeMap<String, Counts>,
    pub latency_ns: Quantiles,
    pub latency_by_outcome_ns: BTreeMap<String, Quantiles>,
    pub lock_wait_ns: Quantiles,
    pub exec_hold_ns: Quantiles,
    /// Landlock TSYNC's write sections of exec_update_lock.
    pub tsync_hold_ns: Quantiles,
    pub events_sent: u64,
    pub events_dropped: u64,
    /// Exits without their entry (not counted as calls).
    pub unpaired_exits: u64,
    /// Entries whose call's exit was never seen (that call is not counted).
    pub lost_exits: u64,
    /// Calls whose probe trail fit no kernel path (counted as `unknown`).
    pub unclassified: u64,
    /// Lock waits whose end was never seen (left out of lock_wait_ns).
    pub lock_waits_unfinished: u64,
    /// Calls counted everywhere but in their process's totals: the per-process map was full.
    pub unattributed: u64,
    /// Other callers' helper calls and lock waits counted under `other` but no call site
    /// (no caller address seen, or the call-site map full).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub others_unplaced: u64,
    /// Runs of each program the kernel skipped in this interval (programs with none left
    /// out).
    pub missed_runs: BTreeMap<String, u64>,
    /// How far the numbers may fall short of the truth; all zero when `exact`.
    pub incomplete: Incomplete,
    /// Nothing was skipped or left unpaired: every number is complete.
    pub exact: bool,
    pub top_processes: Vec<ProcessRow>,
    /// With `--readers`: kcmp, each /proc reader, all other callers (`other`) and each
    /// other call site (`other:SYMBOL`), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_reader: Option<BTreeMap<String, ReaderReport>>,
    /// With `--stacks`: lock waits and write sections by kernel stack, busiest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<Vec<StackRow>>,
}

/// One reader of exec_update_lock over an interval: its calls' outcomes (kcmp and the /proc
/// readers, whose calls are followed) or its helper verdicts (other callers), and its lock
/// waits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReaderReport {
    pub calls: u64,
    pub by_outcome: Counts,
    /// Other callers' helper calls by verdict (begin_ok, begin_failed, valid, retry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verdicts: Counts,
    pub lock_waits: u64,
    pub lock_wait_sum_ns: u64,
    /// Log2 quantiles of the lock waits (not kept per call site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_ns: Option<Quantiles>,
    /// Calls left uncounted: returns never seen, or seen without their entry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uncounted: u64,
}

impl ReaderReport {
    fn of_slot(slot: &ReaderCounters) -> ReaderReport {
        ReaderReport {
            calls: slot.total_calls(),
            by_outcome: outcome_counts(|o| slot.calls[o as usize]),
            verdicts: verdict_counts(&slot.verdicts),
            lock_waits: slot.lock_waits(),
            lock_wait_sum_ns: slot.lock_wait_sum_ns,
            lock_wait_ns: Some(Quantiles::of(&slot.lock_wait)),
            uncounted: slot.lost_exits + slot.unpaired_exits,
        }
    }

    fn of_kcmp(delta: &Counters) -> ReaderReport {
        ReaderReport {
            calls: delta.total_calls(),
            by_outcome: outcome_counts(|o| delta.calls_by_outcome(o)),
            verdicts: BTreeMap::new(),
            lock_waits: hist::total(&delta.lock_wait),
            lock_wait_sum_ns: delta.lock_wait_sum_ns,
            lock_wait_ns: Some(Quantiles::of(&delta.lock_wait)),
            uncounted: delta.misc[misc::UNPAIRED_EXITS] + delta.misc[misc::LOST_EXITS],
        }
    }

    fn of_site(row: &CallerRow) -> ReaderReport {
        ReaderReport {
            verdicts: verdict_counts(&row.verdicts),
            lock_waits: row.lock_waits,
            lock_wait_sum_ns: row.lock_wait_sum_ns,
            ..ReaderReport::default()
        }
    }

    /// Mean lock wait, ns.
    pub fn mean_lock_wait_ns(&self) -> Option<f64> {
        (self.lock_waits != 0).then(|| self.lock_wait_sum_ns as f64 / self.lock_waits as f64)
    }
}

/// The names with a count, as [`Counts`].
fn nonzero<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> Counts {
    pairs
        .into_iter()
        .filter(|&(_, n)| n != 0)
        .map(|(name, n)| (name.to_owned(), n))
        .collect()
}

fn outcome_counts(n: impl Fn(Outcome) -> u64) -> Counts {
    nonzero(Outcome::ALL.iter().map(|&o| (o.name(), n(o))))
}

fn verdict_counts(v: &[u64; verdict::SLOTS]) -> Counts {
    nonzero(verdict::NAMES.into_iter().zip(v.iter().copied()))
}

/// The name kcmp goes by among the readers.
pub const KCMP_READER: &str = "kcmp";
/// Every caller that is neither kcmp nor a /proc reader, together.
pub const OTHER_READER: &str = "other";

/// Checks a `--reader` name: one of the readers, or a call site `other:SYMBOL`.
pub fn parse_reader(name: &str) -> Result<String, String> {
    let known: Vec<&str> = [KCMP_READER]
        .into_iter()
        .chain(ProcReader::ALL.map(ProcReader::name))
        .chain([OTHER_READER])
        .collect();
    let site = name
        .strip_prefix(OTHER_READER)
        .and_then(|s| s.strip_prefix(':'))
        .is_some_and(|symbol| !symbol.is_empty());
    if known.contains(&name) || site {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "unknown reader {name:?}: one of {}, or other:SYMBOL",
            known.join(", ")
        ))
    }
}

/// Every reader's report: kcmp, the /proc readers, the other callers together and each
/// other call site. Readers with nothing to show are still listed but for call sites.
pub fn by_reader(delta: &Counters, sites: &[CallerRow]) -> BTreeMap<String, ReaderReport> {
    let mut readers = BTreeMap::from([(KCMP_READER.to_owned(), ReaderReport::of_kcmp(delta))]);
    for r in ProcReader::ALL {
        readers.insert(
            r.name().to_owned(),
            ReaderReport::of_slot(&delta.readers[r as usize]),
        );
    }
    readers.insert(
        OTHER_READER.to_owned(),
        ReaderReport::of_slot(&delta.readers[OTHER_SLOT]),
    );
    for site in sites {
        readers.insert(
            format!("{OTHER_READER}:{}", site.symbol),
            ReaderReport::of_site(site),
        );
    }
    readers
}

/// Upper bounds on what skipped program runs and unpaired calls leave out of a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Incomplete {
    /// Calls that may be missing from `calls` (and every breakdown of it).
    pub calls: u64,
    /// Counted calls whose outcome may be wrong.
    pub outcomes: u64,
    /// Lock waits that may be missing from lock_wait_ns.
    pub lock_wait: u64,
    /// Exec write sections that may be missing from exec_hold_ns.
    pub exec_write_sections: u64,
    /// TSYNC write sections that may be missing from tsync_hold_ns.
    pub tsync_write_sections: u64,
    /// /proc reader calls that may be missing or misread (`--readers`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reader_calls: u64,
    /// Lock waits and write sections missing from `stacks`: the stack counts' map was full
    /// (`--stacks`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stacks: u64,
}

impl Incomplete {
    /// The bounds for an interval with these counters and skipped runs.
    ///
    /// A call goes uncounted when its exit is never seen (a skipped exit run, which the
    /// thread's next entry may also report as a lost exit) or when its exit finds no entry
    /// (unpaired: a skipped entry run, or a call that began before attach). A skipped run
    /// of a path probe can misread at most one call's path; of a lock probe, one lock wait.
    pub fn of(delta: &Counters, missed: &[Missed]) -> Incomplete {
        let skipped = |what: Affects| -> u64 {
            missed
                .iter()
                .filter(|m| m.affects.contains(&what))
                .map(|m| m.runs)
                .sum()
        };
        Incomplete {
            calls: delta.misc[misc::UNPAIRED_EXITS]
                + delta.misc[misc::LOST_EXITS].max(skipped(Affects::CallExit)),
            outcomes: skipped(Affects::Outcome),
            lock_wait: delta.misc[misc::LOCK_WAITS_UNFINISHED] + skipped(Affects::LockWait),
            exec_write_sections: skipped(Affects::ExecSections),
            tsync_write_sections: skipped(Affects::TsyncSections),
            reader_calls: delta.readers[..OTHER_SLOT]
                .iter()
                .map(|r| r.lost_exits + r.unpaired_exits)
                .sum::<u64>()
                + skipped(Affects::ReaderCalls),
            stacks: delta.misc[misc::STACKS_DROPPED],
        }
    }

    pub fn is_exact(&self) -> bool {
        *self == Incomplete::default()
    }
}

/// Runs of one program the kernel skipped over an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missed {
    pub program: String,
    pub affects: Vec<Affects>,
    pub runs: u64,
}

/// Skipped runs per program between two reads of the same programs.
pub fn missed_since(now: &[HookCounters], before: &[HookCounters]) -> Vec<Missed> {
    now.iter()
        .map(|h| {
            let earlier = before
                .iter()
                .find(|b| b.program == h.program)
                .map_or(0, |b| b.misses);
            Missed {
                program: h.program.clone(),
                affects: h.affects.clone(),
                runs: h.misses.saturating_sub(earlier),
            }
        })
        .collect()
}

impl Report {
    /// The report of `delta` (counters over `interval_s` seconds) with the program runs the
    /// kernel skipped meanwhile.
    pub fn new(
        delta: &Counters,
        interval_s: f64,
        top_processes: Vec<ProcessRow>,
        missed: &[Missed],
        callers: Option<&[CallerRow]>,
    ) -> Report {
        let incomplete = Incomplete::of(delta, missed);
        let calls = delta.total_calls();
        Report {
            interval_s,
            calls,
            calls_per_s: if interval_s > 0.0 {
                calls as f64 / interval_s
            } else {
                0.0
            },
            errors: delta.errors(),
            by_type: nonzero(
                (0..TYPE_SLOTS).map(|t| (type_slot_name(t as u32), delta.calls_by_type(t))),
            ),
            by_result: nonzero(
                (0..RESULT_SLOTS).map(|r| (result_slot_name(r as u32), delta.calls_by_result(r))),
            ),
            by_outcome: outcome_counts(|o| delta.calls_by_outcome(o)),
            by_outcome_result: Outcome::ALL
                .iter()
                .map(|&o| {
                    let by_result = nonzero((0..RESULT_SLOTS).map(|r| {
                        let n = (0..TYPE_SLOTS).map(|t| delta.calls[o as usize][t][r]).sum();
                        (result_slot_name(r as u32), n)
                    }));
                    (o.name().to_owned(), by_result)
                })
                .filter(|(_, m)| !m.is_empty())
                .collect(),
            latency_ns: Quantiles::of(&delta.latency_all()),
            latency_by_outcome_ns: Outcome::ALL
                .iter()
                .filter(|&&o| delta.calls_by_outcome(o) != 0)
                .map(|&o| {
                    (
                        o.name().to_owned(),
                        Quantiles::of(&delta.latency[o as usize]),
                    )
                })
                .collect(),
            lock_wait_ns: Quantiles::of(&delta.lock_wait),
            exec_hold_ns: Quantiles::of(&delta.exec_hold),
            tsync_hold_ns: Quantiles::of(&delta.tsync_hold),
            events_sent: delta.misc[misc::EVENTS_SENT],
            events_dropped: delta.misc[misc::EVENTS_DROPPED],
            unpaired_exits: delta.misc[misc::UNPAIRED_EXITS],
            lost_exits: delta.misc[misc::LOST_EXITS],
            unclassified: delta.misc[misc::UNCLASSIFIED],
            lock_waits_unfinished: delta.misc[misc::LOCK_WAITS_UNFINISHED],
            unattributed: delta.misc[misc::UNATTRIBUTED],
            others_unplaced: delta.misc[misc::OTHERS_UNPLACED],
            missed_runs: missed
                .iter()
                .filter(|m| m.runs != 0)
                .map(|m| (m.program.clone(), m.runs))
                .collect(),
            exact: incomplete.is_exact()
                && delta.misc[misc::UNCLASSIFIED] == 0
                && delta.misc[misc::UNATTRIBUTED] == 0,
            incomplete,
            top_processes,
            by_reader: callers.map(|sites| by_reader(delta, sites)),
            stacks: None,
        }
    }
}

/// One read of cumulative counters, stamped on the source's clock: what `watch` reads each
/// interval and `record` keeps.
#[derive(Clone, Debug)]
pub struct Reading {
    pub counters: Counters,
    pub procs: Vec<ProcessRow>,
    /// Other callers by call site, since attach (readers followed; else None).
    pub callers: Option<Vec<CallerRow>>,
    /// Lock waits and write sections by stack, since attach (`--stacks`; else None).
    pub stacks: Option<Vec<StackRow>>,
    /// What the kernel counted for each attached program (skipped runs among it).
    pub hooks: Vec<HookCounters>,
    /// Seconds since attach.
    pub at_s: f64,
}

impl Reading {
    /// What reports count from when the counters start at zero (at attach).
    pub const fn attach() -> Reading {
        Reading {
            counters: Counters::ZERO,
            procs: Vec::new(),
            callers: None,
            stacks: None,
            hooks: Vec::new(),
            at_s: 0.0,
        }
    }

    /// The report of what happened between `earlier` and this reading.
    pub fn report_since(&self, earlier: &Reading, top: usize) -> (Report, Counters) {
        let delta = self.counters.since(&earlier.counters);
        let mut report = Report::new(
            &delta,
            (self.at_s - earlier.at_s).max(0.0),
            process_deltas(&self.procs, &earlier.procs, top),
            &missed_since(&self.hooks, &earlier.hooks),
            self.callers
                .as_ref()
                .map(|now| CallerRow::deltas(now, earlier.callers.as_deref().unwrap_or_default()))
                .as_deref(),
        );
        report.stacks = self
            .stacks
            .as_ref()
            .map(|now| StackRow::deltas(now, earlier.stacks.as_deref().unwrap_or_default()));
        (report, delta)
    }
}

/// One number of two sessions side by side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompareRow {
    pub metric: String,
    pub unit: String,
    #[serde(deserialize_with = "nullable")]
    pub a: Option<f64>,
    #[serde(deserialize_with = "nullable")]
    pub b: Option<f64>,
    /// b - a, when both exist.
    #[serde(deserialize_with = "nullable")]
    pub delta: Option<f64>,
    /// b / a, when both exist and a is not 0.
    #[serde(deserialize_with = "nullable")]
    pub ratio: Option<f64>,
}

impl CompareRow {
    fn new(metric: impl Into<String>, unit: &'static str, a: Option<f64>, b: Option<f64>) -> Self {
        let both = a.zip(b);
        CompareRow {
            metric: metric.into(),
            unit: unit.to_owned(),
            a,
            b,
            delta: both.map(|(a, b)| b - a),
            ratio: both.and_then(|(a, b)| (a != 0.0).then(|| b / a)),
        }
    }
}

/// Session A against session B, metric by metric: rate, outcome split, latency overall and
/// per outcome, lock wait, exec write sections, errors.
pub fn compare(a: &Report, b: &Report) -> Vec<CompareRow> {
    let count = |n: u64| Some(n as f64);
    let mut rows = vec![
        CompareRow::new("duration", "s", Some(a.interval_s), Some(b.interval_s)),
        CompareRow::new("calls", "calls", count(a.calls), count(b.calls)),
        CompareRow::new(
            "calls/s",
            "calls/s",
            Some(a.calls_per_s),
            Some(b.calls_per_s),
        ),
        CompareRow::new("errors", "calls", count(a.errors), count(b.errors)),
    ];
    let share = |r: &Report, o: &str| {
        let n = r.by_outcome.get(o).copied().unwrap_or(0);
        (r.calls != 0).then(|| 100.0 * n as f64 / r.calls as f64)
    };
    let outcomes: Vec<&str> = Outcome::ALL
        .iter()
        .map(|o| o.name())
        .filter(|o| a.by_outcome.contains_key(*o) || b.by_outcome.contains_key(*o))
        .collect();
    for &o in &outcomes {
        let n = |r: &Report| count(r.by_outcome.get(o).copied().unwrap_or(0));
        rows.push(CompareRow::new(format!("outcome {o}"), "calls", n(a), n(b)));
        rows.push(CompareRow::new(
            format!("outcome {o} share"),
            "%",
            share(a, o),
            share(b, o),
        ));
    }
    quantile_rows(
        &mut rows,
        "latency",
        Some(&a.latency_ns),
        Some(&b.latency_ns),
    );
    for &o in &outcomes {
        quantile_rows(
            &mut rows,
            &format!("latency {o}"),
            a.latency_by_outcome_ns.get(o),
            b.latency_by_outcome_ns.get(o),
        );
    }
    for (name, qa, qb) in [
        ("lock wait", &a.lock_wait_ns, &b.lock_wait_ns),
        ("exec write section", &a.exec_hold_ns, &b.exec_hold_ns),
        ("TSYNC write section", &a.tsync_hold_ns, &b.tsync_hold_ns),
    ] {
        rows.push(CompareRow::new(
            format!("{name}s"),
            "count",
            count(qa.count),
            count(qb.count),
        ));
        quantile_rows(&mut rows, name, Some(qa), Some(qb));
    }
    reader_compare_rows(&mut rows, a, b);
    rows
}

/// Each reader that either session followed (`--readers`): its calls, their outcomes, and
/// its lock waits and mean wait, A against B.
fn reader_compare_rows(rows: &mut Vec<CompareRow>, a: &Report, b: &Report) {
    let (Some(ra), Some(rb)) = (&a.by_reader, &b.by_reader) else {
        return;
    };
    let empty = ReaderReport::default();
    let names: BTreeSet<&String> = ra.keys().chain(rb.keys()).collect();
    for name in names {
        let (x, y) = (
            ra.get(name).unwrap_or(&empty),
            rb.get(name).unwrap_or(&empty),
        );
        let count = |n: u64| Some(n as f64);
        if x.calls != 0 || y.calls != 0 {
            rows.push(CompareRow::new(
                format!("reader {name} calls"),
                "calls",
                count(x.calls),
                count(y.calls),
            ));
            let outcomes: BTreeSet<&String> =
                x.by_outcome.keys().chain(y.by_outcome.keys()).collect();
            for o in outcomes {
                let n = |r: &ReaderReport| count(r.by_outcome.get(o).copied().unwrap_or(0));
                rows.push(CompareRow::new(
                    format!("reader {name} {o}"),
                    "calls",
                    n(x),
                    n(y),
                ));
            }
        }
        rows.push(CompareRow::new(
            format!("reader {name} lock waits"),
            "count",
            count(x.lock_waits),
            count(y.lock_waits),
        ));
        rows.push(CompareRow::new(
            format!("reader {name} mean lock wait"),
            "ns",
            x.mean_lock_wait_ns(),
            y.mean_lock_wait_ns(),
        ));
    }
}

/// p50, p90, p99 and max of one distribution in A and B (absent where it has no samples).
fn quantile_rows(
    rows: &mut Vec<CompareRow>,
    name: &str,
    a: Option<&Quantiles>,
    b: Option<&Quantiles>,
) {
    let values = |q: Option<&Quantiles>| {
        let q = q.cloned().unwrap_or_default();
        [q.p50, q.p90, q.p99, q.max].map(|v| v.map(|v| v as f64))
    };
    for ((label, a), b) in ["p50", "p90", "p99", "max"]
        .into_iter()
        .zip(values(a))
        .zip(values(b))
    {
        rows.push(CompareRow::new(format!("{name} {label}"), "ns", a, b));
    }
}

/// Per-process rows that changed between two reads, busiest first, at most `k`.
pub fn process_deltas(now: &[ProcessRow], before: &[ProcessRow], k: usize) -> Vec<ProcessRow> {
    let before: BTreeMap<u32, &ProcessRow> = before.iter().map(|r| (r.tgid, r)).collect();
    let mut rows: Vec<ProcessRow> = now
        .iter()
        .filter_map(|r| {
            let prev = before.get(&r.tgid);
            let calls = r.calls.saturating_sub(prev.map_or(0, |p| p.calls));
            (calls > 0).then(|| ProcessRow {
                calls,
                errors: r.errors.saturating_sub(prev.map_or(0, |p| p.errors)),
                latency_sum_ns: r
                    .latency_sum_ns
                    .saturating_sub(prev.map_or(0, |p| p.latency_sum_ns)),
                ..r.clone()
            })
        })
        .collect();
    ProcessRow::sort_busiest_first(&mut rows);
    rows.truncate(k);
    rows
}

/// Histogram rows for printing: (low, high, count) of each slot from the first to the
/// last non-empty one.
pub fn hist_rows(h: &[u64; HIST_SLOTS]) -> Vec<(u64, u64, u64)> {
    let (Some(first), Some(last)) = (
        h.iter().position(|&c| c != 0),
        h.iter().rposition(|&c| c != 0),
    ) else {
        return Vec::new();
    };
    (first..=last)
        .map(|s| (hist::slot_lower_bound(s), hist::slot_upper_bound(s), h[s]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_are_named_as_the_reports_name_them() {
        assert_eq!(parse_reader("proc_wchan").as_deref(), Ok("proc_wchan"));
        assert_eq!(
            parse_reader("other:mm_access").as_deref(),
            Ok("other:mm_access")
        );
        assert!(parse_reader("other:").is_err());
        assert!(parse_reader("wchan").is_err());
        let sites = [CallerRow {
            symbol: "mm_access".into(),
            lock_waits: 2,
            ..CallerRow::default()
        }];
        let names: Vec<String> = by_reader(&Counters::ZERO, &sites).into_keys().collect();
        for name in &names {
            assert_eq!(parse_reader(name).as_deref(), Ok(name.as_str()));
        }
        assert_eq!(names.len(), 6, "{names:?}");
    }
    use crate::result::result_slot;

    fn row(tgid: u32, calls: u64) -> ProcessRow {
        ProcessRow {
            tgid,
            comm: format!("p{tgid}"),
            calls,
            errors: 0,
            latency_sum_ns: calls * 10,
        }
    }

    #[test]
    fn report_names_what_happened() {
        let mut c = Counters::ZERO;
        c.calls[Outcome::Unknown as usize][0][0] = 90;
        c.calls[Outcome::Unknown as usize][0][result_slot(-9) as usize] = 10;
        c.latency[Outcome::Unknown as usize][11] = 100;
        c.misc[misc::EVENTS_DROPPED] = 3;
        let r = Report::new(&c, 2.0, Vec::new(), &[], None);
        assert_eq!(r.calls, 100);
        assert_eq!(r.calls_per_s, 50.0);
        assert_eq!(r.errors, 10);
        assert_eq!(r.by_type.get("KCMP_FILE"), Some(&100));
        assert_eq!(r.by_result.get("EBADF"), Some(&10));
        assert_eq!(r.by_result.get("equal"), Some(&90));
        assert_eq!(r.by_outcome.get("unknown"), Some(&100));
        assert_eq!(r.by_outcome_result["unknown"].get("EBADF"), Some(&10));
        assert_eq!(r.by_outcome_result.len(), 1);
        assert_eq!(r.latency_ns.count, 100);
        assert_eq!(r.latency_ns.max, Some(2047));
        assert_eq!(r.events_dropped, 3);
        assert!(r.exact && r.missed_runs.is_empty());
    }

    fn missed(program: &str, affects: &[Affects], runs: u64) -> Missed {
        Missed {
            program: program.into(),
            affects: affects.to_vec(),
            runs,
        }
    }

    #[test]
    fn skipped_runs_bound_what_is_missing() {
        let mut c = Counters::ZERO;
        c.calls[Outcome::Locked as usize][0][0] = 1000;
        c.misc[misc::UNPAIRED_EXITS] = 7;
        c.misc[misc::LOST_EXITS] = 2;
        c.misc[misc::LOCK_WAITS_UNFINISHED] = 1;
        let skipped = [
            missed("kcmp_fentry", &[Affects::CallEntry], 9),
            missed("kcmp_fexit", &[Affects::CallExit], 5),
            missed("lock_fentry", &[Affects::Outcome, Affects::LockWait], 3),
            missed("perm_fentry", &[Affects::Outcome], 4),
            missed("exec_setup_fexit", &[Affects::ExecSections], 0),
        ];
        let r = Report::new(&c, 1.0, Vec::new(), &skipped, None);
        assert_eq!(
            r.incomplete,
            Incomplete {
                // 7 exits without entry, and at most 5 exits skipped (2 of them seen as lost).
                calls: 7 + 5,
                outcomes: 3 + 4,
                lock_wait: 1 + 3,
                exec_write_sections: 0,
                tsync_write_sections: 0,
                reader_calls: 0,
                stacks: 0,
            }
        );
        assert!(!r.exact);
        assert_eq!(r.missed_runs.len(), 4);
        assert_eq!(r.missed_runs["kcmp_fexit"], 5);

        // Lost exits the kernel did not report as skipped runs (a kprobe before 6.7) still
        // count.
        c.misc[misc::LOST_EXITS] = 8;
        assert_eq!(Incomplete::of(&c, &skipped).calls, 7 + 8);
    }

    #[test]
    fn missed_runs_are_per_interval() {
        let hook = |misses| HookCounters {
            program: "kcmp_fexit".into(),
            target: "__x64_sys_kcmp".into(),
            affects: vec![Affects::CallExit],
            misses,
            run_time_ns: 0,
            run_count: 0,
            runs_outside_kcmp: None,
        };
        let d = missed_since(&[hook(12)], &[hook(5)]);
        assert_eq!(d, vec![missed("kcmp_fexit", &[Affects::CallExit], 7)]);
        // A program first seen counts from zero.
        assert_eq!(missed_since(&[hook(3)], &[])[0].runs, 3);
    }

    #[test]
    fn process_deltas_keep_the_busiest() {
        let before = vec![row(1, 10), row(2, 5)];
        let now = vec![row(1, 12), row(2, 50), row(3, 7), row(4, 1)];
        let d = process_deltas(&now, &before, 2);
        assert_eq!(
            d.iter().map(|r| (r.tgid, r.calls)).collect::<Vec<_>>(),
            vec![(2, 45), (3, 7)]
        );
    }

    /// A: 1000 locked calls in 2 s, all in [2048, 4095] ns; B: 900 fast calls in [512, 1023]
    /// and 100 retries in [8192, 16383] in 1 s, 100 of them lock waits in [1024, 2047].
    fn a_and_b() -> (Report, Report) {
        let mut a = Counters::ZERO;
        a.calls[Outcome::Locked as usize][0][0] = 1000;
        a.latency[Outcome::Locked as usize][12] = 1000;
        a.lock_wait[12] = 1000;
        let mut b = Counters::ZERO;
        b.calls[Outcome::Fast as usize][0][0] = 890;
        b.calls[Outcome::Fast as usize][0][result_slot(-9) as usize] = 10;
        b.latency[Outcome::Fast as usize][10] = 900;
        b.calls[Outcome::Retry as usize][0][0] = 100;
        b.latency[Outcome::Retry as usize][14] = 100;
        b.lock_wait[11] = 100;
        (
            Report::new(&a, 2.0, Vec::new(), &[], None),
            Report::new(&b, 1.0, Vec::new(), &[], None),
        )
    }

    fn compared<'a>(rows: &'a [CompareRow], metric: &str) -> &'a CompareRow {
        rows.iter()
            .find(|r| r.metric == metric)
            .unwrap_or_else(|| panic!("no row {metric}"))
    }

    #[test]
    fn comparison_gives_deltas_and_ratios() {
        let (a, b) = a_and_b();
        let rows = compare(&a, &b);
        let check = |metric: &str, unit: &str, va: Option<f64>, vb: Option<f64>, delta, ratio| {
            assert_eq!(
                compared(&rows, metric),
                &CompareRow {
                    metric: metric.into(),
                    unit: unit.into(),
                    a: va,
                    b: vb,
                    delta,
                    ratio,
                },
                "{metric}"
            );
        };
        check(
            "calls",
            "calls",
            Some(1000.0),
            Some(1000.0),
            Some(0.0),
            Some(1.0),
        );
        check(
            "calls/s",
            "calls/s",
            Some(500.0),
            Some(1000.0),
            Some(500.0),
            Some(2.0),
        );
        check("errors", "calls", Some(0.0), Some(10.0), Some(10.0), None);
        check(
            "outcome locked",
            "calls",
            Some(1000.0),
            Some(0.0),
            Some(-1000.0),
            Some(0.0),
        );
        check(
            "outcome locked share",
            "%",
            Some(100.0),
            Some(0.0),
            Some(-100.0),
            Some(0.0),
        );
        check(
            "outcome fast",
            "calls",
            Some(0.0),
            Some(900.0),
            Some(900.0),
            None,
        );
        check(
            "outcome fast share",
            "%",
            Some(0.0),
            Some(90.0),
            Some(90.0),
            None,
        );
        check(
            "outcome retry share",
            "%",
            Some(0.0),
            Some(10.0),
            Some(10.0),
            None,
        );
        // p50 of A: rank 500 of 1000 in [2048, 4095] -> 2048 + 2047 / 2.
        // p50 of B: rank 500, the 500th of 900 in [512, 1023] -> 512 + 511 * 5 / 9.
        check(
            "latency p50",
            "ns",
            Some(3071.0),
            Some(795.0),
            Some(795.0 - 3071.0),
            Some(795.0 / 3071.0),
        );
        // p99 of B: rank 990, the 90th of 100 in [8192, 16383] -> 8192 + 8191 * 0.9.
        check(
            "latency p99",
            "ns",
            Some(4074.0),
            Some(15563.0),
            Some(15563.0 - 4074.0),
            Some(15563.0 / 4074.0),
        );
        check(
            "latency max",
            "ns",
            Some(4095.0),
            Some(16383.0),
            Some(12288.0),
            Some(16383.0 / 4095.0),
        );
        // Per outcome: present on one side only.
        check("latency locked p50", "ns", Some(3071.0), None, None, None);
        check("latency fast max", "ns", None, Some(1023.0), None, None);
        check(
            "lock waits",
            "count",
            Some(1000.0),
            Some(100.0),
            Some(-900.0),
            Some(0.1),
        );
        check(
            "lock wait max",
            "ns",
            Some(4095.0),
            Some(2047.0),
            Some(-2048.0),
            Some(2047.0 / 4095.0),
        );
        check(
            "exec write sections",
            "count",
            Some(0.0),
            Some(0.0),
            Some(0.0),
            None,
        );
        check("exec write section p50", "ns", None, None, None, None);
        // Outcomes in neither session have no rows.
        assert!(rows.iter().all(|r| !r.metric.contains("busy")));
    }

    #[test]
    fn hist_rows_span_non_empty_slots() {
        let mut h = [0u64; HIST_SLOTS];
        h[3] = 1;
        h[5] = 2;
        assert_eq!(hist_rows(&h), vec![(4, 7, 1), (8, 15, 0), (16, 31, 2)]);
    }
}
