//! The subcommands.

pub mod bench;
pub mod doctor;
pub mod events;
pub mod generate;
pub mod record;
pub mod report;
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
            ..TraceConfig::default()
        }
    }
}

/// Ctrl-C and SIGTERM, caught from the moment this is installed: install it before telling
/// anyone we are attached, or an early signal kills us without a summary.
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Must run inside a tokio runtime (e.g. after `Runtime::enter`).
    pub fn install() -> anyhow::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next Ctrl-C or SIGTERM.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Resolves after `duration`, or never.
pub async fn deadline(duration: Option<std::time::Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// A runtime for one command; tracing needs little, so keep it to one thread.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Says what a reader's last flush left staged in the kernel: those events are not in its
/// output.
pub fn warn_unflushed(left: &crate::event_stream::Unflushed) {
    if left.total() != 0 {
        eprintln!(
            "kcmp-trace: {} events were still staged in the kernel and are not shown ({} behind a call in progress, {} on offline CPUs)",
            left.total(),
            left.busy,
            left.offline
        );
    }
}

/// Tells scripts and tests the programs are attached, on stderr so stdout stays data.
pub fn announce(plan: &crate::plan::Plan) {
    eprintln!(
        "kcmp-trace: attached ({}); Ctrl-C to stop",
        plan.mode.name()
    );
}
