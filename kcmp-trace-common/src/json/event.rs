//! Per-call events as `events --json`, the daemon's `/events` and recordings carry them;
//! what `events --json` says at its end; the daemon's notice of events a client missed.

use std::{borrow::Cow, collections::BTreeMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::report::Incomplete;
use crate::{
    event::{Event, comm_bytes},
    kcmp::{type_slot, type_slot_name},
    maps::writer,
    result::errno_name,
};

/// The `struct kcmp_epoll_slot` a KCMP_EPOLL_TFD call pointed to, as the caller wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EpollSlotRecord {
    pub efd: u32,
    pub tfd: u32,
    pub toff: u32,
}

/// What took a process's exec_update_lock for writing.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WriterKind {
    /// An exec().
    Exec,
    /// Landlock TSYNC (7.2 and later).
    Tsync,
}

impl WriterKind {
    /// The kind the kernel side wrote (`maps::writer`); None for a value it never writes.
    pub fn from_raw(kind: u32) -> Option<WriterKind> {
        match kind {
            writer::EXEC => Some(WriterKind::Exec),
            writer::TSYNC => Some(WriterKind::Tsync),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WriterKind::Exec => "exec",
            WriterKind::Tsync => "tsync",
        }
    }
}

/// The write section a retry or busy call met: who held exec_update_lock for writing, and
/// for how much of the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriterRecord<'a> {
    pub kind: WriterKind,
    /// The thread that opened the section.
    pub pid: u32,
    pub tgid: u32,
    /// The writer's comm when the section opened.
    pub comm: Cow<'a, str>,
    /// How long the section and the call overlapped: from the later of their starts to the
    /// earlier of their ends (a section still open ends with the call).
    pub overlap_ns: u64,
    /// When the section opened (the clock of `ts_ns`); absent in recordings that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ns: Option<u64>,
    /// When it closed; absent when it was still open as the call returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
}

/// A kcmp return value by name: `equal`/`less`/`greater`/`unordered`, or the errno's.
pub fn result_name(ret: i64) -> Cow<'static, str> {
    match ret {
        0 => "equal".into(),
        1 => "less".into(),
        2 => "greater".into(),
        3 => "unordered".into(),
        r if r < 0 => errno_name(-r).map_or_else(|| format!("errno{}", -r).into(), Cow::Borrowed),
        r => format!("ret{r}").into(),
    }
}

/// One kcmp call. Made from an [`Event`], it borrows the event's bytes and static names:
/// formatting one allocates nothing on the way to the output buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventRecord<'a> {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: Cow<'a, str>,
    pub r#type: i64,
    pub type_name: Cow<'a, str>,
    pub pid1: i32,
    pub pid2: i32,
    /// The index arguments as passed; only KCMP_FILE and KCMP_EPOLL_TFD use them.
    pub idx1: u64,
    pub idx2: u64,
    /// KCMP_EPOLL_TFD: the `struct kcmp_epoll_slot` idx2 points to, read at entry (absent
    /// when unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoll_slot: Option<EpollSlotRecord>,
    pub ret: i64,
    /// `equal`/`less`/`greater`/`unordered`, or the errno name.
    pub result: Cow<'a, str>,
    pub outcome: Cow<'a, str>,
    pub latency_ns: u64,
    pub lock_wait_ns: u64,
    /// When the call's first exec_update_lock wait began (the clock of `ts_ns`); its waits
    /// lasted `lock_wait_ns` in all. Absent when it did not wait (or in older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_start_ns: Option<u64>,
    /// The write section (exec or TSYNC) a retry or busy call met; absent for other calls,
    /// and for a retry or busy call when none was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<WriterRecord<'a>>,
}

