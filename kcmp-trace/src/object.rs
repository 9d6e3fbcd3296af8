//! The eBPF objects the build made, and loading one with a tracer's settings: its globals
//! (filters, strategy, comm offset, log level) and map sizes. What to attach is the plan's.

use std::os::fd::AsFd as _;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{KProbeError, ProgramError, RawTracePoint, TracePointError},
    sys::SyscallError,
};
use kcmp_trace_common::{
    classify::Strategy,
    event::{COMM_LEN, comm_key},
    maps::{self, globals},
    programs,
    stacks::{self, MAX_STACK_KEYS, MAX_STACK_TRACES},
};

use crate::{
    bpf_info,
    config::TraceConfig,
    error::Error,
    event_stream::EventStream,
    probe::{
        btf::ReaderOffsets,
        privilege::{Refused, explain},
    },
};

/// An eBPF object the build made from the eBPF crate.
#[derive(Clone, Copy)]
pub struct Object {
    pub name: &'static str,
    pub bytes: &'static [u8],
}

impl Object {
    /// Loads it as built, without a tracer's settings.
    pub fn load(self) -> Result<Ebpf, Error> {
        EbpfLoader::new()
            .load(self.bytes)
            .map_err(|e| self.refused(e))
    }

    pub(crate) fn refused(self, e: aya::EbpfError) -> Error {
        let what = format!("the eBPF object {}", self.name);
        let hint = match &e {
            aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => {
                explain(Refused::Bpf, io_error)
            }
            aya::EbpfError::ProgramError(p) => lacking(p),
            _ => None,
        };
        match hint {
            Some(hint) => Error::Denied(format!(
                "the kernel refused {what}: {}; {hint}",
                crate::error::one_line(&anyhow::Error::new(e))
            )),
            None => Error::Bpf {
                what,
                source: e.into(),
            },
        }
    }
}

/// The tracer's programs: all that tracing loads.
pub(crate) fn tracer_object() -> Object {
    Object {
        name: "kcmp-trace-probes",
        bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kcmp-trace-probes")),
    }
}

/// What the loaded programs are told of the kernel: whether it has the series, where they
/// read comms (0: through bpf_get_current_comm(); `plan::checks::comm_offset` decides),
/// where a task's exec_update_lock is when readers are followed (`readers`), or when only
/// stacks name the lock's holders (`lock`).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelFacts {
    pub series: bool,
    pub comm_offset: u32,
    pub readers: Option<ReaderOffsets>,
    pub lock: Option<ReaderOffsets>,
}

