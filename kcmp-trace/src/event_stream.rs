//! The per-call event stream as a reader sees it: the ring buffer, into which each CPU's
//! exit program writes its events a stage (`maps::STAGE_EVENTS`) at a time, and the flush
//! that sends what a CPU has staged but not yet filled.
//!
//! A reader flushes at each drain tick, so an event waits in a stage no longer than it
//! would wait in the ring below the wakeup mark; and once more before its last read.
//! [`EventReader`] is that reader: every command and the daemon drain through it.

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
    maps::{EVENT_DRAIN_MS, StageFill, flush},
};
use tokio::io::{Interest, unix::AsyncFd};

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

/// The one way events are read: waits until the ring has some (the kernel's wakeup past its
/// mark, or the drain tick, which first sends what each CPU staged), then hands them over.
/// Every reader (`events`, `watch`/`record`, the daemon, `bench`) drains through one.
pub struct EventReader {
    ring: AsyncFd<EventStream>,
    drain_tick: tokio::time::Interval,
}

impl EventReader {
    /// Registers the ring with the current tokio runtime (call it inside one).
    pub fn new(stream: EventStream) -> anyhow::Result<EventReader> {
        // SAFETY: the ring buffer owns its fd and the AsyncFd owns the ring buffer, so the
        // fd stays open and the same for the registration's whole life.
        let ring = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) }
            .map_err(|e| anyhow::Error::from(e.into_parts().1))
            .context("polling the event ring buffer")?;
        // Below the ring's wakeup mark only this timer finds the events, so one call on an
        // idle system still shows within it.
        let mut drain_tick = tokio::time::interval(Duration::from_millis(EVENT_DRAIN_MS));
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(EventReader { ring, drain_tick })
    }

    /// Resolves when there may be events to drain. Cancel-safe: a `select!` branch.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                // Cleared before draining: the kernel wakes a reader only when the backlog
                // crosses its mark, so a wakeup during the drain must count.
                guard.context("polling the event ring buffer")?.clear_ready();
            }
            _ = self.drain_tick.tick() => {
                self.ring.get_mut().flush()?;
            }
        }
        Ok(())
    }

    /// Hands each event to `each`, whole ring records at a time, until at least `want` were
    /// handed over or the ring is empty; returns how many were.
    pub fn drain<E>(
        &mut self,
        want: u64,
        each: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.ring.get_mut().read(want, each)
    }

    /// Before the last drain: sends everything staged (see [`EventStream::flush_all`]).
    pub fn flush_all(&mut self) -> anyhow::Result<Unflushed> {
        self.ring.get_mut().flush_all()
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
