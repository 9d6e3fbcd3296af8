//! contrib/prometheus: the recording and alerting rules pass `promtool check rules`, their
//! unit tests (kcmp-trace.rules.test.yml) pass `promtool test rules`, and every rule has one.
//! contrib/grafana-dashboard.json has a panel for every family `/metrics` serves.
//!
//! Needs no privilege, but promtool on PATH (Debian's `prometheus` package, which
//! `cargo xtask setup` installs): without it these tests fail, they never skip. serve.rs
//! loads the same rules into a real Prometheus scraping a real daemon.

use std::process::Command;

mod common;

use common::promql::{self, Kind, RULE_TESTS, RULES, contrib, tool};
use kcmp_trace::serve::families::{FAMILIES, Family};

/// Runs promtool with these arguments in `contrib/prometheus`; fails with its output.
fn promtool(args: &[&str]) -> String {
    let out = Command::new(tool("promtool"))
        .args(args)
        .current_dir(contrib("prometheus"))
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().expect("a file name")
}

#[test]
fn promtool_checks_the_rules() {
    let out = promtool(&["check", "rules", file_name(RULES)]);
    let rules = promql::rules();
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{out}"
    );
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let out = promtool(&["test", "rules", file_name(RULE_TESTS)]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// A rule added without a unit test fails here: each recorded series is evaluated by some
/// expression test, and each alert is tested both firing and silent.
#[test]
fn every_rule_has_a_unit_test() {
    let (exprs, alerts) = promql::rule_tests();
    let mut untested = Vec::new();
    for rule in promql::rules() {
        let tested = match rule.kind {
            Kind::Record => exprs
                .iter()
                .any(|e| promql::words(e).contains(&rule.name.as_str())),
            Kind::Alert => [true, false]
                .iter()
                .all(|&fires| alerts.contains(&(rule.name.clone(), fires))),
        };
        if !tested {
            untested.push(rule.name);
        }
    }
    assert!(
        untested.is_empty(),
        "rules without a unit test in {RULE_TESTS} (an alert needs one test where it fires \
         and one where it stays silent): {untested:?}"
    );
}

/// Each family the daemon serves has a panel: a family added without one fails here.
#[test]
fn the_dashboard_shows_every_family() {
    let mut exprs = Vec::new();
    promql::exprs(&promql::dashboard(), &mut exprs);
    let used: std::collections::BTreeSet<String> =
        exprs.iter().flat_map(|e| promql::metric_names(e)).collect();
    let missing: Vec<String> = FAMILIES
        .iter()
        .map(Family::query_name)
        .filter(|family| {
            !["", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| used.contains(&format!("{family}{suffix}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "families /metrics serves that no panel of contrib/grafana-dashboard.json queries: \
         {missing:?}"
    );
}

/// Alerts compare a value with a threshold, so the host test can evaluate the value alone on
/// a healthy daemon (where the alert itself is rightly silent).
#[test]
fn every_alert_is_a_value_against_a_threshold() {
    let odd: Vec<String> = promql::rules()
        .into_iter()
        .filter(|r| r.kind == Kind::Alert && promql::alert_value(&r.expr).is_none())
        .map(|r| format!("{}: {}", r.name, r.expr))
        .collect();
    assert!(
        odd.is_empty(),
        "alerts not of the form `VALUE <comparison> NUMBER`: {odd:?}"
    );
}

#[test]
fn alert_values_split_at_the_last_comparison() {
    use promql::alert_value;
    assert_eq!(
        alert_value(r#"sum by (x) (increase(m{a!="b",c=~"d>1"}[10m])) > 0"#),
        Some(r#"sum by (x) (increase(m{a!="b",c=~"d>1"}[10m]))"#)
    );
    assert_eq!(
        alert_value(r#"up{job="kcmp-trace"} == 0"#),
        Some(r#"up{job="kcmp-trace"}"#)
    );
    assert_eq!(alert_value("a / b >= 0.5"), Some("a / b"));
    assert_eq!(alert_value("a > bool 0"), None);
    assert_eq!(alert_value("a > b"), None);
    assert_eq!(alert_value("absent(up)"), None);
}
