//! `cargo xtask bench`'s streaming stage, with the release binary as users run it: the
//! highest kcmp rate two stress threads reach with every call streamed (through `events
//! --json` into a pipe, and through the daemon's `/events`), what a small ring drops at
//! that rate, and how long one call on an idle system takes to come out.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use kcmp_trace_common::json::stress::StressReport;
use serde::Serialize;

use crate::{
    harness::{Gated, Proc},
    output,
};

/// One workload streamed through one consumer.
#[derive(Debug, Serialize)]
pub struct StreamRun {
    pub consumer: String,
    /// Ring size and the reader's nice value.
    pub setup: String,
    pub calls: u64,
    pub calls_per_s: f64,
    pub delivered: u64,
    pub dropped: u64,
    pub drop_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct StreamReport {
    pub runs: Vec<StreamRun>,
    /// ms from starting a one-call workload on an idle system to its event line.
    pub lone_event_ms_p50: f64,
    pub lone_event_ms_max: f64,
}

fn stress_report(stress: Gated) -> anyhow::Result<StressReport> {
    output::parse(&stress.report()?, "stress's report")
}

/// Counts newlines from a reader on a thread.
fn count_lines(mut from: impl std::io::Read + Send + 'static) -> Arc<AtomicU64> {
    let lines = Arc::new(AtomicU64::new(0));
    let counted = lines.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count();
            counted.fetch_add(newlines as u64, Ordering::Relaxed);
        }
    });
    lines
}

const WORKLOAD: &[&str] = &["--duration", "5s", "--threads", "2", "--types", "vm"];

fn run_of(
    consumer: &str,
    setup: &str,
    stress: &StressReport,
    delivered: u64,
    dropped: u64,
) -> StreamRun {
    let calls = stress.calls;
    StreamRun {
        consumer: consumer.to_owned(),
        setup: setup.to_owned(),
        calls,
        calls_per_s: stress.calls_per_s,
        delivered,
        dropped,
        drop_pct: if calls == 0 {
            0.0
        } else {
            dropped as f64 * 100.0 / calls as f64
        },
    }
}

/// `events --json -p STRESS | (count lines)`.
fn through_events(bin: &Path, gate: &Path, ring: &str) -> anyhow::Result<StreamRun> {
    let stress = Gated::stress(bin, gate, WORKLOAD)?;
    let mut events = Proc::spawn(
        Command::new(bin)
            .args(["events", "--json", "--ring-size", ring, "-p"])
            .arg(stress.id().to_string())
            .stdout(Stdio::piped()),
    )?;
    events.wait_attached()?;
    let lines = count_lines(events.take_stdout()?);
    stress.open()?;
    let report = stress_report(stress)?;
    let summary = output::events_summary(&events.interrupt()?, "events' stderr")?;
    let (delivered, dropped) = (summary.events_delivered, summary.events_dropped);
    // Every delivered event reached the pipe.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines.load(Ordering::Relaxed) < delivered && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    ensure!(
        lines.load(Ordering::Relaxed) == delivered,
        "{} lines read, {delivered} delivered",
        lines.load(Ordering::Relaxed)
    );
    Ok(run_of(
        "events --json | pipe",
        &format!("{ring}, nice -10 (default)"),
        &report,
        delivered,
        dropped,
    ))
}

