//! Which hooks to use on this kernel: the attach modes to try and in which order, the
//! programs each strategy needs, and what the chosen plan means for every number.
//!
//! Order: on a kernel whose code can be preempted anywhere (preempt=full, lazy, PREEMPT_RT)
//! kprobes come first, because a preempted trampoline (fentry/fexit) program makes the kernel
//! skip that program's other runs on the CPU; elsewhere fentry comes first (cheapest), then
//! kprobes, then the syscall tracepoints. Each is tried in turn until one attaches.
//!
//! Cost for everyone else: the hooks on functions every process calls are only those the
//! strategy needs. Direct reads the helpers, which only the series' readers call; stock
//! reads kcmp's result; lock waits are timed at the lock contention tracepoints, which fire
//! only when a lock is contended. Only infer, the /proc readers and PREEMPT_RT probe
//! down_read_killable() itself (`lock_waits`).

use kcmp_trace_common::{
    classify::Strategy,
    json,
    programs::{self, Pair},
    reader::ProcReader,
};

use crate::{
    config::{AttachRequest, StrategyRequest},
    probe::preempt::{Model, Preemption},
};

/// What the tracer attached, and what that means for the numbers it reports: as it is
/// printed, served and kept.
pub use json::plan::{Affects, AttachMode, Hook, LockWaits, Plan};

pub mod checks;

const SYSCALL_FN: &str = kcmp_trace_common::arch::NATIVE.kcmp_wrapper();
/// kcmp's syscall tracepoints, entry and exit.
const KCMP_TRACEPOINTS: [&str; 2] = ["syscalls/sys_enter_kcmp", "syscalls/sys_exit_kcmp"];

/// Modes to try, best first, and why in that order.
pub fn mode_order(
    request: AttachRequest,
    preemption: &Preemption,
) -> (&'static [AttachMode], String) {
    use AttachMode::*;
    let model = preemption.describe();
    match request {
        AttachRequest::Auto if preemption.trampolines_preemptible() => (
            &[Kprobe, Fentry, Tracepoint],
            format!(
                "kprobes first: under preemption {model} fentry/fexit programs can be preempted \
                 mid-run (assumed when unknown), and the kernel then skips their other runs on \
                 that CPU"
            ),
        ),
        AttachRequest::Auto => (
            &[Fentry, Kprobe, Tracepoint],
            format!(
                "fentry first: preemption {model} does not preempt kernel code, so trampoline \
                 programs run to completion"
            ),
        ),
        AttachRequest::Fentry if preemption.trampolines_preemptible() => (
            &[Fentry],
            format!(
                "fentry as asked, on preemption {model}: runs the kernel skips are counted and \
                 shown (prefer --attach kprobe or auto for exact counts)"
            ),
        ),
        AttachRequest::Fentry => (&[Fentry], "fentry as asked".into()),
        AttachRequest::Kprobe => (&[Kprobe], "kprobe as asked".into()),
        AttachRequest::Tracepoint => (&[Tracepoint], "tracepoint as asked".into()),
    }
}

/// Candidate (mode, strategy) pairs, best first, and why the modes are in that order. A
/// kernel without the series (`series` false) is read by its results (`stock`) unless a
/// strategy is asked for.
pub fn candidates(
    attach: AttachRequest,
    strategy: StrategyRequest,
    preemption: &Preemption,
    series: bool,
) -> (Vec<(AttachMode, Strategy)>, String) {
    let strategies: &[Strategy] = match strategy {
        StrategyRequest::Auto if !series => &[Strategy::Stock],
        StrategyRequest::Auto => &[Strategy::Direct, Strategy::Infer],
        StrategyRequest::Direct => &[Strategy::Direct],
        StrategyRequest::Infer => &[Strategy::Infer],
    };
    let (modes, why) = mode_order(attach, preemption);
    let mut out = Vec::new();
    for &mode in modes {
        if mode == AttachMode::Tracepoint {
            // The syscall boundary shows no path; only offer it when no strategy was forced.
            if strategy == StrategyRequest::Auto {
                out.push((mode, Strategy::Boundary));
            }
        } else {
            out.extend(strategies.iter().map(|&s| (mode, s)));
        }
    }
    (out, why)
}

