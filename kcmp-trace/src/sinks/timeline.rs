//! `report --trace`: a recording's events as a timeline in the Trace Event Format, which
//! the Perfetto UI and chrome://tracing open. One track per thread: each kcmp call is a
//! slice named by its outcome, with its exec_update_lock wait inside it; each write section
//! that made calls retry or fall back is a slice on its writer's thread, with an arrow to
//! every call it made leave the fast path.

use std::collections::BTreeMap;

use kcmp_trace_common::json::{
    event::{EventRecord, WriterKind},
    timeline::{Phase, TraceEvent, TraceFile, micros},
};
use serde_json::Value;

/// A write section, known by its writer's thread and its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SectionKey {
    tgid: u32,
    tid: u32,
    start_ns: u64,
    kind: WriterKind,
}

#[derive(Debug, Default)]
struct Section {
    /// When it closed, if a call saw it closed.
    end_ns: Option<u64>,
    /// The latest return of a call that saw it still open.
    open_until_ns: u64,
}

#[derive(Debug)]
struct Call {
    tgid: u32,
    tid: u32,
    start_ns: u64,
    end_ns: u64,
    outcome: String,
    args: BTreeMap<String, Value>,
    /// The first wait's start, and the waits' sum.
    wait: Option<(u64, u64)>,
    section: Option<SectionKey>,
}

/// What a timeline could not draw, for the user to be told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Undrawn {
    /// Retry and busy calls whose event names no write section.
    pub no_writer: u64,
    /// Calls that waited, recorded without the wait's start (older recordings).
    pub waits_without_start: u64,
    /// Writers named without their section's bounds (older recordings): no arrow.
    pub sections_without_bounds: u64,
    /// Fast calls that did not wait, left out on request.
    pub fast_left_out: u64,
}

/// A timeline being built from a recording's events, in any order.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Leave out the fast calls that did not wait (counted in `undrawn`).
    skip_fast: bool,
    calls: Vec<Call>,
    sections: BTreeMap<SectionKey, Section>,
    /// Each thread's and process's last seen comm.
    threads: BTreeMap<(u32, u32), String>,
    processes: BTreeMap<u32, String>,
    undrawn: Undrawn,
}

impl Timeline {
    /// `skip_fast`: leave out the fast calls that did not wait (they are counted).
    pub fn new(skip_fast: bool) -> Timeline {
        Timeline {
            skip_fast,
            ..Timeline::default()
        }
    }

    pub fn add(&mut self, e: &EventRecord) {
        if self.skip_fast && e.outcome == "fast" && e.lock_wait_ns == 0 {
            self.undrawn.fast_left_out += 1;
            return;
        }
        let start_ns = e.ts_ns.saturating_sub(e.latency_ns);
        self.threads.insert((e.tgid, e.tid), e.comm.to_string());
        self.processes.insert(e.tgid, e.comm.to_string());
        let wait = match e.lock_wait_start_ns {
            Some(at) if e.lock_wait_ns > 0 => Some((at.clamp(start_ns, e.ts_ns), e.lock_wait_ns)),
            None if e.lock_wait_ns > 0 => {
                self.undrawn.waits_without_start += 1;
                None
            }
            _ => None,
        };
        let fallback = e.outcome == "retry" || e.outcome == "busy";
        let section = match &e.writer {
            Some(w) => match w.start_ns {
                Some(section_start) => {
                    let key = SectionKey {
                        tgid: w.tgid,
                        tid: w.pid,
                        start_ns: section_start,
                        kind: w.kind,
                    };
                    let s = self.sections.entry(key).or_default();
                    match w.end_ns {
                        Some(end) => s.end_ns = Some(end),
                        None => s.open_until_ns = s.open_until_ns.max(e.ts_ns),
                    }
                    self.threads
                        .entry((w.tgid, w.pid))
                        .or_insert_with(|| w.comm.to_string());
                    self.processes
                        .entry(w.tgid)
                        .or_insert_with(|| w.comm.to_string());
                    Some(key)
                }
                None => {
                    self.undrawn.sections_without_bounds += 1;
                    None
                }
            },
            None if fallback => {
                self.undrawn.no_writer += 1;
                None
            }
            None => None,
        };
        let mut args = BTreeMap::new();
        args.insert("type".into(), Value::from(e.type_name.to_string()));
        args.insert("pid1".into(), Value::from(e.pid1));
        args.insert("pid2".into(), Value::from(e.pid2));
        args.insert("result".into(), Value::from(e.result.to_string()));
        args.insert("lock_wait_ns".into(), Value::from(e.lock_wait_ns));
        if let Some(w) = &e.writer {
            args.insert(
                "writer".into(),
                Value::from(format!("{} {} ({})", w.kind.name(), w.tgid, w.comm)),
            );
            args.insert("writer_overlap_ns".into(), Value::from(w.overlap_ns));
        }
        self.calls.push(Call {
            tgid: e.tgid,
            tid: e.tid,
            start_ns,
            end_ns: e.ts_ns,
            outcome: e.outcome.to_string(),
            args,
            wait,
            section,
        });
    }

