//! The tracer: the plan's hooks attached from the tracer's object, and what its maps
//! aggregate, read for every reader alike.

use std::sync::Mutex;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap},
};
use kcmp_trace_common::{
    classify::Strategy,
    event::comm_bytes,
    maps::{self, ProcessTotals},
    reader::CallerCounts,
    snapshot::Counters,
    stacks::{self, StackCounts, StackKey, stack_ref},
};

use kcmp_trace_common::json::{
    readout::{CallerRow, HookCounters, ProcessRow},
    stacks::StackRow,
};

use crate::{
    attach::attach_program,
    bpf_info,
    bpf_log::BpfLog,
    config::{TraceConfig, validate},
    error::Error,
    event_stream::EventStream,
    exited::Exited,
    object::{KernelFacts, event_stream, load_object, program_counters, tracer_object},
    plan::{
        AttachMode, Hook, LockWaits, Plan, Role, accuracy, candidates, checks, reader_accuracy,
        return_probes_limited,
    },
    probe::{self, kallsyms::TextSymbols},
    retprobe::ReturnProbe,
    unpreempted::UnpreemptedReads,
};

/// The maps `--stacks` counts in, and the symbols that name their frames.
struct Stacks {
    counts: PerCpuHashMap<MapData, StackKey, StackCounts>,
    traces: StackTraceMap<MapData>,
    symbols: TextSymbols,
}

