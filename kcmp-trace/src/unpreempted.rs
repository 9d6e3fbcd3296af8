//! Map reads that ordinary tasks cannot preempt: the SCHED_FIFO switch every reader of a
//! tracer's maps takes.

/// Keeps ordinary tasks off this thread's CPU while it reads maps.
///
/// A map lookup from userspace disables BPF instrumentation on its CPU (the kernel's
/// bpf_prog_active) until it returns; on a preemptible kernel a reader preempted there
/// makes every kprobe and tracepoint program on that CPU skip its runs, kcmp's included,
/// until the reader runs again. At SCHED_FIFO priority 1 the reader can only be preempted
/// by real-time tasks, never by a kcmp caller of an ordinary class. Without the privilege
/// to change policy the reads go ahead as they are (and skipped runs are still counted).
pub struct UnpreemptedReads(Option<(libc::c_int, libc::c_int)>);

impl UnpreemptedReads {
    pub fn enter() -> UnpreemptedReads {
        let policy = sched::policy();
        if policy < 0 || policy == libc::SCHED_FIFO {
            return UnpreemptedReads(None);
        }
        match sched::priority() {
            Some(priority) if sched::set(libc::SCHED_FIFO, 1) => {
                UnpreemptedReads(Some((policy, priority)))
            }
            _ => UnpreemptedReads(None),
        }
    }
}

/// Whether this process's map reads can run unpreempted (SCHED_FIFO is allowed here, or
/// the thread is real-time already).
pub fn unpreempted_reads_possible() -> bool {
    sched::policy() == libc::SCHED_FIFO || UnpreemptedReads::enter().0.is_some()
}

impl Drop for UnpreemptedReads {
    fn drop(&mut self) {
        if let Some((policy, priority)) = self.0 {
            sched::set(policy, priority);
        }
    }
}

/// The calling thread's scheduling policy, through the syscalls themselves: musl's
/// wrappers of them only return ENOSYS (POSIX means them per process, Linux per thread).
mod sched {
    use libc::{SYS_sched_getparam, SYS_sched_getscheduler, SYS_sched_setscheduler, c_int};

    fn param(priority: c_int) -> libc::sched_param {
        // SAFETY: sched_param is plain integers (more of them on musl); zero is valid.
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        param.sched_priority = priority;
        param
    }

    /// -1 on error.
    pub fn policy() -> c_int {
        // SAFETY: pid 0 is the calling thread; no pointers.
        unsafe { libc::syscall(SYS_sched_getscheduler, 0) as c_int }
    }

    pub fn priority() -> Option<c_int> {
        let mut param = param(0);
        // SAFETY: a valid, writable sched_param for the calling thread.
        let ok = unsafe { libc::syscall(SYS_sched_getparam, 0, &raw mut param) } == 0;
        ok.then_some(param.sched_priority)
    }

    pub fn set(policy: c_int, priority: c_int) -> bool {
        let param = param(priority);
        // SAFETY: a valid sched_param for the calling thread.
        unsafe { libc::syscall(SYS_sched_setscheduler, 0, policy, &raw const param) == 0 }
    }
}
