//! exec_update_lock's write sections: an exec's, from begin_new_exec() to setup_new_exec()
//! (or begin_new_exec()'s failure), and Landlock TSYNC's; how long they were held, and which
//! one a retried or busy kcmp call overlapped.
//!
//! A process's section is touched only by its own writers; its hold is counted by whichever
//! program closes it, hence atomically.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel};
use kcmp_trace_common::{
    hist::log2_slot,
    maps::{ThreadState, writer},
    stacks::{Holder, stack_ref, who},
};

use super::{
    cells::{add_shared, cpu_counters, put},
    events::read_comm_into,
    maps::{
        EXEC_UPDATE_LOCK_OFFSET, PREVIOUS_SECTIONS, SECTION_LOCKS, SIGNAL_OFFSET, TRACE_STACKS,
        WRITERS, WriteSection,
    },
    now_ns,
    stacks::count_stack,
};

/// begin_new_exec() was entered: the exec_update_lock write section is about to open.
#[inline(always)]
pub fn on_exec_begin(stack: impl FnOnce() -> Option<u32>) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: read-only use of a map value, copied out at once.
    if let Some(closed) = unsafe { WRITERS.get(tgid) }
        && closed.end_ns != 0
    {
        let _ = PREVIOUS_SECTIONS.insert(tgid, *closed, 0);
    }
    open_section(writer::EXEC, stack);
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
/// then fails); a closed one becomes the previous, put back if the trylock fails.
#[inline(always)]
pub fn on_tsync_begin(stack: impl FnOnce() -> Option<u32>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: read-only use of a map value, copied out at once.
    match unsafe { WRITERS.get(tgid) } {
        Some(section) if section.end_ns == 0 => {
            if section.tid != pid_tgid as u32 {
                return;
            }
        }
        Some(closed) => {
            let _ = PREVIOUS_SECTIONS.insert(tgid, *closed, 0);
        }
        None => {
            let _ = PREVIOUS_SECTIONS.remove(tgid);
        }
    }
    open_section(writer::TSYNC, stack);
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
        // Never held: the section it replaced is still the process's last one.
        // SAFETY: read-only use of a map value, copied out at once.
        match unsafe { PREVIOUS_SECTIONS.get(tgid) } {
            Some(replaced) => {
                let _ = WRITERS.insert(tgid, *replaced, 0);
            }
            None => {
                let _ = WRITERS.remove(tgid);
            }
        }
    } else {
        close_section(section);
    }
}

/// Opens the calling process's write section of `kind`, where `stack` says (`--stacks`);
/// with stacks, the section's lock is recorded so that its waiters can name it.
#[inline(always)]
fn open_section(kind: u32, stack: impl FnOnce() -> Option<u32>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let lock = own_exec_update_lock();
    if lock != 0 {
        let _ = SECTION_LOCKS.insert(lock, (pid_tgid >> 32) as u32, 0);
    }
    let mut section = MaybeUninit::<WriteSection>::uninit();
    let s = section.as_mut_ptr();
    // SAFETY: every field is written before the value is read, one store each; the comm
    // sits 8-byte aligned.
    let section = unsafe {
        put(&raw mut (*s).start_ns, now_ns());
        put(&raw mut (*s).end_ns, 0);
        read_comm_into(&raw mut (*s).comm);
        put(&raw mut (*s).tid, pid_tgid as u32);
        put(&raw mut (*s).kind, kind);
        put(
            &raw mut (*s).stack,
            stack().unwrap_or(stack_ref::UNCONTENDED),
        );
        put(&raw mut (*s).pad, 0);
        put(&raw mut (*s).lock, lock);
        section.assume_init()
    };
    let _ = WRITERS.insert((pid_tgid >> 32) as u32, section, 0);
}

/// The address of the calling process's exec_update_lock, with `--stacks` and where BTF
/// placed it; 0 otherwise.
#[inline(always)]
fn own_exec_update_lock() -> u64 {
    let signal_offset = SIGNAL_OFFSET.load();
    if TRACE_STACKS.load() == 0 || signal_offset == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a failed read names no lock.
    match unsafe {
        bpf_probe_read_kernel((bpf_get_current_task() + u64::from(signal_offset)) as *const u64)
    } {
        Ok(signal) if signal != 0 => signal + u64::from(EXEC_UPDATE_LOCK_OFFSET.load()),
        _ => 0,
    }
}

/// The write section open on the exec_update_lock at `lock`, as the wait on it that begins
/// now names its holder (`--stacks`): `Holder::pack`ed, 0 when none is open.
#[inline(always)]
pub fn holder_of(lock: u64) -> u64 {
    if TRACE_STACKS.load() == 0 || lock == 0 {
        return 0;
    }
    // SAFETY: read-only uses of map values.
    let Some(&tgid) = (unsafe { SECTION_LOCKS.get(lock) }) else {
        return 0;
    };
    // SAFETY: as above.
    match unsafe { WRITERS.get(tgid) } {
        // The section must be on this very lock: an address freed and reused by another
        // process would otherwise name a stale tgid.
        Some(s) if s.end_ns == 0 && s.lock == lock => Holder { tgid, kind: s.kind }.pack(),
        _ => 0,
    }
}

/// The process's write section, while it is open.
#[inline(always)]
fn open_section_of(tgid: u32) -> Option<&'static mut WriteSection> {
    // SAFETY: a live map value; only the process's own writers touch it.
    let section = unsafe { &mut *WRITERS.get_ptr_mut(tgid)? };
    (section.end_ns == 0).then_some(section)
}

/// Closes an open write section and counts how long it was held, by kind (and by stack).
#[inline(always)]
fn close_section(section: &mut WriteSection) {
    let now = now_ns();
    section.end_ns = now;
    let held = now.wrapping_sub(section.start_ns);
    let who = if section.kind == writer::TSYNC {
        who::TSYNC
    } else {
        who::EXEC
    };
    count_stack(|| (section.stack, 0), who, 0, held);
    if let Some(counters) = cpu_counters() {
        // SAFETY: this CPU's counters; several programs write these cells, hence the atomics.
        let counters = unsafe { &mut *counters };
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

/// The process (pid2 first, then pid1) whose write section (exec or TSYNC) overlapped the
/// call that ended at `now`, if any, and that section: the process's current one, or the
/// one before it (the writer may have opened its next section since `now`).
#[inline(always)]
pub fn writer_of(call: &ThreadState, now: u64) -> Option<(u32, &'static WriteSection)> {
    let overlaps =
        |s: &WriteSection| s.start_ns <= now && (s.end_ns == 0 || s.end_ns >= call.start_ns);
    for pid in [call.pid2, call.pid1] {
        let tgid = pid as u32;
        // SAFETY: read-only use of a map value.
        let current = unsafe { WRITERS.get(tgid) };
        if let Some(s) = current
            && overlaps(s)
        {
            return Some((tgid, s));
        }
        if current.is_some_and(|s| s.start_ns > now)
            // SAFETY: read-only use of a map value.
            && let Some(s) = unsafe { PREVIOUS_SECTIONS.get(tgid) }
            && overlaps(s)
        {
            return Some((tgid, s));
        }
    }
    None
}
