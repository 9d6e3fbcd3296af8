//! Flame graphs of exec_update_lock's waits by kernel stack (`--stacks`), by wait time and
//! by count, drawn by inferno from the folded stacks `report --folded` prints.

use std::{fs::File, io::BufWriter, path::Path};

use anyhow::Context as _;
use inferno::flamegraph::{self, Options, color::Palette};
use kcmp_trace_common::json::stacks::{FoldBy, StackRow, folded};

/// One flame graph written: its file (in the page's directory) and what it shows.
pub struct FlameGraph {
    pub file: String,
    pub heading: String,
}

/// How to read the flame graphs, for the page.
pub const HOW_TO_READ: &str = "Each exec_update_lock wait by the kernel stack it waited \
    from: the root frame is the waiter and its call's outcome (kcmp:busy, proc_wchan:locked, \
    other), each frame above it calls the one above. A frame's width is its share of the \
    wait time (or of the waits). [uncontended] holds the waits no hook saw begin: taken \
    without contention.";

/// Writes the flame graphs of `rows` (a recording's total) into `dir`, their files named
/// after `label` (A, B); none when no wait has a stack. `missing`: the waits and sections
/// the kernel's stack map had no room for (`incomplete.stacks`), said in each heading.
pub fn write(
    dir: &Path,
    label: &str,
    rows: &[StackRow],
    missing: u64,
) -> anyhow::Result<Vec<FlameGraph>> {
    let mut written = Vec::new();
    for (by, what, unit) in [
        (FoldBy::Time, "time", "ns"),
        (FoldBy::Count, "count", "waits"),
    ] {
        let lines = folded(rows, by, false);
        if lines.is_empty() {
            continue;
        }
        let file = format!("stacks-{}-by-{what}.svg", label.to_lowercase());
        let mut heading = format!("{label}: exec_update_lock waits by stack, by wait {what}");
        if missing > 0 {
            heading += &format!(
                " ({missing} waits and write sections missing: the stack counts' map was full)"
            );
        }
        let mut options = Options::default();
        options.title = heading.clone();
        options.count_name = unit.to_owned();
        options.colors = Palette::Basic(flamegraph::color::BasicPalette::Aqua);
        // The same function gets the same color in every graph.
        options.hash = true;
        let path = dir.join(&file);
        let out = BufWriter::new(
            File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        flamegraph::from_lines(&mut options, lines.lines(), out)
            .with_context(|| format!("drawing {}", path.display()))?;
        written.push(FlameGraph { file, heading });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_each_wait_stack_as_a_frame_of_the_svg() {
        let dir = std::env::temp_dir().join(format!("kcmp-trace-flame-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let row = |who: &str, frames: &[&str], count, time_ns| StackRow {
            who: who.into(),
            outcome: (who == "kcmp").then(|| "busy".into()),
            frames: frames.iter().map(|f| f.to_string()).collect(),
            count,
            time_ns,
            holder: None,
        };
        let rows = [
            row("kcmp", &["__x64_sys_kcmp", "down_read_killable"], 3, 3000),
            row("other", &["proc_pid_environ", "mm_access"], 1, 1000),
            row("exec", &["begin_new_exec"], 5, 9000),
        ];
        let graphs = write(&dir, "A", &rows, 0).expect("drawn");
        assert_eq!(
            graphs.iter().map(|g| g.file.as_str()).collect::<Vec<_>>(),
            ["stacks-a-by-time.svg", "stacks-a-by-count.svg"]
        );
        let svg = std::fs::read_to_string(dir.join(&graphs[1].file)).expect("written");
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(&svg, options).expect("an SVG");
        let titles: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("title"))
            .filter_map(|n| n.text())
            .collect();
        for frame in [
            "kcmp:busy (3 waits",
            "mm_access (1 waits",
            "down_read_killable",
        ] {
            assert!(
                titles.iter().any(|t| t.starts_with(frame)),
                "{frame} missing from {titles:?}"
            );
        }
        // Writers hold the lock; they are not waits.
        assert!(!titles.iter().any(|t| t.contains("begin_new_exec")));
        assert!(
            write(&dir, "B", &[], 0)
                .expect("nothing to draw")
                .is_empty()
        );
        // What the kernel could not count is said where the graph is read.
        let short = write(&dir, "C", &rows, 7).expect("drawn");
        assert!(
            short[0]
                .heading
                .ends_with("(7 waits and write sections missing: the stack counts' map was full)")
        );
        let svg = std::fs::read_to_string(dir.join(&short[0].file)).expect("written");
        assert!(svg.contains("7 waits and write sections missing"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
