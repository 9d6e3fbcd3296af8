//! Plots of one or two recordings (A dashed, B solid): SVG files from plotters' SVG backend
//! and one HTML page that shows them with the report's table.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use kcmp_trace_common::{
    hist::{HIST_SLOTS, slot_lower_bound},
    outcome::Outcome,
    reader::{OTHER_SLOT, ProcReader},
    snapshot::Counters,
};
use plotters::prelude::*;

use super::flame;
use crate::recording::Session;

/// Counts below 1 cannot sit on a log axis: empty buckets are drawn at this floor, the
/// bottom edge of the plot.
const COUNT_FLOOR: f64 = 0.5;
const SIZE: (u32, u32) = (900, 480);

/// The same colour for an outcome in every plot.
fn outcome_color(o: Outcome) -> RGBColor {
    match o {
        Outcome::Fast => RGBColor(0x1b, 0x9e, 0x77),
        Outcome::Retry => RGBColor(0xd9, 0x5f, 0x02),
        Outcome::Busy => RGBColor(0x75, 0x70, 0xb3),
        Outcome::Locked => RGBColor(0xe7, 0x29, 0x8a),
        Outcome::Interrupted => RGBColor(0xa6, 0x76, 0x1d),
        Outcome::NoTask => RGBColor(0x66, 0x66, 0x66),
        Outcome::Unknown => RGBColor(0x1f, 0x78, 0xb4),
    }
}

/// One line: a session's label ("A" or "B") and what it shows.
struct Series {
    name: String,
    color: RGBColor,
    /// Session A is dashed, B solid.
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// "1us" for 1024 ns and so on: bucket bounds as people read them.
fn ns_label(ns: u64) -> String {
    match ns {
        0 => "0".into(),
        n if n >= 1 << 30 => format!("{}s", n >> 30),
        n if n >= 1 << 20 => format!("{}ms", n >> 20),
        n if n >= 1 << 10 => format!("{}us", n >> 10),
        n => format!("{n}ns"),
    }
}

/// A log2 histogram as points (bucket, count), from its first to its last non-empty
/// bucket; None when it is empty.
fn hist_points(h: &[u64; HIST_SLOTS]) -> Option<Vec<(f64, f64)>> {
    let first = h.iter().position(|&c| c != 0)?;
    let last = h.iter().rposition(|&c| c != 0)?;
    Some(
        (first..=last)
            .map(|s| (s as f64, (h[s] as f64).max(COUNT_FLOOR)))
            .collect(),
    )
}

fn label_of(index: usize) -> &'static str {
    ["A", "B"].get(index).copied().unwrap_or("?")
}

/// "A stock-6.12 (dashed), B fastpath-6.12": which recording is which line.
fn key(sessions: &[Session]) -> String {
    let dashed = sessions.len() > 1;
    sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s.name();
            let name = name.strip_suffix(".jsonl").unwrap_or(&name);
            let style = if i == 0 && dashed { " (dashed)" } else { "" };
            format!("{} {name}{style}", label_of(i))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Calls present in a session's total, by outcome.
fn outcomes_of(total: &Counters) -> impl Iterator<Item = Outcome> + '_ {
    Outcome::ALL
        .into_iter()
        .filter(|&o| total.calls_by_outcome(o) != 0)
}

type Chart<'a, X> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, LogCoord<f64>>>;

