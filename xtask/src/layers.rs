//! The layering check of the lint stage: docs/architecture.md's picture is the rule. Every
//! module of the kcmp-trace crate and of xtask must be in it, may import (`crate::...`) only
//! modules on its own layer or below, and no modules may import each other in a cycle.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, bail};

use crate::workspace::workspace_root;

/// A crate's modules by layer number (1 is the bottom), as the picture draws them.
type Layers = BTreeMap<String, u32>;

/// Checks both crates; the error lists every violation.
pub fn check() -> anyhow::Result<()> {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .context("reading docs/architecture.md")?;
    let mut problems = Vec::new();
    for (krate, src) in [("kcmp-trace", "kcmp-trace/src"), ("xtask", "xtask/src")] {
        let layers = picture(&doc, krate)?;
        let imports = imports_of(&root.join(src))?;
        problems.extend(violations(krate, &layers, &imports));
    }
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// The layers of `krate` in the picture: the box under the line that starts with its name,
/// whose rows read `│ N  a · b · c::{d, e}` and may go on in rows `│    f · g`.
fn picture(doc: &str, krate: &str) -> anyhow::Result<Layers> {
    let mut lines = doc
        .lines()
        .skip_while(|l| *l != "```text")
        .take_while(|l| *l != "```")
        .skip_while(|l| !l.starts_with(&format!("{krate} ")) && *l != krate)
        .skip(1);
    // A layer's rows joined first: a `c::{...}` group may go on in the next row.
    let mut rows: Vec<(u32, String)> = Vec::new();
    for line in lines.by_ref() {
        let Some(row) = line.trim_start().strip_prefix('│') else {
            if line.trim_start().starts_with('└') {
                break;
            }
            continue;
        };
        let row = row.trim_end().trim_end_matches('│').trim();
        match row.split_once(char::is_whitespace) {
            Some((n, rest)) if n.parse::<u32>().is_ok() => {
                rows.push((n.parse()?, rest.to_owned()));
            }
            _ => rows
                .last_mut()
                .with_context(|| format!("a row before any layer number: {line}"))?
                .1
                .push_str(&format!(" {row}")),
        }
    }
    let mut layers = Layers::new();
    for (n, items) in rows {
        for module in modules_in(&items) {
            layers.insert(module, n);
        }
    }
    if layers.is_empty() {
        bail!("docs/architecture.md draws no layers for {krate}");
    }
    Ok(layers)
}

/// `a · b · c::{d, e}` (and words separated by spaces) as a, b, c::d, c::e; a remark in
/// parentheses is not a module.
fn modules_in(items: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = items;
    while let Some(start) = rest.find(|c: char| c.is_ascii_lowercase() || c == '(') {
        rest = &rest[start..];
        if rest.starts_with('(') {
            rest = rest.find(')').map_or("", |close| &rest[close + 1..]);
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        if let Some(parent) = word.strip_suffix("::")
            && rest.starts_with('{')
        {
            let close = rest.find('}').unwrap_or(rest.len());
            out.extend(
                rest[1..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|child| format!("{parent}::{child}")),
            );
            rest = &rest[(close + 1).min(rest.len())..];
        } else {
            out.push(word.to_owned());
        }
    }
    out
}

/// Each module of a crate's source tree (`a/b.rs` and `a/b/mod.rs` are `a::b`; lib.rs is
/// the crate root and left out) and the `crate::` paths it names.
fn imports_of(src: &Path) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src)?.with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            out.insert(parts.join("::"), crate_paths(&text));
        }
    }
    Ok(out)
}

/// Every `crate::` path in `text`, with `use crate::{a::b, c}` groups expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        // `$crate::` in macros is the other crate's.
        if text[..at].ends_with('$') {
            continue;
        }
        expand("", &text[at + "crate::".len()..], &mut out);
    }
    out
}

