//! The eBPF programs' own diagnostics (aya-log), forwarded to the log crate while a tracer
//! lives (`--bpf-log`).

use std::{
    os::fd::{AsRawFd as _, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use aya_log::EbpfLogger;

/// Where the records land: the eBPF crate's module, so `--bpf-log` can let them through
/// whatever `-v` says.
pub const TARGET: &str = "kcmp_trace_probes::calls";

/// How long the forwarder sleeps between checks when nothing is logged; also how long
/// dropping it may take.
const POLL_MS: i32 = 100;

/// A thread that drains the log ring as records arrive. It polls on its own rather than
/// through [`crate::event_stream::EventReader`]: aya-log's `EbpfLogger` owns its ring
/// (AYA_LOGS) and reads it only through its own `flush`, and a tracer forwards logs for
/// every command, async or not, with no runtime of its own.
pub struct BpfLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BpfLog {
    pub fn start(mut logger: EbpfLogger<&'static dyn log::Log>) -> anyhow::Result<BpfLog> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let fd: RawFd = logger.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("bpf-log".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; the logger keeps the fd open.
                    unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
                    logger.flush();
                }
                logger.flush();
            })?;
        Ok(BpfLog {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BpfLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
