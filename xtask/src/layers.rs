//! The layering check of the lint stage: docs/architecture.md's picture is the rule. Every
//! module of the kcmp-trace crate and of xtask must be in it, may use only modules on its
//! own layer or below, and no modules may use each other in a cycle. A module's uses are
//! read from its syntax: every path into the crate it names, however it is written.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, bail};
use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::{
    Item, ItemMod, ItemUse, LitStr, Macro, MetaList, UseTree, Visibility,
    visit::{self, Visit},
};

use crate::workspace::workspace_root;

/// A crate's modules by layer number (1 is the bottom), as the picture draws them.
type Layers = BTreeMap<String, u32>;

/// Checks both crates; the error lists every violation.
pub fn check() -> anyhow::Result<()> {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .context("reading docs/architecture.md")?;
    let mut problems = Vec::new();
    for (krate, src, aliases) in [
        ("kcmp-trace", "kcmp-trace/src", &["kcmp_trace"][..]),
        ("xtask", "xtask/src", &[]),
    ] {
        let layers = picture(&doc, krate)?;
        let imports = imports_of(&root.join(src), aliases)?;
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
/// the crate root and left out) and the paths into the crate it names, from the crate root.
/// `aliases` are other names of the crate root: the library's name, which its binary uses.
fn imports_of(src: &Path, aliases: &[&str]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
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
            // main.rs is a crate root too: its `self::` and `mod`s are the root's.
            let scope = if parts == ["main"] {
                &[][..]
            } else {
                &parts[..]
            };
            let text = std::fs::read_to_string(&path)?;
            let paths = crate_paths(scope, aliases, &text)
                .with_context(|| format!("parsing {}", path.display()))?;
            out.insert(parts.join("::"), paths);
        }
    }
    Ok(out)
}

/// Every path into the crate that the source of module `scope` names, from the crate root:
/// `use` trees (groups, globs, renames), paths in code and types, and `crate::`-like paths
/// inside macro calls; `crate::`, `self::`, `super::`, `aliases` and names bound by `use`
/// or `mod` resolve. Other crates' paths are left out.
fn crate_paths(scope: &[String], aliases: &[&str], text: &str) -> syn::Result<Vec<String>> {
    let file = syn::parse_file(text)?;
    let mut reader = Paths {
        aliases,
        scopes: vec![Scope::new(scope.to_vec(), &file.items, aliases)],
        found: Vec::new(),
    };
    reader.visit_file(&file);
    Ok(reader.found)
}

/// A module's path from the crate root and the names bound in it to paths into the crate.
struct Scope {
    path: Vec<String>,
    names: BTreeMap<String, Vec<String>>,
}

impl Scope {
    /// The scope of a module with these items: its `mod`s, then its `use`s (a `use` may
    /// name a `mod` or an earlier `use`).
    fn new(path: Vec<String>, items: &[Item], aliases: &[&str]) -> Scope {
        let mut scope = Scope {
            path,
            names: BTreeMap::new(),
        };
        // The module's own `use`s, in functions too, but not its inline modules'.
        let mut uses = Uses(Vec::new());
        for item in items {
            match item {
                Item::Mod(m) => {
                    let child = [scope.path.clone(), vec![m.ident.to_string()]].concat();
                    scope.names.insert(m.ident.to_string(), child);
                }
                other => uses.visit_item(other),
            }
        }
        for item in uses.0 {
            if item.leading_colon.is_some() {
                continue;
            }
            let mut bound = Vec::new();
            use_tree(&item.tree, &mut Vec::new(), &mut |path, name| {
                if let (Some(name), Some(full)) = (name, scope.resolve(path, aliases)) {
                    bound.push((name, full));
                }
            });
            scope.names.extend(bound);
        }
        scope
    }

    /// `segments` from the crate root, if they lead into the crate.
    fn resolve(&self, segments: &[String], aliases: &[&str]) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.path.clone(),
            "super" => self.path[..self.path.len().checked_sub(1)?].to_vec(),
            name if aliases.contains(&name) => Vec::new(),
            name => self.names.get(name)?.clone(),
        };
        let mut rest = rest;
        while let Some(("super", more)) = rest.split_first().map(|(s, m)| (s.as_str(), m)) {
            base.pop()?;
            rest = more;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }
}

