//! The cost ladder: tracepoint programs that each do one component of the kcmp programs'
//! work, through the same functions and maps (`calls`). `kcmp-trace-bench` attaches each
//! alone to sys_enter_kcmp and subtracts the empty program's run time there, to say where
//! the full programs' time goes. They are not part of any plan. The comm step is the
//! object's `comm_read` (support.rs).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use kcmp_trace_common::{
    event::EpollSlot,
    maps::ThreadState,
    named_as,
    outcome::Outcome,
    programs::bench,
    result::{result_slot, result_slot_is_error},
};

use crate::{
    calls::{
        cells::cpu_counters,
        events::{CallDone, stage_event, write_call},
        kcmp::{count_call, count_for_process},
        maps::THREADS,
        now_ns,
        thread::{entry, new_entry},
    },
    tp::tp_args,
};

named_as!(cost_pid_tgid, bench::COST_PID_TGID);
named_as!(cost_clock, bench::COST_CLOCK);
named_as!(cost_thread, bench::COST_THREAD);
named_as!(cost_totals, bench::COST_TOTALS);
named_as!(cost_counters, bench::COST_COUNTERS);
named_as!(cost_event, bench::COST_EVENT);

/// A step's inputs, read from kcmp's arguments so that no step pays another's helper call
/// and the compiler folds nothing. The bench calls kcmp(self, self, KCMP_FILE, fd, fd) from
/// its main thread, so pid1 is the caller's tid and tgid, and idx1 - idx2 is 0, a result as
/// the real calls return.
struct Inputs {
    key: u32,
    raw_type: i64,
    ret: i64,
    latency: u64,
}

#[inline(always)]
fn inputs(ctx: &TracePointContext) -> Inputs {
    let args = tp_args(ctx);
    Inputs {
        key: args.pid1 as u32,
        raw_type: args.raw_type,
        ret: args.idx1.wrapping_sub(args.idx2) as i64,
        latency: args.idx1,
    }
}

#[tracepoint]
pub fn cost_pid_tgid(_ctx: TracePointContext) -> u32 {
    bpf_get_current_pid_tgid();
    0
}

#[tracepoint]
pub fn cost_clock(_ctx: TracePointContext) -> u32 {
    now_ns();
    0
}

/// The per-thread state lookup, hit path: the entry is created at the first run only.
#[tracepoint]
pub fn cost_thread(ctx: TracePointContext) -> u32 {
    let tid = inputs(&ctx).key;
    if entry(&THREADS, tid).is_none() {
        new_entry(&THREADS, tid);
    }
    0
}

#[tracepoint]
pub fn cost_totals(ctx: TracePointContext) -> u32 {
    let i = inputs(&ctx);
    count_for_process(i.key, result_slot_is_error(result_slot(i.ret)), i.latency);
    0
}

#[tracepoint]
pub fn cost_counters(ctx: TracePointContext) -> u32 {
    let i = inputs(&ctx);
    if let Some(counters) = cpu_counters() {
        // SAFETY: this CPU's counters; in this object this program is their only writer.
        let counters = unsafe { &mut *counters };
        count_call(
            counters,
            Outcome::Unknown,
            i.raw_type,
            result_slot(i.ret),
            i.latency,
        );
    }
    0
}

/// One event staged, written in place (every sixteenth run sends the stage to the ring, with
/// the wakeup decision); the comm is its own step, so this record's stays as it was.
#[tracepoint]
pub fn cost_event(ctx: TracePointContext) -> u32 {
    let args = tp_args(&ctx);
    // Every field from the arguments: zeros the compiler could see would become a memset
    // call, which the real exit program does not make.
    let (a, b) = (args.pid1 as u32, args.pid2 as u32);
    let call = ThreadState {
        start_ns: args.idx2,
        idx1: args.idx1,
        idx2: args.idx2,
        raw_type: args.raw_type,
        lock_start_ns: args.idx2,
        lock_wait_ns: args.idx1,
        pid1: args.pid1,
        pid2: args.pid2,
        tgid: a,
        active: b,
        trail: a,
        reader: b,
        epoll: EpollSlot {
            efd: a,
            tfd: b,
            toff: a,
            read: b,
        },
        lock_addr: args.idx1,
        lock_stack: args.idx2,
        lock_first_ns: args.idx1,
        lock_holder: args.idx2,
    };
    let done = CallDone {
        tgid: args.pid1 as u32,
        tid: args.pid1 as u32,
        now: args.idx1,
        latency: args.idx2,
        ret: 0,
        outcome: Outcome::Unknown,
    };
    if let Some(counters) = cpu_counters() {
        // SAFETY: this CPU's counters; in this object this program is their only writer.
        let misc = unsafe { &mut (*counters).misc };
        // SAFETY: a slot of this CPU's stage.
        stage_event(misc, |e| unsafe { write_call(e, &call, &done, None) });
    }
    0
}