/// An attached tracer. Dropping it detaches and unloads everything.
pub struct Tracer {
    pub plan: Plan,
    /// The release of the kernel it is attached to (`uname -r`).
    pub kernel_release: String,
    counters: PerCpuArray<MapData, Counters>,
    /// Runs outside kcmp of the hooks every process meets, per slot (`maps::outside`).
    outside_runs: PerCpuArray<MapData, u64>,
    /// Per-process totals; removing exited processes needs the map mutably. Their final
    /// totals move to `exited` first (taken under this lock, then `exited`'s).
    processes: Mutex<HashMap<MapData, u32, ProcessTotals>>,
    exited: Mutex<Exited>,
    max_processes: u32,
    /// Other callers' counts by call site, and the symbols that name them (`--readers`).
    callers: Option<(HashMap<MapData, u64, CallerCounts>, TextSymbols)>,
    /// Lock waits and write sections by stack, the stacks, and the symbols that name their
    /// frames (`--stacks`).
    stacks: Option<Stacks>,
    events: Option<EventStream>,
    /// Where each hook's runs outside kcmp are counted (`maps::outside`), in `plan.hooks`'
    /// order.
    outside_slots: Vec<Option<u32>>,
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
        let (tried, why) = candidates(
            config.attach,
            config.strategy,
            &caps.preemption,
            caps.series.present(),
        );
        let facts = KernelFacts {
            series: caps.series.present(),
            comm_offset: checks::comm_offset(caps),
            readers: if config.readers {
                Some(caps.reader_offsets.ok_or_else(|| {
                    Error::NoHook(
                        "--readers: the kernel's BTF does not place task_struct.signal and \
                         signal_struct.exec_update_lock"
                            .into(),
                    )
                })?)
            } else {
                None
            },
            // Without them, stacks name no holder: waits are kept under none.
            lock: caps.reader_offsets.filter(|_| config.stacks),
        };
        let mut attached = None;
        for &(mode, strategy) in &tried {
            match load_and_attach(config, caps, mode, strategy, facts) {
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
            outside_slots,
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
        plan.why = match return_probes_limited(
            plan.mode,
            caps.kretprobe_instances,
            caps.kretprobe_instances_limited.as_deref(),
        ) {
            Some(limited) => {
                // At the default level: the daemon's journal has it.
                log::warn!("{limited}");
                format!("{why}; {limited}")
            }
            None => why,
        };

        let probe_links = if plan.mode == AttachMode::Kprobe && caps.probe_misses_readable {
            probe_links(&ebpf, &plan)?
        } else {
            Vec::new()
        };
        let counters = PerCpuArray::try_from(
            ebpf.take_map(maps::COUNTERS_MAP)
                .context("COUNTERS map missing")?,
        )?;
        let outside_runs = PerCpuArray::try_from(
            ebpf.take_map(maps::OUTSIDE_RUNS_MAP)
                .context("OUTSIDE_RUNS map missing")?,
        )?;
        let processes = Mutex::new(HashMap::try_from(
            ebpf.take_map(maps::PROCESSES_MAP)
                .context("PROCESSES map missing")?,
        )?);
        let callers = if config.readers {
            let map = HashMap::try_from(
                ebpf.take_map(maps::OTHER_CALLERS_MAP)
                    .context("OTHER_CALLERS map missing")?,
            )?;
            Some((map, TextSymbols::read().context("reading /proc/kallsyms")?))
        } else {
            None
        };
        let stacks = if config.stacks {
            Some(Stacks {
                counts: PerCpuHashMap::try_from(
                    ebpf.take_map(stacks::STACK_COUNTS_MAP)
                        .context("STACK_COUNTS map missing")?,
                )?,
                traces: StackTraceMap::try_from(
                    ebpf.take_map(stacks::STACK_TRACES_MAP)
                        .context("STACK_TRACES map missing")?,
                )?,
                symbols: TextSymbols::read().context("reading /proc/kallsyms")?,
            })
        } else {
            None
        };
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
            outside_runs,
            processes,
            exited: Mutex::new(Exited::new(config.max_processes as usize)),
            max_processes: config.max_processes,
            callers,
            stacks,
            events,
            outside_slots,
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
            .zip(&self.outside_slots)
            .enumerate()
            .map(|(i, (hook, outside_slot))| {
                let kernel = program_counters(&self.ebpf, &hook.program)?;
                let mut probe_misses = 0;
                for &(_, link) in self.probe_links.iter().filter(|(h, _)| *h == i) {
                    probe_misses += bpf_info::kprobe_link_missed(link)
                        .with_context(|| format!("reading {}'s link", hook.program))?;
                }
                Ok(HookCounters {
                    program: hook.program.clone(),
                    target: hook.target.clone(),
                    affects: hook.affects.clone(),
                    misses: kernel.recursion_misses + probe_misses,
                    run_time_ns: kernel.run_time_ns,
                    run_count: kernel.run_count,
                    runs_outside_kcmp: outside_slot
                        .map(|slot| self.runs_outside_kcmp(slot))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// All CPUs' runs of one OUTSIDE_RUNS slot.
    fn runs_outside_kcmp(&self, slot: u32) -> anyhow::Result<u64> {
        let _fifo = UnpreemptedReads::enter();
        let per_cpu = self
            .outside_runs
            .get(&slot, 0)
            .context("reading OUTSIDE_RUNS")?;
        Ok(per_cpu.iter().sum())
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

    /// Other callers' counts since attach, one row per function they called from (None
    /// unless readers are followed). A site the kernel saw no address for is not here: it
    /// is counted in `misc::OTHERS_UNPLACED`.
    pub fn callers(&self) -> anyhow::Result<Option<Vec<CallerRow>>> {
        let Some((map, symbols)) = &self.callers else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        {
            let _fifo = UnpreemptedReads::enter();
            for entry in map.iter() {
                let (addr, counts) = entry.context("reading OTHER_CALLERS")?;
                let symbol = symbols
                    .containing(addr)
                    .map_or_else(|| format!("{addr:#x}"), str::to_owned);
                rows.push(CallerRow::of(symbol, &counts));
            }
        }
        Ok(Some(CallerRow::by_symbol(rows)))
    }

    /// Lock waits and write sections by kernel stack since attach, frames symbolized
    /// (None without `--stacks`). A count under a stack the map no longer holds shows as
    /// `[stack lost]`, never dropped.
    pub fn stacks(&self) -> anyhow::Result<Option<Vec<StackRow>>> {
        let Some(Stacks {
            counts,
            traces,
            symbols,
        }) = &self.stacks
        else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        let mut frames: std::collections::HashMap<u32, Option<Vec<u64>>> = Default::default();
        let _fifo = UnpreemptedReads::enter();
        for entry in counts.iter() {
            let (key, per_cpu) = entry.context("reading STACK_COUNTS")?;
            let mut sum = StackCounts::default();
            for cpu in per_cpu.iter() {
                sum.add(cpu);
            }
            let ips = stack_ref::id(key.stack).and_then(|id| {
                frames
                    .entry(id)
                    .or_insert_with(|| {
                        traces
                            .get(&id, 0)
                            .ok()
                            .map(|t| t.frames().iter().map(|f| f.ip).collect())
                    })
                    .clone()
            });
            let name = |ip: u64| {
                symbols
                    .containing(ip)
                    .map_or_else(|| format!("{ip:#x}"), str::to_owned)
            };
            rows.extend(StackRow::of(&key, &sum, ips.as_deref(), name));
        }
        Ok(Some(StackRow::merged(rows)))
    }

    /// The per-call event stream (only when the config asked for events).
    pub fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }
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

/// A loaded object whose programs are attached by a plan.
struct Attached {
    ebpf: Ebpf,
    plan: Plan,
    /// As [`Tracer::outside_slots`].
    outside_slots: Vec<Option<u32>>,
    return_probes: Vec<ReturnProbe>,
}

/// Loads the tracer's object for one (mode, strategy) and attaches every hook the plan
/// names; an optional hook that fails to attach is left out, with why.
fn load_and_attach(
    config: &TraceConfig,
    caps: &probe::Capabilities,
    mode: AttachMode,
    strategy: Strategy,
    facts: KernelFacts,
) -> anyhow::Result<Attached> {
    let checks::HookPlan {
        attach: planned,
        mut skipped,
        lock_waits,
    } = checks::hooks(caps, mode, strategy, facts.readers.is_some())?;
    let series = facts.series;
    let mut ebpf = load_object(tracer_object(), config, strategy, facts)?;
    let btf = caps.kernel_btf.as_deref();
    let mut hooks = Vec::new();
    let mut outside_slots = Vec::new();
    let mut return_probes = Vec::new();
    for p in planned {
        match attach_program(&mut ebpf, btf, p.program, &p.target, &mut return_probes) {
            Ok(()) => {
                hooks.push(Hook {
                    target: p.target,
                    program: p.program.to_owned(),
                    affects: p.role.affects().to_vec(),
                    outside_kcmp: p.role.outside_kcmp().map(str::to_owned),
                });
                outside_slots.push(p.role.outside_slot());
            }
            Err(e) if !p.required => skipped.push((p.target, crate::error::one_line(&e))),
            Err(e) => return Err(e),
        }
    }
    let attached = |role: Role| hooks.iter().any(|h: &Hook| h.target == role.function());
    // Waits are timed only if both ends of one attached.
    let timed = lock_waits.filter(|(waits, _)| match waits {
        LockWaits::Contention => attached(Role::ContentionBegin) && attached(Role::ContentionEnd),
        LockWaits::Probes => attached(Role::LockEnter) && attached(Role::LockExit),
    });
    let mut accuracy = accuracy(
        mode,
        strategy,
        series,
        timed.map(|(waits, _)| waits),
        attached(Role::ExecSetupExit),
        attached(Role::TsyncEnd),
        caps,
    );
    if let Some(offsets) = facts.readers {
        let followed: Vec<_> = kcmp_trace_common::reader::ProcReader::ALL
            .into_iter()
            .filter(|&r| attached(Role::ReaderExit(r)))
            .collect();
        accuracy.extend(reader_accuracy(
            mode,
            strategy,
            &followed,
            offsets.thread_list.is_some(),
        ));
    }
    Ok(Attached {
        ebpf,
        plan: Plan {
            mode,
            strategy,
            series,
            preemption: caps.preemption.clone(),
            why: String::new(),
            hooks,
            lock_waits: timed.map(|(waits, _)| waits),
            lock_waits_why: timed.map_or(String::new(), |(_, why)| why.to_owned()),
            skipped,
            rejected: Vec::new(),
            accuracy: accuracy
                .into_iter()
                .map(|(what, how)| (what.to_owned(), how))
                .collect(),
        },
        outside_slots,
        return_probes,
    })
}
