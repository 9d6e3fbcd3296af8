//! Loading the eBPF object, attaching it by plan, and reading what it aggregates.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use kcmp_trace_common::{
    event::{COMM_LEN, comm_bytes, comm_key},
    maps::{self, ProcStats, globals},
    snapshot::Counters,
};

use crate::{
    error::Error,
    plan::{AttachMode, AttachRequest, Hook, Plan},
    probe,
};

const SYSCALL_FN: &str = "__x64_sys_kcmp";

/// What to trace and what to collect.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    pub tgids: Vec<u32>,
    pub comm: Option<String>,
    pub events: bool,
    pub per_process: bool,
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_bytes: u32,
    pub attach: AttachRequest,
    /// Let the eBPF side log its rare diagnostics through aya-log.
    pub bpf_log: bool,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            tgids: Vec::new(),
            comm: None,
            events: false,
            per_process: true,
            ring_bytes: 1 << 22,
            attach: AttachRequest::Auto,
            bpf_log: false,
        }
    }
}

/// One process's kcmp calls.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProcessRow {
    pub tgid: u32,
    pub comm: String,
    pub calls: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
}

/// An attached tracer. Dropping it detaches and unloads everything.
pub struct Tracer {
    pub plan: Plan,
    counters: PerCpuArray<MapData, Counters>,
    procs: PerCpuHashMap<MapData, u32, ProcStats>,
    events: Option<RingBuf<MapData>>,
    // Keeps programs and links alive; declared last so maps are read before teardown.
    _ebpf: Ebpf,
}

fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kcmp-trace"))
}

impl Tracer {
    pub fn start(config: &TraceConfig) -> anyhow::Result<Tracer> {
        if !probe::privileged() {
            return Err(Error::Permission.into());
        }
        validate(config)?;
        // Locked memory accounting is per-cgroup on 5.11+, but older kernels need the limit.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain syscall with a valid struct.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

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
            .override_global(globals::EMIT_EVENTS, &u8::from(config.events), true)
            .override_global(globals::PER_PROCESS, &u8::from(config.per_process), true)
            .override_global(
                "AYA_LOG_LEVEL",
                &if config.bpf_log { 0xffu8 } else { 0 },
                false,
            )
            .map_max_entries(maps::EVENTS_MAP, config.ring_bytes)
            .load(object())
            .map_err(|e| Error::Bpf {
                what: "the kcmp-trace eBPF object".into(),
                source: e.into(),
            })?;
        if config.bpf_log {
            if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf) {
                log::warn!("eBPF logging unavailable: {e}");
            }
        }

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

        let plan = attach(&mut ebpf, config.attach)?;

        let counters = PerCpuArray::try_from(
            ebpf.take_map(maps::COUNTERS_MAP)
                .context("COUNTERS map missing")?,
        )?;
        let procs = PerCpuHashMap::try_from(
            ebpf.take_map(maps::PROCS_MAP)
                .context("PROCS map missing")?,
        )?;
        let events = if config.events {
            Some(RingBuf::try_from(
                ebpf.take_map(maps::EVENTS_MAP)
                    .context("EVENTS map missing")?,
            )?)
        } else {
            None
        };
        Ok(Tracer {
            plan,
            counters,
            procs,
            events,
            _ebpf: ebpf,
        })
    }

    /// All CPUs' counters, summed.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let per_cpu = self.counters.get(&0, 0).context("reading COUNTERS")?;
        let mut sum = Counters::ZERO;
        for cpu in per_cpu.iter() {
            sum.accumulate(cpu);
        }
        Ok(sum)
    }

    /// Per-process totals, all CPUs summed, busiest first.
    pub fn processes(&self) -> anyhow::Result<Vec<ProcessRow>> {
        let mut rows: BTreeMap<u32, ProcessRow> = BTreeMap::new();
        for entry in self.procs.iter() {
            let (tgid, per_cpu) = entry.context("reading PROCS")?;
            let row = rows.entry(tgid).or_insert_with(|| ProcessRow {
                tgid,
                comm: String::new(),
                calls: 0,
                errors: 0,
                latency_sum_ns: 0,
            });
            for cpu in per_cpu.iter() {
                row.calls += cpu.calls;
                row.errors += cpu.errors;
                row.latency_sum_ns += cpu.latency_sum_ns;
                if row.comm.is_empty() && cpu.comm[0] != 0 {
                    row.comm = String::from_utf8_lossy(comm_bytes(&cpu.comm)).into_owned();
                }
            }
        }
        let mut rows: Vec<_> = rows.into_values().collect();
        rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tgid.cmp(&b.tgid)));
        Ok(rows)
    }

    /// The per-call event stream (only when the config asked for events).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}

