//! `--web.config.file`: TLS and basic auth in the Prometheus exporters' format
//! (exporter-toolkit), so a file written for node_exporter works here as it is.
//!
//! Supported: `tls_server_config` (`cert_file`/`key_file` or inline `cert`/`key`,
//! `client_auth_type` NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert
//! with `client_ca_file`, `min_version`/`max_version` TLS12 or TLS13),
//! `http_server_config.http2` (accepted; kcmp-trace serves HTTP/1.1) and `basic_auth_users`
//! (bcrypt hashes). Keys this implementation cannot honour are refused by name rather than
//! ignored, so a file never means less here than it says.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;
use sha2::Digest as _;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier},
};

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Known to exporter-toolkit, not honoured here: refused when set.
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    prefer_server_cipher_suites: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted as exporter-toolkit has it; HTTP/1.1 is served either way.
    #[serde(rename = "http2")]
    _http2: Option<bool>,
    headers: Option<serde_norway::Value>,
}

/// What a web configuration file asks for.
pub struct WebConfig {
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?
        };
        // Relative paths are relative to the file, as exporter-toolkit has them.
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match file.tls_server_config {
            Some(tls) => tls_acceptor(tls, base).map_err(invalid)?,
            None => None,
        };
        if let Some(http) = file.http_server_config
            && http.headers.is_some()
        {
            return Err(invalid(
                "http_server_config.headers is not supported by kcmp-trace".into(),
            ));
        }
        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => {
                for (user, hash) in &users {
                    if user.contains(':') {
                        return Err(invalid(format!(
                            "basic_auth_users: {user:?}: a user name cannot contain ':'"
                        )));
                    }
                    // Parsing catches a plain-text password where a hash belongs.
                    hash.parse::<bcrypt::HashParts>().map_err(|_| {
                        invalid(format!(
                            "basic_auth_users: {user:?}: not a bcrypt hash (htpasswd -nBC 10 {user})"
                        ))
                    })?;
                }
                Some(Arc::new(BasicAuth::new(users)))
            }
            _ => None,
        };
        Ok(WebConfig { tls, auth })
    }
}

