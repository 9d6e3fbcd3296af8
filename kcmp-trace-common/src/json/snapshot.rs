//! What the daemon's `/api/v1/snapshot` sends and `watch --connect` reads: everything since
//! attach. Raw cumulative counters travel along with the report, so a client can diff two
//! snapshots into exact interval reports; recordings keep the same counters.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    plan::Plan,
    readout::{CallerRow, HookCounters, ProcessRow},
    report::Report,
    stacks::StackRow,
};
use crate::{
    hist::HIST_SLOTS, kcmp::TYPE_SLOTS, maps::misc, outcome::OUTCOMES, reader::ReaderCounters,
    result::RESULT_SLOTS, snapshot::Counters,
};

/// `Counters` flattened, with its shape so a mismatched client notices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WireCounters {
    /// [outcomes, types, results, histogram slots, misc slots].
    pub shape: [usize; 5],
    /// calls[outcome][type][result], row-major.
    pub calls: Vec<u64>,
    /// latency[outcome][slot], row-major.
    pub latency: Vec<u64>,
    pub lock_wait: Vec<u64>,
    pub exec_hold: Vec<u64>,
    /// TSYNC write sections. Absent from recordings made before they were told apart from
    /// exec's: read as an empty histogram.
    #[serde(default = "empty_hist")]
    pub tsync_hold: Vec<u64>,
    /// Exact sums of the histograms: latency per outcome, lock wait, write sections.
    pub latency_sum_ns: Vec<u64>,
    pub lock_wait_sum_ns: u64,
    pub exec_hold_sum_ns: u64,
    /// Absent from the same recordings as `tsync_hold`: read as 0.
    #[serde(default)]
    pub tsync_hold_sum_ns: u64,
    pub misc: Vec<u64>,
    /// `Counters::readers`, each slot's cells in order; absent when no reader was followed
    /// (or none counted anything).
    #[serde(default, skip_serializing_if = "all_zero")]
    pub readers: Vec<u64>,
}

fn all_zero(cells: &[u64]) -> bool {
    cells.iter().all(|&n| n == 0)
}

fn empty_hist() -> Vec<u64> {
    vec![0; HIST_SLOTS]
}

const SHAPE: [usize; 5] = [OUTCOMES, TYPE_SLOTS, RESULT_SLOTS, HIST_SLOTS, misc::SLOTS];

/// Why counters read back do not fit this build's.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("the counters have shape {0:?}, this kcmp-trace expects {SHAPE:?} (versions differ)")]
    Shape([usize; 5]),
    #[error("counters {what}: {got} values, expected {want} (versions differ)")]
    Length {
        what: &'static str,
        got: usize,
        want: usize,
    },
}

impl From<&Counters> for WireCounters {
    fn from(c: &Counters) -> Self {
        WireCounters {
            shape: SHAPE,
            calls: c.calls.as_flattened().as_flattened().to_vec(),
            latency: c.latency.as_flattened().to_vec(),
            lock_wait: c.lock_wait.to_vec(),
            exec_hold: c.exec_hold.to_vec(),
            tsync_hold: c.tsync_hold.to_vec(),
            latency_sum_ns: c.latency_sum_ns.to_vec(),
            lock_wait_sum_ns: c.lock_wait_sum_ns,
            exec_hold_sum_ns: c.exec_hold_sum_ns,
            tsync_hold_sum_ns: c.tsync_hold_sum_ns,
            misc: c.misc.to_vec(),
            readers: c
                .readers
                .iter()
                .flat_map(ReaderCounters::cells)
                .copied()
                .collect(),
        }
    }
}

