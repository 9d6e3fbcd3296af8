//! Debian's Prometheus in the deployed guest, under its own unit: it scrapes the daemon
//! every second and evaluates the rules the package installs. The guest saves what its
//! query API answers; the checks here read those answers.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context as _, Result, ensure};
use serde::Deserialize;

use kcmp_trace_common::json::stress::StressReport;

/// Where the packaged rules land, and so where the guest's Prometheus reads them.
pub const RULES: &str = "/usr/share/kcmp-trace/prometheus/kcmp-trace.rules.yml";
/// The same rules in the tree, to count what Prometheus must have loaded.
const RULES_IN_TREE: &str = "contrib/prometheus/kcmp-trace.rules.yml";
const JOB: &str = "kcmp-trace";
/// Scrape and rule intervals. A scrape times out after one interval, and a failed scrape
/// marks every series stale: 1 s is too short for a busy TCG guest.
const INTERVAL: &str = "2s";

/// `/etc/prometheus/prometheus.yml` of the root, scraping the daemon at `target`: Debian's
/// unit reads it at boot.
pub fn config(target: &str) -> String {
    format!(
        "global:
  scrape_interval: {INTERVAL}
  evaluation_interval: {INTERVAL}
rule_files:
  - {RULES}
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ['{target}']
"
    )
}

/// The queries saved before and after each workload, by file name. Each takes the last
/// scraped sample of the last 15 s, so that a scrape that failed since (which marks the
/// series stale) does not hide the one that succeeded; a reboot takes longer than that.
const CALLS: (&str, &str) = (
    "calls",
    "sum by (type, outcome) (last_over_time(kcmp_trace_calls_total{job=\"kcmp-trace\"}[15s]))",
);
const INCOMPLETE: (&str, &str) = (
    "incomplete",
    "sum by (numbers) (last_over_time(kcmp_trace_incomplete_total{job=\"kcmp-trace\"}[15s]))",
);
/// Scrapes of the daemon that failed in the last 10 minutes: said, not held against it.
const FAILED_SCRAPES: (&str, &str) = (
    "failed_scrapes",
    "count_over_time(up{job=\"kcmp-trace\"}[10m]) - sum_over_time(up{job=\"kcmp-trace\"}[10m])",
);
/// A recording rule of the packaged file, evaluated by this Prometheus.
const RATE_RULE: (&str, &str) = ("rate", "instance:kcmp_trace_calls:rate5m");
const FIRING: (&str, &str) = ("firing", "ALERTS{alertstate=\"firing\"}");
/// What Prometheus kept of both boots: each series' highest value in the last hour, summed.
const KEPT: (&str, &str) = (
    "kept",
    "sum(max_over_time(kcmp_trace_calls_total{job=\"kcmp-trace\"}[1h]))",
);

/// Shell functions for the guest scripts: wait for Prometheus, wait for a scrape that
/// began after now, save a query's answer.
pub fn guest_lib() -> String {
    format!(
        r#"PROM=http://127.0.0.1:9090
prom_ready() {{
    n=0
    until curl -fs --max-time 5 -o /dev/null $PROM/-/ready; do
        n=$((n+1))
        if [ $n -ge 120 ]; then
            echo "Prometheus not ready after $n tries"
            systemctl status --no-pager prometheus || true
            return 1
        fi
        sleep 1
    done
}}
prom() {{ curl -fsS --max-time 30 $PROM/api/v1/query --data-urlencode "query=$1"; }}
# Returns once Prometheus holds a successful scrape of the daemon that began after this
# call: whatever finished before is in what it answers from then on. (timestamp() of a
# comparison would be the query's own time: it takes the selector's.)
scraped() {{
    since=$(date +%s.%N)
    n=0
    until prom "timestamp(up{{job=\"{JOB}\"}}) > $since and up{{job=\"{JOB}\"}} == 1" |
        grep -q '"value"'; do
        n=$((n+1))
        if [ $n -ge 120 ]; then
            echo "no scrape of the daemon by Prometheus after $n s"
            return 1
        fi
        sleep 1
    done
}}
# prom_save PREFIX NAME QUERY: the answer in $R/prom/PREFIX.NAME.json.
prom_save() {{ mkdir -p $R/prom; prom "$3" > $R/prom/$1.$2.json; }}
"#
    )
}

