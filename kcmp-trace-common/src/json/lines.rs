//! The lines `watch --json` prints (the plan, then a report per interval and the total at
//! exit) and what `report --json` prints (one recording's total, or two side by side).

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    fallbacks::FallbacksByWriter,
    plan::Plan,
    recording::RecordedKernel,
    report::{CompareRow, Report},
};

/// `watch --json`'s first line: the plan, and with `--connect` the daemon it reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanLine {
    pub plan: Plan,
    /// The daemon's address (`--connect`): the plan is the daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
}

/// What a report line covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportScope {
    /// One interval of `watch`.
    Interval,
    /// Everything since the session began: `watch`'s summary at exit, `report`'s total.
    Total,
}

/// One report of `watch --json` (and `report --json` of one recording, the total).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReportLine<'a> {
    pub scope: ReportScope,
    /// Seconds since attach (the daemon's, with --connect) at the end of this report, on the
    /// same clock as `interval_s`.
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub report: Cow<'a, Report>,
    /// `report` only: the recording's retry and busy calls by the writer that caused them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks_by_writer: Option<Cow<'a, FallbacksByWriter>>,
}

/// One side of `report A B --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Side<'a> {
    /// The recording, as named on the command line.
    pub file: String,
    pub kernel: Cow<'a, RecordedKernel>,
    /// Attach mode and strategy ("kprobe/direct").
    pub attach: String,
    /// The session ended with its total (was not cut short).
    pub complete: bool,
    pub total: ReportLine<'a>,
}

/// `report A B --json`: both sessions' totals and every number side by side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Comparison<'a> {
    pub a: Side<'a>,
    pub b: Side<'a>,
    pub rows: Vec<CompareRow>,
}
