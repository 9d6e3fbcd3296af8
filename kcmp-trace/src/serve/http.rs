//! Routes: `/metrics`, `/events`, `/api/v1/snapshot`, `/healthz`.

use std::{borrow::Cow, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use kcmp_trace_common::json::{
    self,
    report::{Report, missed_since},
    snapshot::WireCounters,
};

use super::{
    conns::Peer,
    events::{Filter, Framing, Refused},
    families::Sample,
    metrics,
    negotiate::Format,
    rejections::{Reason, Rejections},
    state::AppState,
    webconfig::{ChecksBusy, CredentialChecks},
};

pub const INDEX: &str = "kcmp-trace: /metrics (Prometheus/OpenMetrics), /events (NDJSON or SSE; filters pid, comm, type, outcome), /api/v1/snapshot (JSON; top=N), /healthz\n";

/// What a listener serves, and to which requests.
#[derive(Clone)]
pub struct Access {
    /// `/events` and `/api/v1/snapshot` (every process's pids, comms and fds) to anyone who
    /// gets past `auth`; without it, to authenticated users only.
    pub per_call_data: bool,
    /// Basic auth every request must pass (`--web.config.file`).
    pub credentials: Option<CredentialChecks>,
    /// Requests must name a loopback host (a loopback TCP listener).
    pub loopback_hosts_only: bool,
    pub rejections: Arc<Rejections>,
}

impl Access {
    /// A Unix socket: whoever its mode lets in may read everything.
    pub fn owner(rejections: Arc<Rejections>) -> Access {
        Access {
            per_call_data: true,
            credentials: None,
            loopback_hosts_only: false,
            rejections,
        }
    }

    pub fn endpoints(&self) -> &'static str {
        match (self.per_call_data, self.credentials.is_some()) {
            (true, false) => "/metrics /events /api/v1/snapshot /healthz",
            (true, true) => "/metrics /events /api/v1/snapshot /healthz, to authenticated users",
            (false, true) => "/metrics /healthz to authenticated users; per-call data to them too",
            (false, false) => "/metrics /healthz; per-call data over the Unix socket only",
        }
    }
}

pub fn router(state: Arc<AppState>, access: Access) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { text(StatusCode::OK, INDEX.to_owned()) }),
        )
        .route("/metrics", get(metrics_handler))
        .route("/events", get(events_handler))
        .route("/api/v1/snapshot", get(snapshot_handler))
        .route("/healthz", get(healthz_handler))
        .fallback(|uri: Uri| async move {
            text(
                StatusCode::NOT_FOUND,
                format!("not found: {}\n", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(access, guard))
        .with_state(state)
}

/// Enforces a listener's [`Access`]. A web page can make a name its site controls resolve
/// to 127.0.0.1 (DNS rebinding) and then read a loopback daemon from the visitor's
/// browser; its requests carry that name as Host, so a loopback listener answers only
/// loopback names.
///
/// With basic auth, every request must authenticate (as with the Prometheus exporters), and
/// an authenticated user may read per-call data; the user then names the client for its
/// share of `/events`.
async fn guard(
    State(access): State<Access>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if access.loopback_hosts_only
        && let Some(host) = request.headers().get(header::HOST)
        && !host.to_str().is_ok_and(is_loopback_host)
    {
        access.rejections.count(Reason::Misdirected);
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected request: this daemon answers only requests for a loopback host (localhost, 127.0.0.1, [::1])\n"
                .to_owned(),
        );
    }
    if let Some(checks) = &access.credentials {
        let credentials = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let user = match credentials {
            // bcrypt takes tens of milliseconds: on the checkers' own threads.
            Some(credentials) => match checks.user(&credentials).await {
                Ok(user) => user,
                Err(ChecksBusy) => {
                    access.rejections.count(Reason::CredentialChecksBusy);
                    let mut response = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many credential checks waiting; try again\n".to_owned(),
                    );
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return response;
                }
            },
            None => None,
        };
        let Some(user) = user else {
            access.rejections.count(Reason::Unauthorized);
            let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n".to_owned());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kcmp-trace\""),
            );
            return response;
        };
        request.extensions_mut().insert(Peer::User(user));
    } else if !access.per_call_data
        && ["/events", "/api/v1/snapshot"].contains(&request.uri().path())
    {
        access.rejections.count(Reason::Forbidden);
        return text(
            StatusCode::FORBIDDEN,
            "forbidden: per-call and per-process data is served over the daemon's Unix socket (serve --unix PATH), or over TCP to users authenticated by --web.config.file; serve --tcp-per-call-data serves it over TCP to anyone who can connect\n"
                .to_owned(),
        );
    }
    next.run(request).await
}

