//! What each hook of an attached tracer costs per run on this kernel (`doctor --cost`):
//! the kernel's run-time statistics over a short workload that makes every hook fire, the
//! hooks that every process meets among them.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use kcmp_trace_common::{json::readout::HookCounters, kcmp::KCMP_VM};
use serde::Serialize;

use crate::{
    bpf_info,
    error::Error,
    loader::Tracer,
    probe::privilege::{Refused, explain},
    stress::{self, StressConfig},
};

/// What the workload does: enough of each to average over, little enough for `doctor`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Workload {
    /// Execs of a trivial child (this binary's `--version`): the exec hooks fire.
    pub execs: u32,
    /// Threads that map and unmap pages in one address space at once, so they contend on
    /// its mmap_lock: the lock contention tracepoints fire.
    pub contending_threads: u32,
    pub maps_per_thread: u32,
    /// kcmp calls of this process on itself (`stress`): kcmp's own hooks fire.
    pub kcmp_calls: u64,
}

impl Workload {
    pub const DOCTOR: Workload = Workload {
        execs: 100,
        contending_threads: 4,
        maps_per_thread: 2000,
        kcmp_calls: 1000,
    };

    fn run(self) -> anyhow::Result<()> {
        for _ in 0..self.execs {
            // The running binary, whatever its path now (it may have been replaced).
            let status = Command::new("/proc/self/exe")
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .context("running this binary's --version")?;
            ensure!(status.success(), "this binary's --version: {status}");
        }
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..self.contending_threads)
                .map(|_| s.spawn(move || map_and_unmap(self.maps_per_thread)))
                .collect();
            threads.into_iter().try_for_each(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a contending thread panicked"))?
            })
        })?;
        stress::run(&StressConfig {
            threads: 1,
            types: vec![KCMP_VM],
            calls: Some(self.kcmp_calls),
            duration: None,
            bad_fd: 0,
            dead_pid: 0,
            bad_type: 0,
            eperm: 0,
            exec_racers: 0,
            tsync_racers: 0,
            thread_per_call: false,
            proc_readers: 0,
            mm_readers: 0,
        })?;
        Ok(())
    }
}

/// Maps a page, touches it and unmaps it, `times` times: each map and unmap takes the
/// address space's mmap_lock for writing.
fn map_and_unmap(times: u32) -> anyhow::Result<()> {
    const PAGE: usize = 4096;
    for _ in 0..times {
        // SAFETY: a fresh private anonymous mapping, written within its one page and
        // unmapped before anything else can see it.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if page == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error()).context("mmap");
            }
            page.cast::<u8>().write_volatile(1);
            if libc::munmap(page, PAGE) != 0 {
                return Err(std::io::Error::last_os_error()).context("munmap");
            }
        }
    }
    Ok(())
}

/// One hook over the workload.
#[derive(Debug, Serialize)]
pub struct HookCost {
    pub program: String,
    pub target: String,
    /// When it runs for processes that are not in a traced call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outside_kcmp: Option<String>,
    /// Its runs meanwhile, on every CPU: the workload's and the rest of the host's.
    pub runs: u64,
    /// Time per run; None without runs.
    pub ns_per_run: Option<f64>,
    /// Of `runs`, those that found no kcmp call, for hooks that look for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_outside_kcmp: Option<u64>,
}

/// Every hook of a plan over one workload.
#[derive(Debug, Serialize)]
pub struct HookCosts {
    pub workload: Workload,
    pub elapsed_s: f64,
    pub hooks: Vec<HookCost>,
}

/// Runs `workload` beside the attached `tracer`, run-time statistics on, and reads what
/// each of its hooks ran and took meanwhile.
pub fn measure(tracer: &Tracer, workload: Workload) -> anyhow::Result<HookCosts> {
    // The kernel counts runs and their time only while statistics are on.
    let _stats = match bpf_info::enable_run_time_stats() {
        Ok(held) => Some(held),
        Err(_) if bpf_info::run_time_stats_by_sysctl() => None,
        Err(e) => {
            return Err(match explain(Refused::RunTimeStats, &e) {
                Some(why) => Error::Denied(format!("BPF run-time statistics: {e}; {why}")).into(),
                None => anyhow::Error::new(e).context("turning BPF run-time statistics on"),
            });
        }
    };
    let before = tracer.hook_counters()?;
    let started = Instant::now();
    workload.run()?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let after = tracer.hook_counters()?;
    let hooks = tracer
        .plan
        .hooks
        .iter()
        .zip(after.iter().zip(&before))
        .map(|(hook, (after, before))| HookCost {
            outside_kcmp: hook.outside_kcmp.clone(),
            ..between(before, after)
        })
        .collect();
    Ok(HookCosts {
        workload,
        elapsed_s,
        hooks,
    })
}

/// One program's runs, run time and runs outside kcmp between two readings.
fn between(before: &HookCounters, after: &HookCounters) -> HookCost {
    let runs = after.run_count.saturating_sub(before.run_count);
    let run_time_ns = after.run_time_ns.saturating_sub(before.run_time_ns);
    HookCost {
        program: after.program.clone(),
        target: after.target.clone(),
        outside_kcmp: None,
        runs,
        ns_per_run: bpf_info::ns_per_run(run_time_ns, runs),
        runs_outside_kcmp: after
            .runs_outside_kcmp
            .map(|n| n.saturating_sub(before.runs_outside_kcmp.unwrap_or(0))),
    }
}

impl HookCosts {
    /// A header line and a row per hook.
    pub fn describe(&self) -> Vec<String> {
        let w = &self.workload;
        let mut lines = vec![
            format!(
                "over {:.2} s: {} execs, {} threads contending on one mmap_lock, {} kcmp calls, \
                 and whatever else the host ran",
                self.elapsed_s, w.execs, w.contending_threads, w.kcmp_calls
            ),
            format!(
                "  {:<22} {:<28} {:>9} {:>9}  fires for",
                "program", "target", "runs", "ns/run"
            ),
        ];
        for h in &self.hooks {
            let ns = h.ns_per_run.map_or("-".to_owned(), |ns| format!("{ns:.0}"));
            let fires = match (&h.outside_kcmp, h.runs_outside_kcmp) {
                (Some(when), Some(outside)) => format!("{when}; {outside} found no kcmp call"),
                (Some(when), None) => when.clone(),
                (None, _) => "kcmp calls only".to_owned(),
            };
            lines.push(format!(
                "  {:<22} {:<28} {:>9} {:>9}  {fires}",
                h.program, h.target, h.runs, ns
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(runs: u64, ns: u64, outside: Option<u64>) -> HookCounters {
        HookCounters {
            program: "exec_begin".into(),
            target: "begin_new_exec".into(),
            affects: Vec::new(),
            misses: 0,
            run_time_ns: ns,
            run_count: runs,
            runs_outside_kcmp: outside,
        }
    }

    #[test]
    fn a_hook_s_cost_is_what_it_ran_and_took_between_the_readings() {
        let cost = between(
            &counters(100, 50_000, Some(7)),
            &counters(350, 300_000, Some(207)),
        );
        assert_eq!(cost.runs, 250);
        assert_eq!(cost.ns_per_run, Some(1000.0));
        assert_eq!(cost.runs_outside_kcmp, Some(200));
        let idle = between(&counters(5, 10, None), &counters(5, 10, None));
        assert_eq!((idle.runs, idle.ns_per_run), (0, None));
        assert_eq!(idle.runs_outside_kcmp, None);
    }
}
