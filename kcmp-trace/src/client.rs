//! The client `watch --connect` reads a running daemon with.

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use kcmp_trace_common::json::snapshot::Snapshot;

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
        // The daemon may serve TLS (--web.config.file), but this client speaks plain HTTP;
        // its Unix socket reaches such a daemon.
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "{url:?}: use http://HOST:PORT or unix:PATH (this client has no TLS: \
                 reach a daemon that serves https through its Unix socket)"
            )
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

/// A daemon's answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The largest answer read: a snapshot of the daemon's busiest table (16,384 threads) is
/// a few MiB; anything far larger is not a kcmp-trace daemon talking.
const MAX_BODY: usize = 64 << 20;

/// GETs `path` with extra request headers; whatever the status, within 10 s.
pub async fn request(
    target: &Target,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    async fn exchange<S>(
        io: S,
        target: &Target,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let conn = tokio::spawn(conn);
        let mut request =
            hyper::Request::get(target.path(path)).header(hyper::header::HOST, target.host());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::<bytes::Bytes>::new())?)
            .await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        conn.abort();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
    let fetch = async {
        match target {
            Target::Tcp { authority, .. } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
                exchange(stream, target, path, headers).await
            }
            Target::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                exchange(stream, target, path, headers).await
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 10s"))?
        .with_context(|| format!("asking the kcmp-trace daemon at {target}"))
}

/// GETs `path` from the daemon; the body of a 200, else an error with the daemon's reason.
pub async fn get(target: &Target, path: &str) -> anyhow::Result<bytes::Bytes> {
    let response = request(target, path, &[]).await?;
    if !(200..300).contains(&response.status) {
        let reason = String::from_utf8_lossy(&response.body);
        bail!(
            "{}: {}",
            response.status,
            reason.lines().next().unwrap_or("")
        );
    }
    Ok(response.body)
}

/// The daemon's snapshot.
pub async fn fetch(target: &Target) -> anyhow::Result<Snapshot<'static>> {
    let body = get(target, "/api/v1/snapshot").await?;
    serde_json::from_slice(&body).with_context(|| format!("reading the snapshot from {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let https = Target::parse("https://x:1").expect_err("https is refused");
        assert!(https.contains("no TLS"), "{https}");
        assert!(Target::parse("http://localhost").is_err());
        assert!(Target::parse("unix:").is_err());
    }
}
