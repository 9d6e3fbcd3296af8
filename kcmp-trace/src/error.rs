//! Errors a user can cause or meet, each with its own exit code.

use std::process::ExitCode;

use crate::probe::privilege;

/// Exit codes, listed in `kcmp-trace --help` (`cli::EXIT_CODES`) and docs/usage.md.
pub mod exit {
    pub const OK: u8 = 0;
    /// Anything not listed below.
    pub const FAILURE: u8 = 1;
    /// Bad arguments (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// Not privileged: without CAP_BPF + CAP_PERFMON, or refused for lack of a capability
    /// or sysctl that the message names.
    pub const PERMISSION: u8 = 3;
    /// tracefs is not mounted and could not be mounted.
    pub const NO_TRACEFS: u8 = 4;
    /// A hook the plan needs does not exist on this kernel.
    pub const NO_HOOK: u8 = 5;
    /// The kernel refused to load or attach a program.
    pub const BPF: u8 = 6;
    /// A daemon could not listen on the requested address.
    pub const LISTEN: u8 = 7;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    /// Without CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN). The message names the missing ones,
    /// read when it is shown: a process's effective set does not change as it runs.
    #[error("{}", privilege::not_privileged(privilege::CapSet::effective()))]
    Permission,
    /// The kernel refused something for lack of a capability or sysctl: what, and which
    /// would allow it (`probe::privilege::why`).
    #[error("{0}")]
    Denied(String),
    #[error("tracefs is not available at /sys/kernel/tracing and mounting it failed: {0}")]
    NoTracefs(String),
    #[error("{0}")]
    NoHook(String),
    #[error("the kernel refused {what}: {source}")]
    Bpf {
        what: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Permission | Error::Denied(_) => exit::PERMISSION,
            Error::NoTracefs(_) => exit::NO_TRACEFS,
            Error::NoHook(_) => exit::NO_HOOK,
            Error::Bpf { .. } => exit::BPF,
            Error::Listen { .. } => exit::LISTEN,
        }
    }
}

/// The exit code for any error: ours by kind, everything else FAILURE.
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map_or(exit::FAILURE, Error::exit_code);
    ExitCode::from(code)
}

/// One line: the error and its causes, for stderr.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain().map(|e| e.to_string()) {
        // Our errors already include their source in their message.
        if line.ends_with(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}
