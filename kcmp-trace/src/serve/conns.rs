//! Accepting connections within bounds a hostile local user cannot push past.
//!
//! At most `max` connections are served at once; more wait in the listen backlog. Each must
//! send a request's headers within [`HEADER_TIMEOUT`] of connecting or of its previous
//! response, so a half-sent request or an idle keep-alive connection cannot hold a slot
//! (hyper's header read timeout covers both). The open-files limit is raised to its hard
//! limit at start, so the cap, not the descriptor table, is what bounds the daemon.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::{Semaphore, watch};

/// How long a connection may take to send a request's headers, counted from its opening or
/// from the end of its previous response.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often reaching the connection cap is logged, at most.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` until `stop` turns true, then lets open connections finish
/// their responses (event streams end when the hub closes).
pub async fn serve<L>(mut listener: L, app: axum::Router, max: u16, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
{
    let slots = Arc::new(Semaphore::new(usize::from(max)));
    let mut full_said: Option<Instant> = None;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = stop.wait_for(|&s| s) => break,
        };
        let Ok(slot) = slot else { break };
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => break,
        };
        if slots.available_permits() == 0
            && full_said.is_none_or(|at| at.elapsed() >= FULL_LOG_EVERY)
        {
            log::warn!("{max} connections open (--max-connections): new ones wait to be accepted");
            full_said = Some(Instant::now());
        }
        let app = app.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
            tokio::pin!(connection);
            let stopping = tokio::select! {
                _ = connection.as_mut() => false,
                stopped = stop.wait_for(|&s| s) => stopped.is_ok(),
            };
            if stopping {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
            drop(slot);
        });
    }
    // Every slot back: every connection has finished.
    let _ = slots.acquire_many(u32::from(max)).await;
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
