//! Text output in the shapes kernel engineers know: interval tables and log2 histograms.

use std::fmt::Write as _;

use kcmp_trace_common::{
    hist::HIST_SLOTS,
    json::{
        fallbacks::{FallbackCounts, FallbackTable, FallbacksByWriter, WriterRow, side_by_side},
        report::{
            CompareRow, Incomplete, OTHER_READER, Quantiles, ReaderReport, Report, hist_rows,
        },
        stacks::{StackRow, by_holder, top_sites},
    },
    outcome::Outcome,
    snapshot::Counters,
};

use super::columns::{Align, Columns};
use crate::recording::Session;

fn ns(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000_000 => format!("{}ms", v / 1_000_000),
        Some(v) if v >= 10_000 => format!("{}us", v / 1_000),
        Some(v) => format!("{v}ns"),
    }
}

fn breakdown(map: &std::collections::BTreeMap<impl std::fmt::Display, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quantiles(q: &Quantiles) -> String {
    format!(
        "p50={} p90={} p99={} max<={}",
        ns(q.p50),
        ns(q.p90),
        ns(q.p99),
        ns(q.max)
    )
}

/// One interval as a compact block, the first line a timestamped summary. Whatever makes
/// the numbers incomplete is shown even when no call was counted.
pub fn interval(clock: &str, r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{clock}  calls={:<8} rate={:<10.0}/s errors={:<6} dropped={}",
        r.calls, r.calls_per_s, r.errors, r.events_dropped
    );
    if r.calls != 0 {
        let _ = writeln!(out, "  type:    {}", breakdown(&r.by_type));
        let _ = writeln!(out, "  result:  {}", breakdown(&r.by_result));
        let _ = writeln!(out, "  outcome: {}", breakdown(&r.by_outcome));
        let _ = writeln!(out, "  latency: {}", quantiles(&r.latency_ns));
    }
    if r.lock_wait_ns.count > 0 {
        let _ = writeln!(out, "  lock wait: {}", quantiles(&r.lock_wait_ns));
    }
    for (writer, held) in [("exec", &r.exec_hold_ns), ("TSYNC", &r.tsync_hold_ns)] {
        if held.count > 0 {
            let _ = writeln!(
                out,
                "  {writer} write sections: {} {}",
                held.count,
                quantiles(held)
            );
        }
    }
    let lost = [
        ("unpaired_exits", r.unpaired_exits),
        ("lost_exits", r.lost_exits),
        ("unclassified", r.unclassified),
        ("lock_waits_unfinished", r.lock_waits_unfinished),
        ("unattributed", r.unattributed),
    ];
    if lost.iter().any(|&(_, n)| n != 0) {
        let lost: std::collections::BTreeMap<&str, u64> = lost.into_iter().collect();
        let _ = writeln!(out, "  lost:    {}", breakdown(&lost));
    }
    if !r.missed_runs.is_empty() {
        let missed = r
            .missed_runs
            .iter()
            .map(|(p, n)| format!("{p}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "  missed:  {missed} (program runs the kernel skipped)");
    }
    if let Some(line) = incomplete(&r.incomplete) {
        let _ = writeln!(out, "  INCOMPLETE: {line}");
    }
    if let Some(readers) = &r.by_reader {
        out += &reader_rows(readers);
    }
    if !r.top_processes.is_empty() {
        let procs = r
            .top_processes
            .iter()
            .map(|p| format!("{}[{}]={}", p.comm, p.tgid, p.calls))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "  top:     {procs}");
    }
    out
}

/// The readers of exec_update_lock side by side: a row each, outcomes for the readers whose
/// calls are followed, helper verdicts for other call sites, and lock waits.
pub fn reader_rows(readers: &std::collections::BTreeMap<String, ReaderReport>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<28} {:>9} {:>9} {:>7} {:>7} {:>9} {:>7} {:>10} {:>10}",
        "reader", "calls", "fast", "retry", "busy", "locked", "rest", "lock waits", "mean wait"
    );
    for (name, r) in readers {
        let n = |o: Outcome| r.by_outcome.get(o.name()).copied().unwrap_or(0);
        let rest = r.calls
            - [
                Outcome::Fast,
                Outcome::Retry,
                Outcome::Busy,
                Outcome::Locked,
            ]
            .into_iter()
            .map(n)
            .sum::<u64>();
        let mean = r
            .mean_lock_wait_ns()
            .map_or_else(|| "-".to_owned(), |m| ns(Some(m as u64)));
        // Other callers have no call boundary: their helper verdicts, if any, stand in for
        // the outcome columns.
        if name == OTHER_READER || name.starts_with(&format!("{OTHER_READER}:")) {
            let verdicts = if r.verdicts.is_empty() {
                "-".to_owned()
            } else {
                breakdown(&r.verdicts)
            };
            let _ = writeln!(
                out,
                "  {name:<28} {:>9} {verdicts:<43} {:>10} {mean:>10}",
                "-", r.lock_waits
            );
            continue;
        }
        let _ = writeln!(
            out,
            "  {name:<28} {:>9} {:>9} {:>7} {:>7} {:>9} {:>7} {:>10} {mean:>10}",
            r.calls,
            n(Outcome::Fast),
            n(Outcome::Retry),
            n(Outcome::Busy),
            n(Outcome::Locked),
            rest,
            r.lock_waits
        );
    }
    out
}

