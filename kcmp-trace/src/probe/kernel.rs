//! Facts about the running kernel, read once: its release and version, its CPUs, its
//! function symbols, its BTF and its preemption model. `Capabilities` is built on
//! one [`KernelInfo`]; nothing else reads these files.

use std::sync::Arc;

use aya::{Btf, Endianness, util::KernelVersion};

use super::{
    kallsyms::Kallsyms,
    preempt::{self, Preemption},
};

const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelInfo {
    /// `uname -r` (empty if unreadable).
    pub release: String,
    /// The version aya reads (None where it cannot tell).
    pub version: Option<KernelVersion>,
    /// CPUs the kernel could bring up.
    pub possible_cpus: u32,
    /// Functions that exist as real symbols.
    pub symbols: Kallsyms,
    /// The kernel's BTF as aya parses it: symbol checks, fentry/fexit loading.
    pub btf: Option<Arc<Btf>>,
    /// The same BTF's bytes, for the member questions aya's `Btf` cannot answer
    /// (`probe::btf`).
    pub raw_btf: Option<Vec<u8>>,
    pub preemption: Preemption,
}

impl KernelInfo {
    /// Reads it all; what cannot be read is left empty (`doctor` says what is missing).
    /// The preemption model is read from debugfs only where it is mounted.
    pub fn read() -> KernelInfo {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_owned())
            .unwrap_or_default();
        let raw_btf = std::fs::read(BTF_VMLINUX).ok();
        let btf = raw_btf
            .as_deref()
            .and_then(|data| Btf::parse(data, Endianness::default()).ok())
            .map(Arc::new);
        KernelInfo {
            version: KernelVersion::current().ok(),
            possible_cpus: aya::util::nr_cpus()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            // aya::util::kernel_symbols cannot say this: it keys symbols by address, so
            // aliases collapse, it drops the type (text or data), and where kptr_restrict
            // hides addresses every symbol is at 0 and one name survives.
            symbols: Kallsyms::read().unwrap_or_default(),
            btf,
            raw_btf,
            preemption: preempt::detect(&release),
            release,
        }
    }

    /// This kernel is `major.minor` or later.
    pub fn at_least(&self, major: u8, minor: u8) -> bool {
        self.version
            .is_some_and(|v| v >= KernelVersion::new(major, minor, 0))
    }
}
