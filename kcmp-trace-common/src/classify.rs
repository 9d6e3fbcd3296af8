//! Which path a kcmp call took, from what the probes saw between its entry and exit.
//!
//! The eBPF side only sets bits in a per-call [`Trail`]; this pure function turns the trail
//! into an [`Outcome`] at exit, so the rules are written (and tested) once.
//!
//! The kernel code being classified (kernel/kcmp.c with the exec_update_seq series):
//!
//! ```text
//! lookup pid1, pid2                           -> -ESRCH: no_task, nothing else runs
//! if (try_begin(sig1) && try_begin(sig2)) {   -> a false: busy (writer active)
//!     kcmp_access()                           -> ptrace_may_access() x1..2, then compare
//!     if (!retry(sig1) && !retry(sig2))       -> both false: fast, return
//! }                                           -> a true: retry
//! kcmp_lock()                                 -> down_read_killable() x1..2; -EINTR: interrupted
//! kcmp_access()                               -> ptrace_may_access() x1..2, then compare
//! ```
//!
//! Without the series (6.1 and earlier) kcmp_lock() comes first, then kcmp_access(): locked.
//! There a call's path follows from its result alone (the `stock` strategy): -ESRCH before
//! the lock, -EINTR in it, anything else after it, so no probe inside kcmp is needed.
//!
//! The kernel may skip a probe's run (a preempted fentry program, a kretprobe out of
//! instances): a trail can lack a bit it should have. The rules never read an absence as
//! `fast` when what was seen contradicts it: a lock on a call whose helpers say it
//! validated, or checks without a lock on a kernel that always locks first, leave the call
//! `unknown` (counted as unclassified) rather than invent a path. Nor do they give a
//! kernel without the series a path it does not have: a lock seen there is `locked`.

use crate::outcome::Outcome;

/// Bits the probes set while a call is in flight.
pub type Trail = u32;

/// exec_update_speculate_try_begin() returned true.
pub const SPEC_BEGIN_OK: Trail = 1 << 0;
/// exec_update_speculate_try_begin() returned false: a writer was active.
pub const SPEC_BEGIN_FAILED: Trail = 1 << 1;
/// exec_update_speculate_retry() returned true: a writer ran since the snapshot.
pub const SPEC_RETRY: Trail = 1 << 2;
/// ptrace_may_access() ran before any exec_update_lock was requested: speculation ran.
pub const PERM_BEFORE_LOCK: Trail = 1 << 3;
/// down_read_killable() (an exec_update_lock) was requested, or returned: either probe
/// sets it, so one skipped run does not hide the lock.
pub const LOCK: Trail = 1 << 4;

/// How the trail was gathered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "json",
    derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema),
    serde(rename_all = "lowercase")
)]
#[repr(u8)]
pub enum Strategy {
    /// Syscall boundary only: no trail.
    Boundary = 0,
    /// Return values of the speculation helpers (exact).
    Direct = 1,
    /// Order of ptrace_may_access() and down_read_killable() (for inlined helpers).
    Infer = 2,
    /// A kernel without the series: every call that finds both tasks locks first, so its
    /// result alone tells its path (exact, with no probe inside kcmp).
    Stock = 3,
}

impl Strategy {
    pub fn from_u8(v: u8) -> Strategy {
        match v {
            1 => Strategy::Direct,
            2 => Strategy::Infer,
            3 => Strategy::Stock,
            _ => Strategy::Boundary,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Boundary => "boundary",
            Strategy::Direct => "direct",
            Strategy::Infer => "infer",
            Strategy::Stock => "stock",
        }
    }
}

const ESRCH: i64 = 3;
const EINTR: i64 = 4;

