//! The lines of a recording (`kcmp-trace record`): its header, then readings of the
//! cumulative counters and, with `--events`, one line per call.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    event::EventRecord,
    nullable,
    plan::Plan,
    readout::{CallerRow, HookCounters, ProcessRow},
    snapshot::WireCounters,
    stacks::StackRow,
};

/// The `format` of every recording's header.
pub const FORMAT: &str = "kcmp-trace-recording";
/// The format's version this build writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// A recording's first line: what was traced, where and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Header {
    /// Always "kcmp-trace-recording".
    pub format: String,
    pub version: u32,
    /// When the session started (RFC 3339, UTC).
    pub started: String,
    pub kernel: RecordedKernel,
    /// The plan: attach mode, strategy, hooks, which numbers are exact or inferred.
    pub plan: Plan,
    /// Time between readings.
    pub interval_s: f64,
    /// Processes listed per report.
    pub top: usize,
    /// Every call's event follows (`record --events`). Absent in recordings made before
    /// this key was: read as false, and then their event lines tell.
    #[serde(default)]
    pub events: bool,
}

/// The kernel a session ran on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordedKernel {
    /// `uname -r`; null when the numbers came from a daemon (`--connect`), whose kernel may
    /// be another machine's.
    #[serde(deserialize_with = "nullable")]
    pub release: Option<String>,
    /// The preemption model the plan was made for (`unknown` when nothing said).
    pub preemption: String,
    /// The exec_update_seq series is present.
    pub series: bool,
}

impl RecordedKernel {
    /// What a plan (ours or a daemon's) says about its kernel.
    pub fn from_plan(plan: &Plan, release: Option<String>) -> RecordedKernel {
        RecordedKernel {
            release,
            preemption: plan
                .preemption
                .model
                .map_or("unknown", |m| m.name())
                .to_owned(),
            series: plan.series,
        }
    }
}

/// Which reading of a session a line holds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// What the session counts from (zero at attach; a daemon's first snapshot).
    Baseline,
    Interval,
    /// The last reading, at the end of the session.
    Total,
}

/// One read of the cumulative counters since attach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReadingLine<'a> {
    pub scope: Scope,
    /// Seconds since attach.
    pub at_s: f64,
    /// The daemon snapshot's shape.
    pub counters: WireCounters,
    pub processes: Cow<'a, [ProcessRow]>,
    pub programs: Cow<'a, [HookCounters]>,
    /// Other callers by call site (readers followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callers: Option<Cow<'a, [CallerRow]>>,
    /// Lock waits and write sections by kernel stack (`--stacks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<Cow<'a, [StackRow]>>,
}

/// A line after the header, by its `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordingLine<'a> {
    Reading(ReadingLine<'a>),
    /// One call, as `events --json` prints it.
    Event(EventRecord<'a>),
}
