//! kcmp-trace's in-kernel half: programs on kcmp's entry and exit (syscall tracepoints,
//! kprobes or fentry), on the exec_update_seq helpers, on contended locks, on the permission
//! checks and lock calls inside kcmp (infer strategy, /proc readers), and on the exec side.
//!
//! Everything runs on every kcmp call of every process, and the lock hooks on every
//! contention (or, where they are probes, every call) of the whole system, so each program
//! filters first, touches one per-thread entry and one per-CPU counter block, and does
//! anything costlier (comm, ring buffer) only when it must.
#![no_std]
#![no_main]
// Atomic adds (calls::cells): the BPF target has no compare-and-swap, so no core atomics.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod calls;
mod support;
mod tp;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext, tracing::StackIdContext,
    },
};
use calls::{
    kcmp::{self, KcmpArgs},
    locks, readers, sections,
    stacks::take_stack,
    trail,
};
use kcmp_trace_common::{arch::Arch, maps::outside, named_as, programs, reader::ProcReader};
use tp::{tp_args, tp_ret};

named_as!(kcmp_tp_enter, programs::KCMP_TP_ENTER);
named_as!(kcmp_tp_exit, programs::KCMP_TP_EXIT);
named_as!(kcmp_fentry, programs::KCMP_ENTRY.trampoline);
named_as!(kcmp_kprobe, programs::KCMP_ENTRY.kprobe);
named_as!(kcmp_fexit, programs::KCMP_RETURN.trampoline);
named_as!(kcmp_kretprobe, programs::KCMP_RETURN.kprobe);

#[tracepoint]
pub fn kcmp_tp_enter(ctx: TracePointContext) -> u32 {
    kcmp::on_enter(&ctx, &tp_args(&ctx));
    0
}

#[tracepoint]
pub fn kcmp_tp_exit(ctx: TracePointContext) -> u32 {
    kcmp::on_exit(&ctx, tp_ret(&ctx));
    0
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

/// The `u64` at `offset` in a `struct pt_regs`; 0 if unreadable.
#[inline(always)]
fn regs_word(regs: *const pt_regs, offset: usize) -> u64 {
    // SAFETY: only an address is computed here; bpf_probe_read_kernel checks it.
    unsafe { bpf_probe_read_kernel(regs.cast::<u8>().add(offset).cast::<u64>()) }.unwrap_or(0)
}

/// What an entry hook may ask of the call it sees; read only on the path that needs it, so
/// a hook that returns early pays for nothing. Its kernel stack is the context's.
trait Site: StackIdContext {
    /// The `n`th argument, as a word.
    fn arg_word(&self, n: usize) -> u64;
}

impl Site for FEntryContext {
    fn arg_word(&self, n: usize) -> u64 {
        self.arg(n)
    }
}

impl Site for ProbeContext {
    fn arg_word(&self, n: usize) -> u64 {
        self.arg(n).unwrap_or(0)
    }
}

/// A hooked function's return: its raw return register, and where it returned to.
trait ReturnSite {
    fn ret_word(&self) -> u64;
    /// The address in the caller it returned to; 0 where it is not seen (a trampoline
    /// program).
    fn caller(&self) -> u64;
}

impl ReturnSite for FExitContext {
    fn ret_word(&self) -> u64 {
        self.ret::<u64>().unwrap_or(0)
    }

    fn caller(&self) -> u64 {
        0
    }
}

impl ReturnSite for RetProbeContext {
    fn ret_word(&self) -> u64 {
        self.ret::<u64>()
    }

    fn caller(&self) -> u64 {
        regs_word(self.regs, ARCH.ip_offset())
    }
}

#[fentry]
pub fn kcmp_fentry(ctx: FEntryContext) -> u32 {
    kcmp::on_enter(&ctx, &args_from_regs(ctx.arg(0)));
    0
}

#[fexit]
pub fn kcmp_fexit(ctx: FExitContext) -> u32 {
    let ret = ctx.ret::<i64>().unwrap_or(0);
    kcmp::on_exit(&ctx, ret);
    0
}

#[kprobe]
pub fn kcmp_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(regs) = ctx.arg::<*const pt_regs>(0) {
        kcmp::on_enter(&ctx, &args_from_regs(regs));
    }
    0
}

#[kretprobe]
pub fn kcmp_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret = ctx.ret::<i64>();
    kcmp::on_exit(&ctx, ret);
    0
}

/// A kernel function's entry, as an fentry and a kprobe program sharing one handler (given
/// the call's `Site`), named as `programs` names the pair.
macro_rules! entry_hook {
    ($pair:expr => $fentry:ident, $kprobe:ident, $handler:expr) => {
        named_as!($fentry, $pair.trampoline);
        named_as!($kprobe, $pair.kprobe);

        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            ($handler)(&ctx);
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            ($handler)(&ctx);
            0
        }
    };
}

/// A kernel function's return, as an fexit and a kretprobe program; the handler gets the
/// raw return register and the `ReturnSite`.
macro_rules! return_hook {
    ($pair:expr => $fexit:ident, $kretprobe:ident, $handler:expr) => {
        named_as!($fexit, $pair.trampoline);
        named_as!($kretprobe, $pair.kprobe);

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            ($handler)(ctx.ret_word(), &ctx);
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            ($handler)(ctx.ret_word(), &ctx);
            0
        }
    };
}

/// A C `bool` lives in the low byte of the return register; the rest is undefined.
#[inline(always)]
fn c_bool(ret: u64) -> bool {
    ret & 0xff != 0
}

