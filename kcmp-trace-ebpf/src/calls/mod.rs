//! What the programs do, by job, shared by every attach mode (main.rs binds them to hooks).
//! Lower modules first: each uses only those above it in this list.

/// Who may write what, and how: plain, atomic, one store at a time.
pub mod cells;
/// Events, staged per CPU and sent to the ring.
pub mod events;
/// kcmp's calls.
pub mod kcmp;
/// exec_update_lock waits, and the one way a call's is accounted.
pub mod locks;
/// The maps and globals.
pub mod maps;
/// exec_update_lock's other callers, counted by call site.
pub mod others;
/// The /proc readers' calls.
pub mod readers;
/// exec_update_lock's write sections (exec, Landlock TSYNC).
pub mod sections;
/// `--stacks`: waiters' and writers' kernel stacks, counted by stack.
pub mod stacks;
/// A thread's call in flight, and the one way a call opens.
pub mod thread;
/// The marks the probes inside a call leave on its trail.
pub mod trail;

/// CLOCK_MONOTONIC in ns.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and only reads the clock.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}
