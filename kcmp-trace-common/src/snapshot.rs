//! The aggregate counters: what the kernel keeps per CPU and what userspace sums and diffs.

use crate::{
    hist::HIST_SLOTS,
    kcmp::TYPE_SLOTS,
    maps::misc,
    outcome::{OUTCOMES, Outcome},
    reader::{READER_SLOTS, ReaderCounters},
    result::{RESULT_SLOTS, result_slot_is_error},
};

/// All in-kernel aggregates of one CPU (or their sum). One map value, so the eBPF side does
/// a single lookup per call and userspace a single read per interval.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    /// Calls by outcome, type slot and result slot.
    pub calls: [[[u64; RESULT_SLOTS]; TYPE_SLOTS]; OUTCOMES],
    /// Latency (entry to exit) log2 histogram per outcome.
    pub latency: [[u64; HIST_SLOTS]; OUTCOMES],
    /// Time spent waiting for exec_update_locks, per call that took them.
    pub lock_wait: [u64; HIST_SLOTS],
    /// Duration of exec_update_lock write sections of execs.
    pub exec_hold: [u64; HIST_SLOTS],
    /// Duration of exec_update_lock write sections of Landlock TSYNC
    /// (landlock_restrict_self() with LANDLOCK_RESTRICT_SELF_TSYNC, 7.2 and later).
    pub tsync_hold: [u64; HIST_SLOTS],
    /// Exact sums of what the histograms above count, in ns.
    pub latency_sum_ns: [u64; OUTCOMES],
    pub lock_wait_sum_ns: u64,
    pub exec_hold_sum_ns: u64,
    pub tsync_hold_sum_ns: u64,
    pub misc: [u64; misc::SLOTS],
    /// The /proc readers of exec_update_lock, then all other callers (`reader`); kcmp's
    /// own are the fields above. All zero unless readers are traced.
    pub readers: [ReaderCounters; READER_SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Self::ZERO
    }
}

impl Counters {
    pub const ZERO: Counters = Counters {
        calls: [[[0; RESULT_SLOTS]; TYPE_SLOTS]; OUTCOMES],
        latency: [[0; HIST_SLOTS]; OUTCOMES],
        lock_wait: [0; HIST_SLOTS],
        exec_hold: [0; HIST_SLOTS],
        tsync_hold: [0; HIST_SLOTS],
        latency_sum_ns: [0; OUTCOMES],
        lock_wait_sum_ns: 0,
        exec_hold_sum_ns: 0,
        tsync_hold_sum_ns: 0,
        misc: [0; misc::SLOTS],
        readers: [ReaderCounters::ZERO; READER_SLOTS],
    };

