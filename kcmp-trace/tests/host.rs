//! The syscall-boundary tracer on this machine's kernel, held to stress's own counts and to
//! bpftrace's.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{ATTACH_WITHIN, Gated, Proc, require_root, run, schema, total_line, which};

const MIX: &[&str] = &[
    "-n",
    "20000",
    "--threads",
    "2",
    "--types",
    "file",
    "--bad-fd",
    "500",
    "--dead-pid",
    "200",
    "--bad-type",
    "100",
];

#[test]
#[ignore = "needs root"]
fn watch_counts_equal_the_workload_by_type_and_result() {
    if !require_root() {
        return;
    }
    let stress = Gated::new(MIX);
    let pid = stress.pid().to_string();
    let mut watch = Proc::spawn(&["watch", "--json", "-p", &pid, "-i", "500ms"]);
    watch.wait_attached();
    let workload = stress.run();
    let (code, out, err) = watch.stop();
    assert_eq!(code, 0, "{err}");
    let total = total_line(&out);
    schema::assert_watch_valid(&out);
    schema::assert_valid("stress.json", &workload);

    assert_eq!(workload["calls"], 20000);
    assert_eq!(total["calls"], workload["calls"]);
    assert_eq!(total["by_result"], workload["by_result"], "{out}");
    assert_eq!(total["by_type"], workload["by_type"], "{out}");
    assert_eq!(total["by_result"]["EBADF"], 500);
    assert_eq!(total["by_result"]["ESRCH"], 200);
    assert_eq!(total["by_result"]["EINVAL"], 100);
    assert_eq!(total["errors"], 800);
    assert_eq!(total["latency_ns"]["count"], 20000);
    assert_eq!(total["unpaired_exits"], 0);
    // One clock: the total covers everything since attach, and its rate is over that.
    let (interval, elapsed) = (
        total["interval_s"].as_f64().expect("interval_s"),
        total["elapsed_s"].as_f64().expect("elapsed_s"),
    );
    assert_eq!(interval, elapsed, "{total}");
    let rate = total["calls_per_s"].as_f64().expect("calls_per_s");
    assert!((rate * interval - 20000.0).abs() < 1e-6, "{total}");
    // Nothing skipped, nothing unpaired: the report says it is complete.
    assert_eq!(total["exact"], true, "{out}");
    assert_eq!(total["missed_runs"], serde_json::json!({}), "{out}");
    assert_eq!(total["incomplete"]["calls"], 0, "{out}");
    // Where only the syscall boundary is visible, the plan says so and every call is
    // `unknown`, still counted exactly.
    let plan: serde_json::Value = out
        .lines()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.get("plan").is_some())
        })
        .map(|v| v["plan"].clone())
        .expect("plan line");
    // The plan says which preemption model it saw and why it chose its mode.
    assert!(plan["preemption"]["source"].is_string(), "{plan}");
    assert!(
        plan["why"].as_str().is_some_and(|w| !w.is_empty()),
        "{plan}"
    );
    if plan["mode"] == "tracepoint" {
        let said = plan["accuracy"].to_string();
        assert!(said.contains("needs kprobes or fentry"), "{said}");
        assert_eq!(total["by_outcome"]["unknown"], 20000);
    }
    let top = &total["top_processes"][0];
    assert_eq!(top["tgid"].as_u64(), Some(stress_pid(&workload)));
    assert_eq!(top["calls"], 20000);
}

fn stress_pid(workload: &serde_json::Value) -> u64 {
    workload["pid"].as_u64().expect("pid")
}

