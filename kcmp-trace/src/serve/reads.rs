//! The one task that reads the tracer's maps, on a thread of its own, and publishes what it
//! read as snapshots. A handler asks for a snapshot begun after its request arrived and
//! waits for it without blocking a runtime worker; every second the task also folds the
//! per-process totals into the per-comm series.
//!
//! Reads switch their thread to SCHED_FIFO while they read ([`crate::unpreempted`]), and the
//! per-process map costs a syscall per process: neither belongs on an HTTP worker.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use kcmp_trace_common::snapshot::Counters;
use tokio::sync::{oneshot, watch};

use super::comms::CommTable;
use kcmp_trace_common::json::{
    readout::{CallerRow, HookCounters, ProcessRow},
    stacks::StackRow,
};

use crate::loader::Tracer;

/// How often per-process totals are folded into the per-comm series (and a snapshot is
/// published, asked for or not).
const COMM_REFRESH: Duration = Duration::from_secs(1);

/// What the tracer's maps held.
#[derive(Debug)]
pub struct Snapshot {
    /// When this read began.
    pub taken: Instant,
    pub counters: Counters,
    pub programs: Vec<HookCounters>,
    /// When the per-process totals were read: only for requests that need them, and for
    /// the per-comm series.
    pub processes_taken: Instant,
    pub processes: Arc<Vec<ProcessRow>>,
    /// Other callers by call site (readers followed).
    pub callers: Option<Vec<CallerRow>>,
    /// Lock waits and write sections by kernel stack (`--stacks`).
    pub stacks: Option<Vec<StackRow>>,
}

/// The last read: its snapshot, or why it failed.
#[derive(Clone, Debug)]
enum Published {
    /// Nothing read yet.
    Nothing,
    Read(Arc<Snapshot>),
    Failed {
        taken: Instant,
        error: String,
    },
}

/// A handle on the reader: ask for fresh snapshots. Cheap to clone.
#[derive(Clone)]
pub struct Reads {
    latest: watch::Receiver<Published>,
    wake: mpsc::SyncSender<()>,
    want_processes: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl Reads {
    /// Starts the reader on a thread that owns `tracer`: the programs stay attached until
    /// [`Reads::stop`] ends it. The receiver gets word when it has ended.
    pub fn start(
        tracer: Tracer,
        comms: Arc<Mutex<CommTable>>,
    ) -> anyhow::Result<(Reads, oneshot::Receiver<()>)> {
        let (publish, latest) = watch::channel(Published::Nothing);
        // One pending wakeup is enough: the read it causes serves every request before it.
        let (wake, woken) = mpsc::sync_channel(1);
        let reads = Reads {
            latest,
            wake,
            want_processes: Arc::default(),
            stopping: Arc::default(),
        };
        let (done, ended) = oneshot::channel();
        let reader = Reader {
            tracer,
            comms,
            publish,
            want_processes: reads.want_processes.clone(),
            stopping: reads.stopping.clone(),
        };
        std::thread::Builder::new()
            .name("kcmp-reads".into())
            .spawn(move || {
                reader.run(&woken);
                let _ = done.send(());
            })
            .context("starting the map reader")?;
        Ok((reads, ended))
    }

    /// A snapshot begun after this call, with the per-process totals if `processes`; the
    /// error of that read if it failed.
    pub async fn fresh(&self, processes: bool) -> Result<Arc<Snapshot>, String> {
        let asked = Instant::now();
        if processes {
            self.want_processes.store(true, Ordering::Release);
        }
        // Full: a read is about to begin anyway, after this request arrived.
        let _ = self.wake.try_send(());
        let mut latest = self.latest.clone();
        loop {
            match &*latest.borrow_and_update() {
                Published::Read(s)
                    if s.taken >= asked && (!processes || s.processes_taken >= asked) =>
                {
                    return Ok(s.clone());
                }
                Published::Failed { taken, error } if *taken >= asked => {
                    return Err(error.clone());
                }
                _ => {}
            }
            latest
                .changed()
                .await
                .map_err(|_| "the map reader has stopped".to_owned())?;
        }
    }

    /// The last snapshot read, at once: at most a second old while the reader runs.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        match &*self.latest.borrow() {
            Published::Read(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Ends the reader, which detaches the programs as it drops the tracer.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
    }
}

/// The reader thread's side.
struct Reader {
    tracer: Tracer,
    comms: Arc<Mutex<CommTable>>,
    publish: watch::Sender<Published>,
    want_processes: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl Reader {
    fn run(self, woken: &mpsc::Receiver<()>) {
        let mut processes = (Instant::now(), Arc::new(Vec::new()));
        let mut last_fold = Instant::now();
        let mut next_fold = last_fold;
        while !self.stopping.load(Ordering::Acquire) {
            // Taken after the flag: a request that set it arrived before this read began.
            let asked_processes = self.want_processes.swap(false, Ordering::AcqRel);
            let now = Instant::now();
            let fold = now >= next_fold;
            if fold || asked_processes {
                match self.tracer.processes() {
                    Ok(rows) => processes = (now, Arc::new(rows)),
                    Err(e) => {
                        self.failed(now, "reading per-process totals", &e);
                        next_fold = now + COMM_REFRESH;
                        if !self.wait(woken, next_fold) {
                            return;
                        }
                        continue;
                    }
                }
            }
            if fold {
                self.comms.lock().unwrap_or_else(|e| e.into_inner()).update(
                    &processes.1,
                    now - last_fold,
                    now,
                );
                last_fold = now;
                next_fold = now + COMM_REFRESH;
            }
            match self.tracer.counters().and_then(|c| {
                Ok((
                    c,
                    self.tracer.hook_counters()?,
                    self.tracer.callers()?,
                    self.tracer.stacks()?,
                ))
            }) {
                Ok((counters, programs, callers, stacks)) => {
                    self.publish
                        .send_replace(Published::Read(Arc::new(Snapshot {
                            taken: now,
                            counters,
                            programs,
                            processes_taken: processes.0,
                            processes: processes.1.clone(),
                            callers,
                            stacks,
                        })));
                }
                Err(e) => self.failed(now, "reading the counters", &e),
            }
            if !self.wait(woken, next_fold) {
                return;
            }
        }
    }

    fn failed(&self, taken: Instant, what: &str, e: &anyhow::Error) {
        let error = format!("{what}: {}", crate::error::one_line(e));
        log::warn!("{error}");
        self.publish
            .send_replace(Published::Failed { taken, error });
    }

    /// Until a request or the next fold; false once no handle is left to ask (the daemon
    /// is gone without stopping the reader, on an error).
    fn wait(&self, woken: &mpsc::Receiver<()>, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        !matches!(
            woken.recv_timeout(left),
            Err(mpsc::RecvTimeoutError::Disconnected)
        )
    }
}
