//! The OCI distribution API (`/v2/`): ECR's data plane on the server's listener.
//!
//! Bytes live in [`estiba_registry::BlobStore`]; which repository holds which blob, image and
//! tag lives in the store (see [`estiba_core::ecr`]), so the ECR API and `/v2/` see one truth.
//! A repository must exist (CreateRepository) before anything is pushed to it, as in ECR.
//!
//! Blob bodies stream: uploads go frame by frame through a hasher into a file on a blocking
//! thread, downloads are read in 1 MiB chunks on a blocking thread; neither is held whole in
//! memory.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use estiba_core::ecr::{self, BlobLink, ImageDoc, RepoDoc, TagDoc};
use estiba_core::Scope;
use estiba_registry::manifest::Manifest;
use estiba_registry::{names, BlobStore, Code, Digest, RegistryError, Upload};
use estiba_store::{Compare, Op, Txn};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{full, Body};
use crate::view::State;
use crate::Server;

/// How the registry checks callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may push and pull (the default, for local development).
    Open,
    /// A token from GetAuthorizationToken is required (HTTP basic, user `AWS`).
    Token,
}

/// The registry's state beside the store: blobs on disk and uploads in progress.
pub struct Registry {
    pub blobs: Arc<BlobStore>,
    uploads: Mutex<HashMap<String, Slot>>,
    /// `host:port` put in `repositoryUri`.
    pub host: String,
    pub auth: Auth,
    key: [u8; 32],
    /// Held shared while a blob is committed and linked, exclusively while garbage is
    /// collected, so collection never removes a blob a push is about to use.
    pub gc_lock: tokio::sync::RwLock<()>,
}

struct Slot {
    repo: String,
    scope: Scope,
    /// `None` while a request writes to it.
    upload: Option<Upload>,
    size: u64,
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl Registry {
    /// Opens the blob store under `root` and the token key beside it (created on first use).
    pub fn open(root: &std::path::Path, host: String, auth: Auth) -> std::io::Result<Registry> {
        let blobs = Arc::new(BlobStore::open(root)?);
        let key_path = root.join("token.key");
        let key = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k.try_into().unwrap(),
            _ => {
                let mut k = [0u8; 32];
                k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                let tmp = key_path.with_extension("tmp");
                std::fs::write(&tmp, k)?;
                std::fs::rename(&tmp, &key_path)?;
                k
            }
        };
        Ok(Registry { blobs, uploads: Mutex::new(HashMap::new()), host, auth, key, gc_lock: Default::default() })
    }