/// What `watch` prints at the end of a session: the total and its histograms.
pub fn summary(elapsed_s: f64, r: &Report, total: &Counters) -> String {
    let mut out = interval(&format!("total {elapsed_s:.1}s"), r);
    let _ = writeln!(
        out,
        "{}",
        log2_hist("kcmp latency", "nsecs", &total.latency_all())
    );
    if r.lock_wait_ns.count > 0 {
        let _ = writeln!(
            out,
            "{}",
            log2_hist("exec_update_lock wait", "nsecs", &total.lock_wait)
        );
    }
    if let Some(rows) = &r.stacks {
        out += &stack_sites(rows);
        out += &holders(rows);
    }
    out
}

/// Rows shown by each waits table; JSON's `stacks` has every row, `report --folded` every
/// stack.
const WAITS_SHOWN: usize = 10;

/// `--stacks`: lock waits by who held the lock for writing as each began, per waiter.
pub fn holders(rows: &[StackRow]) -> String {
    let all: Vec<_> = by_holder(rows)
        .into_iter()
        .map(|(who, holder, counts)| {
            let holder = holder.map_or_else(|| "(none open)".to_owned(), |h| h.to_string());
            (who, holder, counts.count, counts.time_ns)
        })
        .collect();
    waits_table("holder", "the write section open as each wait began", &all)
}

/// `--stacks`: the call sites with the most exec_update_lock waits, from the waits' stacks.
pub fn stack_sites(rows: &[StackRow]) -> String {
    waits_table(
        "call site",
        "all stacks: report --folded",
        &top_sites(rows, usize::MAX),
    )
}

/// The first `WAITS_SHOWN` of `all` (waiter, what the waits are kept by, waits, wait ns),
/// titled by that column (`by`) and a note.
fn waits_table(by: &'static str, note: &str, all: &[(String, String, u64, u64)]) -> String {
    let mut out = format!(
        "exec_update_lock waits by {by} ({} of {}; {note})\n",
        all.len().min(WAITS_SHOWN),
        all.len()
    );
    let mut columns = Columns::new(&[
        ("waiter", 12, Align::Left),
        (by, 28, Align::Left),
        ("waits", 9, Align::Right),
        ("wait us", 11, Align::Right),
    ])
    .indented("  ");
    for (who, key, waits, ns) in all.iter().take(WAITS_SHOWN) {
        columns.row(&[
            who.clone(),
            key.clone(),
            waits.to_string(),
            format!("{:.1}", *ns as f64 / 1e3),
        ]);
    }
    out += &columns.render();
    out
}

/// "6.12.117, preemption voluntary, exec_update_seq series present; kprobe/direct".
fn describe_session(s: &Session) -> String {
    let k = &s.header.kernel;
    format!(
        "{}, preemption {}, exec_update_seq series {}; {}{}",
        k.release.as_deref().unwrap_or("(a daemon's kernel)"),
        k.preemption,
        if k.series { "present" } else { "absent" },
        s.header.plan.attach(),
        if s.complete {
            ""
        } else {
            "; cut short (no total)"
        },
    )
}

