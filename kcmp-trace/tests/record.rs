//! `record` and `report` on this machine's kernel: a recording read back gives what was
//! printed live, held to the workload's own count and to a `watch` beside it.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{Gated, Proc, require_root, run, schema, total_line, wait_until};
use kcmp_trace_common::json::timeline::{self, TraceFile};

const WORKLOAD: &[&str] = &[
    "-n",
    "20000",
    "--threads",
    "2",
    "--types",
    "file,vm",
    "--bad-fd",
    "300",
    "--dead-pid",
    "200",
];

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kcmp-trace-test-{}-{name}", std::process::id()))
}

/// Calls counted by the last interval reading of a recording being written.
fn last_interval_calls(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last: Option<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("\"scope\":\"interval\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .next_back();
    last.and_then(|r| {
        let calls = r["counters"]["calls"].as_array()?.clone();
        Some(calls.iter().filter_map(serde_json::Value::as_u64).sum())
    })
    .unwrap_or(0)
}

/// Runs WORKLOAD with `record -o path -p PID extra...` and `watch`es (`watch -p PID ...`)
/// attached first; returns the recorder, the watches and the workload's own count once an
/// interval reading covers every call (a debug build drains events slowly).
fn recorded(
    path: &std::path::Path,
    extra: &[&str],
    watches: &[&[&str]],
) -> (Proc, Vec<Proc>, serde_json::Value) {
    let stress = Gated::new(WORKLOAD);
    let pid = stress.pid().to_string();
    let file = path.to_str().expect("utf-8");
    let mut record = Proc::spawn(&[&["record", "-o", file, "-p", &pid], extra].concat());
    let mut others: Vec<Proc> = watches
        .iter()
        .map(|args| Proc::spawn(&[&["watch", "-p", &pid], *args].concat()))
        .collect();
    record.wait_attached();
    others.iter_mut().for_each(Proc::wait_attached);
    let workload = stress.run();
    wait_until(
        "an interval reading of all 20000 calls",
        Duration::from_secs(60),
        || (last_interval_calls(path) >= 20000).then_some(()),
    );
    (record, others, workload)
}

#[test]
#[ignore = "needs root"]
fn a_recording_reports_what_watch_printed() {
    if !require_root() {
        return;
    }
    let path = temp("session.jsonl");
    let file = path.to_str().expect("utf-8");
    let (record, mut watches, workload) = recorded(
        &path,
        &["--events", "--stacks", "--json", "-i", "300ms"],
        &[&["--json", "-i", "300ms"]],
    );
    let (code, recorded_out, err) = record.stop();
    assert_eq!(code, 0, "{err}");
    let (code, watch_out, err) = watches.remove(0).stop();
    assert_eq!(code, 0, "{err}");

    let (code, report_out, err) = run(&["report", file, "--json"]);
    assert_eq!(code, 0, "{err}");
    let mut reported: serde_json::Value = serde_json::from_str(report_out.trim()).expect("JSON");
    schema::assert_recording_valid(&path);
    schema::assert_watch_valid(&recorded_out);
    schema::assert_watch_valid(&watch_out);
    schema::assert_valid("watch-report.json", &reported);
    // The events' fallbacks by writer, which only the recording has: none here (the
    // syscall boundary sees no path).
    let fallbacks = reported
        .as_object_mut()
        .and_then(|r| r.remove("fallbacks_by_writer"))
        .expect("fallbacks by writer");
    assert_eq!(fallbacks["status"], "counted", "{fallbacks}");
    assert_eq!(
        fallbacks["total"],
        serde_json::json!({"retry": 0, "busy": 0})
    );
    // Every other field, floats included, is what `record --json` (watch's loop) printed
    // live.
    assert_eq!(reported, total_line(&recorded_out));

    // The workload's own count, and a second tracer on the same calls, agree.
    assert_eq!(workload["calls"], 20000);
    assert_eq!(reported["calls"], workload["calls"]);
    assert_eq!(reported["by_type"], workload["by_type"]);
    assert_eq!(reported["by_result"], workload["by_result"]);
    assert_eq!(reported["by_result"]["EBADF"], 300);
    assert_eq!(reported["by_result"]["ESRCH"], 200);
    assert_eq!(reported["errors"], 500);
    let watched = total_line(&watch_out);
    for key in ["calls", "errors", "by_type", "by_result", "by_outcome"] {
        assert_eq!(reported[key], watched[key], "{key}");
    }
    assert_eq!(reported["latency_ns"]["count"], 20000);

    // --stacks: every lock wait this plan saw has a stack (syscall tracepoints see none),
    // and the recording folds them.
    let stacks = reported["stacks"].as_array().expect("stacks recorded");
    let stacked: u64 = stacks.iter().filter_map(|r| r["count"].as_u64()).sum();
    assert_eq!(
        stacked,
        reported["lock_wait_ns"]["count"].as_u64().expect("a count")
    );
    let (code, folded, err) = run(&["report", file, "--folded", "count"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(folded.lines().count(), stacks.len(), "{folded}");

    // Every call's event is in the file.
    let text = std::fs::read_to_string(&path).expect("recording");
    let events = text
        .lines()
        .filter(|l| l.starts_with("{\"kind\":\"event\""))
        .count();
    assert_eq!(reported["events_dropped"], 0);
    assert_eq!(events, 20000);

    // The timeline: a slice per call, on one track per thread, that holds together.
    let trace_path = temp("trace.json");
    let trace_file = trace_path.to_str().expect("utf-8 path");
    let (code, _, err) = run(&["report", file, "--trace", trace_file]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("20000 calls, 0 lock waits"), "{err}");
    let trace: TraceFile =
        serde_json::from_str(&std::fs::read_to_string(&trace_path).expect("trace")).expect("json");
    let counts = timeline::check(&trace).expect("the timeline holds together");
    assert_eq!(counts.slices.get("kcmp"), Some(&20000));
    assert_eq!(counts.tracks, 2, "the workload's two threads");
    std::fs::remove_file(&trace_path).expect("cleanup");

    // The text summary names the session and the interval table adds up to the total.
    let (code, summary, err) = run(&["report", file]);
    assert_eq!(code, 0, "{err}");
    assert!(summary.contains("(20000 events kept)"), "{summary}");
    assert!(summary.contains("calls=20000 "), "{summary}");
    let per_interval: u64 = summary
        .lines()
        .skip_while(|l| !l.starts_with("outcome split per interval"))
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    // The intervals add up to the last interval reading's cumulative count.
    let cumulative = last_interval_calls(&path);
    assert_eq!((per_interval, cumulative), (20000, 20000), "{summary}");
    std::fs::remove_file(&path).expect("cleanup");
}

#[test]
#[ignore = "needs root"]
fn a_killed_recording_reads_up_to_its_last_reading() {
    if !require_root() {
        return;
    }
    let path = temp("killed.jsonl");
    let file = path.to_str().expect("utf-8");
    let (record, _, workload) = recorded(&path, &["-i", "200ms"], &[]);
    // No chance to write its total.
    record.signal(libc::SIGKILL);
    let _ = record.finish();

    let (code, out, err) = run(&["report", file, "--json"]);
    assert_eq!(code, 0, "{err}");
    let reported: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(reported["calls"], workload["calls"]);
    assert_eq!(reported["by_result"], workload["by_result"]);
    let (code, text, err) = run(&["report", file]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("; cut short (no total)"), "{text}");
    std::fs::remove_file(&path).expect("cleanup");
}

/// A recording's header as `record` writes it, by hand.
const HEADER: &str = r#"{"format":"kcmp-trace-recording","version":1,"started":"2026-11-26T10:00:00Z","kernel":{"release":"6.12.117","preemption":"voluntary","series":true},"plan":{"mode":"kprobe","strategy":"direct","series":true,"preemption":{"model":"voluntary","dynamic":true,"source":"debugfs sched/preempt"},"why":"","hooks":[],"lock_waits":"contention","lock_waits_why":"","skipped":[],"rejected":[],"accuracy":[]},"interval_s":1.0,"top":5,"events":false}"#;

#[test]
fn bad_recordings_get_one_line_naming_file_and_line_and_exit_2() {
    let foreign = temp("foreign.json");
    std::fs::write(&foreign, "{\"scope\":\"total\",\"calls\":1}\n").expect("write");
    let truncated = temp("truncated.jsonl");
    std::fs::write(
        &truncated,
        format!("{HEADER}\n{{\"kind\":\"reading\",\"scope\":\"base"),
    )
    .expect("write");
    let (f, t) = (
        foreign.to_str().expect("utf-8"),
        truncated.to_str().expect("utf-8"),
    );
    for (args, expected) in [
        (
            vec!["report", f],
            format!("kcmp-trace: {f}:1: not a kcmp-trace recording (no recording header)\n"),
        ),
        (
            vec!["report", t, "--json"],
            format!("kcmp-trace: {t}:2: truncated (the line ends mid-record)\n"),
        ),
        // In a comparison, the bad one of the two is named.
        (
            vec!["report", t, f],
            format!("kcmp-trace: {t}:2: truncated (the line ends mid-record)\n"),
        ),
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(
            (code, err.as_str(), out.as_str()),
            (2, expected.as_str(), "")
        );
    }
    std::fs::remove_file(foreign).expect("cleanup");
    std::fs::remove_file(truncated).expect("cleanup");
}

/// A file that is one endless line is refused at its cap, not read into memory until the
/// allocation fails (which aborted, exit 134).
#[test]
fn an_endless_line_is_refused_at_its_cap() {
    let (code, out, err) = run(&["report", "/dev/zero"]);
    assert_eq!(
        (code, err.as_str(), out.as_str()),
        (
            2,
            "kcmp-trace: /dev/zero:1: a line longer than 64 MiB\n",
            ""
        )
    );
}

/// One reading line by hand: `calls` are (outcome index, KCMP_FILE calls returning 0, their
/// latency's log2 slot), `lock_waits` (slot, count).
fn reading_line(
    scope: &str,
    at_s: f64,
    calls: &[(usize, u64, usize)],
    lock_waits: &[(usize, u64)],
) -> String {
    // Counters' shape: 7 outcomes, 9 types, 13 results, 65 slots, 8 misc.
    let mut by_path = vec![0u64; 7 * 9 * 13];
    let mut latency = vec![0u64; 7 * 65];
    let mut lock_wait = vec![0u64; 65];
    for &(outcome, n, slot) in calls {
        by_path[outcome * 9 * 13] = n;
        latency[outcome * 65 + slot] = n;
    }
    for &(slot, n) in lock_waits {
        lock_wait[slot] = n;
    }
    serde_json::json!({
        "kind": "reading", "scope": scope, "at_s": at_s,
        "counters": {
            "shape": [7, 9, 13, 65, 8], "calls": by_path, "latency": latency,
            "lock_wait": lock_wait, "exec_hold": vec![0u64; 65],
            "latency_sum_ns": vec![0u64; 7], "lock_wait_sum_ns": 0, "exec_hold_sum_ns": 0,
            "misc": vec![0u64; 8],
        },
        "processes": [], "programs": [],
    })
    .to_string()
}

#[test]
fn report_a_b_gives_the_deltas_and_ratios_of_known_recordings() {
    const FAST: usize = 1;
    const RETRY: usize = 2;
    const LOCKED: usize = 4;
    // A: 1000 locked calls in 2 s, in [2048, 4095] ns, each with a lock wait in [1024, 2047].
    let a = temp("a.jsonl");
    let lines = [
        HEADER.to_owned(),
        reading_line("baseline", 0.0, &[], &[]),
        reading_line("interval", 1.0, &[(LOCKED, 400, 12)], &[(11, 400)]),
        reading_line("total", 2.0, &[(LOCKED, 1000, 12)], &[(11, 1000)]),
    ];
    std::fs::write(&a, lines.join("\n") + "\n").expect("write");
    // B: in 1 s, 900 fast calls in [512, 1023] ns and 100 retries in [8192, 16383] that
    // waited in [1024, 2047]; cut short (no total line).
    let b = temp("b.jsonl");
    let lines = [
        HEADER.to_owned(),
        reading_line("baseline", 0.0, &[], &[]),
        reading_line(
            "interval",
            1.0,
            &[(FAST, 900, 10), (RETRY, 100, 14)],
            &[(11, 100)],
        ),
    ];
    std::fs::write(&b, lines.join("\n") + "\n").expect("write");
    let (fa, fb) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));

    let (code, out, err) = run(&["report", fa, fb, "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    schema::assert_lines_valid("recording-header.json", HEADER);
    schema::assert_valid("report-compare.json", &report);
    assert_eq!(report["a"]["complete"], true);
    assert_eq!(report["b"]["complete"], false);
    assert_eq!(report["a"]["total"]["calls"], 1000);
    assert_eq!(
        report["b"]["total"]["by_outcome"],
        serde_json::json!({"fast": 900, "retry": 100})
    );
    let row = |metric: &str| -> Vec<serde_json::Value> {
        let row = report["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["metric"] == metric)
            .unwrap_or_else(|| panic!("no row {metric}: {out}"));
        ["a", "b", "delta", "ratio"]
            .map(|k| row[k].clone())
            .to_vec()
    };
    let n = |v: f64| serde_json::json!(v);
    let none = serde_json::Value::Null;
    assert_eq!(row("calls"), [n(1000.0), n(1000.0), n(0.0), n(1.0)]);
    assert_eq!(row("calls/s"), [n(500.0), n(1000.0), n(500.0), n(2.0)]);
    assert_eq!(
        row("outcome locked share"),
        [n(100.0), n(0.0), n(-100.0), n(0.0)]
    );
    assert_eq!(
        row("outcome fast share"),
        [n(0.0), n(90.0), n(90.0), none.clone()]
    );
    // p50: A's 500th of 1000 in [2048, 4095]; B's 500th, the 500th of 900 in [512, 1023].
    assert_eq!(
        row("latency p50"),
        [n(3071.0), n(795.0), n(795.0 - 3071.0), n(795.0 / 3071.0)]
    );
    // p99: A's 990th in [2048, 4095]; B's 990th, the 90th of 100 in [8192, 16383].
    assert_eq!(
        row("latency p99"),
        [
            n(4074.0),
            n(15563.0),
            n(15563.0 - 4074.0),
            n(15563.0 / 4074.0)
        ]
    );
    assert_eq!(
        row("latency retry max"),
        [none.clone(), n(16383.0), none.clone(), none]
    );
    assert_eq!(row("lock waits"), [n(1000.0), n(100.0), n(-900.0), n(0.1)]);

    // The text table says the same, fixed width, for a cover letter.
    let (code, text, err) = run(&["report", fa, fb]);
    assert_eq!(code, 0, "{err}");
    let line = |metric: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{metric:<30} ")))
            .unwrap_or_else(|| panic!("no {metric} in {text}"))
            .split_whitespace()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("calls/s"), ["2.00x", "+500", "1000", "500"]);
    assert_eq!(line("latency p50"), ["0.26x", "-2276", "795", "3071"]);
    assert_eq!(
        line("outcome fast share"),
        ["-", "+90.00", "90.00%", "0.00%"]
    );
    std::fs::remove_file(a).expect("cleanup");
    std::fs::remove_file(b).expect("cleanup");
}
