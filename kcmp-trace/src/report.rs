//! One interval's numbers, as every sink shows them (table, JSON, HTTP snapshot).

use std::collections::BTreeMap;

use kcmp_trace_common::{
    hist::{self, HIST_SLOTS},
    kcmp::{TYPE_SLOTS, type_slot_name},
    maps::misc,
    outcome::Outcome,
    result::{RESULT_SLOTS, result_slot_name},
    snapshot::Counters,
};
use serde::Serialize;

use crate::loader::ProcessRow;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Quantiles {
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    /// Upper bound of the highest non-empty log2 slot.
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

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Seconds covered by this report.
    pub interval_s: f64,
    pub calls: u64,
    pub calls_per_s: f64,
    pub errors: u64,
    pub by_type: BTreeMap<&'static str, u64>,
    pub by_result: BTreeMap<&'static str, u64>,
    pub by_outcome: BTreeMap<&'static str, u64>,
    /// Outcome, then result: where each kind of result went.
    pub by_outcome_result: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    pub latency_ns: Quantiles,
    pub latency_by_outcome_ns: BTreeMap<&'static str, Quantiles>,
    pub lock_wait_ns: Quantiles,
    pub exec_hold_ns: Quantiles,
    pub events_sent: u64,
    pub events_dropped: u64,
    pub unpaired_exits: u64,
    /// Calls whose probe trail fit no kernel path (counted as `unknown`).
    pub unclassified: u64,
    pub top_processes: Vec<ProcessRow>,
}

impl Report {
    /// The report of `delta` (counters over `interval_s` seconds).
    pub fn new(delta: &Counters, interval_s: f64, top_processes: Vec<ProcessRow>) -> Report {
        let nonzero = |pairs: Vec<(&'static str, u64)>| -> BTreeMap<&'static str, u64> {
            pairs.into_iter().filter(|&(_, n)| n != 0).collect()
        };
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
                (0..TYPE_SLOTS)
                    .map(|t| (type_slot_name(t as u32), delta.calls_by_type(t)))
                    .collect(),
            ),
            by_result: nonzero(
                (0..RESULT_SLOTS)
                    .map(|r| (result_slot_name(r as u32), delta.calls_by_result(r)))
                    .collect(),
            ),
            by_outcome: nonzero(
                Outcome::ALL
                    .iter()
                    .map(|&o| (o.name(), delta.calls_by_outcome(o)))
                    .collect(),
            ),
            by_outcome_result: Outcome::ALL
                .iter()
                .map(|&o| {
                    let by_result = nonzero(
                        (0..RESULT_SLOTS)
                            .map(|r| {
                                let n =
                                    (0..TYPE_SLOTS).map(|t| delta.calls[o as usize][t][r]).sum();
                                (result_slot_name(r as u32), n)
                            })
                            .collect(),
                    );
                    (o.name(), by_result)
                })
                .filter(|(_, m)| !m.is_empty())
                .collect(),
            latency_ns: Quantiles::of(&delta.latency_all()),
            latency_by_outcome_ns: Outcome::ALL
                .iter()
                .filter(|&&o| delta.calls_by_outcome(o) != 0)
                .map(|&o| (o.name(), Quantiles::of(&delta.latency[o as usize])))
                .collect(),
            lock_wait_ns: Quantiles::of(&delta.lock_wait),
            exec_hold_ns: Quantiles::of(&delta.exec_hold),
            events_sent: delta.misc[misc::EVENTS_SENT],
            events_dropped: delta.misc[misc::EVENTS_DROPPED],
            unpaired_exits: delta.misc[misc::UNPAIRED_EXITS],
            unclassified: delta.misc[misc::UNCLASSIFIED],
            top_processes,
        }
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
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tgid.cmp(&b.tgid)));
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
    use kcmp_trace_common::result::result_slot;

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
        let r = Report::new(&c, 2.0, Vec::new());
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

    #[test]
    fn hist_rows_span_non_empty_slots() {
        let mut h = [0u64; HIST_SLOTS];
        h[3] = 1;
        h[5] = 2;
        assert_eq!(hist_rows(&h), vec![(4, 7, 1), (8, 15, 0), (16, 31, 2)]);
    }
}
