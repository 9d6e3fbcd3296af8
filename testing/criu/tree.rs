//! The process tree the CRIU guest dumps (`xtask/src/criu.rs`), built there with plain
//! `rustc` for the musl target: std, and musl's own system call wrappers, no crates.
//!
//! `criu-tree PIDFILE` becomes a session leader and builds:
//! * itself: a file opened read-write, an eventfd, an epoll set watching it, and two
//!   threads (one waiting in epoll_wait);
//! * a child made by fork: the same open file, eventfd and epoll set inherited, the same
//!   file opened again, and a thread of its own waiting in epoll_wait;
//! * a child made by clone(CLONE_FILES): one fd table with the root;
//! * a child that execs itself in a loop (`criu-tree exec-loop N`), the inherited file kept
//!   open across each exec.
//!
//! Once all of it stands it writes its pid and the exec loop's to PIDFILE and sleeps;
//! nothing in it calls kcmp.

use std::{
    env,
    ffi::{CString, c_char, c_int, c_long},
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd},
    process, thread,
    time::Duration,
};

/// The file every process of the tree holds open.
const SHARED: &str = "/tmp/criu-tree.shared";
const EPOLLIN: u32 = 1;
const EPOLL_CTL_ADD: c_int = 1;
const F_SETFD: c_int = 2;
const CLONE_FILES: c_long = 0x400;
const SIGCHLD: c_long = 17;
const SYS_CLONE: c_long = 56;

/// `struct epoll_event`, packed on x86-64.
#[repr(C, packed)]
struct EpollEvent {
    events: u32,
    data: u64,
}

unsafe extern "C" {
    fn epoll_create1(flags: c_int) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut EpollEvent) -> c_int;
    fn epoll_wait(epfd: c_int, events: *mut EpollEvent, max: c_int, timeout: c_int) -> c_int;
    fn eventfd(initval: u32, flags: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int;
    fn fork() -> c_int;
    fn pipe(fds: *mut c_int) -> c_int;
    fn pause() -> c_int;
    fn setsid() -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int;
}

fn fail(what: &str) -> ! {
    eprintln!("criu-tree: {what}: {}", std::io::Error::last_os_error());
    process::exit(1)
}

fn check(ret: c_int, what: &str) -> c_int {
    if ret < 0 {
        fail(what)
    }
    ret
}

/// Replaces this process with `criu-tree exec-loop N`.
fn exec_next(n: u64) -> ! {
    let exe = env::current_exe().unwrap_or_else(|_| fail("reading /proc/self/exe"));
    let path = CString::new(exe.as_os_str().as_encoded_bytes()).unwrap_or_else(|_| fail("path"));
    let args = [
        c"criu-tree".to_owned(),
        c"exec-loop".to_owned(),
        CString::new(n.to_string()).unwrap_or_else(|_| fail("argument")),
    ];
    let argv: Vec<*const c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: a NUL-terminated path and a NULL-terminated argv of live CStrings.
    unsafe { execv(path.as_ptr(), argv.as_ptr()) };
    fail("execv")
}

/// Waits on the epoll set forever (the eventfd is never written).
fn wait_on(epoll: c_int) -> ! {
    let mut event = EpollEvent { events: 0, data: 0 };
    loop {
        // SAFETY: room for one event.
        unsafe { epoll_wait(epoll, &mut event, 1, -1) };
    }
}

fn sleep_forever() -> ! {
    loop {
        // SAFETY: no arguments.
        unsafe { pause() };
    }
}

fn main() {
    let args: Vec<String> = env::args().collect();
    if args.get(1).map(String::as_str) == Some("exec-loop") {
        let n: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
        exec_next(n + 1);
    }
    let Some(pidfile) = args.get(1) else {
        eprintln!("usage: criu-tree PIDFILE | criu-tree exec-loop N");
        process::exit(2)
    };

    // SAFETY (each block): a system call on values this function owns.
    check(unsafe { setsid() }, "setsid");
    let shared = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(SHARED)
        .unwrap_or_else(|_| fail(SHARED));
    // Kept open across the exec loop's execs.
    check(unsafe { fcntl(shared.as_raw_fd(), F_SETFD, 0) }, "fcntl");
    let counter = check(unsafe { eventfd(0, 0) }, "eventfd");
    let epoll = check(unsafe { epoll_create1(0) }, "epoll_create1");
    let mut watch = EpollEvent {
        events: EPOLLIN,
        data: counter as u64,
    };
    check(
        unsafe { epoll_ctl(epoll, EPOLL_CTL_ADD, counter, &mut watch) },
        "epoll_ctl",
    );

    // The children first, while this process has one thread.
    let mut ends = [0; 2];
    check(unsafe { pipe(ends.as_mut_ptr()) }, "pipe");
    // SAFETY: pipe() just opened both, and nothing else owns them.
    let (ready_read, ready_write) =
        unsafe { (File::from_raw_fd(ends[0]), File::from_raw_fd(ends[1])) };
    if check(unsafe { fork() }, "fork") == 0 {
        drop(ready_read);
        let _again = File::open(SHARED).unwrap_or_else(|_| fail(SHARED));
        thread::spawn(move || wait_on(epoll));
        (&ready_write)
            .write_all(b"r")
            .unwrap_or_else(|_| fail("pipe write"));
        sleep_forever();
    }
    // A fork that shares the fd table; the child only sleeps, so the state of musl's it
    // copied never matters.
    let zero: c_long = 0;
    if unsafe { syscall(SYS_CLONE, CLONE_FILES | SIGCHLD, zero, zero, zero) } == 0 {
        sleep_forever();
    }
    let looper = check(unsafe { fork() }, "fork");
    if looper == 0 {
        exec_next(0);
    }
    drop(ready_write);
    (&ready_read)
        .read_exact(&mut [0])
        .unwrap_or_else(|_| fail("pipe read"));
    drop(ready_read);

    thread::spawn(move || wait_on(epoll));
    thread::spawn(|| {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    });
    let pending = format!("{pidfile}.tmp");
    fs::write(&pending, format!("{} {looper}\n", process::id())).unwrap_or_else(|_| fail(&pending));
    fs::rename(&pending, pidfile).unwrap_or_else(|_| fail(pidfile));
    sleep_forever();
}
