//! `kcmp-trace serve` end to end: a real Prometheus scrapes it, event streams are counted
//! against the workload, and shutdown leaves nothing loaded.
//!
//! Needs root (CI runs as root and must not skip), and `prometheus` and `promtool` on PATH
//! (Debian's `prometheus` package) for the scrape tests, contrib/'s rules and dashboard among
//! them.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

mod common;

use common::{
    ATTACH_WITHIN, Gated, Proc, TempDir,
    promql::{self, exprs, metric_names, tool},
    require_root as privileged, run, schema, wait_until, which,
};
use kcmp_trace::{client::Target, serve::families::FAMILIES};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running daemon, killed on drop.
struct Daemon {
    port: u16,
    proc: Proc,
    /// Its "serving" line: where it listens, and what it serves there.
    serving: String,
}

impl Daemon {
    /// A daemon on a free loopback port that serves per-call data over TCP, as most tests
    /// read it (the default keeps it to the Unix socket and authenticated users).
    fn start(args: &[&str]) -> Daemon {
        let mut all = vec!["--tcp-per-call-data"];
        all.extend_from_slice(args);
        Daemon::start_with(&all)
    }

    /// A daemon (as [`Daemon::start`]) that follows `stress`'s process.
    fn following(stress: &Gated, args: &[&str]) -> Daemon {
        let pid = stress.pid().to_string();
        Daemon::start(&[&["-p", pid.as_str()], args].concat())
    }

    /// A daemon on a free loopback port with exactly these options, once it serves.
    fn start_with(args: &[&str]) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut proc = Proc::spawn(&[&["serve", "--listen", &listen], args].concat());
        // It attaches before it serves.
        let serving = proc.wait_stderr("kcmp-trace: serving", ATTACH_WITHIN);
        Daemon {
            port,
            proc,
            serving,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn get(&self, path: &str) -> Response {
        http_get(self.port, path, &[])
    }

    /// Sample values of its `/metrics`.
    fn samples(&self) -> BTreeMap<String, f64> {
        samples(&self.get("/metrics").body)
    }

    /// Waits until it counts `n` clients of `/events`.
    fn wait_event_clients(&self, n: f64) {
        wait_until(
            "the event streams to connect",
            Duration::from_secs(10),
            || (self.samples().get("kcmp_trace_event_clients") == Some(&n)).then_some(()),
        );
    }

    /// Sends `request` on a new connection and reads until the daemon closes it or `within`
    /// passes (what arrived by then).
    fn raw_request(&self, request: &str, within: Duration) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.write_all(request.as_bytes()).expect("send");
        stream.set_read_timeout(Some(within)).expect("read timeout");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// SIGTERM, then the exit status and how long it took.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.proc.signal(libc::SIGTERM);
        let started = Instant::now();
        let status = self
            .proc
            .exited_within(Duration::from_secs(10))
            .expect("serve did not exit within 10 s of SIGTERM");
        (status, started.elapsed())
    }
}

/// A one-shot GET through the client `watch --connect` uses.
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    try_http_get(port, path, headers).expect("HTTP GET")
}

fn try_http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
    let target = Target::Tcp {
        authority: format!("127.0.0.1:{port}"),
        prefix: String::new(),
    };
    let r = block_on(kcmp_trace::client::request(&target, path, headers))?;
    Ok(Response {
        status: r.status,
        content_type: r.header("content-type").map(str::to_owned),
        body: String::from_utf8_lossy(&r.body).into_owned(),
    })
}

/// A GET over the daemon's Unix socket: the body.
fn unix_get(socket: &Path, path: &str) -> anyhow::Result<bytes::Bytes> {
    block_on(kcmp_trace::client::get(
        &Target::Unix(socket.to_owned()),
        path,
    ))
}

/// Runs a client's request to its end on this thread's runtime.
fn block_on<F: Future>(request: F) -> F::Output {
    thread_local! {
        // One per thread, kept: timing a scrape should not time building a runtime.
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
    }
    RUNTIME.with(|rt| rt.block_on(request))
}

/// What the tests look at in an answer.
struct Response {
    status: u16,
    content_type: Option<String>,
    body: String,
}

/// Sample values of `/metrics` (Prometheus text), by series as written.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sum_of(samples: &BTreeMap<String, f64>, metric: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.split('{').next() == Some(metric))
        .map(|(_, v)| v)
        .sum()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus on a free loopback port that scrapes as `config` (its prometheus.yml) says,
/// its files in `dir`; killed on drop.
struct Prometheus {
    port: u16,
    _proc: Proc,
}

