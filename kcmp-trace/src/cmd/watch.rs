//! `kcmp-trace watch`: counters, rates and percentiles every interval.

use std::{borrow::Cow, cell::RefCell, io::Write as _, time::Instant};

use kcmp_trace_common::{
    event::Event,
    json::{
        lines::{PlanLine, ReportLine, ReportScope},
        recording::{RecordedKernel, Scope},
        report::{OTHER_READER, Reading, Report},
    },
    snapshot::Counters,
};

use crate::{
    cli::WatchArgs,
    cmd::warn_unflushed,
    config::TraceConfig,
    event_stream::{EventReader, EventSink},
    loader::Tracer,
    recording::{Recorder, new_header},
    sinks::{event::EventRecord, table},
};

/// Seconds without a call before `watch` explains an idle host: long enough to tell an idle
/// host from a quiet second.
const IDLE_HINT_AFTER_S: f64 = 5.0;

/// What `watch` prints once on a host where nothing calls kcmp, so that `calls=0` every
/// second does not look like a broken tracer.
fn idle_hint(filtered: bool) -> String {
    let matching = if filtered { " matching -p/-c" } else { "" };
    format!(
        "hint: no kcmp call{matching} in {IDLE_HINT_AFTER_S:.0} s. kcmp is rare on most hosts \
         (CRIU, systemd, Mesa and checkpoint tools call it): `kcmp-trace stress` in another \
         terminal makes calls, and `cargo xtask demo` shows the fast path in a VM."
    )
}

/// Whether `watch` prints the idle hint now: in text output only (JSON stays machine-clean),
/// once, and only while no call has been seen since it started.
fn idle_hint_due(json: bool, hinted: bool, calls_seen: u64, watched_s: f64) -> bool {
    !json && !hinted && calls_seen == 0 && watched_s >= IDLE_HINT_AFTER_S
}

/// `record`'s reader sink: every event into the recording, written out after each batch.
/// The report loop writes readings into the same recording between batches.
struct Recorded<'a>(&'a RefCell<Option<Recorder>>);

impl EventSink for Recorded<'_> {
    fn take(&mut self, event: &Event) -> anyhow::Result<()> {
        match self.0.borrow_mut().as_mut() {
            Some(recorder) => recorder.event(&EventRecord::from(event)),
            None => Ok(()),
        }
    }

    fn batch_end(&mut self) -> anyhow::Result<()> {
        match self.0.borrow_mut().as_mut() {
            Some(recorder) => recorder.flush(),
            None => Ok(()),
        }
    }
}

/// Where the numbers come from: our own tracer, or a running daemon.
enum Source {
    Local(Box<Tracer>, Instant),
    Daemon(crate::client::Target),
}