#[test]
#[ignore = "needs root"]
fn pid_filter_leaves_out_other_processes() {
    if !require_root() {
        return;
    }
    let traced = Gated::new(&["-n", "3000", "--types", "vm"]);
    let other = Gated::new(&["-n", "5000", "--types", "file"]);
    let pid = traced.pid().to_string();
    let mut watch = Proc::spawn(&["watch", "--json", "-p", &pid]);
    watch.wait_attached();
    let other_thread = std::thread::spawn(move || other.run());
    let workload = traced.run();
    let other_workload = other_thread.join().expect("other stress");
    let (code, out, err) = watch.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(other_workload["calls"], 5000);
    let total = total_line(&out);
    assert_eq!(total["calls"], 3000);
    assert_eq!(total["by_type"], workload["by_type"]);
    assert!(total["by_type"].get("KCMP_FILE").is_none(), "{out}");
}

#[test]
#[ignore = "needs root"]
fn comm_filter_matches_only_that_comm() {
    if !require_root() {
        return;
    }
    let comm = format!("kt-comm-{}", std::process::id() % 100_000);
    let ours = Gated::new(&["-n", "1500", "--threads", "2", "--comm", &comm]);
    let theirs = Gated::new(&["-n", "700", "--comm", "kt-not-this-one"]);
    let mut watch = Proc::spawn(&["watch", "--json", "-c", &comm]);
    watch.wait_attached();
    let mut nobody = Proc::spawn(&["watch", "--json", "-c", "no-such-comm"]);
    nobody.wait_attached();
    let workload = ours.run();
    assert_eq!(theirs.run()["calls"], 700);
    let (code, out, err) = watch.stop();
    assert_eq!(code, 0, "{err}");
    let total = total_line(&out);
    // Every call of the workload with that comm, none of the other's.
    assert_eq!(total["calls"], 1500, "{out}");
    assert_eq!(total["calls"], workload["calls"]);
    assert_eq!(total["top_processes"][0]["comm"], comm.as_str());
    let (code, out, err) = nobody.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(total_line(&out)["calls"], 0);
}

#[test]
#[ignore = "needs root"]
fn an_idle_watch_hints_once_in_text_and_never_in_json() {
    if !require_root() {
        return;
    }
    // A comm nothing has: the kernel leaves every call out, as on a host where nothing
    // calls kcmp.
    let text = Proc::spawn(&["watch", "-c", "kt-idle-none", "-d", "8s"]);
    let json = Proc::spawn(&["watch", "--json", "-c", "kt-idle-none", "-d", "8s"]);
    let (code, out, err) = text.finish();
    assert_eq!(code, 0, "{err}");
    let hints: Vec<&str> = out.lines().filter(|l| l.starts_with("hint:")).collect();
    assert_eq!(hints.len(), 1, "{out}");
    assert!(hints[0].contains("-p/-c") && hints[0].contains("kcmp-trace stress"));
    // It follows the fifth report, not the first.
    let reports_before = out
        .lines()
        .take_while(|l| !l.starts_with("hint:"))
        .filter(|l| l.contains("calls=0"))
        .count();
    assert_eq!(reports_before, 5, "{out}");
    let (code, out, err) = json.finish();
    assert_eq!(code, 0, "{err}");
    for line in out.lines() {
        let parsed = serde_json::from_str::<serde_json::Value>(line);
        assert!(parsed.is_ok(), "not JSON: {line}");
    }
    assert_eq!(total_line(&out)["calls"], 0);
}

fn event_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect()
}

fn events_summary(err: &str) -> serde_json::Value {
    err.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("events_delivered").is_some())
        .unwrap_or_else(|| panic!("no events summary in {err}"))
}

/// `events --json` beside a gated stress run: (the workload's report, the event lines,
/// events' stderr).
fn streamed(stress_args: &[&str]) -> (serde_json::Value, Vec<serde_json::Value>, String) {
    let stress = Gated::new(stress_args);
    let pid = stress.pid().to_string();
    let mut events = Proc::spawn(&["events", "--json", "-p", &pid]);
    events.wait_attached();
    let workload = stress.run();
    let (code, out, err) = events.stop();
    assert_eq!(code, 0, "{err}");
    schema::assert_lines_valid("events-line.json", &out);
    schema::assert_valid("events-summary.json", &events_summary(&err));
    schema::assert_valid("stress.json", &workload);
    (workload, event_lines(&out), err)
}