/// Expands the path or group at the start of `rest` under `prefix`.
fn expand(prefix: &str, rest: &str, out: &mut Vec<String>) {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(prefix, &group[start..i], out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix, &group[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let path = &rest[..end];
    if let Some(parent) = path.strip_suffix("::")
        && rest[end..].starts_with('{')
    {
        let joined = if prefix.is_empty() {
            parent.to_owned()
        } else {
            format!("{prefix}::{parent}")
        };
        expand(&joined, &rest[end..], out);
    } else if path == "self" {
        if !prefix.is_empty() {
            out.push(prefix.to_owned());
        }
    } else if !path.is_empty() {
        out.push(if prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{prefix}::{path}")
        });
    }
}

/// The listed module a path names: its longest listed prefix.
fn module_of<'a>(layers: &'a Layers, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find_map(|p| layers.get_key_value(&p).map(|(k, _)| k.as_str()))
}

fn violations(
    krate: &str,
    layers: &Layers,
    imports: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, paths) in imports {
        let Some(&layer) = layers.get(module) else {
            problems.push(format!(
                "{krate}: module {module} is not in docs/architecture.md's picture"
            ));
            continue;
        };
        for path in paths {
            // Items of the crate root (lib.rs, main.rs) or of no listed module: not a module.
            let Some(used) = module_of(layers, path) else {
                continue;
            };
            // A module's own items, and a parent's of its children, are within it.
            if used == module || used.starts_with(&format!("{module}::")) {
                continue;
            }
            if module.starts_with(&format!("{used}::")) {
                continue;
            }
            if layers[used] > layer {
                problems.push(format!(
                    "{krate}: {module} (layer {layer}) imports {used} (layer {}) above it",
                    layers[used]
                ));
            }
            edges.entry(module.as_str()).or_default().insert(used);
        }
    }
    problems.extend(
        cycles(&edges)
            .into_iter()
            .map(|cycle| format!("{krate}: modules import each other: {}", cycle.join(" -> "))),
    );
    problems
}

/// One cycle through each strongly connected group of modules, found by depth-first search.
fn cycles<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        found: &mut Vec<Vec<&'a str>>,
    ) {
        if let Some(at) = stack.iter().position(|&n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node);
            found.push(cycle);
            return;
        }
        if !done.insert(node) {
            return;
        }
        stack.push(node);
        for &next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for &node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
```text
demo (userspace)
┌──────────────┐
│ 2  cmd (the commands) · serve::{http, state}   │
│    report                       │
├──────────────┤
│ 1  probe · error                │
└──────────────┘
```
";

    #[test]
    fn the_picture_reads_as_layers() {
        let layers = picture(DOC, "demo").expect("layers");
        let want: Layers = [
            ("cmd", 2),
            ("serve::http", 2),
            ("serve::state", 2),
            ("report", 2),
            ("probe", 1),
            ("error", 1),
        ]
        .into_iter()
        .map(|(m, n)| (m.to_owned(), n))
        .collect();
        assert_eq!(layers, want);
    }

    #[test]
    fn use_groups_expand_to_paths() {
        let text = "use crate::{a::{b, c::D}, e, f::{self, G}};\nlet x = crate::h::i();\n\
                    macro_rules! m { () => { $crate::j::k } }";
        assert_eq!(
            crate_paths(text),
            ["a::b", "a::c::D", "e", "f", "f::G", "h::i"]
        );
    }

    #[test]
    fn an_upward_import_and_a_cycle_are_found() {
        let layers: Layers = [("top", 2), ("low", 1), ("peer", 1)]
            .into_iter()
            .map(|(m, n)| (m.to_owned(), n))
            .collect();
        let imports: BTreeMap<String, Vec<String>> = [
            ("top", vec!["low::X"]),
            ("low", vec!["top::Y", "peer::Z"]),
            ("peer", vec!["low::W"]),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.into_iter().map(str::to_owned).collect()))
        .collect();
        let found = violations("demo", &layers, &imports);
        assert!(
            found.contains(&"demo: low (layer 1) imports top (layer 2) above it".to_owned()),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("import each other")),
            "{found:?}"
        );
    }
}
