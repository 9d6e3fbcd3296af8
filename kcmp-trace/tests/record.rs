//! `record` and `report` on this machine's kernel: a recording read back gives what was
//! printed live, held to the workload's own count and to a `watch` beside it.

mod common;

use std::path::PathBuf;

use common::{Gated, Proc, require_root, run, total_line};

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

#[test]
fn a_recording_reports_what_watch_printed() {
    if !require_root() {
        return;
    }
    let path = temp("session.jsonl");
    let file = path.to_str().expect("utf-8");
    let stress = Gated::new(WORKLOAD);
    let pid = stress.pid().to_string();
    let mut record = Proc::spawn(&[
        "record", "-o", file, "--events", "--json", "-p", &pid, "-i", "300ms",
    ]);
    let mut watch = Proc::spawn(&["watch", "--json", "-p", &pid, "-i", "300ms"]);
    record.wait_attached();
    watch.wait_attached();
    let workload = stress.run();
    // Until an interval reading covers every call (a debug build drains events slowly).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while last_interval_calls(&path) < 20000 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, recorded_out, err) = record.stop();
    assert_eq!(code, 0, "{err}");
    let (code, watch_out, err) = watch.stop();
    assert_eq!(code, 0, "{err}");

    let (code, report_out, err) = run(&["report", file, "--json"]);
    assert_eq!(code, 0, "{err}");
    let reported: serde_json::Value = serde_json::from_str(report_out.trim()).expect("JSON");
    // Every field, floats included, is what `record --json` (watch's loop) printed live.
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

    // Every call's event is in the file.
    let text = std::fs::read_to_string(&path).expect("recording");
    let events = text
        .lines()
        .filter(|l| l.starts_with("{\"kind\":\"event\""))
        .count();
    assert_eq!(reported["events_dropped"], 0);
    assert_eq!(events, 20000);

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

/// A recording's header as `record` writes it, by hand.
const HEADER: &str = r#"{"format":"kcmp-trace-recording","version":1,"started":"2026-11-26T10:00:00Z","kernel":{"release":"6.12.117","preemption":"voluntary","series":true},"plan":{"mode":"kprobe","strategy":"direct"},"interval_s":1.0,"top":5}"#;

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
