//! Command-line interface.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kcmp_trace_common::json::report::parse_reader;

use crate::config::{AttachRequest, StrategyRequest};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (also after Ctrl-C or SIGTERM)
  1  other failure
  2  bad arguments
  3  not privileged: without CAP_BPF + CAP_PERFMON, or refused for lack of a capability or
     sysctl, which the message names
  4  tracefs unavailable
  5  a needed hook (tracepoint or kernel function) does not exist
  6  the kernel refused to load or attach a BPF program
  7  serve: cannot listen on the address

Capabilities without root (setcap on the binary, or a systemd unit's set), by attach mode:
  fentry      CAP_BPF CAP_PERFMON
  tracepoint  CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH (tracefs), and CAP_SYS_ADMIN where
              kernel.perf_event_paranoid is 3 (Debian: perf_event_open needs it)
  kprobe      as tracepoint, and CAP_DAC_OVERRIDE for a user other than root (return
              probes are defined in tracefs's kprobe_events, 4096 instances each; without
              it they get the kernel's default, and the plan says so; it covers
              CAP_DAC_READ_SEARCH)
  all modes   CAP_SYS_NICE (map reads at SCHED_FIFO, so a preempted read cannot make the
              kernel skip runs), CAP_SYS_RESOURCE (locked memory, before Linux 5.11),
              CAP_SYSLOG for --readers (kallsyms addresses name the call sites)
  CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON. On Debian, for the default plan (kprobes)
  as a user other than root, on a copy of the binary:
    setcap cap_bpf,cap_perfmon,cap_dac_override,cap_sys_admin,cap_sys_nice+ep COPY";

#[derive(Debug, Parser)]
#[command(
    name = "kcmp-trace",
    version,
    about = "Trace kcmp(2): which path every call takes, its latency, lock waits and errors",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Log more (repeat for debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Whether the command asked for the eBPF programs' diagnostics.
    pub fn bpf_log(&self) -> bool {
        match &self.command {
            Some(Command::Watch(a)) => a.trace.bpf_log,
            Some(Command::Record(a)) => a.watch.trace.bpf_log,
            Some(Command::Events(a)) => a.trace.bpf_log,
            Some(Command::Serve(a)) => a.trace.bpf_log,
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Counters, rates and latency percentiles every interval (the default).
    Watch(WatchArgs),
    /// One line per kcmp call.
    Events(EventsArgs),
    /// Keep one session in a file: the kernel, the plan, every interval's counters, the
    /// totals and histograms, and with --events every call. Prints what `watch` prints.
    Record(RecordArgs),
    /// Summarize a recording, or compare two side by side (A, then B); --out draws plots.
    Report(ReportArgs),
    /// What this kernel allows and what the tracer will use.
    Doctor(DoctorArgs),
    /// Generate kcmp calls with an exact count of its own.
    Stress(StressArgs),
    /// Run as a daemon: Prometheus /metrics, /events stream, JSON snapshot.
    ///
    /// /metrics: Prometheus text, or OpenMetrics when the Accept header prefers it.
    ///
    /// /events: one JSON object per call (server-sent events for Accept: text/event-stream),
    /// filtered by ?pid=, comm=, type=, outcome=; a client too slow to keep up gets
    /// {"dropped":N,"reason":"slow_client"} in place of what it missed.
    ///
    /// /api/v1/snapshot: everything since attach as JSON (what `watch --connect` reads).
    /// /healthz: "ok" while the counters can be read.
    ///
    /// SIGTERM or Ctrl-C: stop accepting, finish responses, detach, exit 0.
    Serve(ServeArgs),
    /// Write the man pages, the bash, zsh and fish completions, or the JSON Schemas of the
    /// JSON output into a directory.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(value_enum)]
    pub what: Generated,
    /// Directory to write into (created if missing).
    pub dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generated {
    /// kcmp-trace.1 and a page per subcommand.
    Man,
    /// bash, zsh and fish completions.
    Completions,
    /// A JSON Schema per JSON output format (docs/schema/ keeps them).
    Schemas,
}

/// Shortest and longest durations taken: finer than a millisecond means nothing for
/// reports, and timers cannot run past a year.
const DURATION_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(365 * 86_400));

/// A duration as people write it: `500ms`, `2s`, `1m30s`, or seconds (`2.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bare_seconds = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let text = if bare_seconds {
        format!("{s}s")
    } else {
        s.to_owned()
    };
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 2s, 1m30s)"))?;
    let d = Duration::try_from(parsed).map_err(|_| format!("{s:?} must be positive"))?;
    let (min, max) = DURATION_RANGE;
    if d < min || d > max {
        return Err(format!("{s:?} is outside 1ms to 365 days"));
    }
    Ok(d)
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() >= kcmp_trace_common::event::COMM_LEN || s.contains('\0') {
        return Err(format!(
            "{s:?}: a comm is 1 to {} bytes without NUL",
            kcmp_trace_common::event::COMM_LEN - 1
        ));
    }
    Ok(s.to_owned())
}

