//! The architectures kcmp-trace is built, packaged and tested for, and what differs between
//! them for the automation: the Rust target of the static binary, its C cross compiler (ring
//! compiles C), the Debian architecture, and how qemu boots a guest of it. What differs for
//! the tracer itself is in `kcmp_trace_common::arch`.

use std::{env, fmt, path::PathBuf};

use kcmp_trace_common::arch::Arch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    #[value(name = "x86_64")]
    X86_64,
    Aarch64,
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or the workspace's `target`.
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(
        || crate::workspace::workspace_root().join("target"),
        PathBuf::from,
    )
}

/// The static binary cargo builds for `arch`.
pub fn static_binary(arch: Target) -> PathBuf {
    target_dir().join(arch.triple()).join("release/kcmp-trace")
}

/// The bench's static binary for `arch` (`dist::build_static_bench`).
pub fn static_bench_binary(arch: Target) -> PathBuf {
    target_dir()
        .join(arch.triple())
        .join("release/kcmp-trace-bench")
}

/// The machine the automation runs on.
#[cfg(target_arch = "x86_64")]
pub const HOST: Target = Target::X86_64;
#[cfg(target_arch = "aarch64")]
pub const HOST: Target = Target::Aarch64;

impl Target {
    pub const ALL: [Target; 2] = [Target::X86_64, Target::Aarch64];

    /// The tracer's own facts of this architecture.
    pub fn tracer_arch(self) -> Arch {
        match self {
            Target::X86_64 => Arch::X86_64,
            Target::Aarch64 => Arch::Aarch64,
        }
    }

    /// As `uname -m` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64",
            Target::Aarch64 => "aarch64",
        }
    }

    /// The static (musl) Rust target.
    pub fn triple(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64-unknown-linux-musl",
            Target::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    pub fn deb_arch(self) -> &'static str {
        match self {
            Target::X86_64 => "amd64",
            Target::Aarch64 => "arm64",
        }
    }

    /// The C compiler for the target's C code, and the linker when it is not the host's;
    /// Rust's self-contained musl start files and libc make the link static either way.
    pub fn cargo_env(self) -> Vec<(String, &'static str)> {
        let cc = format!("CC_{}", self.triple().replace('-', "_"));
        match self {
            Target::X86_64 => vec![(cc, "musl-gcc")],
            Target::Aarch64 => vec![
                (cc, "aarch64-linux-gnu-gcc"),
                (
                    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER".into(),
                    "aarch64-linux-gnu-gcc",
                ),
            ],
        }
    }

    /// What `file` says about an executable of this architecture.
    pub fn file_machine(self) -> &'static str {
        match self {
            Target::X86_64 => "x86-64",
            Target::Aarch64 => "ARM aarch64",
        }
    }

    pub fn qemu(self) -> &'static str {
        match self {
            Target::X86_64 => "qemu-system-x86_64",
            Target::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The machine qemu emulates, under TCG.
    pub fn qemu_machine(self) -> &'static [&'static str] {
        match self {
            Target::X86_64 => &["-cpu", "max"],
            Target::Aarch64 => &["-M", "virt", "-cpu", "max"],
        }
    }

    /// The Debian package qemu comes from.
    pub fn qemu_package(self) -> &'static str {
        match self {
            Target::X86_64 => "qemu-system-x86",
            Target::Aarch64 => "qemu-system-arm",
        }
    }

    /// The serial console device in the guest.
    pub fn console(self) -> &'static str {
        match self {
            Target::X86_64 => "ttyS0",
            Target::Aarch64 => "ttyAMA0",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
