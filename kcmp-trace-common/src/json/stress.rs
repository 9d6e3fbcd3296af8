//! What `kcmp-trace stress --json` prints: the workload's own exact count, which the tests
//! hold the tracer to.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{event::EpollSlotRecord, report::Counts};

/// The key of `proc_reads` that counts opens of /proc/PID/environ (the other keys are the
/// /proc readers' names).
pub const ENVIRON: &str = "environ";

/// The key of `MmReads::by_result` that counts the opens that succeeded (the others are
/// errno names, `EACCES`, `ESRCH`, ...).
pub const OPENED: &str = "ok";

/// What the `--mm-readers` threads did: opens of /proc/PID/environ of the racers (of the
/// stress process itself without racers). Each open that succeeded took the target's
/// exec_update_lock for reading once, in mm_access(); one that failed did not get there
/// (`ENOENT`, `ESRCH`: no such task) or was refused with the lock taken (`EACCES`: the
/// ptrace check).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MmReads {
    /// The threads that opened.
    pub threads: usize,
    /// The file opened, under /proc/PID/.
    pub file: String,
    /// open() calls made, whatever their result.
    pub opens: u64,
    /// The opens by result: `ok` (each went through mm_access() once), or the errno's name.
    pub by_result: Counts,
}

impl MmReads {
    /// The opens that succeeded: each one mm_access() read of exec_update_lock.
    pub fn opened(&self) -> u64 {
        self.by_result.get(OPENED).copied().unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StressReport {
    pub pid: u32,
    pub threads: usize,
    pub exec_racers: usize,
    pub tsync_racers: usize,
    pub racer_pids: Vec<i32>,
    /// Write sections of exec_update_lock the TSYNC racers went through: their successful
    /// landlock_restrict_self() calls, each of which held the lock once.
    pub tsync_sections: u64,
    pub calls: u64,
    /// Threads started for one call each (`--thread-per-call`).
    pub call_threads: u64,
    pub elapsed_s: f64,
    pub calls_per_s: f64,
    /// Calls by kcmp type, named as reports name them.
    pub by_type: Counts,
    /// Calls by result, named as reports name them.
    pub by_result: Counts,
    /// Calls that found both tasks (not ESRCH) and so reached the permission check and comparison.
    pub reached_comparison: u64,
    /// Reads of each /proc reader's file (`proc_stack`, ...) that got past open(): each
    /// ran the reader's function once; and `environ`, whose opens each waited on the
    /// target's exec_update_lock (mm_access()).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proc_reads: Counts,
    /// The `--mm-readers` threads' opens, each an mm_access() of the target's
    /// exec_update_lock (absent without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mm_reads: Option<MmReads>,
    /// The `struct kcmp_epoll_slot` every valid KCMP_EPOLL_TFD call passes (when any does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoll_slot: Option<EpollSlotRecord>,
}
