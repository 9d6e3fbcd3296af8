//! Return probes with room for every call in flight.
//!
//! A kretprobe keeps one instance per call in flight, and a return that finds none free is
//! lost. Probes made through perf's kprobe PMU (aya's `KProbe::attach`) get the kernel's
//! default, max(10, 2 x possible CPUs): a crowd of threads sleeping on exec_update_lock, or
//! preempted inside kcmp, holds more than that. A tracefs kprobe event takes its instance
//! count in its definition (`r4096:...`, the most the kernel allows), so return probes are
//! defined there, and their programs attached to the event through a perf event and a BPF
//! link: the link shows the probe's own misses the same way a perf PMU probe's does.
//! Where this process may not write kprobe_events (`probe::kprobe_events_writable`), return
//! probes go through the PMU with the default, and the plan says so up front
//! (`plan::return_probes_limited`).

use std::{
    fs::OpenOptions,
    io::Write as _,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context as _;

use crate::{
    bpf_info,
    error::Error,
    probe::{
        RETPROBE_INSTANCES as INSTANCES, TRACEFS, kprobe_events_file,
        privilege::{Refused, explain},
    },
};

/// The tracefs group our events are made in.
const GROUP: &str = "kcmp_trace";

/// A program attached to a return probe of ours. Dropping it detaches the program and
/// removes the probe.
pub struct ReturnProbe {
    link: Option<OwnedFd>,
    perf: Option<OwnedFd>,
    event: String,
}

impl ReturnProbe {
    /// Defines a return probe on `function` and attaches the loaded kprobe program `program`.
    pub fn attach(program: BorrowedFd<'_>, function: &str) -> anyhow::Result<ReturnProbe> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale_events();
        let event = format!(
            "r{}_{}_{function}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        define(&format!("r{INSTANCES}:{GROUP}/{event} {function}")).map_err(|e| {
            refusal(
                format!("defining a return probe on {function} in tracefs"),
                Refused::TracefsWrite,
                e,
            )
        })?;
        // From here on, dropping the value removes the event.
        let mut probe = ReturnProbe {
            link: None,
            perf: None,
            event,
        };
        let id_file = Path::new(TRACEFS)
            .join("events")
            .join(GROUP)
            .join(&probe.event)
            .join("id");
        let id: u64 = std::fs::read_to_string(&id_file)
            .map_err(|e| {
                refusal(
                    format!("reading {}", id_file.display()),
                    Refused::TracefsRead,
                    e,
                )
            })?
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", id_file.display()))?;
        let perf = open_trace_event(id).map_err(|e| {
            refusal(
                "perf_event_open on the return probe".into(),
                Refused::PerfEventOpen,
                e,
            )
        })?;
        let link = bpf_info::link_perf_event(program, perf.as_fd()).map_err(|e| {
            refusal(
                "BPF_LINK_CREATE on the return probe".into(),
                Refused::Bpf,
                e,
            )
        })?;
        probe.perf = Some(perf);
        probe.link = Some(link);
        Ok(probe)
    }
}

impl Drop for ReturnProbe {
    fn drop(&mut self) {
        // The event can only be removed once nothing has it open.
        self.link.take();
        self.perf.take();
        let _ = define(&format!("-:{GROUP}/{}", self.event));
    }
}

/// What `doing` met, in one line; a refusal for lack of privilege also says which capability
/// or sysctl would allow it.
fn refusal(doing: String, what: Refused, err: std::io::Error) -> anyhow::Error {
    match explain(what, &err) {
        Some(why) => Error::Denied(format!("{doing}: {err}; {why}")).into(),
        None => anyhow::Error::new(err).context(doing),
    }
}

/// Appends one line to kprobe_events (appending leaves other tools' probes alone).
fn define(line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(kprobe_events_file())?
        .write_all(format!("{line}\n").as_bytes())
}

/// Removes return probes that tracers which died without cleaning up left in our group.
fn remove_stale_events() {
    let Ok(defined) = std::fs::read_to_string(kprobe_events_file()) else {
        return;
    };
    for event in defined.lines().filter_map(our_event) {
        if let Some(pid) = owner(event)
            && !crate::probe::process_alive(pid)
        {
            let _ = define(&format!("-:{GROUP}/{event}"));
        }
    }
}

/// The event name of a kprobe_events line of our group (`r4096:kcmp_trace/<event> <fn>`).
fn our_event(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once(':')?;
    let name = rest.split_whitespace().next()?;
    name.strip_prefix(GROUP)?.strip_prefix('/')
}

/// The pid that made an event, from its name (`r<pid>_<n>_<function>`).
fn owner(event: &str) -> Option<u32> {
    event.strip_prefix('r')?.split('_').next()?.parse().ok()
}

/// A perf event on a tracefs event, for all processes (an attached program runs on every
/// CPU whatever CPU the event is opened on).
fn open_trace_event(id: u64) -> std::io::Result<OwnedFd> {
    use aya_obj::generated::{perf_event_attr, perf_type_id};
    // SAFETY: perf_event_attr is plain integers; zero is valid for every field.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = perf_type_id::PERF_TYPE_TRACEPOINT as u32;
    attr.config = id;
    bpf_info::perf_event_open(attr, -1, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_events_and_their_owners() {
        assert_eq!(
            our_event("r4096:kcmp_trace/r123_0___x64_sys_kcmp __x64_sys_kcmp"),
            Some("r123_0___x64_sys_kcmp")
        );
        assert_eq!(our_event("p:kprobes/foo do_sys_open"), None);
        assert_eq!(our_event("r:kcmp_tracer/x f"), None);
        assert_eq!(owner("r123_0___x64_sys_kcmp"), Some(123));
        assert_eq!(owner("p123_0_f"), None);
    }
}
