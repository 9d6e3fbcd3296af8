//! Per-call bookkeeping shared by every attach mode: filter at entry, account at exit.
//!
//! Who may write what, so no update is lost: fentry/fexit programs run with only migration
//! disabled and can be preempted mid-run, but the kernel never starts a second run of the
//! same program on a CPU before the first ends (it skips it and counts a recursion miss).
//! So a per-CPU cell written by a single program is a plain read-modify-write; a cell two
//! programs write (the exec write sections: begin_new_exec()'s failure exit and
//! setup_new_exec()'s exit; unfinished lock waits) is updated atomically, and so are the
//! per-process totals, which a process's threads update from several CPUs. Per-thread state
//! is written only by the thread itself, whose probes run one after another. A CPU's event
//! stage (and the event counts) the exit program writes with the stage marked busy; the
//! flush program, which userspace runs on that CPU and which can interrupt the exit program
//! there or run while it is preempted, leaves a busy stage alone.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::MaybeUninit,
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user,
        generated::{bpf_get_current_comm as bpf_get_current_comm_raw, bpf_get_current_task_btf},
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use aya_log_ebpf::{info, warn};
use kcmp_trace_common::{
    classify::{
        LOCK, PERM_BEFORE_LOCK, SPEC_BEGIN_FAILED, SPEC_BEGIN_OK, SPEC_RETRY, Strategy, classify,
    },
    event::{COMM_LEN, EpollSlot, Event},
    hist::log2_slot,
    kcmp::{KCMP_EPOLL_TFD, type_slot},
    maps::{
        self, DEFAULT_MAX_PROCESSES, DEFAULT_MAX_THREADS, MAX_OTHER_CALLERS, MAX_TGID_FILTER,
        MAX_WRITERS, ProcessTotals, STAGE_EVENTS, STAGE_RECORD_BYTES, StageFill, ThreadState,
        flush, globals, misc, outside, writer,
    },
    named_as,
    outcome::Outcome,
    reader::{CallerCounts, OTHER_SLOT, ProcReader, ReaderCounters, verdict},
    result::{result_slot, result_slot_is_error},
    snapshot::Counters,
};

#[unsafe(no_mangle)]
static FILTER_TGID: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
static FILTER_COMM: Global<u8> = Global::new(0);
/// The comm to match, NUL-padded, as two words (compared whole, as read_comm_into reads).
#[unsafe(no_mangle)]
static FILTER_COMM_NAME: Global<[u64; 2]> = Global::new([0; 2]);
/// Where task_struct.comm is (from kernel BTF), to read comms with two loads; 0: through
/// bpf_get_current_comm(), a call that copies and pads.
#[unsafe(no_mangle)]
static COMM_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static EMIT_EVENTS: Global<u8> = Global::new(0);
/// Wake the event reader only when the backlog crosses this many bytes; below it the reader
/// finds events on its own timer, so a busy ring costs no wakeup per event.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(0);
/// Writes whose backlog lands this far past the mark wake the reader: a few records, so
/// that producers racing on other CPUs cannot all step over it, yet one fill of the ring
/// raises only a few wakeups (each is a self-IPI).
const WAKEUP_WINDOW: u64 = 4 * STAGE_RECORD_BYTES;
/// How the path of a call is observed (`classify::Strategy`).
#[unsafe(no_mangle)]
static STRATEGY: Global<u8> = Global::new(0);
/// 1 when the kernel has the exec_update_seq series (a lock taken first means busy).
#[unsafe(no_mangle)]
static SERIES: Global<u8> = Global::new(0);
/// 1 to follow the /proc readers and other callers (`kcmp_trace_common::reader`). Off, the
/// helper and lock probes return for non-kcmp threads as they always did.
#[unsafe(no_mangle)]
static TRACE_READERS: Global<u8> = Global::new(0);
/// BTF offsets: task_struct.signal, signal_struct.exec_update_lock, signal_struct.thread_head
/// (0: not in this kernel) and task_struct.thread_node.
#[unsafe(no_mangle)]
static SIGNAL_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static EXEC_UPDATE_LOCK_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static THREAD_HEAD_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static THREAD_NODE_OFFSET: Global<u32> = Global::new(0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);
/// Runs outside kcmp of the hooks every process meets (`maps::outside`). Each slot is
/// written by one program, whose runs never overlap on a CPU, so a plain add is exact.
#[map]
static OUTSIDE_RUNS: PerCpuArray<u64> = PerCpuArray::with_max_entries(outside::SLOTS, 0);
/// Sized by userspace at load time (`--ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Each CPU's events not yet in the ring, and how many there are (`StageFill`).
#[map]
static STAGE: PerCpuArray<[Event; STAGE_EVENTS]> = PerCpuArray::with_max_entries(1, 0);
#[map]
static STAGE_FILL: PerCpuArray<StageFill> = PerCpuArray::with_max_entries(1, 0);
#[map]
static TGID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TGID_FILTER, 0);
/// A thread's call in flight. Entries are reused across calls (no insert/delete per call);
/// LRU bounds the map when threads come and go. Sized by userspace (`--max-threads`).
#[map]
static THREADS: LruHashMap<u32, ThreadState> = LruHashMap::with_max_entries(DEFAULT_MAX_THREADS, 0);
/// Per-process totals: threads come and go, their process's totals stay. Sized by userspace
/// (`--max-processes`), which removes exited processes as it fills.
#[map]
static PROCESSES: HashMap<u32, ProcessTotals> = HashMap::with_max_entries(DEFAULT_MAX_PROCESSES, 0);
/// A /proc reader's call in flight, or another caller's lock wait, per thread: kept apart
/// from THREADS so that kcmp's probes look up only kcmp's calls.
#[map]
static READER_THREADS: LruHashMap<u32, ThreadState> =
    LruHashMap::with_max_entries(DEFAULT_MAX_THREADS, 0);
