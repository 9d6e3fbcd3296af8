//! `kcmp-trace watch`: counters, rates and percentiles every interval.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    cli::WatchArgs,
    loader::Tracer,
    report::{Report, process_deltas},
    sinks::table,
};

#[derive(Serialize)]
struct JsonLine<'a> {
    /// "interval" for each report, "total" for the summary at exit.
    scope: &'static str,
    /// Seconds since attach at the end of this report.
    elapsed_s: f64,
    #[serde(flatten)]
    report: &'a Report,
}

pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.connect {
        return run_connected(&args, url);
    }
    let tracer = Tracer::start(&args.trace.config())?;
    let rt = crate::cmd::runtime()?;
    let mut shutdown = {
        let _rt = rt.enter();
        crate::cmd::Shutdown::install()?
    };
    crate::cmd::announce(&tracer.plan);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::json!({ "plan": &tracer.plan }))?;
    } else {
        for line in tracer.plan.describe() {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;

    let started = Instant::now();
    let first = tracer.counters()?;
    let first_procs = tracer.processes()?;
    let (mut prev, mut prev_procs, mut prev_at) = (first, first_procs.clone(), started);
    let mut reports = 0u64;

    rt.block_on(async {
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut until_deadline => break,
                _ = shutdown.wait() => break,
            }
            let now = tracer.counters()?;
            let procs = tracer.processes()?;
            let at = Instant::now();
            let delta = now.since(&prev);
            let report = Report::new(
                &delta,
                at.duration_since(prev_at).as_secs_f64(),
                process_deltas(&procs, &prev_procs, args.top),
            );
            print_report(&mut out, &args, "interval", started, &report, &delta)?;
            (prev, prev_procs, prev_at) = (now, procs, at);
            reports += 1;
            if args.count.is_some_and(|c| reports >= c) {
                break;
            }
        }
        anyhow::Ok(())
    })?;

    // The summary covers everything since attach.
    let last = tracer.counters()?;
    let total = last.since(&first);
    let report = Report::new(
        &total,
        started.elapsed().as_secs_f64(),
        process_deltas(&tracer.processes()?, &first_procs, args.top),
    );
    drop(tracer);
    print_report(&mut out, &args, "total", started, &report, &total)?;
    if !args.json {
        writeln!(
            out,
            "{}",
            table::log2_hist("kcmp latency", "nsecs", &total.latency_all())
        )?;
        if report.lock_wait_ns.count > 0 {
            writeln!(
                out,
                "{}",
                table::log2_hist("exec_update_lock wait", "nsecs", &total.lock_wait)
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn print_report(
    out: &mut impl std::io::Write,
    args: &WatchArgs,
    scope: &'static str,
    started: Instant,
    report: &Report,
    counters: &kcmp_trace_common::snapshot::Counters,
) -> anyhow::Result<()> {
    let elapsed = started.elapsed();
    if args.json {
        let line = JsonLine {
            scope,
            elapsed_s: elapsed.as_secs_f64(),
            report,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    } else {
        let clock = match scope {
            "total" => format!("total {:.1}s", elapsed.as_secs_f64()),
            _ => format!(
                "{:>7.1}s",
                round_to(elapsed, Duration::from_millis(100)).as_secs_f64()
            ),
        };
        write!(out, "{}", table::interval(&clock, report))?;
        if args.hist && scope == "interval" {
            write!(
                out,
                "{}",
                table::log2_hist("kcmp latency", "nsecs", &counters.latency_all())
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn round_to(d: Duration, step: Duration) -> Duration {
    let steps = (d.as_nanos() + step.as_nanos() / 2) / step.as_nanos();
    step * steps as u32
}

/// `watch --connect`: the same reports, from a daemon's snapshots instead of our own tracer.
fn run_connected(args: &WatchArgs, url: &str) -> anyhow::Result<()> {
    use crate::serve::snapshot::{self, Target};
    let target = Target::parse(url).map_err(crate::error::Error::Usage)?;
    let rt = crate::cmd::runtime()?;
    let mut shutdown = {
        let _rt = rt.enter();
        crate::cmd::Shutdown::install()?
    };
    let rows = |s: &mut snapshot::SnapshotIn| -> Vec<crate::loader::ProcessRow> {
        std::mem::take(&mut s.processes)
            .into_iter()
            .map(Into::into)
            .collect()
    };
    let mut first = rt.block_on(snapshot::fetch(&target))?;
    eprintln!("kcmp-trace: connected to {target}; Ctrl-C to stop");
    let mut out = std::io::stdout().lock();
    if args.json {
        let line = serde_json::json!({ "plan": &first.plan, "connect": target.to_string() });
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "daemon: {target}")?;
        let mode = first.plan["mode"].as_str().unwrap_or("?");
        writeln!(out, "attach: {mode}")?;
    }
    out.flush()?;

    let started = Instant::now();
    let first_counters = first.counters.to_counters()?;
    let first_procs = rows(&mut first);
    let (mut prev, mut prev_procs, mut prev_at) =
        (first_counters, first_procs.clone(), first.elapsed_s);
    let mut reports = 0u64;
    rt.block_on(async {
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut until_deadline => break,
                _ = shutdown.wait() => break,
            }
            let mut snap = snapshot::fetch(&target).await?;
            let now = snap.counters.to_counters()?;
            let procs = rows(&mut snap);
            // The daemon's clock, so intervals match what it counted.
            let delta = now.since(&prev);
            let report = Report::new(
                &delta,
                (snap.elapsed_s - prev_at).max(0.0),
                process_deltas(&procs, &prev_procs, args.top),
            );
            print_report(&mut out, args, "interval", started, &report, &delta)?;
            (prev, prev_procs, prev_at) = (now, procs, snap.elapsed_s);
            reports += 1;
            if args.count.is_some_and(|c| reports >= c) {
                break;
            }
        }
        anyhow::Ok(())
    })?;

    let total = prev.since(&first_counters);
    let report = Report::new(
        &total,
        (prev_at - first.elapsed_s).max(0.0),
        process_deltas(&prev_procs, &first_procs, args.top),
    );
    print_report(&mut out, args, "total", started, &report, &total)?;
    if !args.json {
        writeln!(
            out,
            "{}",
            table::log2_hist("kcmp latency", "nsecs", &total.latency_all())
        )?;
    }
    out.flush()?;
    Ok(())
}
