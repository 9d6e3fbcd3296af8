//! The running kernel's preemption model.
//!
//! It decides whether fentry/fexit programs are exact: BPF trampolines run a program with
//! only migration disabled, so on a preemptible kernel a program can be preempted mid-run,
//! and the kernel then skips every other run of that program on that CPU until it finishes
//! (counted in the program's `recursion_misses`). kprobe and tracepoint programs run with
//! preemption disabled and are not skipped that way.

/// The models, and what the kernel says about its preemption, as the plan's JSON names
/// them.
pub use kcmp_trace_common::json::plan::{Model, Preemption};

const SCHED_PREEMPT: &str = "/sys/kernel/debug/sched/preempt";

/// The preemption of the running kernel, whose release is `release` (for its config).
pub fn detect(release: &str) -> Preemption {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    from_sources(&Sources {
        uname_version: read("/proc/sys/kernel/version").unwrap_or_default(),
        realtime: read("/sys/kernel/realtime"),
        sched_preempt: read(SCHED_PREEMPT),
        cmdline: read("/proc/cmdline").unwrap_or_default(),
        config: read(&format!("/boot/config-{release}")),
    })
}

fn from_sources(s: &Sources) -> Preemption {
    let flags: Vec<&str> = s.uname_version.split_whitespace().collect();
    let config = |option: &str| {
        s.config
            .as_deref()
            .is_some_and(|c| c.lines().any(|l| l.trim() == format!("{option}=y")))
    };
    let dynamic = flags.contains(&"PREEMPT_DYNAMIC") || config("CONFIG_PREEMPT_DYNAMIC");
    if flags.contains(&"PREEMPT_RT")
        || s.realtime.as_deref().is_some_and(|r| r.trim() == "1")
        || config("CONFIG_PREEMPT_RT")
    {
        return Preemption {
            model: Some(Model::Rt),
            dynamic,
            source: "PREEMPT_RT kernel".into(),
        };
    }
    let found = |model, source: &str| Preemption {
        model: Some(model),
        dynamic,
        source: source.into(),
    };
    // The current mode, with the chosen one in parentheses: "none (voluntary) full".
    if let Some(current) = s.sched_preempt.as_deref().and_then(|text| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix('(')?.strip_suffix(')'))
            .and_then(Model::parse)
    }) {
        return found(current, "debugfs sched/preempt");
    }
    if dynamic {
        if let Some(boot) = s
            .cmdline
            .split_whitespace()
            .find_map(|p| p.strip_prefix("preempt="))
            .and_then(Model::parse)
        {
            return found(boot, "kernel command line (debugfs not readable)");
        }
        let default = if config("CONFIG_PREEMPT_LAZY") {
            Some(Model::Lazy)
        } else if config("CONFIG_PREEMPT") {
            Some(Model::Full)
        } else if config("CONFIG_PREEMPT_VOLUNTARY") {
            Some(Model::Voluntary)
        } else if config("CONFIG_PREEMPT_NONE") {
            Some(Model::None)
        } else {
            None
        };
        return match default {
            Some(m) => found(m, "kernel config default (debugfs not readable)"),
            None => Preemption {
                model: None,
                dynamic,
                source: "mode unknown: debugfs not readable".into(),
            },
        };
    }
    if flags.contains(&"PREEMPT") {
        let model = if config("CONFIG_PREEMPT_LAZY") {
            Model::Lazy
        } else {
            Model::Full
        };
        return found(model, "kernel version string");
    }
    if config("CONFIG_PREEMPT_VOLUNTARY") {
        return found(Model::Voluntary, "kernel config");
    }
    // No PREEMPT flag in the version string: none or voluntary, either way kernel code
    // runs until it yields.
    found(Model::None, "kernel version string (no PREEMPT flag)")
}

/// The files the model is read from.
struct Sources {
    /// /proc/sys/kernel/version: "#1 SMP PREEMPT_DYNAMIC Debian ...".
    uname_version: String,
    realtime: Option<String>,
    sched_preempt: Option<String>,
    cmdline: String,
    config: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(version: &str) -> Sources {
        Sources {
            uname_version: version.into(),
            realtime: None,
            sched_preempt: None,
            cmdline: "console=ttyS0".into(),
            config: None,
        }
    }

    #[test]
    fn debugfs_names_the_current_dynamic_mode() {
        let mut s = sources("#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1");
        s.sched_preempt = Some("none voluntary (full) \n".into());
        s.cmdline = "preempt=voluntary".into();
        let p = from_sources(&s);
        assert_eq!(p.model, Some(Model::Full));
        assert!(p.dynamic && p.trampolines_preemptible());
        s.sched_preempt = Some("none (voluntary) full lazy\n".into());
        assert_eq!(from_sources(&s).model, Some(Model::Voluntary));
    }

    #[test]
    fn without_debugfs_the_command_line_then_the_config_decide() {
        let mut s = sources("#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1");
        s.cmdline = "root=/dev/vda preempt=full quiet".into();
        assert_eq!(from_sources(&s).model, Some(Model::Full));
        s.cmdline.clear();
        s.config = Some("CONFIG_PREEMPT_VOLUNTARY=y\nCONFIG_PREEMPT_DYNAMIC=y\n".into());
        let p = from_sources(&s);
        assert_eq!(p.model, Some(Model::Voluntary));
        assert!(!p.trampolines_preemptible());
        s.config = None;
        let p = from_sources(&s);
        assert_eq!(p.model, None);
        // Unknown is treated as the worst case.
        assert!(p.trampolines_preemptible());
    }

    #[test]
    fn rt_and_static_models() {
        let p = from_sources(&sources("#1 SMP PREEMPT_RT Debian 6.12.117-1"));
        assert_eq!(p.model, Some(Model::Rt));
        let mut s = sources("#1 SMP Debian 6.1.170-1");
        s.realtime = Some("1\n".into());
        assert_eq!(from_sources(&s).model, Some(Model::Rt));
        let p = from_sources(&sources("#1 SMP PREEMPT Sat Jan 1"));
        assert_eq!(p.model, Some(Model::Full));
        let p = from_sources(&sources("#1 SMP Debian 6.1.170-1"));
        assert_eq!(p.model, Some(Model::None));
        assert!(!p.trampolines_preemptible());
        assert_eq!(
            p.describe(),
            "none (kernel version string (no PREEMPT flag))"
        );
    }
}