#[map]
static OTHER_CALLERS: HashMap<u64, CallerCounts> = HashMap::with_max_entries(MAX_OTHER_CALLERS, 0);

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
named_as!(EVENTS, maps::EVENTS_MAP);
named_as!(STAGE, maps::STAGE_MAP);
named_as!(STAGE_FILL, maps::STAGE_FILL_MAP);
named_as!(TGID_FILTER, maps::TGID_FILTER_MAP);
named_as!(THREADS, maps::THREADS_MAP);
named_as!(PROCESSES, maps::PROCESSES_MAP);
named_as!(WRITERS, maps::WRITERS_MAP);

pub struct KcmpArgs {
    pub pid1: i32,
    pub pid2: i32,
    pub raw_type: i64,
    pub idx1: u64,
    pub idx2: u64,
}

/// The open or last exec_update_lock write section of a process.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WriteSection {
    start_ns: u64,
    /// 0 while the section is open.
    end_ns: u64,
    comm: [u8; COMM_LEN],
    /// The thread that opened it.
    tid: u32,
    /// `maps::writer`: exec or TSYNC.
    kind: u32,
}

#[map]
static WRITERS: LruHashMap<u32, WriteSection> = LruHashMap::with_max_entries(MAX_WRITERS, 0);

/// CLOCK_MONOTONIC in ns.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and only reads the clock.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn traced(tgid: u32) -> bool {
    // SAFETY: a read-only lookup whose value is not kept.
    if FILTER_TGID.load() != 0 && unsafe { TGID_FILTER.get(tgid) }.is_none() {
        return false;
    }
    if FILTER_COMM.load() != 0 {
        let mut comm = MaybeUninit::<[u64; 2]>::uninit();
        // SAFETY: 16 writable, 8-byte aligned bytes; read_comm_into writes all of them.
        let comm = unsafe {
            read_comm_into(comm.as_mut_ptr().cast());
            comm.assume_init()
        };
        return comm == FILTER_COMM_NAME.load();
    }
    true
}

/// `struct kcmp_epoll_slot` as the caller laid it out.
#[repr(C)]
#[derive(Clone, Copy)]
struct UserEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// KCMP_EPOLL_TFD's idx2 points to a slot in the caller's memory: read it while the call
/// is entering (strace shows it the same way). Other types carry no slot.
#[inline(always)]
fn epoll_slot(args: &KcmpArgs) -> EpollSlot {
    if args.raw_type != KCMP_EPOLL_TFD as i64 {
        return EpollSlot::default();
    }
    // SAFETY: bpf_probe_read_user checks the address; an unreadable slot reads as absent.
    match unsafe { bpf_probe_read_user(args.idx2 as *const UserEpollSlot) } {
        Ok(slot) => EpollSlot {
            efd: slot.efd,
            tfd: slot.tfd,
            toff: slot.toff,
            read: 1,
        },
        Err(_) => EpollSlot::default(),
    }
}

#[inline(always)]
pub fn on_enter<C: EbpfContext>(ctx: &C, args: &KcmpArgs) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !traced(tgid) {
        return;
    }
    let start_ns = now_ns();
    let epoll = epoll_slot(args);
    match thread_state(tid) {
        Some(call) => {
            if call.active != 0 {
                // The previous call's exit was never seen: it goes uncounted, and says so.
                if let Some(counters) = cpu_counters() {
                    // SAFETY: this CPU's counters; this program is the cell's only writer.
                    bump(unsafe { &mut (*counters).misc }, misc::LOST_EXITS);
                }
            }
            call.start_ns = start_ns;
            call.idx1 = args.idx1;
            call.idx2 = args.idx2;
            call.raw_type = args.raw_type;
            call.pid1 = args.pid1;
            call.pid2 = args.pid2;
            call.epoll = epoll;
            // SAFETY: fields of this thread's own entry.
            unsafe {
                put(&raw mut call.lock_start_ns, 0);
                put(&raw mut call.lock_wait_ns, 0);
                put(&raw mut call.trail, 0);
                put(&raw mut call.lock_addr, 0);
            }
            call.active = 1;
        }
        None => {
            info!(
                ctx,
                "tid {} of tgid {} makes its first traced kcmp call", tid, tgid
            );
            let fresh = ThreadState {
                start_ns,
                idx1: args.idx1,
                idx2: args.idx2,
                raw_type: args.raw_type,
                lock_start_ns: 0,
                lock_wait_ns: 0,
                pid1: args.pid1,
                pid2: args.pid2,
                tgid,
                active: 1,
                trail: 0,
                reader: 0,
                epoll,
                lock_addr: 0,
            };
            new_thread_state(tid, fresh);
        }
    }
}

/// A thread's entry in THREADS: its call in flight, or the last one.
#[inline(always)]
pub fn thread_state(tid: u32) -> Option<&'static mut ThreadState> {
    // SAFETY: only this thread writes its own entry.
    THREADS.get_ptr_mut(tid).map(|call| unsafe { &mut *call })
}

