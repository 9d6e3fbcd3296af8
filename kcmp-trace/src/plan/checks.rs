//! What the plan asks of the kernel before it attaches anything: whether a mode's hook
//! points exist, which hooked functions are real symbols here, and the verifier's verdict
//! on what it would load (fentry on kcmp, the direct comm read).

use anyhow::Context as _;
use aya::{Ebpf, programs::TracePoint};
use kcmp_trace_common::{classify::Strategy, programs};

use super::{
    AttachMode, KCMP_TRACEPOINTS, LockWaits, Role, hook_mode, lock_waits, program_for, roles,
    syscall_tracepoints_exact,
};
use crate::{
    attach::attach_program,
    config::TraceConfig,
    error::Error,
    object::{KernelFacts, bpf_err, load_object, tracer_object},
    probe,
};

/// Checks what a mode needs before trying it, for a clearer reason than the kernel's.
fn preflight(mode: AttachMode) -> anyhow::Result<()> {
    match mode {
        AttachMode::Tracepoint => {
            probe::ensure_tracefs()?;
            for tp in KCMP_TRACEPOINTS {
                let path = format!("{}/events/{tp}", probe::TRACEFS);
                if !std::path::Path::new(&path).exists() {
                    return Err(Error::NoHook(format!(
                        "tracepoint {tp} does not exist (kernel without CONFIG_FTRACE_SYSCALLS?)"
                    ))
                    .into());
                }
            }
        }
        AttachMode::Kprobe => {
            if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
                return Err(Error::NoHook(
                    "kprobes are not available (CONFIG_KPROBES is off)".into(),
                )
                .into());
            }
        }
        AttachMode::Fentry | AttachMode::RawTracepoint => {}
    }
    Ok(())
}

/// A hook the plan means to attach: its role, program and target.
pub(crate) struct Planned {
    pub role: Role,
    pub required: bool,
    pub program: &'static str,
    pub target: String,
}

/// The hooks of one (mode, strategy) on this kernel.
pub(crate) struct HookPlan {
    pub attach: Vec<Planned>,
    /// Optional hooks left out because their function is not a real symbol here: (target,
    /// why).
    pub skipped: Vec<(String, String)>,
    /// How lock waits are timed, and why (none on the syscall boundary).
    pub lock_waits: Option<(LockWaits, &'static str)>,
}

/// The hooks of one (mode, strategy) on this kernel, with the /proc readers' when `readers`
/// are followed. Fails when a required one is missing, or the strategy cannot work here.
pub(crate) fn hooks(
    caps: &probe::Capabilities,
    mode: AttachMode,
    strategy: Strategy,
    readers: bool,
) -> anyhow::Result<HookPlan> {
    preflight(mode)?;
    if strategy == Strategy::Direct && !caps.series.helpers_out_of_line {
        return Err(Error::NoHook(
            "the exec_update_speculate_* helpers are not real functions here (absent or inlined)"
                .into(),
        )
        .into());
    }
    let tracepoints_exact = syscall_tracepoints_exact(
        caps.kcmp_tracepoints,
        caps.syscall_tracepoints_faultable,
        &caps.preemption,
    );
    let waits = lock_waits(
        strategy,
        readers,
        &caps.preemption,
        caps.lock_contention_tracepoints,
    );
    let mut attach = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    for (role, required) in roles(strategy, readers, waits.0) {
        let kind = hook_mode(mode, role, tracepoints_exact);
        let (program, target) = program_for(kind, role);
        // Entry and return hooks of one function share the verdict; say it once.
        if skipped.iter().any(|(t, _)| *t == target) {
            continue;
        }
        // A function that is not a real symbol here (absent or inlined) cannot be hooked.
        let present = match kind {
            AttachMode::Tracepoint => true,
            AttachMode::RawTracepoint => caps.lock_contention_tracepoints,
            AttachMode::Fentry | AttachMode::Kprobe => {
                caps.symbol(role.function()).is_some_and(|s| s.kallsyms)
            }
        };
        if !present {
            let why = "not a function in this kernel (absent or inlined)".to_owned();
            if required {
                return Err(Error::NoHook(format!("{target}: {why}")).into());
            }
            skipped.push((target, why));
            continue;
        }
        attach.push(Planned {
            role,
            required,
            program,
            target,
        });
    }
    Ok(HookPlan {
        attach,
        skipped,
        lock_waits: (strategy != Strategy::Boundary).then_some(waits),
    })
}

/// Whether fentry can attach here: tried on kcmp itself, as a plan would.
pub fn fentry_attaches(caps: &probe::Capabilities) -> anyhow::Result<()> {
    if !probe::privileged() {
        return Err(Error::Permission.into());
    }
    let mut ebpf = tracer_object().load()?;
    let (program, target) = program_for(AttachMode::Fentry, Role::KcmpEntry);
    attach_program(
        &mut ebpf,
        caps.kernel_btf.as_deref(),
        program,
        &target,
        &mut Vec::new(),
    )
}

/// Whether the programs can read comms straight from task_struct here: the offset from
/// BTF, and the verifier's verdict on the read.
pub fn direct_comm(caps: &probe::Capabilities) -> anyhow::Result<u32> {
    if !probe::privileged() {
        return Err(Error::Permission.into());
    }
    let offset = caps
        .task_comm_offset
        .context("the kernel's BTF does not place task_struct.comm as a 16-byte array")?;
    let facts = KernelFacts {
        comm_offset: offset,
        ..KernelFacts::default()
    };
    let mut ebpf = load_object(
        tracer_object(),
        &TraceConfig::default(),
        Strategy::Boundary,
        facts,
    )?;
    direct_comm_verifies(&mut ebpf)?;
    Ok(offset)
}

/// Where the programs read comms: task_struct.comm's offset where the verifier takes the
/// direct read, else 0 (through bpf_get_current_comm(), a call that copies and pads).
pub fn comm_offset(caps: &probe::Capabilities) -> u32 {
    if caps.task_comm_offset.is_none() {
        return 0;
    }
    direct_comm(caps).unwrap_or_else(|e| {
        log::info!(
            "comms are read through bpf_get_current_comm(): {}",
            crate::error::one_line(&e)
        );
        0
    })
}

/// Whether the verifier takes the direct comm read, asked of the object's program that
/// makes only that read, which is unloaded again.
fn direct_comm_verifies(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let name = programs::COMM_READ;
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing"))?
        .try_into()?;
    program.load().map_err(bpf_err(format!("loading {name}")))?;
    program.unload()?;
    Ok(())
}
