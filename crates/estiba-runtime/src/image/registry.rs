//! A client for the OCI distribution API (and Docker's registry v2): manifests and blobs,
//! with the authentication registries use: none, HTTP Basic, and the bearer-token flow of
//! Docker Hub and ECR (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::reference::Reference;
use crate::Error;

/// Manifest media types asked for, most specific first.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

impl Challenge {
    pub fn parse(h: &str) -> Option<Challenge> {
        let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut params = HashMap::new();
        // key="value" pairs separated by commas; values may hold commas inside quotes.
        let mut rest = rest.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, tail) = if let Some(q) = after.strip_prefix('"') {
                let end = q.find('"')?;
                (q[..end].to_owned(), &q[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            };
            params.insert(key, value);
            rest = tail.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        }
        Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        })
    }
}

/// How a registry client reaches registries besides the defaults (HTTPS verified against
/// Mozilla's roots, plain HTTP for loopback hosts).
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// Registry hosts (`host:port`) spoken to over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Registry hosts always spoken to over HTTPS, loopback ones included (an `estiba server`
    /// with a certificate, reached by an agent on its own machine).
    pub https: Vec<String>,
    /// More trusted CA certificates (DER), e.g. those an agent trusts for its servers.
    pub roots: Vec<Vec<u8>>,
}

pub struct RegistryClient {
    http: reqwest::Client,
    /// Registry hosts spoken to over plain HTTP besides loopback ones.
    insecure: Vec<String>,
    /// Registry hosts always spoken to over HTTPS.
    https: Vec<String>,
    /// Bearer tokens per (registry, repository).
    tokens: Mutex<HashMap<(String, String), String>>,
    /// How transient failures are retried.
    pub retry: Retry,
}

/// Retries of transient registry failures (no connection, a timeout, 5xx, 429), as the ECS
/// agent retries pulls: `attempts - 1` retries, waiting `first`, then four times longer each
/// time, at most `max`.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub retries: u32,
    pub first: std::time::Duration,
    pub max: std::time::Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { retries: 3, first: std::time::Duration::from_millis(250), max: std::time::Duration::from_secs(2) }
    }
}

impl Retry {
    fn wait(&self, retry: u32) -> std::time::Duration {
        self.first.saturating_mul(4u32.saturating_pow(retry)).min(self.max)
    }
}

/// Whether a registry's answer may be different if asked again.
fn transient_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

impl RegistryClient {
    pub fn new(insecure: Vec<String>) -> Result<Self, Error> {
        Self::with_transport(Transport { insecure, ..Transport::default() })
    }

