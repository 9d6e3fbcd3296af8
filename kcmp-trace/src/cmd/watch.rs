//! `kcmp-trace watch`: counters, rates and percentiles every interval.

use std::{io::Write as _, time::Instant};

use serde::Serialize;

use kcmp_trace_common::snapshot::Counters;

use crate::{
    cli::WatchArgs,
    loader::{HookCounters, ProcessRow, Tracer},
    report::{Report, missed_since, process_deltas},
    sinks::table,
};

#[derive(Serialize)]
struct JsonLine<'a> {
    /// "interval" for each report, "total" for the summary at exit.
    scope: &'static str,
    /// Seconds since attach (the daemon's, with --connect) at the end of this report, on the
    /// same clock as `interval_s`.
    elapsed_s: f64,
    #[serde(flatten)]
    report: &'a Report,
}

/// Where the numbers come from: our own tracer, or a running daemon.
enum Source {
    Local(Box<Tracer>, Instant),
    Daemon(crate::client::Target),
}

/// One read of cumulative counters, stamped on the source's clock.
#[derive(Clone)]
struct Reading {
    counters: Counters,
    procs: Vec<ProcessRow>,
    /// What the kernel counted for each attached program (skipped runs among it).
    hooks: Vec<HookCounters>,
    at_s: f64,
}

impl Reading {
    /// The report of what happened between `earlier` and this reading.
    fn report_since(&self, earlier: &Reading, top: usize) -> (Report, Counters) {
        let delta = self.counters.since(&earlier.counters);
        let report = Report::new(
            &delta,
            (self.at_s - earlier.at_s).max(0.0),
            process_deltas(&self.procs, &earlier.procs, top),
            &missed_since(&self.hooks, &earlier.hooks),
        );
        (report, delta)
    }
}

impl Source {
    /// What reports count from: attach for our own tracer (its counters start at zero, so
    /// calls between attach and the first read count too), the first snapshot for a daemon.
    async fn baseline(&self) -> anyhow::Result<Reading> {
        match self {
            Source::Local(..) => Ok(Reading {
                counters: Counters::ZERO,
                procs: Vec::new(),
                hooks: Vec::new(),
                at_s: 0.0,
            }),
            Source::Daemon(_) => self.read().await,
        }
    }

    /// A second signal while the summary is read: only a daemon read can take that long.
    fn stopped_waiting(&self) -> anyhow::Error {
        match self {
            Source::Daemon(target) => stopped_waiting(target),
            Source::Local(..) => anyhow::anyhow!("stopped before the summary was read"),
        }
    }

    async fn read(&self) -> anyhow::Result<Reading> {
        match self {
            Source::Local(tracer, started) => Ok(Reading {
                counters: tracer.counters()?,
                procs: tracer.processes()?,
                hooks: tracer.hook_counters()?,
                at_s: started.elapsed().as_secs_f64(),
            }),
            Source::Daemon(target) => {
                let snap = crate::client::fetch(target).await?;
                Ok(Reading {
                    counters: snap.counters.to_counters()?,
                    procs: snap.processes,
                    hooks: snap.programs,
                    // The daemon's clock, so intervals match what it counted.
                    at_s: snap.elapsed_s,
                })
            }
        }
    }
}

fn stopped_waiting(target: &crate::client::Target) -> anyhow::Error {
    anyhow::anyhow!("stopped while waiting for the daemon at {target}")
}

pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let rt = crate::cmd::runtime()?;
    let mut shutdown = {
        let _rt = rt.enter();
        crate::cmd::Shutdown::install()?
    };
    let mut out = std::io::stdout().lock();
    let source = match &args.connect {
        Some(url) => {
            let target = crate::client::Target::parse(url).map_err(crate::error::Error::Usage)?;
            let first = rt.block_on(async {
                tokio::select! {
                    snap = crate::client::fetch(&target) => snap,
                    _ = shutdown.wait() => Err(stopped_waiting(&target)),
                }
            })?;
            eprintln!("kcmp-trace: connected to {target}; Ctrl-C to stop");
            if args.json {
                let line =
                    serde_json::json!({ "plan": &first.plan, "connect": target.to_string() });
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "daemon: {target}")?;
                let mode = first.plan["mode"].as_str().unwrap_or("?");
                writeln!(out, "attach: {mode}")?;
            }
            Source::Daemon(target)
        }
        None => {
            let tracer = Tracer::start(&args.trace.config())?;
            crate::cmd::announce(&tracer.plan);
            if args.json {
                writeln!(out, "{}", serde_json::json!({ "plan": &tracer.plan }))?;
            } else {
                for line in tracer.plan.describe() {
                    writeln!(out, "{line}")?;
                }
            }
            Source::Local(Box::new(tracer), Instant::now())
        }
    };
    out.flush()?;

    let (first, last) = rt.block_on(async {
        let first = source.baseline().await?;
        let mut prev = first.clone();
        let mut reports = 0u64;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
        let until_deadline = crate::cmd::deadline(args.duration);
        tokio::pin!(until_deadline);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut until_deadline => break,
                _ = shutdown.wait() => break,
            }
            // A daemon that stops answering must not hold off Ctrl-C or SIGTERM.
            let now = tokio::select! {
                now = source.read() => now?,
                _ = shutdown.wait() => break,
            };
            let (report, delta) = now.report_since(&prev, args.top);
            print_report(&mut out, &args, "interval", now.at_s, &report, &delta)?;
            prev = now;
            reports += 1;
            if args.count.is_some_and(|c| reports >= c) {
                break;
            }
        }
        // The summary covers everything since the first read.
        let last = tokio::select! {
            last = source.read() => last?,
            _ = shutdown.wait() => return Err(source.stopped_waiting()),
        };
        anyhow::Ok((first, last))
    })?;
    drop(source);

    let (report, total) = last.report_since(&first, args.top);
    print_report(&mut out, &args, "total", last.at_s, &report, &total)?;
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
    elapsed_s: f64,
    report: &Report,
    counters: &Counters,
) -> anyhow::Result<()> {
    if args.json {
        let line = JsonLine {
            scope,
            elapsed_s,
            report,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    } else {
        let clock = match scope {
            "total" => format!("total {elapsed_s:.1}s"),
            // Tenths: a tick that fires a few ms late still reads as the interval it ends.
            _ => format!("{:>7.1}s", (elapsed_s * 10.0).round() / 10.0),
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
