//! Loading the eBPF object, attaching it by plan, and reading what it aggregates.

use std::{os::fd::AsFd as _, sync::Mutex};

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProbeKind, ProgramError, RawTracePoint, TracePoint},
};
use kcmp_trace_common::{
    classify::Strategy,
    event::{COMM_LEN, comm_bytes, comm_key},
    maps::{self, ProcessTotals, globals},
    snapshot::Counters,
};

use crate::{
    bpf_info,
    bpf_log::BpfLog,
    config::{TraceConfig, validate},
    error::Error,
    event_stream::EventStream,
    exited::Exited,
    plan::{
        AttachMode, Hook, Plan, Role, accuracy, candidates, hook_mode, program_for, roles,
        syscall_tracepoints_exact,
    },
    probe,
    readout::{HookCounters, ProcessRow},
    retprobe::{self, ReturnProbe},
    unpreempted::UnpreemptedReads,
};

/// An attached tracer. Dropping it detaches and unloads everything.
pub struct Tracer {
    pub plan: Plan,
    /// The release of the kernel it is attached to (`uname -r`).
    pub kernel_release: String,
    counters: PerCpuArray<MapData, Counters>,
    /// Per-process totals; removing exited processes needs the map mutably. Their final
    /// totals move to `exited` first (taken under this lock, then `exited`'s).
    processes: Mutex<HashMap<MapData, u32, ProcessTotals>>,
    exited: Mutex<Exited>,
    max_processes: u32,
    events: Option<EventStream>,
    /// The perf link of each kprobe hook (by index in `plan.hooks`), whose probe-level
    /// misses the kernel reports; empty where it does not (before 6.7) or for other modes.
    probe_links: Vec<(usize, u32)>,
    /// Forwards the programs' diagnostics (`--bpf-log`).
    _bpf_log: Option<BpfLog>,
    /// Return probes defined in tracefs, detached before their programs unload.
    _return_probes: Vec<ReturnProbe>,
    // Keeps programs and links alive; declared last so maps are read before teardown.
    ebpf: Ebpf,
}

/// An eBPF object the build made from the eBPF crate.
#[derive(Clone, Copy)]
pub(crate) struct Object {
    pub name: &'static str,
    pub bytes: &'static [u8],
}

impl Object {
    /// Loads it as built, without a tracer's settings.
    pub(crate) fn load(self) -> Result<Ebpf, Error> {
        EbpfLoader::new()
            .load(self.bytes)
            .map_err(|e| self.refused(e))
    }

    fn refused(self, e: aya::EbpfError) -> Error {
        Error::Bpf {
            what: format!("the eBPF object {}", self.name),
            source: e.into(),
        }
    }
}

/// The tracer's programs: all that tracing loads.
pub(crate) fn probes() -> Object {
    Object {
        name: "kcmp-trace-probes",
        bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kcmp-trace-probes")),
    }
}

impl Tracer {
    /// Looks at the kernel and attaches the best plan for it.
    pub fn start(config: &TraceConfig) -> anyhow::Result<Tracer> {
        validate(config)?;
        if !probe::privileged() {
            return Err(Error::Permission.into());
        }
        Tracer::start_with(config, &probe::Capabilities::detect())
    }