    fn cells_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        self.calls
            .as_flattened_mut()
            .as_flattened_mut()
            .iter_mut()
            .chain(self.latency.as_flattened_mut())
            .chain(self.lock_wait.iter_mut())
            .chain(self.exec_hold.iter_mut())
            .chain(self.tsync_hold.iter_mut())
            .chain(self.latency_sum_ns.iter_mut())
            .chain([
                &mut self.lock_wait_sum_ns,
                &mut self.exec_hold_sum_ns,
                &mut self.tsync_hold_sum_ns,
            ])
            .chain(self.misc.iter_mut())
            .chain(self.readers.iter_mut().flat_map(ReaderCounters::cells_mut))
    }

    fn cells(&self) -> impl Iterator<Item = &u64> {
        self.calls
            .as_flattened()
            .as_flattened()
            .iter()
            .chain(self.latency.as_flattened())
            .chain(self.lock_wait.iter())
            .chain(self.exec_hold.iter())
            .chain(self.tsync_hold.iter())
            .chain(self.latency_sum_ns.iter())
            .chain([
                &self.lock_wait_sum_ns,
                &self.exec_hold_sum_ns,
                &self.tsync_hold_sum_ns,
            ])
            .chain(self.misc.iter())
            .chain(self.readers.iter().flat_map(ReaderCounters::cells))
    }

    /// Adds another CPU's counters.
    pub fn accumulate(&mut self, other: &Counters) {
        for (a, b) in self.cells_mut().zip(other.cells()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// What happened since `earlier`. Counters only grow; a reset (reload) yields zeros, not
    /// huge wrapped numbers.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut d = *self;
        for (a, b) in d.cells_mut().zip(earlier.cells()) {
            *a = a.saturating_sub(*b);
        }
        d
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.as_flattened().as_flattened().iter().sum()
    }

    pub fn calls_by_outcome(&self, outcome: Outcome) -> u64 {
        self.calls[outcome as usize].as_flattened().iter().sum()
    }

    pub fn calls_by_type(&self, type_slot: usize) -> u64 {
        self.calls
            .iter()
            .map(|by_type| by_type[type_slot].iter().sum::<u64>())
            .sum()
    }

    pub fn calls_by_result(&self, result_slot: usize) -> u64 {
        self.calls
            .iter()
            .flat_map(|by_type| by_type.iter())
            .map(|by_result| by_result[result_slot])
            .sum()
    }

    pub fn errors(&self) -> u64 {
        (0..RESULT_SLOTS)
            .filter(|&r| result_slot_is_error(r as u32))
            .map(|r| self.calls_by_result(r))
            .sum()
    }

    /// Latency histogram over all outcomes.
    pub fn latency_all(&self) -> [u64; HIST_SLOTS] {
        let mut all = [0u64; HIST_SLOTS];
        for per_outcome in &self.latency {
            for (a, b) in all.iter_mut().zip(per_outcome) {
                *a += b;
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kcmp::KCMP_VM, result::result_slot};

    #[test]
    fn accumulate_and_since() {
        let mut cpu0 = Counters::ZERO;
        let mut cpu1 = Counters::ZERO;
        cpu0.calls[Outcome::Fast as usize][KCMP_VM as usize][0] = 5;
        cpu1.calls[Outcome::Fast as usize][KCMP_VM as usize][0] = 7;
        cpu1.calls[Outcome::Unknown as usize][0][result_slot(-9) as usize] = 2;
        cpu1.latency[Outcome::Fast as usize][10] = 3;
        cpu1.misc[misc::EVENTS_DROPPED] = 4;
        cpu1.latency_sum_ns[Outcome::Fast as usize] = 3000;
        cpu0.lock_wait_sum_ns = 9;

        let mut sum = Counters::ZERO;
        sum.accumulate(&cpu0);
        sum.accumulate(&cpu1);
        assert_eq!(sum.total_calls(), 14);
        assert_eq!(sum.calls_by_outcome(Outcome::Fast), 12);
        assert_eq!(sum.calls_by_type(KCMP_VM as usize), 12);
        assert_eq!(sum.calls_by_result(result_slot(-9) as usize), 2);
        assert_eq!(sum.errors(), 2);
        assert_eq!(sum.latency_all()[10], 3);
        assert_eq!(sum.latency_sum_ns[Outcome::Fast as usize], 3000);
        assert_eq!(sum.lock_wait_sum_ns, 9);

        let mut later = sum;
        later.calls[Outcome::Fast as usize][KCMP_VM as usize][0] += 100;
        later.misc[misc::EVENTS_DROPPED] += 1;
        let d = later.since(&sum);
        assert_eq!(d.total_calls(), 100);
        assert_eq!(d.misc[misc::EVENTS_DROPPED], 1);
        // A reset never produces a wrapped delta.
        assert_eq!(Counters::ZERO.since(&later).total_calls(), 0);
    }

    #[test]
    fn fits_a_percpu_map_value() {
        // Per-CPU map values are limited to 32 KiB by the kernel's percpu allocator.
        assert!(core::mem::size_of::<Counters>() <= 32 * 1024);
    }
}
