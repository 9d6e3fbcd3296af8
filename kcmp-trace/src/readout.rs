//! The shapes of what a tracer reads out of its maps and what the kernel counts for its
//! programs: below everything that reports, records, serves or prints them.

use std::borrow::Cow;

use kcmp_trace_common::{
    reader::{CallerCounts, verdict},
    result::errno_name,
};
use serde::{Deserialize, Serialize};

use crate::plan::Affects;

/// The `struct kcmp_epoll_slot` a KCMP_EPOLL_TFD call pointed to, as the caller wrote it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EpollSlotRecord {
    pub efd: u32,
    pub tfd: u32,
    pub toff: u32,
}

/// A kcmp return value by name: `equal`/`less`/`greater`/`unordered`, or the errno's.
pub fn result_name(ret: i64) -> Cow<'static, str> {
    match ret {
        0 => "equal".into(),
        1 => "less".into(),
        2 => "greater".into(),
        3 => "unordered".into(),
        r if r < 0 => errno_name(-r).map_or_else(|| format!("errno{}", -r).into(), Cow::Borrowed),
        r => format!("ret{r}").into(),
    }
}

/// One process's kcmp calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessRow {
    pub tgid: u32,
    pub comm: String,
    pub calls: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
}

impl ProcessRow {
    /// Adds a later row of the same tgid: its totals, and its comm (the latest name).
    pub fn add(&mut self, later: ProcessRow) {
        self.calls += later.calls;
        self.errors += later.errors;
        self.latency_sum_ns += later.latency_sum_ns;
        self.comm = later.comm;
    }

    /// Busiest first; equal ones by tgid.
    pub fn sort_busiest_first(rows: &mut [ProcessRow]) {
        rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tgid.cmp(&b.tgid)));
    }
}

/// Another caller of the exec_update_seq helpers or waiter on an exec_update_lock, by the
/// function it called from (`other:SYMBOL`): what it did since attach, or over an interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallerRow {
    pub symbol: String,
    /// Helper calls by verdict, in `reader::verdict` order.
    pub verdicts: [u64; verdict::SLOTS],
    pub lock_waits: u64,
    pub lock_wait_sum_ns: u64,
}

impl CallerRow {
    pub fn of(symbol: String, c: &CallerCounts) -> CallerRow {
        CallerRow {
            symbol,
            verdicts: c.verdicts,
            lock_waits: c.lock_waits,
            lock_wait_sum_ns: c.lock_wait_sum_ns,
        }
    }

    fn counts(&self) -> CallerCounts {
        CallerCounts {
            verdicts: self.verdicts,
            lock_waits: self.lock_waits,
            lock_wait_sum_ns: self.lock_wait_sum_ns,
        }
    }

    /// Each call site's counts since `earlier` (by symbol), those with none left out.
    pub fn deltas(now: &[CallerRow], earlier: &[CallerRow]) -> Vec<CallerRow> {
        now.iter()
            .filter_map(|row| {
                let before = earlier
                    .iter()
                    .find(|e| e.symbol == row.symbol)
                    .map(CallerRow::counts)
                    .unwrap_or_default();
                let d = row.counts().since(&before);
                (!d.is_zero()).then(|| CallerRow::of(row.symbol.clone(), &d))
            })
            .collect()
    }

    /// Rows of call sites in the same function, summed into one per symbol, sorted.
    pub fn by_symbol(rows: impl IntoIterator<Item = CallerRow>) -> Vec<CallerRow> {
        let mut merged: std::collections::BTreeMap<String, CallerCounts> = Default::default();
        for row in rows {
            merged
                .entry(row.symbol.clone())
                .or_default()
                .add(&row.counts());
        }
        merged
            .into_iter()
            .map(|(symbol, c)| CallerRow::of(symbol, &c))
            .collect()
    }
}

/// What the kernel counted for one attached program since it was loaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookCounters {
    pub program: String,
    pub target: String,
    pub affects: Vec<Affects>,
    /// Runs the kernel skipped: recursion misses, plus the probe's own misses for kprobes.
    pub misses: u64,
    pub run_time_ns: u64,
    pub run_count: u64,
    /// For a hook on a function every process calls: its runs that found no kcmp call,
    /// the work it taxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_outside_kcmp: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_named() {
        assert_eq!(result_name(0), "equal");
        assert_eq!(result_name(3), "unordered");
        assert_eq!(result_name(-9), "EBADF");
        assert_eq!(result_name(-38), "errno38");
        assert_eq!(result_name(7), "ret7");
    }
}