/// Creates a thread's entry, at its first traced call (or after LRU evicted it).
#[inline(always)]
pub fn new_thread_state(tid: u32, fresh: ThreadState) {
    let _ = THREADS.insert(tid, fresh, 0);
}

/// This CPU's counter block.
#[inline(always)]
pub fn cpu_counters() -> Option<*mut Counters> {
    COUNTERS.get_ptr_mut(0)
}

/// The calling thread's call in flight, if it is inside a traced kcmp. Hooks on functions
/// every process calls ask this first and return at once when it is None.
#[inline(always)]
fn in_kcmp() -> Option<&'static mut ThreadState> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let call = thread_state(tid)?;
    (call.active != 0).then_some(call)
}

/// The calling thread's entry in READER_THREADS, if readers are traced.
#[inline(always)]
fn reader_thread() -> Option<&'static mut ThreadState> {
    if TRACE_READERS.load() == 0 {
        return None;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: only this thread writes its own entry.
    READER_THREADS.get_ptr_mut(tid).map(|t| unsafe { &mut *t })
}

/// The calling thread's kcmp or /proc reader call in flight.
#[inline(always)]
fn in_call() -> Option<&'static mut ThreadState> {
    in_kcmp().or_else(|| reader_thread().filter(|t| t.active != 0))
}

/// A run of the program of `slot` found no kcmp call: counted as work it taxed.
#[inline(always)]
fn ran_outside(slot: u32) {
    if let Some(n) = OUTSIDE_RUNS.get_ptr_mut(slot) {
        // SAFETY: this CPU's cell of this program's slot (see OUTSIDE_RUNS).
        unsafe { *n += 1 };
    }
}

/// The calling thread's kcmp call in flight; a run that finds none counts in `slot`.
#[inline(always)]
fn in_kcmp_or_outside(slot: u32) -> Option<&'static mut ThreadState> {
    let call = in_kcmp();
    if call.is_none() {
        ran_outside(slot);
    }
    call
}

/// exec_update_speculate_try_begin() returned: a call's trail, or another caller's count.
#[inline(always)]
pub fn on_spec_begin(ok: bool, caller: impl FnOnce() -> u64) {
    if let Some(call) = in_call() {
        call.trail |= if ok { SPEC_BEGIN_OK } else { SPEC_BEGIN_FAILED };
    } else if TRACE_READERS.load() != 0 && traced((bpf_get_current_pid_tgid() >> 32) as u32) {
        let v = if ok {
            verdict::BEGIN_OK
        } else {
            verdict::BEGIN_FAILED
        };
        count_other(
            caller(),
            |c| c.verdicts.get_mut(v),
            |c| c.verdicts.get_mut(v),
            1,
        );
    }
}

/// exec_update_speculate_retry() returned.
#[inline(always)]
pub fn on_spec_retry(retry: bool, caller: impl FnOnce() -> u64) {
    if let Some(call) = in_call() {
        if retry {
            call.trail |= SPEC_RETRY;
        }
    } else if TRACE_READERS.load() != 0 && traced((bpf_get_current_pid_tgid() >> 32) as u32) {
        let v = if retry {
            verdict::RETRY
        } else {
            verdict::VALID
        };
        count_other(
            caller(),
            |c| c.verdicts.get_mut(v),
            |c| c.verdicts.get_mut(v),
            1,
        );
    }
}

/// ptrace_may_access() was called.
#[inline(always)]
pub fn on_perm_check() {
    let call = in_kcmp_or_outside(outside::PERM_ENTRY)
        .or_else(|| reader_thread().filter(|t| t.active != 0));
    if let Some(call) = call
        && call.trail & LOCK == 0
    {
        call.trail |= PERM_BEFORE_LOCK;
    }
}

/// down_read_killable(sem) was called. Inside kcmp every such lock is an exec_update_lock;
/// inside a /proc reader only its task's counts; for any other caller, an exec_update_lock
/// recognised by where it sits (`is_exec_update_lock`) starts a wait counted by caller.
#[inline(always)]
pub fn on_lock_enter(slot: u32, sem: impl FnOnce() -> u64) {
    if let Some(call) = in_kcmp_or_outside(slot) {
        lock_wait_begins(call);
        return;
    }
    if TRACE_READERS.load() == 0 {
        return;
    }
    let sem = sem();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: only this thread writes its own entry.
    match READER_THREADS.get_ptr_mut(tid).map(|t| unsafe { &mut *t }) {
        Some(call) if call.active != 0 => {
            if call.lock_addr == sem {
                lock_wait_begins(call);
            }
        }
        thread => {
            if !traced((pid_tgid >> 32) as u32) || !is_exec_update_lock(sem) {
                return;
            }
            match thread {
                Some(t) => t.lock_start_ns = now_ns(),
                None => {
                    let fresh = ThreadState {
                        lock_start_ns: now_ns(),
                        ..ThreadState::default()
                    };
                    let _ = READER_THREADS.insert(tid, fresh, 0);
                }
            }
        }
    }
}

/// lock:contention_begin's flags for a blocking rwsem read: LCB_F_READ, with LCB_F_RT on
/// PREEMPT_RT (include/trace/events/lock.h).
const LCB_F_READ: u32 = 1 << 1;
const LCB_F_RT: u32 = 1 << 3;