/// The outcome of a call that returned `ret` after leaving `trail`. `series`: the kernel
/// has the exec_update_seq fast path (decides busy vs locked for a lock taken first).
#[inline(always)]
pub fn classify(strategy: Strategy, series: bool, trail: Trail, ret: i64) -> Outcome {
    let locked_path = |o: Outcome| {
        if ret == -EINTR {
            Outcome::Interrupted
        } else {
            o
        }
    };
    match strategy {
        Strategy::Boundary => Outcome::Unknown,
        Strategy::Stock if ret == -ESRCH => Outcome::NoTask,
        Strategy::Stock => locked_path(Outcome::Locked),
        Strategy::Direct => {
            if trail & SPEC_BEGIN_FAILED != 0 {
                locked_path(Outcome::Busy)
            } else if trail & SPEC_RETRY != 0 {
                locked_path(Outcome::Retry)
            } else if trail & SPEC_BEGIN_OK != 0 && trail & LOCK == 0 {
                Outcome::Fast
            } else if trail & SPEC_BEGIN_OK != 0 {
                // Validated speculation never locks: a failed try_begin or a true retry
                // was skipped.
                Outcome::Unknown
            } else if trail & LOCK != 0 {
                locked_path(Outcome::Locked)
            } else if ret == -ESRCH {
                Outcome::NoTask
            } else {
                Outcome::Unknown
            }
        }
        Strategy::Infer => {
            let speculated = trail & PERM_BEFORE_LOCK != 0;
            let locked = trail & LOCK != 0;
            match (speculated, locked) {
                (true, false) if series => Outcome::Fast,
                // Without the series every call that reaches the checks locked first: the
                // lock's probes were skipped.
                (true, false) => Outcome::Unknown,
                (true, true) if series => locked_path(Outcome::Retry),
                // Checks before any lock seen, then a lock: the first lock's probes were
                // skipped. Without the series the locks always come first, so the call
                // locked; never a retry on a kernel that has none.
                (true, true) => locked_path(Outcome::Locked),
                (false, true) if series => locked_path(Outcome::Busy),
                (false, true) => locked_path(Outcome::Locked),
                (false, false) if ret == -ESRCH => Outcome::NoTask,
                (false, false) => Outcome::Unknown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;
    use Strategy::*;

    const EPERM: i64 = -1;

    #[test]
    fn direct_reads_the_helpers_verdicts() {
        // Both snapshots taken, both revalidated.
        assert_eq!(classify(Direct, true, SPEC_BEGIN_OK, 0), Fast);
        // EPERM from the checks inside speculation still took the fast path.
        assert_eq!(classify(Direct, true, SPEC_BEGIN_OK, EPERM), Fast);
        // The second try_begin failed after the first succeeded.
        assert_eq!(
            classify(Direct, true, SPEC_BEGIN_OK | SPEC_BEGIN_FAILED | LOCK, 0),
            Busy
        );
        assert_eq!(
            classify(Direct, true, SPEC_BEGIN_OK | SPEC_RETRY | LOCK, 1),
            Retry
        );
        assert_eq!(
            classify(Direct, true, SPEC_BEGIN_FAILED | LOCK, -EINTR),
            Interrupted
        );
        assert_eq!(classify(Direct, true, 0, -ESRCH), NoTask);
        assert_eq!(classify(Direct, false, LOCK, 0), Locked);
        assert_eq!(classify(Direct, true, 0, 0), Unknown);
    }

    #[test]
    fn a_skipped_probe_never_makes_a_call_fast() {
        // A retry whose true retry() was skipped: validated speculation, yet a lock.
        assert_eq!(classify(Direct, true, SPEC_BEGIN_OK | LOCK, 0), Unknown);
        // Checks without a lock on a kernel that always locks first.
        assert_eq!(classify(Infer, false, PERM_BEFORE_LOCK, 0), Unknown);
        // Checks seen before the lock there: the lock's first runs were skipped, and the
        // call locked (there is no retry without the series).
        assert_eq!(classify(Infer, false, PERM_BEFORE_LOCK | LOCK, 0), Locked);
        assert_eq!(
            classify(Infer, false, PERM_BEFORE_LOCK | LOCK, -EINTR),
            Interrupted
        );
        // Both try_begin runs skipped on a fast call: nothing to go by.
        assert_eq!(classify(Direct, true, 0, 0), Unknown);
    }

    #[test]
    fn infer_reads_the_order_of_checks_and_locks() {
        assert_eq!(classify(Infer, true, PERM_BEFORE_LOCK, 0), Fast);
        // EPERM from the first check: one ptrace_may_access, no lock.
        assert_eq!(classify(Infer, true, PERM_BEFORE_LOCK, EPERM), Fast);
        // Revalidation failed: checks, then the locks (checks again after them).
        assert_eq!(classify(Infer, true, PERM_BEFORE_LOCK | LOCK, 2), Retry);
        assert_eq!(
            classify(Infer, true, PERM_BEFORE_LOCK | LOCK, -EINTR),
            Interrupted
        );
        // A writer was active: locks first, on a kernel with the series.
        assert_eq!(classify(Infer, true, LOCK, 0), Busy);
        // The same lock first on a kernel without it.
        assert_eq!(classify(Infer, false, LOCK, 0), Locked);
        assert_eq!(classify(Infer, false, LOCK, EPERM), Locked);
        assert_eq!(classify(Infer, false, LOCK, -EINTR), Interrupted);
        assert_eq!(classify(Infer, true, 0, -ESRCH), NoTask);
        assert_eq!(classify(Infer, false, 0, -ESRCH), NoTask);
        assert_eq!(classify(Infer, true, 0, 0), Unknown);
    }

    #[test]
    fn stock_reads_the_result_alone() {
        assert_eq!(classify(Stock, false, 0, 0), Locked);
        assert_eq!(classify(Stock, false, 0, EPERM), Locked);
        assert_eq!(classify(Stock, false, 0, -EINTR), Interrupted);
        assert_eq!(classify(Stock, false, 0, -ESRCH), NoTask);
        // A lock probe's bit, where one is attached, changes nothing.
        assert_eq!(classify(Stock, false, LOCK, 1), Locked);
        assert_eq!(Strategy::from_u8(Stock as u8), Stock);
    }

    #[test]
    fn boundary_knows_nothing_of_paths() {
        assert_eq!(classify(Boundary, true, PERM_BEFORE_LOCK, 0), Unknown);
    }
}
