//! Per-process totals with processes coming and going under two readers of one tracer:
//! every reader sees every process's final totals, not only the one whose read removed the
//! exited process from the kernel's map. Real BPF; needs root.

mod common;

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use common::require_root;
use kcmp_trace::{config::TraceConfig, loader::Tracer};
use kcmp_trace_common::maps::misc;

/// Processes started at once, then waited for: fewer than the map's half, so that readers
/// make room between waves.
const WAVE: usize = 8;
const WAVES: usize = 25;

/// What one reader saw: each process's latest (comm, calls), as a reader that reports per
/// interval keeps them.
type Seen = BTreeMap<u32, (String, u64)>;

fn read_until(tracer: &Tracer, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::new();
    loop {
        // Once stopped, one more read: it comes after every process was waited for.
        let last = stop.load(Ordering::Acquire);
        for row in tracer.processes().expect("reading the per-process totals") {
            seen.insert(row.tgid, (row.comm, row.calls));
        }
        if last {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[test]
#[ignore = "needs root"]
fn two_readers_each_see_every_exited_process_and_comm_total() {
    if !require_root() {
        return;
    }
    let comm = format!("kt-churn-{}", std::process::id() % 10_000);
    let config = TraceConfig {
        comm: Some(comm.clone()),
        // Small, so that exited processes are removed again and again.
        max_processes: 64,
        ..TraceConfig::default()
    };
    let tracer = Tracer::start(&config).expect("attaching");
    let stop = AtomicBool::new(false);
    // tgid -> the calls it made.
    let mut workload = BTreeMap::new();
    let seen: Vec<Seen> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| read_until(&tracer, &stop)))
            .collect();
        for wave in 0..WAVES {
            let children: Vec<_> = (0..WAVE)
                .map(|i| {
                    let calls = 1 + (wave + i) % 3;
                    let child = common::kcmp_trace()
                        .args(["stress", "--types", "vm", "--comm", &comm])
                        .args(["-n", &calls.to_string()])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("spawn stress");
                    (child, calls as u64)
                })
                .collect();
            for (mut child, calls) in children {
                assert!(child.wait().expect("wait").success());
                workload.insert(child.id(), calls);
            }
        }
        stop.store(true, Ordering::Release);
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    });
    let counters = tracer.counters().expect("counters");
    assert_eq!(
        counters.misc[misc::UNATTRIBUTED],
        0,
        "the map overflowed: the test needs more room between waves"
    );
    let total: u64 = workload.values().sum();
    for (reader, seen) in seen.iter().enumerate() {
        for (tgid, calls) in &workload {
            assert_eq!(
                seen.get(tgid).map(|(_, c)| *c),
                Some(*calls),
                "reader {reader}, process {tgid}"
            );
        }
        let per_comm: u64 = seen
            .values()
            .filter(|(c, _)| *c == comm)
            .map(|(_, calls)| calls)
            .sum();
        assert_eq!(per_comm, total, "reader {reader}: {comm}'s calls");
    }
}
