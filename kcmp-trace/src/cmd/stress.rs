//! `kcmp-trace stress`: a kcmp workload with its own exact count.

use crate::{
    cli::StressArgs,
    stress::{ALL_TYPES, StressConfig},
};

pub fn run(args: StressArgs) -> anyhow::Result<()> {
    let types = if args.types.contains(&u32::MAX) {
        ALL_TYPES.to_vec()
    } else {
        args.types.clone()
    };
    if let Some(comm) = &args.comm {
        // Threads take their comm from the thread that creates them: set it before any.
        let name = std::ffi::CString::new(comm.as_str())?;
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    if let Some(path) = &args.wait_for {
        while !path.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let report = crate::stress::run(&StressConfig {
        threads: args.threads,
        types,
        calls: args.calls,
        duration: args.duration,
        bad_fd: args.bad_fd,
        dead_pid: args.dead_pid,
        bad_type: args.bad_type,
        eperm: args.eperm,
        exec_racers: args.exec_racers,
        tsync_racers: args.tsync_racers,
        thread_per_call: args.thread_per_call,
        proc_readers: args.proc_readers,
        mm_readers: args.mm_readers,
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "stress: pid {} made {} kcmp calls in {:.2}s ({:.0}/s) on {} threads, {} exec racers, {} TSYNC racers",
            report.pid,
            report.calls,
            report.elapsed_s,
            report.calls_per_s,
            report.threads,
            report.exec_racers,
            report.tsync_racers
        );
        if report.tsync_racers > 0 {
            println!("  TSYNC write sections: {}", report.tsync_sections);
        }
        let fmt = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("  by type:   {}", fmt(&report.by_type));
        println!("  by result: {}", fmt(&report.by_result));
        println!("  reached the comparison: {}", report.reached_comparison);
        if args.thread_per_call {
            println!("  threads started, one per call: {}", report.call_threads);
        }
        if !report.proc_reads.is_empty() {
            let reads: Vec<String> = report
                .proc_reads
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("  /proc reads: {}", reads.join(" "));
        }
        if let Some(mm) = &report.mm_reads {
            println!(
                "  mm readers: {} opens of {} (mm_access), by result: {}",
                mm.opens,
                mm.file,
                fmt(&mm.by_result)
            );
        }
    }
    Ok(())
}