/// What a hook observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    KcmpEntry,
    KcmpExit,
    SpecBegin,
    SpecRetry,
    PermCheck,
    LockEnter,
    LockExit,
    LockNestedEnter,
    LockNestedExit,
    ContentionBegin,
    ContentionEnd,
    ExecBegin,
    ExecBeginExit,
    ExecSetupExit,
    TsyncBegin,
    TsyncEnd,
    ReaderEnter(ProcReader),
    ReaderExit(ProcReader),
}

/// What a role's programs hook.
enum Hooked {
    /// A kernel function: its pair of programs, and whether they run at its return.
    Function(Pair, &'static str, bool),
    /// A raw tracepoint, by name, and its program.
    RawTracepoint(&'static str, &'static str),
}

impl Role {
    fn spec(self) -> Hooked {
        use Hooked::Function;
        use programs::*;
        match self {
            Role::KcmpEntry => Function(KCMP_ENTRY, SYSCALL_FN, false),
            Role::KcmpExit => Function(KCMP_RETURN, SYSCALL_FN, true),
            Role::SpecBegin => Function(SPEC_BEGIN_RETURN, "exec_update_speculate_try_begin", true),
            Role::SpecRetry => Function(SPEC_RETRY_RETURN, "exec_update_speculate_retry", true),
            Role::PermCheck => Function(PERM_ENTRY, "ptrace_may_access", false),
            Role::LockEnter => Function(LOCK_ENTRY, "down_read_killable", false),
            Role::LockExit => Function(LOCK_RETURN, "down_read_killable", true),
            Role::LockNestedEnter => {
                Function(LOCK_NESTED_ENTRY, "down_read_killable_nested", false)
            }
            Role::LockNestedExit => Function(LOCK_NESTED_RETURN, "down_read_killable_nested", true),
            Role::ExecBegin => Function(EXEC_BEGIN_ENTRY, "begin_new_exec", false),
            Role::ExecBeginExit => Function(EXEC_BEGIN_RETURN, "begin_new_exec", true),
            Role::ExecSetupExit => Function(EXEC_SETUP_RETURN, "setup_new_exec", true),
            Role::TsyncBegin => Function(TSYNC_ENTRY, "landlock_restrict_sibling_threads", false),
            Role::TsyncEnd => Function(TSYNC_RETURN, "landlock_restrict_sibling_threads", true),
            Role::ContentionBegin => Hooked::RawTracepoint(CONTENTION_BEGIN, "contention_begin"),
            Role::ContentionEnd => Hooked::RawTracepoint(CONTENTION_END, "contention_end"),
            Role::ReaderEnter(r) => Function(READER_ENTRY[r as usize], r.function(), false),
            Role::ReaderExit(r) => Function(READER_RETURN[r as usize], r.function(), true),
        }
    }

    /// The kernel function this role hooks (for modes other than tracepoint), or its raw
    /// tracepoint.
    pub fn function(self) -> &'static str {
        match self.spec() {
            Hooked::Function(_, function, _) => function,
            Hooked::RawTracepoint(_, tracepoint) => tracepoint,
        }
    }

