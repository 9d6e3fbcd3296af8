//! The per-call record streamed through the ring buffer.

use crate::outcome::Outcome;

pub const COMM_LEN: usize = 16;

/// `struct kcmp_epoll_slot` (include/uapi/linux/kcmp.h): what a KCMP_EPOLL_TFD call's idx2
/// points to in the caller's memory, read at entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpollSlot {
    pub efd: u32,
    pub tfd: u32,
    pub toff: u32,
    /// 1 when the slot was read from the caller's memory; 0 otherwise (another type, or an
    /// unreadable pointer, which kcmp answers with EFAULT).
    pub read: u32,
}

/// One kcmp call. Laid out without implicit padding: u64s, then u32s, then bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) at syscall exit.
    pub ts_ns: u64,
    pub latency_ns: u64,
    /// Time spent waiting for exec_update_locks; 0 when none were taken or not observable.
    pub lock_wait_ns: u64,
    pub idx1: u64,
    pub idx2: u64,
    pub ret: i64,
    /// The `type` argument as passed (an int, sign-extended).
    pub raw_type: i64,
    /// How long the writer's section and the call overlapped ([`writer_overlap_ns`]); 0
    /// when no writer was seen.
    pub writer_overlap_ns: u64,
    /// When the call's first exec_update_lock wait began (bpf_ktime_get_ns); 0 when it did
    /// not wait, or no wait was seen to begin.
    pub lock_wait_start_ns: u64,
    /// The writer's section: when it opened, and when it closed (0: still open when the
    /// call returned). Both 0 when no writer was seen.
    pub writer_start_ns: u64,
    pub writer_end_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub pid1: i32,
    pub pid2: i32,
    /// The process whose write section (exec or TSYNC) made this call retry or fall back;
    /// 0 if none seen.
    pub writer_tgid: u32,
    /// The writer's thread: the one that opened the section.
    pub writer_tid: u32,
    /// The section's kind (`maps::writer`).
    pub writer_kind: u32,
    /// An `Outcome`; a whole u32 so that the record has no padding bytes to clear.
    pub outcome: u32,
    pub epoll: EpollSlot,
    pub comm: [u8; COMM_LEN],
    pub writer_comm: [u8; COMM_LEN],
}

impl Event {
    pub fn outcome(&self) -> Outcome {
        u8::try_from(self.outcome).map_or(Outcome::Unknown, Outcome::from_u8)
    }
}

/// How long a write section overlapped a call: from the later of their starts to the
/// earlier of their ends. `section_end` 0 is a section still open at `call_end`; 0 when
/// they do not overlap.
#[inline(always)]
pub fn writer_overlap_ns(
    section_start: u64,
    section_end: u64,
    call_start: u64,
    call_end: u64,
) -> u64 {
    let end = if section_end == 0 {
        call_end
    } else {
        section_end.min(call_end)
    };
    end.saturating_sub(section_start.max(call_start))
}

/// The bytes of a NUL-padded comm up to the first NUL.
pub fn comm_bytes(comm: &[u8; COMM_LEN]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    &comm[..end]
}

/// A comm filter as the kernel compares it: truncated to 15 bytes and NUL-padded.
pub fn comm_key(name: &[u8]) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let n = name.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&name[..n]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_hidden_padding() {
        assert_eq!(
            core::mem::size_of::<Event>(),
            11 * 8 + 8 * 4 + 4 * 4 + 2 * COMM_LEN
        );
        assert_eq!(core::mem::align_of::<Event>(), 8);
    }

    #[test]
    fn overlap_is_the_shared_span() {
        // The section opened during the call and closed after it.
        assert_eq!(writer_overlap_ns(150, 300, 100, 200), 50);
        // The call ran inside the section.
        assert_eq!(writer_overlap_ns(50, 300, 100, 200), 100);
        // The section ran inside the call.
        assert_eq!(writer_overlap_ns(120, 130, 100, 200), 10);
        // Still open when the call ended.
        assert_eq!(writer_overlap_ns(150, 0, 100, 200), 50);
        assert_eq!(writer_overlap_ns(50, 0, 100, 200), 100);
        // Closed before the call began, or opened after it ended: none.
        assert_eq!(writer_overlap_ns(10, 90, 100, 200), 0);
        assert_eq!(writer_overlap_ns(250, 0, 100, 200), 0);
    }

    #[test]
    fn comm_round_trip() {
        let key = comm_key(b"kcmp-trace");
        assert_eq!(comm_bytes(&key), b"kcmp-trace");
        let long = comm_key(b"a-very-long-process-name");
        assert_eq!(comm_bytes(&long), b"a-very-long-pro");
    }
}