fn parse_size(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        _ => (s, 1),
    };
    let bytes = num
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 64K, 4M)"))?
        .checked_mul(mult);
    bytes
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_kcmp_type(s: &str) -> Result<u32, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(u32::MAX);
    }
    kcmp_trace_common::kcmp::parse_type(s)
        .filter(|&t| t < kcmp_trace_common::kcmp::KCMP_TYPES as u32)
        .ok_or_else(|| {
            format!("{s:?} is not a kcmp type (file, vm, files, fs, sighand, io, sysvsem, epoll_tfd, all)")
        })
}

/// What to trace; shared by every tracing command.
#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// Trace only this process (tgid); repeat for more.
    #[arg(short = 'p', long = "pid", value_name = "TGID")]
    pub pids: Vec<u32>,
    /// Trace only callers with this comm (at most 15 bytes, as the kernel keeps it).
    #[arg(short = 'c', long)]
    pub comm: Option<String>,
    /// How to attach: fentry, kprobe, tracepoint, or the best that works.
    #[arg(long, value_enum, default_value_t = AttachRequest::Auto)]
    pub attach: AttachRequest,
    /// How to tell a call's path: the speculation helpers' return values (direct), or the
    /// order of permission checks and lock waits (infer, for kernels that inline them). On
    /// a kernel without the series, auto reads each call's result (stock).
    #[arg(long, value_enum, default_value_t = StrategyRequest::Auto)]
    pub strategy: StrategyRequest,
    /// Let the eBPF programs log their diagnostics (aya-log).
    #[arg(long)]
    pub bpf_log: bool,
    /// Threads whose call in flight is kept (LRU: idle threads make room). More than this
    /// many threads inside kcmp at once leave calls unpaired, and say so.
    #[arg(long, value_name = "N", default_value_t = kcmp_trace_common::maps::DEFAULT_MAX_THREADS,
          value_parser = clap::value_parser!(u32).range(64..=1 << 22))]
    pub max_threads: u32,
    /// Processes with per-process totals; exited ones are removed as it fills. Calls of a
    /// process that finds it full are counted as unattributed.
    #[arg(long, value_name = "N", default_value_t = kcmp_trace_common::maps::DEFAULT_MAX_PROCESSES,
          value_parser = clap::value_parser!(u32).range(64..=1 << 22))]
    pub max_processes: u32,
    /// Follow exec_update_lock's other readers beside kcmp: /proc/PID/stack, syscall and
    /// wchan call by call, any other caller by its call site (other:SYMBOL).
    #[arg(long)]
    pub readers: bool,
    /// Count exec_update_lock's waiters (kcmp, and with --readers every reader) and writers
    /// (exec, TSYNC) by kernel stack: `stacks` in JSON, `report --folded`, flame graphs.
    #[arg(long)]
    pub stacks: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Time between reports.
    #[arg(short, long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Stop after this long.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many reports.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Print the latency histogram with every report, not only at exit.
    #[arg(long)]
    pub hist: bool,
    /// One JSON object per report instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Processes shown per report.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Show one reader of exec_update_lock only (implies --readers): kcmp, proc_stack,
    /// proc_syscall, proc_wchan, other (with its call sites), or other:SYMBOL.
    #[arg(long, value_name = "READER", value_parser = parse_reader)]
    pub reader: Option<String>,
    /// Show a running `kcmp-trace serve` instead of attaching: http://HOST:PORT or unix:PATH
    /// (plain HTTP: a daemon serving TLS is reached through its Unix socket).
    #[arg(long, value_name = "URL", conflicts_with_all = ["pids", "comm", "attach", "strategy", "bpf_log", "max_threads", "max_processes", "readers", "stacks"])]
    pub connect: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The recording to write (JSON lines, documented in docs/usage.md).
    #[arg(short, long, value_name = "FILE")]
    pub output: std::path::PathBuf,
    /// Keep every call's event too (the objects `events --json` prints).
    #[arg(long, conflicts_with = "connect")]
    pub events: bool,
    /// With --events: the ring buffer's size (power of two, at least 4K); a larger one
    /// drops less under bursts (events the ring dropped are counted in the recording).
    #[arg(long, value_parser = parse_size, default_value = "4M", requires = "events")]
    pub ring_size: u32,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// One recording, or two to compare: A (e.g. without the series), then B.
    #[arg(value_name = "FILE", num_args = 1..=2, required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// The numbers as JSON: one recording's total as `watch --json` prints it, or both
    /// totals and every compared metric.
    #[arg(long)]
    pub json: bool,
    /// Also write SVG plots and a page showing them (index.html) into this directory; with
    /// a recording made with --stacks, flame graphs of its lock waits too.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Print the recording's lock waits (made with --stacks) as folded stacks, one line
    /// per stack (`waiter;frame;...;frame VALUE`), valued by wait time in ns or by count,
    /// for any flame-graph tool; instead of the table.
    #[arg(long, value_name = "BY", value_enum, conflicts_with = "json")]
    pub folded: Option<FoldedBy>,
    /// With --folded: the writers' sections (exec, tsync) too, valued by hold time.
    #[arg(long, requires = "folded")]
    pub writers: bool,
    /// Write the recording's events (made with --events) as a timeline for the Perfetto UI
    /// or chrome://tracing (Trace Event Format JSON): a track per thread, each call a
    /// slice named by its outcome with its lock wait inside, the writers' sections, and an
    /// arrow from each section to the calls it made leave the fast path.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "folded"])]
    pub trace: Option<std::path::PathBuf>,
    /// With --trace: leave out the fast calls that did not wait (they are counted), to
    /// keep a long recording's timeline to the calls that left the fast path.
    #[arg(long, requires = "trace")]
    pub skip_fast: bool,
}

