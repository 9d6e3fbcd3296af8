//! `kcmp-trace report`: one recording's summary, or two side by side; plots on request.

use std::{borrow::Cow, collections::BTreeMap, io::Write as _, path::Path};

use anyhow::Context as _;
use kcmp_trace_common::json::{
    lines::{Comparison, ReportLine, ReportScope, Side},
    report::{Report, compare},
    stacks::{FoldBy, folded},
    timeline::check,
};

use crate::{
    cli::{FoldedBy, ReportArgs},
    error::Error,
    recording::Session,
    sinks::{
        plot, table,
        timeline::{Timeline, Undrawn},
    },
};

/// `report --folded`: one recording's stacks, folded.
fn print_folded(sessions: &[Session], by: FoldedBy, writers: bool) -> anyhow::Result<()> {
    let [session] = sessions else {
        return Err(Error::Usage("report --folded takes one recording".into()).into());
    };
    let (total, _) = session.total();
    let Some(rows) = total.stacks else {
        return Err(Error::Usage(format!(
            "{}: recorded without --stacks, so it has no stacks to fold",
            session.path.display()
        ))
        .into());
    };
    let by = match by {
        FoldedBy::Time => FoldBy::Time,
        FoldedBy::Count => FoldBy::Count,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(folded(&rows, by, writers).as_bytes())?;
    out.flush()?;
    let missing = total.incomplete.stacks;
    if missing > 0 {
        eprintln!(
            "kcmp-trace: {missing} waits and write sections are missing from these stacks: \
             the kernel's stack counts' map was full (incomplete.stacks)"
        );
    }
    Ok(())
}

/// `report --trace`: one recording's events as a timeline for Perfetto, checked before it
/// is written; what could not be drawn is said, with its count.
fn write_trace(files: &[std::path::PathBuf], out: &Path, skip_fast: bool) -> anyhow::Result<()> {
    let [file] = files else {
        return Err(Error::Usage("report --trace takes one recording".into()).into());
    };
    let mut timeline = Timeline::new(skip_fast);
    let session = Session::read_with_events(file, |e| timeline.add(e))
        .map_err(|e| Error::Usage(e.to_string()))?;
    if !session.header.events && session.events == 0 {
        return Err(Error::Usage(format!(
            "{}: recorded without --events, so it has no calls to draw",
            file.display()
        ))
        .into());
    }
    let undrawn = timeline.undrawn();
    let other_data = BTreeMap::from([
        ("recording".to_owned(), file.display().to_string()),
        (
            "kernel".to_owned(),
            session.header.kernel.release.clone().unwrap_or_default(),
        ),
        (
            "clock".to_owned(),
            "CLOCK_MONOTONIC, from the first event shown".to_owned(),
        ),
    ]);
    let trace = timeline.finish(other_data);
    let counts = check(&trace).context("the timeline does not hold together")?;
    let text = serde_json::to_string(&trace)?;
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    let n = |cat: &str| counts.slices.get(cat).copied().unwrap_or(0);
    eprintln!(
        "kcmp-trace: {} calls, {} lock waits, {} writer sections and {} arrows from a section \
         to the calls it made fall back, in {}; open it in https://ui.perfetto.dev",
        n("kcmp"),
        n("lock"),
        n("writer"),
        counts.flows,
        out.display()
    );
    for line in undrawn_lines(undrawn, session.total().0.events_dropped) {
        eprintln!("kcmp-trace: {line}");
    }
    Ok(())
}

/// What the timeline lacks, a line each, with the count.
fn undrawn_lines(u: Undrawn, events_dropped: u64) -> Vec<String> {
    let mut lines = Vec::new();
    if u.fast_left_out > 0 {
        lines.push(format!(
            "{} fast calls that did not wait left out (--skip-fast)",
            u.fast_left_out
        ));
    }
    if events_dropped > 0 {
        lines.push(format!(
            "{events_dropped} events were lost while recording (the ring buffer was full): \
             their calls are not on the timeline"
        ));
    }
    if u.no_writer > 0 {
        lines.push(format!(
            "{} retry/busy calls name no writer section: no arrow leads to them",
            u.no_writer
        ));
    }
    if u.waits_without_start > 0 {
        lines.push(format!(
            "{} calls waited, but the recording lacks when their waits began (made by an \
             older kcmp-trace): no wait slice",
            u.waits_without_start
        ));
    }
    if u.sections_without_bounds > 0 {
        lines.push(format!(
            "{} calls name a writer whose section's bounds the recording lacks (made by an \
             older kcmp-trace): no section slice or arrow",
            u.sections_without_bounds
        ));
    }
    lines
}

/// A session's total, as `report --json` prints it.
fn total_line<'a>(session: &'a Session, total: &'a Report) -> ReportLine<'a> {
    ReportLine {
        scope: ReportScope::Total,
        elapsed_s: session.last.at_s,
        report: Cow::Borrowed(total),
        fallbacks_by_writer: Some(Cow::Borrowed(&session.fallbacks)),
    }
}

fn side<'a>(session: &'a Session, total: &'a Report) -> Side<'a> {
    Side {
        file: session.path.display().to_string(),
        kernel: Cow::Borrowed(&session.header.kernel),
        attach: session.header.plan.attach(),
        complete: session.complete,
        total: total_line(session, total),
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.trace {
        return write_trace(&args.files, out, args.skip_fast);
    }
    let sessions = args
        .files
        .iter()
        .map(|f| Session::read(f).map_err(|e| Error::Usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(by) = args.folded {
        return print_folded(&sessions, by, args.writers);
    }
    // The table, which the page shows too; or the JSON for scripts.
    let (table, json) = match sessions.as_slice() {
        [one] => {
            let (total, counters) = one.total();
            (
                table::session(one, &total, &counters),
                serde_json::to_string(&total_line(one, &total))?,
            )
        }
        [a, b] => {
            let (total_a, _) = a.total();
            let (total_b, _) = b.total();
            let rows = compare(&total_a, &total_b);
            let table = table::comparison(a, b, &rows);
            let json = Comparison {
                a: side(a, &total_a),
                b: side(b, &total_b),
                rows,
            };
            (table, serde_json::to_string(&json)?)
        }
        _ => return Err(Error::Usage("report takes one or two recordings".into()).into()),
    };
    let text = if args.json {
        json + "\n"
    } else {
        table.clone()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    if let Some(dir) = &args.out {
        let page = plot::write_page(dir, &sessions, &table)
            .with_context(|| format!("writing plots to {}", dir.display()))?;
        eprintln!("kcmp-trace: plots in {}", page.display());
    }
    Ok(())
}