impl WireCounters {
    pub fn to_counters(&self) -> Result<Counters, ShapeError> {
        // Miscellaneous counters are only ever appended: a file written before one existed
        // has fewer, and the ones it lacks are 0.
        let misc_slots = self.shape[4];
        if self.shape[..4] != SHAPE[..4] || misc_slots > misc::SLOTS {
            return Err(ShapeError::Shape(self.shape));
        }
        let mut c = Counters::ZERO;
        let copy = |dst: &mut [u64], src: &[u64], what| {
            if dst.len() != src.len() {
                return Err(ShapeError::Length {
                    what,
                    got: src.len(),
                    want: dst.len(),
                });
            }
            dst.copy_from_slice(src);
            Ok(())
        };
        copy(
            c.calls.as_flattened_mut().as_flattened_mut(),
            &self.calls,
            "calls",
        )?;
        copy(c.latency.as_flattened_mut(), &self.latency, "latency")?;
        copy(&mut c.lock_wait, &self.lock_wait, "lock_wait")?;
        copy(&mut c.exec_hold, &self.exec_hold, "exec_hold")?;
        copy(&mut c.tsync_hold, &self.tsync_hold, "tsync_hold")?;
        copy(
            &mut c.latency_sum_ns,
            &self.latency_sum_ns,
            "latency_sum_ns",
        )?;
        copy(&mut c.misc[..misc_slots], &self.misc, "misc")?;
        if !self.readers.is_empty() {
            let mut cells: Vec<&mut u64> = c
                .readers
                .iter_mut()
                .flat_map(ReaderCounters::cells_mut)
                .collect();
            if cells.len() != self.readers.len() {
                return Err(ShapeError::Length {
                    what: "readers",
                    got: self.readers.len(),
                    want: cells.len(),
                });
            }
            for (dst, &src) in cells.iter_mut().zip(&self.readers) {
                **dst = src;
            }
        }
        c.lock_wait_sum_ns = self.lock_wait_sum_ns;
        c.exec_hold_sum_ns = self.exec_hold_sum_ns;
        c.tsync_hold_sum_ns = self.tsync_hold_sum_ns;
        Ok(c)
    }
}

/// The daemon's snapshot: everything since attach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot<'a> {
    /// The daemon's kcmp-trace version.
    pub version: String,
    /// Seconds since attach.
    pub elapsed_s: f64,
    pub plan: Cow<'a, Plan>,
    /// The numbers `watch --json` prints, over everything since attach.
    pub report: Report,
    pub counters: WireCounters,
    /// Every process seen, busiest first.
    pub processes: Cow<'a, [ProcessRow]>,
    /// What the kernel counted for each attached program (skipped runs, run time).
    pub programs: Cow<'a, [HookCounters]>,
    /// Other callers by call site (readers followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callers: Option<Cow<'a, [CallerRow]>>,
    /// Lock waits and write sections by kernel stack, since attach (`--stacks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<Cow<'a, [StackRow]>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip() {
        let mut c = Counters::ZERO;
        c.calls[3][2][1] = 7;
        c.latency[1][64] = 2;
        c.exec_hold[5] = 1;
        c.misc[misc::EVENTS_DROPPED] = 9;
        c.latency_sum_ns[1] = 123;
        c.lock_wait_sum_ns = 45;
        c.exec_hold_sum_ns = 67;
        c.tsync_hold[6] = 2;
        c.tsync_hold_sum_ns = 89;
        c.readers[2].calls[1] = 11;
        c.readers[3].unpaired_exits = 3;
        let json = serde_json::to_string(&WireCounters::from(&c)).expect("encode");
        let wire: WireCounters = serde_json::from_str(&json).expect("decode");
        let back = wire.to_counters().expect("same shape");
        assert_eq!(back.calls[3][2][1], 7);
        assert_eq!(back.latency[1][64], 2);
        assert_eq!(back.exec_hold[5], 1);
        assert_eq!(back.misc[misc::EVENTS_DROPPED], 9);
        // The histograms' sums travel too, so a client's means are the daemon's.
        assert_eq!(back.latency_sum_ns[1], 123);
        assert_eq!(back.lock_wait_sum_ns, 45);
        assert_eq!(back.exec_hold_sum_ns, 67);
        assert_eq!(back.tsync_hold[6], 2);
        assert_eq!(back.tsync_hold_sum_ns, 89);
        assert_eq!(back.readers, c.readers);
        // A kcmp-only snapshot sends no reader cells; one without them reads as zeros.
        let kcmp_only = WireCounters::from(&Counters::ZERO);
        assert!(kcmp_only.readers.is_empty() || all_zero(&kcmp_only.readers));
        assert!(
            !serde_json::to_string(&kcmp_only)
                .expect("encode")
                .contains("readers")
        );
        let mut bad = WireCounters::from(&c);
        bad.shape[3] = 64;
        assert!(bad.to_counters().is_err());
        let mut newer = WireCounters::from(&c);
        newer.shape[4] += 1;
        newer.misc.push(1);
        assert!(newer.to_counters().is_err());
    }

    #[test]
    fn counters_written_before_a_misc_counter_existed_read_it_as_zero() {
        let mut c = Counters::ZERO;
        c.misc[misc::OTHERS_UNPLACED] = 4;
        c.misc[misc::STACKS_DROPPED] = 5;
        let mut older = WireCounters::from(&c);
        older.shape[4] = misc::STACKS_DROPPED;
        older.misc.truncate(misc::STACKS_DROPPED);
        let back = older.to_counters().expect("an older shape");
        assert_eq!(back.misc[misc::OTHERS_UNPLACED], 4);
        assert_eq!(back.misc[misc::STACKS_DROPPED], 0);
    }
}