/// What a folded stack's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FoldedBy {
    /// Wait time in ns.
    Time,
    /// Number of waits.
    Count,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// NDJSON: one JSON object per call.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many events.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Ring buffer size (power of two, at least 4K); a larger one drops less under bursts.
    #[arg(long, value_parser = parse_size, default_value = "4M")]
    pub ring_size: u32,
    /// Nice value the reader runs at, so a workload that keeps every CPU busy cannot starve
    /// it into dropping events (it takes the CPU it needs to keep up, and no more).
    #[arg(long, value_name = "N", default_value_t = -10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub reader_nice: i32,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
    /// Also measure what each hook of the plan costs per run here: attach it for a moment,
    /// with BPF run-time statistics on (CAP_SYS_ADMIN, or kernel.bpf_stats_enabled=1),
    /// beside 100 execs, threads contending on a lock and 1000 kcmp calls of its own
    /// (which a running daemon counts too).
    #[arg(long)]
    pub cost: bool,
}

#[derive(Debug, Args)]
pub struct StressArgs {
    /// Threads making calls.
    #[arg(short, long, default_value_t = 2)]
    pub threads: usize,
    /// kcmp types of the valid calls, comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', value_parser = parse_kcmp_type, default_value = "file")]
    pub types: Vec<u32>,
    /// Make exactly this many calls in all (invalid ones included).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    pub calls: Option<u64>,
    /// Make valid calls for this long.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Calls with a fd that is not open (-EBADF).
    #[arg(long, default_value_t = 0)]
    pub bad_fd: u64,
    /// Calls naming a pid that does not exist (-ESRCH).
    #[arg(long, default_value_t = 0)]
    pub dead_pid: u64,
    /// Calls with an out-of-range type (-EINVAL).
    #[arg(long, default_value_t = 0)]
    pub bad_type: u64,
    /// Calls from a thread that dropped to nobody, comparing init (-EPERM; needs root).
    #[arg(long, default_value_t = 0)]
    pub eperm: u64,
    /// Processes that exec() themselves in a loop; valid calls compare against them.
    #[arg(long, default_value_t = 0)]
    pub exec_racers: usize,
    /// Processes that take their exec_update_lock for writing through Landlock TSYNC in a
    /// loop (landlock_restrict_self, Linux 7.2); valid calls compare against them too.
    #[arg(long, default_value_t = 0)]
    pub tsync_racers: usize,
    /// Make every call from a thread of its own that exits right after: thread churn, for
    /// per-process totals that must outlive their threads.
    #[arg(long)]
    pub thread_per_call: bool,
    /// Threads reading /proc/PID/{stack,syscall,wchan} of the racers (of this process
    /// without racers) alongside: exec_update_lock's /proc readers, for `--readers`.
    #[arg(long, default_value_t = 0)]
    pub proc_readers: usize,
    /// Threads opening /proc/PID/environ of the same targets in a loop: each open is one
    /// mm_access() read of exec_update_lock (`other:mm_access` under `--readers`), counted
    /// exactly by result (`mm_reads`).
    #[arg(long, default_value_t = 0)]
    pub mm_readers: usize,
    /// Run under this comm (at most 15 bytes), so `-c` can pick this workload out.
    #[arg(long, value_parser = parse_comm)]
    pub comm: Option<String>,
    /// Wait until this file exists before starting (lets a tracer attach first).
    #[arg(long, value_name = "PATH")]
    pub wait_for: Option<std::path::PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Where `serve` listens unless told otherwise: loopback only. The Prometheus exporter port
/// range (9100-9999) is fully allocated, so the port is outside it.
pub const DEFAULT_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 10470),
);

