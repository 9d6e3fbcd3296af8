//! What this process may do: its effective capabilities, the sysctls that gate perf events,
//! and, when the kernel refuses something for lack of privilege, which capability or
//! sysctl would allow it, in one line.

use std::{collections::BTreeMap, fmt, io};

use serde::Serialize;

/// A capability, by the kernel's number (linux/capability.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    DacOverride = 1,
    DacReadSearch = 2,
    SysAdmin = 21,
    SysNice = 23,
    SysResource = 24,
    Syslog = 34,
    Perfmon = 38,
    Bpf = 39,
}

impl Cap {
    /// Those `doctor` reports: what some attach mode or reader needs.
    pub const RELEVANT: [Cap; 8] = [
        Cap::Bpf,
        Cap::Perfmon,
        Cap::SysAdmin,
        Cap::DacReadSearch,
        Cap::DacOverride,
        Cap::Syslog,
        Cap::SysNice,
        Cap::SysResource,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cap::DacOverride => "CAP_DAC_OVERRIDE",
            Cap::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::SysNice => "CAP_SYS_NICE",
            Cap::SysResource => "CAP_SYS_RESOURCE",
            Cap::Syslog => "CAP_SYSLOG",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities, as /proc/PID/status writes it (a hex mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn has(self, cap: Cap) -> bool {
        self.0 & (1u64 << cap as u32) != 0
    }

    /// Those of `caps` the set lacks.
    pub fn missing(self, caps: &[Cap]) -> Vec<Cap> {
        caps.iter().copied().filter(|&c| !self.has(c)).collect()
    }

    /// This process's effective set, or None where /proc/self/status cannot be read.
    pub fn effective() -> Option<CapSet> {
        cap_eff(&std::fs::read_to_string("/proc/self/status").ok()?)
    }
}

/// The CapEff line of a /proc/PID/status text.
pub fn cap_eff(status: &str) -> Option<CapSet> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .map(CapSet)
}

/// What BPF tracing needs at the least: CAP_BPF and CAP_PERFMON (5.8 and later), or
/// CAP_SYS_ADMIN, which covers both.
const TRACING: [Cap; 2] = [Cap::Bpf, Cap::Perfmon];

/// Whether a process holding `caps` may load tracing programs at all.
pub fn may_trace(caps: CapSet) -> bool {
    caps.has(Cap::SysAdmin) || caps.missing(&TRACING).is_empty()
}

/// Why a process may not trace at all, in one line, for `caps` (None: unreadable).
pub fn not_privileged(caps: Option<CapSet>) -> String {
    let needs = "tracing kcmp needs root or CAP_BPF, CAP_PERFMON";
    match caps {
        Some(caps) => format!(
            "permission denied: {needs} (missing: {}); run as root or grant them, and what \
             the attach mode needs besides (kcmp-trace --help)",
            names(&caps.missing(&TRACING))
        ),
        None => format!(
            "permission denied: {needs} (the effective set could not be read from \
             /proc/self/status)"
        ),
    }
}

fn names(caps: &[Cap]) -> String {
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

/// kernel.perf_event_paranoid.
pub fn perf_event_paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether perf_event_open is refused outright without CAP_SYS_ADMIN: Debian's patch, at
/// kernel.perf_event_paranoid 3 and above. Upstream treats levels above 2 as 2, so this
/// tries what upstream allows at 2 to anyone, counting one's own user-space events.
pub fn perf_events_gated(paranoid: Option<i32>) -> bool {
    paranoid.is_some_and(|p| p >= 3)
        && open_own_user_event().is_err_and(|e| e.raw_os_error() == Some(libc::EACCES))
}

/// A dummy software event on this thread, user space only; closed at once.
fn open_own_user_event() -> io::Result<()> {
    use aya_obj::generated::{perf_event_attr, perf_sw_ids::PERF_COUNT_SW_DUMMY, perf_type_id};
    // SAFETY: perf_event_attr is plain integers; zero is valid for every field.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = perf_type_id::PERF_TYPE_SOFTWARE as u32;
    attr.config = PERF_COUNT_SW_DUMMY as u64;
    attr.set_disabled(1);
    attr.set_exclude_kernel(1);
    attr.set_exclude_hv(1);
    // This thread, any CPU; dropping the descriptor closes it.
    crate::bpf_info::perf_event_open(attr, 0, -1).map(drop)
}

/// What the kernel refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// perf_event_open: kprobes, kretprobes and syscall tracepoints attach through it.
    PerfEventOpen,
    /// A tracefs file read (or a directory searched): tracepoint and kprobe ids.
    TracefsRead,
    /// A tracefs file written: kprobe_events, where return probes are defined.
    TracefsWrite,
    /// The bpf() syscall: loading a program, creating a map or a link.
    Bpf,
    /// Turning BPF run-time statistics on (BPF_ENABLE_STATS).
    RunTimeStats,
}

/// The facts a refusal is explained by.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    pub caps: CapSet,
    pub perf_event_paranoid: Option<i32>,
    /// perf_event_open needs CAP_SYS_ADMIN here (`perf_events_gated`).
    pub perf_events_gated: bool,
    /// The kernel charges BPF memory to RLIMIT_MEMLOCK (before 5.11), and the limit is not
    /// infinite.
    pub memlock_limited: bool,
}

