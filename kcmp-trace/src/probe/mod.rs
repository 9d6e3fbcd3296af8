//! What this kernel allows, found by looking and by trying, before anything is attached.

pub mod btf;
pub mod kallsyms;

use std::path::{Path, PathBuf};

use serde::Serialize;

use self::{btf::BtfIndex, kallsyms::Kallsyms};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Kernel functions kcmp-trace may hook, reported by `doctor`.
pub const KCMP_SYMBOLS: &[&str] = &[
    "__x64_sys_kcmp",
    "__do_sys_kcmp",
    "kcmp_lock",
    "ptrace_may_access",
    "down_read_killable",
    "down_read_killable_nested",
    "exec_update_speculate_try_begin",
    "exec_update_speculate_retry",
    "begin_new_exec",
    "setup_new_exec",
    "exec_mmap",
];

/// The helpers the exec_update_seq series adds.
pub const SERIES_HELPERS: [&str; 2] = [
    "exec_update_speculate_try_begin",
    "exec_update_speculate_retry",
];

#[derive(Debug, Serialize)]
pub struct Symbol {
    pub name: &'static str,
    /// In /proc/kallsyms (a real, out-of-line function).
    pub kallsyms: bool,
    /// Has a BTF FUNC record (fentry can target it).
    pub btf: bool,
}

#[derive(Debug, Serialize)]
pub struct Series {
    /// BTF has `signal_struct.exec_update_seq`.
    pub btf_member: bool,
    /// The speculation helpers are real functions (kallsyms).
    pub helpers_out_of_line: bool,
}

impl Series {
    pub fn present(&self) -> bool {
        self.btf_member || self.helpers_out_of_line
    }
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    pub kernel: String,
    pub privileged: bool,
    pub btf: bool,
    pub tracefs: Option<PathBuf>,
    pub kcmp_tracepoints: bool,
    pub kprobes: bool,
    pub symbols: Vec<Symbol>,
    pub series: Series,
    /// kernel.bpf_stats_enabled: per-program run time and count are kept.
    pub bpf_stats_enabled: bool,
}

impl Capabilities {
    /// Looks at this kernel. Mounts tracefs if it is not mounted and we may.
    pub fn detect() -> Capabilities {
        let btf = std::fs::read(BTF_VMLINUX)
            .ok()
            .and_then(|data| BtfIndex::parse(&data).ok());
        let kallsyms = Kallsyms::read().unwrap_or_default();
        let tracefs = ensure_tracefs().ok();
        let kcmp_tracepoints = tracefs.as_deref().is_some_and(|t| {
            ["sys_enter_kcmp", "sys_exit_kcmp"]
                .iter()
                .all(|tp| t.join("events/syscalls").join(tp).exists())
        });
        let symbols = KCMP_SYMBOLS
            .iter()
            .map(|&name| Symbol {
                name,
                kallsyms: kallsyms.contains(name),
                btf: btf.as_ref().is_some_and(|b| b.has_function(name)),
            })
            .collect();
        let series = Series {
            btf_member: btf
                .as_ref()
                .is_some_and(|b| b.has_member("signal_struct", "exec_update_seq")),
            helpers_out_of_line: SERIES_HELPERS.iter().all(|h| kallsyms.contains(h)),
        };
        Capabilities {
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            privileged: privileged(),
            btf: btf.is_some(),
            tracefs,
            kcmp_tracepoints,
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            symbols,
            series,
            bpf_stats_enabled: read_trimmed("/proc/sys/kernel/bpf_stats_enabled")
                .is_some_and(|v| v == "1"),
        }
    }

    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Root, or the capabilities BPF tracing needs (CAP_BPF 39 and CAP_PERFMON 38, or CAP_SYS_ADMIN 21).
pub fn privileged() -> bool {
    let Some(caps) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
    else {
        return false;
    };
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    has(21) || (has(39) && has(38))
}

/// tracefs at /sys/kernel/tracing, mounted if needed.
pub fn ensure_tracefs() -> Result<PathBuf, crate::error::Error> {
    let root = PathBuf::from(TRACEFS);
    if root.join("events").is_dir() {
        return Ok(root);
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .stderr(std::process::Stdio::piped())
        .output();
    match status {
        Ok(out) if out.status.success() && root.join("events").is_dir() => Ok(root),
        Ok(out) => Err(crate::error::Error::NoTracefs(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
        Err(e) => Err(crate::error::Error::NoTracefs(e.to_string())),
    }
}
