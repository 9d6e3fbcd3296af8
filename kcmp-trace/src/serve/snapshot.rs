//! `/api/v1/snapshot`: everything since attach as JSON, and the client `watch --connect`
//! reads it with. Raw cumulative counters travel along with the report, so a client can
//! diff two snapshots into exact interval reports.

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use kcmp_trace_common::{
    hist::HIST_SLOTS, kcmp::TYPE_SLOTS, maps::misc, outcome::OUTCOMES, result::RESULT_SLOTS,
    snapshot::Counters,
};
use serde::{Deserialize, Serialize};

use crate::{
    loader::{HookCounters, ProcessRow},
    plan::Plan,
    report::Report,
};

/// `Counters` flattened, with its shape so a mismatched client notices.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireCounters {
    /// [outcomes, types, results, histogram slots, misc slots].
    pub shape: [usize; 5],
    /// calls[outcome][type][result], row-major.
    pub calls: Vec<u64>,
    /// latency[outcome][slot], row-major.
    pub latency: Vec<u64>,
    pub lock_wait: Vec<u64>,
    pub exec_hold: Vec<u64>,
    pub misc: Vec<u64>,
}

const SHAPE: [usize; 5] = [OUTCOMES, TYPE_SLOTS, RESULT_SLOTS, HIST_SLOTS, misc::SLOTS];

impl From<&Counters> for WireCounters {
    fn from(c: &Counters) -> Self {
        WireCounters {
            shape: SHAPE,
            calls: c.calls.as_flattened().as_flattened().to_vec(),
            latency: c.latency.as_flattened().to_vec(),
            lock_wait: c.lock_wait.to_vec(),
            exec_hold: c.exec_hold.to_vec(),
            misc: c.misc.to_vec(),
        }
    }
}

impl WireCounters {
    pub fn to_counters(&self) -> anyhow::Result<Counters> {
        if self.shape != SHAPE {
            bail!(
                "the daemon's counters have shape {:?}, this kcmp-trace expects {SHAPE:?} (versions differ)",
                self.shape
            );
        }
        let mut c = Counters::ZERO;
        let copy = |dst: &mut [u64], src: &[u64], what: &str| {
            if dst.len() != src.len() {
                bail!(
                    "snapshot {what}: {} values, expected {}",
                    src.len(),
                    dst.len()
                );
            }
            dst.copy_from_slice(src);
            Ok(())
        };
        copy(
            c.calls.as_flattened_mut().as_flattened_mut(),
            &self.calls,
            "calls",
        )?;
        copy(c.latency.as_flattened_mut(), &self.latency, "latency")?;
        copy(&mut c.lock_wait, &self.lock_wait, "lock_wait")?;
        copy(&mut c.exec_hold, &self.exec_hold, "exec_hold")?;
        copy(&mut c.misc, &self.misc, "misc")?;
        Ok(c)
    }
}

/// A process's totals since attach.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireProcess {
    pub tgid: u32,
    pub comm: String,
    pub calls: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
}

impl From<&ProcessRow> for WireProcess {
    fn from(r: &ProcessRow) -> Self {
        WireProcess {
            tgid: r.tgid,
            comm: r.comm.clone(),
            calls: r.calls,
            errors: r.errors,
            latency_sum_ns: r.latency_sum_ns,
        }
    }
}

impl From<WireProcess> for ProcessRow {
    fn from(r: WireProcess) -> Self {
        ProcessRow {
            tgid: r.tgid,
            comm: r.comm,
            calls: r.calls,
            errors: r.errors,
            latency_sum_ns: r.latency_sum_ns,
        }
    }
}

/// What the daemon sends.
#[derive(Serialize)]
pub struct SnapshotOut<'a> {
    pub version: &'static str,
    /// Seconds since attach.
    pub elapsed_s: f64,
    pub plan: &'a Plan,
    /// The numbers `watch --json` prints, over everything since attach.
    pub report: Report,
    pub counters: WireCounters,
    /// Every process seen, busiest first.
    pub processes: Vec<WireProcess>,
    /// What the kernel counted for each attached program (skipped runs, run time).
    pub programs: Vec<HookCounters>,
}

