//! Per-call events as text lines or NDJSON.

use kcmp_trace_common::kcmp::{KCMP_EPOLL_TFD, KCMP_FILE};

/// A call as every event line shows it (`serde_json` writes its NDJSON).
pub use kcmp_trace_common::json::event::EventRecord;

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
    if let Some(w) = &r.writer {
        line.push_str(&format!(
            " writer={}:{}[{}/{}] overlap={}ns",
            w.kind.name(),
            w.comm,
            w.tgid,
            w.pid,
            w.overlap_ns
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcmp_trace_common::{
        json::event::EpollSlotRecord,
        kcmp::{type_slot, type_slot_name},
    };

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
            type_name: type_slot_name(type_slot(r#type as u64)).into(),
            pid1: 4,
            pid2: 5,
            idx1,
            idx2,
            epoll_slot: slot,
            ret: 0,
            result: "equal".into(),
            outcome: "fast".into(),
            latency_ns: 6,
            lock_wait_ns: 0,
            lock_wait_start_ns: None,
            writer: None,
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
