//! `kcmp-trace serve`: attach once, aggregate continuously, answer over HTTP. It takes a
//! [`ServeConfig`] and a shutdown future; the command line is `cmd::serve`'s.
//!
//! [`reads`] is the one reader of the tracer's maps, [`metrics`] encodes `/metrics` from the
//! table of [`families`] (in the format [`negotiate`] picks, with the per-comm series of
//! [`comms`]), [`events`] fans per-call events out to `/events` clients, [`http`] routes and
//! guards what handlers see in [`state`] (`/api/v1/snapshot` sends
//! `kcmp_trace_common::json::snapshot`'s), [`conns`] accepts connections within bounds,
//! [`webconfig`] reads TLS and basic auth settings and checks credentials, and
//! [`rejections`] counts what is turned away.

pub mod comms;
pub mod conns;
pub mod events;
pub mod families;
pub mod http;
pub mod metrics;
pub mod negotiate;
pub mod reads;
pub mod rejections;
pub mod state;
pub mod webconfig;

use std::{
    net::SocketAddr,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;

use crate::{config::TraceConfig, error::Error, lifecycle::announce, loader::Tracer, plan::Plan};
use comms::CommTable;
use events::Hub;
use reads::Reads;
use rejections::Rejections;
use state::AppState;
use webconfig::CredentialChecks;

/// Names each candidate tried before the plan, and why it did not attach, in the journal at
/// the unit's level (warn): a plan other than the first candidate is less exact, and a
/// refusal for lack of privilege says there which capability or sysctl would allow it.
fn log_fallback(plan: &Plan) {
    for (what, why) in &plan.rejected {
        log::warn!(
            "attached {} + {} instead of {what}: {why}",
            plan.mode.name(),
            plan.strategy.name()
        );
    }
}

/// How long in-flight responses may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_millis(1500);
/// Threads that serve HTTP: two, so one slow response never holds up a scrape.
const HTTP_WORKERS: usize = 2;

/// What the daemon serves, where, and within which bounds: all `serve` needs to know.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub trace: TraceConfig,
    /// The TCP address to serve on, if any.
    pub tcp: Option<SocketAddr>,
    pub unix: Option<UnixSocket>,
    /// `/events` and `/api/v1/snapshot` over TCP without credentials.
    pub tcp_per_call_data: bool,
    /// TLS and basic auth (`--web.config.file`).
    pub web_config_file: Option<PathBuf>,
    /// Per-comm series kept, and how long an idle one stays.
    pub top_comms: u16,
    pub comm_series_ttl: Duration,
    pub max_event_clients: usize,
    pub max_event_clients_per_client: u16,
    pub event_budget: events::Budget,
    /// Nice value of the event thread.
    pub reader_nice: i32,
    pub max_connections: u16,
    /// Keep the kernel's BPF run-time statistics on while serving.
    pub bpf_stats: bool,
}

/// A Unix socket to serve on, and who may connect to it.
#[derive(Clone, Debug)]
pub struct UnixSocket {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<String>,
}

/// Where the daemon serves: TCP, a Unix socket, or both.
struct Listeners {
    tcp: Option<tokio::net::TcpListener>,
    unix: Option<(tokio::net::UnixListener, PathBuf)>,
}

impl Listeners {
    async fn bind(config: &ServeConfig) -> Result<Listeners, Error> {
        let tcp =
            match config.tcp {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| Error::Listen {
                        addr: addr.to_string(),
                        source,
                    },
                )?),
                None => None,
            };
        let unix = match &config.unix {
            Some(socket) => Some(
                bind_unix(&socket.path, socket.mode, socket.group.as_deref())
                    .map(|l| (l, socket.path.clone()))
                    .map_err(|source| Error::Listen {
                        addr: format!("unix:{}", socket.path.display()),
                        source,
                    })?,
            ),
            None => None,
        };
        Ok(Listeners { tcp, unix })
    }

    /// "http://127.0.0.1:10470 (...) and unix:PATH (...)": where, and what each serves.
    fn describe(&self, tcp_access: &http::Access, tls: bool, unix_access: &http::Access) -> String {
        let mut places = Vec::new();
        if let Some(l) = &self.tcp {
            let scheme = if tls { "https" } else { "http" };
            let addr = l
                .local_addr()
                .map_or_else(|_| "tcp".into(), |a| format!("{scheme}://{a}"));
            places.push(format!("{addr} ({})", tcp_access.endpoints()));
        }
        if let Some((_, path)) = &self.unix {
            places.push(format!(
                "unix:{} ({})",
                path.display(),
                unix_access.endpoints()
            ));
        }
        places.join(" and ")
    }
}

fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> std::io::Result<tokio::net::UnixListener> {
    use std::io::{Error as IoError, ErrorKind};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(IoError::new(
                    ErrorKind::AddrInUse,
                    "another process is serving on this socket",
                ));
            }
            // Left behind by a daemon that did not exit cleanly.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(IoError::new(
                ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        Err(_) => {}
    }
    // Created owner-only, then opened up to the requested mode: never wider in between.
    // SAFETY: umask only swaps the process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the mask read then.
    unsafe { libc::umask(old) };
    let listener = bound?;
    if let Some(group) = group {
        std::os::unix::fs::chown(path, None, Some(group_id(group)?))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// A group's id, by name or number.
fn group_id(group: &str) -> std::io::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad group name"))?;
    // SAFETY: getgrnam reads the group database; the pointer is used before any other call.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no group {group:?}"),
        ));
    }
    // SAFETY: a non-null entry from getgrnam.
    Ok(unsafe { (*entry).gr_gid })
}

/// The daemon's runtime: [`HTTP_WORKERS`] workers; events and map reads run on threads of
/// their own.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(HTTP_WORKERS)
        .max_blocking_threads(2)
        .enable_all()
        .build()?)
}

/// Attaches, serves until `shutdown` resolves, then detaches. Run it on [`runtime`].
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    conns::raise_open_files_limit();
    let web = match &config.web_config_file {
        Some(path) => webconfig::WebConfig::load(path).map_err(|e| Error::Usage(e.to_string()))?,
        None => webconfig::WebConfig {
            tls: None,
            auth: None,
        },
    };
    if let Some(addr) = config.tcp.filter(|a| !a.ip().is_loopback()) {
        let missing = match (web.tls.is_some(), web.auth.is_some()) {
            (true, true) => None,
            (true, false) => Some("unauthenticated"),
            (false, true) => Some("unencrypted (passwords cross the network in clear)"),
            (false, false) => Some("unencrypted and unauthenticated"),
        };
        if let Some(missing) = missing {
            eprintln!(
                "kcmp-trace: WARNING: serving on {addr}, which is not loopback, {missing}: anyone who can reach it reads {}",
                if config.tcp_per_call_data {
                    "every process's kcmp calls (pids, comms, fds) from /events and /api/v1/snapshot"
                } else if web.auth.is_some() {
                    "what the credentials guard, if they can see them"
                } else {
                    "/metrics (calls by type, outcome and result, and the busiest comms)"
                }
            );
        }
    }
    // Fails before anything is attached when the address is taken.
    let listeners = Listeners::bind(&config).await?;

    let result = attach_and_serve(&config, web, listeners, shutdown).await;
    if let Some(socket) = &config.unix {
        let _ = std::fs::remove_file(&socket.path);
    }
    result
}

