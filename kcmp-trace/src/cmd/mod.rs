//! The subcommands.

pub mod doctor;
pub mod events;
pub mod generate;
pub mod record;
pub mod report;
pub mod serve;
pub mod stress;
pub mod watch;

use crate::{cli::TraceArgs, config::TraceConfig};

impl TraceArgs {
    pub fn config(&self) -> TraceConfig {
        TraceConfig {
            tgids: self.pids.clone(),
            comm: self.comm.clone(),
            attach: self.attach,
            strategy: self.strategy,
            bpf_log: self.bpf_log,
            max_threads: self.max_threads,
            max_processes: self.max_processes,
            readers: self.readers,
            stacks: self.stacks,
            ..TraceConfig::default()
        }
    }
}

/// Says what a reader's last flush left staged in the kernel: those events are not in its
/// output.
pub fn warn_unflushed(left: &crate::event_stream::Unflushed) {
    if let Some(line) = left.warning() {
        eprintln!("kcmp-trace: {line}");
    }
}