// The exec_update_seq helpers' verdicts (direct strategy), and other callers' by address.
return_hook!(programs::SPEC_BEGIN_RETURN => spec_begin_fexit, spec_begin_kretprobe,
    |r, site: &_| trail::on_spec_begin(c_bool(r), || ReturnSite::caller(site)));
return_hook!(programs::SPEC_RETRY_RETURN => spec_retry_fexit, spec_retry_kretprobe,
    |r, site: &_| trail::on_spec_retry(c_bool(r), || ReturnSite::caller(site)));

// Permission checks and exec_update_lock waits inside kcmp and the /proc readers (infer
// strategy, lock wait), and other callers' exec_update_lock waits.
entry_hook!(programs::PERM_ENTRY => perm_fentry, perm_kprobe, |_: &_| trail::on_perm_check());
entry_hook!(programs::LOCK_ENTRY => lock_fentry, lock_kprobe,
    |site: &_| lock_enter(outside::LOCK_ENTRY, site));
return_hook!(programs::LOCK_RETURN => lock_fexit, lock_kretprobe,
    |_, site: &_| lock_exit(outside::LOCK_RETURN, site));
// An fentry program is bound to one function: lockdep kernels' nested variant needs its own.
entry_hook!(
    programs::LOCK_NESTED_ENTRY => lock_nested_fentry,
    lock_nested_kprobe,
    |site: &_| lock_enter(outside::LOCK_NESTED_ENTRY, site)
);
return_hook!(programs::LOCK_NESTED_RETURN => lock_nested_fexit, lock_nested_kretprobe,
    |_, site: &_| lock_exit(outside::LOCK_NESTED_RETURN, site));

named_as!(contend_begin, programs::CONTENTION_BEGIN);
named_as!(contend_end, programs::CONTENTION_END);

/// lock:contention_begin(lock, flags): a wait for a contended lock begins. An uncontended
/// acquisition fires nothing, so a process that never waits pays nothing.
#[raw_tracepoint(tracepoint = "contention_begin")]
pub fn contend_begin(ctx: RawTracePointContext) -> u32 {
    locks::on_contention_begin(ctx.arg::<u64>(0), ctx.arg::<u64>(1) as u32, || {
        take_stack(&ctx)
    });
    0
}

/// lock:contention_end(lock, ret): the wait ended, acquired or not.
#[raw_tracepoint(tracepoint = "contention_end")]
pub fn contend_end(ctx: RawTracePointContext) -> u32 {
    locks::on_contention_end(ctx.arg::<u64>(0));
    0
}

/// down_read_killable(sem): its rwsem, read only if a reader or other caller needs it.
#[inline(always)]
fn lock_enter(slot: u32, site: &impl Site) {
    locks::on_lock_enter(slot, || site.arg_word(0), || take_stack(site));
}

/// down_read_killable() returned: where to, read only for another caller's wait.
#[inline(always)]
fn lock_exit(slot: u32, site: &impl ReturnSite) {
    locks::on_lock_exit(slot, || site.caller());
}

// The write side: an exec holds exec_update_lock from exec_mmap() (inside begin_new_exec())
// until setup_new_exec(), or until begin_new_exec() fails.
entry_hook!(programs::EXEC_BEGIN_ENTRY => exec_begin_fentry, exec_begin_kprobe,
    |site: &_| sections::on_exec_begin(|| take_stack(site)));
return_hook!(programs::EXEC_BEGIN_RETURN => exec_begin_fexit, exec_begin_kretprobe,
|r: u64, _: &_| {
    if r as i32 != 0 {
        sections::on_exec_end()
    }
});
return_hook!(programs::EXEC_SETUP_RETURN => exec_setup_fexit, exec_setup_kretprobe,
    |_, _: &_| sections::on_exec_end());

// The other writer (7.2): Landlock TSYNC holds exec_update_lock for writing in
// landlock_restrict_sibling_threads(), from its down_write_trylock() to its up_write().
entry_hook!(programs::TSYNC_ENTRY => tsync_fentry, tsync_kprobe, |site: &_| sections::on_tsync_begin(|| take_stack(site)));
return_hook!(programs::TSYNC_RETURN => tsync_fexit, tsync_kretprobe,
    |r: u64, _: &_| sections::on_tsync_end(r as i32));

/// The /proc readers: `proc_pid_<file>(m, ns, pid, task)` opens a call on entry (its task
/// names the one exec_update_lock it may wait for) and classifies it on return.
macro_rules! reader_hooks {
    ($reader:expr => $fentry:ident, $kprobe:ident, $fexit:ident, $kretprobe:ident) => {
        entry_hook!(programs::READER_ENTRY[$reader as usize] => $fentry, $kprobe,
            |site: &_| readers::on_reader_enter($reader, Site::arg_word(site, 3)));
        return_hook!(programs::READER_RETURN[$reader as usize] => $fexit, $kretprobe,
            |r: u64, _: &_| readers::on_reader_exit($reader, r as i32 as i64));
    };
}

reader_hooks!(ProcReader::Stack => rd_stack_fentry, rd_stack_kprobe, rd_stack_fexit, rd_stack_kretprobe);
reader_hooks!(ProcReader::Syscall => rd_syscall_fentry, rd_syscall_kprobe, rd_syscall_fexit, rd_syscall_kretprobe);
reader_hooks!(ProcReader::Wchan => rd_wchan_fentry, rd_wchan_kprobe, rd_wchan_fexit, rd_wchan_kretprobe);