    /// HMAC-SHA256 of `data` under the server's token key, hex.
    pub fn sign(&self, data: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// A password for `docker login` (user `AWS`), good until `expires` (seconds).
    pub fn password(&self, scope: &Scope, expires: u64) -> String {
        ecr::token::password(&scope.account, &scope.region, expires, |b| self.sign(b))
    }
}

/// An error in the spec's JSON shape.
fn error(e: &RegistryError) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": e.code.as_str(), "message": e.message, "detail": {}}]});
    let mut r = Response::new(full(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn err(code: Code, message: impl Into<String>) -> RegistryError {
    RegistryError::new(code, message)
}

fn respond(status: StatusCode, headers: &[(&'static str, String)], body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

fn empty() -> Body {
    full(Bytes::new())
}

/// What a `/v2/` path asks for.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Uploads(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        return Some(Route::Uploads(name));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Some(Route::Upload(name, id));
    }
    if let Some((name, d)) = rest.rsplit_once("/blobs/") {
        return Some(Route::Blob(name, d));
    }
    if let Some((name, r)) = rest.rsplit_once("/manifests/") {
        return Some(Route::Manifest(name, r));
    }
    if let Some((name, d)) = rest.rsplit_once("/referrers/") {
        return Some(Route::Referrers(name, d));
    }
    None
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn handle(server: &Server, reg: &Registry, req: Request<Incoming>) -> Response<Body> {
    let mut resp = match serve(server, reg, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.code == Code::Internal {
                tracing::error!(code = %e.code, message = %e.message, "registry request failed");
            }
            let mut r = error(&e);
            if e.code == Code::Unauthorized {
                let challenge = format!("Basic realm=\"{}\",service=\"ecr.amazonaws.com\"", reg.host);
                r.headers_mut().insert("WWW-Authenticate", HeaderValue::from_str(&challenge).unwrap());
            }
            r
        }
    };
    resp.headers_mut().insert("Docker-Distribution-API-Version", HeaderValue::from_static("registry/2.0"));
    resp
}

/// The caller's scope, from a token when one is given (or required).
fn authorize(server: &Server, reg: &Registry, req: &Request<Incoming>) -> Result<Scope> {
    use base64::Engine as _;
    let default = || Scope::new(server.config.account_id.clone(), server.config.default_region.clone());
    let header = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let basic = header.and_then(|h| h.strip_prefix("Basic ")).and_then(|b| {
        let raw = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (_, password) = s.split_once(':')?;
        Some(password.to_owned())
    });
    let now = crate::now() as u64;
    let verified = basic.as_deref().and_then(|p| ecr::token::verify(p, now, |b| reg.sign(b)));
    match (reg.auth, verified, basic.is_some()) {
        (_, Some((account, region)), _) => Ok(Scope::new(account, region)),
        (Auth::Open, None, _) => Ok(default()),
        (Auth::Token, None, given) => Err(err(
            Code::Unauthorized,
            if given {
                "the authorization token is invalid or expired; get a new one with `aws ecr get-login-password`"
            } else {
                "authentication required: `aws ecr get-login-password | docker login --username AWS --password-stdin`"
            },
        )),
    }
}

async fn serve(server: &Server, reg: &Registry, req: Request<Incoming>) -> Result<Response<Body>> {
    let path = req.uri().path().to_owned();
    let route = route(&path).ok_or_else(|| err(Code::NameInvalid, format!("no registry route for {path}")))?;
    let scope = authorize(server, reg, &req)?;
    let method = req.method().clone();
    let head = method == Method::HEAD;
    match route {
        Route::Base => Ok(respond(StatusCode::OK, &[("content-type", "application/json".into())], full("{}".into()))),
        Route::Catalog => catalog(server, &scope, &req),
        Route::Tags(name) => {
            repo(server, &scope, name)?;
            tags_list(server, &scope, name, &req)
        }
        Route::Blob(name, d) => {
            let d = Digest::parse(d)?;
            repo(server, &scope, name)?;
            match method {
                Method::GET | Method::HEAD => get_blob(server, reg, &scope, name, &d, &req, head).await,
                Method::DELETE => delete_blob(server, &scope, name, &d).await,
                _ => Err(err(Code::Unsupported, format!("{method} is not allowed on a blob"))),
            }
        }
        Route::Uploads(name) if method == Method::POST => {
            repo(server, &scope, name)?;
            start_upload(server, reg, &scope, name, req).await
        }
        Route::Upload(name, id) => {
            repo(server, &scope, name)?;
            match method {
                Method::GET => upload_status(reg, name, id),
                Method::PATCH => patch_upload(reg, name, id, req).await,
                Method::PUT => finish_upload(server, reg, name, id, req).await,
                Method::DELETE => {
                    let gone = reg.uploads.lock().unwrap().remove(id).filter(|s| s.repo == name);
                    match gone {
                        Some(_) => Ok(respond(StatusCode::NO_CONTENT, &[], empty())),
                        None => Err(err(Code::BlobUploadUnknown, format!("upload {id} is not in progress"))),
                    }
                }
                _ => Err(err(Code::Unsupported, format!("{method} is not allowed on an upload"))),
            }
        }
        Route::Manifest(name, reference) => {
            repo(server, &scope, name)?;
            match method {
                Method::GET | Method::HEAD => get_manifest(server, reg, &scope, name, reference, head).await,
                Method::PUT => put_manifest(server, reg, &scope, name, reference, req).await,
                Method::DELETE => delete_manifest(server, &scope, name, reference).await,
                _ => Err(err(Code::Unsupported, format!("{method} is not allowed on a manifest"))),
            }
        }
        Route::Referrers(name, d) => {
            let d = Digest::parse(d)?;
            repo(server, &scope, name)?;
            referrers(server, &scope, name, &d, &req)
        }
        Route::Uploads(_) => Err(err(Code::Unsupported, format!("{method} is not allowed here"))),
    }
}

/// The repository, which must exist.
fn repo(server: &Server, scope: &Scope, name: &str) -> Result<RepoDoc> {
    names::check_repository(name)?;
    let st = server.view.read();
    st.ecr_repos.get(&ecr::repo_key(scope, name)).map(|d| d.value.clone()).ok_or_else(|| {
        err(
            Code::NameUnknown,
            format!("The repository with name '{name}' does not exist in the registry with id '{}'", scope.account),
        )
    })
}

/// `n` and `last` pagination over sorted names, with the `Link` header for the next page.
fn paginate(all: Vec<String>, req: &Request<Incoming>, base: &str) -> Result<(Vec<String>, Option<String>)> {
    let n = match query(req, "n") {
        Some(v) => Some(v.parse::<usize>().map_err(|_| err(Code::Unsupported, format!("n={v} is not a number")))?),
        None => None,
    };
    let last = query(req, "last");
    let mut items: Vec<String> =
        all.into_iter().filter(|x| last.as_ref().is_none_or(|l| x.as_str() > l.as_str())).collect();
    let mut link = None;
    if let Some(n) = n {
        if items.len() > n {
            items.truncate(n);
            if let Some(l) = items.last() {
                link = Some(format!("<{base}?n={n}&last={l}>; rel=\"next\""));
            }
        }
    }
    Ok((items, link))
}

fn json_with_link(value: serde_json::Value, link: Option<String>) -> Response<Body> {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(l) = link {
        headers.push(("link", l));
    }
    respond(StatusCode::OK, &headers, full(Bytes::from(value.to_string())))
}

fn catalog(server: &Server, scope: &Scope, req: &Request<Incoming>) -> Result<Response<Body>> {
    let prefix = ecr::repos_prefix(scope);
    let all: Vec<String> = {
        let st = server.view.read();
        State::range(&st.ecr_repos, &prefix).map(|d| d.key[prefix.len()..].to_owned()).collect()
    };
    let (repos, link) = paginate(all, req, "/v2/_catalog")?;
    Ok(json_with_link(serde_json::json!({ "repositories": repos }), link))
}

fn tags_list(server: &Server, scope: &Scope, name: &str, req: &Request<Incoming>) -> Result<Response<Body>> {
    let prefix = ecr::tags_of_repo(scope, name);
    let all: Vec<String> = {
        let st = server.view.read();
        State::range(&st.ecr_tags, &prefix).map(|d| d.key[prefix.len()..].to_owned()).collect()
    };
    let (tags, link) = paginate(all, req, &format!("/v2/{name}/tags/list"))?;
    Ok(json_with_link(serde_json::json!({ "name": name, "tags": tags }), link))
}

/// Whether `digest` is a blob of repository `name` (pushed to it, or part of one of its images).
fn blob_in_repo(st: &State, scope: &Scope, name: &str, d: &Digest) -> bool {
    st.ecr_blobs.contains_key(&ecr::blob_key(scope, name, d.as_str()))
        || st.ecr_images.contains_key(&ecr::image_key(scope, name, d.as_str()))
}

async fn get_blob(
    server: &Server,
    reg: &Registry,
    scope: &Scope,
    name: &str,
    d: &Digest,
    req: &Request<Incoming>,
    head: bool,
) -> Result<Response<Body>> {
    let unknown = || err(Code::BlobUnknown, format!("blob {d} is not in repository {name}"));
    if head {
        renew_link(server, reg, scope, name, d).await?;
    }
    if !blob_in_repo(&server.view.read(), scope, name, d) {
        return Err(unknown());
    }
    let size = match reg.blobs.stat(d) {
        Some(size) => size,
        None => local_copy(server, reg, d).await?.ok_or_else(unknown)?,
    };
    let range = match req.headers().get(hyper::header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => {
            Some(parse_range(r, size).ok_or_else(|| err(Code::RangeInvalid, format!("range {r} is not satisfiable")))?)
        }
        None => None,
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let len = if size == 0 { 0 } else { end - start + 1 };
    let mut headers = vec![
        ("content-type", "application/octet-stream".to_owned()),
        ("docker-content-digest", d.to_string()),
        ("content-length", len.to_string()),
        ("accept-ranges", "bytes".to_owned()),
        ("etag", format!("\"{d}\"")),
    ];
    let status = if range.is_some() {
        headers.push(("content-range", format!("bytes {start}-{end}/{size}")));
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if head {
        let mut r = respond(status, &headers, empty());
        // HEAD carries the length of what GET would send.
        r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
        return Ok(r);
    }
    let file = reg.blobs.open_blob(d)?;
    Ok(respond(status, &headers, file_body(file, start, len)))
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive (start, end).
fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size.checked_sub(1)?)),
    };
    (start <= end && end < size).then_some((start, end))
}

/// A body that streams `len` bytes of `file` from `start`, read on a blocking thread.
pub(crate) fn file_body(mut file: std::fs::File, start: u64, len: u64) -> Body {
    const CHUNK: u64 = 1 << 20;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let pool = BufPool::default();
        let mut left = len;
        while left > 0 {
            let want = left.min(CHUNK) as usize;
            let mut buf = pool.take(want);
            match file.read(&mut buf[..want]) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::ErrorKind::UnexpectedEof.into()));
                    return;
                }
                Ok(n) => {
                    left -= n as u64;
                    let chunk = Bytes::from_owner(Pooled { buf, len: n, pool: pool.clone() });
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    crate::body::streamed(rx)
}

/// The read buffers of one download, handed back once hyper has written them. Without it every
/// megabyte sent was a fresh allocation, and with the allocator returning freed memory to the
/// kernel at once (main.rs) each one was faulted in again: half the GET throughput.
#[derive(Clone, Default)]
struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufPool {
    /// A buffer of at least `len` bytes; at most channel capacity + 2 ever exist.
    fn take(&self, len: usize) -> Vec<u8> {
        match self.0.lock().unwrap().pop() {
            Some(b) if b.len() >= len => b,
            _ => vec![0; len],
        }
    }
}

/// A chunk of a pooled buffer, given to hyper as `Bytes`.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: BufPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.0.lock().unwrap().push(std::mem::take(&mut self.buf));
    }
}

