//! What this kernel allows, found by looking and by trying, before anything is attached.

pub mod btf;
pub mod kallsyms;
pub mod kernel;
pub mod preempt;
pub mod privilege;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

use aya::Btf;
use aya_obj::btf::BtfKind;
use kcmp_trace_common::{arch, reader::ProcReader};

use self::{
    btf::{ReaderOffsets, reader_offsets, struct_has_member, task_comm_offset},
    kernel::KernelInfo,
    preempt::Preemption,
};

pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Instances a return probe defined in tracefs is given (`retprobe`): the kernel's limit
/// (KRETPROBE_MAXACTIVE_MAX).
pub const RETPROBE_INSTANCES: u32 = 4096;

/// Where kprobe events are defined.
pub fn kprobe_events_file() -> PathBuf {
    Path::new(TRACEFS).join("kprobe_events")
}

/// Whether return probes can be defined in tracefs here (`kprobe_events_writable`).
pub fn kprobe_events_available() -> bool {
    kprobe_events_writable().is_ok()
}

/// Whether this process may define return probes in tracefs: kprobe_events opened for
/// appending, which defines nothing. Else why not, in one line, naming the capability that
/// would allow it where privilege is what is missing.
pub fn kprobe_events_writable() -> Result<(), String> {
    let file = kprobe_events_file();
    match std::fs::OpenOptions::new().append(true).open(&file) {
        Ok(_) => Ok(()),
        Err(e) => Err(privilege::explain(privilege::Refused::TracefsWrite, &e)
            .unwrap_or_else(|| format!("{}: {e}", file.display()))),
    }
}
const DEBUGFS: &str = "/sys/kernel/debug";

/// Kernel functions kcmp-trace may hook, reported by `doctor`.
pub const KCMP_SYMBOLS: &[&str] = &[
    arch::NATIVE.kcmp_wrapper(),
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
    "landlock_restrict_sibling_threads",
    ProcReader::Stack.function(),
    ProcReader::Syscall.function(),
    ProcReader::Wchan.function(),
];

/// The function through which the kernel runs syscall tracepoints' BPF programs where it
/// runs them faultable: preemptible, with a per-program, per-CPU recursion guard (7.2).
const FAULTABLE_TRACEPOINT_RUNNER: &str = "trace_call_bpf_faultable";

/// The lock contention tracepoints' iterator (`lock:contention_begin`, 5.19 and later).
const CONTENTION_TRACEPOINT: &str = "__traceiter_contention_begin";

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
    /// This build's architecture: its programs read that architecture's pt_regs.
    pub arch: &'static str,
    pub privileged: bool,
    pub btf: bool,
    /// The kernel's BTF, parsed once: symbol checks here, fentry/fexit loading later.
    #[serde(skip)]
    pub kernel_btf: Option<Arc<Btf>>,
    /// Where tracefs is, or why it cannot be used (unreadable, or not mounted and not
    /// mountable): without it there are no syscall tracepoints to attach.
    pub tracefs: Result<PathBuf, String>,
    pub kcmp_tracepoints: bool,
    /// The kernel runs syscall tracepoint programs faultable (`trace_call_bpf_faultable`
    /// in kallsyms): on a preemptible kernel one preempted mid-run makes the kernel skip
    /// that program's other runs on the CPU, as with fentry.
    pub syscall_tracepoints_faultable: bool,
    /// The kernel has the `lock:contention_begin` and `contention_end` tracepoints.
    pub lock_contention_tracepoints: bool,
    pub kprobes: bool,
    pub symbols: Vec<Symbol>,
    pub series: Series,
    /// kernel.bpf_stats_enabled: per-program run time and count are kept.
    pub bpf_stats_enabled: bool,
    pub preemption: Preemption,
    /// The kernel counts each program's skipped runs (recursion_misses, 5.12 and later).
    pub recursion_misses_readable: bool,
    /// Perf links report a kprobe's own misses (6.7 and later).
    pub probe_misses_readable: bool,
    /// Where task_struct.comm is (from BTF): the programs read a caller's comm there
    /// directly instead of calling bpf_get_current_comm(), when the verifier allows it
    /// (`doctor` asks it).
    pub task_comm_offset: Option<u32>,
    /// Where a task's exec_update_lock is (BTF), for following the /proc readers.
    pub reader_offsets: Option<ReaderOffsets>,
    /// Calls a kretprobe can follow at once: as many as tracefs kprobe events allow
    /// (`retprobe`), else the kernel's default for perf kprobes, max(10, 2 x possible CPUs).
    pub kretprobe_instances: u32,
    /// Why return probes get the kernel's default here (`kprobe_events_writable`); None
    /// when they get RETPROBE_INSTANCES.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kretprobe_instances_limited: Option<String>,
}