    /// When the program also runs for work that is not a traced call: what every other
    /// process pays for it. None: only inside kcmp (or a followed reader).
    pub fn outside_kcmp(self) -> Option<&'static str> {
        match self {
            Role::KcmpEntry | Role::KcmpExit | Role::SpecBegin | Role::SpecRetry => None,
            Role::PermCheck => Some("every ptrace_may_access() call (mm_access, /proc, ptrace)"),
            Role::LockEnter | Role::LockExit | Role::LockNestedEnter | Role::LockNestedExit => {
                Some("every call of it (mmap_read_lock_killable, mm_access)")
            }
            Role::ContentionBegin | Role::ContentionEnd => Some("every contended lock only"),
            Role::ExecBegin | Role::ExecBeginExit | Role::ExecSetupExit => Some("every exec"),
            Role::TsyncBegin | Role::TsyncEnd => Some("every Landlock TSYNC restriction"),
            Role::ReaderEnter(_) | Role::ReaderExit(_) => Some("every read of that /proc file"),
        }
    }

    /// Its slot in OUTSIDE_RUNS, for a program that filters for kcmp's threads.
    pub fn outside_slot(self) -> Option<u32> {
        use kcmp_trace_common::maps::outside;
        match self {
            Role::ContentionBegin => Some(outside::CONTENTION_BEGIN),
            Role::ContentionEnd => Some(outside::CONTENTION_END),
            Role::LockEnter => Some(outside::LOCK_ENTRY),
            Role::LockExit => Some(outside::LOCK_RETURN),
            Role::LockNestedEnter => Some(outside::LOCK_NESTED_ENTRY),
            Role::LockNestedExit => Some(outside::LOCK_NESTED_RETURN),
            Role::PermCheck => Some(outside::PERM_ENTRY),
            _ => None,
        }
    }

    pub fn affects(self) -> &'static [Affects] {
        match self {
            Role::KcmpEntry => &[Affects::CallEntry],
            Role::KcmpExit => &[Affects::CallExit],
            Role::SpecBegin | Role::SpecRetry | Role::PermCheck => &[Affects::Outcome],
            // Either end of a lock wait marks the lock (classify.rs); both time it.
            Role::LockEnter | Role::LockExit | Role::LockNestedEnter | Role::LockNestedExit => {
                &[Affects::Outcome, Affects::LockWait]
            }
            // Direct and stock read no path from them.
            Role::ContentionBegin | Role::ContentionEnd => &[Affects::LockWait],
            Role::ExecBegin | Role::ExecBeginExit | Role::ExecSetupExit => &[Affects::ExecSections],
            Role::TsyncBegin | Role::TsyncEnd => &[Affects::TsyncSections],
            Role::ReaderEnter(_) | Role::ReaderExit(_) => &[Affects::ReaderCalls],
        }
    }
}

/// How a strategy times lock waits here, and why. Infer reads its path from every lock
/// call; the /proc readers count every other caller's acquisition by call site; on
/// PREEMPT_RT, rwbase_rt fires contention_end after preempt_enable(), where a preempted
/// program run makes the kernel skip the next one on that CPU. Everywhere else the
/// contention tracepoints fire inside the rwsem slow path's preempt_disable() section.
pub fn lock_waits(
    strategy: Strategy,
    readers: bool,
    preemption: &Preemption,
    contention_tracepoints: bool,
) -> (LockWaits, &'static str) {
    if strategy == Strategy::Infer {
        (
            LockWaits::Probes,
            "down_read_killable() probed: infer reads the path from every lock call",
        )
    } else if readers {
        (
            LockWaits::Probes,
            "down_read_killable() probed: --readers counts every caller's acquisition",
        )
    } else if preemption.model == Some(Model::Rt) {
        (
            LockWaits::Probes,
            "down_read_killable() probed: PREEMPT_RT runs contention_end preemptible",
        )
    } else if !contention_tracepoints {
        (
            LockWaits::Probes,
            "down_read_killable() probed: no lock contention tracepoints in this kernel",
        )
    } else {
        (
            LockWaits::Contention,
            "lock contention tracepoints: only contended locks fire them",
        )
    }
}