    /// Attaches the best plan for a kernel already looked at.
    pub fn start_with(config: &TraceConfig, caps: &probe::Capabilities) -> anyhow::Result<Tracer> {
        validate(config)?;
        if !probe::privileged() {
            return Err(Error::Permission.into());
        }
        // Locked memory accounting is per-cgroup on 5.11+, but older kernels need the limit.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain syscall with a valid struct.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

        let mut rejected = Vec::new();
        let (tried, why) = candidates(config.attach, config.strategy, &caps.preemption);
        let mut attached = None;
        for &(mode, strategy) in &tried {
            match load_and_attach(config, caps, mode, strategy) {
                Ok(found) => {
                    attached = Some(found);
                    break;
                }
                Err(e) if tried.len() == 1 => return Err(e),
                Err(e) => rejected.push((
                    format!("{} + {}", mode.name(), strategy.name()),
                    crate::error::one_line(&e),
                )),
            }
        }
        let Some(Attached {
            mut ebpf,
            mut plan,
            return_probes,
        }) = attached
        else {
            let why = rejected
                .iter()
                .map(|(what, why)| format!("{what}: {why}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(
                Error::NoHook(format!("no way to attach to kcmp on this kernel ({why})")).into(),
            );
        };
        plan.rejected = rejected;
        plan.why = why;

        let probe_links = if plan.mode == AttachMode::Kprobe && caps.probe_misses_readable {
            probe_links(&ebpf, &plan)?
        } else {
            Vec::new()
        };
        let counters = PerCpuArray::try_from(
            ebpf.take_map(maps::COUNTERS_MAP)
                .context("COUNTERS map missing")?,
        )?;
        let processes = Mutex::new(HashMap::try_from(
            ebpf.take_map(maps::PROCESSES_MAP)
                .context("PROCESSES map missing")?,
        )?);
        let events = if config.events {
            Some(event_stream(&mut ebpf)?)
        } else {
            None
        };
        let bpf_log = if config.bpf_log {
            let logger = aya_log::EbpfLogger::init(&mut ebpf).context("eBPF logging")?;
            Some(BpfLog::start(logger)?)
        } else {
            None
        };
        Ok(Tracer {
            plan,
            kernel_release: caps.kernel.clone(),
            counters,
            processes,
            exited: Mutex::new(Exited::new(config.max_processes as usize)),
            max_processes: config.max_processes,
            events,
            probe_links,
            _bpf_log: bpf_log,
            _return_probes: return_probes,
            ebpf,
        })
    }

    /// All CPUs' counters, summed.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let _fifo = UnpreemptedReads::enter();
        let per_cpu = self.counters.get(&0, 0).context("reading COUNTERS")?;
        let mut sum = Counters::ZERO;
        for cpu in per_cpu.iter() {
            sum.accumulate(cpu);
        }
        Ok(sum)
    }

    /// What the kernel counted for each attached program, in plan order.
    pub fn hook_counters(&self) -> anyhow::Result<Vec<HookCounters>> {
        self.plan
            .hooks
            .iter()
            .enumerate()
            .map(|(i, hook)| {
                let kernel = program_counters(&self.ebpf, &hook.program)?;
                let mut probe_misses = 0;
                for &(_, link) in self.probe_links.iter().filter(|(h, _)| *h == i) {
                    probe_misses += bpf_info::kprobe_link_missed(link)
                        .with_context(|| format!("reading {}'s link", hook.program))?;
                }
                Ok(HookCounters {
                    program: hook.program.clone(),
                    target: hook.target.clone(),
                    affects: hook.affects.to_vec(),
                    misses: kernel.recursion_misses + probe_misses,
                    run_time_ns: kernel.run_time_ns,
                    run_count: kernel.run_count,
                })
            })
            .collect()
    }

    /// What the kernel says about one of the attached programs.
    pub fn program_counters(&self, program: &str) -> anyhow::Result<bpf_info::ProgramCounters> {
        program_counters(&self.ebpf, program)
    }

    /// Per-process totals, busiest first: the live processes' and those of processes that
    /// exited (see [`Exited`]), the same for every reader.
    ///
    /// Once the map is half full, processes that have exited are removed from it to keep
    /// room for live ones, their final totals folded into the exited table first. (A removed
    /// tgid reused at once by a new process could lose that process's first calls; tgids are
    /// reused only after the pid space wraps.)
    pub fn processes(&self) -> anyhow::Result<Vec<ProcessRow>> {
        let mut map = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = Vec::new();
        {
            let _fifo = UnpreemptedReads::enter();
            for entry in map.iter() {
                let (tgid, t) = entry.context("reading PROCESSES")?;
                live.push(process_row(tgid, &t));
            }
        }
        let mut exited = self.exited.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() as u64 * 2 >= u64::from(self.max_processes) {
            let dead: Vec<u32> = live
                .iter()
                .map(|r| r.tgid)
                .filter(|&tgid| !probe::process_alive(tgid))
                .collect();
            let mut removed = std::collections::BTreeSet::new();
            for tgid in dead {
                // Read again: a call it made after the walk above is in its final totals.
                let last = {
                    let _fifo = UnpreemptedReads::enter();
                    map.get(&tgid, 0)
                };
                // Not removed (nor readable): it stays a live row, counted once.
                if let Ok(last) = last
                    && map.remove(&tgid).is_ok()
                {
                    exited.fold(process_row(tgid, &last));
                    removed.insert(tgid);
                }
            }
            live.retain(|r| !removed.contains(&r.tgid));
        }
        Ok(exited.merged(live))
    }

    /// The per-call event stream (only when the config asked for events).
    pub fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }
}

