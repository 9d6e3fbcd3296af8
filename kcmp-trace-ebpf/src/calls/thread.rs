//! A thread's call in flight: its entry in THREADS (kcmp's calls) or READER_THREADS (the
//! /proc readers' calls, other callers' lock waits), the one way a call opens in it, and
//! how the probes inside a call find it.
//!
//! An entry is written only by its thread, whose probes run one after another (a program
//! preempted mid-run holds its thread off the CPU with it), so no store to it needs to be
//! atomic or ordered.

use core::mem::MaybeUninit;

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, maps::LruHashMap};
use kcmp_trace_common::maps::ThreadState;

use super::{
    cells::put,
    events::read_comm_into,
    maps::{
        FILTER_COMM, FILTER_COMM_NAME, FILTER_TGID, OUTSIDE_RUNS, READER_THREADS, TGID_FILTER,
        THREADS, TRACE_READERS, TRACE_STACKS,
    },
    now_ns,
};

/// What a created entry holds until its first call opens (a global, so that creating one
/// copies no zeroed stack).
static NO_CALL: ThreadState = ThreadState::ZERO;

/// Whether the calling process is traced (`--pid`, `--comm`).
#[inline(always)]
pub fn traced(tgid: u32) -> bool {
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

/// The entry of thread `tid` in `threads`. Only the calling thread's may be asked for.
#[inline(always)]
pub fn entry(threads: &LruHashMap<u32, ThreadState>, tid: u32) -> Option<&'static mut ThreadState> {
    // SAFETY: only this thread writes its own entry.
    threads.get_ptr_mut(tid).map(|entry| unsafe { &mut *entry })
}

/// Creates thread `tid`'s entry in `threads`, empty: at its first call or wait, or after
/// LRU evicted it.
#[inline(always)]
pub fn new_entry(
    threads: &LruHashMap<u32, ThreadState>,
    tid: u32,
) -> Option<&'static mut ThreadState> {
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the global would be copied to the stack"
    )]
    let _ = threads.insert(tid, &NO_CALL, 0);
    entry(threads, tid)
}

/// A thread's entry in THREADS: its kcmp call in flight, or the last one.
#[inline(always)]
pub fn thread_state(tid: u32) -> Option<&'static mut ThreadState> {
    entry(&THREADS, tid)
}

/// Opens the calling thread's call in `threads`: starts its clock, clears what the last
/// call left (its lock wait and trail), notes the one exec_update_lock whose waits are its
/// own (`lock_addr`; 0: any) and its wait's stack (`--stacks`), lets `fill` write what the call is, and marks it open. Each
/// reset is one store (`put`), not a memset. `first` runs when the thread has no entry yet
/// (its first call, or LRU evicted it), `lost_exit` when its last call is still open: that
/// call's exit was never seen, so it goes uncounted.
#[inline(always)]
pub fn open_call(
    threads: &LruHashMap<u32, ThreadState>,
    pid_tgid: u64,
    lock_addr: u64,
    fill: impl FnOnce(&mut ThreadState),
    first: impl FnOnce(),
    lost_exit: impl FnOnce(),
) {
    let start_ns = now_ns();
    let tid = pid_tgid as u32;
    // Each case is dealt with here, so that the stores below are one path to the verifier.
    let call = match entry(threads, tid) {
        Some(call) => {
            if call.active != 0 {
                lost_exit();
            }
            call
        }
        None => {
            first();
            let Some(call) = new_entry(threads, tid) else {
                return;
            };
            call
        }
    };
    // SAFETY: fields of this thread's own entry.
    unsafe {
        put(&raw mut call.start_ns, start_ns);
        put(&raw mut call.lock_start_ns, 0);
        put(&raw mut call.lock_wait_ns, 0);
        put(&raw mut call.lock_first_ns, 0);
        put(&raw mut call.trail, 0);
        put(&raw mut call.lock_addr, lock_addr);
        put(&raw mut call.tgid, (pid_tgid >> 32) as u32);
        if TRACE_STACKS.load() != 0 {
            put(&raw mut call.lock_stack, 0);
            put(&raw mut call.lock_holder, 0);
        }
    }
    fill(call);
    call.active = 1;
}

/// The calling thread's call in flight, if it is inside a traced kcmp. Hooks on functions
/// every process calls ask this first and return at once when it is None.
#[inline(always)]
pub fn in_kcmp() -> Option<&'static mut ThreadState> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let call = thread_state(tid)?;
    (call.active != 0).then_some(call)
}

/// The calling thread's entry in READER_THREADS, if readers are traced.
#[inline(always)]
pub fn reader_thread() -> Option<&'static mut ThreadState> {
    if TRACE_READERS.load() == 0 {
        return None;
    }
    entry(&READER_THREADS, bpf_get_current_pid_tgid() as u32)
}

/// The calling thread's kcmp or /proc reader call in flight.
#[inline(always)]
pub fn in_call() -> Option<&'static mut ThreadState> {
    in_kcmp().or_else(|| reader_thread().filter(|t| t.active != 0))
}

/// A run of the program of `slot` found no kcmp call: counted as work it taxed.
#[inline(always)]
pub fn ran_outside(slot: u32) {
    if let Some(n) = OUTSIDE_RUNS.get_ptr_mut(slot) {
        // SAFETY: this CPU's cell of this program's slot (see OUTSIDE_RUNS).
        unsafe { *n += 1 };
    }
}

/// The calling thread's kcmp call in flight; a run that finds none counts in `slot`.
#[inline(always)]
pub fn in_kcmp_or_outside(slot: u32) -> Option<&'static mut ThreadState> {
    let call = in_kcmp();
    if call.is_none() {
        ran_outside(slot);
    }
    call
}
