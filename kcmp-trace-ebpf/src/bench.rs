//! The bench's programs, in an object of their own that only `kcmp-trace-bench` loads: the
//! do-nothing programs, attached to a plan's hooks for the floor any tracer there pays,
//! and the cost ladder (cost.rs), each step through the same code and maps (`calls`) as
//! the tracer's programs.
#![no_std]
#![no_main]
// Atomic adds (calls::cells): the BPF target has no compare-and-swap, so no core atomics.
#![feature(core_intrinsics)]
#![allow(internal_features)]

// The ladder runs parts of the tracer's code, not all of it.
#[allow(dead_code)]
mod calls;
mod cost;
mod support;
#[allow(dead_code)]
mod tp;

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use kcmp_trace_common::{named_as, programs::bench};

named_as!(noop_tp, bench::NOOP_TP);
named_as!(noop_raw_tp, bench::NOOP_RAW_TP);
named_as!(noop_fentry, bench::NOOP_ENTRY.trampoline);
named_as!(noop_kprobe, bench::NOOP_ENTRY.kprobe);
named_as!(noop_fexit, bench::NOOP_RETURN.trampoline);
named_as!(noop_kretprobe, bench::NOOP_RETURN.kprobe);

#[tracepoint]
pub fn noop_tp(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint]
pub fn noop_raw_tp(_ctx: RawTracePointContext) -> u32 {
    0
}

#[kprobe]
pub fn noop_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kretprobe]
pub fn noop_kretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

#[fentry]
pub fn noop_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit]
pub fn noop_fexit(_ctx: FExitContext) -> u32 {
    0
}
