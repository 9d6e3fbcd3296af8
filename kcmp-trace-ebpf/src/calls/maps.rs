//! The maps and the globals userspace sets, each under the name `kcmp_trace_common` gives
//! it, and which programs write each map (the rules they follow: `cells`, `thread`,
//! `events`).

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use kcmp_trace_common::{
    event::{COMM_LEN, Event},
    maps::{
        self, DEFAULT_MAX_PROCESSES, DEFAULT_MAX_THREADS, MAX_OTHER_CALLERS, MAX_TGID_FILTER,
        MAX_WRITERS, ProcessTotals, STAGE_EVENTS, StageFill, ThreadState, globals, outside,
    },
    named_as,
    reader::CallerCounts,
    snapshot::Counters,
    stacks::{self, MAX_STACK_KEYS, MAX_STACK_TRACES, StackCounts, StackKey},
};

#[unsafe(no_mangle)]
pub static FILTER_TGID: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static FILTER_COMM: Global<u8> = Global::new(0);
/// The comm to match, NUL-padded, as two words (compared whole, as read_comm_into reads).
#[unsafe(no_mangle)]
pub static FILTER_COMM_NAME: Global<[u64; 2]> = Global::new([0; 2]);
/// Where task_struct.comm is (from kernel BTF), to read comms with two loads; 0: through
/// bpf_get_current_comm(), a call that copies and pads.
#[unsafe(no_mangle)]
pub static COMM_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static EMIT_EVENTS: Global<u8> = Global::new(0);
/// Wake the event reader only when the backlog crosses this many bytes; below it the reader
/// finds events on its own timer, so a busy ring costs no wakeup per event.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: Global<u64> = Global::new(0);
/// How the path of a call is observed (`classify::Strategy`).
#[unsafe(no_mangle)]
pub static STRATEGY: Global<u8> = Global::new(0);
/// 1 when the kernel has the exec_update_seq series (a lock taken first means busy).
#[unsafe(no_mangle)]
pub static SERIES: Global<u8> = Global::new(0);
/// 1 to follow the /proc readers and other callers (`kcmp_trace_common::reader`). Off, the
/// helper and lock probes return for non-kcmp threads as they always did.
#[unsafe(no_mangle)]
pub static TRACE_READERS: Global<u8> = Global::new(0);
/// BTF offsets: task_struct.signal, signal_struct.exec_update_lock, signal_struct.thread_head
/// (0: not in this kernel) and task_struct.thread_node.
#[unsafe(no_mangle)]
pub static SIGNAL_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static EXEC_UPDATE_LOCK_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static THREAD_HEAD_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static THREAD_NODE_OFFSET: Global<u32> = Global::new(0);
/// 1 to count kernel stacks (`--stacks`).
#[unsafe(no_mangle)]
pub static TRACE_STACKS: Global<u8> = Global::new(0);

/// Each CPU's counters. A cell one program writes takes a plain add, a cell several write an
/// atomic one (`cells`).
#[map]
pub static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);
/// Runs outside kcmp of the hooks every process meets (`maps::outside`). Each slot is
/// written by one program, whose runs never overlap on a CPU, so a plain add is exact.
#[map]
pub static OUTSIDE_RUNS: PerCpuArray<u64> = PerCpuArray::with_max_entries(outside::SLOTS, 0);
/// Sized by userspace at load time (`--ring-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Each CPU's events not yet in the ring, and how many there are (`StageFill`): written by
/// the kcmp exit program with the stage marked busy, and by the flush program (`events`).
#[map]
pub static STAGE: PerCpuArray<[Event; STAGE_EVENTS]> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static STAGE_FILL: PerCpuArray<StageFill> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static TGID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TGID_FILTER, 0);
/// A thread's call in flight, written only by the thread (`thread`). Entries are reused
/// across calls (no insert/delete per call); LRU bounds the map when threads come and go.
/// Sized by userspace (`--max-threads`).
#[map]
pub static THREADS: LruHashMap<u32, ThreadState> =
    LruHashMap::with_max_entries(DEFAULT_MAX_THREADS, 0);
/// Per-process totals: threads come and go, their process's totals stay. A process's
/// threads add to them from several CPUs: atomically. Sized by userspace
/// (`--max-processes`), which removes exited processes as it fills.
#[map]
pub static PROCESSES: HashMap<u32, ProcessTotals> =
    HashMap::with_max_entries(DEFAULT_MAX_PROCESSES, 0);
