//! The plan as it is printed (`watch --json`'s first line), served (the snapshot) and kept
//! (a recording's header): how the tracer attached, and what that means for every number.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::classify::Strategy;

/// How the tracer's programs attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    Fentry,
    Kprobe,
    Tracepoint,
    /// A raw tracepoint (the lock contention hooks, in every mode): attached through a bpf()
    /// link, never a plan's mode.
    RawTracepoint,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
            AttachMode::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// The numbers a skipped run of a hook's program can leave incomplete.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Affects {
    /// A skipped entry: the call's exit finds no entry (counted as unpaired).
    CallEntry,
    /// A skipped exit: the call is never counted.
    CallExit,
    /// The call's path may be misread.
    Outcome,
    LockWait,
    ExecSections,
    TsyncSections,
    /// A /proc reader's call may go uncounted, or its path be misread.
    ReaderCalls,
}

/// How a plan times exec_update_lock waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockWaits {
    /// lock:contention_begin to contention_end: only a contended lock fires them, so an
    /// uncontended acquisition, anyone's, costs nothing.
    Contention,
    /// down_read_killable()'s entry and return: every call of it, in every process.
    Probes,
}

/// The kernel's preemption model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// No forced preemption in the kernel.
    None,
    /// Preemption only at explicit points (cond_resched() and the like).
    Voluntary,
    /// Preemptible everywhere outside critical sections.
    Full,
    /// Like full, with preemption of ordinary tasks deferred to the next tick.
    Lazy,
    /// PREEMPT_RT: full, plus sleeping spinlocks and threaded interrupts.
    Rt,
}

impl Model {
    pub const ALL: [Model; 5] = [
        Model::None,
        Model::Voluntary,
        Model::Full,
        Model::Lazy,
        Model::Rt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::None => "none",
            Model::Voluntary => "voluntary",
            Model::Full => "full",
            Model::Lazy => "lazy",
            Model::Rt => "rt",
        }
    }

    /// A model as the kernel names it in debugfs and on the command line (`preempt=`); RT is
    /// never chosen there.
    pub fn parse(word: &str) -> Option<Model> {
        Model::ALL
            .into_iter()
            .find(|m| *m != Model::Rt && m.name() == word)
    }

    /// Whether kernel code, a BPF trampoline program included, can be preempted at any
    /// instruction (not only at explicit points).
    pub fn preempts_kernel_code(self) -> bool {
        matches!(self, Model::Full | Model::Lazy | Model::Rt)
    }
}

/// What the kernel says about its preemption, and where that came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Preemption {
    /// The model in force; null when nothing says which.
    #[serde(deserialize_with = "super::nullable")]
    pub model: Option<Model>,
    /// PREEMPT_DYNAMIC: the model was chosen at boot (or changed in debugfs).
    pub dynamic: bool,
    /// How the model was found.
    pub source: String,
}

impl Preemption {
    /// Trampoline programs can be preempted mid-run (and so skipped), assuming the worst
    /// when the model is unknown.
    pub fn trampolines_preemptible(&self) -> bool {
        self.model.is_none_or(Model::preempts_kernel_code)
    }

    /// "full (PREEMPT_DYNAMIC, from debugfs sched/preempt)".
    pub fn describe(&self) -> String {
        let model = self.model.map_or("unknown", Model::name);
        let dynamic = if self.dynamic {
            "PREEMPT_DYNAMIC, "
        } else {
            ""
        };
        format!("{model} ({dynamic}{})", self.source)
    }
}

/// One attached program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Hook {
    /// Kernel function or tracepoint.
    pub target: String,
    pub program: String,
    /// What a skipped run of this program leaves incomplete.
    pub affects: Vec<Affects>,
    /// When it also runs for processes that are not in a traced call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_kcmp: Option<String>,
}

/// What the tracer attached, and what that means for the numbers it reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub mode: AttachMode,
    pub strategy: Strategy,
    /// The kernel has the exec_update_seq series.
    pub series: bool,
    pub preemption: Preemption,
    /// Why the modes were tried in the order they were.
    pub why: String,
    pub hooks: Vec<Hook>,
    /// How lock waits are timed (null on the syscall boundary). Absent from recordings
    /// made before lock waits were timed by contention: read as null.
    #[serde(default)]
    pub lock_waits: Option<LockWaits>,
    /// Why lock waits are timed so. Absent from the same recordings: read as empty.
    #[serde(default)]
    pub lock_waits_why: String,
    /// Optional hooks that did not attach, and why.
    pub skipped: Vec<(String, String)>,
    /// (mode/strategy, why) of each candidate tried before this one that did not attach.
    pub rejected: Vec<(String, String)>,
    /// Whether each reported number is exact, inferred or unavailable on this plan.
    pub accuracy: Vec<(String, String)>,
}

impl Plan {
    /// "kprobe/direct".
    pub fn attach(&self) -> String {
        format!("{}/{}", self.mode.name(), self.strategy.name())
    }

    /// The plan as text, a line per fact.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "attach: {}, strategy {}, exec_update_seq series {}",
                self.mode.name(),
                self.strategy.name(),
                if self.series { "present" } else { "absent" }
            ),
            format!("  why: {}", self.why),
        ];
        if self.lock_waits.is_some() {
            lines.push(format!("  lock waits: {}", self.lock_waits_why));
        }
        for h in &self.hooks {
            match &h.outside_kcmp {
                Some(when) => lines.push(format!(
                    "  {:<22} {}  (also outside kcmp: {when})",
                    h.program, h.target
                )),
                None => lines.push(format!("  {:<22} {}", h.program, h.target)),
            }
        }
        for (target, why) in &self.skipped {
            lines.push(format!("  skipped {target}: {why}"));
        }
        for (what, why) in &self.rejected {
            lines.push(format!("  {what} not used: {why}"));
        }
        for (counter, how) in &self.accuracy {
            lines.push(format!("  {counter}: {how}"));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn json_names_are_the_names_the_text_uses() {
        for m in Model::ALL {
            assert_eq!(serde_name(m), m.name());
        }
        for a in [
            AttachMode::Fentry,
            AttachMode::Kprobe,
            AttachMode::Tracepoint,
            AttachMode::RawTracepoint,
        ] {
            assert_eq!(serde_name(a), a.name());
        }
        for s in [
            Strategy::Boundary,
            Strategy::Direct,
            Strategy::Infer,
            Strategy::Stock,
        ] {
            assert_eq!(serde_name(s), s.name());
        }
    }

    #[test]
    fn models_parse_as_the_kernel_writes_them() {
        assert_eq!(Model::parse("lazy"), Some(Model::Lazy));
        assert_eq!(Model::parse("none"), Some(Model::None));
        assert_eq!(Model::parse("rt"), None);
        assert_eq!(Model::parse("(full)"), None);
    }
}
