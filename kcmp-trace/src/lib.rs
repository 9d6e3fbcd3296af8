//! kcmp-trace: which path every kcmp(2) call takes, measured with eBPF.
//!
//! Roles, bottom up (docs/architecture.md has the picture, and `cargo xtask test` holds the
//! imports to it): [`probe`] looks at the kernel once; [`config`] is what a tracer is asked
//! for; [`object`] loads the eBPF objects and [`attach`] attaches one program ([`retprobe`]
//! gives return probes room for every call); [`plan`] chooses the hooks and asks the kernel
//! what it must ([`plan::checks`]); [`loader`] attaches a plan as a `Tracer` ([`bpf_info`]
//! reads what the kernel counts for its programs, [`bpf_log`] forwards their diagnostics,
//! [`event_stream`] is the one reader of their per-call events); [`exited`] keeps what they
//! count past a process's exit; the numbers, in the shapes consumers parse, are
//! `kcmp_trace_common::json`'s; [`recording`] keeps a session in a file, [`sinks`] print
//! and plot them, [`serve`] serves them over HTTP and [`client`] reads a daemon's back;
//! [`lifecycle`] starts and stops a session, [`cmd`] are the subcommands; [`stress`] is
//! the workload that keeps its own count; [`hook_cost`] is what each hook costs per run.
//! The bench (`kcmp-trace-bench`, a crate of its own) builds on these modules to measure
//! what tracing costs.

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("kcmp-trace supports x86_64 and aarch64 (kcmp_trace_common::arch)");

pub mod attach;
pub mod bpf_info;
pub mod bpf_log;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod config;
pub mod error;
pub mod event_stream;
pub mod exited;
pub mod hook_cost;
pub mod lifecycle;
pub mod loader;
pub mod object;
pub mod plan;
pub mod probe;
pub mod recording;
pub mod retprobe;
pub mod serve;
pub mod sinks;
pub mod stress;
pub mod unpreempted;
