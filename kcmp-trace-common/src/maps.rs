//! Names and layouts of the maps and globals both sides use.

use crate::event::{COMM_LEN, EpollSlot};

/// Per-CPU aggregate counters (one `Counters` per CPU, index 0).
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Per-call events.
pub const EVENTS_MAP: &str = "EVENTS";
/// Tgids to trace when the tgid filter is on (value unused).
pub const TGID_FILTER_MAP: &str = "TGID_FILTER";
/// Per-thread state: the call in flight.
pub const THREADS_MAP: &str = "THREADS";
/// Per-process totals, by tgid.
pub const PROCESSES_MAP: &str = "PROCESSES";
/// Per-CPU fill state of the event stage (`StageFill`, index 0).
pub const STAGE_FILL_MAP: &str = "STAGE_FILL";
/// Each CPU's staged events (`[Event; STAGE_EVENTS]`, index 0).
pub const STAGE_MAP: &str = "STAGE";
/// The last exec_update_lock write section of a process, by tgid.
pub const WRITERS_MAP: &str = "WRITERS";
/// Per-thread state of /proc readers' calls and other callers' lock waits (`ThreadState`),
/// apart from kcmp's so that kcmp's probes look up one map as before.
pub const READER_THREADS_MAP: &str = "READER_THREADS";
/// Other callers' counts by caller address (`reader::CallerCounts`).
pub const OTHER_CALLERS_MAP: &str = "OTHER_CALLERS";

/// Per-CPU runs of the hooks on functions every process calls that found no kcmp call in
/// flight, by slot (`outside`): what the tracer costs the rest of the host.
pub const OUTSIDE_RUNS_MAP: &str = "OUTSIDE_RUNS";

/// Slots of `OUTSIDE_RUNS`, one per program that filters for kcmp's threads.
pub mod outside {
    pub const CONTENTION_BEGIN: u32 = 0;
    pub const CONTENTION_END: u32 = 1;
    pub const LOCK_ENTRY: u32 = 2;
    pub const LOCK_RETURN: u32 = 3;
    pub const LOCK_NESTED_ENTRY: u32 = 4;
    pub const LOCK_NESTED_RETURN: u32 = 5;
    pub const PERM_ENTRY: u32 = 6;
    pub const SLOTS: u32 = 7;
}

/// Read-only globals set at load time (the verifier prunes what they switch off).
pub mod globals {
    /// u8: 1 to trace only the tgids in TGID_FILTER.
    pub const FILTER_TGID: &str = "FILTER_TGID";
    /// u8: 1 to trace only callers whose comm equals FILTER_COMM_NAME.
    pub const FILTER_COMM: &str = "FILTER_COMM";
    /// [u8; 16]: the comm to match, NUL-padded (read as two words).
    pub const FILTER_COMM_NAME: &str = "FILTER_COMM_NAME";
    /// u32: where task_struct.comm is, to read comms directly; 0 to call
    /// bpf_get_current_comm().
    pub const COMM_OFFSET: &str = "COMM_OFFSET";
    /// u8: 1 to send per-call events.
    pub const EMIT_EVENTS: &str = "EMIT_EVENTS";
    /// u64: bytes waiting in the event ring past which a submit wakes the reader.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// u8: `classify::Strategy` of the attached plan.
    pub const STRATEGY: &str = "STRATEGY";
    /// u8: 1 when the kernel has the exec_update_seq series.
    pub const SERIES: &str = "SERIES";
    /// u8: 1 to follow the /proc readers and other callers too (`reader`).
    pub const TRACE_READERS: &str = "TRACE_READERS";
    /// u32: where task_struct.signal is (BTF).
    pub const SIGNAL_OFFSET: &str = "SIGNAL_OFFSET";
    /// u32: where signal_struct.exec_update_lock is (BTF).
    pub const EXEC_UPDATE_LOCK_OFFSET: &str = "EXEC_UPDATE_LOCK_OFFSET";
    /// u32: where signal_struct.thread_head is (BTF; 0 where the kernel has none, 6.6 and
    /// earlier): with THREAD_NODE_OFFSET, how another caller's rwsem is recognised as an
    /// exec_update_lock.
    pub const THREAD_HEAD_OFFSET: &str = "THREAD_HEAD_OFFSET";
    /// u32: where task_struct.thread_node is (BTF).
    pub const THREAD_NODE_OFFSET: &str = "THREAD_NODE_OFFSET";
    /// u8: 1 to count waiters' and writers' kernel stacks (`stacks`).
    pub const TRACE_STACKS: &str = "TRACE_STACKS";
}