fn validate(config: &TraceConfig) -> Result<(), Error> {
    let page = 4096;
    if config.ring_bytes < page || !config.ring_bytes.is_power_of_two() {
        return Err(Error::Usage(format!(
            "ring buffer size must be a power of two of at least {page} bytes, got {}",
            config.ring_bytes
        )));
    }
    if let Some(comm) = &config.comm {
        if comm.is_empty() || comm.len() >= COMM_LEN {
            return Err(Error::Usage(format!(
                "comm filter must be 1 to {} bytes (the kernel's comm length), got {comm:?}",
                COMM_LEN - 1
            )));
        }
    }
    Ok(())
}

/// Attaches the kcmp entry/exit pair in the best mode that works, recording why better
/// modes did not.
fn attach(ebpf: &mut Ebpf, request: AttachRequest) -> anyhow::Result<Plan> {
    let mut rejected = Vec::new();
    let candidates = AttachMode::candidates(request);
    for &mode in candidates {
        match attach_mode(ebpf, mode) {
            Ok(hooks) => {
                return Ok(Plan {
                    mode,
                    hooks,
                    rejected,
                    accuracy: accuracy(mode),
                });
            }
            Err(e) => {
                // A half-attached mode would count calls twice alongside the next one.
                unload_mode(ebpf, mode);
                if candidates.len() == 1 {
                    return Err(e);
                }
                rejected.push((mode, crate::error::one_line(&e)));
            }
        }
    }
    let why = rejected
        .iter()
        .map(|(m, why)| format!("{}: {why}", m.name()))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::NoHook(format!("no way to attach to kcmp on this kernel ({why})")).into())
}

fn accuracy(mode: AttachMode) -> Vec<(&'static str, &'static str)> {
    let calls = ("calls, types, results, latency", "exact");
    match mode {
        AttachMode::Tracepoint => vec![
            calls,
            (
                "outcome",
                "unknown: only the syscall boundary is visible; path classification needs kprobes or fentry",
            ),
        ],
        AttachMode::Fentry | AttachMode::Kprobe => vec![calls],
    }
}

/// A refusal in one line: the verifier's log can run to thousands of lines, and its verdict
/// is at the end. The whole log is kept at debug level (-vv).
fn bpf_err(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> Error {
    let what = what.into();
    move |e| {
        let full = e.to_string();
        log::debug!("{what}: {full}");
        let short = match full.split_once("Verifier output:") {
            Some((head, log)) => {
                let verdict = log
                    .lines()
                    .map(str::trim)
                    .filter(|l| {
                        !l.is_empty()
                            && !l.starts_with("verification time")
                            && !l.starts_with("processed ")
                            && !l.starts_with("stack depth")
                    })
                    .last()
                    .unwrap_or("");
                let head = head.trim_end_matches(['.', ' ']);
                if verdict.is_empty() || verdict.starts_with(": ") {
                    head.to_owned()
                } else {
                    format!("{head}; verifier: {verdict}")
                }
            }
            None => full,
        };
        // aya repeats the syscall's error in its own message; say it once.
        let mut parts: Vec<&str> = short.split(": ").collect();
        parts.dedup();
        Error::Bpf {
            what,
            source: anyhow::anyhow!(parts.join(": ")),
        }
    }
}

/// A program and where it goes.
struct HookSpec {
    program: &'static str,
    /// The do-nothing program of the same kind, for the benchmark floor.
    noop: &'static str,
    /// `category/name` for tracepoints, a kernel function otherwise.
    target: &'static str,
}

const fn spec(program: &'static str, noop: &'static str, target: &'static str) -> HookSpec {
    HookSpec {
        program,
        noop,
        target,
    }
}

const TRACEPOINT_HOOKS: [HookSpec; 2] = [
    spec("kcmp_tp_enter", "noop_tp", "syscalls/sys_enter_kcmp"),
    spec("kcmp_tp_exit", "noop_tp", "syscalls/sys_exit_kcmp"),
];
const KPROBE_HOOKS: [HookSpec; 2] = [
    spec("kcmp_kprobe", "noop_kprobe", SYSCALL_FN),
    spec("kcmp_kretprobe", "noop_kretprobe", SYSCALL_FN),
];
const FENTRY_HOOKS: [HookSpec; 2] = [
    spec("kcmp_fentry", "noop_fentry", SYSCALL_FN),
    spec("kcmp_fexit", "noop_fexit", SYSCALL_FN),
];

/// The hooks of each mode.
fn hooks_of(mode: AttachMode) -> &'static [HookSpec] {
    match mode {
        AttachMode::Tracepoint => &TRACEPOINT_HOOKS,
        AttachMode::Kprobe => &KPROBE_HOOKS,
        AttachMode::Fentry => &FENTRY_HOOKS,
    }
}