/// `localhost`, a loopback IP, either with a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map(|(ip, _)| ip),
        None => match host.rsplit_once(':') {
            Some((name, port)) => port.parse::<u16>().is_ok().then_some(name),
            None => Some(host),
        },
    };
    name.is_some_and(|n| {
        n.eq_ignore_ascii_case("localhost")
            || n.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// A plain-text answer; errors are one line.
fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    text(StatusCode::BAD_REQUEST, format!("bad request: {reason}\n"))
}

/// The map reader's error (it logged it already).
fn unavailable(why: &str) -> Response {
    text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
}

async fn metrics_handler(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snapshot = match state.reads.fresh(false).await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let Ok(_encoding) = state.encoders.acquire().await else {
        return unavailable("shutting down");
    };
    let sample = Sample {
        counters: snapshot.counters,
        plan: state.plan.clone(),
        comms: state.comm_series(),
        programs: snapshot.programs.clone(),
        bpf_stats_enabled: metrics::bpf_stats_enabled(),
        client_drops: state.hub.as_ref().map_or(0, |h| h.slow_drops()),
        event_clients: state.hub.as_ref().map_or(0, |h| h.clients()),
        event_queued_bytes: state.hub.as_ref().map_or(0, |h| h.queued_bytes()),
        rejections: state.rejections.totals(),
        start_time_s: state.start_time_s,
        kernel: state.kernel.clone(),
        callers: snapshot.callers.clone(),
        stacks: snapshot.stacks.clone(),
    };
    match metrics::encode(sample, format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n".into(),
        ),
    }
}

async fn events_handler(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<Peer>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let filter = match Filter::parse(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let Some(hub) = &state.hub else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: /events is off (serve --no-events)\n".into(),
        );
    };
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let framing = if sse { Framing::Sse } else { Framing::Ndjson };
    let peer = peer.map(|axum::Extension(p)| p);
    let stream = match hub.subscribe(filter, framing, peer.clone()) {
        Ok(stream) => stream,
        Err(refused) => {
            let why = match refused {
                Refused::Full => {
                    state.rejections.count(Reason::EventsFull);
                    format!("too many /events clients (at most {})", hub.max_clients())
                }
                Refused::ClientShare => {
                    state.rejections.count(Reason::EventsClientShare);
                    format!(
                        "{} has its share of /events clients (at most {} of {})",
                        peer.map_or_else(|| "this client".into(), |p| p.to_string()),
                        hub.max_per_client(),
                        hub.max_clients()
                    )
                }
                Refused::Closing => "shutting down".into(),
            };
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
        }
    };
    log::debug!(
        "events client connected, query={:?}",
        query.unwrap_or_default()
    );
    let content_type = match framing {
        Framing::Ndjson => "application/x-ndjson",
        Framing::Sse => "text/event-stream",
    };
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies must pass events on as they come.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `top=N`: processes in the report (default 5, at most 1000).
fn parse_top(query: Option<&str>) -> Result<usize, String> {
    let mut top = 5;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "top" => {
                top = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n <= 1000)
                    .ok_or_else(|| format!("top: {value:?} is not a number from 0 to 1000"))?;
            }
            _ => return Err(format!("unknown parameter {key:?} (use top)")),
        }
    }
    Ok(top)
}

async fn snapshot_handler(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let top = match parse_top(query.as_deref()) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    let read = match state.reads.fresh(true).await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let Ok(_encoding) = state.encoders.acquire().await else {
        return unavailable("shutting down");
    };
    let elapsed_s = read.taken.duration_since(state.started).as_secs_f64();
    let mut report = Report::new(
        &read.counters,
        elapsed_s,
        read.processes.iter().take(top).cloned().collect(),
        &missed_since(&read.programs, &[]),
        read.callers.as_deref(),
    );
    report.stacks = read.stacks.clone();
    let snapshot = json::snapshot::Snapshot {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        elapsed_s,
        plan: Cow::Borrowed(&state.plan),
        report,
        counters: WireCounters::from(&read.counters),
        processes: Cow::Borrowed(&read.processes),
        programs: Cow::Borrowed(&read.programs),
        callers: read.callers.as_deref().map(Cow::Borrowed),
        stacks: read.stacks.as_deref().map(Cow::Borrowed),
    };
    match serde_json::to_vec(&snapshot) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn healthz_handler(State(state): State<Arc<AppState>>) -> Response {
    match state.reads.fresh(false).await {
        Ok(_) => text(StatusCode::OK, "ok\n".into()),
        Err(e) => unavailable(&format!("unhealthy: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_parameter() {
        assert_eq!(parse_top(None), Ok(5));
        assert_eq!(parse_top(Some("top=0")), Ok(0));
        assert!(parse_top(Some("top=-1")).is_err());
        assert!(parse_top(Some("top=1001")).is_err());
        assert!(parse_top(Some("limit=3")).is_err());
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:10470",
            "127.0.0.1",
            "127.0.0.1:10470",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:10470",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:10470",
            "localhost.evil.example",
            "10.0.0.1:10470",
            "127.0.0.1:port",
            "[::2]:10470",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