/// The event ring of a loaded object, with the stages its flush program sends.
pub(crate) fn event_stream(ebpf: &mut Ebpf) -> anyhow::Result<EventStream> {
    let flush: &mut RawTracePoint = ebpf
        .program_mut(maps::FLUSH_PROGRAM)
        .context("flush program missing")?
        .try_into()?;
    flush.load().map_err(bpf_err(maps::FLUSH_PROGRAM))?;
    let flush = flush
        .fd()?
        .try_clone()
        .context("flush program descriptor")?;
    let ring = RingBuf::try_from(
        ebpf.take_map(maps::EVENTS_MAP)
            .context("EVENTS map missing")?,
    )?;
    let fill = PerCpuArray::try_from(
        ebpf.take_map(maps::STAGE_FILL_MAP)
            .context("STAGE_FILL map missing")?,
    )?;
    Ok(EventStream::new(ring, fill, flush))
}

/// What the kernel says about a loaded program of `ebpf`.
pub(crate) fn program_counters(
    ebpf: &Ebpf,
    program: &str,
) -> anyhow::Result<bpf_info::ProgramCounters> {
    let fd = ebpf
        .program(program)
        .with_context(|| format!("program {program} missing"))?
        .fd()
        .context("program descriptor")?;
    bpf_info::program_counters(fd.as_fd()).with_context(|| format!("reading {program}'s counters"))
}

fn process_row(tgid: u32, t: &ProcessTotals) -> ProcessRow {
    ProcessRow {
        tgid,
        comm: String::from_utf8_lossy(comm_bytes(&t.comm)).into_owned(),
        calls: t.calls,
        errors: t.errors,
        latency_sum_ns: t.latency_sum_ns,
    }
}

/// The perf link each kprobe hook is attached through, found by program id.
fn probe_links(ebpf: &Ebpf, plan: &Plan) -> anyhow::Result<Vec<(usize, u32)>> {
    let mut ids = Vec::new();
    for (i, hook) in plan.hooks.iter().enumerate() {
        let program = ebpf
            .program(&hook.program)
            .with_context(|| format!("program {} missing", hook.program))?;
        let info = program
            .info()
            .with_context(|| format!("reading {}'s info", hook.program))?;
        ids.push((i, info.id()));
    }
    // Links other tracers are creating or tearing down right now cannot be opened (EAGAIN,
    // ENOENT); ours are all established, so those are skipped.
    let links: Vec<(usize, u32)> = aya::programs::loaded_links()
        .flatten()
        .filter_map(|link| {
            ids.iter()
                .find(|(_, id)| *id == link.program_id())
                .map(|&(hook, _)| (hook, link.id()))
        })
        .collect();
    if let Some(&(hook, _)) = ids.iter().find(|(h, _)| !links.iter().any(|(l, _)| l == h)) {
        anyhow::bail!(
            "no BPF link found for {}: its kprobe misses could not be read",
            plan.hooks[hook].program
        );
    }
    Ok(links)
}

/// Loads the tracer's object, its programs reading comms straight from task_struct at
/// `comm_offset` where the verifier allows that, else through bpf_get_current_comm().
fn load(
    config: &TraceConfig,
    strategy: Strategy,
    series: bool,
    comm_offset: Option<u32>,
) -> anyhow::Result<Ebpf> {
    load_object(probes(), config, strategy, series, comm_offset)
}

/// Loads `object` with a tracer's settings, as [`load`] does the tracer's own.
pub(crate) fn load_object(
    object: Object,
    config: &TraceConfig,
    strategy: Strategy,
    series: bool,
    comm_offset: Option<u32>,
) -> anyhow::Result<Ebpf> {
    if let Some(offset) = comm_offset.filter(|&o| o != 0) {
        let mut ebpf = load_with(object, config, strategy, series, offset)?;
        match direct_comm_verifies(&mut ebpf) {
            Ok(()) => return Ok(ebpf),
            Err(e) => log::info!(
                "comms are read through bpf_get_current_comm(): {}",
                crate::error::one_line(&e)
            ),
        }
    }
    load_with(object, config, strategy, series, 0)
}

/// Whether the verifier takes the direct comm read, asked of the object's program that
/// makes only that read, which is unloaded again.
fn direct_comm_verifies(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    const COMM_READ: &str = "comm_read";
    let program: &mut TracePoint = ebpf
        .program_mut(COMM_READ)
        .with_context(|| format!("program {COMM_READ} missing"))?
        .try_into()?;
    program
        .load()
        .map_err(bpf_err(format!("loading {COMM_READ}")))?;
    program.unload()?;
    Ok(())
}

