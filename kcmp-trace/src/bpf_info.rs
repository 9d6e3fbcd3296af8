//! What the kernel counts about our programs and links: runs it skipped, run time (and
//! turning its statistics on), and what the verifier and the JIT made of each program; and
//! running a program on a CPU.
//!
//! aya's `ProgramInfo` has run time and count but not `recursion_misses`, and its
//! `LinkInfo` does not expose a kprobe's `missed`; both come from the same
//! `BPF_OBJ_GET_INFO_BY_FD` call, made here with aya-obj's bindings of the kernel structs.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::{
    PERF_FLAG_FD_CLOEXEC, bpf_cmd, bpf_link_info, bpf_link_type, bpf_perf_event_type,
    bpf_prog_info, perf_event_attr,
};

/// perf_event_open(2) of `attr` (its size filled in here) for `pid` on `cpu`, in no group,
/// closed on exec.
pub fn perf_event_open(
    mut attr: perf_event_attr,
    pid: libc::pid_t,
    cpu: libc::c_int,
) -> io::Result<OwnedFd> {
    attr.size = size_of::<perf_event_attr>() as u32;
    let group: libc::c_int = -1;
    // SAFETY: a valid attr of the size given; the kernel returns a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            pid,
            cpu,
            group,
            PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The `info` member of `union bpf_attr` (BPF_OBJ_GET_INFO_BY_FD).
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The `*_GET_FD_BY_ID` member of `union bpf_attr`.
#[repr(C)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The `test` member of `union bpf_attr` (BPF_PROG_TEST_RUN), up to `cpu`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
}

/// The `link_create` member of `union bpf_attr`, up to the perf-event cookie.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    bpf_cookie: u64,
}

fn bpf<A>(cmd: bpf_cmd, attr: &mut A) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialised prefix of union bpf_attr for `cmd`, and
    // its size is passed along.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut A,
            size_of::<A>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Fills a zeroed info struct of type `T` for the object behind `fd`.
fn object_info<T>(fd: BorrowedFd<'_>) -> io::Result<T> {
    // SAFETY: the kernel's info structs are plain integers and zero is valid for all of
    // them (a zero pointer field asks for nothing to be copied out).
    let mut info: T = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: &raw mut info as u64,
    };
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// A program's counters as the kernel keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Runs the kernel skipped because a run of the same program was already in progress
    /// on that CPU (bpf_prog_info.recursion_misses, Linux 5.12 and later).
    pub recursion_misses: u64,
    /// Time spent running and runs, counted while kernel.bpf_stats_enabled=1.
    pub run_time_ns: u64,
    pub run_count: u64,
    /// Instructions the verifier processed (bpf_prog_info.verified_insns, Linux 5.16 and
    /// later; 0 before).
    pub verified_insns: u32,
    /// The program as the kernel runs it: rewritten by the verifier (inlined helpers, map
    /// lookups), and the JIT's machine code (0 without the JIT), in bytes.
    pub xlated_bytes: u32,
    pub jited_bytes: u32,
}

pub fn program_counters(fd: BorrowedFd<'_>) -> io::Result<ProgramCounters> {
    let info: bpf_prog_info = object_info(fd)?;
    Ok(ProgramCounters {
        recursion_misses: info.recursion_misses,
        run_time_ns: info.run_time_ns,
        run_count: info.run_cnt,
        verified_insns: info.verified_insns,
        xlated_bytes: info.xlated_prog_len,
        jited_bytes: info.jited_prog_len,
    })
}

/// Turns BPF run-time statistics on until the returned descriptor is closed (aya's
/// `enable_stats`): the kernel counts programs' run time and runs only while some holder
/// has them on, or while kernel.bpf_stats_enabled is 1. The kernel asks for CAP_SYS_ADMIN.
pub fn enable_run_time_stats() -> io::Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.io_error)
}

/// kernel.bpf_stats_enabled is 1: run-time statistics are on for every program.
pub fn run_time_stats_by_sysctl() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

/// The average of `runs` runs that took `run_time_ns` in all; None without runs.
pub fn ns_per_run(run_time_ns: u64, runs: u64) -> Option<f64> {
    (runs != 0).then(|| run_time_ns as f64 / runs as f64)
}

/// Runs a raw tracepoint program once on `cpu`, with no arguments, and returns what it
/// returned. The kernel runs it there in an IPI (or with preemption off, on the caller's
/// own CPU). ENXIO: the CPU is offline.
pub fn run_on_cpu(program: BorrowedFd<'_>, cpu: u32) -> io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        flags: aya_obj::generated::BPF_F_TEST_RUN_ON_CPU,
        cpu,
        ..TestRunAttr::default()
    };
    bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

/// Attaches a loaded program to a perf event through a BPF link (the program detaches when
/// the returned descriptor is closed).
pub fn link_perf_event(program: BorrowedFd<'_>, perf_event: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: perf_event.as_raw_fd() as u32,
        attach_type: aya_obj::generated::bpf_attach_type::BPF_PERF_EVENT as u32,
        ..LinkCreateAttr::default()
    };
    let raw = bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

/// The probe-level misses of a kprobe or kretprobe attached through a perf link: hits it
/// could not handle (reentered, or a kretprobe out of instances). The kernel reports them
/// from Linux 6.7 on; before that the field stays 0.
pub fn kprobe_link_missed(link_id: u32) -> io::Result<u64> {
    let mut attr = IdAttr {
        id: link_id,
        next_id: 0,
        open_flags: 0,
    };
    let raw = bpf(bpf_cmd::BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let info: bpf_link_info = object_info(std::os::fd::AsFd::as_fd(&fd))?;
    if info.type_ != bpf_link_type::BPF_LINK_TYPE_PERF_EVENT as u32 {
        return Ok(0);
    }
    // SAFETY: a perf-event link's info is the perf_event member.
    let event = unsafe { info.__bindgen_anon_1.perf_event };
    let probe = [
        bpf_perf_event_type::BPF_PERF_EVENT_KPROBE as u32,
        bpf_perf_event_type::BPF_PERF_EVENT_KRETPROBE as u32,
    ];
    if !probe.contains(&event.type_) {
        return Ok(0);
    }
    // SAFETY: kprobe and kretprobe events fill the kprobe member.
    Ok(unsafe { event.__bindgen_anon_1.kprobe.missed })
}