#[test]
#[ignore = "needs root"]
fn epoll_slots_are_read_from_the_callers_memory() {
    if !require_root() {
        return;
    }
    let (workload, lines, _) =
        streamed(&["-n", "600", "--threads", "1", "--types", "epoll_tfd,vm"]);
    let epoll: Vec<_> = lines
        .iter()
        .filter(|e| e["type_name"] == "KCMP_EPOLL_TFD")
        .collect();
    assert_eq!(
        Some(epoll.len() as u64),
        workload["by_type"]["KCMP_EPOLL_TFD"].as_u64()
    );
    assert!(!epoll.is_empty());
    assert!(workload["epoll_slot"].is_object(), "{workload}");
    for e in epoll {
        assert_eq!(e["epoll_slot"], workload["epoll_slot"], "{e}");
    }
    // Whole-task types carry no slot.
    for e in lines.iter().filter(|e| e["type_name"] == "KCMP_VM") {
        assert!(e.get("epoll_slot").is_none(), "{e}");
    }
}

#[test]
#[ignore = "needs root"]
fn events_json_has_one_line_per_call() {
    if !require_root() {
        return;
    }
    let (workload, lines, err) = streamed(&["-n", "5000", "--types", "all", "--bad-fd", "50"]);
    let summary = events_summary(&err);
    assert_eq!(summary["events_dropped"], 0);
    assert_eq!(lines.len() as u64, 5000);
    assert_eq!(summary["events_delivered"], 5000);
    // The summary says whether any call went unseen: here none did.
    assert_eq!(summary["calls"], 5000, "{err}");
    assert_eq!(summary["exact"], true, "{err}");
    let ebadf = lines.iter().filter(|e| e["result"] == "EBADF").count();
    assert_eq!(ebadf, 50);
    assert_eq!(workload["by_result"]["EBADF"], 50);
    for e in &lines {
        assert_eq!(e["tgid"].as_u64(), Some(stress_pid(&workload)));
        assert!(e["latency_ns"].as_u64().is_some_and(|l| l > 0));
        assert_eq!(e["outcome"], "unknown");
    }
}

/// Fewer calls than fill a CPU's stage reach the reader while it runs (its drain tick flushes
/// the stages), each with its caller's comm.
#[test]
#[ignore = "needs root"]
fn a_few_calls_reach_a_running_reader() {
    if !require_root() {
        return;
    }
    let comm = format!("kt-few-{}", std::process::id() % 100_000);
    let stress = Gated::new(&["-n", "5", "--threads", "1", "--comm", &comm]);
    let pid = stress.pid().to_string();
    let mut events = Proc::spawn(&["events", "--json", "-p", &pid, "--count", "5"]);
    events.wait_attached();
    assert_eq!(stress.run()["calls"], 5);
    // --count 5: the reader exits by itself once it has shown five events.
    assert!(
        events.exited_within(Duration::from_secs(20)).is_some(),
        "five staged events did not reach the running reader"
    );
    let (code, out, err) = events.finish();
    assert_eq!(code, 0, "{err}");
    let lines = event_lines(&out);
    assert_eq!(lines.len(), 5, "{out}");
    for e in &lines {
        assert_eq!(e["comm"], comm.as_str());
    }
}

#[test]
#[ignore = "needs root"]
fn a_tiny_ring_buffer_drops_and_says_how_many() {
    if !require_root() {
        return;
    }
    let stress = Gated::new(&["-n", "20000", "--threads", "2"]);
    let pid = stress.pid().to_string();
    let mut events = Proc::spawn(&["events", "--json", "-p", &pid, "--ring-size", "4K"]);
    events.wait_attached();
    // Stop the reader so the burst overflows the ring deterministically.
    events.signal(libc::SIGSTOP);
    let workload = stress.run();
    events.signal(libc::SIGCONT);
    let (code, out, err) = events.stop();
    assert_eq!(code, 0, "{err}");
    let delivered = event_lines(&out).len() as u64;
    let summary = events_summary(&err);
    let dropped = summary["events_dropped"].as_u64().expect("dropped");
    assert_eq!(summary["events_delivered"].as_u64(), Some(delivered));
    assert!(dropped > 0, "no drops with a 4K ring: {summary}");
    assert_eq!(
        delivered + dropped,
        workload["calls"].as_u64().expect("calls")
    );
}