async fn delete_blob(server: &Server, scope: &Scope, name: &str, d: &Digest) -> Result<Response<Body>> {
    let key = ecr::blob_key(scope, name, d.as_str());
    let deleted = server
        .transact::<_, crate::WriteError>(|st| {
            let Some(doc) = st.ecr_blobs.get(&key) else { return Ok((Txn::default(), false)) };
            let txn = Txn { compares: vec![Compare::mod_revision(&key, doc.rev)], ops: vec![Op::delete(&key)] };
            Ok((txn, true))
        })
        .await
        .map_err(|e| err(Code::Internal, e.to_string()))?;
    if !deleted {
        return Err(err(Code::BlobUnknown, format!("blob {d} is not in repository {name}")));
    }
    // The bytes stay until garbage collection finds no repository and no image using them.
    Ok(respond(StatusCode::ACCEPTED, &[("content-length", "0".into())], empty()))
}

/// A HEAD is how clients (docker, podman, skopeo) decide not to upload a blob again before
/// they name it in a manifest. A link the collector may soon remove (older than half the grace
/// period) is renewed here, so the manifest that follows still finds it.
/// Under the GC lock: a collection either sees the renewed link or has removed it already, and
/// then the HEAD answers BLOB_UNKNOWN and the client uploads the blob again.
async fn renew_link(server: &Server, reg: &Registry, scope: &Scope, name: &str, d: &Digest) -> Result<()> {
    let key = ecr::blob_key(scope, name, d.as_str());
    let half = server.config.registry_gc_grace.as_secs_f64() / 2.0;
    let stale = |st: &State| st.ecr_blobs.get(&key).is_some_and(|l| crate::now() - l.value.pushed_at > half);
    if !stale(&server.view.read()) {
        return Ok(());
    }
    let _g = reg.gc_lock.read().await;
    server
        .transact::<_, crate::WriteError>(|st| {
            let Some(doc) = st.ecr_blobs.get(&key) else { return Ok((Txn::default(), ())) };
            let link = BlobLink { pushed_at: crate::now(), ..doc.value.clone() };
            let value = Bytes::from(serde_json::to_vec(&link).unwrap());
            Ok((Txn { compares: vec![Compare::mod_revision(&key, doc.rev)], ops: vec![Op::put(&key, value)] }, ()))
        })
        .await
        .map_err(|e| err(Code::Internal, e.to_string()))
}

