//! Timelines in the Trace Event Format, the JSON that the Perfetto UI and chrome://tracing
//! load: the events `report --trace` writes, and [`check`], which holds a timeline to the
//! format's rules (slices nest on their track, each track's timestamps never go back,
//! every flow arrow has both ends, each inside a slice).
//!
//! Only the parts used here: complete slices (`X`), flow start and end (`s`, `f` bound to
//! the enclosing slice) and the process and thread names (`M`). Timestamps are in
//! microseconds, fractional to the nanosecond.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// A whole trace file (the format's "JSON Object Format").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceFile {
    #[serde(rename = "traceEvents")]
    pub trace_events: Vec<TraceEvent>,
    #[serde(rename = "displayTimeUnit")]
    pub display_time_unit: String,
    /// Shown by the viewers as the trace's metadata.
    #[serde(rename = "otherData", default)]
    pub other_data: BTreeMap<String, String>,
}

/// An event's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// A complete slice: `ts` to `ts + dur`.
    #[serde(rename = "X")]
    Complete,
    /// A flow arrow's tail, bound to the slice around `ts` on its track.
    #[serde(rename = "s")]
    FlowStart,
    /// A flow arrow's head; with `bp: "e"`, bound to the slice around `ts`.
    #[serde(rename = "f")]
    FlowEnd,
    /// A name for a process or thread track.
    #[serde(rename = "M")]
    Metadata,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cat: String,
    pub ph: Phase,
    /// Microseconds.
    #[serde(default)]
    pub ts: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dur: Option<f64>,
    pub pid: u32,
    pub tid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// A flow end's binding point: `e`, the enclosing slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bp: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, Value>,
}

/// Nanoseconds as the format's microseconds.
pub fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The format's microseconds back as whole nanoseconds.
pub fn nanos(us: f64) -> u64 {
    (us * 1000.0).round() as u64
}

/// What a timeline that holds together contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineCounts {
    /// Slices by category.
    pub slices: BTreeMap<String, u64>,
    /// Flow arrows with both ends.
    pub flows: u64,
    /// Tracks (pid, tid) with at least one event.
    pub tracks: u64,
}

/// Why a timeline does not hold together.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimelineError {
    #[error("track {pid}/{tid}: {name:?} at {ts_ns} ns comes after an event at {last_ns} ns")]
    BackInTime {
        pid: u32,
        tid: u32,
        name: String,
        ts_ns: u64,
        last_ns: u64,
    },
    #[error(
        "track {pid}/{tid}: slice {name:?} [{start_ns}, {end_ns}] ns crosses the end of the \
         slice around it, at {outer_end_ns} ns"
    )]
    Crossing {
        pid: u32,
        tid: u32,
        name: String,
        start_ns: u64,
        end_ns: u64,
        outer_end_ns: u64,
    },
    #[error("slice {name:?} has no duration")]
    NoDuration { name: String },
    #[error("flow {id}: {what}")]
    Flow { id: u64, what: String },
    #[error("{ph:?} event {name:?} without an id")]
    NoId { ph: Phase, name: String },
}

/// A flow end as seen: where, and whether a slice on its track encloses it.
#[derive(Default)]
struct FlowEnds {
    starts: Vec<((u32, u32), u64)>,
    ends: Vec<((u32, u32), u64, bool)>,
}

