//! The per-call event stream as a reader sees it: the ring buffer, into which each CPU's
//! exit program writes its events a stage (`maps::STAGE_EVENTS`) at a time, and the flush
//! that sends what a CPU has staged but not yet filled.
//!
//! A reader flushes at each drain tick, so an event waits in a stage no longer than it
//! would wait in the ring below the wakeup mark; and once more before its last read.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::ProgramFd,
};
use kcmp_trace_common::{
    event::Event,
    maps::{StageFill, flush},
};

use crate::{bpf_info, unpreempted::UnpreemptedReads};

pub struct EventStream {
    ring: RingBuf<MapData>,
    fill: PerCpuArray<MapData, StageFill>,
    flush: ProgramFd,
}

/// Events a flush could not send, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unflushed {
    /// The CPU's exit program was changing its stage: a later flush sends them.
    pub busy: u64,
    /// Staged on a CPU that is offline now: sent when it is back.
    pub offline: u64,
}

impl Unflushed {
    pub fn total(&self) -> u64 {
        self.busy + self.offline
    }
}

impl EventStream {
    pub fn new(
        ring: RingBuf<MapData>,
        fill: PerCpuArray<MapData, StageFill>,
        flush: ProgramFd,
    ) -> EventStream {
        EventStream { ring, fill, flush }
    }

    /// Hands each event to `each`, whole ring records at a time, until at least `want` were
    /// handed over or the ring is empty; returns how many were.
    pub fn read<E>(
        &mut self,
        want: u64,
        mut each: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut n = 0;
        while n < want {
            let Some(record) = self.ring.next() else {
                break;
            };
            for bytes in record.chunks_exact(size_of::<Event>()) {
                // SAFETY: the eBPF side writes whole `Event`s; read_unaligned copes with
                // alignment.
                let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                each(&event)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sends every CPU's staged events to the ring, and says what stayed staged.
    pub fn flush(&mut self) -> anyhow::Result<Unflushed> {
        let fills = {
            let _fifo = UnpreemptedReads::enter();
            self.fill.get(&0, 0).context("reading STAGE_FILL")?
        };
        let mut left = Unflushed::default();
        for (cpu, fill) in fills.iter().enumerate().filter(|(_, f)| f.count != 0) {
            let staged = u64::from(fill.count);
            match bpf_info::run_on_cpu(self.flush.as_fd(), cpu as u32) {
                Ok(flush::BUSY) => left.busy += staged,
                // Sent, or dropped for want of room (counted as dropped by the program).
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => left.offline += staged,
                Err(e) => return Err(e).with_context(|| format!("flushing CPU {cpu}'s events")),
            }
        }
        Ok(left)
    }

    /// Flushes until no stage is busy (an exit program holds a stage for a microsecond or
    /// so, unless preempted): before a reader's last read.
    pub fn flush_all(&mut self) -> anyhow::Result<Unflushed> {
        for _ in 0..100 {
            let left = self.flush()?;
            if left.busy == 0 {
                return Ok(left);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.flush()
    }
}

impl AsFd for EventStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for EventStream {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