/// The hooks of a strategy: (role, required). Optional hooks add lock wait, the exec side
/// and, when `readers` are followed, the /proc readers present in this kernel; without
/// them kcmp's outcomes stay right.
pub fn roles(strategy: Strategy, readers: bool, waits: LockWaits) -> Vec<(Role, bool)> {
    let mut roles = vec![(Role::KcmpEntry, true), (Role::KcmpExit, true)];
    match strategy {
        Strategy::Boundary => return roles,
        Strategy::Direct => roles.extend([(Role::SpecBegin, true), (Role::SpecRetry, true)]),
        Strategy::Infer => roles.extend([(Role::PermCheck, true), (Role::LockEnter, true)]),
        Strategy::Stock => {}
    }
    match waits {
        LockWaits::Contention => {
            roles.extend([(Role::ContentionBegin, false), (Role::ContentionEnd, false)])
        }
        LockWaits::Probes => {
            if strategy != Strategy::Infer {
                roles.push((Role::LockEnter, false));
            }
            roles.extend([
                (Role::LockExit, false),
                (Role::LockNestedEnter, false),
                (Role::LockNestedExit, false),
            ]);
        }
    }
    roles.extend([
        (Role::ExecBegin, false),
        (Role::ExecBeginExit, false),
        (Role::ExecSetupExit, false),
        (Role::TsyncBegin, false),
        (Role::TsyncEnd, false),
    ]);
    if readers {
        for r in ProcReader::ALL {
            roles.extend([(Role::ReaderEnter(r), false), (Role::ReaderExit(r), false)]);
        }
    }
    roles
}

/// Whether kcmp's syscall tracepoints see every call: they exist, and their programs cannot
/// be preempted mid-run. A kernel that runs them faultable (`trace_call_bpf_faultable`,
/// 7.2) and preempts kernel code (or whose model is unknown) skips a program's other runs on
/// a CPU while one is preempted there.
pub fn syscall_tracepoints_exact(exist: bool, faultable: bool, preemption: &Preemption) -> bool {
    exist && !(faultable && preemption.trampolines_preemptible())
}

/// The kind of program that hooks a role in a mode. Kprobe mode measures the syscall itself
/// at its tracepoints where they see every call: they have no instance limit, and the kernel
/// counts their skipped runs per CPU, exactly. Where the kernel runs syscall tracepoint
/// programs faultable and preempts kernel code (7.2 under lazy, full or RT), a tracepoint
/// program preempted mid-run makes the kernel skip its other runs on that CPU; there the
/// syscall is a kprobe and a kretprobe with an instance for every call in flight
/// (`retprobe`), whose handlers run with preemption off.
pub fn hook_mode(mode: AttachMode, role: Role, syscall_tracepoints_exact: bool) -> AttachMode {
    match (mode, role) {
        (_, Role::ContentionBegin | Role::ContentionEnd) => AttachMode::RawTracepoint,
        (AttachMode::Kprobe, Role::KcmpEntry | Role::KcmpExit) if syscall_tracepoints_exact => {
            AttachMode::Tracepoint
        }
        _ => mode,
    }
}

/// (program, target) of a role in a mode.
pub fn program_for(mode: AttachMode, role: Role) -> (&'static str, String) {
    let (pair, function, at_return) = match role.spec() {
        Hooked::Function(pair, function, at_return) => (pair, function, at_return),
        Hooked::RawTracepoint(program, tracepoint) => return (program, tracepoint.into()),
    };
    match (mode, at_return) {
        (AttachMode::Tracepoint, false) => (programs::KCMP_TP_ENTER, KCMP_TRACEPOINTS[0].into()),
        (AttachMode::Tracepoint, true) => (programs::KCMP_TP_EXIT, KCMP_TRACEPOINTS[1].into()),
        (AttachMode::Kprobe, _) => (pair.kprobe, function.into()),
        (AttachMode::Fentry | AttachMode::RawTracepoint, _) => (pair.trampoline, function.into()),
    }
}

/// Every program name a plan can attach, as the kernel keeps it (15 bytes at most).
pub fn program_names() -> Vec<&'static str> {
    const KERNEL_NAME_LEN: usize = 15;
    programs::HOOKS
        .iter()
        .map(|name| &name[..name.len().min(KERNEL_NAME_LEN)])
        .collect()
}