impl Prometheus {
    /// `binary` with `options` besides those that name its files and port; its log to `log`.
    fn start(binary: &Path, dir: &Path, config: &str, options: &[String], log: Stdio) -> Self {
        let port = free_port();
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("prometheus config");
        let proc = Proc::start(
            Command::new(binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(options)
                .stdout(Stdio::null())
                .stderr(log),
        );
        Prometheus { port, _proc: proc }
    }

    /// One number from its query API, None while it has no answer.
    fn query(&self, query: &str) -> Option<f64> {
        let r = try_http_get(self.port, &query_path(query), &[]).ok()?;
        if r.status != 200 {
            return None;
        }
        query_value(&r.body)
    }

    /// Its answer to an instant query: the result, or what it said was wrong.
    fn eval(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let r = try_http_get(self.port, &query_path(query), &[]).map_err(|e| format!("{e:#}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
        if r.status != 200 || v["status"] != "success" {
            return Err(format!("{} {}: {}", r.status, v["errorType"], v["error"]));
        }
        Ok(match &v["data"]["result"] {
            serde_json::Value::Array(items) => items.clone(),
            scalar => vec![scalar.clone()],
        })
    }
}

/// The path of an instant query in Prometheus' API.
fn query_path(query: &str) -> String {
    format!("/api/v1/query?query={}", urlencode(query))
}

/// The number an instant query's answer holds, if it holds one.
fn query_value(answer: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Waits until Prometheus, asked through `query`, scrapes the daemon.
fn wait_scraping(query: impl Fn(&str) -> Option<f64>) {
    wait_until(
        "Prometheus to scrape the daemon",
        Duration::from_secs(60),
        || query("up{job=\"kcmp-trace\"}").filter(|&up| up == 1.0),
    );
}

/// Waits until Prometheus, asked through `query`, has seen `calls` calls; how many it saw.
fn wait_calls_seen(query: impl Fn(&str) -> Option<f64>, calls: f64) -> f64 {
    wait_until(
        "Prometheus to see every call",
        Duration::from_secs(30),
        || query("sum(kcmp_trace_calls_total)").filter(|&n| n >= calls),
    )
}

#[test]
#[ignore = "needs root"]
fn prometheus_scrapes_exact_counts() {
    if !privileged() {
        return;
    }
    let (prometheus, promtool) = (tool("prometheus"), tool("promtool"));
    let dir = TempDir::new("prom");
    let stress = Gated::new(&[
        "-n",
        "20000",
        "--types",
        "all",
        "--bad-fd",
        "300",
        "--dead-pid",
        "200",
        "--bad-type",
        "100",
    ]);
    let daemon = Daemon::following(&stress, &[]);
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
         scrape_configs:\n  - job_name: kcmp-trace\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        daemon.port
    );
    let prom = Prometheus::start(&prometheus, dir.path(), &config, &[], Stdio::null());
    let query = |q: &str| prom.query(q);
    wait_scraping(query);

    stress.open();
    let report = stress.report();
    let calls = report["calls"].as_u64().expect("calls") as f64;
    assert_eq!(calls, 20000.0);
    let ebadf = report["by_result"]["EBADF"].as_u64().unwrap_or(0) as f64;
    let vm = report["by_type"]["KCMP_VM"].as_u64().unwrap_or(0) as f64;

    // Prometheus itself saw every call of the workload, no more, no less.
    assert_eq!(wait_calls_seen(query, calls), calls);
    for (q, want) in [
        ("sum(kcmp_trace_calls_total{result=\"EBADF\"})", ebadf),
        ("sum(kcmp_trace_calls_total{type=\"KCMP_VM\"})", vm),
        ("sum(kcmp_trace_call_duration_seconds_count)", calls),
        // +Inf holds every observation.
        (
            "sum(kcmp_trace_call_duration_seconds_bucket{le=\"+Inf\"})",
            calls,
        ),
    ] {
        assert_eq!(query(q), Some(want), "{q}");
    }
    // Per-comm series: bounded, and together they hold every call.
    let by_comm = wait_until("the per-comm series", Duration::from_secs(30), || {
        query("sum(kcmp_trace_comm_calls_total)").filter(|&n| n >= calls)
    });
    assert_eq!(by_comm, calls);
    assert_eq!(
        query("kcmp_trace_comm_calls_total{comm=\"kcmp-trace\"}"),
        Some(calls)
    );
    let p99 =
        query("histogram_quantile(0.99, sum by (le) (kcmp_trace_call_duration_seconds_bucket))")
            .expect("a p99");
    assert!(p99 > 0.0 && p99 < 1.0, "p99 {p99}s");

    // The exposition passes promtool's checks, and OpenMetrics is there for those who ask.
    let text = daemon.get("/metrics");
    assert_eq!(text.status, 200);
    assert!(
        text.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.body.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let om = http_get(
        daemon.port,
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    );
    assert!(
        om.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/openmetrics-text"))
    );
    assert!(om.body.ends_with("# EOF\n"));

    // The snapshot has the same numbers as `watch --json`.
    let snap: serde_json::Value =
        serde_json::from_str(&daemon.get("/api/v1/snapshot").body).expect("snapshot");
    schema::assert_valid("snapshot.json", &snap);
    assert_eq!(snap["report"]["calls"].as_f64(), Some(calls));
    assert_eq!(snap["report"]["by_result"]["EBADF"].as_f64(), Some(ebadf));

    // And `watch --connect` shows them.
    let url = format!("http://127.0.0.1:{}", daemon.port);
    let (code, stdout, err) = run(&[
        "watch",
        "--json",
        "-n",
        "1",
        "-i",
        "300ms",
        "--connect",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    schema::assert_watch_valid(&stdout);
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains("\"plan\"")),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("\"scope\"")).count(),
        2,
        "{stdout}"
    );
}

#[test]
#[ignore = "needs root"]
fn readers_are_served_beside_kcmp_with_a_reader_label() {
    if !privileged() {
        return;
    }
    let stress = Gated::new(&["-n", "5000", "--types", "vm", "--proc-readers", "1"]);
    let daemon = Daemon::following(&stress, &["--readers", "--stacks"]);
    stress.open();
    let report = stress.report();
    let calls = report["calls"].as_u64().expect("calls") as f64;
    assert!(
        report["proc_reads"]["proc_wchan"].as_u64() > Some(0),
        "{report}"
    );
    // kcmp is a reader like the others, with the same count as its own families.
    let metrics = wait_until("every call in /metrics", Duration::from_secs(10), || {
        let m = daemon.samples();
        (sum_of(&m, "kcmp_trace_calls_total") == calls).then_some(m)
    });
    assert_eq!(sum_of(&metrics, "kcmp_trace_reader_calls_total"), calls);
    assert_eq!(
        metrics
            .keys()
            .filter(|k| k.starts_with("kcmp_trace_reader_lock_waits_total{"))
            .count(),
        5,
        "kcmp, the three /proc readers and other: {metrics:?}"
    );
    let snap: serde_json::Value =
        serde_json::from_str(&daemon.get("/api/v1/snapshot").body).expect("snapshot");
    schema::assert_valid("snapshot.json", &snap);
    let readers = &snap["report"]["by_reader"];
    assert_eq!(readers["kcmp"]["calls"].as_f64(), Some(calls), "{readers}");
    // --stacks: each reader's stacks add up to its lock waits, and /metrics declares the
    // call-site families.
    let stacks = snap["report"]["stacks"].as_array().expect("stacks served");
    for (reader, r) in readers.as_object().expect("by_reader") {
        let stacked: u64 = stacks
            .iter()
            .filter(|row| row["who"] == reader.as_str())
            .filter_map(|row| row["count"].as_u64())
            .sum();
        if !reader.contains(':') {
            assert_eq!(
                Some(stacked),
                r["lock_waits"].as_u64(),
                "{reader}: {stacks:?}"
            );
        }
    }
    assert!(
        daemon
            .get("/metrics")
            .body
            .contains("# TYPE kcmp_trace_stack_site_lock_waits_total counter"),
        "no stack families"
    );
    // Here only the syscall boundary attaches (no kprobes, no fentry): the plan says the
    // /proc readers are unavailable rather than counting none.
    let accuracy = snap["plan"]["accuracy"].to_string();
    if snap["plan"]["mode"] == "tracepoint" {
        assert!(accuracy.contains("unavailable: the syscall boundary shows no reader"));
        assert_eq!(readers["proc_wchan"]["calls"].as_u64(), Some(0));
    }
}

/// Reads /events, handing each body line to `each`; the thread returns what `each` built.
/// The counter says how many calls the lines so far account for (an event each, a drop
/// notice its count), so a test can wait for a stream to catch up.
fn stream_events<T: Send + 'static>(
    port: u16,
    query: &str,
    mut acc: T,
    each: impl Fn(&mut T, String) + Send + 'static,
) -> (thread::JoinHandle<T>, TcpStream, Arc<AtomicU64>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // HTTP/1.0: the body runs until the daemon closes it.
    write!(stream, "GET /events{query} HTTP/1.0\r\n\r\n").expect("send");
    let handle = stream.try_clone().expect("clone");
    let seen = Arc::new(AtomicU64::new(0));
    let progress = seen.clone();
    let reader = thread::spawn(move || {
        let mut body = false;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if body {
                let (calls, dropped) = count(std::slice::from_ref(&line));
                each(&mut acc, line);
                progress.fetch_add(calls + dropped, Ordering::Relaxed);
            } else if line.is_empty() {
                body = true;
            } else if line.starts_with("HTTP/") {
                assert!(line.contains(" 200 "), "{line}");
            }
        }
        acc
    });
    (reader, handle, seen)
}

type Stream<T> = (thread::JoinHandle<T>, TcpStream, Arc<AtomicU64>);

fn read_stream(port: u16, query: &str) -> Stream<Vec<String>> {
    stream_events(port, query, Vec::new(), |lines, line| lines.push(line))
}

fn count(lines: &[String]) -> (u64, u64) {
    let mut calls = 0;
    let mut dropped = 0;
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("an NDJSON line");
        match v["dropped"].as_u64() {
            Some(n) => dropped += n,
            None => calls += 1,
        }
    }
    (calls, dropped)
}

