//! The recording format: one `kcmp-trace record` session in one file, as JSON lines.
//!
//! Version 1. The first line is the header:
//!
//! ```text
//! {"format":"kcmp-trace-recording","version":1,"started":"2026-11-26T10:00:00Z",
//!  "kernel":{"release":"6.12.117","preemption":"voluntary","series":true},
//!  "plan":{...as `watch --json` prints it...},"interval_s":1.0,"top":5}
//! ```
//!
//! then, in the order they happened, readings of the cumulative counters and (with
//! `--events`) one line per call:
//!
//! ```text
//! {"kind":"reading","scope":"baseline","at_s":0.0,"counters":{...},"processes":[...],"programs":[...]}
//! {"kind":"reading","scope":"interval","at_s":1.0,...}
//! {"kind":"event",...one `events --json` object...}
//! {"kind":"reading","scope":"total","at_s":4.2,...}
//! ```
//!
//! `counters` has the daemon snapshot's shape ([`WireCounters`]). Readings are cumulative
//! since attach, so every interval and the total are recomputed exactly as `watch`
//! computed them. Each line is flushed as it is written: a session cut short (killed)
//! ends without its total, and its last reading stands for it. The lines are
//! `kcmp_trace_common::json::recording`'s types (schemas in docs/schema/).

use std::{
    borrow::Cow,
    fs::File,
    io::{BufRead, BufReader, BufWriter, Read as _, Write as _},
    path::{Path, PathBuf},
};

use kcmp_trace_common::{
    json::{
        event::EventRecord,
        fallbacks::{FallbackTally, FallbacksByWriter},
        recording::{FORMAT, Header, ReadingLine, RecordedKernel, RecordingLine, Scope, VERSION},
        report::{Reading, Report},
        snapshot::WireCounters,
    },
    snapshot::Counters,
};
use serde::Serialize;

/// The longest line a recording may have. A reading takes about 110 bytes per process with
/// calls, so this holds some 600,000 of them; a file with a longer line (or none, as
/// /dev/zero) is refused at that line rather than read into memory whole.
pub const MAX_LINE_BYTES: u64 = 64 << 20;

/// A new session's header: now, this build's format.
pub fn new_header(
    kernel: RecordedKernel,
    plan: kcmp_trace_common::json::plan::Plan,
    interval_s: f64,
    top: usize,
    events: bool,
) -> Header {
    Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        started: jiff::Timestamp::now().to_string(),
        kernel,
        plan,
        interval_s,
        top,
        events,
    }
}

/// Writes a session as it happens.
pub struct Recorder {
    out: BufWriter<File>,
    path: PathBuf,
    /// Per-call events go into the recording too.
    pub events: bool,
}

impl Recorder {
    pub fn create(path: &Path, events: bool) -> anyhow::Result<Recorder> {
        use anyhow::Context as _;
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Recorder {
            out: BufWriter::with_capacity(1 << 16, file),
            path: path.to_owned(),
            events,
        })
    }

    fn line(&mut self, value: &impl Serialize) -> anyhow::Result<()> {
        use anyhow::Context as _;
        serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Writes what is buffered, so that a session killed now is readable up to here.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn header(&mut self, header: &Header) -> anyhow::Result<()> {
        self.line(header)?;
        self.flush()
    }

    pub fn reading(&mut self, scope: Scope, reading: &Reading) -> anyhow::Result<()> {
        self.line(&RecordingLine::Reading(ReadingLine {
            scope,
            at_s: reading.at_s,
            counters: WireCounters::from(&reading.counters),
            processes: Cow::Borrowed(&reading.procs),
            programs: Cow::Borrowed(&reading.hooks),
            callers: reading.callers.as_deref().map(Cow::Borrowed),
            stacks: reading.stacks.as_deref().map(Cow::Borrowed),
        }))?;
        self.flush()
    }

    /// One call; buffered until the next flush.
    pub fn event(&mut self, event: &EventRecord) -> anyhow::Result<()> {
        self.line(&RecordingLine::Event(event.clone()))
    }
}

/// Why a file is not a readable recording; always names the file, and the line when one
/// is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {what}")]
    Bad {
        path: String,
        line: usize,
        what: String,
    },
}

/// Reads one line into `line` (without its newline), at most [`MAX_LINE_BYTES`]: false if
/// the line is longer (what was read of it is in `line`); an empty `line` at the end.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    let read = reader
        .by_ref()
        .take(MAX_LINE_BYTES + 1)
        .read_until(b'\n', line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(true);
    }
    Ok(read as u64 <= MAX_LINE_BYTES)
}

