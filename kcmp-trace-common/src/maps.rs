//! Names and layouts of the maps and globals both sides use.

use crate::event::COMM_LEN;

/// Per-CPU aggregate counters (one `Counters` per CPU, index 0).
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Per-call events.
pub const EVENTS_MAP: &str = "EVENTS";
/// Tgids to trace when the tgid filter is on (value unused).
pub const TGID_FILTER_MAP: &str = "TGID_FILTER";
/// Per-process aggregates, keyed by tgid.
pub const PROCS_MAP: &str = "PROCS";

/// Read-only globals set at load time (the verifier prunes what they switch off).
pub mod globals {
    /// u8: 1 to trace only the tgids in TGID_FILTER.
    pub const FILTER_TGID: &str = "FILTER_TGID";
    /// u8: 1 to trace only callers whose comm equals FILTER_COMM_NAME.
    pub const FILTER_COMM: &str = "FILTER_COMM";
    /// [u8; 16]: the comm to match, NUL-padded.
    pub const FILTER_COMM_NAME: &str = "FILTER_COMM_NAME";
    /// u8: 1 to send per-call events.
    pub const EMIT_EVENTS: &str = "EMIT_EVENTS";
    /// u8: 1 to keep per-process aggregates.
    pub const PER_PROCESS: &str = "PER_PROCESS";
    /// u8: `classify::Strategy` of the attached plan.
    pub const STRATEGY: &str = "STRATEGY";
    /// u8: 1 when the kernel has the exec_update_seq series.
    pub const SERIES: &str = "SERIES";
}

pub const MAX_TGID_FILTER: u32 = 1024;
pub const MAX_PROCS: u32 = 4096;
/// Threads in flight or recently in kcmp; LRU so a thread that vanishes cannot leak an entry.
pub const MAX_THREADS: u32 = 16384;
/// Processes whose last exec (write section) is remembered, to name the writer of a retry.
pub const MAX_WRITERS: u32 = 4096;

/// Miscellaneous counters, by index in `Counters::misc`.
pub mod misc {
    /// Events delivered to the ring buffer.
    pub const EVENTS_SENT: usize = 0;
    /// Events lost because the ring buffer was full.
    pub const EVENTS_DROPPED: usize = 1;
    /// Syscall exits with no recorded entry (the call began before attach, or its state was evicted).
    pub const UNPAIRED_EXITS: usize = 2;
    /// Calls not kept per process because the process table was full.
    pub const PROCS_FULL: usize = 3;
    /// Calls whose trail fit no path (a probe missed, or an unexpected kernel path).
    pub const UNCLASSIFIED: usize = 4;
    pub const SLOTS: usize = 8;
    pub const NAMES: [&str; 5] = [
        "events_sent",
        "events_dropped",
        "unpaired_exits",
        "procs_full",
        "unclassified",
    ];
}

/// Per-process aggregates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub calls: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
    pub comm: [u8; COMM_LEN],
}
