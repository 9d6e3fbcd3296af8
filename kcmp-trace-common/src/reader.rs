//! Who read exec_update_lock's state: kcmp, a /proc reader, or another caller.
//!
//! With the series, /proc/PID/stack, /proc/PID/syscall and /proc/PID/wchan take the same
//! exec_update_seq fast path as kcmp (their test kernel's patch 7); without it they take
//! exec_update_lock for reading, as do other callers (mm_access(), /proc/PID/io, ...). A
//! reader's calls are followed like kcmp's: its function's entry opens a per-thread call,
//! the helper and lock probes mark its trail, its return classifies it (`classify`). Any
//! other caller's helper verdicts and lock waits are counted by its caller's address.

use crate::{hist::HIST_SLOTS, outcome::OUTCOMES};

/// The /proc readers followed call by call, in `Counters::readers` order.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProcReader {
    Stack = 0,
    Syscall = 1,
    Wchan = 2,
}

pub const PROC_READERS: usize = 3;
/// `Counters::readers`: the /proc readers, then every other caller together.
pub const READER_SLOTS: usize = PROC_READERS + 1;
/// The slot of callers that are neither kcmp nor a /proc reader.
pub const OTHER_SLOT: usize = PROC_READERS;

impl ProcReader {
    pub const ALL: [ProcReader; PROC_READERS] =
        [ProcReader::Stack, ProcReader::Syscall, ProcReader::Wchan];

    /// The reader's name in every sink (`by_reader`, the `reader` label).
    pub const fn name(self) -> &'static str {
        match self {
            ProcReader::Stack => "proc_stack",
            ProcReader::Syscall => "proc_syscall",
            ProcReader::Wchan => "proc_wchan",
        }
    }

    /// The kernel function that serves it (fs/proc/base.c), hooked at entry and return.
    pub const fn function(self) -> &'static str {
        match self {
            ProcReader::Stack => "proc_pid_stack",
            ProcReader::Syscall => "proc_pid_syscall",
            ProcReader::Wchan => "proc_pid_wchan",
        }
    }

    /// The file it serves, under /proc/PID/.
    pub const fn file(self) -> &'static str {
        match self {
            ProcReader::Stack => "stack",
            ProcReader::Syscall => "syscall",
            ProcReader::Wchan => "wchan",
        }
    }
}

/// Calls of exec_update_speculate_try_begin() and _retry() by their verdict.
pub mod verdict {
    /// try_begin() returned true.
    pub const BEGIN_OK: usize = 0;
    /// try_begin() returned false: a writer was active.
    pub const BEGIN_FAILED: usize = 1;
    /// retry() returned false: the speculation held.
    pub const VALID: usize = 2;
    /// retry() returned true: a writer ran since the snapshot.
    pub const RETRY: usize = 3;
    pub const SLOTS: usize = 4;
    pub const NAMES: [&str; SLOTS] = ["begin_ok", "begin_failed", "valid", "retry"];
}

/// One reader slot of `Counters`. A /proc reader's slot is written by its return program,
/// but for `lost_exits` (its entry program); the other callers' slot by the helper and lock
/// probes, atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderCounters {
    /// Calls by outcome (the /proc readers; other callers have no call boundary).
    pub calls: [u64; OUTCOMES],
    /// Helper calls by verdict (`verdict`): other callers' only, whose calls are not followed.
    pub verdicts: [u64; verdict::SLOTS],
    /// exec_update_lock waits: log2 histogram of their lengths, and their sum.
    pub lock_wait: [u64; HIST_SLOTS],
    pub lock_wait_sum_ns: u64,
    /// Calls whose return was never seen (the next entry found them open): not counted.
    pub lost_exits: u64,
    /// Returns without their entry: not counted.
    pub unpaired_exits: u64,
}

impl ReaderCounters {
    pub const ZERO: ReaderCounters = ReaderCounters {
        calls: [0; OUTCOMES],
        verdicts: [0; verdict::SLOTS],
        lock_wait: [0; HIST_SLOTS],
        lock_wait_sum_ns: 0,
        lost_exits: 0,
        unpaired_exits: 0,
    };

    pub fn cells_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        self.calls
            .iter_mut()
            .chain(self.verdicts.iter_mut())
            .chain(self.lock_wait.iter_mut())
            .chain([
                &mut self.lock_wait_sum_ns,
                &mut self.lost_exits,
                &mut self.unpaired_exits,
            ])
    }

    pub fn cells(&self) -> impl Iterator<Item = &u64> {
        self.calls
            .iter()
            .chain(self.verdicts.iter())
            .chain(self.lock_wait.iter())
            .chain([
                &self.lock_wait_sum_ns,
                &self.lost_exits,
                &self.unpaired_exits,
            ])
    }

    pub fn lock_waits(&self) -> u64 {
        self.lock_wait.iter().sum()
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum()
    }
}

/// Another caller's counts, by its address (`maps::OTHER_CALLERS_MAP`): what a caller that
/// is neither kcmp nor a /proc reader did. Callers on several CPUs add at once: atomics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerCounts {
    pub verdicts: [u64; verdict::SLOTS],
    pub lock_waits: u64,
    pub lock_wait_sum_ns: u64,
}

impl CallerCounts {
    pub fn add(&mut self, other: &CallerCounts) {
        for (a, b) in self.verdicts.iter_mut().zip(other.verdicts) {
            *a += b;
        }
        self.lock_waits += other.lock_waits;
        self.lock_wait_sum_ns += other.lock_wait_sum_ns;
    }

    /// What happened since `earlier` (saturating: a reload yields zeros).
    pub fn since(&self, earlier: &CallerCounts) -> CallerCounts {
        let mut d = *self;
        for (a, b) in d.verdicts.iter_mut().zip(earlier.verdicts) {
            *a = a.saturating_sub(b);
        }
        d.lock_waits = d.lock_waits.saturating_sub(earlier.lock_waits);
        d.lock_wait_sum_ns = d.lock_wait_sum_ns.saturating_sub(earlier.lock_wait_sum_ns);
        d
    }

    pub fn is_zero(&self) -> bool {
        *self == CallerCounts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_prefixed() {
        for (i, a) in ProcReader::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i, "the enum indexes Counters::readers");
            assert!(a.name().starts_with("proc_"));
            assert!(a.function().starts_with("proc_pid_"));
            assert!(a.function().ends_with(a.file()));
            for b in &ProcReader::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn caller_counts_add_and_diff() {
        let mut a = CallerCounts::default();
        let b = CallerCounts {
            verdicts: [1, 2, 3, 4],
            lock_waits: 5,
            lock_wait_sum_ns: 600,
        };
        a.add(&b);
        a.add(&b);
        assert_eq!(a.verdicts, [2, 4, 6, 8]);
        assert_eq!(a.since(&b), b);
        assert!(b.since(&a).is_zero(), "a reset never wraps");
    }
}
