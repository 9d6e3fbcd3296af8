//! The records of syscalls/sys_{enter,exit}_kcmp as tracepoint programs read them.

use aya_ebpf::{EbpfContext as _, programs::TracePointContext};

use crate::calls::kcmp::KcmpArgs;

// Field offsets (see the tracepoints' `format` in tracefs): the common header and
// __syscall_nr, then one 8-byte slot per argument, or the return value.
const TP_ARG0: usize = 16;
const TP_RET: usize = 16;

/// kcmp's arguments from a sys_enter_kcmp record.
#[inline(always)]
pub fn tp_args(ctx: &TracePointContext) -> KcmpArgs {
    // SAFETY: tracepoint programs may read their record directly (no probe-read helper call
    // per argument); the offsets are within the fixed sys_enter_kcmp record.
    let read = |n: usize| unsafe {
        *(ctx.as_ptr() as *const u8)
            .add(TP_ARG0 + 8 * n)
            .cast::<u64>()
    };
    KcmpArgs {
        pid1: read(0) as i32,
        pid2: read(1) as i32,
        raw_type: read(2) as i32 as i64,
        idx1: read(3),
        idx2: read(4),
    }
}

/// kcmp's return value from a sys_exit_kcmp record.
#[inline(always)]
pub fn tp_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as above, `ret` is the first field after __syscall_nr.
    unsafe { *(ctx.as_ptr() as *const u8).add(TP_RET).cast::<i64>() }
}