/// Draws the lines, B's before A's: where they coincide A's dashes show over B's line.
fn draw_lines<'a, X>(
    chart: &mut Chart<'a, X>,
    series: &[Series],
    legend_at: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
{
    for s in series.iter().rev() {
        // B's solid lines a little wider, so they show around A's dashes.
        let style = s.color.stroke_width(if s.dashed { 2 } else { 3 });
        let legend = move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 24, y)], style);
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(s.points.clone(), 6, 4, style))?;
        } else {
            chart.draw_series(LineSeries::new(s.points.clone(), style))?;
        }
        // A mark at every point: a series of one point is no line. A's hollow, B's filled.
        let mark = if s.dashed { style } else { style.filled() };
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, mark)))?
            .label(&s.name)
            .legend(legend);
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Log2 histograms, overlaid: x the bucket (its lower bound), y its count on a log scale.
fn log2_plot(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo > hi {
        (0.0, 1.0)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(lo..hi, (COUNT_FLOOR..top * 3.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("log2 bucket (lower bound)")
        .y_desc("calls (log scale)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_labels((hi - lo) as usize + 1)
        .x_label_formatter(&|x| {
            let slot = x.round();
            if (x - slot).abs() < 0.01 && (0.0..HIST_SLOTS as f64).contains(&slot) {
                ns_label(slot_lower_bound(slot as usize))
            } else {
                String::new()
            }
        })
        .draw()?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Each interval's outcome split, in % of its calls, over the session.
fn split_plot(path: &Path, sessions: &[Session], key: &str) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let intervals = session.interval_reports();
        for o in outcomes_of(&session.total().1) {
            let points = intervals
                .iter()
                .filter(|(_, r)| r.calls != 0)
                .map(|(at, r)| {
                    let n = r.by_outcome.get(o.name()).copied().unwrap_or(0);
                    (*at, 100.0 * n as f64 / r.calls as f64)
                })
                .collect();
            series.push(Series {
                name: format!("{} {}", label_of(i), o.name()),
                color: outcome_color(o),
                dashed: i == 0 && sessions.len() > 1,
                points,
            });
        }
    }
    let end = sessions.iter().map(|s| s.last.at_s).fold(1.0, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("outcome split per interval: {key}"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end, (0.001..150.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since attach")
        .y_desc("% of the interval's calls (log scale)")
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        })
        .draw()?;
    // Shares of 0 have no place on a log axis: they sit on its floor.
    for s in &mut series {
        for p in &mut s.points {
            p.1 = p.1.max(0.001);
        }
    }
    draw_lines(&mut chart, &series, SeriesLabelPosition::MiddleRight)?;
    root.present()?;
    Ok(())
}

/// A plot on the page: its file, heading and how to read it.
struct Figure {
    file: &'static str,
    heading: &'static str,
    how_to_read: &'static str,
}

const FIGURES: [Figure; 4] = [
    Figure {
        file: "latency.svg",
        heading: "kcmp latency by outcome",
        how_to_read: "Calls per log2 latency bucket, one line per outcome and recording (A dashed, \
            B solid). On a kernel with the series most calls are fast; compare their bucket with \
            the locked calls' of the kernel without it. Retries and busy fallbacks sit to the right: \
            they waited for an exec.",
    },
    Figure {
        file: "outcomes.svg",
        heading: "Outcome split over time",
        how_to_read: "Each interval's calls by outcome, in % (log scale, so that rare retries and \
            busy fallbacks show next to the fast path).",
    },
    Figure {
        file: "lock_wait.svg",
        heading: "exec_update_lock wait",
        how_to_read: "Time calls that took the exec_update_locks waited for them, per log2 bucket. \
            Fewer calls here is what the fast path saves.",
    },
    Figure {
        file: "exec_write_sections.svg",
        heading: "exec write sections",
        how_to_read: "How long each exec held exec_update_lock for writing (begin_new_exec to \
            setup_new_exec): the time a kcmp that needs the lock may have to wait.",
    },
];

/// With `--readers`: the lock waits of each reader side by side.
const READER_FIGURE: Figure = Figure {
    file: "lock_wait_by_reader.svg",
    heading: "exec_update_lock wait by reader",
    how_to_read: "Lock waits per log2 bucket, one line per reader of exec_update_lock (kcmp, the \
        /proc readers, every other caller) and recording (A dashed, B solid). On the fast path a \
        reader waits only when an exec or TSYNC raced it; without the series every read waits.",
};

/// Each reader's lock-wait histogram in a session's totals, kcmp first.
fn reader_waits(total: &Counters) -> Vec<(&'static str, [u64; HIST_SLOTS])> {
    std::iter::once(("kcmp", total.lock_wait))
        .chain(
            ProcReader::ALL
                .iter()
                .map(|&r| (r.name(), total.readers[r as usize].lock_wait)),
        )
        .chain([("other", total.readers[OTHER_SLOT].lock_wait)])
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes the SVGs and `index.html` (with `table`, the report's text) into `dir`; returns
/// the page's path.
pub fn write_page(dir: &Path, sessions: &[Session], table: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let totals: Vec<Counters> = sessions.iter().map(|s| s.total().1).collect();
    let dashed = |i: usize| i == 0 && sessions.len() > 1;
    let key = key(sessions);

    let latency: Vec<Series> = totals
        .iter()
        .enumerate()
        .flat_map(|(i, total)| {
            outcomes_of(total).filter_map(move |o| {
                Some(Series {
                    name: format!("{} {}", label_of(i), o.name()),
                    color: outcome_color(o),
                    dashed: dashed(i),
                    points: hist_points(&total.latency[o as usize])?,
                })
            })
        })
        .collect();
    log2_plot(
        &dir.join(FIGURES[0].file),
        &format!("kcmp latency by outcome: {key}"),
        &latency,
    )?;
    split_plot(&dir.join(FIGURES[1].file), sessions, &key)?;
    let colors = [RGBColor(0x44, 0x44, 0x44), RGBColor(0xd6, 0x27, 0x28)];
    for (figure, hist, title) in [
        (
            &FIGURES[2],
            (|c: &Counters| c.lock_wait) as fn(&Counters) -> [u64; HIST_SLOTS],
            "exec_update_lock wait",
        ),
        (
            &FIGURES[3],
            |c: &Counters| c.exec_hold,
            "exec write sections",
        ),
    ] {
        let series: Vec<Series> = totals
            .iter()
            .enumerate()
            .filter_map(|(i, total)| {
                Some(Series {
                    name: label_of(i).to_owned(),
                    color: colors[i % colors.len()],
                    dashed: dashed(i),
                    points: hist_points(&hist(total))?,
                })
            })
            .collect();
        log2_plot(&dir.join(figure.file), &format!("{title}: {key}"), &series)?;
    }
    // Only sessions that followed the readers have reader counts; kcmp-only pages stay as
    // they were.
    let readers_followed = totals.iter().any(|t| {
        t.readers
            .iter()
            .any(|r| r.total_calls() != 0 || r.lock_waits() != 0)
    });
    if readers_followed {
        let palette = [
            RGBColor(0x44, 0x44, 0x44),
            RGBColor(0x1b, 0x9e, 0x77),
            RGBColor(0xd9, 0x5f, 0x02),
            RGBColor(0x75, 0x70, 0xb3),
            RGBColor(0xe7, 0x29, 0x8a),
        ];
        let series: Vec<Series> = totals
            .iter()
            .enumerate()
            .flat_map(|(i, total)| {
                reader_waits(total).into_iter().zip(palette).filter_map(
                    move |((name, h), color)| {
                        Some(Series {
                            name: format!("{} {name}", label_of(i)),
                            color,
                            dashed: dashed(i),
                            points: hist_points(&h)?,
                        })
                    },
                )
            })
            .collect();
        log2_plot(
            &dir.join(READER_FIGURE.file),
            &format!("exec_update_lock wait by reader: {key}"),
            &series,
        )?;
    }

    // With `--stacks`: each recording's waits as flame graphs.
    let mut flames = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let (total, _) = s.total();
        if let Some(rows) = &total.stacks {
            flames.extend(flame::write(
                dir,
                label_of(i),
                rows,
                total.incomplete.stacks,
            )?);
        }
    }

    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>kcmp-trace report</title>\n<style>body{font-family:sans-serif;max-width:960px;\
         margin:auto} pre{background:#f6f6f6;padding:8px;overflow-x:auto} img{max-width:100%}\
         </style>\n</head>\n<body>\n<h1>kcmp-trace report</h1>\n<ul>\n",
    );
    for (i, s) in sessions.iter().enumerate() {
        let _ = writeln!(
            page,
            "<li>{}: {}</li>",
            label_of(i),
            escape(&s.path.display().to_string())
        );
    }
    let _ = writeln!(page, "</ul>\n<pre>{}</pre>", escape(table));
    for f in FIGURES
        .iter()
        .chain(readers_followed.then_some(&READER_FIGURE))
    {
        let _ = writeln!(
            page,
            "<h2>{}</h2>\n<p>{}</p>\n<p><img src=\"{}\" alt=\"{}\"></p>",
            f.heading, f.how_to_read, f.file, f.heading
        );
    }
    for f in &flames {
        let _ = writeln!(
            page,
            "<h2>{}</h2>\n<p>{}</p>\n<p><object data=\"{}\" type=\"image/svg+xml\">{}</object></p>",
            escape(&f.heading),
            flame::HOW_TO_READ,
            f.file,
            escape(&f.heading)
        );
    }
    page.push_str("</body>\n</html>\n");
    let path = dir.join("index.html");
    std::fs::write(&path, page)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcmp_trace_common::json::report::Reading;

    /// A session of two readings a second apart with these calls per outcome.
    fn session(name: &str, calls: &[(Outcome, u64)], lock_waits: u64) -> Session {
        let mut counters = Counters::ZERO;
        for &(o, n) in calls {
            counters.calls[o as usize][0][0] = n;
            counters.latency[o as usize][10 + o as usize] = n;
        }
        counters.lock_wait[12] = lock_waits;
        let mut half = counters;
        for cell in half.calls.as_flattened_mut().as_flattened_mut() {
            *cell /= 2;
        }
        let at = |at_s, counters| Reading {
            counters,
            procs: Vec::new(),
            callers: None,
            stacks: None,
            hooks: Vec::new(),
            at_s,
        };
        Session {
            path: PathBuf::from(name),
            header: crate::recording::tests::header(),
            baseline: Reading::attach(),
            intervals: vec![(1.0, at(1.0, half).report_since(&Reading::attach(), 5).0)],
            last: at(2.0, counters),
            complete: true,
            events: 0,
            fallbacks: kcmp_trace_common::json::fallbacks::FallbacksByWriter::NeedsEvents,
        }
    }

    /// The legend entries of an SVG, after checking it is well-formed XML.
    fn legends(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).expect("svg");
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not well-formed: {e}", path.display()));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let mut texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_owned())
            .filter(|t| t.starts_with("A") || t.starts_with("B"))
            .collect();
        texts.sort();
        texts
    }

    #[test]
    fn plots_have_one_series_per_outcome_and_the_page_links_them() {
        let stock = session("stock.jsonl", &[(Outcome::Locked, 1000)], 1000);
        let fastpath = session(
            "fastpath.jsonl",
            &[
                (Outcome::Fast, 980),
                (Outcome::Retry, 8),
                (Outcome::Busy, 12),
            ],
            20,
        );
        let dir = std::env::temp_dir().join(format!("kcmp-trace-plots-{}", std::process::id()));
        let page = write_page(&dir, &[stock, fastpath], "A <-> B").expect("plots");
        let outcomes = ["A locked", "B busy", "B fast", "B retry"];
        assert_eq!(legends(&dir.join("latency.svg")), outcomes);
        assert_eq!(legends(&dir.join("outcomes.svg")), outcomes);
        assert_eq!(legends(&dir.join("lock_wait.svg")), ["A", "B"]);
        // No exec write sections in either: no series.
        assert!(legends(&dir.join("exec_write_sections.svg")).is_empty());

        let html = std::fs::read_to_string(&page).expect("page");
        assert!(html.contains("<pre>A &lt;-&gt; B</pre>"), "{html}");
        let mut linked: Vec<&str> = html
            .split("src=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        linked.sort();
        let mut written: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".svg"))
            .collect();
        written.sort();
        assert_eq!(linked, written);
        assert_eq!(written.len(), 4);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn bucket_labels_read_as_durations() {
        assert_eq!(ns_label(512), "512ns");
        assert_eq!(ns_label(1024), "1us");
        assert_eq!(ns_label(1 << 21), "2ms");
        assert_eq!(ns_label(1 << 30), "1s");
    }
}
