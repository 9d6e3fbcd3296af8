//! exec_update_lock's other callers, whose calls are not followed: their helper verdicts
//! and lock waits, counted in the other callers' slot and by call site.

use aya_ebpf::bindings::BPF_NOEXIST;
use kcmp_trace_common::{
    maps::misc,
    reader::{CallerCounts, OTHER_SLOT, ReaderCounters},
};

use super::{
    cells::{add_shared, cpu_counters},
    maps::OTHER_CALLERS,
};

/// Adds `n` to another caller's cell: in the other callers' slot (`in_slot`) and under its
/// call site (`at_site`), or as unplaced when its address is unknown or the map is full.
/// Several programs on several CPUs add to these: atomics.
#[inline(always)]
pub fn count_other(
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