fn load_with(
    object: Object,
    config: &TraceConfig,
    strategy: Strategy,
    series: bool,
    comm_offset: u32,
) -> anyhow::Result<Ebpf> {
    let comm_name = config
        .comm
        .as_deref()
        .map_or([0; COMM_LEN], |c| comm_key(c.as_bytes()));
    let mut ebpf = EbpfLoader::new()
        .override_global(
            globals::FILTER_TGID,
            &u8::from(!config.tgids.is_empty()),
            true,
        )
        .override_global(globals::FILTER_COMM, &u8::from(config.comm.is_some()), true)
        .override_global(globals::FILTER_COMM_NAME, &comm_name, true)
        .override_global(globals::COMM_OFFSET, &comm_offset, true)
        .override_global(globals::EMIT_EVENTS, &u8::from(config.events), true)
        .override_global(
            globals::WAKEUP_BYTES,
            &maps::wakeup_bytes(config.ring_bytes),
            true,
        )
        .override_global(globals::STRATEGY, &(strategy as u8), true)
        .override_global(globals::SERIES, &u8::from(series), true)
        // aya-log's own name for the level its programs check (aya-log-ebpf documents
        // setting it before load), which must exist: a rename would fail the load, not
        // silence the logs.
        .override_global(aya_log::LEVEL, &bpf_log_level(config.bpf_log), true)
        .map_max_entries(maps::EVENTS_MAP, config.ring_bytes)
        .map_max_entries(maps::THREADS_MAP, config.max_threads)
        .map_max_entries(maps::PROCESSES_MAP, config.max_processes)
        .load(object.bytes)
        .map_err(|e| object.refused(e))?;
    if !config.tgids.is_empty() {
        let mut filter: HashMap<_, u32, u8> = HashMap::try_from(
            ebpf.map_mut(maps::TGID_FILTER_MAP)
                .context("TGID_FILTER map missing")?,
        )?;
        for tgid in &config.tgids {
            filter
                .insert(tgid, 1, 0)
                .context("filling the tgid filter")?;
        }
    }
    Ok(ebpf)
}

/// A loaded object whose programs are attached by a plan.
struct Attached {
    ebpf: Ebpf,
    plan: Plan,
    return_probes: Vec<ReturnProbe>,
}

/// The highest level the programs log at: every record with `--bpf-log`, none without
/// (0 is below aya-log's lowest level, Error).
fn bpf_log_level(on: bool) -> u8 {
    if on { aya_log::Level::Trace as u8 } else { 0 }
}

/// Loads the object for one (mode, strategy) and attaches every hook it needs.
fn load_and_attach(
    config: &TraceConfig,
    caps: &probe::Capabilities,
    mode: AttachMode,
    strategy: Strategy,
) -> anyhow::Result<Attached> {
    preflight(mode)?;
    if strategy == Strategy::Direct && !caps.series.helpers_out_of_line {
        return Err(Error::NoHook(
            "the exec_update_speculate_* helpers are not real functions here (absent or inlined)"
                .into(),
        )
        .into());
    }
    let series = caps.series.present();
    let mut ebpf = load(config, strategy, series, caps.task_comm_offset)?;
    let mut hooks = Vec::new();
    let btf = caps.kernel_btf.as_deref();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut return_probes = Vec::new();
    for (role, required) in roles(strategy) {
        let kind = hook_mode(
            mode,
            role,
            syscall_tracepoints_exact(
                caps.kcmp_tracepoints,
                caps.syscall_tracepoints_faultable,
                &caps.preemption,
            ),
        );
        let (program, noop, target) = program_for(kind, role);
        // Entry and return hooks of one function share the verdict; say it once.
        if skipped.iter().any(|(t, _)| *t == target) {
            continue;
        }
        // A function that is not a real symbol here (absent or inlined) cannot be hooked.
        let function = role.function();
        if kind != AttachMode::Tracepoint && !caps.symbol(function).is_some_and(|s| s.kallsyms) {
            let why = "not a function in this kernel (absent or inlined)".to_owned();
            if required {
                return Err(Error::NoHook(format!("{target}: {why}")).into());
            }
            skipped.push((target, why));
            continue;
        }
        match attach_program(&mut ebpf, btf, &program, &target, &mut return_probes) {
            Ok(()) => hooks.push(Hook {
                target,
                program,
                affects: role.affects(),
                noop,
            }),
            Err(e) if !required => skipped.push((target, crate::error::one_line(&e))),
            Err(e) => return Err(e),
        }
    }
    let attached = |role: Role| hooks.iter().any(|h: &Hook| h.target == role.function());
    let accuracy = accuracy(
        mode,
        strategy,
        series,
        attached(Role::LockEnter),
        attached(Role::ExecSetupExit),
        attached(Role::TsyncEnd),
        caps,
    );
    Ok(Attached {
        ebpf,
        plan: Plan {
            mode,
            strategy,
            series,
            preemption: caps.preemption.clone(),
            why: String::new(),
            hooks,
            skipped,
            rejected: Vec::new(),
            accuracy,
        },
        return_probes,
    })
}

