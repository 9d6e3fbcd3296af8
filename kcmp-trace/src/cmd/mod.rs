//! The subcommands.

pub mod doctor;
pub mod events;
pub mod stress;
pub mod watch;

use crate::{cli::TraceArgs, loader::TraceConfig};

impl TraceArgs {
    pub fn config(&self) -> TraceConfig {
        TraceConfig {
            tgids: self.pids.clone(),
            comm: self.comm.clone(),
            attach: self.attach,
            bpf_log: self.bpf_log,
            ..TraceConfig::default()
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// A runtime for one command; tracing needs little, so keep it to one thread.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Tells scripts and tests the programs are attached, on stderr so stdout stays data.
pub fn announce(plan: &crate::plan::Plan) {
    eprintln!(
        "kcmp-trace: attached ({}); Ctrl-C to stop",
        plan.mode.name()
    );
}
