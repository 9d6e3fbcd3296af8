//! `kcmp-trace report`: one recording's summary, or two side by side; plots on request.

use std::io::Write as _;

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::ReportArgs,
    error::Error,
    recording::{RecordedKernel, Session},
    report::{CompareRow, Report, compare},
    sinks::{json::JsonLine, plot, table},
};

/// One side of `report A B --json`.
#[derive(Serialize)]
struct SideJson<'a> {
    file: String,
    kernel: &'a RecordedKernel,
    /// Attach mode and strategy ("kprobe/direct").
    attach: String,
    /// The session ended with its total (was not cut short).
    complete: bool,
    total: JsonLine<'a>,
}

#[derive(Serialize)]
struct CompareJson<'a> {
    a: SideJson<'a>,
    b: SideJson<'a>,
    rows: &'a [CompareRow],
}

fn side<'a>(session: &'a Session, total: &'a Report) -> SideJson<'a> {
    SideJson {
        file: session.path.display().to_string(),
        kernel: &session.header.kernel,
        attach: session.header.attach(),
        complete: session.complete,
        total: JsonLine {
            scope: "total",
            elapsed_s: session.last.at_s,
            report: total,
        },
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let sessions = args
        .files
        .iter()
        .map(|f| Session::read(f).map_err(|e| Error::Usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    // The table, which the page shows too; or the JSON for scripts.
    let (table, json) = match sessions.as_slice() {
        [one] => {
            let (total, counters) = one.total();
            let line = JsonLine {
                scope: "total",
                elapsed_s: one.last.at_s,
                report: &total,
            };
            (
                table::session(one, &total, &counters),
                serde_json::to_string(&line)?,
            )
        }
        [a, b] => {
            let (total_a, _) = a.total();
            let (total_b, _) = b.total();
            let rows = compare(&total_a, &total_b);
            let json = CompareJson {
                a: side(a, &total_a),
                b: side(b, &total_b),
                rows: &rows,
            };
            (
                table::comparison(a, b, &rows),
                serde_json::to_string(&json)?,
            )
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
