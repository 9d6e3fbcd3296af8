//! What the bench reports: the types of its JSON (`--json-out`) are
//! `kcmp_trace_common::json::bench`, which `cargo xtask bench` reads back; here is what
//! fills them from what the kernel says.

use kcmp_trace::{bpf_info::ProgramCounters, plan::Affects};
pub use kcmp_trace_common::json::bench::*;

/// What the verifier and the JIT made of a program, as the kernel tells it.
pub fn image_of(c: &ProgramCounters) -> Image {
    Image {
        verified_insns: c.verified_insns,
        xlated_bytes: c.xlated_bytes,
        jited_bytes: c.jited_bytes,
    }
}

/// The steps one run of a kcmp-trace program takes on the bench's calls (the eBPF
/// crate's `calls::kcmp`), by what its hook is for.
pub fn steps_of(affects: &[Affects], events: bool) -> Vec<Step> {
    use Step::*;
    if affects.contains(&Affects::CallEntry) {
        vec![PidTgid, Clock, Thread]
    } else if affects.contains(&Affects::CallExit) {
        let mut steps = vec![PidTgid, Thread, Clock, Counters, Totals];
        if events {
            steps.extend([Event, Comm]);
        }
        steps
    } else if affects.contains(&Affects::LockWait) {
        vec![PidTgid, Thread, Clock]
    } else if affects.contains(&Affects::Outcome) {
        vec![PidTgid, Thread]
    } else {
        // The exec side: the bench's loop execs nothing.
        Vec::new()
    }
}
