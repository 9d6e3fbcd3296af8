//! `report`'s fallbacks by writer: a recording's retry and busy calls counted under the write
//! section their events name, by (kind, tgid, comm). Calls whose event names none are
//! counted apart, never assigned to a writer.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::event::{EventRecord, WriterKind};
use crate::outcome::Outcome;

/// Calls that left the fast path because of a writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FallbackCounts {
    /// Revalidation failed: the call retried, then took the locks.
    pub retry: u64,
    /// A writer was active: the call went straight to the locks.
    pub busy: u64,
}

impl FallbackCounts {
    pub fn calls(&self) -> u64 {
        self.retry + self.busy
    }
}

/// The fallbacks one writer caused, and how long its sections overlapped those calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriterRow {
    pub kind: WriterKind,
    pub tgid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub fallbacks: FallbackCounts,
    /// The overlaps of its sections with the calls, summed.
    pub overlap_total_ns: u64,
    /// The longest of those overlaps.
    pub overlap_max_ns: u64,
    /// The calls' exec_update_lock waits, summed: what the writer, holding the lock or
    /// having just released it, cost its readers (`perf lock contention -o`'s wait time by
    /// owner).
    pub lock_wait_total_ns: u64,
}

impl WriterRow {
    /// What a row is known by, in either of two recordings.
    pub fn key(&self) -> (WriterKind, u32, &str) {
        (self.kind, self.tgid, &self.comm)
    }
}

/// Every retry and busy call among a recording's events, by writer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FallbackTable {
    /// Most fallbacks first (then by kind, tgid and comm).
    pub writers: Vec<WriterRow>,
    /// Calls whose event names no writer: no write section of pid1's or pid2's process was
    /// seen overlapping them.
    pub no_writer: FallbackCounts,
    /// The writers' and `no_writer` together: every retry and busy event.
    pub total: FallbackCounts,
}

/// `report`'s fallbacks by writer, or why there are none to show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FallbacksByWriter {
    /// The recording kept no per-call events: it needs `record --events`.
    NeedsEvents,
    Counted(FallbackTable),
}

/// Adds up a recording's events as they are read.
#[derive(Debug, Default)]
pub struct FallbackTally {
    writers: BTreeMap<(WriterKind, u32, String), WriterRow>,
    no_writer: FallbackCounts,
}

impl FallbackTally {
    /// Counts one event if it is a retry or a busy fallback.
    pub fn add(&mut self, e: &EventRecord) {
        let busy = match e.outcome.as_ref() {
            o if o == Outcome::Busy.name() => true,
            o if o == Outcome::Retry.name() => false,
            _ => return,
        };
        let counts = match &e.writer {
            None => &mut self.no_writer,
            Some(w) => {
                let row = self
                    .writers
                    .entry((w.kind, w.tgid, w.comm.to_string()))
                    .or_insert_with(|| WriterRow {
                        kind: w.kind,
                        tgid: w.tgid,
                        comm: w.comm.to_string(),
                        fallbacks: FallbackCounts::default(),
                        overlap_total_ns: 0,
                        overlap_max_ns: 0,
                        lock_wait_total_ns: 0,
                    });
                row.overlap_total_ns += w.overlap_ns;
                row.lock_wait_total_ns += e.lock_wait_ns;
                row.overlap_max_ns = row.overlap_max_ns.max(w.overlap_ns);
                &mut row.fallbacks
            }
        };
        if busy {
            counts.busy += 1;
        } else {
            counts.retry += 1;
        }
    }

    pub fn table(self) -> FallbackTable {
        let mut writers: Vec<WriterRow> = self.writers.into_values().collect();
        // Stable: ties keep the map's (kind, tgid, comm) order.
        writers.sort_by_key(|w| std::cmp::Reverse(w.fallbacks.calls()));
        let mut total = self.no_writer;
        for w in &writers {
            total.retry += w.fallbacks.retry;
            total.busy += w.fallbacks.busy;
        }
        FallbackTable {
            writers,
            no_writer: self.no_writer,
            total,
        }
    }
}

