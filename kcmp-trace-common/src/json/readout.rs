//! The rows a tracer reads out of its maps, and what the kernel counts for its programs: in
//! every report, snapshot and recording.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plan::Affects;
use crate::reader::{CallerCounts, verdict};

/// One process's kcmp calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
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
        let mut merged: BTreeMap<String, CallerCounts> = BTreeMap::new();
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