impl Capabilities {
    /// Looks at this kernel. Mounts tracefs if it is not mounted and we may.
    pub fn detect() -> Capabilities {
        // Best effort: without it the model comes from the command line or config.
        let _ = ensure_debugfs();
        Capabilities::of(&KernelInfo::read())
    }

    /// What a kernel already read allows.
    pub fn of(kernel: &KernelInfo) -> Capabilities {
        let btf = kernel.btf.clone();
        let kallsyms = &kernel.symbols;
        let tracefs = ensure_tracefs().map_err(|e| e.to_string());
        let kcmp_tracepoints = tracefs.as_deref().is_ok_and(|t| {
            ["sys_enter_kcmp", "sys_exit_kcmp"]
                .iter()
                .all(|tp| t.join("events/syscalls").join(tp).exists())
        });
        let symbols = KCMP_SYMBOLS
            .iter()
            .map(|&name| Symbol {
                name,
                kallsyms: kallsyms.contains(name),
                btf: btf
                    .as_ref()
                    .is_some_and(|b| b.id_by_type_name_kind(name, BtfKind::Func).is_ok()),
            })
            .collect();
        let raw_btf = kernel.raw_btf.as_deref();
        let series = Series {
            btf_member: raw_btf.is_some_and(|data| {
                struct_has_member(data, "signal_struct", "exec_update_seq").unwrap_or(false)
            }),
            helpers_out_of_line: SERIES_HELPERS.iter().all(|h| kallsyms.contains(h)),
        };
        let task_comm_offset = raw_btf.and_then(|data| task_comm_offset(data).ok().flatten());
        let reader_offsets = raw_btf.and_then(|data| reader_offsets(data).ok().flatten());
        let at_least = |major, minor| kernel.at_least(major, minor);
        let kretprobe_instances_limited = kprobe_events_writable().err();
        Capabilities {
            kernel: kernel.release.clone(),
            arch: arch::NATIVE.name(),
            privileged: privileged(),
            btf: btf.is_some(),
            kernel_btf: btf,
            tracefs,
            kcmp_tracepoints,
            syscall_tracepoints_faultable: kallsyms.contains(FAULTABLE_TRACEPOINT_RUNNER),
            lock_contention_tracepoints: kallsyms.contains(CONTENTION_TRACEPOINT),
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            symbols,
            series,
            bpf_stats_enabled: crate::bpf_info::run_time_stats_by_sysctl(),
            preemption: kernel.preemption.clone(),
            recursion_misses_readable: at_least(5, 12),
            probe_misses_readable: at_least(6, 7),
            task_comm_offset,
            reader_offsets,
            kretprobe_instances: if kretprobe_instances_limited.is_none() {
                RETPROBE_INSTANCES
            } else {
                10.max(2 * kernel.possible_cpus)
            },
            kretprobe_instances_limited,
        }
    }

    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }
}

/// Whether a process with this tgid exists (zombies included: their totals are final, but
/// so is the next read).
pub fn process_alive(tgid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(tgid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Root, or the capabilities BPF tracing needs at the least (CAP_BPF and CAP_PERFMON, or
/// CAP_SYS_ADMIN); what each attach mode needs besides is named when the kernel refuses it.
pub fn privileged() -> bool {
    privilege::CapSet::effective().is_some_and(privilege::may_trace)
}

/// tracefs at /sys/kernel/tracing, mounted if needed.
pub fn ensure_tracefs() -> Result<PathBuf, crate::error::Error> {
    // Mounted, but closed to us (mode 0700): mounting it again would not help.
    let events = Path::new(TRACEFS).join("events");
    if let Err(e) = std::fs::metadata(&events)
        && let Some(why) = privilege::explain(privilege::Refused::TracefsRead, &e)
    {
        return Err(crate::error::Error::Denied(format!(
            "reading {}: {e}; {why}",
            events.display()
        )));
    }
    mount_if_needed("tracefs", TRACEFS, "events").map_err(crate::error::Error::NoTracefs)
}

/// debugfs at /sys/kernel/debug (where a PREEMPT_DYNAMIC kernel tells its current
/// preemption mode), mounted if needed; systemd mounts it on most machines.
pub fn ensure_debugfs() -> Result<PathBuf, String> {
    mount_if_needed("debugfs", DEBUGFS, "sched")
}

/// `root`, once `witness` exists under it, mounting `fstype` there if it does not.
fn mount_if_needed(fstype: &str, root: &str, witness: &str) -> Result<PathBuf, String> {
    let root = PathBuf::from(root);
    if root.join(witness).exists() {
        return Ok(root);
    }
    let status = std::process::Command::new("mount")
        .args(["-t", fstype, "nodev"])
        .arg(&root)
        .stderr(std::process::Stdio::piped())
        .output();
    match status {
        Ok(out) if out.status.success() && root.join(witness).exists() => Ok(root),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