async fn attach_and_serve(
    config: &ServeConfig,
    web: webconfig::WebConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Held while serving: the kernel counts run time only while a holder is open.
    let _bpf_stats = if config.bpf_stats {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics: {e}"))?,
        )
    } else {
        None
    };
    let mut tracer = Tracer::start(&config.trace)?;
    // Loading parsed the kernel's BTF: hand that memory back, the daemon runs for long
    // (glibc keeps freed heap; musl's allocator returns it by itself).
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0)
    };
    // The threads about to start (the map reader, the event thread, the HTTP workers and
    // credential checkers) would each get a glibc arena of their own, whose freed memory
    // stays resident; two arenas serve them all.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; no allocation is in flight here
    // that depends on it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2)
    };
    let started = Instant::now();
    let ring = tracer.take_events();
    let plan = Arc::new(tracer.plan.clone());
    let kernel_release = tracer.kernel_release.clone();
    let comms = Arc::new(Mutex::new(CommTable::new(
        usize::from(config.top_comms),
        config.comm_series_ttl,
    )));
    // From here on, only the reader touches the tracer's maps.
    let (reads, reader_ended) = Reads::start(tracer, comms.clone())?;
    let hub = ring.as_ref().map(|_| {
        Arc::new(Hub::new(
            config.max_event_clients,
            usize::from(config.max_event_clients_per_client),
            config.event_budget,
        ))
    });
    let rejections = Arc::new(Rejections::default());
    let state = Arc::new(AppState {
        reads: reads.clone(),
        plan: plan.clone(),
        started,
        start_time_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        hub: hub.clone(),
        rejections: rejections.clone(),
        comms,
        kernel: kernel_release,
        encoders: tokio::sync::Semaphore::new(HTTP_WORKERS),
    });
    announce(&plan);
    log_fallback(&plan);
    let credentials = match &web.auth {
        Some(auth) => Some(CredentialChecks::start(auth.clone())?),
        None => None,
    };
    let tcp_access = http::Access {
        per_call_data: config.tcp_per_call_data,
        credentials,
        loopback_hosts_only: config.tcp.is_some_and(|a| a.ip().is_loopback()),
        rejections: rejections.clone(),
    };
    let unix_access = http::Access::owner(rejections.clone());
    let where_ = listeners.describe(&tcp_access, web.tls.is_some(), &unix_access);
    eprintln!("kcmp-trace: serving {where_}");
    log::info!("listening on {where_}, mode {}", plan.mode.name());

    let (stop_tx, stop_rx) = watch::channel(false);
    let pump = match (ring, &hub) {
        (Some(ring), Some(hub)) => Some(events::spawn_pump(
            ring,
            hub.clone(),
            reads.clone(),
            config.reader_nice,
            stop_rx.clone(),
        )?),
        _ => None,
    };
    let rejections_log = {
        let (rejections, stop) = (rejections.clone(), stop_rx.clone());
        tokio::spawn(async move { rejections.log_every_interval(stop).await })
    };

    let max = config.max_connections;
    let tcp = listeners.tcp.map(|l| {
        let app = http::router(state.clone(), tcp_access);
        let serving: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match web.tls {
            Some(acceptor) => {
                let rejections = rejections.clone();
                Box::pin(conns::serve(
                    l,
                    app,
                    max,
                    rejections.clone(),
                    move |io, addr| conns::tls(acceptor.clone(), rejections.clone(), io, addr),
                    stop_rx.clone(),
                ))
            }
            None => Box::pin(conns::serve(
                l,
                app,
                max,
                rejections.clone(),
                conns::plain_tcp,
                stop_rx.clone(),
            )),
        };
        serving
    });
    let unix = listeners.unix.map(|(l, _)| {
        let app = http::router(state.clone(), unix_access);
        conns::serve(
            l,
            app,
            max,
            rejections.clone(),
            conns::unix,
            stop_rx.clone(),
        )
    });
    let mut server = tokio::spawn(async move {
        let tcp = async {
            if let Some(serving) = tcp {
                serving.await;
            }
        };
        let unix = async {
            if let Some(serving) = unix {
                serving.await;
            }
        };
        tokio::join!(tcp, unix);
    });

    let early = tokio::select! {
        () = shutdown => None,
        r = &mut server => Some(r),
    };
    log::info!("stopping");
    let _ = stop_tx.send(true);
    let served = match early {
        Some(r) => r,
        // In-flight responses finish; event streams end as the hub closes.
        None => match tokio::time::timeout(DRAIN, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                log::warn!("responses still in flight after {DRAIN:?}; closing them");
                server.abort();
                Ok(())
            }
        },
    };
    if let Some(pump) = pump {
        match tokio::time::timeout(DRAIN, pump).await {
            Ok(Ok(Err(e))) => log::warn!("event stream: {}", crate::error::one_line(&e)),
            // Done, or the thread panicked (and closed the hub all the same).
            Ok(_) => {}
            Err(_) => log::warn!("event stream did not stop in time"),
        }
    }
    let _ = rejections_log.await;
    // The reader drops the tracer, which detaches the programs.
    reads.stop();
    if tokio::time::timeout(DRAIN, reader_ended).await.is_err() {
        log::warn!("the map reader did not stop in time");
    }
    served.map_err(|e| anyhow::anyhow!("server task: {e}"))
}