    pub fn undrawn(&self) -> Undrawn {
        self.undrawn
    }

    /// The trace: each track's events in time order (a slice before the slices and arrow
    /// ends inside it), times in µs from the first event's start.
    pub fn finish(self, other_data: BTreeMap<String, String>) -> TraceFile {
        let t0 = self
            .calls
            .iter()
            .map(|c| c.start_ns)
            .chain(self.sections.keys().map(|k| k.start_ns))
            .min()
            .unwrap_or(0);
        let mut tracks = Tracks {
            t0,
            by_track: BTreeMap::new(),
        };
        for c in &self.calls {
            let track = (c.tgid, c.tid);
            tracks.slice(
                track,
                "kcmp",
                c.outcome.clone(),
                (c.start_ns, c.end_ns),
                c.args.clone(),
            );
            if let Some((start, sum)) = c.wait {
                let end = start.saturating_add(sum).min(c.end_ns);
                tracks.slice(
                    track,
                    "lock",
                    "exec_update_lock wait".into(),
                    (start, end),
                    BTreeMap::new(),
                );
            }
        }
        // A section still open at its last call's return is drawn to there, or to its
        // thread's next slice: its end was not seen.
        let spans: Vec<(SectionKey, u64, bool)> = self
            .sections
            .iter()
            .map(|(key, s)| {
                let end = s.end_ns.unwrap_or_else(|| {
                    let until = s.open_until_ns.max(key.start_ns);
                    tracks
                        .next_start((key.tgid, key.tid), key.start_ns)
                        .map_or(until, |n| until.min(n))
                });
                (*key, end, s.end_ns.is_some())
            })
            .collect();
        for (key, end, closed) in spans {
            let mut args = BTreeMap::new();
            args.insert("closed".into(), Value::from(closed));
            tracks.slice(
                (key.tgid, key.tid),
                "writer",
                format!("{} holds exec_update_lock", key.kind.name()),
                (key.start_ns, end),
                args,
            );
        }
        // An arrow from each section to each call it made leave the fast path.
        let mut id = 0;
        for c in &self.calls {
            let Some(key) = c.section else { continue };
            id += 1;
            tracks.arrow((key.tgid, key.tid), key.start_ns, Phase::FlowStart, id);
            tracks.arrow((c.tgid, c.tid), c.start_ns, Phase::FlowEnd, id);
        }
        let mut trace_events = Vec::new();
        for (&pid, comm) in &self.processes {
            trace_events.push(name_event("process_name", pid, pid, comm));
        }
        for (&(pid, tid), comm) in &self.threads {
            trace_events.push(name_event("thread_name", pid, tid, comm));
        }
        for mut events in tracks.by_track.into_values() {
            // By start; at one start, the longer slice first (it encloses), arrows last.
            events.sort_by(|a, b| {
                (a.0, a.2.ph, std::cmp::Reverse(a.1)).cmp(&(b.0, b.2.ph, std::cmp::Reverse(b.1)))
            });
            trace_events.extend(events.into_iter().map(|(.., e)| e));
        }
        TraceFile {
            trace_events,
            display_time_unit: "ns".into(),
            other_data,
        }
    }
}

/// A track's event as it is made: its start and end in ns, and the event.
type Placed = (u64, u64, TraceEvent);

/// Each track's events as they are made.
struct Tracks {
    t0: u64,
    by_track: BTreeMap<(u32, u32), Vec<Placed>>,
}

impl Tracks {
    fn at(&self, ns: u64) -> f64 {
        micros(ns.saturating_sub(self.t0))
    }

    fn slice(
        &mut self,
        track: (u32, u32),
        cat: &str,
        name: String,
        (start, end): (u64, u64),
        args: BTreeMap<String, Value>,
    ) {
        let e = TraceEvent {
            name,
            cat: cat.into(),
            ph: Phase::Complete,
            ts: self.at(start),
            dur: Some(micros(end.saturating_sub(start))),
            pid: track.0,
            tid: track.1,
            id: None,
            bp: None,
            args,
        };
        self.by_track
            .entry(track)
            .or_default()
            .push((start, end, e));
    }

    /// A flow arrow's end: its start (`FlowStart`) or its head, bound to the enclosing slice.
    fn arrow(&mut self, track: (u32, u32), ts: u64, ph: Phase, id: u64) {
        let e = TraceEvent {
            name: "fallback".into(),
            cat: "writer".into(),
            ph,
            ts: self.at(ts),
            dur: None,
            pid: track.0,
            tid: track.1,
            id: Some(id),
            bp: (ph == Phase::FlowEnd).then(|| "e".into()),
            args: BTreeMap::new(),
        };
        self.by_track.entry(track).or_default().push((ts, ts, e));
    }

