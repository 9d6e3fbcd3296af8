//! The loops of the bench's everyone-else section: work that never calls kcmp, yet passes
//! through the functions a plan may hook (mm_access's exec_update_lock and permission check,
//! mmap_lock, exec), and the child process they look at.

use std::{
    fs::File,
    io::Read as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use kcmp_trace::{config::TraceConfig, loader::Tracer, plan::Plan, probe::Capabilities};

use crate::{
    report::{EveryoneElse, OtherRow, Setup, SetupHooks, Workload},
    rounds::{attach, interleaved, median, slowdown_pct, time_loop, traced_as},
};

/// argv[1] of the exec loop's program (this binary): it exits at once.
pub const EXIT_ARG: &str = "__exit";

/// Pages of the child the process_vm_readv loop copies.
const COPIED_PAGES: usize = 4;
const PAGE: usize = 4096;

/// How long one measurement of `workload` runs in a round of `round`: the slow loops (an
/// exec, a scan of /proc) get more of it, so that a round holds enough of their ops.
fn measurement(workload: Workload, round: Duration) -> Duration {
    match workload {
        Workload::Exec | Workload::PsScan => round / 2,
        _ => round / 4,
    }
}

pub fn getpid() {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) };
}

pub fn mmap_munmap() {
    // SAFETY: an anonymous private page, unmapped at once.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            libc::munmap(p, PAGE);
        }
    }
}

/// A forked child that waits to be killed: a process other than this one for /proc and
/// process_vm_readv to look at.
struct Child {
    pid: libc::pid_t,
}

impl Child {
    /// Forks. Call it before anything is attached: the child keeps what it inherits (a BPF
    /// link's fd would keep the link) until it is killed.
    fn fork() -> anyhow::Result<Child> {
        // SAFETY: fork has no preconditions; the child makes only async-signal-safe calls,
        // as a fork of a multi-threaded process must.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()).context("fork"),
            0 => {
                // SAFETY: plain syscalls. The child dies with the bench, however it ends.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                loop {
                    // SAFETY: a plain syscall.
                    unsafe { libc::pause() };
                }
            }
            pid => Ok(Child { pid }),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: our own child, killed and reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// What the loops act on: the child, and buffers kept across ops so that the loops time the
/// kernel rather than the allocator.
pub struct Workbench {
    child: Child,
    /// Pages that the child has at the same address, as a fork of this process.
    pages: Vec<u8>,
    copy: Vec<u8>,
    text: Vec<u8>,
    maps: PathBuf,
}

impl Workbench {
    /// Forks the child and checks that every loop works here (an op that fails would time
    /// its failure).
    pub fn new() -> anyhow::Result<Workbench> {
        let mut bench = Workbench::fork()?;
        for workload in Workload::ALL {
            bench
                .op(workload)
                .with_context(|| format!("the {} loop", workload.name()))?;
        }
        Ok(bench)
    }

    fn fork() -> anyhow::Result<Workbench> {
        // Touched before the fork, so the child has them.
        let pages = vec![1u8; COPIED_PAGES * PAGE];
        let child = Child::fork()?;
        Ok(Workbench {
            maps: PathBuf::from(format!("/proc/{}/maps", child.pid)),
            child,
            pages,
            copy: vec![0u8; COPIED_PAGES * PAGE],
            text: Vec::new(),
        })
    }

    /// One op of a loop.
    pub fn op(&mut self, workload: Workload) -> anyhow::Result<()> {
        match workload {
            Workload::Getpid => getpid(),
            Workload::Mmap => mmap_munmap(),
            Workload::ProcMaps => read_whole(&self.maps, &mut self.text)?,
            Workload::ProcessVmReadv => self.copy_pages()?,
            Workload::Exec => {
                let status = Command::new("/proc/self/exe").arg(EXIT_ARG).status()?;
                if !status.success() {
                    bail!("{EXIT_ARG} exited with {status}");
                }
            }
            Workload::PsScan => self.ps_scan()?,
        }
        Ok(())
    }