/// A contended lock's wait began (lock:contention_begin). Inside kcmp the only rwsem taken
/// for reading is an exec_update_lock (kcmp_lock()), so a read wait there is one, timed
/// until that lock's contention_end. Any other contention returns after the flags test,
/// or after one lookup.
#[inline(always)]
pub fn on_contention_begin(lock: u64, flags: u32) {
    if flags & !LCB_F_RT != LCB_F_READ {
        ran_outside(outside::CONTENTION_BEGIN);
        return;
    }
    if let Some(call) = in_kcmp_or_outside(outside::CONTENTION_BEGIN) {
        call.lock_addr = lock;
        lock_wait_begins(call);
    }
}

/// A contended lock's wait ended (lock:contention_end): kcmp's, if it is the lock its wait
/// began on (the rwsem's own wait_lock may contend in between).
#[inline(always)]
pub fn on_contention_end(lock: u64) {
    if let Some(call) = in_kcmp_or_outside(outside::CONTENTION_END)
        && lock != 0
        && call.lock_addr == lock
    {
        lock_wait_ends(call);
        call.lock_addr = 0;
    }
}

/// A call's exec_update_lock wait begins.
#[inline(always)]
fn lock_wait_begins(call: &mut ThreadState) {
    call.trail |= LOCK;
    if call.lock_start_ns != 0
        && let Some(counters) = cpu_counters()
    {
        // The previous lock's return was never seen (a kretprobe out of instances).
        // SAFETY: this CPU's counters; every writer of this cell adds atomically.
        unfinished_lock_wait(unsafe { &mut (*counters).misc });
    }
    call.lock_start_ns = now_ns();
}

/// Whether `sem` is some task's exec_update_lock: the signal_struct it would sit in lists a
/// thread whose task_struct points back to that signal_struct (BTF offsets, probe reads).
#[inline(always)]
fn is_exec_update_lock(sem: u64) -> bool {
    let head = THREAD_HEAD_OFFSET.load();
    if head == 0 {
        return false;
    }
    let signal = sem.wrapping_sub(u64::from(EXEC_UPDATE_LOCK_OFFSET.load()));
    // SAFETY: bpf_probe_read_kernel checks the addresses; a failed read says no.
    unsafe {
        let Ok(first) = bpf_probe_read_kernel((signal + u64::from(head)) as *const u64) else {
            return false;
        };
        let task = first.wrapping_sub(u64::from(THREAD_NODE_OFFSET.load()));
        bpf_probe_read_kernel((task + u64::from(SIGNAL_OFFSET.load())) as *const u64) == Ok(signal)
    }
}

/// A lock wait whose return was never seen: its length is unknown. The lock and the exit
/// programs both count these, hence the atomic add.
#[inline(always)]
fn unfinished_lock_wait(misc: &mut [u64; misc::SLOTS]) {
    if let Some(n) = misc.get_mut(misc::LOCK_WAITS_UNFINISHED) {
        add_shared(n, 1);
    }
}

/// down_read_killable() returned to `caller`. Marks kcmp's lock too, in case its entry was
/// skipped; another caller's wait ends and is counted under its call site.
#[inline(always)]
pub fn on_lock_exit(slot: u32, caller: impl FnOnce() -> u64) {
    if let Some(call) = in_kcmp_or_outside(slot) {
        call.trail |= LOCK;
        lock_wait_ends(call);
        return;
    }
    let Some(thread) = reader_thread() else {
        return;
    };
    if thread.lock_start_ns == 0 {
        return;
    }
    if thread.active != 0 {
        lock_wait_ends(thread);
        return;
    }
    let wait = now_ns().wrapping_sub(thread.lock_start_ns);
    thread.lock_start_ns = 0;
    let slot = log2_slot(wait) as usize;
    let caller = caller();
    count_other(
        caller,
        |c| c.lock_wait.get_mut(slot),
        |c| Some(&mut c.lock_waits),
        1,
    );
    count_other(
        caller,
        |c| Some(&mut c.lock_wait_sum_ns),
        |c| Some(&mut c.lock_wait_sum_ns),
        wait,
    );
}

/// A call's exec_update_lock wait ends.
#[inline(always)]
fn lock_wait_ends(call: &mut ThreadState) {
    if call.lock_start_ns != 0 {
        call.lock_wait_ns += now_ns().wrapping_sub(call.lock_start_ns);
        call.lock_start_ns = 0;
    }
}

/// Adds `n` to another caller's cell: in the other callers' slot (`in_slot`) and under its
/// call site (`at_site`), or as unplaced when its address is unknown or the map is full.
/// Several programs on several CPUs add to these: atomics.
#[inline(always)]
fn count_other(
    caller: u64,
    in_slot: impl FnOnce(&mut ReaderCounters) -> Option<&mut u64>,
    at_site: impl FnOnce(&mut CallerCounts) -> Option<&mut u64>,
    n: u64,
) {
    let Some(counters) = cpu_counters() else {
        return;
    };
    // SAFETY: this CPU's counters; every writer of these cells adds atomically.
    let counters = unsafe { &mut *counters };
    if let Some(slot) = counters.readers.get_mut(OTHER_SLOT)
        && let Some(cell) = in_slot(slot)
    {
        add_shared(cell, n);
    }
    match other_caller(caller).and_then(at_site) {
        Some(cell) => add_shared(cell, n),
        None => {
            if let Some(cell) = counters.misc.get_mut(misc::OTHERS_UNPLACED) {
                add_shared(cell, n);
            }
        }
    }
}