/// How kprobe mode measures kcmp itself here, and why, in a sentence: `tracefs`, whether it
/// could be read (or why not); `tracepoints`, whether kcmp's syscall tracepoints are there;
/// `would_skip`, whether this kernel would skip their runs (faultable and preempted).
fn syscall_in_kprobe_mode(
    tracefs: Result<(), &str>,
    tracepoints: bool,
    would_skip: bool,
) -> String {
    match tracefs {
        _ if tracepoints && !would_skip => {
            "The syscall itself is measured at its tracepoints, which have no instance limit."
                .to_owned()
        }
        _ if would_skip => "The syscall is a kprobe and a kretprobe too: this kernel runs \
                             syscall tracepoint programs faultable (trace_call_bpf_faultable) \
                             and preempts kernel code, so one preempted mid-run would make it \
                             skip the others on that CPU."
            .to_owned(),
        // Unreadable is not absent: say what would open it.
        Err(why) => format!(
            "The syscall is a kretprobe too: tracefs, where its tracepoints are found, could \
             not be used ({why})."
        ),
        Ok(()) => "No syscall tracepoints here, so the syscall is a kretprobe too.".to_owned(),
    }
}

/// Where return probes get only the kernel's default instances (tracefs's kprobe_events
/// cannot be written, `limited` says why), what that means, and which capability would
/// give them RETPROBE_INSTANCES; None where the plan has no return probes or they get them.
///
/// Such a plan is attached, not refused or passed over: it stays exact while fewer calls
/// than that are in flight at once, and the kernel counts each return it loses (the perf
/// link's kprobe_missed, which the report adds to what may be missing), whereas on the
/// kernels where kprobes are the default (preemptible ones) the next plans skip runs under
/// any crowd. So it is said before counting starts, and what it loses is counted.
pub fn return_probes_limited(
    mode: AttachMode,
    instances: u32,
    limited: Option<&str>,
) -> Option<String> {
    let why = limited.filter(|_| mode == AttachMode::Kprobe)?;
    Some(format!(
        "return probes get only the kernel's default of {instances} instances each, not {} \
         ({why}): more calls than that in flight at once lose their returns, which the \
         report counts as missed",
        crate::probe::RETPROBE_INSTANCES
    ))
}