/// A recording read back, its readings streamed: only the first and last are kept, and
/// each interval's report.
#[derive(Debug)]
pub struct Session {
    pub path: PathBuf,
    pub header: Header,
    pub baseline: Reading,
    /// Each interval's report (its end, in seconds since attach), in order.
    pub intervals: Vec<(f64, Report)>,
    /// The total reading, or the last reading of a session cut short.
    pub last: Reading,
    /// The session ended with its total (it was not cut short).
    pub complete: bool,
    /// Per-call events kept.
    pub events: u64,
    /// The events' retry and busy calls by writer.
    pub fallbacks: FallbacksByWriter,
}

impl Session {
    pub fn read(path: &Path) -> Result<Session, ReadError> {
        Self::read_with_events(path, |_| {})
    }

    /// Reads a recording, handing each of its per-call events to `on_event` on the way.
    pub fn read_with_events(
        path: &Path,
        mut on_event: impl FnMut(&EventRecord),
    ) -> Result<Session, ReadError> {
        let shown = path.display().to_string();
        let io = |source| ReadError::Io {
            path: shown.clone(),
            source,
        };
        let bad = |line: usize, what: String| ReadError::Bad {
            path: shown.clone(),
            line,
            what,
        };
        // Bytes, not text: a foreign binary file gets the same one-line answer as any other.
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let mut text = Vec::new();
        let too_long = |line| {
            bad(
                line,
                format!("a line longer than {} MiB", MAX_LINE_BYTES >> 20),
            )
        };
        if !next_line(&mut reader, &mut text).map_err(io)? && !text.is_empty() {
            return Err(too_long(1));
        }
        let first = std::mem::take(&mut text);
        let header = match serde_json::from_slice::<Header>(&first) {
            Ok(header) if header.format == FORMAT => header,
            parsed => {
                let ours = first.starts_with(format!("{{\"format\":\"{FORMAT}\"").as_bytes());
                let what = match parsed {
                    Err(e) if ours && e.is_eof() => "truncated (the line ends mid-record)".into(),
                    Err(e) if ours => format!("not a recording header: {e}"),
                    _ => "not a kcmp-trace recording (no recording header)".into(),
                };
                return Err(bad(1, what));
            }
        };
        if header.version > VERSION {
            return Err(bad(
                1,
                format!(
                    "recording format version {} is newer than this kcmp-trace reads ({VERSION})",
                    header.version
                ),
            ));
        }
        let top = header.top;
        let mut baseline: Option<Reading> = None;
        // The reading the next interval counts from, and the total once it came.
        let mut previous: Option<(Scope, Reading)> = None;
        let mut intervals = Vec::new();
        let mut events = 0u64;
        let mut fallbacks = FallbackTally::default();
        let mut line_no = 1;
        loop {
            text.clear();
            let whole = next_line(&mut reader, &mut text).map_err(io)?;
            if text.is_empty() {
                break;
            }
            line_no += 1;
            if !whole {
                return Err(too_long(line_no));
            }
            let line: RecordingLine = serde_json::from_slice(&text).map_err(|e| {
                let what = if e.is_eof() {
                    "truncated (the line ends mid-record)".to_owned()
                } else {
                    format!("not a recording line: {e}")
                };
                bad(line_no, what)
            })?;
            let (scope, reading) = match line {
                RecordingLine::Event(e) => {
                    events += 1;
                    fallbacks.add(&e);
                    on_event(&e);
                    continue;
                }
                RecordingLine::Reading(r) => {
                    let counters = r
                        .counters
                        .to_counters()
                        .map_err(|e| bad(line_no, e.to_string()))?;
                    let reading = Reading {
                        counters,
                        procs: r.processes.into_owned(),
                        callers: r.callers.map(Cow::into_owned),
                        stacks: r.stacks.map(Cow::into_owned),
                        hooks: r.programs.into_owned(),
                        at_s: r.at_s,
                    };
                    (r.scope, reading)
                }
            };
            let expected = match previous.as_ref().map(|r| r.0) {
                None => scope == Scope::Baseline,
                Some(Scope::Total) => false,
                Some(_) => scope != Scope::Baseline,
            };
            if !expected {
                return Err(bad(
                    line_no,
                    format!("a {scope:?} reading out of order").to_lowercase(),
                ));
            }
            match (scope, &previous) {
                (Scope::Baseline, _) => baseline = Some(reading.clone()),
                // The total reading ends no interval of its own.
                (Scope::Interval, Some((_, before))) => {
                    intervals.push((reading.at_s, reading.report_since(before, top).0));
                }
                _ => {}
            }
            previous = Some((scope, reading));
        }
        let (Some(baseline), Some((last_scope, last))) = (baseline, previous) else {
            return Err(bad(
                line_no,
                "no readings: the session ended before its first read".into(),
            ));
        };
        let complete = last_scope == Scope::Total;
        let fallbacks = if header.events || events > 0 {
            FallbacksByWriter::Counted(fallbacks.table())
        } else {
            FallbacksByWriter::NeedsEvents
        };
        Ok(Session {
            path: path.to_owned(),
            header,
            baseline,
            intervals,
            last,
            complete,
            events,
            fallbacks,
        })
    }