pub const MAX_TGID_FILTER: u32 = 1024;
/// How often an event reader drains the ring when no wakeup came: the most an event waits
/// at low rates.
pub const EVENT_DRAIN_MS: u64 = 50;

/// Events each CPU stages before it writes them to the ring as one record: one reserve,
/// one wakeup decision and one record header per batch instead of per call.
pub const STAGE_EVENTS: usize = 16;
/// The ring record of a full stage.
pub const STAGE_RECORD_BYTES: u64 = (STAGE_EVENTS * size_of::<crate::event::Event>()) as u64 + 8;

/// A CPU's event stage: how many events it holds, and whether the exit program is changing
/// it. The exit program is the stage's writer (the kernel runs one instance of it per CPU at
/// a time); the flush program, run by userspace on that CPU, may interrupt it there (or run
/// while it is preempted), so it leaves a busy stage alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StageFill {
    pub count: u32,
    pub busy: u32,
}

/// What the flush program returns.
pub mod flush {
    /// The stage was sent (or empty).
    pub const SENT: u32 = 0;
    /// The exit program was changing the stage: try again later.
    pub const BUSY: u32 = 1;
    /// The ring had no room: the staged events were dropped (and counted).
    pub const DROPPED: u32 = 2;
}

/// The backlog (bytes) at which a submit wakes the reader: an eighth of the ring, so a
/// reader woken then has seven eighths left to drain into before anything is dropped.
pub fn wakeup_bytes(ring_bytes: u32) -> u64 {
    u64::from(ring_bytes / 8)
}
/// Threads in flight or recently in kcmp (default size; `--max-threads`). LRU, so threads
/// that come and go evict each other's idle entries, never a total.
pub const DEFAULT_MAX_THREADS: u32 = 16384;
/// Processes with per-process totals (default size; `--max-processes`). Not LRU: a total is
/// never evicted behind the reader's back; userspace removes processes that have exited
/// when the map fills, and calls of a process that finds it full are counted as
/// `misc::UNATTRIBUTED`.
pub const DEFAULT_MAX_PROCESSES: u32 = 16384;
/// Processes whose last exec_update_lock write section is remembered, to name the writer of
/// a retry.
pub const MAX_WRITERS: u32 = 4096;
/// Call sites of other callers counted apart (`OTHER_CALLERS`); beyond them, only in the
/// other callers' slot (`misc::OTHERS_UNPLACED`).
pub const MAX_OTHER_CALLERS: u32 = 1024;

/// Who held a process's exec_update_lock for writing.
pub mod writer {
    /// An exec(), from exec_mmap() to setup_new_exec() (or begin_new_exec()'s failure).
    pub const EXEC: u32 = 0;
    /// Landlock TSYNC: landlock_restrict_sibling_threads() (7.2 and later).
    pub const TSYNC: u32 = 1;
}