#[test]
#[ignore = "needs root"]
fn events_stream_every_call_and_filter() {
    if !privileged() {
        return;
    }
    let stress = Gated::new(&["-n", "6000", "--types", "file,vm", "--bad-fd", "100"]);
    let pid = stress.pid().to_string();
    let mut daemon = Daemon::following(&stress, &[]);

    for bad in [
        "?pid=abc",
        "?type=bogus",
        "?outcome=sideways",
        "?colour=red",
        "?comm=far-too-long-a-name",
    ] {
        let r = daemon.get(&format!("/events{bad}"));
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.body.trim_end().lines().count(), 1, "{bad}: {}", r.body);
    }

    let (all, _h1, all_seen) = read_stream(daemon.port, "");
    let (vm, _h2, vm_seen) = read_stream(daemon.port, "?type=KCMP_VM");
    let (mine, _h3, mine_seen) = read_stream(
        daemon.port,
        &format!("?pid={pid}&outcome=unknown&comm=kcmp-trace"),
    );
    let (other_pid, _h4, _) = read_stream(daemon.port, "?pid=1");
    daemon.wait_event_clients(4.0);
    stress.open();
    let report = stress.report();
    let calls = report["calls"].as_u64().expect("calls");
    let vm_calls = report["by_type"]["KCMP_VM"].as_u64().expect("vm calls");
    // Every event is out of the ring before the daemon is told to stop.
    wait_until("events to be delivered", Duration::from_secs(10), || {
        let s = daemon.samples();
        let sent = s
            .get("kcmp_trace_events_sent_total")
            .copied()
            .unwrap_or(0.0);
        let dropped = sum_of(&s, "kcmp_trace_events_dropped_total");
        (sent + dropped >= calls as f64).then_some(())
    });
    // ... and out of the daemon to every reader.
    wait_until("the readers to catch up", Duration::from_secs(10), || {
        let caught_up = all_seen.load(Ordering::Relaxed) >= calls
            && mine_seen.load(Ordering::Relaxed) >= calls
            && vm_seen.load(Ordering::Relaxed) >= vm_calls;
        caught_up.then_some(())
    });
    let (status, took) = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");

    let all = all.join().expect("reader");
    schema::assert_event_stream_valid(&all);
    let (n, dropped) = count(&all);
    assert_eq!(
        n + dropped,
        calls,
        "lines {n} + dropped {dropped} != calls {calls}"
    );
    let vm = vm.join().expect("reader");
    let (n_vm, dropped_vm) = count(&vm);
    assert!(
        n_vm <= vm_calls && n_vm + dropped_vm >= vm_calls,
        "{n_vm} {dropped_vm} {vm_calls}"
    );
    for line in vm.iter().filter(|l| !l.contains("dropped")) {
        assert!(line.contains("\"type_name\":\"KCMP_VM\""), "{line}");
    }
    let (n_mine, dropped_mine) = count(&mine.join().expect("reader"));
    assert_eq!(n_mine + dropped_mine, calls);
    let (n_other, _) = count(&other_pid.join().expect("reader"));
    assert_eq!(n_other, 0);
    assert!(daemon.proc.stderr_so_far().contains("kcmp-trace: attached"));
}

/// Opens `/events` and returns the connection and its status line.
fn open_events(port: u16) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .expect("send the request");
    let mut status = String::new();
    BufReader::new(stream.try_clone().expect("clone"))
        .read_line(&mut status)
        .expect("read the status line");
    (stream, status)
}

