//! kcmp-trace: which path every kcmp(2) call takes, measured with eBPF.
//!
//! Roles: [`probe`] looks at the kernel, [`plan`] and [`loader`] attach, [`report`] turns
//! counters into numbers, [`sinks`] print them; [`stress`] is the workload that keeps its own
//! count.

pub mod bench;
pub mod bpf_info;
pub mod cli;
pub mod cmd;
pub mod error;
pub mod loader;
pub mod plan;
pub mod probe;
pub mod report;
pub mod serve;
pub mod sinks;
pub mod stress;