/// A /proc reader's call in flight, or another caller's lock wait, per thread: kept apart
/// from THREADS so that kcmp's probes look up only kcmp's calls. Written as THREADS is.
#[map]
pub static READER_THREADS: LruHashMap<u32, ThreadState> =
    LruHashMap::with_max_entries(DEFAULT_MAX_THREADS, 0);
/// Other callers' counts by call site, added to atomically from several programs and CPUs.
#[map]
pub static OTHER_CALLERS: HashMap<u64, CallerCounts> =
    HashMap::with_max_entries(MAX_OTHER_CALLERS, 0);
/// Each process's open or last write section, touched only by the process's own writers
/// (`sections`).
#[map]
pub static WRITERS: LruHashMap<u32, WriteSection> = LruHashMap::with_max_entries(MAX_WRITERS, 0);

/// Each process's closed section before the one in `WRITERS`. A kcmp call's exit that
/// looks up after the writer opened its next section still finds the one it overlapped;
/// a TSYNC attempt whose trylock fails puts it back (a busy kcmp call, whose read hold
/// made the trylock fail, is blamed on it).
#[map]
pub static PREVIOUS_SECTIONS: LruHashMap<u32, WriteSection> =
    LruHashMap::with_max_entries(MAX_WRITERS, 0);

/// The process whose exec_update_lock is at an address (`stacks::SECTION_LOCKS_MAP`):
/// set as a section opens, read as a wait begins, to name the wait's holder.
#[map]
pub static SECTION_LOCKS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(MAX_WRITERS, 0);

/// The stacks `--stacks` took, by id.
#[map]
pub static STACK_TRACES: StackTrace = StackTrace::with_max_entries(MAX_STACK_TRACES, 0);
/// Lock waits and write sections by stack, whose and outcome (`stacks`): per CPU, each
/// cell added to atomically.
#[map]
pub static STACK_COUNTS: PerCpuHashMap<StackKey, StackCounts> =
    PerCpuHashMap::with_max_entries(MAX_STACK_KEYS, 0);

named_as!(FILTER_TGID, globals::FILTER_TGID);
named_as!(FILTER_COMM, globals::FILTER_COMM);
named_as!(FILTER_COMM_NAME, globals::FILTER_COMM_NAME);
named_as!(COMM_OFFSET, globals::COMM_OFFSET);
named_as!(EMIT_EVENTS, globals::EMIT_EVENTS);
named_as!(WAKEUP_BYTES, globals::WAKEUP_BYTES);
named_as!(STRATEGY, globals::STRATEGY);
named_as!(SERIES, globals::SERIES);
named_as!(TRACE_READERS, globals::TRACE_READERS);
named_as!(SIGNAL_OFFSET, globals::SIGNAL_OFFSET);
named_as!(EXEC_UPDATE_LOCK_OFFSET, globals::EXEC_UPDATE_LOCK_OFFSET);
named_as!(THREAD_HEAD_OFFSET, globals::THREAD_HEAD_OFFSET);
named_as!(THREAD_NODE_OFFSET, globals::THREAD_NODE_OFFSET);
named_as!(READER_THREADS, maps::READER_THREADS_MAP);
named_as!(OTHER_CALLERS, maps::OTHER_CALLERS_MAP);
named_as!(COUNTERS, maps::COUNTERS_MAP);
named_as!(OUTSIDE_RUNS, maps::OUTSIDE_RUNS_MAP);
named_as!(EVENTS, maps::EVENTS_MAP);
named_as!(STAGE, maps::STAGE_MAP);
named_as!(STAGE_FILL, maps::STAGE_FILL_MAP);
named_as!(TGID_FILTER, maps::TGID_FILTER_MAP);
named_as!(THREADS, maps::THREADS_MAP);
named_as!(PROCESSES, maps::PROCESSES_MAP);
named_as!(WRITERS, maps::WRITERS_MAP);
named_as!(TRACE_STACKS, globals::TRACE_STACKS);
named_as!(STACK_TRACES, stacks::STACK_TRACES_MAP);
named_as!(STACK_COUNTS, stacks::STACK_COUNTS_MAP);
named_as!(SECTION_LOCKS, stacks::SECTION_LOCKS_MAP);

/// The open or last exec_update_lock write section of a process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WriteSection {
    pub start_ns: u64,
    /// 0 while the section is open.
    pub end_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// The thread that opened it.
    pub tid: u32,
    /// `maps::writer`: exec or TSYNC.
    pub kind: u32,
    /// Where it opened (`stacks::stack_ref`; `--stacks`).
    pub stack: u32,
    pub pad: u32,
    /// The address of the exec_update_lock it holds (`--stacks`; 0 otherwise).
    pub lock: u64,
}