/// Clients that connect to `/events` and leave free their slots even when no kcmp call
/// happens, so the next client is served.
#[test]
#[ignore = "needs root"]
fn event_slots_free_when_clients_leave() {
    if !privileged() {
        return;
    }
    // Only nobody-calls's calls are streamed: no event ever tells the daemon a client left.
    let daemon = Daemon::start(&["-c", "nobody-calls", "--max-event-clients-per-client", "64"]);
    let clients: Vec<_> = (0..64).map(|_| open_events(daemon.port)).collect();
    for (_, status) in &clients {
        assert!(status.contains(" 200 "), "{status}");
    }
    let (_, status) = open_events(daemon.port);
    assert!(status.contains(" 503 "), "a 65th client: {status}");
    drop(clients);
    let left = Instant::now();
    let back = loop {
        let (open, status) = open_events(daemon.port);
        if status.contains(" 200 ") {
            break open;
        }
        assert!(
            left.elapsed() < Duration::from_secs(1),
            "slots still taken a second after 64 clients left: {status}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    drop(back);
}

/// One client gets its share of the /events slots, not all of them.
#[test]
#[ignore = "needs root"]
fn one_client_gets_its_share_of_event_slots() {
    if !privileged() {
        return;
    }
    let daemon = Daemon::start(&["-c", "nobody-calls"]);
    let mine: Vec<_> = (0..8).map(|_| open_events(daemon.port)).collect();
    for (_, status) in &mine {
        assert!(status.contains(" 200 "), "{status}");
    }
    let answer = daemon.raw_request("GET /events HTTP/1.0\r\n\r\n", Duration::from_secs(10));
    assert!(
        answer.contains(" 503 ") && answer.contains("127.0.0.1 has its share"),
        "{answer}"
    );
    let metrics = daemon.get("/metrics").body;
    assert_eq!(rejected(&metrics, "events_client_share"), Some(1.0));
}

/// Whether the daemon closed this connection within `within` (EOF or reset).
fn closed_by_peer(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A response (e.g. to a complete request); keep reading until it closes.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A scrape after which the daemon closes the connection.
const SCRAPE_AND_CLOSE: &str =
    "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// The value of one series in a /metrics text, if present.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// What /metrics says was turned away for `reason`.
fn rejected(metrics: &str, reason: &str) -> Option<f64> {
    series(
        metrics,
        &format!("kcmp_trace_http_rejected_total{{reason=\"{reason}\"}}"),
    )
}

/// Half-sent and idle keep-alive connections are closed after the header timeout, and a
/// scrape arriving at the connection cap gets in at once: the connection idle the longest
/// is closed to make room, and counted.
#[test]
#[ignore = "needs root"]
fn idle_and_half_sent_connections_are_bounded() {
    if !privileged() {
        return;
    }
    let daemon = Daemon::start(&[
        "--no-events",
        "-c",
        "nobody-calls",
        "--max-connections",
        "3",
    ]);
    let connect = || TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    let mut idle = connect();
    thread::sleep(Duration::from_millis(100));
    let mut half_sent = connect();
    half_sent
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("send half a request");
    let mut keep_alive = connect();
    write!(
        keep_alive,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        daemon.port
    )
    .expect("send a request");
    thread::sleep(Duration::from_millis(200));
    // All three slots are taken, none by a request in flight: the oldest makes room.
    let answer = daemon.raw_request(SCRAPE_AND_CLOSE, Duration::from_secs(3));
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("kcmp_trace_calls_total"),
        "the scrape at the cap: {:?}",
        answer.lines().next()
    );
    assert!(
        closed_by_peer(&mut idle, Duration::from_secs(1)),
        "the idlest connection was not closed to make room"
    );
    // The header timeout is 10 s; the others must be gone well before 30 s.
    for (what, mut stream) in [("half-sent", half_sent), ("keep-alive", keep_alive)] {
        assert!(
            closed_by_peer(&mut stream, Duration::from_secs(30)),
            "the {what} connection is still open"
        );
    }
    let metrics = daemon.get("/metrics").body;
    assert_eq!(rejected(&metrics, "idle_evicted"), Some(1.0), "{metrics}");
}

/// Raises this process's open-files limit (root may raise the hard one too).
fn allow_open_files(n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit on this process with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// 1,100 idle connections, far past the default cap of 256 and the default open-files
/// limit, do not keep a scrape out.
#[test]
#[ignore = "needs root"]
fn a_scrape_gets_past_a_thousand_idle_connections() {
    if !privileged() {
        return;
    }
    allow_open_files(4096);
    let daemon = Daemon::start(&["--no-events", "-c", "nobody-calls"]);
    let idle: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect"))
        .collect();
    let started = Instant::now();
    let answer = daemon.raw_request(SCRAPE_AND_CLOSE, Duration::from_secs(1));
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "no answer within {:?} behind 1,100 idle connections: {:?}",
        started.elapsed(),
        answer.lines().next()
    );
    let evicted = rejected(&answer, "idle_evicted").expect("the evictions");
    // All but the 256 slots' worth made room for a newer one, the scrape's included.
    assert!(evicted >= (1100 - 256 + 1) as f64, "{evicted} evicted");
    drop(idle);
}

/// By default TCP serves the aggregates only; per-call and per-process data goes out over
/// the Unix socket, to whoever its mode lets in.
#[test]
#[ignore = "needs root"]
fn per_call_data_stays_off_tcp_by_default() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("exposure");
    let socket = dir.path().join("kcmp-trace.sock");
    let daemon = Daemon::start_with(&[
        "-c",
        "nobody-calls",
        "--unix",
        socket.to_str().expect("utf-8"),
    ]);
    let port = daemon.port;
    assert!(
        daemon
            .serving
            .contains("per-call data over the Unix socket only"),
        "{}",
        daemon.serving
    );
    assert_eq!(http_get(port, "/metrics", &[]).status, 200);
    assert_eq!(http_get(port, "/healthz", &[]).status, 200);
    for path in ["/api/v1/snapshot", "/events"] {
        let r = http_get(port, path, &[]);
        assert_eq!(r.status, 403, "{path} over TCP");
        assert_eq!(r.body.lines().count(), 1, "{}", r.body);
    }
    let snapshot = unix_get(&socket, "/api/v1/snapshot").expect("the snapshot over the socket");
    let snapshot: serde_json::Value = serde_json::from_slice(&snapshot).expect("JSON");
    assert!(snapshot["processes"].is_array(), "{snapshot}");
}

#[test]
#[ignore = "needs root"]
fn dashboard_queries_only_served_metrics() {
    if !privileged() {
        return;
    }
    let mut all = Vec::new();
    exprs(&promql::dashboard(), &mut all);
    let mut wanted: Vec<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 10, "{wanted:?}");

    let stress = Gated::new(&["-n", "500"]);
    // The readers' families are served only with --readers, the stacks' with --stacks.
    let daemon = Daemon::following(&stress, &["--readers", "--stacks"]);
    stress.open();
    stress.report();
    let text = daemon.get("/metrics").body;
    // A family is served when it has series, or is declared without any on this plan.
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(declared) => declared.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !served.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics lacks: {missing:?}"
    );
}