    pub fn with_transport(t: Transport) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("estiba/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10));
        for der in &t.roots {
            let cert = reqwest::Certificate::from_der(der)
                .map_err(|e| Error::Pull(format!("a trusted CA certificate does not decode: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| Error::Pull(format!("building the HTTP client: {e}")))?;
        Ok(RegistryClient {
            http,
            insecure: t.insecure,
            https: t.https,
            tokens: Mutex::new(HashMap::new()),
            retry: Retry::default(),
        })
    }

    fn base(&self, r: &Reference) -> String {
        let plain = !self.https.iter().any(|h| h == &r.registry)
            && (r.is_loopback() || self.insecure.iter().any(|h| h == &r.registry));
        format!("{}://{}/v2/{}", if plain { "http" } else { "https" }, r.registry, r.repository)
    }

    /// GET `<base>/<path>`, answering one authentication challenge if the registry asks, and
    /// retrying transient failures ([`Retry`]); when they last, the error says how many times.
    pub async fn get(
        &self,
        r: &Reference,
        path: &str,
        accept: &[&str],
        creds: Option<&Credentials>,
    ) -> Result<reqwest::Response, Error> {
        let mut retries = 0;
        loop {
            let why = match self.get_once(r, path, accept, creds).await {
                Ok(resp) if transient_status(resp.status()) => {
                    format!("{}: {path}: HTTP {}", r.registry, resp.status())
                }
                Ok(resp) => return Ok(resp),
                Err((e, true)) => e.to_string(),
                Err((e, false)) => return Err(e),
            };
            if retries == self.retry.retries {
                return Err(Error::Transient { retries, message: why });
            }
            tracing::debug!(registry = %r.registry, retry = retries + 1, error = %why, "retrying a registry request");
            tokio::time::sleep(self.retry.wait(retries)).await;
            retries += 1;
        }
    }

    /// One GET (with its authentication round); the error says whether it may pass.
    async fn get_once(
        &self,
        r: &Reference,
        path: &str,
        accept: &[&str],
        creds: Option<&Credentials>,
    ) -> Result<reqwest::Response, (Error, bool)> {
        let net = |e: reqwest::Error| {
            let transient = e.is_connect() || e.is_timeout() || e.is_request();
            (net_error(r, e), transient)
        };
        let fatal = |e: Error| (e, false);
        let url = format!("{}/{path}", self.base(r));
        let mut headers = HeaderMap::new();
        if !accept.is_empty() {
            headers.insert(ACCEPT, HeaderValue::from_str(&accept.join(", ")).unwrap());
        }
        let key = (r.registry.clone(), r.repository.clone());
        let cached = self.tokens.lock().unwrap().get(&key).cloned();
        let send = |auth: Option<String>| {
            let mut req = self.http.get(&url).headers(headers.clone());
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            req.send()
        };
        let resp = send(cached.map(|t| format!("Bearer {t}"))).await.map_err(net)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(Challenge::parse);
        let auth = match challenge {
            Some(Challenge::Basic) => match creds {
                Some(c) => basic(c),
                None => {
                    return Err(fatal(Error::Pull(format!(
                        "{}: the registry requires credentials (401 Unauthorized)",
                        r.registry
                    ))))
                }
            },
            Some(Challenge::Bearer { realm, service, scope }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", r.repository));
                let token = self.token(r, &realm, service.as_deref(), &scope, creds).await?;
                self.tokens.lock().unwrap().insert(key, token.clone());
                format!("Bearer {token}")
            }
            None => {
                return Err(fatal(Error::Pull(format!("{}: 401 Unauthorized without a usable challenge", r.registry))))
            }
        };
        let resp = send(Some(auth)).await.map_err(net)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(fatal(Error::Pull(format!(
                "{}: access denied to {} (401 Unauthorized)",
                r.registry, r.repository
            ))));
        }
        Ok(resp)
    }

    /// A bearer token from the registry's token service; the error says whether it may pass
    /// (no connection, 5xx, 429), as [`RegistryClient::get_once`]'s do.
    async fn token(
        &self,
        r: &Reference,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, (Error, bool)> {
        let mut req = self.http.get(realm).query(&[("scope", scope)]);
        if let Some(s) = service {
            req = req.query(&[("service", s)]);
        }
        if let Some(c) = creds {
            req = req.header(AUTHORIZATION, basic(c));
        }
        let resp = req.send().await.map_err(|e| {
            let transient = e.is_connect() || e.is_timeout() || e.is_request();
            (net_error(r, e), transient)
        })?;
        if !resp.status().is_success() {
            let message = format!("{}: the token service at {realm} answered {}", r.registry, resp.status());
            return Err((Error::Pull(message), transient_status(resp.status())));
        }
        let fatal = |m: String| (Error::Pull(m), false);
        let v: serde_json::Value =
            resp.json().await.map_err(|e| fatal(format!("{}: bad token answer: {e}", r.registry)))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| fatal(format!("{}: the token service answered no token", r.registry)))
    }
}

fn basic(c: &Credentials) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password)))
}

fn net_error(r: &Reference, e: reqwest::Error) -> Error {
    let mut msg = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Error::Pull(format!("{}: {msg}", r.registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_follows_the_transport() {
        let r = |s: &str| Reference::parse(s).unwrap();
        let plain = RegistryClient::new(vec!["10.0.0.1:4566".into()]).unwrap();
        assert!(plain.base(&r("127.0.0.1:4566/web:1")).starts_with("http://127.0.0.1:4566/v2/web"));
        assert!(plain.base(&r("10.0.0.1:4566/web:1")).starts_with("http://"));
        assert!(plain.base(&r("10.0.0.2:4566/web:1")).starts_with("https://"));
        let tls =
            RegistryClient::with_transport(Transport { https: vec!["127.0.0.1:4566".into()], ..Transport::default() })
                .unwrap();
        assert!(tls.base(&r("127.0.0.1:4566/web:1")).starts_with("https://127.0.0.1:4566/v2/web"));
        assert!(tls.base(&r("127.0.0.1:5000/web:1")).starts_with("http://"));
        let bad =
            RegistryClient::with_transport(Transport { roots: vec![b"not der".to_vec()], ..Transport::default() });
        assert!(bad.is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(Challenge::parse("Basic realm=\"Registry\""), Some(Challenge::Basic));
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            }
        );
        assert!(Challenge::parse("Negotiate xyz").is_none());
        assert!(Challenge::parse("Bearer service=x").is_none(), "no realm");
    }
}