fn save(when: &str, (name, query): (&str, &str)) -> String {
    format!("prom_save {when} {name} '{query}'\n")
}

/// Before a workload: what Prometheus holds once it has scraped the idle daemon.
pub fn before_workload() -> String {
    format!("prom_ready\nscraped\n{}", save("before", CALLS))
}

/// After the first boot's crowd: a scrape that saw all of it, then the counts, the rules as
/// Prometheus evaluated them, and what fires.
pub fn after_crowd() -> String {
    let mut script = after_workload();
    // One rule evaluation after that scrape, so the recorded rate includes it.
    script.push_str("sleep 2\n");
    script.push_str(&save("after", RATE_RULE));
    script.push_str(&save("after", FIRING));
    script.push_str("curl -fsS --max-time 30 $PROM/api/v1/rules > $R/prom/rules.json\n");
    script
}

/// After the second boot's workload: the counts, and what Prometheus kept of the first.
pub fn after_reboot() -> String {
    after_workload() + &save("after", KEPT)
}

fn after_workload() -> String {
    format!(
        "scraped\n{}{}{}",
        save("after", CALLS),
        save("after", INCOMPLETE),
        save("after", FAILED_SCRAPES)
    )
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    /// Evaluation time, and the value as Prometheus writes it (a string).
    value: (f64, String),
}

impl Sample {
    fn value(&self) -> Result<f64> {
        self.value
            .1
            .parse()
            .with_context(|| format!("the value {:?}", self.value.1))
    }
}

/// One saved answer of the query API: its samples.
fn answer(dir: &Path, when: &str, (name, query): (&str, &str)) -> Result<Vec<Sample>> {
    let file = dir.join(format!("prom/{when}.{name}.json"));
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let answer: Answer = serde_json::from_str(&text)
        .with_context(|| format!("parsing Prometheus's answer to {query}"))?;
    ensure!(
        answer.status == "success",
        "Prometheus answered {query} with {}",
        answer.status
    );
    Ok(answer.data.result)
}

/// Calls by (type, outcome) in Prometheus at the saved instant.
fn calls(dir: &Path, when: &str) -> Result<BTreeMap<(String, String), f64>> {
    answer(dir, when, CALLS)?
        .iter()
        .map(|s| {
            let label = |k: &str| s.metric.get(k).cloned().unwrap_or_default();
            Ok(((label("type"), label("outcome")), s.value()?))
        })
        .collect()
}

fn sum_where(
    calls: &BTreeMap<(String, String), f64>,
    keep: impl Fn(&(String, String)) -> bool,
) -> u64 {
    // Counters are whole numbers; Prometheus writes them as floats.
    calls
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(_, v)| *v as u64)
        .sum()
}