/// Miscellaneous counters, by index in `Counters::misc`. Each is written by one program:
/// the kcmp entry program writes `LOST_EXITS`, the exit program all the others (the flush
/// program too writes the two event counts, never while the exit program is writing them:
/// see `StageFill`).
pub mod misc {
    /// Events written to the ring buffer (a staged event counts once its stage is sent).
    pub const EVENTS_SENT: usize = 0;
    /// Events lost because the ring buffer was full.
    pub const EVENTS_DROPPED: usize = 1;
    /// Syscall exits with no recorded entry: the call began before attach, its state was
    /// evicted, or the entry program's run was skipped.
    pub const UNPAIRED_EXITS: usize = 2;
    /// Calls whose trail fit no path (a probe's run was skipped, or an unexpected kernel path).
    pub const UNCLASSIFIED: usize = 3;
    /// Entries that found the thread's previous call still open: its exit was never seen
    /// (the exit program's run was skipped), so that call is not counted.
    pub const LOST_EXITS: usize = 4;
    /// Calls that entered an exec_update_lock wait whose return was never seen: their lock
    /// wait is left out of the histogram.
    pub const LOCK_WAITS_UNFINISHED: usize = 5;
    /// Calls counted everywhere except in a per-process total: the per-process map was full.
    pub const UNATTRIBUTED: usize = 6;
    /// Helper calls and lock waits of other callers counted in their slot but under no call
    /// site: the caller's address was not seen (a trampoline program) or `OTHER_CALLERS` was
    /// full. Written atomically by the helper and lock probes.
    pub const OTHERS_UNPLACED: usize = 7;
    /// Lock waits and write sections left out of the stack counts: `STACK_COUNTS` was full
    /// (`--stacks`). Written atomically by every program that counts a stack.
    pub const STACKS_DROPPED: usize = 8;
    pub const SLOTS: usize = 9;
}

/// One thread's call in flight, kept across its calls (the entry is reused, never deleted:
/// LRU bounds the map) and rewritten at each entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadState {
    pub start_ns: u64,
    pub idx1: u64,
    pub idx2: u64,
    pub raw_type: i64,
    /// When the current exec_update_lock wait began (0: not waiting).
    pub lock_start_ns: u64,
    /// Time spent waiting for exec_update_locks in this call.
    pub lock_wait_ns: u64,
    pub pid1: i32,
    pub pid2: i32,
    pub tgid: u32,
    /// 1 between entry and exit; an exit that finds 0 did not see its entry.
    pub active: u32,
    /// What the probes saw (`classify::Trail` bits).
    pub trail: u32,
    /// A /proc reader's call: its `reader::ProcReader`.
    pub reader: u32,
    /// KCMP_EPOLL_TFD's slot, read at entry.
    pub epoll: EpollSlot,
    /// A /proc reader's call: the address of its task's exec_update_lock, the only rwsem
    /// whose waits count as its lock waits. 0 in kcmp's calls, where every probed lock is one.
    pub lock_addr: u64,
    /// Where the call's first exec_update_lock wait began (`stacks::stack_ref`; `--stacks`).
    pub lock_stack: u64,
    /// When the call's first exec_update_lock wait began (0: none yet), for its event.
    pub lock_first_ns: u64,
    /// Who held the lock as that wait began (`stacks::Holder::pack`; `--stacks`).
    pub lock_holder: u64,
}

impl ThreadState {
    /// A thread's entry as it is created: no call, no wait.
    pub const ZERO: ThreadState = ThreadState {
        start_ns: 0,
        idx1: 0,
        idx2: 0,
        raw_type: 0,
        lock_start_ns: 0,
        lock_wait_ns: 0,
        pid1: 0,
        pid2: 0,
        tgid: 0,
        active: 0,
        trail: 0,
        reader: 0,
        epoll: EpollSlot {
            efd: 0,
            tfd: 0,
            toff: 0,
            read: 0,
        },
        lock_addr: 0,
        lock_stack: 0,
        lock_first_ns: 0,
        lock_holder: 0,
    };
}

/// One process's kcmp totals. Its threads exit kcmp on several CPUs at once, so every field
/// is added to atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessTotals {
    pub calls: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
    /// The comm of the thread that made the process's first traced call.
    pub comm: [u8; COMM_LEN],
}