fn tls_acceptor(tls: TlsFile, base: &Path) -> Result<Option<TlsAcceptor>, String> {
    for (key, set) in [
        ("cipher_suites", tls.cipher_suites.is_some()),
        ("curve_preferences", tls.curve_preferences.is_some()),
        (
            "prefer_server_cipher_suites",
            tls.prefer_server_cipher_suites.is_some(),
        ),
        ("client_allowed_sans", tls.client_allowed_sans.is_some()),
    ] {
        if set {
            return Err(format!(
                "tls_server_config.{key} is not supported by kcmp-trace (rustls chooses)"
            ));
        }
    }
    let version = |v: &Option<String>, default| match v.as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(other @ ("TLS10" | "TLS11")) => Err(format!(
            "{other} is not supported (rustls speaks TLS12 and TLS13)"
        )),
        Some(other) => Err(format!("{other:?} is not a TLS version (TLS12, TLS13)")),
    };
    let (min, max) = (
        version(&tls.min_version, 12)?,
        version(&tls.max_version, 13)?,
    );
    let resolve = |p: &PathBuf| base.join(p);
    let certs: Vec<CertificateDer<'static>> = match (&tls.cert_file, &tls.cert) {
        (Some(_), Some(_)) => return Err("give cert_file or cert, not both".into()),
        (Some(file), None) => CertificateDer::pem_file_iter(resolve(file))
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("cert_file {}: {e}", resolve(file).display()))?,
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cert: {e}"))?,
        (None, None) => Vec::new(),
    };
    let key = match (&tls.key_file, &tls.key) {
        (Some(_), Some(_)) => return Err("give key_file or key, not both".into()),
        (Some(file), None) => Some(
            PrivateKeyDer::from_pem_file(resolve(file))
                .map_err(|e| format!("key_file {}: {e}", resolve(file).display()))?,
        ),
        (None, Some(pem)) => {
            Some(PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("key: {e}"))?)
        }
        (None, None) => None,
    };
    let key = match (certs.is_empty(), key) {
        // exporter-toolkit: a tls_server_config without certificate and key serves plain HTTP.
        (true, None) => return Ok(None),
        (false, Some(key)) => key,
        (true, Some(_)) => return Err("tls_server_config has a key but no certificate".into()),
        (false, None) => return Err("tls_server_config has a certificate but no key".into()),
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let client_ca = || -> Result<Arc<RootCertStore>, String> {
        let file = tls
            .client_ca_file
            .as_ref()
            .ok_or("this client_auth_type needs client_ca_file")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(resolve(file))
            .map_err(|e| format!("client_ca_file {}: {e}", resolve(file).display()))?
        {
            roots
                .add(cert.map_err(|e| format!("client_ca_file: {e}"))?)
                .map_err(|e| format!("client_ca_file: {e}"))?;
        }
        Ok(Arc::new(roots))
    };
    let builder = match tls.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => builder.with_no_client_auth(),
        auth @ ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert") => {
            let verifier = WebPkiClientVerifier::builder_with_provider(client_ca()?, provider);
            let verifier = if auth == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
        other @ ("RequestClientCert" | "RequireAnyClientCert") => {
            return Err(format!(
                "client_auth_type {other} (certificates not verified) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
        other => return Err(format!("{other:?} is not a client_auth_type")),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Threads that check credentials (bcrypt): apart from the runtime's blocking pool and the
/// map reader, so a flood of wrong passwords delays only other credential checks.
const CHECKERS: usize = 2;
/// Checks that may wait for a checker; more are turned away (503) rather than queued.
const CHECKS_WAITING: usize = 64;

/// Why a check was not made.
#[derive(Debug, PartialEq, Eq)]
pub struct ChecksBusy;

type Check = (String, tokio::sync::oneshot::Sender<Option<String>>);

/// Basic auth checked on a bounded pool of its own.
#[derive(Clone)]
pub struct CredentialChecks {
    auth: Arc<BasicAuth>,
    queue: std::sync::mpsc::SyncSender<Check>,
}

impl CredentialChecks {
    /// Starts the checkers; they end when the last handle is dropped.
    pub fn start(auth: Arc<BasicAuth>) -> std::io::Result<CredentialChecks> {
        let (queue, checks) = std::sync::mpsc::sync_channel::<Check>(CHECKS_WAITING);
        let checks = Arc::new(Mutex::new(checks));
        for n in 0..CHECKERS {
            let (auth, checks) = (auth.clone(), checks.clone());
            std::thread::Builder::new()
                .name(format!("kcmp-auth-{n}"))
                .spawn(move || {
                    loop {
                        let next = checks.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((credentials, answer)) = next else {
                            return;
                        };
                        // The client may have gone: nobody waits for the answer then.
                        let _ = answer.send(auth.user(&credentials));
                    }
                })?;
        }
        Ok(CredentialChecks { auth, queue })
    }

    /// The user an `Authorization` header value authenticates, if any, once a checker has
    /// checked it; remembered answers come at once.
    pub async fn user(&self, authorization: &str) -> Result<Option<String>, ChecksBusy> {
        if let Some(known) = self.auth.remembered(authorization) {
            return Ok(known);
        }
        let (answer, checked) = tokio::sync::oneshot::channel();
        self.queue
            .try_send((authorization.to_owned(), answer))
            .map_err(|_| ChecksBusy)?;
        Ok(checked.await.ok().flatten())
    }
}

/// Basic auth against bcrypt hashes. bcrypt is slow on purpose (tens of ms per check), so
/// results are remembered by a digest of what was sent, as exporter-toolkit does: a
/// scraper pays once, not at every scrape.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Checked against when the user is unknown, so that an unknown user takes as long as a
    /// known one (same cost as the configured hashes).
    decoy: String,
    checked: Mutex<Remembered>,
}

/// Remembered results, at most; the oldest is forgotten to make room, so a flood of wrong
/// passwords cannot make a scraper pay bcrypt again at its next scrape.
const REMEMBERED: usize = 1024;

/// Check results by digest, oldest first out.
#[derive(Default)]
struct Remembered {
    results: HashMap<[u8; 32], bool>,
    order: VecDeque<[u8; 32]>,
}

impl Remembered {
    fn get(&self, digest: &[u8; 32]) -> Option<bool> {
        self.results.get(digest).copied()
    }

    fn insert(&mut self, digest: [u8; 32], ok: bool) {
        if self.results.insert(digest, ok).is_some() {
            return;
        }
        self.order.push_back(digest);
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.results.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.results.len()
    }
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let cost = users
            .values()
            .find_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map_or(bcrypt::DEFAULT_COST, |p| p.get_cost());
        BasicAuth {
            decoy: bcrypt::hash("", cost).unwrap_or_default(),
            users,
            checked: Mutex::new(Remembered::default()),
        }
    }

    /// The user and password an `Authorization` header value gives, and the digest its
    /// check is remembered by.
    fn credentials<'a>(&self, decoded: &'a str) -> Option<(&'a str, &'a str, [u8; 32])> {
        let (user, password) = decoded.split_once(':')?;
        let hash = self.users.get(user);
        let digest: [u8; 32] = sha2::Sha256::new()
            .chain_update(user)
            .chain_update([0])
            .chain_update(password)
            .chain_update([0])
            .chain_update(hash.map_or("", String::as_str))
            .finalize()
            .into();
        Some((user, password, digest))
    }

    /// `Basic` credentials, decoded.
    fn decode(authorization: &str) -> Option<String> {
        let encoded = authorization.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        String::from_utf8(decoded).ok()
    }

    /// What a remembered check answered (the user, or None for a refusal), without bcrypt;
    /// None when this needs a check (see [`BasicAuth::user`]).
    pub fn remembered(&self, authorization: &str) -> Option<Option<String>> {
        let Some(decoded) = Self::decode(authorization) else {
            return Some(None);
        };
        let Some((user, _, digest)) = self.credentials(&decoded) else {
            return Some(None);
        };
        let ok = self
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)?;
        Some(ok.then(|| user.to_owned()))
    }

    /// The user an `Authorization` header value authenticates, if any. Blocking (bcrypt).
    pub fn user(&self, authorization: &str) -> Option<String> {
        let decoded = Self::decode(authorization)?;
        let (user, password, digest) = self.credentials(&decoded)?;
        let hash = self.users.get(user);
        let remembered = self
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest);
        let ok = match remembered {
            Some(ok) => ok,
            None => {
                let ok = bcrypt::verify(password, hash.unwrap_or(&self.decoy)).unwrap_or(false)
                    && hash.is_some();
                self.checked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(digest, ok);
                ok
            }
        };
        ok.then(|| user.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kcmp-trace-webconfig-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn error(text: &str) -> String {
        let dir = scratch("errors");
        match WebConfig::load(&write(&dir, "web.yml", text)) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_remembers() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let dir = scratch("auth");
        let config = WebConfig::load(&write(
            &dir,
            "web.yml",
            &format!("basic_auth_users:\n  alice: '{hash}'\n"),
        ))
        .expect("load");
        assert!(config.tls.is_none());
        let auth = config.auth.expect("auth");
        let header = |user: &str, pw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
            )
        };
        assert_eq!(
            auth.user(&header("alice", "s3cret")).as_deref(),
            Some("alice")
        );
        assert_eq!(
            auth.user(&header("alice", "s3cret")).as_deref(),
            Some("alice")
        );
        assert_eq!(auth.user(&header("alice", "wrong")), None);
        assert_eq!(auth.user(&header("mallory", "s3cret")), None);
        assert_eq!(auth.user("Bearer abc"), None);
        assert_eq!(auth.user("Basic !!!"), None);
        assert_eq!(auth.checked.lock().expect("lock").len(), 3);
    }

    /// A flood of wrong passwords fills the checkers' queue and is turned away past it;
    /// what was remembered still answers at once.
    #[tokio::test]
    async fn credential_checks_are_bounded() {
        let hash = bcrypt::hash("s3cret", 8).expect("hash");
        let users = BTreeMap::from([("alice".to_owned(), hash)]);
        let checks = CredentialChecks::start(Arc::new(BasicAuth::new(users))).expect("start");
        let header = |pw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("alice:{pw}"))
            )
        };
        assert_eq!(
            checks.user(&header("s3cret")).await,
            Ok(Some("alice".to_owned()))
        );
        let flood: Vec<String> = (0..CHECKS_WAITING + 3 * CHECKERS)
            .map(|n| header(&format!("wrong{n}")))
            .collect();
        let answers = futures_util::future::join_all(flood.iter().map(|h| checks.user(h))).await;
        let busy = answers.iter().filter(|a| **a == Err(ChecksBusy)).count();
        assert!(busy >= CHECKERS, "{busy} turned away");
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Ok(None) | Err(ChecksBusy)))
        );
        assert_eq!(
            checks.user(&header("s3cret")).await,
            Ok(Some("alice".to_owned()))
        );
    }

    #[test]
    fn a_full_memory_forgets_only_its_oldest_result() {
        let mut remembered = Remembered::default();
        let digest = |n: usize| {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&n.to_le_bytes());
            d
        };
        for n in 0..REMEMBERED + 10 {
            remembered.insert(digest(n), n % 2 == 0);
        }
        assert_eq!(remembered.len(), REMEMBERED);
        assert_eq!(remembered.get(&digest(9)), None);
        assert_eq!(remembered.get(&digest(10)), Some(true));
        assert_eq!(remembered.get(&digest(REMEMBERED + 9)), Some(false));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        assert!(error("basic_auth_users:\n  bob: plaintext\n").contains("not a bcrypt hash"));
        assert!(
            error("tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n")
                .contains("cipher_suites")
        );
        assert!(error("tls_server_config:\n  min_version: TLS10\n").contains("TLS10"));
        assert!(error("no_such_key: 1\n").contains("no_such_key"));
        assert!(
            error("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
                .contains("headers")
        );
        assert!(
            error(
                "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n"
            )
            .contains("/nonexistent.pem")
        );
        assert!(error("basic_auth_users: [1, 2\n").contains("web.yml"));
    }

    #[test]
    fn an_empty_file_or_tls_section_serves_plain_http() {
        let dir = scratch("empty");
        let empty = WebConfig::load(&write(&dir, "empty.yml", "")).expect("empty");
        assert!(empty.tls.is_none() && empty.auth.is_none());
        let no_cert = WebConfig::load(&write(
            &dir,
            "tls.yml",
            "tls_server_config: {}\nhttp_server_config:\n  http2: false\n",
        ))
        .expect("tls without a certificate");
        assert!(no_cert.tls.is_none());
    }
}
