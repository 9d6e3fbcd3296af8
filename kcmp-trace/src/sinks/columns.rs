//! Aligned text columns, as interval tables are printed: a header, then one line per row,
//! each cell padded to its column's width, trailing blanks trimmed.

/// Which side a column's cells hug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table being written: its columns (title, width, alignment) and the lines so far.
pub struct Columns {
    indent: &'static str,
    columns: Vec<(&'static str, usize, Align)>,
    lines: Vec<String>,
}

impl Columns {
    /// `columns`: (title, width, alignment); a cell wider than its column pushes the rest
    /// of its line right rather than being cut.
    pub fn new(columns: &[(&'static str, usize, Align)]) -> Columns {
        let mut table = Columns {
            indent: "",
            columns: columns.to_vec(),
            lines: Vec::new(),
        };
        let titles: Vec<String> = columns.iter().map(|(t, _, _)| t.to_string()).collect();
        table.lines.push(table.line(&titles));
        table
    }

    /// Every line, the header's too, starts with `indent`.
    pub fn indented(mut self, indent: &'static str) -> Columns {
        self.indent = indent;
        let titles: Vec<String> = self.columns.iter().map(|(t, _, _)| t.to_string()).collect();
        self.lines[0] = self.line(&titles);
        self
    }

    /// One row: a cell per column (missing cells are blank).
    pub fn row(&mut self, cells: &[String]) {
        let line = self.line(cells);
        self.lines.push(line);
    }

    fn line(&self, cells: &[String]) -> String {
        let mut line = String::from(self.indent);
        for (i, (_, width, align)) in self.columns.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            let cell = cells.get(i).map_or("", String::as_str);
            match align {
                Align::Left => line.push_str(&format!("{cell:<width$}")),
                Align::Right => line.push_str(&format!("{cell:>width$}")),
            }
        }
        line.truncate(line.trim_end().len());
        line
    }

    /// The header and the rows, a newline after each.
    pub fn render(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_align_to_their_columns_and_lines_end_without_blanks() {
        let mut t =
            Columns::new(&[("loop", 6, Align::Left), ("ns", 5, Align::Right)]).indented("  ");
        t.row(&["getpid".into(), "1.5".into()]);
        t.row(&["exec".into()]);
        t.row(&["process_vm_readv".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "  loop      ns\n  getpid   1.5\n  exec\n  process_vm_readv    12\n"
        );
    }
}