/// One recording: where it ran, what `watch` printed at its end, and the outcome split of
/// each interval.
pub fn session(s: &Session, total: &Report, counters: &Counters) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "recording: {} ({} events kept)",
        s.path.display(),
        s.events
    );
    let _ = writeln!(out, "kernel:    {}", describe_session(s));
    let _ = writeln!(out, "started:   {}", s.header.started);
    out += &summary(s.last.at_s, total, counters);
    let outcomes: Vec<&str> = Outcome::ALL
        .iter()
        .map(|o| o.name())
        .filter(|o| total.by_outcome.contains_key(*o))
        .collect();
    let _ = writeln!(out, "outcome split per interval (% of its calls)");
    let _ = write!(out, "{:>8} {:>10} {:>12}", "at", "calls", "calls/s");
    for o in &outcomes {
        let _ = write!(out, " {o:>8}");
    }
    out.push('\n');
    for (at_s, r) in s.interval_reports() {
        let _ = write!(
            out,
            "{:>7.1}s {:>10} {:>12.0}",
            at_s, r.calls, r.calls_per_s
        );
        for o in &outcomes {
            let n = r.by_outcome.get(*o).copied().unwrap_or(0);
            let share = match r.calls {
                0 => "-".to_owned(),
                calls => format!("{:.1}", 100.0 * n as f64 / calls as f64),
            };
            let _ = write!(out, " {share:>8}");
        }
        out.push('\n');
    }
    out += &fallbacks(&s.fallbacks, total.events_dropped);
    out
}

const NEEDS_EVENTS: &str = "the recording kept no events: record it with --events";

/// A writer's cells: kind, tgid, comm.
fn writer_cells(w: &WriterRow) -> Vec<String> {
    vec![w.kind.name().into(), w.tgid.to_string(), w.comm.clone()]
}

/// A side's cells of a writer's row: retry, busy, overlap sum and max, lock wait sum; `-`
/// where it lacks the writer.
fn row_cells(w: Option<&WriterRow>) -> Vec<String> {
    let count = |n: Option<u64>| n.map_or_else(|| "-".into(), |n| n.to_string());
    vec![
        count(w.map(|w| w.fallbacks.retry)),
        count(w.map(|w| w.fallbacks.busy)),
        ns(w.map(|w| w.overlap_total_ns)),
        ns(w.map(|w| w.overlap_max_ns)),
        ns(w.map(|w| w.lock_wait_total_ns)),
    ]
}

/// A side's cells of a row of counts alone (no writer seen, total): retry, busy, and no
/// overlaps; `-` for a side without events.
fn count_cells(c: Option<FallbackCounts>) -> Vec<String> {
    match c {
        Some(c) => vec![
            c.retry.to_string(),
            c.busy.to_string(),
            String::new(),
            String::new(),
        ],
        None => vec!["-".into(), "-".into(), String::new(), String::new()],
    }
}

/// A row of counts alone, labelled in the comm column (so its counts line up).
fn label_cells(label: &str) -> Vec<String> {
    vec![String::new(), String::new(), label.into()]
}

const WRITER_COLUMNS: [(&str, usize, Align); 3] = [
    ("kind", 5, Align::Left),
    ("tgid", 7, Align::Right),
    ("comm", 16, Align::Left),
];

/// A recording's retry and busy calls by the writer that caused them, the calls whose
/// event named none, and the total; or why there is no table.
pub fn fallbacks(f: &FallbacksByWriter, events_dropped: u64) -> String {
    let FallbacksByWriter::Counted(t) = f else {
        return format!("fallbacks by writer: {NEEDS_EVENTS}\n");
    };
    let mut out = String::from("fallbacks by writer (retry and busy calls, from the events)\n");
    let mut columns = Columns::new(
        &[
            &WRITER_COLUMNS[..],
            &[
                ("retry", 7, Align::Right),
                ("busy", 7, Align::Right),
                ("overlap sum", 11, Align::Right),
                ("overlap max", 11, Align::Right),
                ("wait sum", 9, Align::Right),
            ],
        ]
        .concat(),
    )
    .indented("  ");
    for w in &t.writers {
        columns.row(&[writer_cells(w), row_cells(Some(w))].concat());
    }
    columns.row(
        &[
            label_cells("(no writer seen)"),
            count_cells(Some(t.no_writer)),
        ]
        .concat(),
    );
    columns.row(&[label_cells("total"), count_cells(Some(t.total))].concat());
    out += &columns.render();
    if events_dropped > 0 {
        let _ = writeln!(
            out,
            "  {events_dropped} events dropped: the table may be short by as many calls"
        );
    }
    out
}

fn counted(f: &FallbacksByWriter) -> Option<&FallbackTable> {
    match f {
        FallbacksByWriter::Counted(t) => Some(t),
        FallbacksByWriter::NeedsEvents => None,
    }
}

