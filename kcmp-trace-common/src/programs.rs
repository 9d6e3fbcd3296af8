//! The eBPF programs' names: one table for both sides. Userspace loads and attaches programs
//! by these names; the eBPF crate checks at compile time ([`named_as!`](crate::named_as))
//! that each of its programs, maps and globals is named as the table (and `maps`) says.

use crate::reader::PROC_READERS;

/// The two programs on one end of a hooked kernel function: a trampoline program (fentry at
/// entry, fexit at return) and a kprobe program (kprobe at entry, kretprobe at return).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub trampoline: &'static str,
    pub kprobe: &'static str,
}

const fn pair(trampoline: &'static str, kprobe: &'static str) -> Pair {
    Pair { trampoline, kprobe }
}

/// kcmp's syscall tracepoints.
pub const KCMP_TP_ENTER: &str = "kcmp_tp_enter";
pub const KCMP_TP_EXIT: &str = "kcmp_tp_exit";
/// kcmp's syscall wrapper.
pub const KCMP_ENTRY: Pair = pair("kcmp_fentry", "kcmp_kprobe");
pub const KCMP_RETURN: Pair = pair("kcmp_fexit", "kcmp_kretprobe");
/// exec_update_speculate_try_begin() and _retry()'s verdicts (direct strategy).
pub const SPEC_BEGIN_RETURN: Pair = pair("spec_begin_fexit", "spec_begin_kretprobe");
pub const SPEC_RETRY_RETURN: Pair = pair("spec_retry_fexit", "spec_retry_kretprobe");
/// ptrace_may_access() (infer strategy).
pub const PERM_ENTRY: Pair = pair("perm_fentry", "perm_kprobe");
/// exec_update_lock waits: down_read_killable() and lockdep's nested variant.
pub const LOCK_ENTRY: Pair = pair("lock_fentry", "lock_kprobe");
pub const LOCK_RETURN: Pair = pair("lock_fexit", "lock_kretprobe");
pub const LOCK_NESTED_ENTRY: Pair = pair("lock_nested_fentry", "lock_nested_kprobe");
pub const LOCK_NESTED_RETURN: Pair = pair("lock_nested_fexit", "lock_nested_kretprobe");
/// exec_update_lock waits where they happen: the `lock:contention_begin` and
/// `contention_end` tracepoints, which fire only for a contended lock (raw tracepoints,
/// attached through a bpf() link).
pub const CONTENTION_BEGIN: &str = "contend_begin";
pub const CONTENTION_END: &str = "contend_end";
/// exec's write section: begin_new_exec() to setup_new_exec().
pub const EXEC_BEGIN_ENTRY: Pair = pair("exec_begin_fentry", "exec_begin_kprobe");
pub const EXEC_BEGIN_RETURN: Pair = pair("exec_begin_fexit", "exec_begin_kretprobe");
pub const EXEC_SETUP_RETURN: Pair = pair("exec_setup_fexit", "exec_setup_kretprobe");
/// Landlock TSYNC's write section: landlock_restrict_sibling_threads().
pub const TSYNC_ENTRY: Pair = pair("tsync_fentry", "tsync_kprobe");
pub const TSYNC_RETURN: Pair = pair("tsync_fexit", "tsync_kretprobe");
/// The /proc readers' functions (`reader::ProcReader::function`), by `ProcReader` index.
pub const READER_ENTRY: [Pair; PROC_READERS] = [
    pair("rd_stack_fentry", "rd_stack_kprobe"),
    pair("rd_syscall_fentry", "rd_syscall_kprobe"),
    pair("rd_wchan_fentry", "rd_wchan_kprobe"),
];
pub const READER_RETURN: [Pair; PROC_READERS] = [
    pair("rd_stack_fexit", "rd_stack_kretprobe"),
    pair("rd_syscall_fexit", "rd_syscall_kretprobe"),
    pair("rd_wchan_fexit", "rd_wchan_kretprobe"),
];

/// Sends the events a CPU staged; run by userspace with BPF_PROG_TEST_RUN, never attached.
pub const FLUSH_EVENTS: &str = "flush_events";
/// The comm read events make, alone: the verifier probe for direct comm reads, and a step
/// of the bench's cost ladder. Never attached by a tracer.
pub const COMM_READ: &str = "comm_read";

/// The pairs on functions' entries, then those on their returns.
const ENTRY_PAIRS: [Pair; 9] = [
    KCMP_ENTRY,
    PERM_ENTRY,
    LOCK_ENTRY,
    LOCK_NESTED_ENTRY,
    EXEC_BEGIN_ENTRY,
    TSYNC_ENTRY,
    READER_ENTRY[0],
    READER_ENTRY[1],
    READER_ENTRY[2],
];
const RETURN_PAIRS: [Pair; 11] = [
    KCMP_RETURN,
    SPEC_BEGIN_RETURN,
    SPEC_RETRY_RETURN,
    LOCK_RETURN,
    LOCK_NESTED_RETURN,
    EXEC_BEGIN_RETURN,
    EXEC_SETUP_RETURN,
    TSYNC_RETURN,
    READER_RETURN[0],
    READER_RETURN[1],
    READER_RETURN[2],
];

/// The function hooks' pairs.
const PAIRS: [Pair; ENTRY_PAIRS.len() + RETURN_PAIRS.len()] = {
    let mut pairs = [KCMP_ENTRY; ENTRY_PAIRS.len() + RETURN_PAIRS.len()];
    let mut i = 0;
    while i < ENTRY_PAIRS.len() {
        pairs[i] = ENTRY_PAIRS[i];
        i += 1;
    }
    let mut i = 0;
    while i < RETURN_PAIRS.len() {
        pairs[ENTRY_PAIRS.len() + i] = RETURN_PAIRS[i];
        i += 1;
    }
    pairs
};

