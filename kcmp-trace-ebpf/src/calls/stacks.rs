//! `--stacks`: the kernel stacks of exec_update_lock's waiters and writers
//! (`kcmp_trace_common::stacks`). Off, the verifier prunes all of it (TRACE_STACKS is
//! read-only, and tested before anything else is read), so nothing costs more.

use aya_ebpf::{bindings::BPF_NOEXIST, programs::tracing::StackIdContext};
use kcmp_trace_common::{
    event::COMM_LEN,
    maps::misc,
    stacks::{Holder, StackCounts, StackKey, stack_ref},
};

use super::{
    cells::{add_shared, cpu_counters},
    maps::{STACK_COUNTS, STACK_TRACES, TRACE_STACKS, WRITERS},
};

/// The calling context's kernel stack, kept in STACK_TRACES, as a `stack_ref`; None when
/// stacks are off. A hash collision is not resolved by overwriting (that would put counts
/// under frames they never had): the stack is lost, and counted as such.
#[inline(always)]
pub fn take_stack(ctx: &impl StackIdContext) -> Option<u32> {
    if TRACE_STACKS.load() == 0 {
        return None;
    }
    Some(stack_ref::of(
        ctx.get_stackid(&STACK_TRACES, 0).map_err(i64::from),
    ))
}

/// Counts one lock wait (or write section) of `time_ns` under its stack and holder
/// (`stack_and_holder`, read only with `--stacks`: a `stack_ref` and a packed `Holder`),
/// whose, and its call's outcome. The holder's comm is its latest section's. Programs on
/// several CPUs and preempted ones share a CPU's cells: atomic adds. A key that finds the
/// map full is counted as dropped.
#[inline(always)]
pub fn count_stack(
    stack_and_holder: impl FnOnce() -> (u32, u64),
    who: u32,
    outcome: u32,
    time_ns: u64,
) {
    if TRACE_STACKS.load() == 0 {
        return;
    }
    let (stack, holder) = stack_and_holder();
    let holder = Holder::unpack(holder);
    let holder_comm = match holder.is_some() {
        // SAFETY: read-only use of a map value, copied out at once.
        true => unsafe { WRITERS.get(holder.tgid) }.map_or([0; COMM_LEN], |s| s.comm),
        false => [0; COMM_LEN],
    };
    let key = StackKey {
        stack,
        who,
        outcome,
        holder,
        holder_comm,
    };
    if STACK_COUNTS.get_ptr_mut(key).is_none() {
        let _ = STACK_COUNTS.insert(key, StackCounts::default(), BPF_NOEXIST as u64);
    }
    match STACK_COUNTS.get_ptr_mut(key) {
        Some(counts) => {
            // SAFETY: this CPU's value of a live key; every writer adds atomically.
            let counts = unsafe { &mut *counts };
            add_shared(&mut counts.count, 1);
            add_shared(&mut counts.time_ns, time_ns);
        }
        None => {
            if let Some(counters) = cpu_counters()
                // SAFETY: this CPU's counters; every writer of this cell adds atomically.
                && let Some(n) = unsafe { &mut *counters }.misc.get_mut(misc::STACKS_DROPPED)
            {
                add_shared(n, 1);
            }
        }
    }
}