/// Collects `use` items, not descending into inline modules.
struct Uses<'ast>(Vec<&'ast ItemUse>);

impl<'ast> Visit<'ast> for Uses<'ast> {
    fn visit_item_use(&mut self, item: &'ast ItemUse) {
        self.0.push(item);
    }
    fn visit_item_mod(&mut self, _: &'ast ItemMod) {}
}

/// Calls `each` with every path a use tree imports (a glob: its module) and the name it
/// binds there (none for a glob).
fn use_tree(
    tree: &UseTree,
    prefix: &mut Vec<String>,
    each: &mut impl FnMut(&[String], Option<String>),
) {
    match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_tree(&p.tree, prefix, each);
            prefix.pop();
        }
        UseTree::Name(n) if n.ident == "self" => {
            let name = prefix.last().cloned();
            each(prefix, name);
        }
        UseTree::Name(n) => {
            prefix.push(n.ident.to_string());
            each(prefix, Some(n.ident.to_string()));
            prefix.pop();
        }
        UseTree::Rename(r) => {
            let pushed = r.ident != "self";
            if pushed {
                prefix.push(r.ident.to_string());
            }
            each(prefix, Some(r.rename.to_string()));
            if pushed {
                prefix.pop();
            }
        }
        UseTree::Glob(_) => each(prefix, None),
        UseTree::Group(g) => g.items.iter().for_each(|t| use_tree(t, prefix, each)),
    }
}

/// Walks a file, recording each path into the crate that it names.
struct Paths<'a> {
    aliases: &'a [&'a str],
    /// The file's module, then each inline module it is inside.
    scopes: Vec<Scope>,
    found: Vec<String>,
}

