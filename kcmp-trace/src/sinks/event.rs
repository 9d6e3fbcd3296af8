//! Per-call events as text lines or NDJSON.

use kcmp_trace_common::{
    event::{Event, comm_bytes},
    kcmp::{KCMP_EPOLL_TFD, KCMP_FILE, type_slot, type_slot_name},
};
use std::borrow::Cow;

use crate::readout::{EpollSlotRecord, result_name};

use serde::Serialize;

/// An event as programs read it, borrowing the event's bytes: formatting one allocates
/// nothing on the way to the output buffer.
#[derive(Debug, Serialize)]
pub struct EventRecord<'a> {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: Cow<'a, str>,
    pub r#type: i64,
    pub type_name: &'static str,
    pub pid1: i32,
    pub pid2: i32,
    /// The index arguments as passed; only KCMP_FILE and KCMP_EPOLL_TFD use them.
    pub idx1: u64,
    pub idx2: u64,
    /// KCMP_EPOLL_TFD: the `struct kcmp_epoll_slot` idx2 points to, read at entry (absent
    /// when unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoll_slot: Option<EpollSlotRecord>,
    pub ret: i64,
    /// `equal`/`less`/`greater`/`unordered`, or the errno name.
    pub result: Cow<'static, str>,
    pub outcome: &'static str,
    pub latency_ns: u64,
    pub lock_wait_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_comm: Option<Cow<'a, str>>,
}

impl<'a> From<&'a Event> for EventRecord<'a> {
    fn from(e: &'a Event) -> Self {
        EventRecord {
            ts_ns: e.ts_ns,
            tgid: e.tgid,
            tid: e.tid,
            comm: String::from_utf8_lossy(comm_bytes(&e.comm)),
            r#type: e.raw_type,
            type_name: type_slot_name(type_slot(e.raw_type as u64)),
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
            outcome: e.outcome().name(),
            latency_ns: e.latency_ns,
            lock_wait_ns: e.lock_wait_ns,
            writer_tgid: (e.writer_tgid != 0).then_some(e.writer_tgid),
            writer_comm: (e.writer_tgid != 0)
                .then(|| String::from_utf8_lossy(comm_bytes(&e.writer_comm))),
        }
    }
}

pub const TEXT_HEADER: &str = "TIME(ns)          COMM             TGID    TID     TYPE            PID1    PID2    IDX1     IDX2     RESULT      OUTCOME     LAT(ns)   LOCKWAIT(ns)";

/// (IDX1, IDX2) as text: the file descriptors of KCMP_FILE, the epoll fd and the decoded
/// slot of KCMP_EPOLL_TFD, `-` where the type compares whole tasks and ignores them.
fn indexes(r: &EventRecord) -> (String, String) {
    match r.r#type {
        t if t == KCMP_FILE as i64 => (r.idx1.to_string(), r.idx2.to_string()),
        t if t == KCMP_EPOLL_TFD as i64 => (
            r.idx1.to_string(),
            match &r.epoll_slot {
                Some(s) => format!("{{efd={}, tfd={}, toff={}}}", s.efd, s.tfd, s.toff),
                None => format!("{:#x}", r.idx2),
            },
        ),
        _ => ("-".into(), "-".into()),
    }
}

pub fn text_line(r: &EventRecord) -> String {
    let (idx1, idx2) = indexes(r);
    let mut line = format!(
        "{:<17} {:<16} {:<7} {:<7} {:<15} {:<7} {:<7} {:<8} {:<8} {:<11} {:<11} {:<9} {}",
        r.ts_ns,
        r.comm,
        r.tgid,
        r.tid,
        r.type_name,
        r.pid1,
        r.pid2,
        idx1,
        idx2,
        r.result,
        r.outcome,
        r.latency_ns,
        r.lock_wait_ns
    );
    if let (Some(tgid), Some(comm)) = (r.writer_tgid, &r.writer_comm) {
        line.push_str(&format!(" writer={comm}[{tgid}]"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        r#type: i64,
        idx1: u64,
        idx2: u64,
        slot: Option<EpollSlotRecord>,
    ) -> EventRecord<'static> {
        EventRecord {
            ts_ns: 1,
            tgid: 2,
            tid: 3,
            comm: "c".into(),
            r#type,
            type_name: type_slot_name(type_slot(r#type as u64)),
            pid1: 4,
            pid2: 5,
            idx1,
            idx2,
            epoll_slot: slot,
            ret: 0,
            result: "equal".into(),
            outcome: "fast",
            latency_ns: 6,
            lock_wait_ns: 0,
            writer_tgid: None,
            writer_comm: None,
        }
    }

    #[test]
    fn indexes_say_what_they_mean() {
        let file = record(KCMP_FILE as i64, 3, 4, None);
        assert_eq!(indexes(&file), ("3".into(), "4".into()));
        // A task-wide type ignores its indexes.
        let vm = record(1, 0, 0, None);
        assert_eq!(indexes(&vm), ("-".into(), "-".into()));
        let slot = EpollSlotRecord {
            efd: 8,
            tfd: 9,
            toff: 0,
        };
        let epoll = record(KCMP_EPOLL_TFD as i64, 7, 0x7ffd_0000, Some(slot));
        assert_eq!(indexes(&epoll).1, "{efd=8, tfd=9, toff=0}");
        let json = serde_json::to_value(&epoll).expect("json");
        assert_eq!(
            json["epoll_slot"],
            serde_json::json!({"efd": 8, "tfd": 9, "toff": 0})
        );
        // An unreadable slot shows the pointer, as strace does.
        let unread = record(KCMP_EPOLL_TFD as i64, 7, 0x10, None);
        assert_eq!(indexes(&unread).1, "0x10");
        assert!(
            serde_json::to_value(&unread)
                .expect("json")
                .get("epoll_slot")
                .is_none()
        );
    }
}