/// A call site's counts, created at its first count; None for an unknown address or a full
/// map.
#[inline(always)]
fn other_caller(caller: u64) -> Option<&'static mut CallerCounts> {
    if caller == 0 {
        return None;
    }
    if OTHER_CALLERS.get_ptr_mut(caller).is_none() {
        let _ = OTHER_CALLERS.insert(caller, CallerCounts::default(), BPF_NOEXIST as u64);
    }
    // SAFETY: a live map value; every writer adds atomically.
    OTHER_CALLERS
        .get_ptr_mut(caller)
        .map(|c| unsafe { &mut *c })
}

/// A /proc reader's function was entered for `task`: its call opens (unless the caller is
/// filtered out), waiting only on `task`'s exec_update_lock.
#[inline(always)]
pub fn on_reader_enter(reader: ProcReader, task: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !traced(tgid) {
        return;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; 0 (no lock matches) if unreadable.
    let signal =
        unsafe { bpf_probe_read_kernel((task + u64::from(SIGNAL_OFFSET.load())) as *const u64) }
            .unwrap_or(0);
    let lock_addr = signal + u64::from(EXEC_UPDATE_LOCK_OFFSET.load());
    // SAFETY: only this thread writes its own entry.
    match READER_THREADS.get_ptr_mut(tid).map(|t| unsafe { &mut *t }) {
        Some(call) => {
            if call.active != 0 {
                // The previous call's return was never seen: it goes uncounted, and says so.
                reader_slot(reader, |r| &mut r.lost_exits);
            }
            call.start_ns = now_ns();
            call.lock_start_ns = 0;
            call.lock_wait_ns = 0;
            call.trail = 0;
            call.reader = reader as u32;
            call.lock_addr = lock_addr;
            call.tgid = tgid;
            call.active = 1;
        }
        None => {
            let fresh = ThreadState {
                start_ns: now_ns(),
                tgid,
                active: 1,
                reader: reader as u32,
                lock_addr,
                ..ThreadState::default()
            };
            let _ = READER_THREADS.insert(tid, fresh, 0);
        }
    }
}

/// A /proc reader's function returned `ret`: its call is classified as kcmp's are, and
/// counted with its lock wait. A call that never reached its exec_update_lock section
/// (refused before it, as /proc/PID/stack refuses non-admins) left no trail and is not a
/// reader call.
#[inline(always)]
pub fn on_reader_exit(reader: ProcReader, ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: only this thread writes its own entry.
    let call = match READER_THREADS.get_ptr_mut(tid).map(|t| unsafe { &mut *t }) {
        Some(call) if call.active != 0 && call.reader == reader as u32 => call,
        _ => {
            if traced((pid_tgid >> 32) as u32) {
                reader_slot(reader, |r| &mut r.unpaired_exits);
            }
            return;
        }
    };
    call.active = 0;
    if call.trail == 0 {
        return;
    }
    // A reader can return before its lock (/proc/PID/stack refuses non-admins first), so
    // on a stock kernel its lock probes, not its result, tell whether it locked.
    let strategy = match Strategy::from_u8(STRATEGY.load()) {
        Strategy::Stock => Strategy::Infer,
        strategy => strategy,
    };
    let outcome = classify(strategy, SERIES.load() != 0, call.trail, ret);
    let Some(counters) = cpu_counters() else {
        return;
    };
    // SAFETY: this CPU's counters. This reader's cells have this program as their only
    // writer; the unfinished-wait count is shared and added atomically.
    let counters = unsafe { &mut *counters };
    if call.lock_start_ns != 0 {
        unfinished_lock_wait(&mut counters.misc);
    }
    let Some(slot) = counters.readers.get_mut(reader as usize) else {
        return;
    };
    if let Some(n) = slot.calls.get_mut(outcome as usize) {
        *n += 1;
    }
    if call.trail & LOCK != 0 && call.lock_start_ns == 0 {
        slot.lock_wait_sum_ns += call.lock_wait_ns;
        if let Some(n) = slot
            .lock_wait
            .get_mut(log2_slot(call.lock_wait_ns) as usize)
        {
            *n += 1;
        }
    }
}

/// Adds one to a reader's cell that only one of its programs writes.
#[inline(always)]
fn reader_slot(reader: ProcReader, cell: impl FnOnce(&mut ReaderCounters) -> &mut u64) {
    if let Some(counters) = cpu_counters() {
        // SAFETY: this CPU's counters; the cell has one writer (see ReaderCounters).
        let counters = unsafe { &mut *counters };
        if let Some(slot) = counters.readers.get_mut(reader as usize) {
            *cell(slot) += 1;
        }
    }
}

/// begin_new_exec() was entered: the exec_update_lock write section is about to open.
#[inline(always)]
pub fn on_exec_begin() {
    open_section(writer::EXEC);
}

/// The exec's write section closed: setup_new_exec() returned, or begin_new_exec() failed.
/// (Not matched by thread: an exec from a non-leader thread takes the leader's pid.)
#[inline(always)]
pub fn on_exec_end() {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(section) = open_section_of(tgid)
        && section.kind == writer::EXEC
    {
        close_section(section);
    }
}

/// landlock_restrict_sibling_threads() was entered: it takes exec_update_lock for writing
/// with a trylock. Another writer's open section of the process is left alone (the trylock
/// then fails).
#[inline(always)]
pub fn on_tsync_begin() {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(section) = open_section_of((pid_tgid >> 32) as u32)
        && section.tid != pid_tgid as u32
    {
        return;
    }
    open_section(writer::TSYNC);
}

/// landlock_restrict_sibling_threads() returned `ret`: its section closed, or never opened
/// (the trylock failed and the syscall restarts: -ERESTARTNOINTR).
#[inline(always)]
pub fn on_tsync_end(ret: i32) {
    const ERESTARTNOINTR: i32 = 513;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(section) = open_section_of(tgid) else {
        return;
    };
    if section.kind != writer::TSYNC || section.tid != pid_tgid as u32 {
        return;
    }
    if ret == -ERESTARTNOINTR {
        // Never held: no writer for a retried kcmp to be blamed on.
        let _ = WRITERS.remove(tgid);
    } else {
        close_section(section);
    }
}

/// Opens the calling process's write section of `kind`.
#[inline(always)]
fn open_section(kind: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let section = WriteSection {
        start_ns: now_ns(),
        end_ns: 0,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        tid: pid_tgid as u32,
        kind,
    };
    let _ = WRITERS.insert((pid_tgid >> 32) as u32, section, 0);
}

/// The process's write section, while it is open.
#[inline(always)]
fn open_section_of(tgid: u32) -> Option<&'static mut WriteSection> {
    // SAFETY: a live map value; only the process's own writers touch it.
    let section = unsafe { &mut *WRITERS.get_ptr_mut(tgid)? };
    (section.end_ns == 0).then_some(section)
}