impl ServeArgs {
    /// The TCP address to serve on, if any.
    pub fn tcp(&self) -> Option<std::net::SocketAddr> {
        self.listen
            .or_else(|| self.unix.is_none().then_some(DEFAULT_LISTEN))
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.strip_prefix("0o").unwrap_or(s), 8)
        .ok()
        .filter(|&m| m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not a permission mode (octal, e.g. 0660)"))
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// TCP address to serve on; the default unless only --unix is given. The default port,
    /// 10470, is outside the fully allocated Prometheus exporter range 9100-9999.
    #[arg(short, long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Serve on this Unix socket too (alone, without a TCP port, unless --listen is given).
    /// Per-call events and per-process data go out here: the socket's mode says who may
    /// read them.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<std::path::PathBuf>,
    /// Serve /events and /api/v1/snapshot (every process's pids, comms, fds) over TCP too,
    /// to anyone who can connect; without it TCP serves them only to users authenticated by
    /// --web.config.file, and /metrics and /healthz to everyone it lets in.
    #[arg(long)]
    pub tcp_per_call_data: bool,
    /// TLS and basic auth for the TCP listener, in the Prometheus exporters' web
    /// configuration format (tls_server_config, basic_auth_users with bcrypt hashes).
    #[arg(
        long = "web.config.file",
        visible_alias = "web-config-file",
        value_name = "PATH"
    )]
    pub web_config_file: Option<std::path::PathBuf>,
    /// Permissions of the Unix socket, octal.
    #[arg(long, value_name = "MODE", value_parser = parse_mode, default_value = "0660")]
    pub unix_mode: u32,
    /// Group of the Unix socket: with mode 0660, its members read everything the daemon
    /// serves.
    #[arg(long, value_name = "GROUP", requires = "unix")]
    pub unix_group: Option<String>,
    /// Comms with their own series in /metrics (the busiest; the rest are comm="other"), at
    /// most 100: each is a few series in every scrape of every Prometheus.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u16).range(..=100))]
    pub top_comms: u16,
    /// A comm's series ages out after this long without a call (its calls move to
    /// comm="other"), so that comms seen once do not keep series forever.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10m")]
    pub comm_series_ttl: Duration,
    /// Collect no per-call events (/events answers 404; less overhead per call).
    #[arg(long)]
    pub no_events: bool,
    /// Ring buffer size for per-call events (power of two, at least 4K); the daemon drains it
    /// continuously, and a small one keeps its memory small (it is mapped twice).
    #[arg(long, value_parser = parse_size, default_value = "1M")]
    pub ring_size: u32,
    /// Most /events clients at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_event_clients: usize,
    /// Nice value of the thread that drains the event ring and fans events out. The
    /// default yields to the workload and to scrapes, and drops events (counted, and told
    /// to clients) when the machine is saturated; -10, with a larger --ring-size, keeps up
    /// with every call at the cost of the CPU it takes.
    #[arg(long, value_name = "N", default_value_t = 10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub reader_nice: i32,
    /// NDJSON one /events client may have waiting to be written before its events are
    /// dropped (counted, and told to it): the slack that lets a client keep up with every
    /// call while the machine is busy (about 220 bytes per event).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "8M")]
    pub event_client_buffer: u32,
    /// NDJSON all /events clients together may have waiting; bounds the daemon's memory
    /// whatever the clients do.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64M")]
    pub event_buffer_total: u32,
    /// Most /events clients one client may have at once: one per authenticated user, Unix
    /// socket user or TCP address.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_event_clients_per_client: u16,
    /// Most connections served at once; more wait to be accepted. Each must send its
    /// request within 10 s of connecting or of its previous response.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: u16,
    /// Have the kernel keep every BPF program's run time and run count while serving
    /// (BPF_ENABLE_STATS; it costs two clock reads per program run), for
    /// kcmp_trace_bpf_program_run_seconds_total.
    #[arg(long)]
    pub bpf_stats: bool,
}