/// What each number means on a plan: exact, inferred, approximate or unavailable.
pub fn accuracy(
    mode: AttachMode,
    strategy: Strategy,
    series: bool,
    lock_waits: Option<LockWaits>,
    exec_hooked: bool,
    tsync_hooked: bool,
    caps: &crate::probe::Capabilities,
) -> Vec<(&'static str, String)> {
    let mut lines = vec![(
        "calls, types, results, latency",
        "exact while no program run is skipped (skipped runs are counted and shown)".to_owned(),
    )];
    if mode == AttachMode::Kprobe {
        let syscall = syscall_in_kprobe_mode(
            caps.tracefs.as_ref().map(drop).map_err(String::as_str),
            caps.kcmp_tracepoints,
            !syscall_tracepoints_exact(true, caps.syscall_tracepoints_faultable, &caps.preemption),
        );
        lines.push((
            "kretprobes",
            format!(
                "{} instances each; a call beyond them loses its return: a lock wait is then \
                 counted as unfinished, a syscall exit as a lost_exit at the thread's next \
                 call, and the kernel's own count of lost returns is approximate (an \
                 unlocked increment). {syscall}",
                caps.kretprobe_instances,
            ),
        ));
    }
    if mode == AttachMode::Kprobe && !caps.probe_misses_readable {
        lines.push((
            "kprobe misses",
            "not reported by kernels before 6.7 (a kretprobe out of instances); exits that \
             never arrive are still counted as lost_exits at the thread's next call"
                .to_owned(),
        ));
    }
    match strategy {
        Strategy::Boundary => {
            lines.push((
                "outcome",
                format!(
                    "unknown: {} shows only the syscall boundary; path classification needs kprobes or fentry",
                    mode.name()
                ),
            ));
            return lines;
        }
        Strategy::Direct => lines.push((
            "fast, retry, busy",
            "exact (return values of exec_update_speculate_try_begin/retry)".to_owned(),
        )),
        Strategy::Stock => lines.push((
            "locked",
            "exact: without the series every call that finds both tasks locks first, so its \
             result tells its path (-ESRCH no_task, -EINTR interrupted, else locked)"
                .to_owned(),
        )),
        Strategy::Infer => lines.push((
            if series {
                "fast, retry, busy"
            } else {
                "locked"
            },
            "inferred per thread from the order of ptrace_may_access() and down_read_killable()"
                .to_owned(),
        )),
    }
    lines.push((
        "lock wait",
        match lock_waits {
            Some(LockWaits::Contention) => {
                "exact: the time a call blocked on a contended exec_update_lock \
                 (lock:contention_begin to contention_end); one wait of 0 for a call that took \
                 its locks uncontended"
            }
            Some(LockWaits::Probes) => {
                "exact: down_read_killable() entry to return, the acquisition's whole time"
            }
            None => "unavailable",
        }
        .to_owned(),
    ));
    lines.push((
        "exec write sections",
        if exec_hooked {
            "approximate: begin_new_exec() entry to setup_new_exec() return, which encloses the exec_update_lock write section"
        } else {
            "unavailable"
        }
        .to_owned(),
    ));
    lines.push((
        "TSYNC write sections",
        if tsync_hooked {
            "approximate: landlock_restrict_sibling_threads() entry to return, which encloses its exec_update_lock write section"
        } else {
            "unavailable (no Landlock TSYNC in this kernel)"
        }
        .to_owned(),
    ));
    lines
}