/// One family as docs/metrics.md lists it, or as a scrape declares it (labels: those of its
/// first series, `le` left out; none without series).
#[derive(Debug, PartialEq)]
struct FamilyLine {
    name: String,
    kind: String,
    help: String,
    labels: Option<Vec<String>>,
}

/// The families docs/metrics.md lists, in order.
fn documented_families() -> Vec<FamilyLine> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let page = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    page.lines()
        .filter(|l| l.starts_with("| `kcmp_trace_"))
        .map(|row| {
            let cells: Vec<&str> = row
                .strip_prefix("| ")
                .and_then(|r| r.strip_suffix(" |"))
                .map(|r| r.split(" | ").collect())
                .unwrap_or_default();
            let [name, kind, labels, help, _served] = cells[..] else {
                panic!("not a row of five cells: {row}");
            };
            let labels = match labels {
                "none" => Vec::new(),
                list => list
                    .split(", ")
                    .map(|l| l.trim_matches('`').to_owned())
                    .collect(),
            };
            FamilyLine {
                name: name.trim_matches('`').to_owned(),
                kind: kind.to_owned(),
                help: help.replace("\\|", "|"),
                labels: Some(labels),
            }
        })
        .collect()
}

/// The label names of one series (`name{a="x",b="y"} 1`), `le` left out.
fn label_names(series: &str) -> Vec<String> {
    let mut names = Vec::new();
    let Some((_, mut rest)) = series.split_once('{') else {
        return names;
    };
    while let Some((name, value)) = rest.split_once("=\"") {
        if name != "le" {
            names.push(name.to_owned());
        }
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes
            })
            .map_or(value.len(), |(i, _)| i + 1);
        rest = value[end..].trim_start_matches(',');
    }
    names
}

/// The families a scrape (Prometheus text) declares, in order.
fn served_families(text: &str) -> Vec<FamilyLine> {
    let mut families: Vec<FamilyLine> = Vec::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# HELP ") {
            let (name, help) = declared.split_once(' ').unwrap_or((declared, ""));
            families.push(FamilyLine {
                name: name.to_owned(),
                kind: String::new(),
                help: help.to_owned(),
                labels: None,
            });
        } else if let Some(declared) = line.strip_prefix("# TYPE ") {
            let family = families.last_mut().expect("TYPE after its HELP");
            family.kind = declared.rsplit(' ').next().unwrap_or_default().to_owned();
        } else if !line.is_empty() {
            let family = families
                .last_mut()
                .expect("a series after its family's TYPE");
            assert!(
                line.starts_with(&family.name),
                "{line} outside {}",
                family.name
            );
            family.labels.get_or_insert_with(|| label_names(line));
        }
    }
    families
}

/// docs/metrics.md lists exactly the families a daemon following readers and counting
/// stacks serves, in its order, with their type, help and, for each family with series,
/// their labels.
#[test]
#[ignore = "needs root"]
fn metrics_page_lists_what_the_daemon_serves() {
    if !privileged() {
        return;
    }
    let stress = Gated::new(&["-n", "500", "--bad-fd", "10"]);
    let daemon = Daemon::following(&stress, &["--readers", "--stacks"]);
    stress.open();
    stress.report();
    let served = served_families(&daemon.get("/metrics").body);
    let with_series = served.iter().filter(|f| f.labels.is_some()).count();
    assert!(with_series >= 25, "{served:#?}");
    let page = documented_families();
    let names = |families: &[FamilyLine]| -> Vec<String> {
        families.iter().map(|f| f.name.clone()).collect()
    };
    let (on_page, on_scrape) = (names(&page), names(&served));
    let only_in = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|n| !b.contains(n)).cloned().collect()
    };
    assert!(
        on_page == on_scrape,
        "docs/metrics.md and /metrics list different families (or in another order): only on \
         the page {:?}, only served {:?}",
        only_in(&on_page, &on_scrape),
        only_in(&on_scrape, &on_page)
    );
    for (page, scrape) in page.into_iter().zip(&served) {
        let page = FamilyLine {
            // The Prometheus text format declares an info as a gauge.
            kind: match page.kind.as_str() {
                "info" => "gauge".to_owned(),
                _ => page.kind,
            },
            // A family without series here shows no labels to compare.
            labels: scrape.labels.as_ref().and(page.labels),
            ..page
        };
        assert_eq!(
            &page, scrape,
            "docs/metrics.md (left) and /metrics (right) differ"
        );
    }
}

/// Families a healthy daemon serves without series on some plans, and why (the table's
/// `no_series_when`). A rule or panel over one of them may come back empty, but only while
/// `/metrics` has no sample of it.
fn series_by_plan() -> Vec<(String, &'static str)> {
    FAMILIES
        .iter()
        .filter_map(|f| Some((f.query_name(), f.no_series_when?)))
        .collect()
}

