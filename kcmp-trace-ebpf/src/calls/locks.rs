//! exec_update_lock waits: timed by the lock probes (down_read_killable() and its nested
//! variant) or by lock contention, for kcmp's calls, the /proc readers' calls and other
//! callers, and accounted one way when a call ends.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel};
use kcmp_trace_common::{
    classify::LOCK,
    hist::{HIST_SLOTS, log2_slot},
    maps::{ThreadState, misc, outside},
    snapshot::Counters,
    stacks::{stack_ref, who},
};

use super::{
    cells::{add_shared, cpu_counters},
    maps::{
        EXEC_UPDATE_LOCK_OFFSET, READER_THREADS, SIGNAL_OFFSET, THREAD_HEAD_OFFSET,
        THREAD_NODE_OFFSET, TRACE_READERS, TRACE_STACKS,
    },
    now_ns,
    others::count_other,
    sections::holder_of,
    stacks::count_stack,
    thread::{entry, in_kcmp_or_outside, new_entry, ran_outside, reader_thread, traced},
};

/// down_read_killable(sem) was called. Inside kcmp every such lock is an exec_update_lock;
/// inside a /proc reader only its task's counts; for any other caller, an exec_update_lock
/// recognised by where it sits (`is_exec_update_lock`) starts a wait counted by caller.
/// `stack` is the caller's stack (`--stacks`).
#[inline(always)]
pub fn on_lock_enter(slot: u32, sem: impl FnOnce() -> u64, stack: impl FnOnce() -> Option<u32>) {
    if let Some(call) = in_kcmp_or_outside(slot) {
        lock_wait_begins(call, sem, stack);
        return;
    }
    if TRACE_READERS.load() == 0 {
        return;
    }
    let sem = sem();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    match entry(&READER_THREADS, tid) {
        Some(call) if call.active != 0 => {
            if call.lock_addr == sem {
                lock_wait_begins(call, || sem, stack);
            }
        }
        thread => {
            if !traced((pid_tgid >> 32) as u32) || !is_exec_update_lock(sem) {
                return;
            }
            if let Some(thread) = thread.or_else(|| new_entry(&READER_THREADS, tid)) {
                thread.lock_start_ns = now_ns();
                if let Some(stack) = stack() {
                    thread.lock_stack = u64::from(stack);
                    thread.lock_holder = holder_of(sem);
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
pub fn on_contention_begin(lock: u64, flags: u32, stack: impl FnOnce() -> Option<u32>) {
    if flags & !LCB_F_RT != LCB_F_READ {
        ran_outside(outside::CONTENTION_BEGIN);
        return;
    }
    if let Some(call) = in_kcmp_or_outside(outside::CONTENTION_BEGIN) {
        call.lock_addr = lock;
        lock_wait_begins(call, || lock, stack);
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

/// A call's exec_update_lock wait on the lock at `lock` begins; its first wait's is the
/// call's stack, and the first holder one of its waits met is the call's (`--stacks`).
#[inline(always)]
fn lock_wait_begins(
    call: &mut ThreadState,
    lock: impl FnOnce() -> u64,
    stack: impl FnOnce() -> Option<u32>,
) {
    call.trail |= LOCK;
    if TRACE_STACKS.load() != 0 {
        if call.lock_stack == u64::from(stack_ref::UNCONTENDED)
            && let Some(stack) = stack()
        {
            call.lock_stack = u64::from(stack);
        }
        if call.lock_holder == 0 {
            call.lock_holder = holder_of(lock());
        }
    }
    if call.lock_start_ns != 0
        && let Some(counters) = cpu_counters()
    {
        // The previous lock's return was never seen (a kretprobe out of instances).
        // SAFETY: this CPU's counters; every writer of this cell adds atomically.
        unfinished_lock_wait(unsafe { &mut (*counters).misc });
    }
    let now = now_ns();
    call.lock_start_ns = now;
    if call.lock_first_ns == 0 {
        call.lock_first_ns = now;
    }
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
    count_stack(
        || (thread.lock_stack as u32, thread.lock_holder),
        who::OTHER,
        0,
        wait,
    );
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

/// Accounts a finished call's exec_update_lock wait, kcmp's or a reader's, in this CPU's
/// `counters`. A wait still open (its return never seen) has no known length: it counts as
/// unfinished. Otherwise a call that took the lock (`took_lock`) counts one wait, as long
/// as its lock probes timed or its contentions lasted (none: an uncontended lock, a wait of
/// 0), in the sum and histogram that `waits` picks, whose only writer is the caller's
/// program, and under its stack as `who`'s wait in a call of `outcome` (`--stacks`).
#[inline(always)]
pub fn account_lock_wait(
    call: &ThreadState,
    took_lock: impl FnOnce() -> bool,
    counters: &mut Counters,
    waits: impl FnOnce(&mut Counters) -> Option<(&mut u64, &mut [u64; HIST_SLOTS])>,
    (who, outcome): (u32, u32),
) {
    if call.lock_start_ns != 0 {
        unfinished_lock_wait(&mut counters.misc);
    } else if took_lock() {
        count_stack(
            || (call.lock_stack as u32, call.lock_holder),
            who,
            outcome,
            call.lock_wait_ns,
        );
        let slot = log2_slot(call.lock_wait_ns) as usize;
        if let Some((sum, hist)) = waits(counters) {
            *sum += call.lock_wait_ns;
            if let Some(n) = hist.get_mut(slot) {
                *n += 1;
            }
        }
    }
}