/// Two tables' writers side by side: A's rows in its order, each beside B's row of the same
/// (kind, tgid, comm) if any, then B's rows that A lacks.
pub fn side_by_side<'a>(
    a: &'a FallbackTable,
    b: &'a FallbackTable,
) -> Vec<(Option<&'a WriterRow>, Option<&'a WriterRow>)> {
    let in_b = |row: &WriterRow| b.writers.iter().find(|w| w.key() == row.key());
    let in_a = |row: &WriterRow| a.writers.iter().any(|w| w.key() == row.key());
    a.writers
        .iter()
        .map(|w| (Some(w), in_b(w)))
        .chain(
            b.writers
                .iter()
                .filter(|w| !in_a(w))
                .map(|w| (None, Some(w))),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::event::WriterRecord;

    fn event(
        outcome: Outcome,
        writer: Option<(WriterKind, u32, &'static str, u64)>,
    ) -> EventRecord<'static> {
        EventRecord {
            ts_ns: 1,
            tgid: 10,
            tid: 11,
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
            outcome: outcome.name().into(),
            latency_ns: 1000,
            // Each fallback waited twice as long as its writer overlapped it.
            lock_wait_ns: writer.map_or(0, |(.., overlap_ns)| 2 * overlap_ns),
            lock_wait_start_ns: None,
            writer: writer.map(|(kind, tgid, comm, overlap_ns)| WriterRecord {
                kind,
                pid: tgid + 1,
                tgid,
                comm: comm.into(),
                overlap_ns,
                start_ns: None,
                end_ns: None,
            }),
        }
    }

    fn tally(events: &[EventRecord]) -> FallbackTable {
        let mut t = FallbackTally::default();
        for e in events {
            t.add(e);
        }
        t.table()
    }

    #[test]
    fn fallbacks_add_up_by_writer() {
        use WriterKind::{Exec, Tsync};
        let t = tally(&[
            event(Outcome::Retry, Some((Exec, 20, "kcmp-racer", 300))),
            event(Outcome::Busy, Some((Exec, 20, "kcmp-racer", 900))),
            event(Outcome::Busy, Some((Exec, 20, "kcmp-racer", 100))),
            event(Outcome::Retry, Some((Tsync, 30, "kcmp-trace", 50))),
            // The same process under another comm (before and after its exec) is another row.
            event(Outcome::Retry, Some((Exec, 20, "kcmp-trace", 70))),
            event(Outcome::Busy, None),
            // Not fallbacks: left out, even with a writer.
            event(Outcome::Fast, None),
            event(Outcome::Locked, Some((Exec, 20, "kcmp-racer", 5))),
        ]);
        let rows: Vec<_> = t
            .writers
            .iter()
            .map(|w| {
                (
                    w.key(),
                    w.fallbacks.retry,
                    w.fallbacks.busy,
                    w.overlap_total_ns,
                    w.overlap_max_ns,
                    w.lock_wait_total_ns,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ((Exec, 20, "kcmp-racer"), 1, 2, 1300, 900, 2600),
                ((Exec, 20, "kcmp-trace"), 1, 0, 70, 70, 140),
                ((Tsync, 30, "kcmp-trace"), 1, 0, 50, 50, 100),
            ]
        );
        assert_eq!(t.no_writer, FallbackCounts { retry: 0, busy: 1 });
        assert_eq!(t.total, FallbackCounts { retry: 3, busy: 3 });
    }

    #[test]
    fn no_fallbacks_is_an_empty_table() {
        let t = tally(&[event(Outcome::Fast, None)]);
        assert!(t.writers.is_empty());
        assert_eq!(t.total.calls(), 0);
        let json = serde_json::to_value(FallbacksByWriter::Counted(t)).expect("json");
        assert_eq!(json["status"], "counted");
        assert_eq!(json["total"], serde_json::json!({"retry": 0, "busy": 0}));
        let needs = serde_json::to_value(FallbacksByWriter::NeedsEvents).expect("json");
        assert_eq!(needs, serde_json::json!({"status": "needs_events"}));
    }

    #[test]
    fn tables_join_on_kind_tgid_and_comm() {
        use WriterKind::{Exec, Tsync};
        let a = tally(&[
            event(Outcome::Retry, Some((Exec, 20, "kcmp-racer", 1))),
            event(Outcome::Retry, Some((Tsync, 30, "kcmp-trace", 1))),
        ]);
        let b = tally(&[
            event(Outcome::Busy, Some((Tsync, 30, "kcmp-trace", 1))),
            event(Outcome::Busy, Some((Exec, 40, "kcmp-racer", 1))),
        ]);
        let joined: Vec<_> = side_by_side(&a, &b)
            .into_iter()
            .map(|(x, y)| (x.map(WriterRow::key), y.map(WriterRow::key)))
            .collect();
        assert_eq!(
            joined,
            vec![
                (Some((Exec, 20, "kcmp-racer")), None),
                (
                    Some((Tsync, 30, "kcmp-trace")),
                    Some((Tsync, 30, "kcmp-trace"))
                ),
                (None, Some((Exec, 40, "kcmp-racer"))),
            ]
        );
    }
}