/// Loads `object` with a tracer's settings and the kernel's facts.
pub fn load_object(
    object: Object,
    config: &TraceConfig,
    strategy: Strategy,
    facts: KernelFacts,
) -> anyhow::Result<Ebpf> {
    let KernelFacts {
        series,
        comm_offset,
        readers,
        lock,
    } = facts;
    let offsets = readers.or(lock);
    let (thread_head, thread_node) = offsets.and_then(|r| r.thread_list).unwrap_or((0, 0));
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
        .override_global(globals::TRACE_READERS, &u8::from(readers.is_some()), true)
        .override_global(
            globals::SIGNAL_OFFSET,
            &offsets.map_or(0, |r| r.signal),
            true,
        )
        .override_global(
            globals::EXEC_UPDATE_LOCK_OFFSET,
            &offsets.map_or(0, |r| r.exec_update_lock),
            true,
        )
        .override_global(globals::THREAD_HEAD_OFFSET, &thread_head, true)
        .override_global(globals::THREAD_NODE_OFFSET, &thread_node, true)
        .override_global(globals::TRACE_STACKS, &u8::from(config.stacks), true)
        // aya-log's own name for the level its programs check (aya-log-ebpf documents
        // setting it before load), which must exist: a rename would fail the load, not
        // silence the logs.
        .override_global(aya_log::LEVEL, &bpf_log_level(config.bpf_log), true)
        .map_max_entries(maps::EVENTS_MAP, config.ring_bytes)
        .map_max_entries(maps::THREADS_MAP, config.max_threads)
        // Preallocated maps: a tracer that does not follow readers keeps them at one entry.
        .map_max_entries(
            maps::READER_THREADS_MAP,
            if readers.is_some() {
                config.max_threads
            } else {
                1
            },
        )
        .map_max_entries(
            maps::OTHER_CALLERS_MAP,
            if readers.is_some() {
                maps::MAX_OTHER_CALLERS
            } else {
                1
            },
        )
        .map_max_entries(
            stacks::STACK_TRACES_MAP,
            if config.stacks { MAX_STACK_TRACES } else { 1 },
        )
        .map_max_entries(
            stacks::STACK_COUNTS_MAP,
            if config.stacks { MAX_STACK_KEYS } else { 1 },
        )
        .map_max_entries(
            stacks::SECTION_LOCKS_MAP,
            if config.stacks { maps::MAX_WRITERS } else { 1 },
        )
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

/// The highest level the programs log at: every record with `--bpf-log`, none without
/// (0 is below aya-log's lowest level, Error).
fn bpf_log_level(on: bool) -> u8 {
    if on { aya_log::Level::Trace as u8 } else { 0 }
}

/// The event ring of a loaded object, with the stages its flush program sends.
pub fn event_stream(ebpf: &mut Ebpf) -> anyhow::Result<EventStream> {
    let flush: &mut RawTracePoint = ebpf
        .program_mut(programs::FLUSH_EVENTS)
        .context("flush program missing")?
        .try_into()?;
    flush.load().map_err(bpf_err(programs::FLUSH_EVENTS))?;
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
pub fn program_counters(ebpf: &Ebpf, program: &str) -> anyhow::Result<bpf_info::ProgramCounters> {
    let fd = ebpf
        .program(program)
        .with_context(|| format!("program {program} missing"))?
        .fd()
        .context("program descriptor")?;
    bpf_info::program_counters(fd.as_fd()).with_context(|| format!("reading {program}'s counters"))
}

/// A refusal in one line: the verifier's log can run to thousands of lines, and its verdict
/// is at the end. The whole log is kept at debug level (-vv).
pub(crate) fn bpf_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> Error {
    let what = what.into();
    move |e| {
        log::debug!("{what}: {e}");
        let hint = lacking(&e);
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
        match hint {
            Some(hint) => Error::Denied(format!("the kernel refused {what}: {why}; {hint}")),
            None => Error::Bpf {
                what,
                source: anyhow::anyhow!(why),
            },
        }
    }
}

/// Which capability or sysctl the program error's refusal lacks, if it is one: by what
/// aya was doing when the kernel said EACCES or EPERM.
fn lacking(e: &ProgramError) -> Option<String> {
    let (what, io_error) = match e {
        ProgramError::LoadError { io_error, .. } => (Refused::Bpf, io_error),
        ProgramError::SyscallError(SyscallError { call, io_error }) => {
            if call.starts_with("perf_event_open") {
                (Refused::PerfEventOpen, io_error)
            } else if call.starts_with("bpf") {
                (Refused::Bpf, io_error)
            } else {
                return None;
            }
        }
        ProgramError::TracePointError(TracePointError::FileError { io_error, .. }) => {
            (Refused::TracefsRead, io_error)
        }
        // Where the kernel has no kprobe PMU, aya defines kprobes in kprobe_events.
        ProgramError::KProbeError(KProbeError::FileError { filename, io_error }) => {
            if filename.ends_with("kprobe_events") {
                (Refused::TracefsWrite, io_error)
            } else {
                (Refused::TracefsRead, io_error)
            }
        }
        _ => return None,
    };
    explain(what, io_error)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The program names of an object, as the build made it.
    fn programs_of(object: Object) -> Vec<String> {
        let parsed = aya_obj::Object::parse(object.bytes).expect("the object parses");
        let mut names: Vec<String> = parsed.programs.into_keys().collect();
        names.sort();
        names
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_tracer_object_holds_the_table_s_programs_and_no_others() {
        let mut table = programs::HOOKS.to_vec();
        table.extend([programs::FLUSH_EVENTS, programs::COMM_READ]);
        assert_eq!(programs_of(tracer_object()), sorted(&table));
        let parsed = aya_obj::Object::parse(tracer_object().bytes).expect("the object parses");
        for map in [
            maps::COUNTERS_MAP,
            maps::EVENTS_MAP,
            maps::STAGE_MAP,
            maps::STAGE_FILL_MAP,
            maps::TGID_FILTER_MAP,
            maps::THREADS_MAP,
            maps::PROCESSES_MAP,
            maps::WRITERS_MAP,
        ] {
            assert!(parsed.maps.contains_key(map), "map {map} missing");
        }
    }
}