/// contrib/ as deployed: a real Prometheus scrapes a real daemon under load with the rules
/// loaded; every rule is healthy, and every rule, recorded series, alert value, dashboard
/// panel and dashboard variable evaluates to something.
#[test]
#[ignore = "needs root"]
fn every_rule_and_dashboard_query_evaluates_in_prometheus() {
    if !privileged() {
        return;
    }
    let prometheus = tool("prometheus");
    let rules = promql::rules();
    let dashboard = promql::dashboard();
    let dir = TempDir::new("rules");
    let stress = Gated::new(&[
        "-d",
        "4s",
        "--types",
        "all",
        "--bad-fd",
        "100",
        "--dead-pid",
        "100",
        "--bad-type",
        "100",
        "--exec-racers",
        "1",
        "--proc-readers",
        "1",
    ]);
    let daemon = Daemon::following(&stress, &["--readers", "--stacks", "--bpf-stats"]);
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         rule_files:\n  - '{}'\n\
         scrape_configs:\n  - job_name: kcmp-trace\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        promql::contrib(promql::RULES).display(),
        daemon.port
    );
    let log = dir.path().join("prometheus.log");
    let log_file = std::fs::File::create(&log).expect("prometheus log");
    let prom = Prometheus::start(&prometheus, dir.path(), &config, &[], log_file.into());
    let prom_port = prom.port;
    let prometheus_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let query = |q: &str| prom.query(q);
    wait_scraping(query);

    // The workload runs while Prometheus scrapes it every second.
    stress.open();
    let report = stress.report();
    wait_calls_seen(query, report["calls"].as_f64().expect("calls"));

    // The rules Prometheus loaded are the file's, each evaluated since every call was seen.
    let seen = jiff::Timestamp::now();
    let loaded = wait_until(
        "every rule to be evaluated after the workload",
        Duration::from_secs(30),
        || {
            let r = try_http_get(prom_port, "/api/v1/rules", &[]).ok()?;
            let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            let loaded: Vec<serde_json::Value> = v["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let fresh = |rule: &serde_json::Value| {
                rule["lastEvaluation"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t > seen)
            };
            (loaded.len() == rules.len() && loaded.iter().all(fresh)).then_some(loaded)
        },
    );
    // The API lists the groups by name.
    let mut names: Vec<&str> = loaded.iter().filter_map(|r| r["name"].as_str()).collect();
    let mut file_names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    file_names.sort_unstable();
    assert_eq!(names, file_names, "{}", prometheus_log());
    let unhealthy: Vec<String> = loaded
        .iter()
        .filter(|r| r["health"] != "ok" || r["lastError"].as_str().is_some_and(|e| !e.is_empty()))
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "unhealthy rules: {unhealthy:#?}");

    // Everything to evaluate, named for the report.
    let mut queries: Vec<(String, String)> = Vec::new();
    for rule in &rules {
        match rule.kind {
            promql::Kind::Record => {
                queries.push((format!("rule {}", rule.name), rule.expr.clone()));
                queries.push((format!("recorded {}", rule.name), rule.name.clone()));
            }
            promql::Kind::Alert => {
                let value = promql::alert_value(&rule.expr).unwrap_or_else(|| {
                    panic!("alert {}: not VALUE <comparison> NUMBER", rule.name)
                });
                queries.push((format!("alert {} (its value)", rule.name), value.to_owned()));
            }
        }
    }
    let panels = promql::panel_queries(&dashboard);
    assert!(panels.len() >= 30, "{panels:?}");
    queries.extend(promql::variable_queries(&dashboard));
    queries.extend(
        panels
            .into_iter()
            .map(|(what, e)| (what, promql::substitute(&e))),
    );

    let metrics = daemon.get("/metrics").body;
    let without_series = |family: &str| {
        metrics.contains(&format!("# TYPE {family} "))
            && !metrics
                .lines()
                .any(|l| l.starts_with(family) && l[family.len()..].starts_with([' ', '{']))
    };
    let series_by_plan = series_by_plan();
    let mut failures = Vec::new();
    let mut empty_by_plan = Vec::new();
    for (what, query) in &queries {
        if query.contains('$') {
            failures.push(format!("{what}: a Grafana variable left in {query}"));
            continue;
        }
        match prom.eval(query) {
            Err(e) => failures.push(format!("{what}: {query}: {e}")),
            Ok(result) if !result.is_empty() => {}
            Ok(_) => {
                let excuse = metric_names(query).into_iter().find_map(|m| {
                    series_by_plan
                        .iter()
                        .find(|(family, _)| *family == m && without_series(family))
                        .map(|(family, why)| format!("{family}: {why}"))
                });
                match excuse {
                    Some(why) => empty_by_plan.push(format!("{what} ({why})")),
                    None => failures.push(format!("{what}: empty: {query}")),
                }
            }
        }
    }
    for what in &empty_by_plan {
        eprintln!("empty on this plan: {what}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}\n\n/metrics:\n{metrics}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    assert!(
        empty_by_plan.len() * 4 < queries.len(),
        "most queries came back empty: {empty_by_plan:#?}"
    );
}

/// Program ids this process holds, from its fdinfo.
fn prog_ids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("prog_tag:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// Whether any process still holds a program.
fn prog_held_anywhere(id: u32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        std::fs::read_dir(p.path().join("fdinfo")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_to_string(fd.path()).is_ok_and(|i| {
                    i.lines().any(|l| {
                        l.strip_prefix("prog_id:")
                            .is_some_and(|v| v.trim() == id.to_string())
                    })
                })
            })
        })
    })
}