/// Closes an open write section and counts how long it was held, by kind.
#[inline(always)]
fn close_section(section: &mut WriteSection) {
    let now = now_ns();
    section.end_ns = now;
    if let Some(counters) = cpu_counters() {
        // SAFETY: this CPU's counters; several programs write these cells, hence the atomics.
        let counters = unsafe { &mut *counters };
        let held = now.wrapping_sub(section.start_ns);
        let (sum, hist) = if section.kind == writer::TSYNC {
            (&mut counters.tsync_hold_sum_ns, &mut counters.tsync_hold)
        } else {
            (&mut counters.exec_hold_sum_ns, &mut counters.exec_hold)
        };
        add_shared(sum, held);
        if let Some(n) = hist.get_mut(log2_slot(held) as usize) {
            add_shared(n, 1);
        }
    }
}

/// Adds to a per-CPU cell that more than one program writes: one of them may have been
/// preempted between its read and its write. (The BPF target has no compare-and-swap, so
/// core's atomic types lack fetch_add; the intrinsic compiles to BPF's atomic add.)
#[inline(always)]
fn add_shared(cell: &mut u64, n: u64) {
    // SAFETY: a valid, aligned u64 in a map value; all its writers use atomics.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(cell, n) };
}

/// The process (pid2 first, then pid1) whose exec overlapped the call, if any, and its
/// write section.
#[inline(always)]
fn writer_of(call: &ThreadState, now: u64) -> Option<(u32, &'static WriteSection)> {
    for pid in [call.pid2, call.pid1] {
        let tgid = pid as u32;
        // SAFETY: read-only use of a map value.
        if let Some(s) = unsafe { WRITERS.get(tgid) }
            && s.start_ns <= now
            && (s.end_ns == 0 || s.end_ns >= call.start_ns)
        {
            return Some((tgid, s));
        }
    }
    None
}

/// A store LLVM keeps as one instruction. Adjacent plain stores of zero it merges into a
/// memset, and a memset, like a copy of a byte array, becomes a call to a byte-at-a-time
/// loop in BPF: on the per-call path that cost more than the work around it.
///
/// # Safety
/// `dst` must be valid for writes and aligned.
#[inline(always)]
unsafe fn put<T>(dst: *mut T, value: T) {
    // SAFETY: as the caller promised.
    unsafe { core::ptr::write_volatile(dst, value) }
}

// Comms are copied and cleared as two aligned words.
const _: () = assert!(
    core::mem::offset_of!(Event, comm) % 8 == 0
        && core::mem::offset_of!(Event, writer_comm) % 8 == 0
        && core::mem::offset_of!(WriteSection, comm) % 8 == 0
);

/// A comm as two words, for copying it whole (comms sit at 8-byte offsets in our records).
#[inline(always)]
fn comm_words(comm: &[u8; COMM_LEN]) -> [u64; 2] {
    let words = comm.as_ptr().cast::<u64>();
    // SAFETY: 16 readable bytes at an 8-byte aligned offset of a map value.
    unsafe { [words.read(), words.add(1).read()] }
}

/// How a call ended, for its event.
pub struct CallDone {
    pub tgid: u32,
    pub tid: u32,
    pub now: u64,
    pub latency: u64,
    pub ret: i64,
    pub outcome: Outcome,
}