impl WatchArgs {
    /// `kcmp-trace` with no subcommand: watch with every default.
    pub fn default_from_cli() -> WatchArgs {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            watch: WatchArgs,
        }
        Defaults::parse_from(["kcmp-trace"]).watch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-2s").is_err());
        // Out of range: would stop a timer dead or overflow it.
        assert!(parse_duration("0.0000000001").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("400d").is_err());
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert!(parse_size("lots").is_err());
        // 2^44 MiB is 2^64 bytes: wrapped to 0 before the multiplication was checked.
        assert_eq!(
            parse_size("17592186044416M"),
            Err("\"17592186044416M\" is too large".into())
        );
        assert!(parse_size("4294967296").is_err());
        assert_eq!(parse_size("4194303K"), Ok(4_294_966_272));
    }

    proptest::proptest! {
        /// No input panics either parser, and what they accept is in range and exact.
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            if let Ok(d) = parse_duration(&s) {
                proptest::prop_assert!(d >= DURATION_RANGE.0 && d <= DURATION_RANGE.1);
            }
            let _ = parse_size(&s);
        }

        #[test]
        fn numbers_round_trip(ms in 1u64..=365 * 86_400_000, kib in 0u64..=8 << 20) {
            proptest::prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
            let bytes = kib << 10;
            proptest::prop_assert_eq!(parse_size(&format!("{kib}K")).ok(), u32::try_from(bytes).ok());
            proptest::prop_assert_eq!(parse_size(&bytes.to_string()).ok(), u32::try_from(bytes).ok());
        }

        /// A number with a unit is that many units, to the nanosecond, or it is refused:
        /// never wrapped, cut short or let out of range. It is refused only when out of
        /// range or written in a form jiff does not take: days, more than 18 integer
        /// digits, a fraction of a nanosecond, a point without digits after it, or more
        /// than nine of them.
        #[test]
        fn durations_with_digits_and_units(n in "[0-9]{1,25}(\\.[0-9]{0,12})?", unit in "(ns|us|ms|s|m|h|d|)") {
            let text = format!("{n}{unit}");
            let (int, frac) = n.split_once('.').map_or((n.as_str(), None), |(i, f)| (i, Some(f)));
            let unit_ns: u128 = match unit.as_str() {
                "ns" => 1,
                "us" => 1_000,
                "ms" => 1_000_000,
                "" | "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => 86_400_000_000_000,
            };
            // The value written, in nanoseconds times `scale`; None past u128, far out of range.
            let scale = 10u128.pow(frac.map_or(0, str::len) as u32);
            let written = format!("{int}{}", frac.unwrap_or(""))
                .parse::<u128>()
                .ok()
                .and_then(|v| v.checked_mul(unit_ns));
            let (min, max) = DURATION_RANGE;
            match parse_duration(&text) {
                Ok(d) => {
                    proptest::prop_assert!(d >= min && d <= max, "{text} gave {d:?}");
                    let written = written.expect("a value past u128 nanoseconds was taken");
                    proptest::prop_assert!(
                        (d.as_nanos() * scale).abs_diff(written) < scale,
                        "{text} gave {d:?}"
                    );
                }
                Err(e) => {
                    let in_range = written
                        .is_some_and(|w| w >= min.as_nanos() * scale && w <= max.as_nanos() * scale);
                    let taken_form = unit != "d"
                        && int.len() <= 18
                        && frac.is_none_or(|f| (1..=9).contains(&f.len()) && unit != "ns");
                    proptest::prop_assert!(!(in_range && taken_form), "{text} refused: {e}");
                }
            }
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