/// Records that `name` holds blob `d` (after an upload or a mount).
async fn link_blob(server: &Server, scope: &Scope, name: &str, d: &Digest, size: u64) -> Result<()> {
    let key = ecr::blob_key(scope, name, d.as_str());
    let link = BlobLink { size: size as i64, pushed_at: crate::now() };
    let value = Bytes::from(serde_json::to_vec(&link).unwrap());
    let repo_key = ecr::repo_key(scope, name);
    let ok = server
        .transact::<_, crate::WriteError>(|st| {
            let Some(r) = st.ecr_repos.get(&repo_key) else { return Ok((Txn::default(), false)) };
            let txn = Txn {
                compares: vec![Compare::mod_revision(&repo_key, r.rev)],
                ops: vec![Op::put(&key, value.clone())],
            };
            Ok((txn, true))
        })
        .await
        .map_err(|e| err(Code::Internal, e.to_string()))?;
    if ok {
        Ok(())
    } else {
        Err(err(Code::NameUnknown, format!("repository {name} was deleted during the upload")))
    }
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn created_blob(name: &str, d: &Digest) -> Response<Body> {
    respond(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{d}")),
            ("docker-content-digest", d.to_string()),
            ("content-length", "0".into()),
        ],
        empty(),
    )
}

async fn start_upload(
    server: &Server,
    reg: &Registry,
    scope: &Scope,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    // Cross-repository mount: answered 201 when the blob is in `from`, else a plain upload.
    if let (Some(mount), from) = (query(&req, "mount"), query(&req, "from")) {
        let d = Digest::parse(&mount)?;
        let found = {
            let st = server.view.read();
            match from.as_deref() {
                Some(from) => blob_in_repo(&st, scope, from, &d),
                None => false,
            }
        };
        if found {
            if let Some(size) = reg.blobs.stat(&d) {
                let _g = reg.gc_lock.read().await;
                link_blob(server, scope, name, &d, size).await?;
                return Ok(created_blob(name, &d));
            }
        }
    }
    let upload = tokio::task::block_in_place(|| reg.blobs.begin())?;
    let id = upload.id().to_owned();
    // Monolithic: POST with ?digest= and the whole blob as the body.
    if let Some(digest) = query(&req, "digest") {
        let d = Digest::parse(&digest)?;
        let (upload, r) = pump(upload, req.into_body()).await;
        r?;
        return commit(server, reg, scope, name, upload, &d).await;
    }
    reg.uploads
        .lock()
        .unwrap()
        .insert(id.clone(), Slot { repo: name.to_owned(), scope: scope.clone(), upload: Some(upload), size: 0 });
    Ok(respond(
        StatusCode::ACCEPTED,
        &[
            ("location", upload_location(name, &id)),
            ("docker-upload-uuid", id.clone()),
            ("range", "0-0".into()),
            ("content-length", "0".into()),
        ],
        empty(),
    ))
}

fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn upload_status(reg: &Registry, name: &str, id: &str) -> Result<Response<Body>> {
    let uploads = reg.uploads.lock().unwrap();
    let slot = uploads.get(id).filter(|s| s.repo == name).ok_or_else(|| unknown_upload(id))?;
    Ok(respond(
        StatusCode::NO_CONTENT,
        &[
            ("location", upload_location(name, id)),
            ("range", range_header(slot.size)),
            ("docker-upload-uuid", id.to_owned()),
            ("content-length", "0".into()),
        ],
        empty(),
    ))
}

fn unknown_upload(id: &str) -> RegistryError {
    err(Code::BlobUploadUnknown, format!("upload {id} is not in progress"))
}

/// Takes the upload out of its slot for one request; `Content-Range` must continue it.
fn take(reg: &Registry, name: &str, id: &str, req: &Request<Incoming>) -> Result<(Upload, Scope)> {
    let mut uploads = reg.uploads.lock().unwrap();
    let slot = uploads.get_mut(id).filter(|s| s.repo == name).ok_or_else(|| unknown_upload(id))?;
    if let Some(cr) = req.headers().get("content-range").and_then(|v| v.to_str().ok()) {
        let start = cr.trim_start_matches("bytes ").split('-').next().and_then(|s| s.trim().parse::<u64>().ok());
        if start != Some(slot.size) {
            return Err(err(
                Code::RangeInvalid,
                format!("Content-Range {cr} does not continue the upload, which holds {} bytes", slot.size),
            ));
        }
    }
    let upload = slot
        .upload
        .take()
        .ok_or_else(|| err(Code::BlobUploadInvalid, format!("upload {id} is busy with another request")))?;
    Ok((upload, slot.scope.clone()))
}

fn put_back(reg: &Registry, id: &str, upload: Upload) -> u64 {
    let size = upload.size();
    if let Some(slot) = reg.uploads.lock().unwrap().get_mut(id) {
        slot.size = size;
        slot.upload = Some(upload);
    }
    size
}

/// Streams a request body into `upload` on a blocking thread; returns the upload either way.
async fn pump(mut upload: Upload, mut body: Incoming) -> (Upload, Result<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let mut r = Ok(());
        while let Some(chunk) = rx.blocking_recv() {
            if r.is_ok() {
                r = upload.write(&chunk);
            }
        }
        (upload, r)
    });
    let mut read_err = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if tx.send(data).await.is_err() {
                        break;
                    }
                }
            }
            Err(e) => {
                read_err = Some(err(Code::BlobUploadInvalid, format!("the upload body ended early: {e}")));
                break;
            }
        }
    }
    drop(tx);
    let (upload, r) = writer.await.expect("upload writer panicked");
    (upload, read_err.map_or(r, Err))
}

async fn patch_upload(reg: &Registry, name: &str, id: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    let (upload, _) = take(reg, name, id, &req)?;
    let (upload, r) = pump(upload, req.into_body()).await;
    let size = put_back(reg, id, upload);
    r?;
    Ok(respond(
        StatusCode::ACCEPTED,
        &[
            ("location", upload_location(name, id)),
            ("range", range_header(size)),
            ("docker-upload-uuid", id.to_owned()),
            ("content-length", "0".into()),
        ],
        empty(),
    ))
}

async fn finish_upload(
    server: &Server,
    reg: &Registry,
    name: &str,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let digest =
        query(&req, "digest").ok_or_else(|| err(Code::DigestInvalid, "the digest query parameter is required"))?;
    let d = Digest::parse(&digest)?;
    let (upload, scope) = take(reg, name, id, &req)?;
    let (upload, r) = pump(upload, req.into_body()).await;
    if let Err(e) = r {
        put_back(reg, id, upload);
        return Err(e);
    }
    reg.uploads.lock().unwrap().remove(id);
    commit(server, reg, &scope, name, upload, &d).await
}

