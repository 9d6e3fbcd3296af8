//! What the probes inside a call mark on its trail (`classify::Trail`): the exec_update_seq
//! helpers' verdicts (direct strategy) and the permission checks (infer strategy). Outside
//! any call, the helpers' verdicts count for other callers.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use kcmp_trace_common::{
    classify::{LOCK, PERM_BEFORE_LOCK, SPEC_BEGIN_FAILED, SPEC_BEGIN_OK, SPEC_RETRY},
    maps::outside,
    reader::verdict,
};

use super::{
    maps::TRACE_READERS,
    others::count_other,
    thread::{in_call, in_kcmp_or_outside, reader_thread, traced},
};

/// exec_update_speculate_try_begin() returned: a call's trail, or another caller's count.
#[inline(always)]
pub fn on_spec_begin(ok: bool, caller: impl FnOnce() -> u64) {
    if let Some(call) = in_call() {
        call.trail |= if ok { SPEC_BEGIN_OK } else { SPEC_BEGIN_FAILED };
    } else if TRACE_READERS.load() != 0 && traced((bpf_get_current_pid_tgid() >> 32) as u32) {
        let v = if ok {
            verdict::BEGIN_OK
        } else {
            verdict::BEGIN_FAILED
        };
        count_other(
            caller(),
            |c| c.verdicts.get_mut(v),
            |c| c.verdicts.get_mut(v),
            1,
        );
    }
}

/// exec_update_speculate_retry() returned.
#[inline(always)]
pub fn on_spec_retry(retry: bool, caller: impl FnOnce() -> u64) {
    if let Some(call) = in_call() {
        if retry {
            call.trail |= SPEC_RETRY;
        }
    } else if TRACE_READERS.load() != 0 && traced((bpf_get_current_pid_tgid() >> 32) as u32) {
        let v = if retry {
            verdict::RETRY
        } else {
            verdict::VALID
        };
        count_other(
            caller(),
            |c| c.verdicts.get_mut(v),
            |c| c.verdicts.get_mut(v),
            1,
        );
    }
}

/// ptrace_may_access() was called.
#[inline(always)]
pub fn on_perm_check() {
    let call = in_kcmp_or_outside(outside::PERM_ENTRY)
        .or_else(|| reader_thread().filter(|t| t.active != 0));
    if let Some(call) = call
        && call.trail & LOCK == 0
    {
        call.trail |= PERM_BEFORE_LOCK;
    }
}