/// Writes a finished call's event in place, one store per field, all but the comm (see
/// [`read_comm_into`]).
///
/// # Safety
/// `e` must point to a reserved record.
#[inline(always)]
pub unsafe fn write_call(
    e: *mut Event,
    call: &ThreadState,
    done: &CallDone,
    writer: Option<(u32, &WriteSection)>,
) {
    // SAFETY: fields of the record the caller reserved.
    unsafe {
        put(&raw mut (*e).ts_ns, done.now);
        put(&raw mut (*e).latency_ns, done.latency);
        put(&raw mut (*e).lock_wait_ns, call.lock_wait_ns);
        put(&raw mut (*e).idx1, call.idx1);
        put(&raw mut (*e).idx2, call.idx2);
        put(&raw mut (*e).ret, done.ret);
        put(&raw mut (*e).raw_type, call.raw_type);
        put(&raw mut (*e).tgid, done.tgid);
        put(&raw mut (*e).tid, done.tid);
        put(&raw mut (*e).pid1, call.pid1);
        put(&raw mut (*e).pid2, call.pid2);
        put(&raw mut (*e).outcome, done.outcome as u32);
        // Field by field: a copy of the whole struct would be a call to a byte loop.
        put(&raw mut (*e).epoll.efd, call.epoll.efd);
        put(&raw mut (*e).epoll.tfd, call.epoll.tfd);
        put(&raw mut (*e).epoll.toff, call.epoll.toff);
        put(&raw mut (*e).epoll.read, call.epoll.read);
        match writer {
            Some((writer_tgid, section)) => {
                put(&raw mut (*e).writer_tgid, writer_tgid);
                put_comm(&raw mut (*e).writer_comm, comm_words(&section.comm));
            }
            None => {
                put(&raw mut (*e).writer_tgid, 0);
                put_comm(&raw mut (*e).writer_comm, [0; 2]);
            }
        }
    }
}

/// Reads the caller's comm straight into `dst`, not through a zeroed copy on the stack.
///
/// # Safety
/// `dst` must be valid for writes and 8-byte aligned.
#[inline(always)]
pub unsafe fn read_comm_into(dst: *mut [u8; COMM_LEN]) {
    let offset = COMM_OFFSET.load();
    if offset != 0 {
        // SAFETY: the verifier checks these loads against task_struct's BTF (the offset is
        // a constant to it) and guards them as probe reads; `dst` as the caller promised.
        unsafe {
            let task = bpf_get_current_task_btf() as *const u8;
            let comm = task.add(offset as usize).cast::<u64>();
            put_comm(dst, [comm.read_volatile(), comm.add(1).read_volatile()]);
        }
        return;
    }
    // SAFETY: as the caller promised; the helper writes at most COMM_LEN bytes.
    unsafe {
        if bpf_get_current_comm_raw(dst.cast(), COMM_LEN as u32) != 0 {
            put_comm(dst, [0; 2]);
        }
    }
}

/// # Safety
/// `dst` must be valid for writes and 8-byte aligned.
#[inline(always)]
unsafe fn put_comm(dst: *mut [u8; COMM_LEN], words: [u64; 2]) {
    let dst = dst.cast::<u64>();
    // SAFETY: as the caller promised.
    unsafe {
        put(dst, words[0]);
        put(dst.add(1), words[1]);
    }
}

#[inline(always)]
pub fn on_exit<C: EbpfContext>(ctx: &C, ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let call = match thread_state(tid) {
        Some(call) if call.active != 0 => call,
        _ => {
            // Filtered-out callers have no entry either; only a traced one is unpaired.
            if traced(tgid)
                && let Some(counters) = cpu_counters()
            {
                // SAFETY: this CPU's counters; this program is the cell's only writer.
                bump(unsafe { &mut (*counters).misc }, misc::UNPAIRED_EXITS);
            }
            return;
        }
    };
    let Some(counters) = cpu_counters() else {
        return;
    };
    // SAFETY: this CPU's counters (migration is disabled). This program is the only writer
    // of the cells it touches, and no second run of it starts on this CPU before this one
    // ends, even if this one is preempted.
    let counters = unsafe { &mut *counters };
    call.active = 0;
    let now = now_ns();
    let outcome = classify(
        Strategy::from_u8(STRATEGY.load()),
        SERIES.load() != 0,
        call.trail,
        ret,
    );
    if outcome == Outcome::Unknown && STRATEGY.load() != Strategy::Boundary as u8 {
        bump(&mut counters.misc, misc::UNCLASSIFIED);
        warn!(
            ctx,
            "unclassified kcmp call: trail {:x}, ret {}", call.trail, ret
        );
    }
    // A call that took its locks counts one wait: as long as its lock probes timed, or
    // its contentions lasted (none: an uncontended lock, a wait of 0).
    if call.lock_start_ns != 0 {
        unfinished_lock_wait(&mut counters.misc);
    } else if call.trail & LOCK != 0 || outcome.took_locks() {
        counters.lock_wait_sum_ns += call.lock_wait_ns;
        if let Some(n) = counters
            .lock_wait
            .get_mut(log2_slot(call.lock_wait_ns) as usize)
        {
            *n += 1;
        }
    }
    let latency = now.wrapping_sub(call.start_ns);
    let result_slot = result_slot(ret);
    count_call(counters, outcome, call.raw_type, result_slot, latency);
    if !count_for_process(tgid, result_slot_is_error(result_slot), latency) {
        bump(&mut counters.misc, misc::UNATTRIBUTED);
    }

    if EMIT_EVENTS.load() != 0 {
        let writer = match outcome {
            Outcome::Retry | Outcome::Busy => writer_of(call, now),
            _ => None,
        };
        let done = CallDone {
            tgid,
            tid,
            now,
            latency,
            ret,
            outcome,
        };
        stage_event(&mut counters.misc, |e| {
            // SAFETY: a slot of this CPU's stage, every field written before it is sent.
            unsafe {
                write_call(e, call, &done, writer);
                read_comm_into(&raw mut (*e).comm);
            }
        });
    }
}