/// What a client reads back.
#[derive(Debug, Deserialize)]
pub struct SnapshotIn {
    pub elapsed_s: f64,
    pub plan: serde_json::Value,
    pub counters: WireCounters,
    pub processes: Vec<WireProcess>,
    pub programs: Vec<HookCounters>,
}

/// Where a daemon listens: `http://HOST:PORT[/PREFIX]` or `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp { authority: String, prefix: String },
    Unix(std::path::PathBuf),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        if let Some(path) = url.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("{url:?}: no socket path after unix:"));
            }
            return Ok(Target::Unix(path.into()));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?}: use http://HOST:PORT or unix:PATH (https is not served)")
        })?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || !authority.contains(':') {
            return Err(format!(
                "{url:?}: give the port, e.g. http://127.0.0.1:10470"
            ));
        }
        Ok(Target::Tcp {
            authority: authority.to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
        })
    }

    fn path(&self, path: &str) -> String {
        match self {
            Target::Tcp { prefix, .. } if !prefix.is_empty() => format!("/{prefix}{path}"),
            _ => path.to_owned(),
        }
    }

    fn host(&self) -> &str {
        match self {
            Target::Tcp { authority, .. } => authority,
            Target::Unix(_) => "localhost",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { authority, prefix } if prefix.is_empty() => {
                write!(f, "http://{authority}")
            }
            Target::Tcp { authority, prefix } => write!(f, "http://{authority}/{prefix}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// GETs `path` from the daemon; the body of a 200, else an error with the daemon's reason.
pub async fn get(target: &Target, path: &str) -> anyhow::Result<bytes::Bytes> {
    async fn exchange<S>(io: S, target: &Target, path: &str) -> anyhow::Result<bytes::Bytes>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let conn = tokio::spawn(conn);
        let request = hyper::Request::get(target.path(path))
            .header(hyper::header::HOST, target.host())
            .body(Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        conn.abort();
        if !status.is_success() {
            let reason = String::from_utf8_lossy(&body);
            bail!("{status}: {}", reason.lines().next().unwrap_or(""));
        }
        Ok(body)
    }
    let fetch = async {
        match target {
            Target::Tcp { authority, .. } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
                exchange(stream, target, path).await
            }
            Target::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                exchange(stream, target, path).await
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 10s"))?
        .with_context(|| format!("asking the kcmp-trace daemon at {target}"))
}

/// The daemon's snapshot.
pub async fn fetch(target: &Target) -> anyhow::Result<SnapshotIn> {
    let body = get(target, "/api/v1/snapshot").await?;
    serde_json::from_slice(&body).with_context(|| format!("reading the snapshot from {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip() {
        let mut c = Counters::ZERO;
        c.calls[3][2][1] = 7;
        c.latency[1][64] = 2;
        c.exec_hold[5] = 1;
        c.misc[misc::EVENTS_DROPPED] = 9;
        let wire: WireCounters =
            serde_json::from_str(&serde_json::to_string(&WireCounters::from(&c)).unwrap()).unwrap();
        let back = wire.to_counters().unwrap();
        assert_eq!(back.calls[3][2][1], 7);
        assert_eq!(back.latency[1][64], 2);
        assert_eq!(back.exec_hold[5], 1);
        assert_eq!(back.misc[misc::EVENTS_DROPPED], 9);
        let mut bad = WireCounters::from(&c);
        bad.shape[3] = 64;
        assert!(bad.to_counters().is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("http://127.0.0.1:10470"),
            Ok(Target::Tcp {
                authority: "127.0.0.1:10470".into(),
                prefix: String::new()
            })
        );
        let t = Target::parse("http://[::1]:80/kcmp/").unwrap();
        assert_eq!(t.path("/api/v1/snapshot"), "/kcmp/api/v1/snapshot");
        assert_eq!(
            Target::parse("unix:/run/kcmp-trace.sock"),
            Ok(Target::Unix("/run/kcmp-trace.sock".into()))
        );
        assert!(Target::parse("https://x:1").is_err());
        assert!(Target::parse("http://localhost").is_err());
        assert!(Target::parse("unix:").is_err());
    }
}
