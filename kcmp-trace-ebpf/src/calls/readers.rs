//! The /proc readers (`kcmp_trace_common::reader`), followed call by call: opened as kcmp's
//! calls are, waiting only on their task's exec_update_lock, classified as kcmp's are.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel};
use kcmp_trace_common::{
    classify::{LOCK, Strategy, classify},
    reader::{ProcReader, ReaderCounters},
    stacks::who,
};

use super::{
    cells::cpu_counters,
    locks::account_lock_wait,
    maps::{EXEC_UPDATE_LOCK_OFFSET, READER_THREADS, SERIES, SIGNAL_OFFSET, STRATEGY},
    thread::{entry, open_call, traced},
};

/// A /proc reader's function was entered for `task`: its call opens (unless the caller is
/// filtered out), waiting only on `task`'s exec_update_lock.
#[inline(always)]
pub fn on_reader_enter(reader: ProcReader, task: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; 0 (no lock matches) if unreadable.
    let signal =
        unsafe { bpf_probe_read_kernel((task + u64::from(SIGNAL_OFFSET.load())) as *const u64) }
            .unwrap_or(0);
    let lock_addr = signal + u64::from(EXEC_UPDATE_LOCK_OFFSET.load());
    open_call(
        &READER_THREADS,
        pid_tgid,
        lock_addr,
        |call| call.reader = reader as u32,
        || {},
        || reader_slot(reader, |r| &mut r.lost_exits),
    );
}

/// A /proc reader's function returned `ret`: its call is classified as kcmp's are, and
/// counted with its lock wait. A call that never reached its exec_update_lock section
/// (refused before it, as /proc/PID/stack refuses non-admins) left no trail and is not a
/// reader call.
#[inline(always)]
pub fn on_reader_exit(reader: ProcReader, ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = match entry(&READER_THREADS, pid_tgid as u32) {
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
    if let Some(slot) = counters.readers.get_mut(reader as usize)
        && let Some(n) = slot.calls.get_mut(outcome as usize)
    {
        *n += 1;
    }
    account_lock_wait(
        call,
        || call.trail & LOCK != 0,
        counters,
        |c| {
            let slot = c.readers.get_mut(reader as usize)?;
            Some((&mut slot.lock_wait_sum_ns, &mut slot.lock_wait))
        },
        (who::reader(reader), outcome as u32),
    );
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