/// What the per-reader numbers mean on a plan that follows the readers (`--readers`).
pub fn reader_accuracy(
    mode: AttachMode,
    strategy: Strategy,
    followed: &[ProcReader],
    others_recognised: bool,
) -> Vec<(&'static str, String)> {
    let names: Vec<&str> = followed.iter().map(|r| r.name()).collect();
    let mut lines = vec![(
        "/proc readers",
        if strategy == Strategy::Boundary {
            "unavailable: the syscall boundary shows no reader".to_owned()
        } else if names.is_empty() {
            "unavailable: no /proc reader function is a real symbol here".to_owned()
        } else {
            format!(
                "{}: call by call from their functions' entry and return, outcomes as kcmp's; \
                 lock waits only on the read task's exec_update_lock (its address from \
                 task_struct.signal)",
                names.join(", ")
            )
        },
    )];
    lines.push((
        "other callers",
        match (others_recognised, mode) {
            (false, _) => "helper verdicts by call site; lock waits unavailable: no \
                           signal_struct.thread_head in this kernel's BTF to recognise an \
                           exec_update_lock by"
                .to_owned(),
            (true, AttachMode::Kprobe) => "by call site: where down_read_killable() or the \
                                           helper returned to, seen by its kretprobe and \
                                           named through kallsyms; an exec_update_lock is \
                                           recognised by its signal_struct's thread list"
                .to_owned(),
            (true, _) => format!(
                "counted, but under no call site: {} programs do not see their caller \
                 (--attach kprobe names them)",
                mode.name()
            ),
        },
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preemption(model: Option<Model>) -> Preemption {
        Preemption {
            model,
            dynamic: true,
            source: "test".into(),
        }
    }

    #[test]
    fn preemptible_kernels_try_kprobes_first() {
        for model in [Some(Model::Full), Some(Model::Lazy), Some(Model::Rt), None] {
            let (order, why) = candidates(
                AttachRequest::Auto,
                StrategyRequest::Auto,
                &preemption(model),
                true,
            );
            assert_eq!(
                order[0],
                (AttachMode::Kprobe, Strategy::Direct),
                "{model:?}"
            );
            assert!(why.starts_with("kprobes first"), "{why}");
            assert_eq!(
                order.last(),
                Some(&(AttachMode::Tracepoint, Strategy::Boundary))
            );
        }
        for model in [Model::None, Model::Voluntary] {
            let (order, why) = candidates(
                AttachRequest::Auto,
                StrategyRequest::Infer,
                &preemption(Some(model)),
                false,
            );
            assert_eq!(
                order,
                vec![
                    (AttachMode::Fentry, Strategy::Infer),
                    (AttachMode::Kprobe, Strategy::Infer)
                ]
            );
            assert!(why.starts_with("fentry first"), "{why}");
        }
    }

    #[test]
    fn a_forced_fentry_on_a_preemptible_kernel_says_so() {
        let (order, why) = candidates(
            AttachRequest::Fentry,
            StrategyRequest::Direct,
            &preemption(Some(Model::Full)),
            true,
        );
        assert_eq!(order, vec![(AttachMode::Fentry, Strategy::Direct)]);
        assert!(why.contains("skips are counted"), "{why}");
    }

    #[test]
    fn a_kernel_without_the_series_is_read_by_its_results() {
        let (order, _) = candidates(
            AttachRequest::Auto,
            StrategyRequest::Auto,
            &preemption(Some(Model::Voluntary)),
            false,
        );
        assert_eq!(
            order,
            vec![
                (AttachMode::Fentry, Strategy::Stock),
                (AttachMode::Kprobe, Strategy::Stock),
                (AttachMode::Tracepoint, Strategy::Boundary)
            ]
        );
    }

    #[test]
    fn only_infer_readers_and_rt_probe_every_lock_call() {
        let lazy = preemption(Some(Model::Lazy));
        for strategy in [Strategy::Direct, Strategy::Stock] {
            assert_eq!(
                lock_waits(strategy, false, &lazy, true).0,
                LockWaits::Contention
            );
            assert_eq!(lock_waits(strategy, true, &lazy, true).0, LockWaits::Probes);
            assert_eq!(
                lock_waits(strategy, false, &preemption(Some(Model::Rt)), true).0,
                LockWaits::Probes
            );
            assert_eq!(
                lock_waits(strategy, false, &lazy, false).0,
                LockWaits::Probes
            );
        }
        assert_eq!(
            lock_waits(Strategy::Infer, false, &lazy, true).0,
            LockWaits::Probes
        );
    }

    #[test]
    fn direct_and_stock_hook_nothing_every_process_calls() {
        // Functions any process calls: a hook there taxes work that never calls kcmp.
        let everyones = [
            Role::PermCheck,
            Role::LockEnter,
            Role::LockExit,
            Role::LockNestedEnter,
            Role::LockNestedExit,
        ];
        for strategy in [Strategy::Direct, Strategy::Stock] {
            let roles = roles(strategy, false, LockWaits::Contention);
            assert!(
                roles.iter().all(|(r, _)| !everyones.contains(r)),
                "{strategy:?}: {roles:?}"
            );
            assert!(roles.contains(&(Role::ContentionEnd, false)));
        }
        let infer = roles(Strategy::Infer, false, LockWaits::Probes);
        assert!(infer.contains(&(Role::LockEnter, true)));
        assert!(infer.contains(&(Role::PermCheck, true)));
        assert_eq!(
            program_for(AttachMode::Kprobe, Role::ContentionBegin),
            ("contend_begin", "contention_begin".to_owned())
        );
    }

    #[test]
    fn every_role_says_what_a_skipped_run_costs() {
        for strategy in [
            Strategy::Boundary,
            Strategy::Direct,
            Strategy::Infer,
            Strategy::Stock,
        ] {
            for waits in [LockWaits::Contention, LockWaits::Probes] {
                let roles = roles(strategy, true, waits);
                assert!(roles.contains(&(Role::KcmpEntry, true)));
                assert!(roles.contains(&(Role::KcmpExit, true)));
                for (role, _) in roles {
                    assert!(!role.affects().is_empty());
                }
            }
        }
        assert_eq!(
            program_for(AttachMode::Kprobe, Role::LockExit).0,
            "lock_kretprobe"
        );
    }

    #[test]
    fn faultable_tracepoints_are_exact_only_where_kernel_code_is_not_preempted() {
        for model in [Some(Model::Full), Some(Model::Lazy), Some(Model::Rt), None] {
            assert!(!syscall_tracepoints_exact(true, true, &preemption(model)));
            assert!(syscall_tracepoints_exact(true, false, &preemption(model)));
        }
        for model in [Model::None, Model::Voluntary] {
            assert!(syscall_tracepoints_exact(
                true,
                true,
                &preemption(Some(model))
            ));
        }
        assert!(!syscall_tracepoints_exact(false, false, &preemption(None)));
    }

    #[test]
    fn unreadable_tracefs_is_not_said_to_lack_the_syscall_tracepoints() {
        use crate::probe::privilege::{Cap, CapSet, Facts, Refused, why};
        let facts = Facts {
            caps: CapSet((1 << Cap::Bpf as u32) | (1 << Cap::Perfmon as u32)),
            perf_event_paranoid: Some(2),
            perf_events_gated: false,
            memlock_limited: false,
        };
        let denied = why(Refused::TracefsRead, facts).expect("a refusal");
        let said = syscall_in_kprobe_mode(Err(&denied), false, false);
        assert!(!said.contains("No syscall tracepoints"), "{said}");
        assert!(
            said.contains("tracefs") && said.contains("CAP_DAC_READ_SEARCH"),
            "{said}"
        );
        let absent = syscall_in_kprobe_mode(Ok(()), false, false);
        assert!(absent.contains("No syscall tracepoints here"), "{absent}");
        assert!(syscall_in_kprobe_mode(Ok(()), true, false).contains("at its tracepoints"));
        // Where they would skip runs, reading tracefs would not make them usable.
        for tracefs in [Ok(()), Err(denied.as_str())] {
            let said = syscall_in_kprobe_mode(tracefs, false, true);
            assert!(
                said.contains("faultable") && !said.contains("CAP_"),
                "{said}"
            );
        }
    }

    #[test]
    fn return_probes_with_the_default_instances_say_so_and_what_would_give_more() {
        use crate::probe::privilege::{Cap, CapSet, Facts, Refused, why};
        let facts = Facts {
            caps: CapSet((1 << Cap::SysAdmin as u32) | (1 << Cap::SysNice as u32)),
            perf_event_paranoid: Some(3),
            perf_events_gated: true,
            memlock_limited: false,
        };
        let refused = why(Refused::TracefsWrite, facts).expect("a refusal");
        let said = return_probes_limited(AttachMode::Kprobe, 10, Some(&refused))
            .expect("kprobe mode with the default says so");
        assert!(
            said.contains(" 10 instances each, not 4096") && said.contains("CAP_DAC_OVERRIDE"),
            "{said}"
        );
        assert_eq!(return_probes_limited(AttachMode::Kprobe, 4096, None), None);
        // No return probes in the other modes.
        for mode in [AttachMode::Fentry, AttachMode::Tracepoint] {
            assert_eq!(return_probes_limited(mode, 10, Some(&refused)), None);
        }
    }

    #[test]
    fn kprobe_mode_measures_the_syscall_at_its_tracepoints_when_it_can() {
        use AttachMode::*;
        for role in [Role::KcmpEntry, Role::KcmpExit] {
            assert_eq!(hook_mode(Kprobe, role, true), Tracepoint);
            assert_eq!(hook_mode(Kprobe, role, false), Kprobe);
            assert_eq!(hook_mode(Fentry, role, true), Fentry);
        }
        assert_eq!(hook_mode(Kprobe, Role::LockExit, true), Kprobe);
        assert_eq!(hook_mode(Kprobe, Role::SpecBegin, true), Kprobe);
    }
}