/// Two recordings' fallbacks by writer side by side, writers joined on (kind, tgid, comm).
fn fallbacks_compared(a: &Session, b: &Session) -> String {
    let (ta, tb) = (counted(&a.fallbacks), counted(&b.fallbacks));
    if ta.is_none() && tb.is_none() {
        return "# fallbacks by writer: neither recording kept events: record them with --events\n"
            .into();
    }
    let mut out = String::from("fallbacks by writer (retry and busy calls, from the events)\n");
    let mut columns = Columns::new(
        &[
            &WRITER_COLUMNS[..],
            &[
                ("A retry", 7, Align::Right),
                ("A busy", 7, Align::Right),
                ("A overlap sum", 13, Align::Right),
                ("A overlap max", 13, Align::Right),
                ("A wait sum", 10, Align::Right),
                ("B retry", 7, Align::Right),
                ("B busy", 7, Align::Right),
                ("B overlap sum", 13, Align::Right),
                ("B overlap max", 13, Align::Right),
                ("B wait sum", 10, Align::Right),
            ],
        ]
        .concat(),
    );
    let none = FallbackTable::default();
    for (wa, wb) in side_by_side(ta.unwrap_or(&none), tb.unwrap_or(&none)) {
        if let Some(w) = wa.or(wb) {
            columns.row(&[writer_cells(w), row_cells(wa), row_cells(wb)].concat());
        }
    }
    for (label, pick) in [
        (
            "(no writer seen)",
            (|t| t.no_writer) as fn(&FallbackTable) -> FallbackCounts,
        ),
        ("total", |t| t.total),
    ] {
        columns.row(
            &[
                label_cells(label),
                count_cells(ta.map(pick)),
                count_cells(tb.map(pick)),
            ]
            .concat(),
        );
    }
    out += &columns.render();
    for (name, t, s) in [("A", ta, a), ("B", tb, b)] {
        let dropped = s.total().0.events_dropped;
        match t {
            None => {
                let _ = writeln!(out, "# {name}: {NEEDS_EVENTS}");
            }
            Some(_) if dropped > 0 => {
                let _ = writeln!(
                    out,
                    "# {name}: {dropped} events dropped: its side may be short by as many calls"
                );
            }
            Some(_) => {}
        }
    }
    out
}

/// A compared value: counts and nanoseconds whole, shares and rates as people read them.
fn compared(unit: &str, v: Option<f64>) -> String {
    match (unit, v) {
        (_, None) => "-".into(),
        ("%", Some(v)) => format!("{v:.2}%"),
        ("s", Some(v)) => format!("{v:.2}"),
        (_, Some(v)) => format!("{v:.0}"),
    }
}

/// Two recordings side by side, A then B, in a plain fixed-width table (as `perf bench`
/// prints) that fits a cover letter.
pub fn comparison(a: &Session, b: &Session, rows: &[CompareRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# A: {}: {}", a.name(), describe_session(a));
    let _ = writeln!(out, "# B: {}: {}", b.name(), describe_session(b));
    // The metric column fits the longest name (a reader's call site can be long).
    let width = rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(0)
        .max(30);
    let _ = writeln!(
        out,
        "{:<width$} {:>8} {:>12} {:>12} {:>12} {:>9}",
        "metric", "unit", "A", "B", "B-A", "B/A"
    );
    for r in rows {
        let delta = match (r.unit.as_str(), r.delta) {
            (_, None) => "-".into(),
            ("%", Some(d)) => format!("{d:+.2}"),
            ("s", Some(d)) => format!("{d:+.2}"),
            (_, Some(d)) => format!("{d:+.0}"),
        };
        let ratio = r.ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}x"));
        let _ = writeln!(
            out,
            "{:<width$} {:>8} {:>12} {:>12} {:>12} {:>9}",
            r.metric,
            r.unit,
            compared(&r.unit, r.a),
            compared(&r.unit, r.b),
            delta,
            ratio
        );
    }
    for s in [a, b].into_iter().filter(|s| !s.total().0.exact) {
        if let Some(line) = incomplete(&s.total().0.incomplete) {
            let _ = writeln!(out, "# {} INCOMPLETE: {line}", s.name());
        }
    }
    out += &fallbacks_compared(a, b);
    out
}

