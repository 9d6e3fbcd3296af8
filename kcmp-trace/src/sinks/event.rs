//! Per-call events as text lines or NDJSON.

use kcmp_trace_common::{
    event::{Event, comm_bytes},
    kcmp::{type_slot, type_slot_name},
    result::errno_name,
};
use serde::Serialize;

/// An event as programs read it.
#[derive(Debug, Serialize)]
pub struct EventRecord {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub r#type: i64,
    pub type_name: &'static str,
    pub pid1: i32,
    pub pid2: i32,
    pub idx1: u64,
    pub idx2: u64,
    pub ret: i64,
    /// `equal`/`less`/`greater`/`unordered`, or the errno name.
    pub result: String,
    pub outcome: &'static str,
    pub latency_ns: u64,
    pub lock_wait_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_comm: Option<String>,
}

pub fn result_name(ret: i64) -> String {
    match ret {
        0 => "equal".into(),
        1 => "less".into(),
        2 => "greater".into(),
        3 => "unordered".into(),
        r if r < 0 => errno_name(-r).map_or_else(|| format!("errno{}", -r), str::to_owned),
        r => format!("ret{r}"),
    }
}

impl From<&Event> for EventRecord {
    fn from(e: &Event) -> Self {
        EventRecord {
            ts_ns: e.ts_ns,
            tgid: e.tgid,
            tid: e.tid,
            comm: String::from_utf8_lossy(comm_bytes(&e.comm)).into_owned(),
            r#type: e.raw_type,
            type_name: type_slot_name(type_slot(e.raw_type as u64)),
            pid1: e.pid1,
            pid2: e.pid2,
            idx1: e.idx1,
            idx2: e.idx2,
            ret: e.ret,
            result: result_name(e.ret),
            outcome: e.outcome().name(),
            latency_ns: e.latency_ns,
            lock_wait_ns: e.lock_wait_ns,
            writer_tgid: (e.writer_tgid != 0).then_some(e.writer_tgid),
            writer_comm: (e.writer_tgid != 0)
                .then(|| String::from_utf8_lossy(comm_bytes(&e.writer_comm)).into_owned()),
        }
    }
}

pub const TEXT_HEADER: &str = "TIME(ns)          COMM             TGID    TID     TYPE            PID1    PID2    IDX1     IDX2     RESULT      OUTCOME     LAT(ns)   LOCKWAIT(ns)";

pub fn text_line(r: &EventRecord) -> String {
    let mut line = format!(
        "{:<17} {:<16} {:<7} {:<7} {:<15} {:<7} {:<7} {:<8} {:<8} {:<11} {:<11} {:<9} {}",
        r.ts_ns,
        r.comm,
        r.tgid,
        r.tid,
        r.type_name,
        r.pid1,
        r.pid2,
        r.idx1,
        r.idx2,
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

    #[test]
    fn results_are_named() {
        assert_eq!(result_name(0), "equal");
        assert_eq!(result_name(3), "unordered");
        assert_eq!(result_name(-9), "EBADF");
        assert_eq!(result_name(-38), "errno38");
        assert_eq!(result_name(7), "ret7");
    }
}
