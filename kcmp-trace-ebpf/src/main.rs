//! kcmp-trace's in-kernel half: programs on kcmp's entry and exit (syscall tracepoints,
//! kprobes or fentry), on the exec_update_seq helpers, the permission checks and lock waits
//! inside kcmp, and on the exec side.
//!
//! Everything runs on every kcmp call of every process (and the lock and permission hooks on
//! every call of those functions), so each program filters first, touches one per-thread
//! entry and one per-CPU counter block, and does anything costlier (comm, ring buffer) only
//! when it must.
#![no_std]
#![no_main]
// Atomic adds (calls.rs): the BPF target has no compare-and-swap, so no core atomics.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod calls;
mod cost;

use aya_ebpf::{
    EbpfContext as _,
    bindings::pt_regs,
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use calls::KcmpArgs;
use kcmp_trace_common::arch::Arch;

// Field offsets of syscalls/sys_{enter,exit}_kcmp (see their `format` in tracefs): the
// common header and __syscall_nr, then one 8-byte slot per argument.
const TP_ARG0: usize = 16;
const TP_RET: usize = 16;

/// kcmp's arguments from a sys_enter_kcmp record.
#[inline(always)]
fn tp_args(ctx: &TracePointContext) -> KcmpArgs {
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

#[tracepoint]
pub fn kcmp_tp_enter(ctx: TracePointContext) -> u32 {
    calls::on_enter(&ctx, &tp_args(&ctx));
    0
}

#[tracepoint]
pub fn kcmp_tp_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: as above, `ret` is the first field after __syscall_nr.
    let ret = unsafe { *(ctx.as_ptr() as *const u8).add(TP_RET).cast::<i64>() };
    calls::on_exit(&ctx, ret);
    0
}

/// Sends the events this CPU staged (`calls::flush_stage`). Never attached: userspace runs
/// it on a CPU with BPF_PROG_TEST_RUN, and reads what it did from its return value, which
/// aya's `raw_tracepoint` macro would discard.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp")]
pub fn flush_events(_ctx: *mut core::ffi::c_void) -> u32 {
    calls::flush_stage()
}

/// The architecture this object is built for: aya-build passes the userspace target's.
#[cfg(bpf_target_arch = "x86_64")]
const ARCH: Arch = Arch::X86_64;
#[cfg(bpf_target_arch = "aarch64")]
const ARCH: Arch = Arch::Aarch64;
#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("kcmp-trace's programs support bpf_target_arch x86_64 and aarch64");

/// kcmp's arguments from the `struct pt_regs *` its syscall wrapper receives
/// (`kcmp_trace_common::arch` says which registers).
#[inline(always)]
fn args_from_regs(regs: *const pt_regs) -> KcmpArgs {
    let [a0, a1, a2, a3, a4] = ARCH.syscall_arg_offsets().map(|offset| {
        // SAFETY: only an address is computed here; bpf_probe_read_kernel checks it, and a
        // failed read yields 0.
        unsafe { bpf_probe_read_kernel(regs.cast::<u8>().add(offset).cast::<u64>()) }.unwrap_or(0)
    });
    KcmpArgs {
        pid1: a0 as i32,
        pid2: a1 as i32,
        raw_type: a2 as i32 as i64,
        idx1: a3,
        idx2: a4,
    }
}

#[fentry]
pub fn kcmp_fentry(ctx: FEntryContext) -> u32 {
    calls::on_enter(&ctx, &args_from_regs(ctx.arg(0)));
    0
}

#[fexit]
pub fn kcmp_fexit(ctx: FExitContext) -> u32 {
    let ret = ctx.ret::<i64>().unwrap_or(0);
    calls::on_exit(&ctx, ret);
    0
}

#[kprobe]
pub fn kcmp_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(regs) = ctx.arg::<*const pt_regs>(0) {
        calls::on_enter(&ctx, &args_from_regs(regs));
    }
    0
}

#[kretprobe]
pub fn kcmp_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret = ctx.ret::<i64>();
    calls::on_exit(&ctx, ret);
    0
}

/// A kernel function's entry, as an fentry and a kprobe program sharing one handler.
macro_rules! entry_hook {
    ($fentry:ident, $kprobe:ident, $handler:expr) => {
        #[fentry]
        pub fn $fentry(_ctx: FEntryContext) -> u32 {
            $handler;
            0
        }

        #[kprobe]
        pub fn $kprobe(_ctx: ProbeContext) -> u32 {
            $handler;
            0
        }
    };
}

/// A kernel function's return, as an fexit and a kretprobe program; the handler gets the
/// raw return register.
macro_rules! return_hook {
    ($fexit:ident, $kretprobe:ident, $handler:expr) => {
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            ($handler)(ctx.ret::<u64>().unwrap_or(0));
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            ($handler)(ctx.ret::<u64>());
            0
        }
    };
}

/// A C `bool` lives in the low byte of the return register; the rest is undefined.
#[inline(always)]
fn c_bool(ret: u64) -> bool {
    ret & 0xff != 0
}

// The exec_update_seq helpers' verdicts (direct strategy).
return_hook!(spec_begin_fexit, spec_begin_kretprobe, |r| {
    calls::on_spec_begin(c_bool(r))
});
return_hook!(spec_retry_fexit, spec_retry_kretprobe, |r| {
    calls::on_spec_retry(c_bool(r))
});

// Permission checks and exec_update_lock waits inside kcmp (infer strategy, lock wait).
entry_hook!(perm_fentry, perm_kprobe, calls::on_perm_check());
entry_hook!(lock_fentry, lock_kprobe, calls::on_lock_enter());
return_hook!(lock_fexit, lock_kretprobe, |_| calls::on_lock_exit());
// An fentry program is bound to one function: lockdep kernels' nested variant needs its own.
entry_hook!(
    lock_nested_fentry,
    lock_nested_kprobe,
    calls::on_lock_enter()
);
return_hook!(lock_nested_fexit, lock_nested_kretprobe, |_| {
    calls::on_lock_exit()
});

// The write side: an exec holds exec_update_lock from exec_mmap() (inside begin_new_exec())
// until setup_new_exec(), or until begin_new_exec() fails.
entry_hook!(exec_begin_fentry, exec_begin_kprobe, calls::on_exec_begin());
return_hook!(exec_begin_fexit, exec_begin_kretprobe, |r: u64| {
    if r as i32 != 0 {
        calls::on_exec_end()
    }
});
return_hook!(exec_setup_fexit, exec_setup_kretprobe, |_| {
    calls::on_exec_end()
});

// The other writer (7.2): Landlock TSYNC holds exec_update_lock for writing in
// landlock_restrict_sibling_threads(), from its down_write_trylock() to its up_write().
entry_hook!(tsync_fentry, tsync_kprobe, calls::on_tsync_begin());
return_hook!(tsync_fexit, tsync_kretprobe, |r: u64| {
    calls::on_tsync_end(r as i32)
});

// Programs that do nothing, attached to the same hooks by `kcmp-trace bench`: the floor of
// what any tracer on these hooks costs, against which our own cost is measured.

#[tracepoint]
pub fn noop_tp(_ctx: TracePointContext) -> u32 {
    0
}

#[kprobe]
pub fn noop_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kretprobe]
pub fn noop_kretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

#[fentry]
pub fn noop_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit]
pub fn noop_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
