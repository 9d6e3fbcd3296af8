//! The shapes of what a tracer reads out of its maps and what the kernel counts for its
//! programs: below everything that reports, records, serves or prints them.

use serde::{Deserialize, Serialize};

use crate::plan::Affects;

/// One process's kcmp calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessRow {
    pub tgid: u32,
    pub comm: String,
    pub calls: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
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
}
