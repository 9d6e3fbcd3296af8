//! Result slots: kcmp returns an ordering (0..=3) or a negative errno.
//!
//! The in-kernel counters keep one slot per ordering and one per errno kcmp can return;
//! anything else lands in `other_errno` (the per-call events still carry the exact value).

/// Orderings kcmp returns: 0 equal, 1 less, 2 greater, 3 not equal (unordered).
pub const ORDERINGS: usize = 4;

/// The errnos kcmp(2) can return, in slot order after the orderings.
pub const KNOWN_ERRNOS: [i64; 8] = [
    1,  // EPERM: ptrace_may_access() denied
    2,  // ENOENT: KCMP_EPOLL_TFD target not in the epoll set
    3,  // ESRCH: a pid did not resolve
    4,  // EINTR: the exec_update_lock wait was killed
    9,  // EBADF: a fd did not resolve
    14, // EFAULT: KCMP_EPOLL_TFD slot pointer unreadable
    22, // EINVAL: bad type
    95, // EOPNOTSUPP: type compiled out
];
const ERRNO_NAMES: [&str; 8] = [
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EBADF",
    "EFAULT",
    "EINVAL",
    "EOPNOTSUPP",
];
const ORDERING_NAMES: [&str; ORDERINGS] = ["equal", "less", "greater", "unordered"];

/// Result slots: orderings, known errnos, then one for any other value.
pub const RESULT_SLOTS: usize = ORDERINGS + KNOWN_ERRNOS.len() + 1;
pub const RESULT_SLOT_OTHER: u32 = (RESULT_SLOTS - 1) as u32;

/// Counter slot of a syscall return value.
#[inline(always)]
pub fn result_slot(ret: i64) -> u32 {
    if (0..ORDERINGS as i64).contains(&ret) {
        return ret as u32;
    }
    let errno = -ret;
    // Unrolled by the compiler: the verifier sees a bounded, branch-only sequence.
    let mut i = 0;
    while i < KNOWN_ERRNOS.len() {
        if KNOWN_ERRNOS[i] == errno {
            return (ORDERINGS + i) as u32;
        }
        i += 1;
    }
    RESULT_SLOT_OTHER
}

/// Name of a result slot: `equal`, `less`, `greater`, `unordered`, an errno name or `other`.
pub fn result_slot_name(slot: u32) -> &'static str {
    let slot = slot as usize;
    if slot < ORDERINGS {
        ORDERING_NAMES[slot]
    } else if slot < ORDERINGS + ERRNO_NAMES.len() {
        ERRNO_NAMES[slot - ORDERINGS]
    } else {
        "other"
    }
}

/// Whether a result slot is an error.
pub fn result_slot_is_error(slot: u32) -> bool {
    slot as usize >= ORDERINGS
}

/// Name of an exact errno, for per-call events.
pub fn errno_name(errno: i64) -> Option<&'static str> {
    KNOWN_ERRNOS
        .iter()
        .position(|&e| e == errno)
        .map(|i| ERRNO_NAMES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orderings_map_to_themselves() {
        for ret in 0..4 {
            assert_eq!(result_slot(ret), ret as u32);
            assert!(!result_slot_is_error(ret as u32));
        }
        assert_eq!(result_slot_name(3), "unordered");
    }

    #[test]
    fn errnos_get_their_own_slot() {
        assert_eq!(result_slot_name(result_slot(-1)), "EPERM");
        assert_eq!(result_slot_name(result_slot(-3)), "ESRCH");
        assert_eq!(result_slot_name(result_slot(-9)), "EBADF");
        assert_eq!(result_slot_name(result_slot(-22)), "EINVAL");
        assert_eq!(result_slot_name(result_slot(-95)), "EOPNOTSUPP");
        assert!(result_slot_is_error(result_slot(-1)));
    }

    #[test]
    fn anything_else_is_other() {
        assert_eq!(result_slot(4), RESULT_SLOT_OTHER);
        assert_eq!(result_slot(-38), RESULT_SLOT_OTHER);
        assert_eq!(result_slot_name(RESULT_SLOT_OTHER), "other");
        assert_eq!(errno_name(9), Some("EBADF"));
        assert_eq!(errno_name(38), None);
    }
}