/// Checks what a mode needs before trying it, for a clearer reason than the kernel's.
fn preflight(mode: AttachMode) -> anyhow::Result<()> {
    match mode {
        AttachMode::Tracepoint => {
            probe::ensure_tracefs()?;
            for spec in hooks_of(mode) {
                let path = format!("{}/events/{}", probe::TRACEFS, spec.target);
                if !std::path::Path::new(&path).exists() {
                    return Err(Error::NoHook(format!(
                        "tracepoint {} does not exist (kernel without CONFIG_FTRACE_SYSCALLS?)",
                        spec.target
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

/// Loads (once) and attaches one program to one target.
fn attach_program(ebpf: &mut Ebpf, name: &str, target: &str) -> anyhow::Result<()> {
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
            p.attach(target, 0)
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        Program::FEntry(p) => {
            let btf = Btf::from_sys_fs().context("no kernel BTF for fentry")?;
            p.load(target, &btf)
                .map_err(bpf_err(format!("loading {name} for {target}")))?;
            p.attach()
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        Program::FExit(p) => {
            let btf = Btf::from_sys_fs().context("no kernel BTF for fexit")?;
            p.load(target, &btf)
                .map_err(bpf_err(format!("loading {name} for {target}")))?;
            p.attach()
                .map_err(bpf_err(format!("attaching {name} to {target}")))?;
        }
        _ => anyhow::bail!("program {name} is of a kind the planner does not attach"),
    }
    Ok(())
}

fn attach_mode(ebpf: &mut Ebpf, mode: AttachMode) -> anyhow::Result<Vec<Hook>> {
    preflight(mode)?;
    hooks_of(mode)
        .iter()
        .map(|spec| {
            attach_program(ebpf, spec.program, spec.target)?;
            Ok(Hook {
                target: spec.target.to_owned(),
                program: spec.program,
                mode,
            })
        })
        .collect()
}

fn unload_mode(ebpf: &mut Ebpf, mode: AttachMode) {
    for spec in hooks_of(mode) {
        // Unloading a program that never loaded is an error we do not care about.
        let _ = match ebpf.program_mut(spec.program) {
            Some(aya::programs::Program::TracePoint(p)) => p.unload(),
            Some(aya::programs::Program::KProbe(p)) => p.unload(),
            Some(aya::programs::Program::FEntry(p)) => p.unload(),
            Some(aya::programs::Program::FExit(p)) => p.unload(),
            _ => Ok(()),
        };
    }
}

/// Do-nothing programs on the same hooks as a plan: the floor any tracer there pays.
pub struct Floor {
    _objects: Vec<Ebpf>,
}

impl Floor {
    pub fn attach(plan: &Plan) -> anyhow::Result<Floor> {
        let specs = hooks_of(plan.mode);
        // One object per hook: an fentry program is bound to a single target at load time.
        let objects = specs
            .iter()
            .map(|spec| {
                let mut ebpf = EbpfLoader::new().load(object()).map_err(|e| Error::Bpf {
                    what: "the kcmp-trace eBPF object".into(),
                    source: e.into(),
                })?;
                attach_program(&mut ebpf, spec.noop, spec.target)?;
                Ok(ebpf)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Floor { _objects: objects })
    }
}