    /// The first slice on `track` that starts after `after`.
    fn next_start(&self, track: (u32, u32), after: u64) -> Option<u64> {
        self.by_track
            .get(&track)?
            .iter()
            .map(|s| s.0)
            .filter(|&s| s > after)
            .min()
    }
}

fn name_event(kind: &str, pid: u32, tid: u32, comm: &str) -> TraceEvent {
    let mut args = BTreeMap::new();
    args.insert("name".into(), Value::from(format!("{comm} {tid}")));
    TraceEvent {
        name: kind.into(),
        cat: String::new(),
        ph: Phase::Metadata,
        ts: 0.0,
        dur: None,
        pid,
        tid,
        id: None,
        bp: None,
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcmp_trace_common::json::{event::WriterRecord, timeline::check};

    fn call(tid: u32, start: u64, end: u64, outcome: &'static str) -> EventRecord<'static> {
        EventRecord {
            ts_ns: end,
            tgid: 10,
            tid,
            comm: "stress".into(),
            r#type: 0,
            type_name: "KCMP_FILE".into(),
            pid1: 10,
            pid2: 20,
            idx1: 0,
            idx2: 0,
            epoll_slot: None,
            ret: 0,
            result: "equal".into(),
            outcome: outcome.into(),
            latency_ns: end - start,
            lock_wait_ns: 0,
            lock_wait_start_ns: None,
            writer: None,
        }
    }

    fn fallback(
        tid: u32,
        (start, end): (u64, u64),
        wait: (u64, u64),
        section: (u64, Option<u64>),
    ) -> EventRecord<'static> {
        EventRecord {
            lock_wait_ns: wait.1,
            lock_wait_start_ns: Some(wait.0),
            writer: Some(WriterRecord {
                kind: WriterKind::Exec,
                pid: 21,
                tgid: 20,
                comm: "racer".into(),
                overlap_ns: 1,
                start_ns: Some(section.0),
                end_ns: section.1,
            }),
            ..call(tid, start, end, "retry")
        }
    }

    #[test]
    fn calls_waits_sections_and_arrows_hold_together() {
        let mut t = Timeline::new(false);
        // Two calls met one exec section (the first saw it open, the second closed); a
        // third met another that no call saw closed, and the racer's thread made a call
        // after it, which bounds it.
        t.add(&fallback(11, (1_000, 5_000), (3_000, 1_500), (500, None)));
        t.add(&fallback(
            12,
            (1_200, 6_000),
            (4_000, 1_000),
            (500, Some(3_500)),
        ));
        t.add(&call(11, 6_000, 6_500, "fast"));
        t.add(&fallback(11, (7_000, 9_000), (8_000, 500), (6_800, None)));
        t.add(&EventRecord {
            tgid: 20,
            ..call(21, 9_500, 9_600, "fast")
        });
        assert_eq!(t.undrawn(), Undrawn::default());
        let trace = t.finish(BTreeMap::new());
        let counts = check(&trace).expect("the timeline holds together");
        assert_eq!(counts.slices["kcmp"], 5);
        assert_eq!(counts.slices["lock"], 3);
        assert_eq!(counts.slices["writer"], 2);
        assert_eq!(counts.flows, 3);
        // The closed section ends where it closed; the open one at its call's return.
        let writer_ends: Vec<u64> = trace
            .trace_events
            .iter()
            .filter(|e| e.cat == "writer" && e.ph == Phase::Complete)
            .map(|e| kcmp_trace_common::json::timeline::nanos(e.ts + e.dur.unwrap_or(0.0)))
            .collect();
        assert_eq!(writer_ends, vec![3_500 - 500, 9_000 - 500]);
    }

    #[test]
    fn what_cannot_be_drawn_is_counted() {
        let mut t = Timeline::new(true);
        t.add(&call(11, 0, 10, "busy"));
        t.add(&call(11, 20, 30, "fast"));
        let mut old = fallback(12, (0, 10), (2, 3), (0, None));
        old.lock_wait_start_ns = None;
        if let Some(w) = old.writer.as_mut() {
            w.start_ns = None;
        }
        t.add(&old);
        assert_eq!(
            t.undrawn(),
            Undrawn {
                no_writer: 1,
                waits_without_start: 1,
                sections_without_bounds: 1,
                fast_left_out: 1,
            }
        );
        let counts = check(&t.finish(BTreeMap::new())).expect("holds together");
        assert_eq!(counts.flows, 0);
        assert_eq!(counts.slices["kcmp"], 2);
    }
}