/// What the workload made, in Prometheus: the difference of the two instants, in all, per
/// kcmp type, and `locked`; and every incompleteness number 0.
pub fn counted_exactly(dir: &Path, stress: &StressReport) -> Result<()> {
    let (calls_made, locked_made) = (stress.calls, stress.reached_comparison);
    let (before, after) = (calls(dir, "before")?, calls(dir, "after")?);
    let delta = |keep: &dyn Fn(&(String, String)) -> bool| {
        sum_where(&after, keep) - sum_where(&before, keep)
    };
    let total = delta(&|_| true);
    let failed = answer(dir, "after", FAILED_SCRAPES)?
        .first()
        .map(Sample::value)
        .transpose()?
        .unwrap_or(0.0);
    eprintln!(
        "vm: Prometheus's query API: {total} calls between the scrapes before and after the \
         workload, which made {calls_made} (failed scrapes in the last 10 minutes: {failed})"
    );
    ensure!(
        calls_made > 0 && total == calls_made,
        "the workload made {calls_made} calls; Prometheus counted {total}"
    );
    for (kcmp_type, &n) in &stress.by_type {
        let counted = delta(&|(t, _)| t == kcmp_type);
        ensure!(
            counted == n,
            "{kcmp_type}: the workload made {n}, Prometheus counted {counted}"
        );
    }
    let locked = delta(&|(_, o)| o == "locked");
    ensure!(
        locked == locked_made,
        "Prometheus counted {locked} calls locked of the {locked_made} that found their tasks"
    );
    let incomplete = answer(dir, "after", INCOMPLETE)?;
    ensure!(
        !incomplete.is_empty(),
        "Prometheus holds no kcmp_trace_incomplete_total"
    );
    for sample in &incomplete {
        ensure!(
            sample.value()? == 0.0,
            "incomplete {:?} is {} in Prometheus",
            sample.metric,
            sample.value.1
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct RulesAnswer {
    data: RuleGroups,
}

#[derive(Deserialize)]
struct RuleGroups {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    file: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    name: String,
    health: String,
    #[serde(rename = "lastError", default)]
    last_error: String,
}

/// The packaged rules loaded from where the package put them, every one evaluated without
/// error; the call rate recorded; no alert firing with the daemon exact and up.
pub fn rules_evaluated(dir: &Path, tree: &Path) -> Result<()> {
    let text = fs::read_to_string(dir.join("prom/rules.json")).context("reading rules.json")?;
    let answer: RulesAnswer = serde_json::from_str(&text).context("parsing rules.json")?;
    let in_tree = fs::read_to_string(tree.join(RULES_IN_TREE))
        .with_context(|| format!("reading {RULES_IN_TREE}"))?;
    let want = in_tree
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- record:") || l.starts_with("- alert:")
        })
        .count();
    let rules: Vec<&Rule> = answer.data.groups.iter().flat_map(|g| &g.rules).collect();
    ensure!(
        answer.data.groups.iter().all(|g| g.file == RULES),
        "rule groups from {:?}, want {RULES}",
        answer
            .data
            .groups
            .iter()
            .map(|g| &g.file)
            .collect::<Vec<_>>()
    );
    ensure!(
        rules.len() == want,
        "Prometheus loaded {} rules, the file has {want}",
        rules.len()
    );
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|r| r.health != "ok")
        .map(|r| format!("{} ({}: {})", r.name, r.health, r.last_error))
        .collect();
    ensure!(
        unhealthy.is_empty(),
        "rules not evaluated cleanly: {}",
        unhealthy.join(", ")
    );
    let rate = answer_of(dir, RATE_RULE)?;
    ensure!(
        rate.iter().any(|s| s.value().is_ok_and(|v| v > 0.0)),
        "{} has no positive sample after the crowd",
        RATE_RULE.1
    );
    let firing: Vec<String> = answer_of(dir, FIRING)?
        .iter()
        .map(|s| s.metric.get("alertname").cloned().unwrap_or_default())
        .collect();
    ensure!(firing.is_empty(), "alerts firing: {}", firing.join(", "));
    eprintln!(
        "vm: Prometheus evaluates the {want} packaged rules from {RULES}, all healthy, none \
         firing"
    );
    Ok(())
}

fn answer_of(dir: &Path, query: (&str, &str)) -> Result<Vec<Sample>> {
    answer(dir, "after", query)
}

/// After the reboot: Prometheus kept the first boot's samples, and its last scrapes hold
/// exactly the second workload's calls: the counters began again from zero.
pub fn sees_the_restart(dir: &Path, stress: &StressReport, first: &StressReport) -> Result<()> {
    let before = sum_where(&calls(dir, "before")?, |_| true);
    ensure!(
        before == 0,
        "Prometheus's first scrape after the reboot holds {before} calls"
    );
    counted_exactly(dir, stress)?;
    let kept = answer(dir, "after", KEPT)?
        .first()
        .map(Sample::value)
        .transpose()?
        .unwrap_or(0.0) as u64;
    ensure!(
        kept >= first.calls,
        "Prometheus kept {kept} calls of the last hour, fewer than the first boot's crowd \
         alone ({})",
        first.calls
    );
    eprintln!(
        "vm: Prometheus across the reboot: the first boot's {} calls kept ({kept} in the \
         last hour), then {} from zero",
        first.calls, stress.calls
    );
    Ok(())
}
