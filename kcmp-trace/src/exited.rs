//! Per-process totals that outlive their map entries.
//!
//! A tracer removes exited processes from the kernel's per-process map to keep room for
//! live ones; their final totals move here first, so every reader of the tracer still
//! sees them, not only the read that removed them.

use std::collections::{BTreeMap, VecDeque};

use kcmp_trace_common::json::readout::ProcessRow;

/// The final totals of processes removed from the map, oldest forgotten first.
#[derive(Debug)]
pub struct Exited {
    rows: BTreeMap<u32, ProcessRow>,
    /// Tgids in the order they were folded in, for forgetting the oldest.
    order: VecDeque<u32>,
    capacity: usize,
}

impl Exited {
    /// Keeps at most `capacity` processes: a reader that reads at least once per
    /// `capacity` exits sees every process's final totals.
    pub fn new(capacity: usize) -> Exited {
        Exited {
            rows: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a removed process's final totals (to those of an earlier process with the same
    /// tgid, if it is still here: a tgid's totals only grow).
    pub fn fold(&mut self, row: ProcessRow) {
        if let Some(kept) = self.rows.get_mut(&row.tgid) {
            kept.add(row);
            return;
        }
        self.order.push_back(row.tgid);
        self.rows.insert(row.tgid, row);
        while self.rows.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.rows.remove(&oldest);
        }
    }

    /// The live processes' rows with the folded totals of their tgids added, and every
    /// exited process's own: busiest first, processes without calls left out.
    pub fn merged(&self, live: Vec<ProcessRow>) -> Vec<ProcessRow> {
        let mut rows: BTreeMap<u32, ProcessRow> = self.rows.clone();
        for row in live {
            match rows.get_mut(&row.tgid) {
                Some(kept) => kept.add(row),
                None => {
                    rows.insert(row.tgid, row);
                }
            }
        }
        let mut rows: Vec<ProcessRow> = rows.into_values().filter(|r| r.calls > 0).collect();
        ProcessRow::sort_busiest_first(&mut rows);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that made `calls` calls, half of them errors.
    fn row(tgid: u32, comm: &str, calls: u64) -> ProcessRow {
        let (errors, latency_sum_ns) = (calls / 2, calls * 100);
        let comm = comm.to_owned();
        ProcessRow {
            tgid,
            comm,
            calls,
            errors,
            latency_sum_ns,
        }
    }

    fn calls(rows: &[ProcessRow]) -> Vec<(u32, u64)> {
        rows.iter().map(|r| (r.tgid, r.calls)).collect()
    }

    #[test]
    fn every_read_sees_an_exited_process_until_it_is_the_oldest_past_capacity() {
        let mut exited = Exited::new(2);
        exited.fold(row(10, "a", 3));
        let live = vec![row(11, "b", 5)];
        assert_eq!(calls(&exited.merged(live.clone())), [(11, 5), (10, 3)]);
        // A second reader gets the same.
        assert_eq!(calls(&exited.merged(live.clone())), [(11, 5), (10, 3)]);
        exited.fold(row(12, "c", 1));
        exited.fold(row(13, "d", 7));
        assert_eq!(calls(&exited.merged(Vec::new())), [(13, 7), (12, 1)]);
    }

    #[test]
    fn a_reused_tgid_adds_to_its_totals() {
        let mut exited = Exited::new(8);
        exited.fold(row(10, "old", 3));
        let merged = exited.merged(vec![row(10, "new", 2), row(11, "idle", 0)]);
        assert_eq!(calls(&merged), [(10, 5)]);
        assert_eq!(merged[0].comm, "new");
        assert_eq!(merged[0].errors, 1 + 1);
        exited.fold(row(10, "new", 2));
        assert_eq!(calls(&exited.merged(Vec::new())), [(10, 5)]);
    }
}
