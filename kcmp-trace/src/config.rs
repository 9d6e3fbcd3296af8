//! What a tracer is asked to trace and collect, checked before anything is loaded.

use kcmp_trace_common::{event::COMM_LEN, maps};
use serde::Serialize;

use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachRequest {
    /// The best mode that attaches here.
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

/// How to tell a call's path: the helpers' return values, or the order of what they guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StrategyRequest {
    /// Without the series, stock (the result tells the path); with it, direct where the
    /// helpers are real functions, else infer.
    Auto,
    Direct,
    Infer,
}

/// What to trace and what to collect.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    pub tgids: Vec<u32>,
    pub comm: Option<String>,
    pub events: bool,
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_bytes: u32,
    pub attach: AttachRequest,
    pub strategy: StrategyRequest,
    /// Let the eBPF side log its rare diagnostics through aya-log.
    pub bpf_log: bool,
    /// Entries of the per-thread (calls in flight) and per-process (totals) maps.
    pub max_threads: u32,
    pub max_processes: u32,
    /// Follow exec_update_lock's other readers too: the /proc readers call by call, any
    /// other caller by call site (`kcmp_trace_common::reader`).
    pub readers: bool,
    /// Count exec_update_lock's waiters and writers by kernel stack
    /// (`kcmp_trace_common::stacks`).
    pub stacks: bool,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            tgids: Vec::new(),
            comm: None,
            events: false,
            ring_bytes: 1 << 22,
            attach: AttachRequest::Auto,
            strategy: StrategyRequest::Auto,
            bpf_log: false,
            max_threads: maps::DEFAULT_MAX_THREADS,
            max_processes: maps::DEFAULT_MAX_PROCESSES,
            readers: false,
            stacks: false,
        }
    }
}

/// Refuses settings the kernel would refuse later, or that make no sense, with a usage error.
pub fn validate(config: &TraceConfig) -> Result<(), Error> {
    let page = 4096;
    if config.ring_bytes < page || !config.ring_bytes.is_power_of_two() {
        return Err(Error::Usage(format!(
            "ring buffer size must be a power of two of at least {page} bytes, got {}",
            config.ring_bytes
        )));
    }
    let mut tgids = config.tgids.clone();
    tgids.sort_unstable();
    tgids.dedup();
    if tgids.len() > maps::MAX_TGID_FILTER as usize {
        return Err(Error::Usage(format!(
            "at most {} processes can be traced by pid, got {}",
            maps::MAX_TGID_FILTER,
            tgids.len()
        )));
    }
    if let Some(comm) = &config.comm
        && (comm.is_empty() || comm.len() >= COMM_LEN)
    {
        return Err(Error::Usage(format!(
            "comm filter must be 1 to {} bytes (the kernel's comm length), got {comm:?}",
            COMM_LEN - 1
        )));
    }
    Ok(())
}