/// The tracer's programs that are no pair: kcmp's syscall tracepoints and the lock
/// contention tracepoints.
const SINGLES: [&str; 4] = [
    KCMP_TP_ENTER,
    KCMP_TP_EXIT,
    CONTENTION_BEGIN,
    CONTENTION_END,
];

/// Every hook program of the tracer's object (`kcmp-trace-probes`): the single programs and
/// both programs of every pair.
pub const HOOKS: [&str; SINGLES.len() + 2 * PAIRS.len()] = {
    let mut names = [KCMP_TP_ENTER; SINGLES.len() + 2 * PAIRS.len()];
    let mut i = 0;
    while i < SINGLES.len() {
        names[i] = SINGLES[i];
        i += 1;
    }
    let mut i = 0;
    while i < PAIRS.len() {
        names[SINGLES.len() + 2 * i] = PAIRS[i].trampoline;
        names[SINGLES.len() + 1 + 2 * i] = PAIRS[i].kprobe;
        i += 1;
    }
    names
};

/// The bench's object (`kcmp-trace-bench-probes`): do-nothing programs of each kind, and
/// the steps of the cost ladder (with [`COMM_READ`]).
pub mod bench {
    use super::{Pair, pair};

    pub const NOOP_TP: &str = "noop_tp";
    pub const NOOP_RAW_TP: &str = "noop_raw_tp";
    pub const NOOP_ENTRY: Pair = pair("noop_fentry", "noop_kprobe");
    pub const NOOP_RETURN: Pair = pair("noop_fexit", "noop_kretprobe");
    pub const COST_PID_TGID: &str = "cost_pid_tgid";
    pub const COST_CLOCK: &str = "cost_clock";
    pub const COST_THREAD: &str = "cost_thread";
    pub const COST_TOTALS: &str = "cost_totals";
    pub const COST_COUNTERS: &str = "cost_counters";
    pub const COST_EVENT: &str = "cost_event";
    /// The bench's own programs: none of them is in the tracer's object.
    pub const ALL: [&str; 12] = [
        NOOP_TP,
        NOOP_RAW_TP,
        NOOP_ENTRY.trampoline,
        NOOP_ENTRY.kprobe,
        NOOP_RETURN.trampoline,
        NOOP_RETURN.kprobe,
        COST_PID_TGID,
        COST_CLOCK,
        COST_THREAD,
        COST_TOTALS,
        COST_COUNTERS,
        COST_EVENT,
    ];

    /// The do-nothing program of the same kind as a tracer's hook program (tracepoint, raw
    /// tracepoint, entry or return of a function, by trampoline or kprobe): what the floor
    /// attaches in its place.
    pub fn floor_twin(program: &str) -> Option<&'static str> {
        let on = |pairs: &[Pair], noop: Pair| {
            pairs.iter().find_map(|pair| {
                if pair.trampoline == program {
                    Some(noop.trampoline)
                } else if pair.kprobe == program {
                    Some(noop.kprobe)
                } else {
                    None
                }
            })
        };
        if [super::KCMP_TP_ENTER, super::KCMP_TP_EXIT].contains(&program) {
            Some(NOOP_TP)
        } else if [super::CONTENTION_BEGIN, super::CONTENTION_END].contains(&program) {
            Some(NOOP_RAW_TP)
        } else {
            on(&super::ENTRY_PAIRS, NOOP_ENTRY).or_else(|| on(&super::RETURN_PAIRS, NOOP_RETURN))
        }
    }
}

/// Whether two names are the same, in a const context (`str` equality is not const).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fails the build unless an item (program, map or global) is named as the table says: the
/// eBPF crate names its items by identifier, userspace finds them by these strings.
#[macro_export]
macro_rules! named_as {
    ($item:ident, $name:expr) => {
        const _: () = assert!(
            $crate::programs::same(stringify!($item), $name),
            concat!(stringify!($item), " is not named as kcmp_trace_common says")
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_stay_distinct_as_the_kernel_keeps_them() {
        // The kernel keeps 15 bytes of a program's name (BPF_OBJ_NAME_LEN - 1): loaded
        // programs are told apart by what is left.
        let kept = |n: &'static str| &n[..n.len().min(15)];
        for (i, a) in HOOKS.iter().enumerate() {
            assert!(!a.is_empty());
            for b in &HOOKS[i + 1..] {
                assert_ne!(kept(a), kept(b), "{a} and {b}");
            }
        }
    }

    #[test]
    fn every_hook_has_a_floor_twin_of_its_kind() {
        use bench::*;
        for hook in HOOKS {
            let twin = floor_twin(hook).unwrap_or_else(|| panic!("{hook} has no twin"));
            // Program names end in their kind.
            let kind = |name: &'static str| name.rsplit('_').next();
            match twin {
                NOOP_TP => assert!(hook.ends_with("_tp_enter") || hook.ends_with("_tp_exit")),
                NOOP_RAW_TP => assert!(hook.starts_with("contend_")),
                _ => assert_eq!(kind(hook), kind(twin), "{hook}'s twin {twin}"),
            }
        }
        assert_eq!(floor_twin(FLUSH_EVENTS), None);
    }

    #[test]
    fn same_compares_whole_names() {
        assert!(same("COUNTERS", "COUNTERS"));
        assert!(!same("COUNTERS", "COUNTER"));
        assert!(!same("lock_fentry", "lock_fexit_"));
    }
}