/// Verifies and stores an upload, then links it to the repository. A mismatch stores nothing.
async fn commit(
    server: &Server,
    reg: &Registry,
    scope: &Scope,
    name: &str,
    upload: Upload,
    d: &Digest,
) -> Result<Response<Body>> {
    let _g = reg.gc_lock.read().await;
    let expected = d.clone();
    let size = tokio::task::spawn_blocking(move || upload.commit(&expected)).await.expect("commit panicked")?;
    link_blob(server, scope, name, d, size).await?;
    Ok(created_blob(name, d))
}

/// Resolves a tag or digest to a manifest digest in `name`.
fn resolve(st: &State, scope: &Scope, name: &str, reference: &str) -> Result<Digest> {
    let unknown = || err(Code::ManifestUnknown, format!("manifest {reference} is not in repository {name}"));
    if Digest::is_digest_like(reference) {
        let d = Digest::parse(reference)?;
        st.ecr_images.get(&ecr::image_key(scope, name, d.as_str())).ok_or_else(unknown)?;
        Ok(d)
    } else {
        names::check_tag(reference)?;
        let t = st.ecr_tags.get(&ecr::tag_key(scope, name, reference)).ok_or_else(unknown)?;
        Digest::parse(&t.value.digest)
    }
}

/// Fetches blob `d`, which a repository holds (the view says so) but this server's disk does
/// not, from the other servers sharing the state ([`crate::peers::fetch_blob`]); its size, or
/// `None` when no server has it.
pub async fn local_copy(server: &Server, reg: &Registry, d: &Digest) -> Result<Option<u64>> {
    if let Some(size) = reg.blobs.stat(d) {
        return Ok(Some(size));
    }
    match crate::peers::fetch_blob(server, reg, d).await {
        Ok(size) => Ok(Some(size)),
        Err(crate::peers::FetchError::Missing(_)) => Ok(None),
        Err(e) => Err(err(Code::Internal, e.to_string())),
    }
}

