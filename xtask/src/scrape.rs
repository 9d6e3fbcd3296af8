//! `cargo xtask bench`'s daemon stage, with the release binary as users run it: `/metrics`
//! scrape latency while a stress thread calls kcmp as fast as it can and an `/events` client
//! takes every event, and the daemon's memory after it.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
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

/// Where the daemon listens for the stage (apart from the streaming stage's port).
const LISTEN: &str = "127.0.0.1:10481";
/// Scrapes at least this many, however short the load.
const MIN_SCRAPES: usize = 1000;

#[derive(Debug, Serialize)]
pub struct ScrapeReport {
    pub load_s: u64,
    pub stress_threads: u32,
    pub event_client: bool,
    pub workload_calls: u64,
    pub scrapes: usize,
    pub scrape_p50_ms: f64,
    pub scrape_p99_ms: f64,
    pub scrape_max_ms: f64,
    pub rss_kib: u64,
    pub rss_peak_kib: u64,
    pub events_streamed: u64,
    pub events_dropped: u64,
}

/// One `GET` over HTTP/1.0 (the body runs until the daemon closes it): status and body.
pub fn http_get(listen: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream =
        TcpStream::connect(listen).with_context(|| format!("connecting to {listen}"))?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status from {listen}{path}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}

/// `/events` read to its end on a thread: (events, drops the daemon reported).
fn events_client(listen: &str) -> anyhow::Result<thread::JoinHandle<anyhow::Result<(u64, u64)>>> {
    let mut stream = TcpStream::connect(listen).context("connecting to /events")?;
    write!(stream, "GET /events HTTP/1.0\r\n\r\n")?;
    Ok(thread::spawn(move || {
        let (mut events, mut dropped) = (0, 0);
        let mut body = false;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if !body {
                body = line.is_empty();
                continue;
            }
            match output::drop_notice(&line)? {
                Some(notice) => dropped += notice.dropped,
                None => events += 1,
            }
        }
        Ok((events, dropped))
    }))
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

pub fn run(bin: &Path, out_dir: &Path, secs: u64) -> anyhow::Result<ScrapeReport> {
    const THREADS: u32 = 1;
    let gate = out_dir.join("scrape.gate");
    let stress = Gated::stress(
        bin,
        &gate,
        &[
            "-d",
            &format!("{secs}s"),
            "--types",
            "all",
            "--threads",
            &THREADS.to_string(),
        ],
    )?;
    let mut serve = Proc::spawn(
        Command::new(bin)
            .args(["serve", "--listen", LISTEN, "--tcp-per-call-data"])
            .stdout(Stdio::null()),
    )?;
    serve.wait_attached()?;
    let client = events_client(LISTEN)?;
    stress.open()?;
    let started = Instant::now();
    let mut latencies = Vec::new();
    while latencies.len() < MIN_SCRAPES || started.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let (status, _) = http_get(LISTEN, "/metrics")?;
        latencies.push(t.elapsed());
        ensure!(status == 200, "/metrics answered {status}");
        if latencies.len() >= MIN_SCRAPES {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let stress: StressReport =
        serde_json::from_str(stress.report()?.trim()).context("stress's report")?;
    let (rss_kib, rss_peak_kib) = (
        status_kib(serve.id(), "VmRSS")?,
        status_kib(serve.id(), "VmHWM")?,
    );
    serve.interrupt()?;
    let (events_streamed, events_dropped) = client
        .join()
        .map_err(|_| anyhow::anyhow!("the /events client panicked"))??;
    latencies.sort();
    let ms = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e3
    };
    Ok(ScrapeReport {
        load_s: secs,
        stress_threads: THREADS,
        event_client: true,
        workload_calls: stress.calls,
        scrapes: latencies.len(),
        scrape_p50_ms: ms(0.50),
        scrape_p99_ms: ms(0.99),
        scrape_max_ms: ms(1.0),
        rss_kib,
        rss_peak_kib,
        events_streamed,
        events_dropped,
    })
}

pub fn table(r: &ScrapeReport) -> String {
    format!(
        "the daemon under {} s of stress ({} calls) with an /events client ({} streamed, {} dropped): \
         {} scrapes of /metrics, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; RSS {} KiB, peak {} KiB\n",
        r.load_s,
        r.workload_calls,
        r.events_streamed,
        r.events_dropped,
        r.scrapes,
        r.scrape_p50_ms,
        r.scrape_p99_ms,
        r.scrape_max_ms,
        r.rss_kib,
        r.rss_peak_kib
    )
}
