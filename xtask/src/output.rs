//! kcmp-trace's JSON output, read through the types that write it
//! (`kcmp_trace_common::json`): a key missing or renamed is an error that names the file,
//! the line and the key, never a silent zero.

use std::{path::Path, sync::LazyLock};

use anyhow::{Context as _, bail};
use kcmp_trace_common::json::{
    event::{DropNotice, DropReason, EventsSummary},
    lines::{PlanLine, ReportLine, ReportScope},
    plan::Plan,
    report::Report,
};
use serde::de::DeserializeOwned;

/// One JSON document (`stress --json`, `report --json`, a snapshot).
pub fn parse<T: DeserializeOwned>(text: &str, what: &str) -> anyhow::Result<T> {
    serde_json::from_str(text.trim()).with_context(|| format!("parsing {what}"))
}

/// The JSON document in `dir`/`file`.
pub fn read<T: DeserializeOwned>(dir: &Path, file: &str) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))?;
    parse(&text, file)
}

/// One JSON object per line (`events --json`).
pub fn lines<T: DeserializeOwned>(text: &str, what: &str) -> anyhow::Result<Vec<T>> {
    lines_from(text, what, 1)
}

/// The lines of `text`, numbered from `first` in errors.
fn lines_from<T: DeserializeOwned>(text: &str, what: &str, first: usize) -> anyhow::Result<Vec<T>> {
    text.lines()
        .zip(first..)
        .map(|(line, n)| {
            serde_json::from_str(line).with_context(|| format!("parsing line {n} of {what}"))
        })
        .collect()
}

/// What `watch --json` printed: its plan, then a report per interval and, when it ended
/// normally, the total.
#[derive(Debug)]
pub struct Watched {
    pub plan: Plan,
    pub reports: Vec<ReportLine<'static>>,
}

impl Watched {
    /// Every line must parse: the first as the plan, the others as reports.
    pub fn parse(text: &str, what: &str) -> anyhow::Result<Watched> {
        let (plan, reports) = text.split_once('\n').unwrap_or((text, ""));
        let plan: PlanLine = serde_json::from_str(plan)
            .with_context(|| format!("parsing the plan line of {what}"))?;
        Ok(Watched {
            plan: plan.plan,
            reports: lines_from(reports, what, 2)?,
        })
    }

    /// `watch --json`'s output in `dir`/`file`.
    pub fn read(dir: &Path, file: &str) -> anyhow::Result<Watched> {
        let text =
            std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))?;
        Watched::parse(&text, file)
    }

    /// The summary `watch` printed at exit.
    pub fn total(&self) -> anyhow::Result<&Report> {
        match self.reports.last() {
            Some(line) if line.scope == ReportScope::Total => Ok(&line.report),
            _ => bail!("no total: the tracer did not end normally"),
        }
    }
}

/// The summary `events --json` writes on stderr at its end (the one JSON line among its
/// log lines).
pub fn events_summary(stderr: &str, what: &str) -> anyhow::Result<EventsSummary> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no events summary in {what}: {stderr}"))?;
    serde_json::from_str(line).with_context(|| format!("parsing the events summary in {what}"))
}

/// How the daemon's drop notices start, as their type writes them (`{"dropped":`).
static DROP_NOTICE_START: LazyLock<String> = LazyLock::new(|| {
    let notice = DropNotice {
        dropped: 0,
        reason: DropReason::SlowClient,
    };
    let text = serde_json::to_string(&notice).unwrap_or_default();
    let first_key = text.find(':').map_or(text.len(), |colon| colon + 1);
    text[..first_key].to_owned()
});

/// A line of the daemon's `/events`: the drop notice it is, or None for a call. A notice is
/// told by how it starts (cheaper than parsing every call), and must then parse.
pub fn drop_notice(line: &str) -> anyhow::Result<Option<DropNotice>> {
    if !line.starts_with(DROP_NOTICE_START.as_str()) {
        return Ok(None);
    }
    parse(line, "a drop notice of /events").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcmp_trace_common::json::event::EventRecord;

    /// `watch --json --readers` beside `stress`, on this project's host (the syscall
    /// tracepoints only: every call `unknown`).
    const WATCHED: &str = include_str!("testdata/watch.json");
    /// `events --json`'s stderr from the same kind of run.
    const EVENTS_ERR: &str = include_str!("testdata/events.err");
    /// Lines of `events --json` (the daemon's /events carries the same).
    const EVENTS: &str = include_str!("testdata/events.json");
    /// A drop notice, as the daemon writes it in place of calls a client missed.
    const NOTICE: &str = r#"{"dropped":10,"reason":"slow_client"}"#;

    #[test]
    fn real_output_reads_into_the_types() {
        let w = Watched::parse(WATCHED, "watch.json").expect("real output parses");
        let total = w.total().expect("a total");
        assert_eq!(w.plan.attach(), "tracepoint/boundary");
        assert!(total.calls > 0 && total.exact);
        assert_eq!(total.by_outcome.get("unknown"), Some(&total.calls));
        let summary = events_summary(EVENTS_ERR, "events.err").expect("a summary");
        assert!(summary.exact && summary.events_delivered == summary.calls);
        let calls: Vec<EventRecord> = lines(EVENTS, "events.json").expect("calls");
        assert!(
            calls
                .iter()
                .all(|e| e.outcome == "unknown" && e.latency_ns > 0)
        );
        for call in EVENTS.lines() {
            assert_eq!(drop_notice(call).expect("a call"), None);
        }
        let notice = drop_notice(NOTICE).expect("parses").expect("a notice");
        assert_eq!(
            (notice.dropped, notice.reason),
            (10, DropReason::SlowClient)
        );
    }

    /// A key renamed in the output (here `exact`, in the total) is an error naming the
    /// line and the key, not a report that reads as not exact, or as 0 calls.
    #[test]
    fn a_renamed_key_fails_the_parse() {
        let total_line = WATCHED.lines().count();
        let renamed = WATCHED.replace("\"exact\":", "\"exactly\":");
        let err = format!(
            "{:#}",
            Watched::parse(&renamed, "watch.json").expect_err("a key is missing")
        );
        assert!(
            err.starts_with("parsing line 2 of watch.json")
                && err.contains("missing field `exact`"),
            "{err}"
        );
        // In the last line only: the intervals parse, the total does not.
        let mut lines: Vec<&str> = WATCHED.lines().collect();
        let last = lines[total_line - 1].replace("\"calls\":", "\"call_count\":");
        lines[total_line - 1] = &last;
        let err = format!(
            "{:#}",
            Watched::parse(&lines.join("\n"), "watch.json").expect_err("calls is missing")
        );
        assert!(
            err.starts_with(&format!("parsing line {total_line} of watch.json"))
                && err.contains("missing field `calls`"),
            "{err}"
        );
        let summary = EVENTS_ERR.replace("\"events_dropped\":", "\"dropped\":");
        let err = format!(
            "{:#}",
            events_summary(&summary, "events.err").expect_err("events_dropped is missing")
        );
        assert!(err.contains("missing field `events_dropped`"), "{err}");
        let notice = NOTICE.replace("reason", "why");
        let err = format!("{:#}", drop_notice(&notice).expect_err("reason is missing"));
        assert!(err.contains("missing field `reason`"), "{err}");
    }
}