/// "calls short by up to 12; outcome of up to 3 calls uncertain", or None when exact.
pub fn incomplete(i: &Incomplete) -> Option<String> {
    let parts: Vec<String> = [
        (i.calls, "calls short by up to"),
        (i.outcomes, "outcome uncertain for up to"),
        (i.lock_wait, "lock waits missing up to"),
        (i.exec_write_sections, "exec write sections missing up to"),
        (i.tsync_write_sections, "TSYNC write sections missing up to"),
        (
            i.reader_calls,
            "/proc reader calls short or misread by up to",
        ),
        (
            i.stacks,
            "lock waits and write sections missing from the stacks:",
        ),
    ]
    .into_iter()
    .filter(|&(n, _)| n != 0)
    .map(|(n, what)| format!("{what} {n}"))
    .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A log2 histogram in the layout of bcc's print_log2_hist.
pub fn log2_hist(title: &str, unit: &str, h: &[u64; HIST_SLOTS]) -> String {
    const WIDTH: usize = 40;
    let rows = hist_rows(h);
    let mut out = String::new();
    if rows.is_empty() {
        let _ = writeln!(out, "{title}: no samples");
        return out;
    }
    let peak = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:>24} : count     distribution",
        format!("{unit:>10}")
    );
    for (lo, hi, count) in rows {
        let stars = (count as u128 * WIDTH as u128).div_ceil(peak as u128) as usize;
        let _ = writeln!(
            out,
            "{lo:>10} -> {hi:<10} : {count:<9} |{:<WIDTH$}|",
            "*".repeat(stars)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_looks_like_bcc() {
        let mut h = [0u64; HIST_SLOTS];
        h[11] = 40;
        h[12] = 10;
        let text = log2_hist("latency", "nsecs", &h);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "latency");
        assert!(lines[1].contains("nsecs") && lines[1].contains("distribution"));
        assert!(lines[2].contains("1024 -> 2047") && lines[2].contains(&"*".repeat(40)));
        assert!(lines[3].contains("2048 -> 4095") && lines[3].contains("|**********"));
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn fallbacks_by_writer_show_every_call_once() {
        use kcmp_trace_common::json::event::WriterKind;
        let row = |kind, tgid: u32, retry, busy| WriterRow {
            kind,
            tgid,
            comm: "kcmp-racer".into(),
            fallbacks: FallbackCounts { retry, busy },
            overlap_total_ns: 25_000,
            overlap_max_ns: 20_000,
            lock_wait_total_ns: 30_000,
        };
        let table = FallbackTable {
            writers: vec![
                row(WriterKind::Exec, 41, 3, 2),
                row(WriterKind::Tsync, 42, 1, 0),
            ],
            no_writer: FallbackCounts { retry: 0, busy: 1 },
            total: FallbackCounts { retry: 4, busy: 3 },
        };
        let text = fallbacks(&FallbacksByWriter::Counted(table), 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "kind", "tgid", "comm", "retry", "busy", "overlap", "sum", "overlap", "max",
                "wait", "sum"
            ]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["exec", "41", "kcmp-racer", "3", "2", "25us", "20us", "30us"]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["(no", "writer", "seen)", "0", "1"]
        );
        assert_eq!(
            lines[5].split_whitespace().collect::<Vec<_>>(),
            ["total", "4", "3"]
        );
        assert!(lines[6].contains("2 events dropped"), "{text}");
        assert_eq!(
            fallbacks(&FallbacksByWriter::NeedsEvents, 0),
            "fallbacks by writer: the recording kept no events: record it with --events\n"
        );
    }

    #[test]
    fn reader_rows_line_up_and_other_callers_have_no_outcomes() {
        let mut readers = std::collections::BTreeMap::new();
        readers.insert(
            "proc_wchan".to_owned(),
            ReaderReport {
                calls: 10,
                by_outcome: [("fast".into(), 9), ("busy".into(), 1)].into(),
                lock_waits: 1,
                lock_wait_sum_ns: 2_000,
                ..ReaderReport::default()
            },
        );
        readers.insert(
            "other:mm_access".to_owned(),
            ReaderReport {
                lock_waits: 4,
                lock_wait_sum_ns: 4_000,
                ..ReaderReport::default()
            },
        );
        let text = reader_rows(&readers);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // The lock-wait columns end where the header's do.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        assert!(
            lines[1].starts_with("  other:mm_access") && lines[1].contains(" - "),
            "{text}"
        );
        assert!(
            lines[2].contains("2000ns") && lines[1].contains("1000ns"),
            "{text}"
        );
    }

    #[test]
    fn incompleteness_is_spelled_out() {
        assert_eq!(incomplete(&Incomplete::default()), None);
        let i = Incomplete {
            calls: 12,
            outcomes: 3,
            ..Incomplete::default()
        };
        assert_eq!(
            incomplete(&i).as_deref(),
            Some("calls short by up to 12; outcome uncertain for up to 3")
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(ns(Some(999)), "999ns");
        assert_eq!(ns(Some(12_345)), "12us");
        assert_eq!(ns(Some(12_345_678)), "12ms");
        assert_eq!(ns(None), "-");
    }
}
