//! Kernel stacks of exec_update_lock's waiters and writers (`--stacks`), aggregated in the
//! kernel: a stack-trace map, and counts plus time sums by (stack, who, outcome, holder).
//!
//! A waiter's stack is taken where its first exec_update_lock wait of the call begins (the
//! lock probe's entry, or contention_begin), and counted once the call ends, as its lock
//! wait is; a writer's where its write section opens, counted when it closes.
//!
//! A wait is also kept by its holder: the write section open on its lock as it began,
//! found by the lock's address (`SECTION_LOCKS`, filled as sections open).

/// Stack traces by id (BPF_MAP_TYPE_STACK_TRACE).
pub const STACK_TRACES_MAP: &str = "STACK_TRACES";
/// `StackCounts` by `StackKey`, per CPU.
pub const STACK_COUNTS_MAP: &str = "STACK_COUNTS";
/// The process whose exec_update_lock sits at an address, by that address: every process
/// that opened a write section since attach (`--stacks`), LRU-bounded.
pub const SECTION_LOCKS_MAP: &str = "SECTION_LOCKS";
/// Distinct stacks kept; a stack that finds the map full is counted as [`stack_ref::LOST`].
pub const MAX_STACK_TRACES: u32 = 4096;
/// Distinct (stack, who, outcome, holder) keys; a count that finds the map full is counted
/// in `misc::STACKS_DROPPED`.
pub const MAX_STACK_KEYS: u32 = 8192;

/// Whose stack: kcmp's, a /proc reader's (`1 + ProcReader`), another caller's, or a
/// writer's.
pub mod who {
    use crate::reader::{PROC_READERS, ProcReader};

    pub const KCMP: u32 = 0;
    pub const OTHER: u32 = 1 + PROC_READERS as u32;
    pub const EXEC: u32 = OTHER + 1;
    pub const TSYNC: u32 = OTHER + 2;
    pub const SLOTS: u32 = TSYNC + 1;

    pub const fn reader(reader: ProcReader) -> u32 {
        1 + reader as u32
    }

    /// The name every sink gives it: the reader names of `by_reader`, and the writers'
    /// kinds.
    pub fn name(who: u32) -> Option<&'static str> {
        Some(match who {
            KCMP => "kcmp",
            OTHER => "other",
            EXEC => "exec",
            TSYNC => "tsync",
            w => ProcReader::ALL.get(w.checked_sub(1)? as usize)?.name(),
        })
    }

    /// Whether it holds the lock for writing (its time is a hold, not a wait).
    pub const fn is_writer(who: u32) -> bool {
        who == EXEC || who == TSYNC
    }
}

/// A stack as the programs keep it: the stack map's id plus one, or one of these.
pub mod stack_ref {
    /// No wait fired a hook: the lock was taken uncontended (contention tracepoints see
    /// only contended waits), so there is no waiting stack.
    pub const UNCONTENDED: u32 = 0;
    /// The stack was not kept: the stack map was full, or its walk failed.
    pub const LOST: u32 = u32::MAX;

    /// What bpf_get_stackid() returned, as a reference.
    #[inline(always)]
    pub fn of(stackid: Result<i64, i64>) -> u32 {
        match stackid {
            Ok(id) if (0..i64::from(u32::MAX - 1)).contains(&id) => id as u32 + 1,
            _ => LOST,
        }
    }

    /// The stack map's id, if a stack was kept.
    pub fn id(stack: u32) -> Option<u32> {
        (stack != UNCONTENDED && stack != LOST).then(|| stack - 1)
    }
}

/// What a stack's counts are kept by. For a writer, `outcome` is 0 and there is no holder.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StackKey {
    /// A [`stack_ref`].
    pub stack: u32,
    /// A [`who`].
    pub who: u32,
    /// The call's `Outcome` (waiters that are calls: kcmp and the /proc readers).
    pub outcome: u32,
    /// The holder: the write section open on the lock when the wait began, as
    /// [`Holder::pack`]s it (0: none open).
    pub holder: Holder,
    /// The holder's comm as its section opened (zeros without one).
    pub holder_comm: [u8; crate::event::COMM_LEN],
}

/// Who held exec_update_lock for writing: the process whose write section (exec or TSYNC)
/// was open on it, packed in one word so a thread's state can carry it. 0: none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Holder {
    pub tgid: u32,
    /// `maps::writer` (meaningless when `tgid` is 0).
    pub kind: u32,
}

impl Holder {
    pub const NONE: Holder = Holder { tgid: 0, kind: 0 };

    #[inline(always)]
    pub const fn pack(self) -> u64 {
        ((self.tgid as u64) << 32) | self.kind as u64
    }

    #[inline(always)]
    pub const fn unpack(word: u64) -> Holder {
        Holder {
            tgid: (word >> 32) as u32,
            kind: word as u32,
        }
    }

    pub const fn is_some(self) -> bool {
        self.tgid != 0
    }
}

/// Lock waits (or write sections) with one key, and their summed wait (or hold) time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCounts {
    pub count: u64,
    pub time_ns: u64,
}

impl StackCounts {
    pub fn add(&mut self, other: &StackCounts) {
        self.count += other.count;
        self.time_ns += other.time_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::ProcReader;

    #[test]
    fn every_who_has_one_name() {
        let names: Vec<_> = (0..who::SLOTS).map(|w| who::name(w).unwrap()).collect();
        assert_eq!(
            names,
            [
                "kcmp",
                "proc_stack",
                "proc_syscall",
                "proc_wchan",
                "other",
                "exec",
                "tsync"
            ]
        );
        assert_eq!(who::name(who::SLOTS), None);
        assert_eq!(who::reader(ProcReader::Wchan), 3);
        assert!(who::is_writer(who::TSYNC) && !who::is_writer(who::OTHER));
    }

    #[test]
    fn a_holder_round_trips_through_its_word() {
        let tsync = Holder {
            tgid: 4_000_000,
            kind: crate::maps::writer::TSYNC,
        };
        assert_eq!(Holder::unpack(tsync.pack()), tsync);
        assert!(tsync.is_some());
        // An exec's kind is 0: only the tgid says whether there is a holder.
        let exec = Holder {
            tgid: 7,
            kind: crate::maps::writer::EXEC,
        };
        assert!(exec.pack() != 0 && Holder::unpack(exec.pack()).is_some());
        assert!(!Holder::unpack(Holder::NONE.pack()).is_some());
    }

    #[test]
    fn stack_refs_round_trip_and_keep_failures_apart() {
        assert_eq!(stack_ref::id(stack_ref::of(Ok(0))), Some(0));
        assert_eq!(stack_ref::id(stack_ref::of(Ok(4095))), Some(4095));
        // -ENOMEM (map full) and -EFAULT (walk failed) are lost, never id 0.
        assert_eq!(stack_ref::of(Err(-12)), stack_ref::LOST);
        assert_eq!(stack_ref::of(Err(-14)), stack_ref::LOST);
        assert_eq!(stack_ref::id(stack_ref::LOST), None);
        assert_eq!(stack_ref::id(stack_ref::UNCONTENDED), None);
    }
}