/// A refusal in one line: the verifier's log can run to thousands of lines, and its verdict
/// is at the end. The whole log is kept at debug level (-vv).
fn bpf_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> Error {
    let what = what.into();
    move |e| {
        log::debug!("{what}: {e}");
        let why = match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                match verdict(&log) {
                    Some(v) => {
                        format!("the BPF_PROG_LOAD syscall returned {io_error}; verifier: {v}")
                    }
                    None => format!("the BPF_PROG_LOAD syscall returned {io_error}"),
                }
            }
            other => crate::error::one_line(&anyhow::Error::new(other)),
        };
        Error::Bpf {
            what,
            source: anyhow::anyhow!(why),
        }
    }
}

/// The verifier's verdict: the last line of its log that is not a statistic.
fn verdict(log: &str) -> Option<&str> {
    log.lines().map(str::trim).rfind(|l| {
        !l.is_empty()
            && !l.starts_with("verification time")
            && !l.starts_with("processed ")
            && !l.starts_with("stack depth")
    })
}

/// Checks what a mode needs before trying it, for a clearer reason than the kernel's.
fn preflight(mode: AttachMode) -> anyhow::Result<()> {
    match mode {
        AttachMode::Tracepoint => {
            probe::ensure_tracefs()?;
            for tp in ["syscalls/sys_enter_kcmp", "syscalls/sys_exit_kcmp"] {
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
        AttachMode::Fentry => {}
    }
    Ok(())
}

/// Loads (once) and attaches one program to one target. Return probes go through tracefs
/// where it can define them (`retprobe`: room for every call in flight), and are kept in
/// `return_probes`.
pub(crate) fn attach_program(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    name: &str,
    target: &str,
    return_probes: &mut Vec<ReturnProbe>,
) -> anyhow::Result<()> {
    let btf = || btf.context("no kernel BTF for fentry/fexit");
    use aya::programs::Program;
    let loaded = |fd: Result<_, _>| fd.is_ok();
    match ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
    {
        Program::TracePoint(p) => {
            let (category, tp) = target
                .split_once('/')
                .with_context(|| format!("bad tracepoint {target}"))?;
            if !loaded(p.fd()) {
                p.load().map_err(bpf_err(format!("loading {name}")))?;
            }
            p.attach(category, tp)
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        Program::KProbe(p) => {
            if !loaded(p.fd()) {
                p.load().map_err(bpf_err(format!("loading {name}")))?;
            }
            if matches!(p.kind(), ProbeKind::Return) && retprobe::available() {
                let program = p.fd()?.as_fd();
                return_probes.push(
                    ReturnProbe::attach(program, target)
                        .with_context(|| format!("attaching {name} to {target}"))?,
                );
            } else {
                p.attach(target, 0)
                    .map_err(bpf_err(format!("attaching {name} to {target}")))?;
            }
        }
        // FEntry and FExit are distinct types with the same load/attach shape.
        Program::FEntry(p) => {
            p.load(target, btf()?)
                .map_err(bpf_err(format!("loading {name} for {target}")))?;
            p.attach()
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        Program::FExit(p) => {
            p.load(target, btf()?)
                .map_err(bpf_err(format!("loading {name} for {target}")))?;
            p.attach()
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        _ => anyhow::bail!("program {name} is of a kind the planner does not attach"),
    }
    Ok(())
}

/// Whether fentry can attach here: tried on kcmp itself, as the planner would.
pub fn probe_fentry(caps: &probe::Capabilities) -> anyhow::Result<()> {
    if !probe::privileged() {
        return Err(Error::Permission.into());
    }
    let mut ebpf = probes().load()?;
    let (program, _, target) = program_for(AttachMode::Fentry, Role::KcmpEntry);
    attach_program(
        &mut ebpf,
        caps.kernel_btf.as_deref(),
        &program,
        &target,
        &mut Vec::new(),
    )
}

/// Whether the programs can read comms straight from task_struct here: the offset from
/// BTF, and the verifier's verdict on the read.
pub fn probe_direct_comm(caps: &probe::Capabilities) -> anyhow::Result<u32> {
    if !probe::privileged() {
        return Err(Error::Permission.into());
    }
    let offset = caps
        .task_comm_offset
        .context("the kernel's BTF does not place task_struct.comm as a 16-byte array")?;
    let mut ebpf = load_with(
        probes(),
        &TraceConfig::default(),
        Strategy::Boundary,
        false,
        offset,
    )?;
    direct_comm_verifies(&mut ebpf)?;
    Ok(offset)
}
