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
    pub tgid: u32,
    pub tid: u32,
    pub pid1: i32,
    pub pid2: i32,
    /// The exec'ing process whose write section made this call retry or fall back; 0 if none seen.
    pub writer_tgid: u32,
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
            7 * 8 + 6 * 4 + 4 * 4 + 2 * COMM_LEN
        );
        assert_eq!(core::mem::align_of::<Event>(), 8);
    }

    #[test]
    fn comm_round_trip() {
        let key = comm_key(b"kcmp-trace");
        assert_eq!(comm_bytes(&key), b"kcmp-trace");
        let long = comm_key(b"a-very-long-process-name");
        assert_eq!(comm_bytes(&long), b"a-very-long-pro");
    }
}