#[test]
#[ignore = "needs root"]
fn sigterm_exits_promptly_and_unloads() {
    if !privileged() {
        return;
    }
    let mut daemon = Daemon::start(&[]);
    let ids = prog_ids(daemon.pid());
    assert!(!ids.is_empty(), "no BPF programs found in the daemon");
    // A streaming client and an idle keep-alive connection must not hold shutdown up.
    let (events, _stream, _) = read_stream(daemon.port, "");
    let mut idle = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
    // Both are in: the stream is counted as a client, the keep-alive one got its answer.
    daemon.wait_event_clients(1.0);
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).expect("the keep-alive answer");
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit {status}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    events.join().expect("the event stream ends");

    wait_until(
        "the programs to be released",
        Duration::from_secs(5),
        || ids.iter().all(|&id| !prog_held_anywhere(id)).then_some(()),
    );
    if which("bpftool").is_some() {
        for id in &ids {
            wait_until(
                "bpftool to stop listing the program",
                Duration::from_secs(5),
                || {
                    let out = Command::new("bpftool")
                        .args(["prog", "show", "id", &id.to_string()])
                        .output()
                        .expect("bpftool");
                    (!out.status.success()).then_some(())
                },
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn bad_requests_and_busy_addresses() {
    if !privileged() {
        return;
    }
    let daemon = Daemon::start(&["--no-events", "-c", "nobody-calls"]);
    let r = daemon.get("/no/such/path");
    assert_eq!(r.status, 404);
    assert_eq!(r.body.lines().count(), 1);
    let r = daemon.get("/api/v1/snapshot?top=lots");
    assert_eq!(r.status, 400);
    assert_eq!(r.body.lines().count(), 1, "{}", r.body);
    assert_eq!(daemon.get("/events").status, 404);
    assert_eq!(daemon.get("/healthz").body, "ok\n");

    // DNS rebinding: a loopback daemon answers only requests for a loopback host.
    for (host, status) in [
        ("evil.example", "421"),
        ("localhost.evil.example:80", "421"),
        ("localhost", "200"),
        ("[::1]:80", "200"),
    ] {
        let answer = daemon.raw_request(
            &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            Duration::from_secs(10),
        );
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "Host {host}: {answer}"
        );
    }

    // The port is taken: exit code 7 and one line, before anything is attached.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, stderr) = run(&["serve", "--listen", &addr]);
    assert_eq!(code, 7, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && !stderr.contains("attached"),
        "{stderr}"
    );

    // A Unix socket with the asked-for mode, and nothing served over TCP.
    let dir = TempDir::new("unix");
    let socket = dir.path().join("kcmp-trace.sock");
    let mut unix_only = Proc::spawn(&[
        "serve",
        "--no-events",
        "--unix-mode",
        "0600",
        "--unix",
        socket.to_str().expect("utf-8"),
    ]);
    unix_only.wait_stderr("kcmp-trace: serving unix:", ATTACH_WITHIN);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let healthz = unix_get(&socket, "/healthz").expect("GET /healthz over the socket");
    assert_eq!(&healthz[..], b"ok\n");
    unix_only.signal(libc::SIGTERM);
    wait_until("the socket to be removed", Duration::from_secs(5), || {
        (!socket.exists()).then_some(())
    });
}

#[test]
#[ignore = "needs root"]
fn many_scrapers_and_readers_under_load() {
    if !privileged() {
        return;
    }
    let stress = Gated::new(&["-n", "200000", "--types", "all"]);
    // 20 readers from one address: more than one client's default share (8).
    // The event queues may hold up to --event-buffer-total when the readers fall behind
    // (they do on a loaded machine): pinned here, so that the bound below is the budget.
    const EVENT_BUDGET_MIB: u64 = 16;
    let mut daemon = Daemon::following(
        &stress,
        &[
            "--max-event-clients-per-client",
            "20",
            "--event-buffer-total",
            &format!("{EVENT_BUDGET_MIB}M"),
        ],
    );
    let baseline_kib = status_kib(daemon.pid(), "VmRSS");
    // The peak from here on: loading (the kernel's BTF parsed) peaks higher, and is over.
    std::fs::write(format!("/proc/{}/clear_refs", daemon.pid()), "5").expect("resetting VmHWM");
    let readers: Vec<_> = (0..20)
        .map(|i| {
            let (reader, stream, _) =
                read_stream(daemon.port, if i % 2 == 0 { "" } else { "?type=KCMP_FS" });
            (reader, stream)
        })
        .collect();
    stress.open();
    let port = daemon.port;
    // 200 scrapers at once, a few rounds each, while the workload runs.
    let scrapers: Vec<_> = (0..200)
        .map(|_| {
            thread::spawn(move || {
                let mut last = 0.0;
                for _ in 0..3 {
                    let r = http_get(port, "/metrics", &[]);
                    assert_eq!(r.status, 200);
                    let calls = sum_of(&samples(&r.body), "kcmp_trace_calls_total");
                    assert!(calls >= last, "calls went backwards: {last} -> {calls}");
                    last = calls;
                }
                last
            })
        })
        .collect();
    for s in scrapers {
        s.join().expect("every scrape answered");
    }
    let calls = stress.report()["calls"].as_u64().expect("calls") as f64;
    let total = wait_until("the final count", Duration::from_secs(5), || {
        let n = sum_of(&daemon.samples(), "kcmp_trace_calls_total");
        (n >= calls).then_some(n)
    });
    assert_eq!(total, calls);
    // The peak under load, not the end: memory bounded all through it. Beyond the event
    // budget, 16 MiB for 220 connections' buffers and the allocator's arenas.
    let peak_kib = status_kib(daemon.pid(), "VmHWM");
    eprintln!("daemon RSS: {baseline_kib} KiB at start, {peak_kib} KiB at its peak");
    assert!(
        peak_kib.saturating_sub(baseline_kib) < (EVENT_BUDGET_MIB + 16) * 1024,
        "RSS grew from {baseline_kib} KiB to {peak_kib} KiB"
    );
    let (status, _) = daemon.terminate();
    assert!(status.success());
    for (reader, _) in readers {
        let (n, dropped) = count(&reader.join().expect("reader"));
        assert!(n + dropped > 0);
    }
}

/// curl's answer: (HTTP status, 0 when no answer came; body).
fn curl(args: &[&str]) -> (u16, String) {
    curl_in(Command::new(tool("curl")), args)
}

/// `cmd` (curl, or a command that runs curl) with curl's options and `args`.
fn curl_in(mut cmd: Command, args: &[&str]) -> (u16, String) {
    let out = cmd
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A self-signed certificate for localhost and 127.0.0.1, and its key, in `dir`.
fn certificate(dir: &Path) {
    let made = Command::new(tool("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success(), "openssl could not make a certificate");
}

/// A web configuration file in the exporters' format is honoured as node_exporter honours
/// it: TLS, basic auth (401 without the right password), plain HTTP to the TLS port
/// refused, per-call data for authenticated users; and Prometheus, whose own web server
/// reads the same file, scrapes every call through it.
#[test]
#[ignore = "needs root"]
fn tls_and_basic_auth_from_a_web_config() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("tls");
    certificate(dir.path());
    let hash = bcrypt::hash("s3cret", 6).expect("bcrypt");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prom: '{hash}'\n"
        ),
    )
    .expect("web config");
    let stress = Gated::new(&["-n", "3000", "--comm", "kt-tls"]);
    let daemon = Daemon::start_with(&[
        "-c",
        "kt-tls",
        "--web.config.file",
        web.to_str().expect("utf-8"),
    ]);
    assert!(
        daemon.serving.contains("https://127.0.0.1"),
        "{}",
        daemon.serving
    );
    let url = |path: &str| format!("https://localhost:{}{path}", daemon.port);
    let cacert = dir.path().join("cert.pem");
    let cacert = cacert.to_str().expect("utf-8");
    assert_eq!(curl(&["--cacert", cacert, &url("/metrics")]).0, 401);
    assert_eq!(
        curl(&["--cacert", cacert, "-u", "prom:wrong", &url("/metrics")]).0,
        401
    );
    assert_eq!(
        curl(&["--cacert", cacert, "-u", "eve:s3cret", &url("/metrics")]).0,
        401
    );
    let as_prom = |url: &str| curl(&["--cacert", cacert, "-u", "prom:s3cret", url]);
    let (code, body) = as_prom(&url("/metrics"));
    assert_eq!(code, 200);
    assert!(body.contains("kcmp_trace_calls_total"), "{body}");
    // Authenticated users read per-call data without --tcp-per-call-data.
    let (code, body) = as_prom(&url("/api/v1/snapshot"));
    assert_eq!(code, 200, "{body}");
    // Plain HTTP to the TLS port: refused, saying why.
    let answer = daemon.raw_request(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(
        answer.starts_with("HTTP/1.0 400") && answer.contains("HTTPS server"),
        "{answer}"
    );
    let (_, metrics) = as_prom(&url("/metrics"));
    assert_eq!(rejected(&metrics, "unauthorized"), Some(3.0));
    assert_eq!(rejected(&metrics, "plain_http_to_tls"), Some(1.0));

    // Prometheus scrapes over TLS with the credentials, and serves its own API with the
    // same web configuration file.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
         scrape_configs:\n  - job_name: kcmp-trace\n    scheme: https\n    \
         tls_config:\n      ca_file: {cacert}\n    \
         basic_auth:\n      username: prom\n      password: s3cret\n    \
         static_configs:\n      - targets: ['localhost:{}']\n",
        daemon.port
    );
    let prom = Prometheus::start(
        &tool("prometheus"),
        dir.path(),
        &config,
        &[format!("--web.config.file={}", web.display())],
        Stdio::null(),
    );
    let query = |q: &str| {
        let (code, body) = as_prom(&format!("https://localhost:{}{}", prom.port, query_path(q)));
        query_value(&body).filter(|_| code == 200)
    };
    wait_scraping(query);
    stress.open();
    let report = stress.report();
    assert_eq!(report["calls"], 3000);
    assert_eq!(wait_calls_seen(query, 3000.0), 3000.0);
}

/// Ensures a group and its member, and a user outside it, exist.
fn socket_users(group: &str, member: &str, outsider: &str) {
    let run = |cmd: &str, args: &[&str]| {
        let status = Command::new(cmd).args(args).status().expect(cmd);
        // 9: it exists already (a previous run).
        assert!(
            status.success() || status.code() == Some(9),
            "{cmd} {args:?}: {status}"
        );
    };
    run("groupadd", &["-f", group]);
    for (user, groups) in [(member, group), (outsider, "")] {
        let mut args = vec!["-M", "-N", "-s", "/usr/sbin/nologin"];
        if !groups.is_empty() {
            args.extend(["-G", groups]);
        }
        args.push(user);
        run("useradd", &args);
    }
}

/// curl run as `user` (its groups from the group database).
fn curl_as(user: &str, args: &[&str]) -> (u16, String) {
    let mut setpriv = Command::new("setpriv");
    setpriv.args([
        &format!("--reuid={user}"),
        "--regid=users",
        "--init-groups",
        "curl",
    ]);
    curl_in(setpriv, args)
}

/// An unprivileged user gets no per-call data over TCP, and gets it over a 0660 socket
/// only as a member of its group.
#[test]
#[ignore = "needs root"]
fn per_call_data_for_the_socket_group_only() {
    if !privileged() {
        return;
    }
    let (group, member, outsider) = ("kt-readers", "kt-reader", "kt-outsider");
    socket_users(group, member, outsider);
    let dir = TempDir::new("group");
    let socket = dir.path().join("kcmp-trace.sock");
    let socket = socket.to_str().expect("utf-8");
    let daemon = Daemon::start_with(&[
        "-c",
        "nobody-calls",
        "--unix",
        socket,
        "--unix-mode",
        "0660",
        "--unix-group",
        group,
    ]);
    let tcp = |path: &str| format!("http://127.0.0.1:{}{path}", daemon.port);
    for user in [member, outsider] {
        assert_eq!(curl_as(user, &[&tcp("/metrics")]).0, 200, "{user}");
        assert_eq!(curl_as(user, &[&tcp("/api/v1/snapshot")]).0, 403, "{user}");
        assert_eq!(curl_as(user, &[&tcp("/events")]).0, 403, "{user}");
    }
    let over_socket = ["--unix-socket", socket, "http://localhost/api/v1/snapshot"];
    let (code, body) = curl_as(member, &over_socket);
    assert_eq!(code, 200, "a member of {group}: {body}");
    assert!(body.contains("\"processes\""), "{body}");
    assert_eq!(
        curl_as(outsider, &over_socket).0,
        0,
        "not a member of {group}"
    );
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}