impl Source {
    /// What reports count from: attach for our own tracer (its counters start at zero, so
    /// calls between attach and the first read count too), the first snapshot for a daemon.
    async fn baseline(&self) -> anyhow::Result<Reading> {
        match self {
            Source::Local(..) => Ok(Reading::attach()),
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
                callers: tracer.callers()?,
                stacks: tracer.stacks()?,
                hooks: tracer.hook_counters()?,
                at_s: started.elapsed().as_secs_f64(),
            }),
            Source::Daemon(target) => {
                let snap = crate::client::fetch(target).await?;
                Ok(Reading {
                    counters: snap.counters.to_counters()?,
                    procs: snap.processes.into_owned(),
                    callers: snap.callers.map(Cow::into_owned),
                    stacks: snap.stacks.map(Cow::into_owned),
                    hooks: snap.programs.into_owned(),
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
    run_recording(args, None)
}

/// `watch`, and with a recorder (and its events' ring size) `record`: the same reports,
/// also kept in a file.
pub fn run_recording(args: WatchArgs, recording: Option<(Recorder, u32)>) -> anyhow::Result<()> {
    let (mut recorder, ring_bytes) = recording.unzip();
    let rt = crate::lifecycle::runtime()?;
    let mut shutdown = {
        let _rt = rt.enter();
        crate::lifecycle::Shutdown::install()?
    };
    let mut out = std::io::stdout().lock();
    let (source, ring) = match &args.connect {
        Some(url) => {
            let target = crate::client::Target::parse(url).map_err(crate::error::Error::Usage)?;
            let first = rt.block_on(async {
                tokio::select! {
                    snap = crate::client::fetch(&target) => snap,
                    _ = shutdown.wait() => Err(stopped_waiting(&target)),
                }
            })?;
            eprintln!("kcmp-trace: connected to {target}; Ctrl-C to stop");
            let plan = first.plan.into_owned();
            if args.json {
                let line = PlanLine {
                    plan: plan.clone(),
                    connect: Some(target.to_string()),
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            } else {
                writeln!(out, "daemon: {target}")?;
                writeln!(out, "attach: {}", plan.mode.name())?;
            }
            if let Some(recorder) = &mut recorder {
                let kernel = RecordedKernel::from_plan(&plan, None);
                // A daemon's events are not recorded (`record --events` conflicts with it).
                let header = new_header(kernel, plan, args.interval.as_secs_f64(), args.top, false);
                recorder.header(&header)?;
            }
            (Source::Daemon(target), None)
        }
        None => {
            let defaults = args.trace.config();
            let config = TraceConfig {
                events: recorder.as_ref().is_some_and(|r| r.events),
                ring_bytes: ring_bytes.unwrap_or(defaults.ring_bytes),
                // Showing one reader means following them.
                readers: args.trace.readers || args.reader.is_some(),
                ..defaults
            };
            let mut tracer = Tracer::start(&config)?;
            crate::lifecycle::announce(&tracer.plan);
            if args.json {
                let line = PlanLine {
                    plan: tracer.plan.clone(),
                    connect: None,
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            } else {
                for line in tracer.plan.describe() {
                    writeln!(out, "{line}")?;
                }
            }
            if let Some(recorder) = &mut recorder {
                let plan = tracer.plan.clone();
                let release = Some(tracer.kernel_release.clone()).filter(|r| !r.is_empty());
                let kernel = RecordedKernel::from_plan(&plan, release);
                let events = recorder.events;
                recorder.header(&new_header(
                    kernel,
                    plan,
                    args.interval.as_secs_f64(),
                    args.top,
                    events,
                ))?;
            }
            let ring = tracer.take_events();
            (Source::Local(Box::new(tracer), Instant::now()), ring)
        }
    };
    out.flush()?;
    let events = {
        let _rt = rt.enter();
        ring.map(EventReader::new).transpose()?
    };
    let recorder = RefCell::new(recorder);

    let (first, last) = rt.block_on(async {
        // The report loop's end (or failure) drops this sender, which stops the reader: it
        // then takes every event the kernel wrote or staged before the last read.
        let (reports_done, stop_reading) = tokio::sync::oneshot::channel::<()>();
        let reading = async {
            match events {
                Some(reader) => {
                    let stop = async {
                        let _ = stop_reading.await;
                    };
                    reader.run(&mut Recorded(&recorder), stop).await.map(Some)
                }
                None => Ok(None),
            }
        };
        let reports = async {
            let _reports_done = reports_done;
            let first = source.baseline().await?;
            if let Some(recorder) = recorder.borrow_mut().as_mut() {
                recorder.reading(Scope::Baseline, &first)?;
            }
            let mut prev = first.clone();
            let mut reports = 0u64;
            let (mut calls_seen, mut hinted) = (0u64, false);
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + args.interval,
                args.interval,
            );
            let until_deadline = crate::lifecycle::deadline(args.duration);
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
                print_report(
                    &mut out,
                    &args,
                    ReportScope::Interval,
                    now.at_s,
                    &report,
                    &delta,
                )?;
                calls_seen += report.calls;
                if idle_hint_due(args.json, hinted, calls_seen, now.at_s - first.at_s) {
                    let filtered = !args.trace.pids.is_empty() || args.trace.comm.is_some();
                    writeln!(out, "{}", idle_hint(filtered))?;
                    out.flush()?;
                    hinted = true;
                }
                if let Some(recorder) = recorder.borrow_mut().as_mut() {
                    recorder.reading(Scope::Interval, &now)?;
                }
                prev = now;
                reports += 1;
                if args.count.is_some_and(|c| reports >= c) {
                    break;
                }
            }
            // The summary covers everything since the first read; every call it counts has
            // its event in the ring or a stage by now.
            let last = tokio::select! {
                last = source.read() => last?,
                _ = shutdown.wait() => return Err(source.stopped_waiting()),
            };
            anyhow::Ok((first, last))
        };
        let (drained, (first, last)) = tokio::try_join!(reading, reports)?;
        if let Some(drained) = drained {
            warn_unflushed(&drained.unflushed);
        }
        if let Some(recorder) = recorder.borrow_mut().as_mut() {
            recorder.reading(Scope::Total, &last)?;
        }
        anyhow::Ok((first, last))
    })?;
    drop(source);

    let (report, total) = last.report_since(&first, args.top);
    if args.json {
        print_report(
            &mut out,
            &args,
            ReportScope::Total,
            last.at_s,
            &report,
            &total,
        )?;
    } else {
        write!(out, "{}", table::summary(last.at_s, &report, &total))?;
    }
    out.flush()?;
    Ok(())
}

fn print_report(
    out: &mut impl std::io::Write,
    args: &WatchArgs,
    scope: ReportScope,
    elapsed_s: f64,
    report: &Report,
    counters: &Counters,
) -> anyhow::Result<()> {
    let filtered;
    let report = match &args.reader {
        Some(reader) => {
            filtered = only_reader(report, reader);
            &filtered
        }
        None => report,
    };
    if args.json {
        let line = ReportLine {
            scope,
            elapsed_s,
            report: Cow::Borrowed(report),
            fallbacks_by_writer: None,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    } else {
        // Tenths: a tick that fires a few ms late still reads as the interval it ends.
        let clock = format!("{:>7.1}s", (elapsed_s * 10.0).round() / 10.0);
        write!(out, "{}", table::interval(&clock, report))?;
        if args.hist {
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

/// The report with `by_reader` cut to one reader; `other` keeps every other call site too.
fn only_reader(report: &Report, reader: &str) -> Report {
    let mut report = report.clone();
    if let Some(readers) = &mut report.by_reader {
        let site = format!("{reader}:");
        readers.retain(|name, _| {
            name == reader || (reader == OTHER_READER && name.starts_with(&site))
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_hint_comes_once_after_a_few_seconds_without_a_call() {
        // A second or two of nothing is not yet a sign.
        assert!(!idle_hint_due(false, false, 0, 1.0));
        assert!(!idle_hint_due(false, false, 0, IDLE_HINT_AFTER_S - 0.1));
        assert!(idle_hint_due(false, false, 0, IDLE_HINT_AFTER_S));
        // Once.
        assert!(!idle_hint_due(false, true, 0, 60.0));
        // A host that made one call is not idle, even if it went quiet since.
        assert!(!idle_hint_due(false, false, 1, 60.0));
        // JSON output never carries it.
        assert!(!idle_hint_due(true, false, 0, 60.0));
    }

    #[test]
    fn the_idle_hint_names_the_filter_and_what_to_run() {
        let plain = idle_hint(false);
        assert!(plain.contains("kcmp-trace stress") && plain.contains("cargo xtask demo"));
        assert!(!plain.contains("-p/-c"));
        assert!(idle_hint(true).contains("matching -p/-c"));
        assert!(!plain.contains('\n'), "one line: {plain}");
    }
}