async fn get_manifest(
    server: &Server,
    reg: &Registry,
    scope: &Scope,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response<Body>> {
    let (d, media_type) = {
        let st = server.view.read();
        let d = resolve(&st, scope, name, reference)?;
        let img = st.ecr_images.get(&ecr::image_key(scope, name, d.as_str())).map(|i| i.value.media_type.clone());
        (d, img.unwrap_or_default())
    };
    local_copy(server, reg, &d).await?;
    let body = reg.blobs.read(&d)?;
    let headers = [
        ("content-type", media_type),
        ("docker-content-digest", d.to_string()),
        ("etag", format!("\"{d}\"")),
        ("content-length", body.len().to_string()),
    ];
    if head {
        return Ok(respond(StatusCode::OK, &headers, empty()));
    }
    Ok(respond(StatusCode::OK, &headers, full(Bytes::from(body))))
}

/// Checks a manifest against the repository: its blobs (or, for an index, its manifests) must
/// be in it. Returns the image document to store.
pub fn check_manifest(
    st: &State,
    scope: &Scope,
    name: &str,
    m: &Manifest,
    d: &Digest,
    len: usize,
    now: f64,
) -> Result<ImageDoc> {
    for b in m.blobs() {
        let bd = Digest::parse(&b.digest)?;
        if !blob_in_repo(st, scope, name, &bd) {
            return Err(err(
                Code::ManifestBlobUnknown,
                format!("blob {bd} is not in repository {name}; push it first"),
            ));
        }
    }
    for c in &m.manifests {
        if !st.ecr_images.contains_key(&ecr::image_key(scope, name, &c.digest)) {
            return Err(err(
                Code::ManifestBlobUnknown,
                format!("manifest {} listed by the index is not in repository {name}; push it first", c.digest),
            ));
        }
    }
    Ok(ImageDoc {
        digest: d.to_string(),
        media_type: m.media_type.clone(),
        artifact_type: m.artifact_type.clone(),
        size: m.image_size(),
        manifest_size: len as i64,
        pushed_at: now,
        blobs: m.blobs().map(|b| b.digest.clone()).collect(),
        manifests: m.manifests.iter().map(|c| c.digest.clone()).collect(),
        subject: m.subject.as_ref().map(|s| s.digest.clone()),
        annotations: m.annotations.clone(),
    })
}

/// Why a manifest could not be stored.
pub enum PutError {
    Registry(RegistryError),
    /// The tag exists on another image and the repository is immutable.
    TagImmutable(String),
}

impl From<RegistryError> for PutError {
    fn from(e: RegistryError) -> Self {
        PutError::Registry(e)
    }
}

/// Stores a manifest (already in the blob store as `d`) in `name`, tagged `tag` if given:
/// the one write path shared by `PUT /v2/…/manifests/…` and the ECR PutImage operation.
/// Returns whether the image or tag is new.
pub async fn store_image(
    server: &Server,
    scope: &Scope,
    name: &str,
    m: &Manifest,
    d: &Digest,
    len: usize,
    tag: Option<&str>,
) -> Result<bool, PutError> {
    let repo_key = ecr::repo_key(scope, name);
    let image_key = ecr::image_key(scope, name, d.as_str());
    let now = crate::now();
    let outcome = server
        .transact::<_, crate::WriteError>(|st| {
            let run = || -> Result<(Txn, bool), PutError> {
                let repo = st.ecr_repos.get(&repo_key).ok_or_else(|| {
                    err(Code::NameUnknown, format!("The repository with name '{name}' does not exist"))
                })?;
                let mut txn = Txn { compares: vec![Compare::mod_revision(&repo_key, repo.rev)], ops: vec![] };
                let existing = st.ecr_images.get(&image_key);
                let mut changed = false;
                if existing.is_none() {
                    let doc = check_manifest(st, scope, name, m, d, len, now)?;
                    // The blobs it uses must still be linked when this commits (see gc).
                    for b in &doc.blobs {
                        let k = ecr::blob_key(scope, name, b);
                        if let Some(l) = st.ecr_blobs.get(&k) {
                            txn.compares.push(Compare::mod_revision(&k, l.rev));
                        }
                    }
                    txn.compares.push(Compare::mod_revision(&image_key, 0));
                    txn.ops.push(Op::put(&image_key, Bytes::from(serde_json::to_vec(&doc).unwrap())));
                    changed = true;
                }
                if let Some(tag) = tag {
                    let tk = ecr::tag_key(scope, name, tag);
                    match st.ecr_tags.get(&tk) {
                        Some(t) if t.value.digest == d.as_str() => {}
                        Some(t) => {
                            if repo.value.tag_is_immutable(tag) {
                                return Err(PutError::TagImmutable(tag.to_owned()));
                            }
                            txn.compares.push(Compare::mod_revision(&tk, t.rev));
                            changed = true;
                        }
                        None => {
                            txn.compares.push(Compare::mod_revision(&tk, 0));
                            changed = true;
                        }
                    }
                    let doc = TagDoc { digest: d.to_string(), pushed_at: now };
                    if changed {
                        txn.ops.push(Op::put(&tk, Bytes::from(serde_json::to_vec(&doc).unwrap())));
                    }
                }
                Ok((txn, changed))
            };
            Ok(match run() {
                Ok((txn, changed)) => (txn, Ok(changed)),
                Err(e) => (Txn::default(), Err(e)),
            })
        })
        .await
        .map_err(|e| PutError::Registry(err(Code::Internal, e.to_string())))?;
    outcome
}

async fn put_manifest(
    server: &Server,
    reg: &Registry,
    scope: &Scope,
    name: &str,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = crate::body::read(req, estiba_registry::manifest::MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| err(Code::SizeInvalid, e.message))?;
    let m = Manifest::parse(&body, content_type.as_deref())?;
    let d = Digest::of(&body);
    let tag = if Digest::is_digest_like(reference) {
        let given = Digest::parse(reference)?;
        if given != d {
            return Err(err(Code::DigestInvalid, format!("the manifest's digest is {d}, not {given}")));
        }
        None
    } else {
        names::check_tag(reference)?;
        Some(reference)
    };
    {
        // Check before writing the bytes, so a refused manifest stores nothing.
        let st = server.view.read();
        check_manifest(&st, scope, name, &m, &d, body.len(), 0.0)?;
    }
    let _g = reg.gc_lock.read().await;
    let stored = {
        let body = body.clone();
        let blobs = reg.blobs.clone();
        tokio::task::spawn_blocking(move || blobs.put(&body)).await.expect("put panicked")?
    };
    debug_assert_eq!(stored, d);
    match store_image(server, scope, name, &m, &d, body.len(), tag).await {
        Ok(_) => {}
        Err(PutError::Registry(e)) => return Err(e),
        Err(PutError::TagImmutable(t)) => {
            return Err(err(
                Code::TagInvalid,
                format!(
                    "The image tag '{t}' already exists in the '{name}' repository and cannot be overwritten because the repository is immutable."
                ),
            ))
        }
    }
    let mut headers = vec![
        ("location", format!("/v2/{name}/manifests/{d}")),
        ("docker-content-digest", d.to_string()),
        ("content-length", "0".into()),
    ];
    if let Some(s) = &m.subject {
        headers.push(("oci-subject", s.digest.clone()));
    }
    Ok(respond(StatusCode::CREATED, &headers, empty()))
}

/// Deletes a tag, or an image and every tag pointing at it.
async fn delete_manifest(server: &Server, scope: &Scope, name: &str, reference: &str) -> Result<Response<Body>> {
    let by_digest = Digest::is_digest_like(reference);
    let r = server
        .transact::<_, crate::WriteError>(|st| {
            let resolved = resolve(st, scope, name, reference);
            let Ok(d) = resolved else { return Ok((Txn::default(), resolved.map(|_| ()))) };
            let mut txn = Txn::default();
            if by_digest {
                let ik = ecr::image_key(scope, name, d.as_str());
                if let Some(parent) = indexes_using(st, scope, name, &d).next() {
                    return Ok((
                        Txn::default(),
                        Err(err(
                            Code::Denied,
                            format!("manifest {d} is listed by index {parent}; delete the index first"),
                        )),
                    ));
                }
                txn.ops.push(Op::delete(&ik));
                for t in st.image_tags(&ik) {
                    txn.ops.push(Op::delete(ecr::tag_key(scope, name, t)));
                }
                let doc = st.ecr_images.get(&ik).unwrap();
                txn.compares.push(Compare::mod_revision(&ik, doc.rev));
            } else {
                let tk = ecr::tag_key(scope, name, reference);
                let doc = st.ecr_tags.get(&tk).unwrap();
                txn.compares.push(Compare::mod_revision(&tk, doc.rev));
                txn.ops.push(Op::delete(&tk));
            }
            Ok((txn, Ok(())))
        })
        .await
        .map_err(|e| err(Code::Internal, e.to_string()))?;
    r?;
    Ok(respond(StatusCode::ACCEPTED, &[("content-length", "0".into())], empty()))
}

/// The manifest digest a tag or digest of repository `name` resolves to, for this machine's
/// agent: in the server's default account and region first, else in any that has `name`.
pub fn resolve_local(server: &Server, name: &str, reference: &str) -> Option<Digest> {
    let st = server.view.read();
    let default = Scope::new(server.config.account_id.clone(), server.config.default_region.clone());
    if let Ok(d) = resolve(&st, &default, name, reference) {
        return Some(d);
    }
    let suffix = format!("/ecr-repos/{name}");
    st.ecr_repos.keys().filter(|k| k.ends_with(&suffix)).find_map(|k| {
        let mut parts = k.splitn(4, '/');
        let (_, account, region) = (parts.next()?, parts.next()?, parts.next()?);
        resolve(&st, &Scope::new(account, region), name, reference).ok()
    })
}

/// Indexes in `name` that list manifest `d`.
pub fn indexes_using<'a>(st: &'a State, scope: &Scope, name: &str, d: &'a Digest) -> impl Iterator<Item = String> + 'a {
    State::range(&st.ecr_images, &ecr::images_of(scope, name))
        .filter(move |i| i.value.manifests.iter().any(|m| m == d.as_str()))
        .map(|i| i.value.digest.clone())
}

fn referrers(
    server: &Server,
    scope: &Scope,
    name: &str,
    d: &Digest,
    req: &Request<Incoming>,
) -> Result<Response<Body>> {
    let filter = query(req, "artifactType");
    let manifests: Vec<serde_json::Value> = {
        let st = server.view.read();
        State::range(&st.ecr_images, &ecr::images_of(scope, name))
            .filter(|i| i.value.subject.as_deref() == Some(d.as_str()))
            .filter(|i| filter.as_ref().is_none_or(|f| i.value.artifact_type.as_ref() == Some(f)))
            .map(|i| {
                let mut v = serde_json::json!({
                    "mediaType": i.value.media_type,
                    "digest": i.value.digest,
                    "size": i.value.manifest_size,
                });
                if let Some(t) = &i.value.artifact_type {
                    v["artifactType"] = t.clone().into();
                }
                if let Some(a) = &i.value.annotations {
                    v["annotations"] = serde_json::Value::Object(a.clone());
                }
                v
            })
            .collect()
    };
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": estiba_registry::manifest::OCI_INDEX,
        "manifests": manifests,
    });
    let mut headers = vec![("content-type", estiba_registry::manifest::OCI_INDEX.to_owned())];
    if filter.is_some() {
        headers.push(("oci-filters-applied", "artifactType".into()));
    }
    Ok(respond(StatusCode::OK, &headers, full(Bytes::from(body.to_string()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(route("/v2/a/b/blobs/uploads/"), Some(Route::Uploads("a/b")));
        assert_eq!(route("/v2/a/blobs/uploads/123"), Some(Route::Upload("a", "123")));
        assert_eq!(route("/v2/a/blobs/sha256:00"), Some(Route::Blob("a", "sha256:00")));
        assert_eq!(route("/v2/a/manifests/latest"), Some(Route::Manifest("a", "latest")));
        assert_eq!(route("/v2/a/referrers/sha256:00"), Some(Route::Referrers("a", "sha256:00")));
        assert_eq!(route("/v3/a"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=9-0", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn decodes_queries() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("sha256%3Aab"), "sha256:ab");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
