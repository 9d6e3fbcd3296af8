//! `kcmp-trace report`: one recording's summary, or two side by side; plots on request.

use std::{borrow::Cow, io::Write as _};

use anyhow::Context as _;
use kcmp_trace_common::json::{
    lines::{Comparison, ReportLine, ReportScope, Side},
    report::{Report, compare},
    stacks::{FoldBy, folded},
};

use crate::{
    cli::{FoldedBy, ReportArgs},
    error::Error,
    recording::Session,
    sinks::{plot, table},
};

/// `report --folded`: one recording's stacks, folded.
fn print_folded(sessions: &[Session], by: FoldedBy, writers: bool) -> anyhow::Result<()> {
    let [session] = sessions else {
        return Err(Error::Usage("report --folded takes one recording".into()).into());
    };
    let Some(rows) = session.total().0.stacks else {
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
    Ok(())
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
