//! kcmp-trace: which path every kcmp(2) call takes, measured with eBPF.
//!
//! Roles, bottom up (docs/architecture.md has the picture, and `cargo xtask test` holds the
//! imports to it): [`probe`] looks at the kernel once; [`config`] is what a tracer is asked
//! for; [`object`] loads the eBPF objects and [`attach`] attaches one program ([`retprobe`]
//! gives return probes room for every call); [`plan`] chooses the hooks and asks the kernel
//! what it must ([`plan::checks`]); [`loader`] attaches a plan as a `Tracer` ([`bpf_info`]
//! reads what the kernel counts for its programs, [`bpf_log`] forwards their diagnostics,
//! [`event_stream`] is the one reader of their per-call events); [`readout`] is the shape
//! of what they count and [`exited`] keeps it past a process's exit; [`report`] turns
//! counters into numbers, [`recording`] keeps a session in a file, [`sinks`] print and plot
//! them, [`serve`] serves them over HTTP in the shapes of [`wire`] that [`client`] reads
//! back; [`lifecycle`] starts and stops a session, [`cmd`] are the subcommands; [`stress`]
//! is the workload that keeps its own count, [`bench`] (with [`bench_attach`]) measures
//! what tracing costs.

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("kcmp-trace supports x86_64 and aarch64 (kcmp_trace_common::arch)");

pub mod attach;
pub mod bench;
pub mod bench_attach;
pub mod bpf_info;
pub mod bpf_log;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod config;
pub mod error;
pub mod event_stream;
pub mod exited;
pub mod lifecycle;
pub mod loader;
pub mod object;
pub mod plan;
pub mod probe;
pub mod readout;
pub mod recording;
pub mod report;
pub mod retprobe;
pub mod serve;
pub mod sinks;
pub mod stress;
pub mod unpreempted;
pub mod wire;