/// Holds `trace` to the format's rules, as the viewers rely on them: on each track (pid,
/// tid) timestamps never decrease in file order and slices nest (a slice ends inside the
/// slice around it); each flow id has one start and one end (bound to the enclosing
/// slice), each inside a slice of its track.
pub fn check(trace: &TraceFile) -> Result<TimelineCounts, TimelineError> {
    let mut counts = TimelineCounts::default();
    // Per track: the last timestamp, the ends of the slices still open, and the slices.
    let mut last: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut open: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    let mut slices: BTreeMap<(u32, u32), Vec<(u64, u64)>> = BTreeMap::new();
    let mut flows: BTreeMap<u64, FlowEnds> = BTreeMap::new();
    for e in &trace.trace_events {
        if e.ph == Phase::Metadata {
            continue;
        }
        let track = (e.pid, e.tid);
        let ts = nanos(e.ts);
        let before = last.entry(track).or_insert(ts);
        if ts < *before {
            return Err(TimelineError::BackInTime {
                pid: e.pid,
                tid: e.tid,
                name: e.name.clone(),
                ts_ns: ts,
                last_ns: *before,
            });
        }
        *before = ts;
        match e.ph {
            Phase::Complete => {
                let dur = e.dur.ok_or_else(|| TimelineError::NoDuration {
                    name: e.name.clone(),
                })?;
                let end = ts + nanos(dur);
                let stack = open.entry(track).or_default();
                while stack.last().is_some_and(|&outer_end| outer_end <= ts) {
                    stack.pop();
                }
                if let Some(&outer_end) = stack.last()
                    && end > outer_end
                {
                    return Err(TimelineError::Crossing {
                        pid: e.pid,
                        tid: e.tid,
                        name: e.name.clone(),
                        start_ns: ts,
                        end_ns: end,
                        outer_end_ns: outer_end,
                    });
                }
                stack.push(end);
                slices.entry(track).or_default().push((ts, end));
                *counts.slices.entry(e.cat.clone()).or_default() += 1;
            }
            Phase::FlowStart | Phase::FlowEnd => {
                let id = e.id.ok_or_else(|| TimelineError::NoId {
                    ph: e.ph,
                    name: e.name.clone(),
                })?;
                let ends = flows.entry(id).or_default();
                if e.ph == Phase::FlowStart {
                    ends.starts.push((track, ts));
                } else {
                    ends.ends.push((track, ts, e.bp.as_deref() == Some("e")));
                }
            }
            Phase::Metadata => {}
        }
    }
    let inside = |track: &(u32, u32), ts: u64| {
        slices
            .get(track)
            .is_some_and(|s| s.iter().any(|&(start, end)| start <= ts && ts <= end))
    };
    for (id, ends) in &flows {
        let flow = |what: String| TimelineError::Flow { id: *id, what };
        let ([(from, from_ts)], [(to, to_ts, bound)]) = (&ends.starts[..], &ends.ends[..]) else {
            return Err(flow(format!(
                "{} starts and {} ends, not one of each",
                ends.starts.len(),
                ends.ends.len()
            )));
        };
        if !bound {
            return Err(flow("its end is not bound to the enclosing slice".into()));
        }
        if !inside(from, *from_ts) {
            return Err(flow(format!(
                "starts at {from_ts} ns outside every slice of {from:?}"
            )));
        }
        if !inside(to, *to_ts) {
            return Err(flow(format!(
                "ends at {to_ts} ns outside every slice of {to:?}"
            )));
        }
        counts.flows += 1;
    }
    counts.tracks = last.len() as u64;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(cat: &str, tid: u32, ts_ns: u64, dur_ns: u64) -> TraceEvent {
        TraceEvent {
            name: cat.into(),
            cat: cat.into(),
            ph: Phase::Complete,
            ts: micros(ts_ns),
            dur: Some(micros(dur_ns)),
            pid: 1,
            tid,
            id: None,
            bp: None,
            args: BTreeMap::new(),
        }
    }

    fn flow(ph: Phase, id: u64, tid: u32, ts_ns: u64) -> TraceEvent {
        TraceEvent {
            name: "fallback".into(),
            cat: "writer".into(),
            ph,
            ts: micros(ts_ns),
            dur: None,
            pid: 1,
            tid,
            id: Some(id),
            bp: (ph == Phase::FlowEnd).then(|| "e".into()),
            args: BTreeMap::new(),
        }
    }

    fn file(events: Vec<TraceEvent>) -> TraceFile {
        TraceFile {
            trace_events: events,
            display_time_unit: "ns".into(),
            other_data: BTreeMap::new(),
        }
    }

    /// A writer's section on thread 2 and the call it made fall back on thread 3, with the
    /// call's lock wait inside it and an arrow between them.
    fn good() -> Vec<TraceEvent> {
        vec![
            slice("writer", 2, 100, 400),
            flow(Phase::FlowStart, 1, 2, 100),
            slice("kcmp", 3, 150, 1000),
            flow(Phase::FlowEnd, 1, 3, 150),
            slice("lock", 3, 200, 300),
            slice("kcmp", 3, 2000, 10),
        ]
    }

    #[test]
    fn a_timeline_that_holds_together_is_counted() {
        let counts = check(&file(good())).expect("holds together");
        assert_eq!(counts.flows, 1);
        assert_eq!(counts.tracks, 2);
        assert_eq!(counts.slices["kcmp"], 2);
        assert_eq!(counts.slices["lock"], 1);
        assert_eq!(counts.slices["writer"], 1);
    }

    #[test]
    fn a_wait_that_outlasts_its_call_crosses_it() {
        let mut events = good();
        events[4] = slice("lock", 3, 200, 2000);
        assert!(matches!(
            check(&file(events)),
            Err(TimelineError::Crossing { .. })
        ));
    }

    #[test]
    fn time_never_goes_back_on_a_track() {
        let mut events = good();
        events.push(slice("kcmp", 3, 1500, 10));
        assert!(matches!(
            check(&file(events)),
            Err(TimelineError::BackInTime { .. })
        ));
    }

    #[test]
    fn every_flow_has_both_ends_inside_slices() {
        let mut unended = good();
        unended.remove(3);
        assert!(matches!(
            check(&file(unended)),
            Err(TimelineError::Flow { .. })
        ));
        let mut outside = good();
        outside.remove(3);
        outside.insert(4, flow(Phase::FlowEnd, 1, 3, 1500));
        assert!(matches!(
            check(&file(outside)),
            Err(TimelineError::Flow { .. })
        ));
        let mut unbound = good();
        unbound[3].bp = None;
        assert!(matches!(
            check(&file(unbound)),
            Err(TimelineError::Flow { .. })
        ));
    }

    #[test]
    fn reads_back_what_it_writes() {
        let f = file(good());
        let text = serde_json::to_string(&f).expect("json");
        assert!(text.contains(r#""traceEvents""#) && text.contains(r#""ph":"X""#));
        let back: TraceFile = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, f);
    }
}
