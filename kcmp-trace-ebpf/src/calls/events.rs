//! Events: a finished call's record written in place in its CPU's stage, and a full stage
//! sent to the ring as one record.
//!
//! A CPU's stage (and the event counts) the kcmp exit program writes with the stage marked
//! busy; the flush program, which userspace runs on that CPU and which can interrupt the
//! exit program there or run while it is preempted, leaves a busy stage alone.

use core::sync::atomic::{Ordering, compiler_fence};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_current_comm as bpf_get_current_comm_raw, bpf_get_current_task_btf,
    },
};
use kcmp_trace_common::{
    event::{COMM_LEN, Event, writer_overlap_ns},
    maps::{ProcessTotals, STAGE_EVENTS, STAGE_RECORD_BYTES, ThreadState, flush, misc},
    outcome::Outcome,
};

use super::{
    cells::{cpu_counters, put},
    maps::{COMM_OFFSET, EVENTS, STAGE, STAGE_FILL, WAKEUP_BYTES, WriteSection},
};

/// Writes whose backlog lands this far past the mark wake the reader: a few records, so
/// that producers racing on other CPUs cannot all step over it, yet one fill of the ring
/// raises only a few wakeups (each is a self-IPI).
const WAKEUP_WINDOW: u64 = 4 * STAGE_RECORD_BYTES;

// Comms are copied and cleared as two aligned words.
const _: () = assert!(
    core::mem::offset_of!(Event, comm) % 8 == 0
        && core::mem::offset_of!(Event, writer_comm) % 8 == 0
        && core::mem::offset_of!(WriteSection, comm) % 8 == 0
        && core::mem::offset_of!(ProcessTotals, comm) % 8 == 0
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
        put(&raw mut (*e).lock_wait_start_ns, call.lock_first_ns);
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
                put(&raw mut (*e).writer_tid, section.tid);
                put(&raw mut (*e).writer_kind, section.kind);
                put(
                    &raw mut (*e).writer_overlap_ns,
                    writer_overlap_ns(section.start_ns, section.end_ns, call.start_ns, done.now),
                );
                put(&raw mut (*e).writer_start_ns, section.start_ns);
                put(&raw mut (*e).writer_end_ns, section.end_ns);
                put_comm(&raw mut (*e).writer_comm, comm_words(&section.comm));
            }
            None => {
                put(&raw mut (*e).writer_tgid, 0);
                put(&raw mut (*e).writer_tid, 0);
                put(&raw mut (*e).writer_kind, 0);
                put(&raw mut (*e).writer_overlap_ns, 0);
                put(&raw mut (*e).writer_start_ns, 0);
                put(&raw mut (*e).writer_end_ns, 0);
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