impl<'a> From<&'a Event> for EventRecord<'a> {
    fn from(e: &'a Event) -> Self {
        EventRecord {
            ts_ns: e.ts_ns,
            tgid: e.tgid,
            tid: e.tid,
            comm: String::from_utf8_lossy(comm_bytes(&e.comm)),
            r#type: e.raw_type,
            type_name: type_slot_name(type_slot(e.raw_type as u64)).into(),
            pid1: e.pid1,
            pid2: e.pid2,
            idx1: e.idx1,
            idx2: e.idx2,
            epoll_slot: (e.epoll.read != 0).then_some(EpollSlotRecord {
                efd: e.epoll.efd,
                tfd: e.epoll.tfd,
                toff: e.epoll.toff,
            }),
            ret: e.ret,
            result: result_name(e.ret),
            outcome: e.outcome().name().into(),
            latency_ns: e.latency_ns,
            lock_wait_ns: e.lock_wait_ns,
            lock_wait_start_ns: (e.lock_wait_start_ns != 0).then_some(e.lock_wait_start_ns),
            writer: match WriterKind::from_raw(e.writer_kind) {
                Some(kind) if e.writer_tgid != 0 => Some(WriterRecord {
                    kind,
                    pid: e.writer_tid,
                    tgid: e.writer_tgid,
                    comm: String::from_utf8_lossy(comm_bytes(&e.writer_comm)),
                    overlap_ns: e.writer_overlap_ns,
                    start_ns: Some(e.writer_start_ns),
                    end_ns: (e.writer_end_ns != 0).then_some(e.writer_end_ns),
                }),
                _ => None,
            },
        }
    }
}

/// What `events --json` writes on stderr at its end: how many events it delivered, and
/// how far the calls' count may fall short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventsSummary {
    pub events_delivered: u64,
    /// Events the kernel could not write: the ring buffer was full.
    pub events_dropped: u64,
    /// Events still staged in the kernel at the end, not shown.
    pub events_unflushed: u64,
    /// Calls counted while it ran.
    pub calls: u64,
    pub unpaired_exits: u64,
    pub lost_exits: u64,
    /// Runs of each program the kernel skipped (programs with none left out).
    pub missed_runs: BTreeMap<String, u64>,
    pub incomplete: Incomplete,
    pub exact: bool,
}

/// Why the daemon's `/events` left events out of a client's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The kernel's ring buffer was full: events of any process were lost.
    RingBuffer,
    /// The client read too slowly: its queue was full.
    SlowClient,
}

/// A line of the daemon's `/events` in place of the events a client missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DropNotice {
    pub dropped: u64,
    pub reason: DropReason,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{EpollSlot, comm_key},
        outcome::Outcome,
    };

    fn event(outcome: Outcome, writer_tgid: u32, writer_kind: u32) -> Event {
        Event {
            ts_ns: 1,
            latency_ns: 5000,
            lock_wait_ns: 4000,
            idx1: 0,
            idx2: 0,
            ret: 0,
            raw_type: 0,
            writer_overlap_ns: 3000,
            lock_wait_start_ns: 0,
            writer_start_ns: 900,
            writer_end_ns: 0,
            tgid: 10,
            tid: 11,
            pid1: 10,
            pid2: 20,
            writer_tgid,
            writer_tid: 21,
            writer_kind,
            outcome: outcome as u32,
            epoll: EpollSlot::default(),
            comm: comm_key(b"stress"),
            writer_comm: comm_key(b"kcmp-racer"),
        }
    }

    #[test]
    fn a_fallback_names_its_writer() {
        let e = event(Outcome::Busy, 20, writer::TSYNC);
        let json = serde_json::to_value(EventRecord::from(&e)).expect("json");
        assert_eq!(
            json["writer"],
            serde_json::json!({
                "kind": "tsync", "pid": 21, "tgid": 20, "comm": "kcmp-racer", "overlap_ns": 3000,
                "start_ns": 900
            })
        );
        let exec = event(Outcome::Retry, 20, writer::EXEC);
        let exec = EventRecord::from(&exec);
        assert_eq!(exec.writer.map(|w| w.kind), Some(WriterKind::Exec));
    }

    #[test]
    fn no_writer_seen_is_no_writer_key() {
        let e = event(Outcome::Retry, 0, writer::EXEC);
        let json = serde_json::to_value(EventRecord::from(&e)).expect("json");
        assert!(json.get("writer").is_none());
        // A kind the kernel side never writes names no writer rather than a guessed one.
        assert!(
            EventRecord::from(&event(Outcome::Busy, 20, 7))
                .writer
                .is_none()
        );
    }
}
