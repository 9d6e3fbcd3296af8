//! Accepting connections within bounds a hostile local user cannot push past.
//!
//! At most `max` connections are served at once. When a new one arrives at the cap, the
//! connection idle the longest (no request in flight and none waiting to be read:
//! connected but silent, half-sent, mid-TLS handshake, or kept alive after its response) is
//! closed to make room, so a scrape gets in at once however many idle connections someone
//! holds; only when every connection has a request in flight or waiting does the new one
//! wait in the listen backlog. Each connection must
//! also send a request's headers within [`HEADER_TIMEOUT`] of connecting or of its previous
//! response (hyper's header read timeout covers half-sent requests and idle keep-alive). The
//! open-files limit is raised to its hard limit at start, so the cap, not the descriptor
//! table, is what bounds the daemon.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    net::IpAddr,
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::{Notify, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::rejections::{Reason, Rejections};

/// How long a connection may take to send a request's headers (or finish its TLS
/// handshake), counted from its opening or from the end of its previous response.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often reaching the connection cap with every connection busy is logged, at most.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Who is at the other end of a connection: what one client's share of `/events` is
/// counted by (an authenticated user name takes precedence, see `http`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP peer's address.
    Ip(IpAddr),
    /// A Unix socket peer's user.
    Uid(u32),
    /// A user that authenticated.
    User(String),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(ip) => write!(f, "{ip}"),
            Peer::Uid(uid) => write!(f, "uid {uid}"),
            Peer::User(user) => write!(f, "user {user}"),
        }
    }
}

/// One open connection as the accept loop sees it.
struct Open {
    id: u64,
    /// The socket, to see whether a request is waiting in it unread.
    fd: RawFd,
    /// Requests in flight (a streaming response counts until its body ends).
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    open: Mutex<VecDeque<Open>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection idle the longest; false when every one is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let Some(i) = open
            .iter()
            .position(|c| c.busy.load(Ordering::Acquire) == 0 && !bytes_waiting(c.fd))
        else {
            return false;
        };
        if let Some(c) = open.remove(i) {
            c.evict.notify_one();
        }
        true
    }
}

/// Whether the peer sent bytes the server has not read yet (a request on its way in).
fn bytes_waiting(fd: RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; on a descriptor that is gone it fails harmlessly.
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) == 0 && n > 0 }
}

/// Marks its connection busy while alive.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open connections finish
/// their responses (event streams end when the hub closes). `prepare` turns an accepted
/// connection into the stream HTTP is read from (a TLS handshake, or nothing) and names
/// its peer; None drops it.
pub async fn serve<L, P, F, I>(
    mut listener: L,
    app: axum::Router,
    max: u16,
    rejections: Arc<Rejections>,
    prepare: P,
    mut stop: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
    L::Io: AsRawFd,
    P: Fn(L::Io, L::Addr) -> F + Send + Sync + 'static,
    F: Future<Output = Option<(I, Peer)>> + Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(usize::from(max)));
    let registry = Arc::new(Registry::default());
    let mut full_said: Option<Instant> = None;
    let mut next_id = 0u64;
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if registry.evict_oldest_idle() {
                    rejections.count(Reason::IdleEvicted);
                } else if full_said.is_none_or(|at| at.elapsed() >= FULL_LOG_EVERY) {
                    log::warn!(
                        "{max} connections open, each with a request in flight (--max-connections): new ones wait"
                    );
                    full_said = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = stop.wait_for(|&s| s) => break,
                }
            }
        };
        let id = next_id;
        next_id += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        registry.lock().push_back(Open {
            id,
            fd: io.as_raw_fd(),
            busy: busy.clone(),
            evict: evict.clone(),
        });
        let prepared = prepare(io, addr);
        let (app, registry, mut stop) = (app.clone(), registry.clone(), stop.clone());
        tokio::spawn(async move {
            let prepared = tokio::select! {
                prepared = prepared => prepared,
                _ = evict.notified() => None,
            };
            if let Some((io, peer)) = prepared {
                let service = tower::service_fn(move |mut request: axum::extract::Request<_>| {
                    request.extensions_mut().insert(peer.clone());
                    let busy = Busy::enter(&busy);
                    let app = app.clone();
                    async move {
                        let response = app.oneshot(request).await?;
                        // Busy until the body is written out: a stream holds its connection.
                        Ok::<_, Infallible>(response.map(|body| {
                            Body::new(body.map_frame(move |frame| {
                                let _held = &busy;
                                frame
                            }))
                        }))
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
                tokio::pin!(connection);
                let stopping = tokio::select! {
                    _ = connection.as_mut() => false,
                    _ = evict.notified() => false,
                    stopped = stop.wait_for(|&s| s) => stopped.is_ok(),
                };
                if stopping {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
                // Out of the registry while the socket is still open: its descriptor
                // number must not be looked at after it is reused.
                registry.lock().retain(|c| c.id != id);
            }
            registry.lock().retain(|c| c.id != id);
            drop(slot);
        });
    }
    // Every slot back: every connection has finished.
    let _ = slots.acquire_many(u32::from(max)).await;
}

/// A TCP connection served as it comes.
pub async fn plain_tcp(io: TcpStream, addr: std::net::SocketAddr) -> Option<(TcpStream, Peer)> {
    Some((io, Peer::Ip(addr.ip())))
}

/// A Unix socket connection, named by its peer's user.
pub async fn unix(
    io: tokio::net::UnixStream,
    _: tokio::net::unix::SocketAddr,
) -> Option<(tokio::net::UnixStream, Peer)> {
    let uid = io.peer_cred().ok()?.uid();
    Some((io, Peer::Uid(uid)))
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A TLS handshake within [`HEADER_TIMEOUT`]. Plain HTTP gets a one-line 400 saying so, as
/// Go's servers (and so the Prometheus exporters) answer it.
pub async fn tls(
    acceptor: TlsAcceptor,
    rejections: Arc<Rejections>,
    io: TcpStream,
    addr: std::net::SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Peer)> {
    let handshake = async {
        let mut first = [0u8; 1];
        if io.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            rejections.count(Reason::PlainHttpToTls);
            let mut io = io;
            let _ = io
                .write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nclient sent an HTTP request to an HTTPS server\n")
                .await;
            let _ = io.shutdown().await;
            return None;
        }
        match acceptor.accept(io).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                log::debug!("TLS handshake with {addr}: {e}");
                rejections.count(Reason::TlsHandshake);
                None
            }
        }
    };
    match tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
        Ok(stream) => Some((stream?, Peer::Ip(addr.ip()))),
        Err(_) => {
            rejections.count(Reason::TlsHandshake);
            None
        }
    }
}

/// Raises the soft open-files limit to the hard one: each connection is a descriptor, and
/// running out would fail accept() for scrapes too.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
