//! kcmp's calls: filtered and opened at entry, classified and counted at exit (by outcome,
//! type, result and latency, per CPU and per process), and staged as events.

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
};
use aya_log_ebpf::{info, warn};
use kcmp_trace_common::{
    classify::{LOCK, Strategy, classify},
    event::EpollSlot,
    hist::log2_slot,
    kcmp::{KCMP_EPOLL_TFD, type_slot},
    maps::{ProcessTotals, misc},
    outcome::Outcome,
    result::{result_slot, result_slot_is_error},
    snapshot::Counters,
    stacks::who,
};

use super::{
    cells::{add_shared, bump, cpu_counters, put},
    events::{CallDone, read_comm_into, stage_event, write_call},
    locks::account_lock_wait,
    maps::{EMIT_EVENTS, PROCESSES, SERIES, STRATEGY, THREADS},
    now_ns,
    sections::writer_of,
    thread::{open_call, thread_state, traced},
};

pub struct KcmpArgs {
    pub pid1: i32,
    pub pid2: i32,
    pub raw_type: i64,
    pub idx1: u64,
    pub idx2: u64,
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

/// kcmp was entered: a traced caller's call opens, with its arguments (every lock it waits
/// on is an exec_update_lock).
#[inline(always)]
pub fn on_enter<C: EbpfContext>(ctx: &C, args: &KcmpArgs) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !traced((pid_tgid >> 32) as u32) {
        return;
    }
    open_call(
        &THREADS,
        pid_tgid,
        0,
        |call| {
            call.idx1 = args.idx1;
            call.idx2 = args.idx2;
            call.raw_type = args.raw_type;
            call.pid1 = args.pid1;
            call.pid2 = args.pid2;
            call.epoll = epoll_slot(args);
        },
        || {
            info!(
                ctx,
                "tid {} of tgid {} makes its first traced kcmp call",
                pid_tgid as u32,
                (pid_tgid >> 32) as u32
            )
        },
        || {
            if let Some(counters) = cpu_counters() {
                // SAFETY: this CPU's counters; this program is the cell's only writer.
                bump(unsafe { &mut (*counters).misc }, misc::LOST_EXITS);
            }
        },
    );
}

/// kcmp returned `ret`: its call is classified and counted, and staged as an event when
/// events are asked for.
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
    account_lock_wait(
        call,
        || outcome.took_locks() || call.trail & LOCK != 0,
        counters,
        |c| Some((&mut c.lock_wait_sum_ns, &mut c.lock_wait)),
        (who::KCMP, outcome as u32),
    );
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

/// The calling process's totals, created at its first call (the only time its comm is
/// read); None when the map is full.
#[inline(always)]
fn process_totals(tgid: u32) -> Option<&'static mut ProcessTotals> {
    if let Some(totals) = PROCESSES.get_ptr_mut(tgid) {
        // SAFETY: a live map value; every writer adds atomically.
        return Some(unsafe { &mut *totals });
    }
    let mut fresh = MaybeUninit::<ProcessTotals>::uninit();
    let p = fresh.as_mut_ptr();
    // SAFETY: every field is written before the value is read, one store each (a zeroed
    // struct would be a memset call); the comm sits 8-byte aligned.
    let fresh = unsafe {
        put(&raw mut (*p).calls, 0);
        put(&raw mut (*p).errors, 0);
        put(&raw mut (*p).latency_sum_ns, 0);
        read_comm_into(&raw mut (*p).comm);
        fresh.assume_init()
    };
    // Another thread of the process may have created it meanwhile: then that one stays.
    let _ = PROCESSES.insert(tgid, fresh, BPF_NOEXIST as u64);
    // SAFETY: as above.
    PROCESSES.get_ptr_mut(tgid).map(|t| unsafe { &mut *t })
}