/// `serve -p STRESS` with one `/events` reader, and `options`.
fn through_daemon(
    bin: &Path,
    gate: &Path,
    port: u16,
    (setup, options): (&str, &[&str]),
) -> anyhow::Result<StreamRun> {
    let stress = Gated::stress(bin, gate, WORKLOAD)?;
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Proc::spawn(
        Command::new(bin)
            .args(["serve", "--listen", &listen, "--tcp-per-call-data"])
            .args(options)
            .arg("-p")
            .arg(stress.id().to_string())
            .stdout(Stdio::null()),
    )?;
    serve.wait_attached()?;
    let mut stream = TcpStream::connect(&listen).context("connecting to /events")?;
    // HTTP/1.0: the body runs until the daemon closes it.
    write!(stream, "GET /events HTTP/1.0\r\n\r\n")?;
    let (events, drops) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (counted, dropped_seen) = (events.clone(), drops.clone());
    let reader = thread::spawn(move || -> anyhow::Result<()> {
        let mut body = false;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if !body {
                body = line.is_empty();
            } else if let Some(notice) = output::drop_notice(&line)? {
                dropped_seen.fetch_add(notice.dropped, Ordering::Relaxed);
            } else {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    });
    // The stream is counted as a client before the workload starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&listen, "kcmp_trace_event_clients")? != Some(1.0) {
        ensure!(
            Instant::now() < deadline,
            "the /events reader never connected"
        );
        thread::sleep(Duration::from_millis(20));
    }
    stress.open()?;
    let report = stress_report(stress)?;
    let calls = report.calls;
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.load(Ordering::Relaxed) + drops.load(Ordering::Relaxed) < calls
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
    serve.interrupt()?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the /events reader panicked"))??;
    Ok(run_of(
        "serve /events, one reader",
        setup,
        &report,
        events.load(Ordering::Relaxed),
        drops.load(Ordering::Relaxed),
    ))
}

/// A sample of the daemon's `/metrics`, by series as written.
fn metric(listen: &str, series: &str) -> anyhow::Result<Option<f64>> {
    let mut stream = TcpStream::connect(listen)?;
    write!(stream, "GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    }))
}

/// ms from starting a one-call workload on an idle system to its event line, `n` times.
fn lone_event_latency(bin: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut events = Proc::spawn(
        Command::new(bin)
            .args(["events", "--json", "-c", "kt-lone-call"])
            .stdout(Stdio::piped()),
    )?;
    events.wait_attached()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let out = BufReader::new(events.take_stdout()?);
    thread::spawn(move || {
        for _ in out.lines().map_while(Result::ok) {
            let _ = tx.send(Instant::now());
        }
    });
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let status = Command::new(bin)
            .args([
                "stress",
                "-n",
                "1",
                "--threads",
                "1",
                "--comm",
                "kt-lone-call",
            ])
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "stress -n 1 failed");
        let seen = rx
            .recv_timeout(Duration::from_secs(5))
            .context("the call's event never came")?;
        latencies.push(seen.duration_since(started).as_secs_f64() * 1000.0);
    }
    events.interrupt()?;
    Ok(latencies)
}

pub fn run(bin: &Path, out_dir: &Path) -> anyhow::Result<StreamReport> {
    let gate: PathBuf =
        std::env::temp_dir().join(format!("kcmp-bench-gate-{}", std::process::id()));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let runs = vec![
        through_events(bin, &gate, "4M")?,
        through_events(bin, &gate, "64K")?,
        through_daemon(bin, &gate, port, ("1M, nice 10 (default)", &[]))?,
        through_daemon(
            bin,
            &gate,
            port,
            (
                "4M, nice -10",
                &["--ring-size", "4M", "--reader-nice", "-10"],
            ),
        )?,
    ];
    let _ = std::fs::remove_file(&gate);
    let mut lone = lone_event_latency(bin, 10)?;
    lone.sort_by(f64::total_cmp);
    let report = StreamReport {
        runs,
        lone_event_ms_p50: lone[lone.len() / 2],
        lone_event_ms_max: lone[lone.len() - 1],
    };
    std::fs::write(
        out_dir.join("stream.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

pub fn table(r: &StreamReport) -> String {
    let mut out = format!(
        "{:<28} {:>24} {:>10} {:>12} {:>12} {:>10} {:>8}\n",
        "consumer", "ring, reader", "calls", "calls/s", "delivered", "dropped", "drop %"
    );
    for run in &r.runs {
        out += &format!(
            "{:<28} {:>24} {:>10} {:>12.0} {:>12} {:>10} {:>8.3}\n",
            run.consumer,
            run.setup,
            run.calls,
            run.calls_per_s,
            run.delivered,
            run.dropped,
            run.drop_pct
        );
    }
    out += &format!(
        "a lone call on an idle system: its event line after {:.1} ms (median of 10), {:.1} ms at most (target <= 100 ms; includes starting the one-call workload)\n",
        r.lone_event_ms_p50, r.lone_event_ms_max
    );
    out
}
