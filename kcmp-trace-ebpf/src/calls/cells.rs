//! Who may write what, so that no update is lost, and the ways to write it.
//!
//! fentry/fexit programs run with only migration disabled and can be preempted mid-run, but
//! the kernel never starts a second run of the same program on a CPU before the first ends
//! (it skips it and counts a recursion miss). So a per-CPU cell written by a single program
//! is a plain read-modify-write (`bump`); a cell two programs write (the exec write sections'
//! holds, closed by begin_new_exec()'s failure exit or setup_new_exec()'s exit; unfinished
//! lock waits; other callers' counts) is updated atomically (`add_shared`), and so are the
//! per-process totals, which a process's threads update from several CPUs. A thread's call
//! state has one writer, the thread itself (`thread`); a CPU's event stage, two that keep
//! out of each other's way (`events`).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use kcmp_trace_common::{maps::misc, snapshot::Counters};

use super::maps::COUNTERS;

/// This CPU's counter block.
#[inline(always)]
pub fn cpu_counters() -> Option<*mut Counters> {
    COUNTERS.get_ptr_mut(0)
}

/// Adds one to a per-CPU cell that a single program writes.
#[inline(always)]
pub fn bump(misc: &mut [u64; misc::SLOTS], index: usize) {
    if let Some(n) = misc.get_mut(index) {
        *n += 1;
    }
}

/// Adds to a cell that more than one program writes: one of them may have been preempted
/// between its read and its write. (The BPF target has no compare-and-swap, so core's atomic
/// types lack fetch_add; the intrinsic compiles to BPF's atomic add.)
#[inline(always)]
pub fn add_shared(cell: &mut u64, n: u64) {
    // SAFETY: a valid, aligned u64 in a map value; all its writers use atomics.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(cell, n) };
}

/// A store LLVM keeps as one instruction. Adjacent plain stores of zero it merges into a
/// memset, and a memset, like a copy of a byte array, becomes a call to a byte-at-a-time
/// loop in BPF: on the per-call path that cost more than the work around it.
///
/// # Safety
/// `dst` must be valid for writes and aligned.
#[inline(always)]
pub unsafe fn put<T>(dst: *mut T, value: T) {
    // SAFETY: as the caller promised.
    unsafe { core::ptr::write_volatile(dst, value) }
}