impl Paths<'_> {
    fn record(&mut self, segments: &[String]) {
        let scope = self.scopes.last().expect("the file's scope");
        if let Some(full) = scope.resolve(segments, self.aliases)
            && !full.is_empty()
        {
            self.found.push(full.join("::"));
        }
    }

    /// Macro and attribute arguments are tokens, not syntax: `a::b` runs in them (not
    /// `$crate::`, the calling crate's), and with `quoted` a string that is a whole path
    /// (`#[serde(with = "crate::a")]`).
    fn scan(&mut self, tokens: TokenStream, quoted: bool) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let punct = |at: usize, c: char| matches!(tokens.get(at), Some(TokenTree::Punct(p)) if p.as_char() == c);
        let colons = |at: usize| {
            matches!(tokens.get(at), Some(TokenTree::Punct(p)) if p.spacing() == Spacing::Joint)
                && punct(at, ':')
                && punct(at + 1, ':')
        };
        // A path starts at a name that follows neither `::` nor `$`.
        let starts = |at: usize| match at {
            0 => true,
            1 => !punct(0, '$'),
            _ => !punct(at - 1, '$') && !colons(at - 2),
        };
        let mut at = 0;
        while at < tokens.len() {
            match &tokens[at] {
                TokenTree::Group(group) => self.scan(group.stream(), quoted),
                TokenTree::Literal(literal) if quoted => {
                    let path = syn::parse_str::<LitStr>(&literal.to_string())
                        .and_then(|s| syn::parse_str::<syn::Path>(&s.value()));
                    if let Ok(path) = path {
                        self.visit_path(&path);
                    }
                }
                TokenTree::Ident(first) if starts(at) => {
                    let mut segments = vec![first.to_string()];
                    while colons(at + 1)
                        && let Some(TokenTree::Ident(next)) = tokens.get(at + 3)
                    {
                        segments.push(next.to_string());
                        at += 3;
                    }
                    if segments.len() > 1 {
                        self.record(&segments);
                    }
                }
                _ => {}
            }
            at += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item_use(&mut self, item: &'ast ItemUse) {
        if item.leading_colon.is_some() {
            return;
        }
        let mut paths = Vec::new();
        use_tree(&item.tree, &mut Vec::new(), &mut |path, _| {
            paths.push(path.to_vec())
        });
        paths.iter().for_each(|p| self.record(p));
    }

    fn visit_item_mod(&mut self, item: &'ast ItemMod) {
        if let Some((_, items)) = &item.content {
            let parent = &self.scopes.last().expect("the file's scope").path;
            let path = [parent.clone(), vec![item.ident.to_string()]].concat();
            self.scopes.push(Scope::new(path, items, self.aliases));
            items.iter().for_each(|i| self.visit_item(i));
            self.scopes.pop();
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.record(&segments);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.visit_path(&mac.path);
        self.scan(mac.tokens.clone(), false);
    }

    fn visit_meta_list(&mut self, list: &'ast MetaList) {
        self.visit_path(&list.path);
        self.scan(list.tokens.clone(), true);
    }

    /// `pub(in crate::a)` says who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast Visibility) {}
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

    /// The paths `text` names as module `module` of a crate named `demo`.
    fn paths(module: &str, text: &str) -> Vec<String> {
        let scope: Vec<String> = module.split("::").map(str::to_owned).collect();
        crate_paths(&scope, &["demo"], text).expect("Rust")
    }

    fn layers(of: &[(&str, u32)]) -> Layers {
        of.iter().map(|&(m, n)| (m.to_owned(), n)).collect()
    }

    #[test]
    fn use_groups_expand_to_paths() {
        let text = "use crate::{a::{b, c::D}, e, f::{self, G}};\nfn x() { crate::h::i(); }\n\
                    macro_rules! m { () => { $crate::j::k } }";
        assert_eq!(
            paths("top", text),
            ["a::b", "a::c::D", "e", "f", "f::G", "h::i"]
        );
    }

    /// What reading `crate::` as text missed: `super::` and `self::`, renames, paths through
    /// a name a `use` or `mod` bound, paths in types and macro arguments, the library's own
    /// name, and `super::` inside an inline module.
    #[test]
    fn every_kind_of_path_resolves_from_the_root() {
        let text = r#"
            use super::{state::State, super::top as up};
            use self::inner::Thing;
            use super::*;
            use std::collections::BTreeMap;
            mod inner;
            fn f(s: crate::a::S) -> BTreeMap<u8, super::peer::P> {
                up::run();
                inner::go();
                format!("{}", super::super::low::name());
                demo::lib_path::x();
                let _ = ::std::mem::take(&mut 0);
            }
            #[derive(clap::Args)]
            struct A {
                #[arg(value_parser = crate::parse::reader)]
                #[serde(with = "crate::wire::ts")]
                r: u8,
            }
            mod tests {
                use super::*;
                use super::super::peer;
                fn t() { peer::check(); }
            }
        "#;
        assert_eq!(
            paths("serve::http", text),
            [
                "serve::state::State",
                "top",
                "serve::http::inner::Thing",
                "serve",
                "a::S",
                "serve::peer::P",
                "top::run",
                "serve::http::inner::go",
                "low::name",
                "lib_path::x",
                "parse::reader",
                "wire::ts",
                "serve::http",
                "serve::peer",
                "serve::peer::check",
            ]
        );
    }

    #[test]
    fn a_super_import_that_breaks_a_layer_is_found() {
        let layers = layers(&[
            ("low", 1),
            ("low::child", 1),
            ("low::sibling", 1),
            ("top", 2),
        ]);
        let imports: BTreeMap<String, Vec<String>> = [
            ("low::child", "use super::{sibling::S, super::top::Up};"),
            ("low::sibling", "fn f() { super::child::g(); }"),
            ("top", "use crate::low::sibling::S;"),
        ]
        .into_iter()
        .map(|(m, text)| (m.to_owned(), paths(m, text)))
        .collect();
        let found = violations("demo", &layers, &imports);
        assert_eq!(
            found,
            [
                "demo: low::child (layer 1) imports top (layer 2) above it",
                "demo: modules import each other: low::child -> low::sibling -> low::child",
            ],
        );
    }

    #[test]
    fn an_upward_import_and_a_cycle_are_found() {
        let layers = layers(&[("top", 2), ("low", 1), ("peer", 1)]);
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