impl Facts {
    /// This process's, now.
    pub fn read() -> Option<Facts> {
        let charged = aya::util::KernelVersion::current()
            .is_ok_and(|v| v < aya::util::KernelVersion::new(5, 11, 0));
        let paranoid = perf_event_paranoid();
        Some(Facts {
            caps: CapSet::effective()?,
            perf_event_paranoid: paranoid,
            perf_events_gated: perf_events_gated(paranoid),
            memlock_limited: charged && memlock_limited(),
        })
    }
}

fn memlock_limited() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    read && limit.rlim_cur != libc::RLIM_INFINITY
}

/// Which capability or sysctl would have allowed what the kernel refused with `err`, in one
/// line; None when the refusal is not for lack of privilege, or nothing is missing.
pub fn explain(what: Refused, err: &io::Error) -> Option<String> {
    denied(err)
        .then(Facts::read)
        .flatten()
        .and_then(|f| why(what, f))
}

/// EACCES or EPERM: how the kernel says "not allowed".
pub fn denied(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// Which capability or sysctl would allow `what`, given the facts; None when nothing is
/// missing (the refusal has another cause: lockdown, a sandbox).
pub fn why(what: Refused, facts: Facts) -> Option<String> {
    let caps = facts.caps;
    match what {
        Refused::PerfEventOpen => {
            perf_refusal(caps, facts.perf_event_paranoid, facts.perf_events_gated)
        }
        Refused::TracefsRead if !caps.has(Cap::DacReadSearch) && !caps.has(Cap::DacOverride) => {
            Some(
                "tracefs refused: /sys/kernel/tracing is mode 0700 and CAP_DAC_READ_SEARCH is \
                 missing; grant CAP_DAC_READ_SEARCH"
                    .into(),
            )
        }
        Refused::TracefsWrite if !caps.has(Cap::DacOverride) => Some(
            "tracefs refused: kprobe_events is writable by root only and CAP_DAC_OVERRIDE is \
             missing; grant CAP_DAC_OVERRIDE or run as root"
                .into(),
        ),
        Refused::TracefsRead | Refused::TracefsWrite => None,
        Refused::Bpf if !may_trace(caps) => Some(format!(
            "bpf() refused: tracing programs need CAP_BPF and CAP_PERFMON (missing: {}); \
             grant them",
            names(&caps.missing(&TRACING))
        )),
        Refused::Bpf if facts.memlock_limited && !caps.has(Cap::SysResource) => Some(
            "bpf() refused: kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, which is \
             limited, and CAP_SYS_RESOURCE is missing to lift it; grant CAP_SYS_RESOURCE or \
             raise the limit (LimitMEMLOCK=infinity)"
                .into(),
        ),
        Refused::Bpf => None,
        Refused::RunTimeStats if !caps.has(Cap::SysAdmin) => Some(
            "BPF run-time statistics refused: turning them on needs CAP_SYS_ADMIN; grant it, \
             or set kernel.bpf_stats_enabled=1"
                .into(),
        ),
        Refused::RunTimeStats => None,
    }
}

/// Why perf_event_open on a kernel function or tracepoint is refused to a process holding
/// `caps`, or None where it is allowed; `gated`: as `perf_events_gated` found.
pub fn perf_refusal(caps: CapSet, paranoid: Option<i32>, gated: bool) -> Option<String> {
    if caps.has(Cap::SysAdmin) {
        return None;
    }
    match paranoid {
        // Debian's patch (Ubuntu's at 4): above 2, perf_event_open needs CAP_SYS_ADMIN,
        // whatever CAP_PERFMON says.
        Some(level) if gated => Some(format!(
            "perf_event_open refused: kernel.perf_event_paranoid is {level} (Debian) and \
             CAP_SYS_ADMIN is missing; grant CAP_SYS_ADMIN or set kernel.perf_event_paranoid=2"
        )),
        _ if !caps.has(Cap::Perfmon) => Some(
            "perf_event_open refused: CAP_PERFMON is missing (kernel events need it); grant \
             CAP_PERFMON"
                .into(),
        ),
        _ => None,
    }
}

/// What `doctor` says of this process's privilege.
#[derive(Debug, Serialize)]
pub struct Privilege {
    /// The effective capabilities some attach mode or reader needs, and whether each is
    /// held (empty where /proc/self/status cannot be read).
    pub capabilities: BTreeMap<&'static str, bool>,
    pub perf_event_paranoid: Option<i32>,
    /// Whether perf_event_open on kernel functions and tracepoints is allowed (kprobe and
    /// tracepoint mode attach through it), or why not.
    pub perf_events: Result<(), String>,
}

impl Privilege {
    pub fn read() -> Privilege {
        let caps = CapSet::effective();
        let paranoid = perf_event_paranoid();
        Privilege {
            capabilities: caps.map_or_else(BTreeMap::new, |caps| {
                Cap::RELEVANT
                    .iter()
                    .map(|&c| (c.name(), caps.has(c)))
                    .collect()
            }),
            perf_event_paranoid: paranoid,
            perf_events: match caps {
                Some(caps) => {
                    perf_refusal(caps, paranoid, perf_events_gated(paranoid)).map_or(Ok(()), Err)
                }
                None => Err("the effective capabilities could not be read".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[Cap]) -> CapSet {
        CapSet(caps.iter().fold(0, |m, &c| m | 1 << c as u32))
    }

    fn facts(caps: &[Cap], paranoid: i32) -> Facts {
        Facts {
            caps: set(caps),
            perf_event_paranoid: Some(paranoid),
            perf_events_gated: paranoid >= 3,
            memlock_limited: false,
        }
    }

    #[test]
    fn the_effective_set_is_read_from_the_status_text() {
        let status = "Name:\tkcmp-trace\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000000c000000004\nCapBnd:\t000001ffffffffff\n";
        let caps = cap_eff(status).expect("CapEff");
        assert!(caps.has(Cap::Bpf) && caps.has(Cap::Perfmon) && caps.has(Cap::DacReadSearch));
        assert!(!caps.has(Cap::SysAdmin));
        assert_eq!(cap_eff("Name:\tx\n"), None);
        assert_eq!(cap_eff("CapEff:\tnot hex\n"), None);
    }

    #[test]
    fn tracing_needs_bpf_and_perfmon_or_sys_admin() {
        assert!(may_trace(set(&[Cap::Bpf, Cap::Perfmon])));
        assert!(may_trace(set(&[Cap::SysAdmin])));
        assert!(!may_trace(set(&[Cap::Bpf])));
        assert!(!may_trace(CapSet(0)));
    }

    #[test]
    fn not_privileged_names_what_is_missing() {
        assert_eq!(
            not_privileged(Some(set(&[Cap::Bpf]))),
            "permission denied: tracing kcmp needs root or CAP_BPF, CAP_PERFMON (missing: \
             CAP_PERFMON); run as root or grant them, and what the attach mode needs besides \
             (kcmp-trace --help)"
        );
        assert!(not_privileged(Some(CapSet(0))).contains("(missing: CAP_BPF, CAP_PERFMON)"));
        assert!(not_privileged(None).contains("could not be read"));
    }

    #[test]
    fn perf_event_open_under_debian_s_paranoia_names_sys_admin() {
        let line = why(
            Refused::PerfEventOpen,
            facts(&[Cap::Bpf, Cap::Perfmon, Cap::DacReadSearch], 3),
        );
        assert_eq!(
            line.as_deref(),
            Some(
                "perf_event_open refused: kernel.perf_event_paranoid is 3 (Debian) and \
                 CAP_SYS_ADMIN is missing; grant CAP_SYS_ADMIN or set \
                 kernel.perf_event_paranoid=2"
            )
        );
        assert_eq!(
            why(
                Refused::PerfEventOpen,
                facts(&[Cap::Bpf, Cap::Perfmon, Cap::SysAdmin], 3)
            ),
            None
        );
        // A kernel without Debian's patch treats 3 as 2.
        let upstream = Facts {
            perf_events_gated: false,
            ..facts(&[Cap::Bpf, Cap::Perfmon], 3)
        };
        assert_eq!(why(Refused::PerfEventOpen, upstream), None);
        // Upstream's levels: CAP_PERFMON is enough.
        assert_eq!(
            why(Refused::PerfEventOpen, facts(&[Cap::Bpf, Cap::Perfmon], 2)),
            None
        );
        assert!(
            why(Refused::PerfEventOpen, facts(&[Cap::Bpf], 2))
                .is_some_and(|l| l.contains("CAP_PERFMON is missing"))
        );
    }

    #[test]
    fn tracefs_refusals_name_the_dac_capabilities() {
        let tracing = [Cap::Bpf, Cap::Perfmon];
        assert!(
            why(Refused::TracefsRead, facts(&tracing, 2))
                .is_some_and(|l| l.contains("CAP_DAC_READ_SEARCH is missing"))
        );
        assert_eq!(
            why(
                Refused::TracefsRead,
                facts(&[Cap::Bpf, Cap::Perfmon, Cap::DacReadSearch], 2)
            ),
            None
        );
        assert!(
            why(
                Refused::TracefsWrite,
                facts(&[Cap::Bpf, Cap::Perfmon, Cap::DacReadSearch], 2)
            )
            .is_some_and(|l| l.contains("CAP_DAC_OVERRIDE is missing"))
        );
    }

    #[test]
    fn bpf_refusals_name_bpf_and_perfmon_then_the_memlock_limit() {
        assert!(
            why(Refused::Bpf, facts(&[Cap::Bpf], 2))
                .is_some_and(|l| l.contains("(missing: CAP_PERFMON)"))
        );
        // Everything held: refused for another reason, which is not guessed at.
        assert_eq!(why(Refused::Bpf, facts(&[Cap::Bpf, Cap::Perfmon], 2)), None);
        let old_kernel = Facts {
            memlock_limited: true,
            ..facts(&[Cap::Bpf, Cap::Perfmon], 2)
        };
        assert!(why(Refused::Bpf, old_kernel).is_some_and(|l| l.contains("CAP_SYS_RESOURCE")));
    }

    #[test]
    fn run_time_statistics_need_sys_admin() {
        assert!(
            why(Refused::RunTimeStats, facts(&[Cap::Bpf, Cap::Perfmon], 2))
                .is_some_and(|l| l.contains("CAP_SYS_ADMIN") && l.contains("bpf_stats_enabled"))
        );
        assert_eq!(why(Refused::RunTimeStats, facts(&[Cap::SysAdmin], 3)), None);
    }

    #[test]
    fn only_eacces_and_eperm_are_refusals_for_lack_of_privilege() {
        assert!(denied(&io::Error::from_raw_os_error(libc::EACCES)));
        assert!(denied(&io::Error::from_raw_os_error(libc::EPERM)));
        assert!(!denied(&io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(!denied(&io::Error::other("tracefs not found")));
    }
}