    fn copy_pages(&mut self) -> anyhow::Result<()> {
        let local = libc::iovec {
            iov_base: self.copy.as_mut_ptr().cast(),
            iov_len: self.copy.len(),
        };
        let remote = libc::iovec {
            iov_base: self.pages.as_ptr().cast_mut().cast(),
            iov_len: self.pages.len(),
        };
        // SAFETY: the local iovec covers `copy`, which is ours to write; the remote one is
        // only read, in the child.
        let n = unsafe { libc::process_vm_readv(self.child.pid, &local, 1, &remote, 1, 0) };
        if n != self.pages.len() as isize {
            bail!(
                "process_vm_readv copied {n} bytes of {}: {}",
                self.pages.len(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Reads stat and wchan of every process; one that exits meanwhile is skipped, as ps
    /// skips it.
    fn ps_scan(&mut self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir("/proc").context("reading /proc")? {
            let Ok(entry) = entry else { continue };
            if !entry
                .file_name()
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_digit)
            {
                continue;
            }
            let dir = entry.path();
            for file in ["stat", "wchan"] {
                let _ = read_whole(&dir.join(file), &mut self.text);
            }
        }
        Ok(())
    }
}

fn read_whole(path: &Path, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(())
}

/// Every loop of [`Workload::ALL`] under no tracer, the floor, counting, `--stacks`,
/// `--readers` and `--readers --stacks`, interleaved as the kcmp loop's setups are.
pub fn measure(
    bench: &mut Workbench,
    plan: &Plan,
    caps: &Capabilities,
    config: &TraceConfig,
    rounds: usize,
    round: Duration,
) -> anyhow::Result<EveryoneElse> {
    // Following the readers needs the kernel's BTF to place exec_update_lock.
    let (readers, readers_missing) =
        match Tracer::start_with(&traced_as(Setup::Readers, config), caps) {
            Ok(tracer) => (Some(tracer.plan.clone()), None),
            Err(e) => (None, Some(crate::error::one_line(&e))),
        };
    let targets = |plan: &Plan| plan.hooks.iter().map(|h| h.target.clone()).collect();
    let mut setups = vec![
        Setup::NoTracer,
        Setup::EmptyPrograms,
        Setup::Counters,
        Setup::Stacks,
    ];
    let mut hooks = vec![
        SetupHooks {
            setup: Setup::EmptyPrograms,
            targets: targets(plan),
        },
        SetupHooks {
            setup: Setup::Counters,
            targets: targets(plan),
        },
        SetupHooks {
            setup: Setup::Stacks,
            targets: targets(plan),
        },
    ];
    if let Some(readers) = &readers {
        for setup in [Setup::Readers, Setup::ReadersStacks] {
            setups.push(setup);
            hooks.push(SetupHooks {
                setup,
                targets: targets(readers),
            });
        }
    }

    let mut ns = vec![vec![Vec::new(); setups.len()]; Workload::ALL.len()];
    for i in interleaved(rounds, setups.len()) {
        let _attached = attach(setups[i], plan, caps, config)?;
        for (w, &workload) in Workload::ALL.iter().enumerate() {
            let len = measurement(workload, round);
            // Failures were ruled out when the workbench was made; timing ignores them.
            let mut op = || {
                let _ = bench.op(workload);
            };
            time_loop(len / 10, &mut op); // warm caches and the hooks' paths
            ns[w][i].push(time_loop(len, &mut op));
        }
    }

    let mut rows = Vec::new();
    for (workload, ns) in Workload::ALL.into_iter().zip(ns) {
        let ns: Vec<f64> = ns.into_iter().map(median).collect();
        let (none, floor) = (ns[0], ns[1]);
        rows.extend(setups.iter().zip(ns).map(|(&setup, ns)| OtherRow {
            workload,
            setup,
            ns_per_op: ns,
            ops_per_s: 1e9 / ns,
            vs_no_tracer_pct: slowdown_pct(ns, none),
            vs_floor_pct: slowdown_pct(ns, floor),
        }));
    }
    Ok(EveryoneElse {
        hooks,
        readers_missing,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loop_but_exec_runs_here() {
        // Exec would run this test binary, which does not know EXIT_ARG.
        let mut bench = Workbench::fork().unwrap();
        for workload in Workload::ALL {
            if workload != Workload::Exec {
                bench.op(workload).unwrap();
            }
        }
    }
}
