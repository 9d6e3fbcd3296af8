//! A tracing session's life, the same for every command and the daemon: a runtime, the
//! signals that stop it, its deadline, and the line that says it is attached.

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

/// Tells scripts and tests the programs are attached, on stderr so stdout stays data.
pub fn announce(plan: &crate::plan::Plan) {
    eprintln!(
        "kcmp-trace: attached ({}); Ctrl-C to stop",
        plan.mode.name()
    );
}
