//! Which path a kcmp call took through kernel/kcmp.c.

/// The path of one kcmp call. Discriminants index the in-kernel counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The path was not seen: in tracepoint mode every call (only the syscall boundary is
    /// visible); with fentry or kprobes a call whose trail fits no path because a probe's
    /// run was skipped (also counted as unclassified).
    Unknown = 0,
    /// Speculation began for both tasks and revalidation passed; no lock taken.
    Fast = 1,
    /// Speculation ran, revalidation failed, then the call took the locks.
    Retry = 2,
    /// A writer was active at try_begin: straight to the locks.
    Busy = 3,
    /// Kernel without the series: both exec_update_locks taken first.
    Locked = 4,
    /// The lock wait was killed (-EINTR).
    Interrupted = 5,
    /// A pid did not resolve (-ESRCH) before any of this.
    NoTask = 6,
}

pub const OUTCOMES: usize = 7;

impl Outcome {
    pub const ALL: [Outcome; OUTCOMES] = [
        Outcome::Unknown,
        Outcome::Fast,
        Outcome::Retry,
        Outcome::Busy,
        Outcome::Locked,
        Outcome::Interrupted,
        Outcome::NoTask,
    ];

    pub fn from_u8(v: u8) -> Outcome {
        Self::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(Outcome::Unknown)
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Unknown => "unknown",
            Outcome::Fast => "fast",
            Outcome::Retry => "retry",
            Outcome::Busy => "busy",
            Outcome::Locked => "locked",
            Outcome::Interrupted => "interrupted",
            Outcome::NoTask => "no_task",
        }
    }

    /// Whether a call of this outcome took (or waited for) its exec_update_locks: each such
    /// call counts one lock wait, however short.
    pub fn took_locks(self) -> bool {
        matches!(
            self,
            Outcome::Retry | Outcome::Busy | Outcome::Locked | Outcome::Interrupted
        )
    }

    pub fn parse(name: &str) -> Option<Outcome> {
        Self::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_u8(o as u8), o);
            assert_eq!(Outcome::parse(o.name()), Some(o));
        }
        assert_eq!(Outcome::from_u8(200), Outcome::Unknown);
    }

    #[test]
    fn only_the_fast_path_and_what_never_began_take_no_lock() {
        for o in Outcome::ALL {
            let unlocked = matches!(o, Outcome::Unknown | Outcome::Fast | Outcome::NoTask);
            assert_eq!(o.took_locks(), !unlocked, "{}", o.name());
        }
    }
}
