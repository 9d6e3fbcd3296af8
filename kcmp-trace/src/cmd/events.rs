//! `kcmp-trace events`: one line per kcmp call.

use std::io::Write as _;

use anyhow::Context as _;
use kcmp_trace_common::{
    event::Event,
    json::{
        event::EventsSummary,
        report::{Missed, Report, missed_since},
    },
    maps::misc,
};

use crate::{
    cli::EventsArgs,
    config::TraceConfig,
    error::Error,
    event_stream::{EventReader, EventSink},
    loader::Tracer,
    sinks::{
        event::{EventRecord, TEXT_HEADER, text_line},
        table,
    },
};

pub fn run(args: EventsArgs) -> anyhow::Result<()> {
    if args.trace.stacks {
        return Err(Error::Usage(
            "--stacks: events prints calls, not stacks; use watch, record or serve".into(),
        )
        .into());
    }
    let config = TraceConfig {
        events: true,
        ring_bytes: args.ring_size,
        ..args.trace.config()
    };
    let mut tracer = Tracer::start(&config)?;
    let rt = crate::lifecycle::runtime()?;
    let mut shutdown = {
        let _rt = rt.enter();
        crate::lifecycle::Shutdown::install()?
    };
    crate::lifecycle::announce(&tracer.plan);
    // This thread reads the ring (the runtime has no other).
    // SAFETY: setpriority on the calling thread (Linux's nice is per thread).
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, args.reader_nice) } != 0 {
        log::info!(
            "reader stays at its nice value ({}); under a CPU-bound workload it may drop events",
            std::io::Error::last_os_error()
        );
    }
    grow_stdout_pipe();
    let ring = tracer.take_events().context("event ring buffer missing")?;
    // Large writes: at line rate a write per few lines would cost more than the formatting.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if !args.json {
        writeln!(out, "{TEXT_HEADER}")?;
        out.flush()?;
    }
    let mut reported_drops = 0u64;
    let mut reported_misses = Vec::new();
    let started = std::time::Instant::now();
    let mut shown = Shown {
        out: &mut out,
        json: args.json,
        delivered: 0,
        limit: args.count.unwrap_or(u64::MAX),
    };

    let drained = rt.block_on(async {
        let reader = EventReader::new(ring)?;
        let until_deadline = crate::lifecycle::deadline(args.duration);
        let stop = async {
            tokio::select! {
                _ = until_deadline => {}
                _ = shutdown.wait() => {}
            }
        };
        let drain = reader.run(&mut shown, stop);
        let incompleteness_check = async {
            let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every_second.tick().await;
                let dropped = tracer.counters()?.misc[misc::EVENTS_DROPPED];
                if dropped > reported_drops {
                    eprintln!(
                        "kcmp-trace: {} events dropped (ring buffer full)",
                        dropped - reported_drops
                    );
                    reported_drops = dropped;
                }
                let hooks = tracer.hook_counters()?;
                let missed = missed_since(&hooks, &reported_misses);
                if missed.iter().any(|m| m.runs != 0) {
                    eprintln!(
                        "kcmp-trace: the kernel skipped program runs ({}): calls may be missing",
                        missed_list(&missed)
                    );
                    reported_misses = hooks;
                }
            }
        };
        tokio::select! {
            drained = drain => drained,
            failed = incompleteness_check => failed,
        }
    });
    let delivered = shown.delivered;
    out.flush()?;
    let unflushed = drained?.unflushed;
    let counters = tracer.counters()?;
    let hooks = tracer.hook_counters()?;
    drop(tracer);
    let summary = Report::new(
        &counters,
        started.elapsed().as_secs_f64(),
        Vec::new(),
        &missed_since(&hooks, &[]),
        None,
    );
    let dropped = summary.events_dropped;
    if args.json {
        let line = EventsSummary {
            events_delivered: delivered,
            events_dropped: dropped,
            events_unflushed: unflushed.total(),
            calls: summary.calls,
            unpaired_exits: summary.unpaired_exits,
            lost_exits: summary.lost_exits,
            missed_runs: summary.missed_runs,
            incomplete: summary.incomplete,
            exact: summary.exact,
        };
        eprintln!("{}", serde_json::to_string(&line)?);
    } else {
        eprintln!("kcmp-trace: {delivered} events delivered, {dropped} dropped");
        crate::cmd::warn_unflushed(&unflushed);
        if let Some(line) = table::incomplete(&summary.incomplete) {
            eprintln!(
                "kcmp-trace: INCOMPLETE: {line} (skipped program runs: {})",
                missed_list(&missed_since(&hooks, &[]))
            );
        }
    }
    Ok(())
}

/// Into a pipe, lets the reader run ahead of the consumer by 1 MiB (about 4,500 lines)
/// instead of the default 64 KiB: at line rate a consumer that is scheduled late would
/// otherwise block this reader, and the ring would fill behind it. Not a pipe, or not
/// allowed: nothing changes.
fn grow_stdout_pipe() {
    // SAFETY: fcntl on our own stdout; F_SETPIPE_SZ fails harmlessly on anything but a pipe.
    unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_SETPIPE_SZ, 1 << 20) };
}

/// "kcmp_fexit=3 lock_fentry=1": programs with skipped runs.
fn missed_list(missed: &[Missed]) -> String {
    let list: Vec<String> = missed
        .iter()
        .filter(|m| m.runs != 0)
        .map(|m| format!("{}={}", m.program, m.runs))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(" ")
    }
}

/// `events`' sink: writes each event while fewer than `limit` were. The reader hands over
/// whole records, and events past the limit are not shown.
struct Shown<'a, W: std::io::Write> {
    out: &'a mut W,
    json: bool,
    delivered: u64,
    limit: u64,
}

impl<W: std::io::Write> EventSink for Shown<'_, W> {
    fn take(&mut self, event: &Event) -> anyhow::Result<()> {
        if self.delivered < self.limit {
            write_event(self.out, self.json, &EventRecord::from(event))?;
            self.delivered += 1;
        }
        Ok(())
    }

    fn batch_end(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }

    fn wants(&self) -> u64 {
        self.limit - self.delivered
    }
}

fn write_event(
    out: &mut impl std::io::Write,
    json: bool,
    record: &EventRecord,
) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, record)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", text_line(record))?;
    }
    Ok(())
}