/// Counts a finished call in this CPU's counters: by outcome, type and result, and its
/// latency in the sum and the histogram.
#[inline(always)]
pub fn count_call(
    counters: &mut Counters,
    outcome: Outcome,
    raw_type: i64,
    result_slot: u32,
    latency: u64,
) {
    if let Some(by_type) = counters.calls.get_mut(outcome as usize)
        && let Some(by_result) = by_type.get_mut(type_slot(raw_type as u64) as usize)
        && let Some(n) = by_result.get_mut(result_slot as usize)
    {
        *n += 1;
    }
    if let Some(sum) = counters.latency_sum_ns.get_mut(outcome as usize) {
        *sum += latency;
    }
    if let Some(hist) = counters.latency.get_mut(outcome as usize)
        && let Some(n) = hist.get_mut(log2_slot(latency) as usize)
    {
        *n += 1;
    }
}

/// Adds a finished call to its process's totals; false when the map is full.
#[inline(always)]
pub fn count_for_process(tgid: u32, error: bool, latency: u64) -> bool {
    let Some(totals) = process_totals(tgid) else {
        return false;
    };
    add_shared(&mut totals.calls, 1);
    if error {
        add_shared(&mut totals.errors, 1);
    }
    add_shared(&mut totals.latency_sum_ns, latency);
    true
}

/// Stages one event, written in place by `fill`; a full stage goes to the ring as one
/// record. The busy mark keeps the flush program out while the stage changes (`StageFill`).
#[inline(always)]
pub fn stage_event(misc: &mut [u64; misc::SLOTS], fill: impl FnOnce(*mut Event)) {
    let (Some(state), Some(stage)) = (STAGE_FILL.get_ptr_mut(0), STAGE.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: this CPU's stage and its state; the flush program touches neither while busy.
    unsafe {
        put(&raw mut (*state).busy, 1);
        compiler_fence(Ordering::SeqCst);
        // The count is kept below STAGE_EVENTS; the check is for the verifier.
        let mut n = (*state).count as usize;
        if n >= STAGE_EVENTS {
            n = 0;
        }
        if let Some(slot) = (*stage).get_mut(n) {
            fill(slot);
            n += 1;
        }
        if n == STAGE_EVENTS {
            send_stage(stage, n, misc);
            n = 0;
        }
        put(&raw mut (*state).count, n as u32);
        compiler_fence(Ordering::SeqCst);
        put(&raw mut (*state).busy, 0);
    }
}

/// Sends what this CPU staged. Run by userspace on each CPU holding events (BPF_PROG_TEST_RUN),
/// so that a CPU gone quiet still delivers its last events within a drain tick.
#[inline(always)]
pub fn flush_stage() -> u32 {
    let (Some(state), Some(stage), Some(counters)) = (
        STAGE_FILL.get_ptr_mut(0),
        STAGE.get_ptr_mut(0),
        cpu_counters(),
    ) else {
        return flush::SENT;
    };
    // SAFETY: this CPU's stage, left alone while the exit program has it; the event counts
    // in this CPU's counters are written only by the two of them, never at once.
    unsafe {
        if (&raw const (*state).busy).read_volatile() != 0 {
            return flush::BUSY;
        }
        let n = (*state).count as usize;
        if n == 0 || n > STAGE_EVENTS {
            put(&raw mut (*state).count, 0);
            return flush::SENT;
        }
        let sent = send_stage(stage, n, &mut (*counters).misc);
        put(&raw mut (*state).count, 0);
        if sent { flush::SENT } else { flush::DROPPED }
    }
}

/// Writes the first `n` staged events to the ring as one record, waking the reader only
/// when the backlog crosses the mark, and counts them sent or dropped.
///
/// # Safety
/// `stage` must be this CPU's stage, `n` at most STAGE_EVENTS.
#[inline(always)]
unsafe fn send_stage(
    stage: *const [Event; STAGE_EVENTS],
    n: usize,
    misc: &mut [u64; misc::SLOTS],
) -> bool {
    let len = n * size_of::<Event>();
    // SAFETY: as the caller promised, `len` bytes of the map value.
    let bytes = unsafe { core::slice::from_raw_parts(stage.cast::<u8>(), len) };
    let backlog = EVENTS.query(BPF_RB_AVAIL_DATA as u64) + len as u64 + 8;
    let mark = WAKEUP_BYTES.load();
    let flags = if backlog >= mark && backlog - mark < WAKEUP_WINDOW {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let sent = EVENTS.output::<[u8]>(bytes, flags as u64).is_ok();
    let cell = if sent {
        misc::EVENTS_SENT
    } else {
        misc::EVENTS_DROPPED
    };
    if let Some(count) = misc.get_mut(cell) {
        *count += n as u64;
    }
    sent
}

/// The calling process's totals, created at its first call (the only time its comm is
/// read); None when the map is full.
#[inline(always)]
fn process_totals(tgid: u32) -> Option<&'static mut ProcessTotals> {
    if let Some(totals) = PROCESSES.get_ptr_mut(tgid) {
        // SAFETY: a live map value; every writer adds atomically.
        return Some(unsafe { &mut *totals });
    }
    let fresh = ProcessTotals {
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        ..ProcessTotals::default()
    };
    // Another thread of the process may have created it meanwhile: then that one stays.
    let _ = PROCESSES.insert(tgid, fresh, BPF_NOEXIST as u64);
    // SAFETY: as above.
    PROCESSES.get_ptr_mut(tgid).map(|t| unsafe { &mut *t })
}

#[inline(always)]
fn bump(misc: &mut [u64; misc::SLOTS], index: usize) {
    if let Some(n) = misc.get_mut(index) {
        *n += 1;
    }
}