    /// What `watch` printed at the end of the session: everything since the baseline.
    pub fn total(&self) -> (Report, Counters) {
        self.last.report_since(&self.baseline, self.header.top)
    }

    /// Each interval's report, with its end (seconds since attach).
    pub fn interval_reports(&self) -> &[(f64, Report)] {
        &self.intervals
    }

    /// The file name, for headings.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kcmp_trace_common::{
        classify::Strategy,
        json::{
            plan::{Affects, AttachMode, Model, Plan, Preemption},
            readout::{CallerRow, HookCounters, ProcessRow},
            stacks::StackRow,
        },
        outcome::Outcome,
        reader::ProcReader,
    };

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("kcmp-trace-{}-{name}", std::process::id()))
    }

    fn reading(at_s: f64, fast: u64, hooks_misses: u64) -> Reading {
        let mut counters = Counters::ZERO;
        counters.calls[Outcome::Fast as usize][0][0] = fast;
        counters.latency[Outcome::Fast as usize][10] = fast;
        // A session that followed the readers: a /proc reader and another caller's site.
        let wchan = &mut counters.readers[ProcReader::Wchan as usize];
        wchan.calls[Outcome::Fast as usize] = fast / 10;
        wchan.lock_wait[12] = fast / 100;
        Reading {
            counters,
            callers: Some(vec![CallerRow {
                symbol: "mm_access".into(),
                lock_waits: fast / 100,
                lock_wait_sum_ns: fast,
                ..CallerRow::default()
            }]),
            // The environ opens' waits, by stack.
            stacks: Some(vec![StackRow {
                who: "other".into(),
                outcome: None,
                frames: vec!["proc_pid_environ".into(), "mm_access".into()],
                count: fast / 100,
                time_ns: fast,
                holder: None,
            }]),
            procs: vec![ProcessRow {
                tgid: 7,
                comm: "stress".into(),
                calls: fast,
                errors: 0,
                latency_sum_ns: fast * 700,
            }],
            hooks: vec![HookCounters {
                program: "kcmp_fexit".into(),
                target: "__x64_sys_kcmp".into(),
                affects: vec![Affects::CallExit],
                misses: hooks_misses,
                run_time_ns: 0,
                run_count: 0,
                runs_outside_kcmp: None,
            }],
            at_s,
        }
    }

    /// A fentry + direct session's header.
    pub(crate) fn header() -> Header {
        let plan = Plan {
            mode: AttachMode::Fentry,
            strategy: Strategy::Direct,
            series: true,
            preemption: Preemption {
                model: Some(Model::Voluntary),
                dynamic: false,
                source: "kernel config".into(),
            },
            why: String::new(),
            hooks: Vec::new(),
            lock_waits: None,
            lock_waits_why: String::new(),
            skipped: Vec::new(),
            rejected: Vec::new(),
            accuracy: Vec::new(),
        };
        let kernel = RecordedKernel::from_plan(&plan, Some("6.12.117".into()));
        new_header(kernel, plan, 1.0, 5, false)
    }

    fn event() -> EventRecord<'static> {
        EventRecord {
            ts_ns: 1,
            tgid: 7,
            tid: 7,
            comm: "stress".into(),
            r#type: 0,
            type_name: "KCMP_FILE".into(),
            pid1: 7,
            pid2: 7,
            idx1: 3,
            idx2: 3,
            epoll_slot: None,
            ret: 0,
            result: "equal".into(),
            outcome: "fast".into(),
            latency_ns: 700,
            lock_wait_ns: 0,
            lock_wait_start_ns: None,
            writer: None,
        }
    }

    /// Writes a session of three readings (and one event line); returns the path.
    fn write_session(name: &str, with_total: bool) -> (PathBuf, Vec<Reading>) {
        let path = temp(name);
        let readings = vec![
            Reading::attach(),
            reading(1.0, 1000, 0),
            reading(2.0, 2500, 3),
        ];
        let mut rec = Recorder::create(&path, false).expect("create");
        rec.header(&header()).expect("header");
        rec.reading(Scope::Baseline, &readings[0])
            .expect("baseline");
        rec.reading(Scope::Interval, &readings[1])
            .expect("interval");
        rec.event(&event()).expect("event");
        let last = if with_total {
            Scope::Total
        } else {
            Scope::Interval
        };
        rec.reading(last, &readings[2]).expect("last");
        (path, readings)
    }

    #[test]
    fn a_session_reads_back_as_it_was_reported() {
        let (path, readings) = write_session("roundtrip", true);
        let s = Session::read(&path).expect("read");
        assert!(s.complete);
        assert_eq!(s.events, 1);
        assert_eq!(s.header.kernel.release.as_deref(), Some("6.12.117"));
        assert_eq!(s.header.kernel.preemption, "voluntary");
        assert!(s.header.kernel.series);
        assert_eq!(s.header.plan.attach(), "fentry/direct");
        // The total is what watch computed from the same readings, to the last field.
        let (total, counters) = s.total();
        let (expected, _) = readings[2].report_since(&readings[0], 5);
        assert_eq!(
            serde_json::to_value(&total).expect("json"),
            serde_json::to_value(&expected).expect("json")
        );
        assert_eq!(total.calls, 2500);
        assert_eq!(total.missed_runs["kcmp_fexit"], 3);
        assert_eq!(counters.latency[Outcome::Fast as usize][10], 2500);
        let readers = total.by_reader.as_ref().expect("readers were followed");
        assert_eq!(readers["proc_wchan"].by_outcome["fast"], 250);
        assert_eq!(readers["proc_wchan"].lock_waits, 25);
        assert_eq!(readers["other:mm_access"].lock_waits, 25);
        let stacks = total.stacks.as_ref().expect("stacks were counted");
        assert_eq!(StackRow::waits_of(stacks, "other"), 25);
        let intervals: Vec<(f64, u64)> = s
            .interval_reports()
            .iter()
            .map(|(at, r)| (*at, r.calls))
            .collect();
        // The total reading ends no interval of its own.
        assert_eq!(intervals, vec![(1.0, 1000)]);
        std::fs::remove_file(path).expect("cleanup");
    }

    /// The recordings kept under docs/ were written before TSYNC sections were told apart
    /// and before the plan timed lock waits by contention: the keys they lack are the only
    /// ones a reader takes as absent.
    #[test]
    fn the_kept_recordings_still_read() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        for kept in [
            "examples/session.jsonl",
            "compare/stock-6.12.jsonl",
            "compare/fastpath-6.12.jsonl",
            "compare-7.2/stock-7.2.jsonl",
            "compare-7.2/fastpath-7.2.jsonl",
        ] {
            let s = Session::read(&docs.join(kept)).unwrap_or_else(|e| panic!("{kept}: {e}"));
            assert!(s.complete && s.total().0.calls > 0, "{kept}");
        }
    }

    /// A session of one reading and `events` (header saying whether events were kept).
    fn session_with(name: &str, kept: bool, events: &[EventRecord]) -> Session {
        let path = temp(name);
        let mut rec = Recorder::create(&path, kept).expect("create");
        rec.header(&Header {
            events: kept,
            ..header()
        })
        .expect("header");
        rec.reading(Scope::Baseline, &Reading::attach())
            .expect("baseline");
        for e in events {
            rec.event(e).expect("event");
        }
        rec.reading(Scope::Total, &reading(1.0, 10, 0))
            .expect("total");
        let s = Session::read(&path).expect("read");
        std::fs::remove_file(path).expect("cleanup");
        s
    }

    #[test]
    fn fallbacks_by_writer_come_from_the_events_or_ask_for_them() {
        use kcmp_trace_common::json::{
            event::{WriterKind, WriterRecord},
            fallbacks::FallbackCounts,
        };
        let writer = WriterRecord {
            kind: WriterKind::Tsync,
            pid: 9,
            tgid: 8,
            comm: "kcmp-trace".into(),
            overlap_ns: 400,
            start_ns: None,
            end_ns: None,
        };
        let busy = EventRecord {
            outcome: "busy".into(),
            writer: Some(writer),
            ..event()
        };
        let retry = EventRecord {
            outcome: "retry".into(),
            ..event()
        };
        let s = session_with("fallbacks", true, &[event(), busy, retry]);
        let FallbacksByWriter::Counted(t) = &s.fallbacks else {
            panic!("events were kept: {:?}", s.fallbacks);
        };
        assert_eq!(t.writers.len(), 1);
        assert_eq!(t.writers[0].key(), (WriterKind::Tsync, 8, "kcmp-trace"));
        assert_eq!(t.no_writer, FallbackCounts { retry: 1, busy: 0 });
        assert_eq!(t.total, FallbackCounts { retry: 1, busy: 1 });
        // Kept, yet no call came: an empty table, not a request for --events.
        let quiet = session_with("fallbacks_quiet", true, &[]);
        assert_eq!(
            quiet.fallbacks,
            FallbacksByWriter::Counted(Default::default())
        );
        let without = session_with("fallbacks_without", false, &[]);
        assert_eq!(without.fallbacks, FallbacksByWriter::NeedsEvents);
    }

    #[test]
    fn a_session_cut_short_ends_at_its_last_reading() {
        let (path, _) = write_session("cut", false);
        let s = Session::read(&path).expect("read");
        assert!(!s.complete);
        assert_eq!(s.total().0.calls, 2500);
        assert_eq!(s.interval_reports().len(), 2);
        std::fs::remove_file(path).expect("cleanup");
    }

    fn error_of(name: &str, content: &[u8]) -> String {
        let path = temp(name);
        std::fs::write(&path, content).expect("write");
        let err = Session::read(&path).expect_err("must not read").to_string();
        std::fs::remove_file(&path).expect("cleanup");
        err.replace(&path.display().to_string(), "FILE")
    }

    #[test]
    fn bad_files_name_the_file_and_the_line() {
        let (path, _) = write_session("whole", true);
        let whole = std::fs::read(&path).expect("read");
        std::fs::remove_file(&path).expect("cleanup");
        // Cut in the middle of the third line (the first interval).
        let third = whole
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(1)
            .map(|(i, _)| i + 20)
            .expect("three lines");
        assert_eq!(
            error_of("truncated", &whole[..third]),
            "FILE:3: truncated (the line ends mid-record)"
        );
        assert_eq!(
            error_of("foreign", b"{\"scope\":\"total\",\"calls\":3}\n"),
            "FILE:1: not a kcmp-trace recording (no recording header)"
        );
        assert_eq!(
            error_of("binary", b"\x7fELF\x02\x01\x01\0\n\0\0"),
            "FILE:1: not a kcmp-trace recording (no recording header)"
        );
        assert_eq!(
            error_of("cut_header", &whole[..60]),
            "FILE:1: truncated (the line ends mid-record)"
        );
        let header_only = whole.split(|&b| b == b'\n').next().expect("header");
        assert_eq!(
            error_of("empty", header_only),
            "FILE:1: no readings: the session ended before its first read"
        );
        // Cut from the header as written, which starts with its format (a Value would
        // sort its keys).
        let whole_header = serde_json::to_string(&header()).expect("json");
        let keyless = whole_header.replacen("\"mode\":\"fentry\",", "", 1);
        assert_ne!(keyless, whole_header, "the plan's mode was not cut");
        assert!(
            error_of("keyless", keyless.as_bytes())
                .starts_with("FILE:1: not a recording header: missing field `mode`"),
            "{}",
            error_of("keyless", keyless.as_bytes())
        );
        let mut newer = serde_json::to_value(header()).expect("json");
        newer["version"] = 2.into();
        assert_eq!(
            error_of("newer", newer.to_string().as_bytes()),
            "FILE:1: recording format version 2 is newer than this kcmp-trace reads (1)"
        );
        let mut garbage = whole.clone();
        garbage.extend_from_slice(b"{\"kind\":\"reading\"}\n");
        assert!(
            error_of("garbage", &garbage)
                .starts_with("FILE:6: not a recording line: missing field"),
            "{}",
            error_of("garbage", &garbage)
        );
        let missing = temp("missing");
        let err = Session::read(&missing).expect_err("no file").to_string();
        assert!(
            err.starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
    }
}
