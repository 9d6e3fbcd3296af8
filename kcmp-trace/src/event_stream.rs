//! The per-call event stream as a reader sees it: the ring buffer, into which each CPU's
//! exit program writes its events a stage (`maps::STAGE_EVENTS`) at a time, and the flush
//! that sends what a CPU has staged but not yet filled.
//!
//! A reader flushes at each drain tick, so an event waits in a stage no longer than it
//! would wait in the ring below the wakeup mark; and once more before its last read.
//! [`EventReader::run`] is that reader's loop: `events`, `watch`/`record`, the daemon and
//! the bench all drain through it, into their own [`EventSink`], and all end the same way
//! ([`Drained`]).

use std::{
    future::Future,
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

    /// What a reader says when its last flush left events staged, `None` when it left none.
    pub fn warning(&self) -> Option<String> {
        (self.total() != 0).then(|| {
            format!(
                "{} events were still staged in the kernel and are not shown ({} behind a call in progress, {} on offline CPUs)",
                self.total(),
                self.busy,
                self.offline
            )
        })
    }
}

/// Where a reader's events go.
pub trait EventSink {
    /// Takes one event.
    fn take(&mut self, event: &Event) -> anyhow::Result<()>;
    /// After each batch: writes out or publishes what was taken.
    fn batch_end(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// How many more events it wants (`events --count`); the reader stops at 0.
    fn wants(&self) -> u64 {
        u64::MAX
    }
}

/// How a reader's loop ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Events handed to the sink.
    pub read: u64,
    /// What stayed staged after the last flush: not delivered, and said so by every reader.
    pub unflushed: Unflushed,
}

/// Events read between two looks at the stop signal (whole ring records may add a few): a
/// flood cannot hold off the stop, nor starve the other tasks of the reader's thread.
const BATCH: u64 = 256;

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
    async fn ready(&mut self) -> anyhow::Result<()> {
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

    /// The reader's loop: hands every event to `sink` as the kernel writes it, until `stop`
    /// resolves or the sink wants no more. Then, the same for every reader: every stage is
    /// flushed (until none is busy), the ring is drained to empty, and what stayed staged is
    /// counted in the result, never dropped silently.
    pub async fn run(
        mut self,
        sink: &mut impl EventSink,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<Drained> {
        tokio::pin!(stop);
        let mut read = 0;
        // A batch left events behind: take the next without waiting for a wakeup.
        let mut more = false;
        while sink.wants() != 0 {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = std::future::ready(()), if more => {}
                ready = self.ready(), if !more => ready?,
            }
            let n = self.batch(sink)?;
            read += n;
            more = n >= BATCH;
            tokio::task::yield_now().await;
        }
        let unflushed = self.ring.get_mut().flush_all()?;
        loop {
            let n = self.batch(sink)?;
            read += n;
            if n < BATCH || sink.wants() == 0 {
                break;
            }
        }
        Ok(Drained { read, unflushed })
    }

    /// Reads about one batch (whole ring records) into `sink`; returns how many.
    fn batch(&mut self, sink: &mut impl EventSink) -> anyhow::Result<u64> {
        let n = self
            .ring
            .get_mut()
            .read(BATCH.min(sink.wants()), |e| sink.take(e))?;
        sink.batch_end()?;
        Ok(n)
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