#[test]
#[ignore = "needs root"]
fn bpftrace_counts_the_same_calls() {
    if !require_root() {
        return;
    }
    let stress = Gated::new(&["-n", "12345", "--types", "vm,file", "--dead-pid", "45"]);
    let pid = stress.pid().to_string();
    let script =
        format!("tracepoint:syscalls:sys_exit_kcmp /pid == {pid}/ {{ @calls = count(); }}");
    // Unbuffered: into a pipe, bpftrace's "Attaching" line can otherwise sit in its buffer
    // until it exits.
    let bpftrace =
        which("bpftrace").expect("bpftrace must be installed (cargo xtask setup installs it)");
    let mut bpftrace = Proc::start(
        Command::new(bpftrace)
            .args(["-B", "none", "-e", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    bpftrace.wait_stdout("Attaching", ATTACH_WITHIN);
    let mut watch = Proc::spawn(&["watch", "--json", "-p", &pid]);
    watch.wait_attached();
    let workload = stress.run();
    let (code, out, err) = watch.stop();
    assert_eq!(code, 0, "{err}");
    let (_, rest, _) = bpftrace.stop();
    let peer: u64 = rest
        .lines()
        .find_map(|l| l.strip_prefix("@calls: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no @calls in bpftrace output {rest:?}"));
    let ours = total_line(&out)["calls"].as_u64().expect("calls");
    assert_eq!(workload["calls"], 12345);
    assert_eq!(peer, 12345);
    assert_eq!(ours, peer);
}

#[test]
#[ignore = "needs root"]
fn doctor_reports_what_this_kernel_allows() {
    if !require_root() {
        return;
    }
    let (code, out, err) = run(&["doctor", "--json"]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).expect("doctor JSON");
    assert_eq!(d["kcmp_tracepoints"], true);
    assert_eq!(d["privileged"], true);
    let plan = &d["plan"]["Ok"];
    assert!(plan["mode"].is_string(), "{out}");
    let arch = kcmp_trace_common::arch::NATIVE;
    assert_eq!(d["arch"], arch.name());
    // Whatever the mode, the kcmp syscall's wrapper must be a known symbol here.
    let symbols = d["symbols"].as_array().expect("symbols");
    let sys = symbols
        .iter()
        .find(|s| s["name"] == arch.kcmp_wrapper())
        .expect("kcmp's wrapper among the symbols");
    assert_eq!(sys["kallsyms"], true);
    assert_eq!(d["unpreempted_reads"], true, "root may read at SCHED_FIFO");
    // This kernel has BTF, and the verifier takes the direct comm read there.
    assert!(d["task_comm_offset"].as_u64().is_some(), "{out}");
    assert_eq!(d["direct_comm"]["Ok"], d["task_comm_offset"], "{out}");

    // Without CAP_SYS_NICE and with no real-time priority allowed, reads cannot be kept
    // from being preempted, and doctor says so.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-sys_nice", "--inh-caps=-sys_nice"])
        .args(["prlimit", "--rtprio=0:0"])
        .arg(common::BIN)
        .args(["doctor", "--json"])
        .output()
        .expect("setpriv and prlimit (util-linux)");
    let d: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor JSON: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(d["unpreempted_reads"], false);
}

#[test]
#[ignore = "needs root"]
fn doctor_cost_measures_every_hook_over_its_workload() {
    if !require_root() {
        return;
    }
    let (code, out, err) = run(&["doctor", "--cost", "--json"]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).expect("doctor JSON");
    let cost = &d["cost"]["Ok"];
    let hooks = cost["hooks"].as_array().unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        Some(hooks.len()),
        d["plan"]["Ok"]["hooks"].as_array().map(Vec::len)
    );
    let (execs, calls) = (
        cost["workload"]["execs"].as_u64().expect("execs"),
        cost["workload"]["kcmp_calls"].as_u64().expect("kcmp calls"),
    );
    assert!(execs > 0 && calls > 0, "{cost}");
    // Each exec runs every exec hook once, and each kcmp call kcmp's entry and exit hooks;
    // the rest of the host may add runs, never take them away.
    let wrapper = kcmp_trace_common::arch::NATIVE.kcmp_wrapper();
    let mut checked = 0;
    for h in hooks {
        let target = h["target"].as_str().expect("target");
        let least = if h["outside_kcmp"] == "every exec" {
            execs
        } else if target.ends_with("_kcmp") || target == wrapper {
            calls
        } else {
            continue;
        };
        let runs = h["runs"].as_u64().expect("runs");
        assert!(
            runs >= least,
            "{target}: {runs} runs, fewer than {least}: {cost}"
        );
        assert!(
            h["ns_per_run"].as_f64().is_some_and(|ns| ns > 0.0),
            "{target}: {cost}"
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "neither kcmp's entry nor its exit among {cost}"
    );
}

#[test]
fn bad_input_gets_one_line_and_its_own_exit_code() {
    let (code, _, err) = run(&["events", "--ring-size", "1000"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("power of two"), "{err}");

    let (code, _, err) = run(&["watch", "-c", "a-comm-longer-than-fifteen"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("comm filter"), "{err}");

    let (code, _, err) = run(&["stress", "--types", "bogus", "-n", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a kcmp type"), "{err}");

    let (code, _, err) = run(&["stress", "-n", "5", "--bad-fd", "10"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (code, _, err) = run(&["watch", "--interval", "soon"]);
    assert_eq!(code, 2, "{err}");

    let (code, _, err) = run(&["events", "--stacks", "-n", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("events prints calls, not stacks"), "{err}");

    // Values that used to stop a timer dead or overflow it: usage errors, not panics.
    for args in [
        ["watch", "-i", "0.0000000001"],
        ["watch", "-d", "99999999999999999999"],
        // Bounds a shared host needs: series per scrape, connections per daemon.
        ["serve", "--top-comms", "100000"],
        ["serve", "--max-connections", "0"],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }

    // More pids than the kernel-side filter holds.
    let pids: Vec<String> = (1..=1025).map(|p| p.to_string()).collect();
    let mut args = vec!["watch", "-d", "1s"];
    for p in &pids {
        args.extend(["-p", p.as_str()]);
    }
    let (code, _, err) = run(&args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most 1024"), "{err}");
}

/// kcmp-trace run as `nobody` with no capabilities: (exit code, stderr).
fn as_nobody(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(common::BIN)
        .args(args)
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root"]
fn an_unprivileged_user_is_told_to_use_root() {
    if !require_root() {
        return;
    }
    let (code, err) = as_nobody(&["watch", "-d", "1s"]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("root"), "{err}");

    // A bad argument is a usage error first, privileged or not.
    let (code, err) = as_nobody(&["events", "--ring-size", "12288"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("power of two"), "{err}");
}

/// A peer that accepts `watch --connect` and reads its request, says so, then does
/// `answer`.
fn hostile_daemon(answer: fn(std::net::TcpStream)) -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (asked, was_asked) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut request = String::new();
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        while reader.read_line(&mut request).is_ok_and(|n| n > 2) {
            request.clear();
        }
        let _ = asked.send(());
        answer(stream);
    });
    (url, was_asked)
}

#[test]
fn a_daemon_that_never_answers_does_not_hold_off_sigterm() {
    let (url, was_asked) = hostile_daemon(|stream| {
        std::thread::sleep(Duration::from_secs(30));
        drop(stream);
    });
    let watch = Proc::spawn(&["watch", "--connect", &url]);
    // The client installs its signal handlers before it connects.
    was_asked
        .recv_timeout(Duration::from_secs(30))
        .expect("watch never sent its request");
    let asked = Instant::now();
    watch.signal(libc::SIGTERM);
    let (code, _, err) = watch.finish();
    // Not a timing test: the client's own timeout is 10 s, the peer's silence 30 s.
    assert!(asked.elapsed() < Duration::from_secs(8), "{err}");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stopped while waiting for the daemon"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn an_answer_larger_than_any_snapshot_is_refused() {
    let (url, _) = hostile_daemon(|mut stream| {
        use std::io::Write as _;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 419430400\r\n\r\n");
        let chunk = vec![b'{'; 1 << 20];
        // Until the client hangs up.
        while stream.write_all(&chunk).is_ok() {}
    });
    let (code, _, err) = run(&["watch", "--connect", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("length limit exceeded"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Per-process totals outlive their threads: 20,000 threads that make one call each and
/// exit, more than the per-thread map holds, all count toward their process.
#[test]
#[ignore = "needs root"]
fn per_process_totals_survive_thread_churn() {
    if !require_root() {
        return;
    }
    let stress = Gated::new(&["-n", "20000", "--types", "vm", "--thread-per-call"]);
    let pid = stress.pid();
    let mut watch = Proc::spawn(&["watch", "--json", "-p", &pid.to_string(), "--top", "3"]);
    watch.wait_attached();
    let workload = stress.run();
    let (code, out, err) = watch.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(workload["call_threads"], 20000, "{workload}");
    let total = total_line(&out);
    assert_eq!(total["calls"], 20000, "{total}");
    assert_eq!(total["top_processes"][0]["tgid"], pid, "{total}");
    assert_eq!(total["top_processes"][0]["calls"], 20000, "{total}");
    assert_eq!(total["unattributed"], 0, "{total}");
    assert_eq!(total["exact"], true, "{total}");
}

/// `n` one-call processes under `comm`, all started at once (faster than a tracer's
/// reads), then waited for.
fn one_call_processes(n: usize, comm: &str) {
    let children: Vec<_> = (0..n)
        .map(|_| {
            common::kcmp_trace()
                .args(["stress", "-n", "1", "--types", "vm", "--comm", comm])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn stress")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }
}

/// A full per-process map is counted, not hidden, and exited processes make room: 300
/// one-call processes against 64 slots leave calls unattributed; once the tracer has read
/// (and removed) the exited ones, 40 more are all attributed.
#[test]
#[ignore = "needs root"]
fn a_full_process_map_is_counted_and_reclaimed() {
    if !require_root() {
        return;
    }
    let comm = format!("kt-many-{}", std::process::id() % 10_000);
    let mut watch = Proc::spawn(&[
        "watch",
        "--json",
        "-c",
        &comm,
        "--max-processes",
        "64",
        "--top",
        "1000",
        "-i",
        "1s",
    ]);
    watch.wait_attached();
    one_call_processes(300, &comm);
    // Intervals up to the first quiet one: its read came after the read that removed the
    // exited processes.
    let mut unattributed = 0;
    let mut calls = 0;
    loop {
        let line = watch.next_stdout(Duration::from_secs(30));
        let report: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        if report["scope"] != "interval" {
            continue; // the plan
        }
        unattributed += report["unattributed"].as_u64().expect("unattributed");
        calls += report["calls"].as_u64().expect("calls");
        if calls == 300 && report["calls"] == 0 {
            break;
        }
    }
    assert!(
        (1..=300 - 64).contains(&unattributed),
        "300 processes, 64 slots: {unattributed} calls unattributed"
    );
    one_call_processes(40, &comm);
    let (code, out, err) = watch.stop();
    assert_eq!(code, 0, "{err}");
    let total = total_line(&out);
    assert_eq!(total["calls"], 340, "{total}");
    assert_eq!(total["unattributed"], unattributed, "{total}");
    assert_eq!(total["exact"], false, "{total}");
}
