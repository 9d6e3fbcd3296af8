//! The Prometheus side of `contrib/`: promtool and prometheus on PATH, the rule file and the
//! Grafana dashboard, and PromQL picked apart as far as the tests need.

use std::path::{Path, PathBuf};

use super::which;

/// The recording and alerting rules, and their promtool unit tests.
pub const RULES: &str = "prometheus/kcmp-trace.rules.yml";
pub const RULE_TESTS: &str = "prometheus/kcmp-trace.rules.test.yml";
pub const DASHBOARD: &str = "grafana-dashboard.json";

/// A file under `contrib/`.
pub fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(rel)
}

/// A tool of Debian's `prometheus` package; a test that needs one fails without it.
pub fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!(
            "{name} is not on PATH: install Debian's `prometheus` package (cargo xtask setup does)"
        )
    })
}

fn yaml(rel: &str) -> serde_norway::Value {
    let path = contrib(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn dashboard() -> serde_json::Value {
    let path = contrib(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Record,
    Alert,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: Kind,
    pub expr: String,
}

/// Every rule of the rule file, in order.
pub fn rules() -> Vec<Rule> {
    let file = yaml(RULES);
    let groups = file["groups"].as_sequence().expect("groups");
    let mut out = Vec::new();
    for group in groups {
        for rule in group["rules"].as_sequence().expect("a group's rules") {
            let (name, kind) = match (rule["record"].as_str(), rule["alert"].as_str()) {
                (Some(name), None) => (name, Kind::Record),
                (None, Some(name)) => (name, Kind::Alert),
                _ => panic!("a rule that is neither a recording nor an alert: {rule:?}"),
            };
            out.push(Rule {
                name: name.to_owned(),
                kind,
                expr: rule["expr"]
                    .as_str()
                    .expect("a rule's expr")
                    .trim()
                    .to_owned(),
            });
        }
    }
    out
}

/// The unit tests of the rule file: the expressions its `promql_expr_test`s evaluate, and
/// for each alert test its alert's name and whether it expects the alert to fire.
pub fn rule_tests() -> (Vec<String>, Vec<(String, bool)>) {
    let file = yaml(RULE_TESTS);
    let mut exprs = Vec::new();
    let mut alerts = Vec::new();
    for test in file["tests"].as_sequence().expect("tests") {
        for t in test["promql_expr_test"].as_sequence().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("an expr test's expr").to_owned());
        }
        for t in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = t["alertname"].as_str().expect("an alert test's alertname");
            let fires = t["exp_alerts"]
                .as_sequence()
                .is_some_and(|alerts| !alerts.is_empty());
            alerts.push((name.to_owned(), fires));
        }
    }
    (exprs, alerts)
}

/// The names an expression uses: metrics, recorded series, functions and keywords (label
/// values and everything in quotes left out).
pub fn words(expr: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            words.push(&expr[start..i]);
            continue;
        }
        if c.is_ascii_digit() {
            // A number or a duration (1e-6, 5m): not a name.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    words
}

/// The kcmp-trace metrics an expression queries.
pub fn metric_names(expr: &str) -> Vec<String> {
    words(expr)
        .into_iter()
        .filter(|w| w.starts_with("kcmp_trace_"))
        .map(str::to_owned)
        .collect()
}

/// Every query string of a dashboard (panel targets, variable definitions).
pub fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The panel queries of a dashboard: (panel title and target, expression), rows' nested
/// panels included.
pub fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("untitled");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let reference = target["refId"].as_str().unwrap_or("?");
                    out.push((format!("panel {title:?} {reference}"), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's query variables as PromQL: `label_values(METRIC, LABEL)` asks for the
/// values of LABEL among METRIC's series, i.e. `count by (LABEL) (METRIC)`.
pub fn variable_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let list = dashboard["templating"]["list"].as_array();
    list.into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let name = v["name"].as_str().expect("a variable's name");
            let definition = v["definition"]
                .as_str()
                .expect("a query variable's definition");
            let args = definition
                .trim()
                .strip_prefix("label_values(")
                .and_then(|rest| rest.strip_suffix(')'))
                .unwrap_or_else(|| panic!("${name}: only label_values(METRIC, LABEL) is known"));
            let (metric, label) = args
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("${name}: label_values needs a metric: {definition}"));
            (
                format!("variable ${name}"),
                format!("count by ({}) ({})", label.trim(), metric.trim()),
            )
        })
        .collect()
}

/// A panel's expression as Prometheus gets it from Grafana over the last minutes: the
/// interval variables as a minute, `$instance` as every instance (its "All" value).
pub fn substitute(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (var, value) in [
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "5m"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
    ] {
        out = out.replace(var, value);
    }
    out
}

/// An alert's value: its expression without the final comparison with a number
/// (`VALUE > 0`, `up{...} == 0`). None for an expression of another form.
pub fn alert_value(expr: &str) -> Option<&str> {
    let bytes = expr.as_bytes();
    let (mut depth, mut i, mut last) = (0i32, 0, None);
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'=' | b'!' | b'<' | b'>' if depth == 0 => {
                let two = bytes.get(i + 1) == Some(&b'=');
                let len = if two { 2 } else { 1 };
                if matches!(bytes[i], b'=' | b'!') && !two {
                    return None; // `=` or `!` alone is no comparison
                }
                last = Some((i, i + len));
                i += len;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let (op, rhs) = last?;
    expr[rhs..].trim().parse::<f64>().ok()?;
    Some(expr[..op].trim())
}
