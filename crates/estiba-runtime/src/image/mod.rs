//! Images: pulling from OCI / Docker v2 registries, a content store shared by all images,
//! and unpacked layers ready to be stacked with overlayfs.
//!
//! Layout under the store root:
//!
//! ```text
//! blobs/sha256/<hex>            manifests, indexes and configs, as fetched (verified)
//! layers/<hex>/                 an unpacked layer, named after its blob digest (shared)
//! refs/<registry>/<repo>/<tag>  the manifest digest a tag last resolved to
//! tmp/                          downloads in progress (removed on start)
//! ```
//!
//! Pull policy: a reference whose manifest, config and layers are all present starts without
//! any network call; otherwise it is pulled. Concurrent pulls of one image, and of one layer
//! shared by several images, coalesce into one download.

pub mod reference;
pub mod registry;
pub mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use reference::Reference;
pub use registry::Credentials;
use registry::{RegistryClient, MANIFEST_TYPES};

use crate::Error;

/// What a container needs from its image's configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// A pulled image: its digest, configuration and layer directories (bottom first).
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub reference: String,
    /// The digest of the manifest (or index) the reference resolved to: ECS's `imageDigest`.
    pub digest: String,
    pub config: ImageConfig,
    pub layers: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ImageConfig>,
}

type PullFuture = Shared<BoxFuture<'static, Result<Arc<Image>, Error>>>;
type LayerFuture = Shared<BoxFuture<'static, Result<PathBuf, Error>>>;

/// A registry on this machine (the server's own ECR) whose manifests and blobs are read from
/// its files: pulls from it make no network hop.
pub trait LocalRegistry: Send + Sync {
    /// The `host:port` image references use for it.
    fn host(&self) -> &str;
    /// The manifest a tag or digest of `repository` names, as stored.
    fn manifest(&self, repository: &str, reference: &str) -> Option<Vec<u8>>;
    /// Where a blob of the registry is stored (verified when it was pushed).
    fn blob_path(&self, digest: &str) -> Option<PathBuf>;
}

pub struct ImageStore {
    root: PathBuf,
    client: RegistryClient,
    local: std::sync::OnceLock<Arc<dyn LocalRegistry>>,
    limits: unpack::Limits,
    pulls: Mutex<HashMap<String, PullFuture>>,
    layer_pulls: Mutex<HashMap<String, LayerFuture>>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn digest_hex(d: &str) -> Result<&str, Error> {
    match d.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(Error::Pull(format!("unsupported or malformed digest '{d}'"))),
    }
}

/// The registry's name for this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

impl ImageStore {
    pub fn open(root: impl Into<PathBuf>, insecure: Vec<String>) -> Result<Arc<Self>, Error> {
        Self::open_with(root, registry::Transport { insecure, ..Default::default() })
    }

    /// [`ImageStore::open`] with more say in how registries are reached.
    pub fn open_with(root: impl Into<PathBuf>, transport: registry::Transport) -> Result<Arc<Self>, Error> {
        let root = root.into();
        for d in ["blobs/sha256", "layers", "refs", "tmp"] {
            std::fs::create_dir_all(root.join(d))
                .map_err(|e| Error::Io(format!("creating {}: {e}", root.join(d).display())))?;
        }
        // Leftovers of downloads and unpacks a crash interrupted.
        if let Ok(rd) = std::fs::read_dir(root.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path()).or_else(|_| std::fs::remove_dir_all(e.path()));
            }
        }
        if let Ok(rd) = std::fs::read_dir(root.join("layers")) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains(".tmp-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Arc::new(ImageStore {
            root,
            client: RegistryClient::with_transport(transport)?,
            local: std::sync::OnceLock::new(),
            limits: unpack::Limits::default(),
            pulls: Mutex::new(HashMap::new()),
            layer_pulls: Mutex::new(HashMap::new()),
        }))
    }

    /// Serves references to `local.host()` from `local`'s files.
    pub fn set_local(&self, local: Arc<dyn LocalRegistry>) {
        let _ = self.local.set(local);
    }

    fn local_for(&self, r: &Reference) -> Option<&Arc<dyn LocalRegistry>> {
        self.local.get().filter(|l| l.host() == r.registry)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    fn layer_path(&self, digest: &str) -> Result<PathBuf, Error> {
        Ok(self.root.join("layers").join(digest_hex(digest)?))
    }

    fn ref_path(&self, r: &Reference) -> PathBuf {
        let target = r.target().replace(':', "_");
        self.root.join("refs").join(r.registry.replace(':', "_")).join(&r.repository).join(target)
    }

    fn write_blob(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(format!("{}.{}", digest_hex(digest)?, std::process::id()));
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Io(format!("storing {digest}: {e}")))
    }

    /// The image if everything it needs is already here.
    pub fn cached(&self, image: &str) -> Option<Image> {
        let r = Reference::parse(image).ok()?;
        let digest = match &r.digest {
            Some(d) => d.clone(),
            None => std::fs::read_to_string(self.ref_path(&r)).ok()?.trim().to_owned(),
        };
        let top: Manifest = serde_json::from_slice(&std::fs::read(self.blob_path(&digest).ok()?).ok()?).ok()?;
        let manifest = match &top.manifests {
            Some(list) => {
                let d = choose_platform(list).ok()?;
                serde_json::from_slice(&std::fs::read(self.blob_path(&d).ok()?).ok()?).ok()?
            }
            None => top,
        };
        let config_digest = &manifest.config.as_ref()?.digest;
        let config: ConfigBlob =
            serde_json::from_slice(&std::fs::read(self.blob_path(config_digest).ok()?).ok()?).ok()?;
        let mut layers = Vec::new();
        for l in manifest.layers.as_ref()? {
            let p = self.layer_path(&l.digest).ok()?;
            if !p.is_dir() {
                return None;
            }
            layers.push(p);
        }
        Some(Image { reference: image.to_owned(), digest, config: config.config.unwrap_or_default(), layers })
    }

    /// Returns the image, from the store when complete there, else pulled. Concurrent calls
    /// for one reference share one pull.
    pub async fn pull(self: &Arc<Self>, image: &str, creds: Option<Credentials>) -> Result<Arc<Image>, Error> {
        // A tag of the local registry is resolved every time (it costs no network call), so
        // a tag pushed again is used by the next task, as ECS pulls.
        let local_tag = Reference::parse(image).is_ok_and(|r| r.digest.is_none() && self.local_for(&r).is_some());
        if !local_tag {
            if let Some(img) = self.cached(image) {
                return Ok(Arc::new(img));
            }
        }
        let key = image.to_owned();
        let fut = {
            let mut pulls = self.pulls.lock().unwrap();
            pulls
                .entry(key.clone())
                .or_insert_with(|| {
                    let me = self.clone();
                    let image = image.to_owned();
                    async move { me.pull_uncached(&image, creds.as_ref()).await.map(Arc::new) }.boxed().shared()
                })
                .clone()
        };
        let result = fut.await;
        self.pulls.lock().unwrap().remove(&key);
        result
    }

    async fn fetch_manifest(
        &self,
        r: &Reference,
        target: &str,
        creds: Option<&Credentials>,
    ) -> Result<(String, Manifest, Vec<u8>), Error> {
        if let Some(local) = self.local_for(r) {
            let bytes = local.manifest(&r.repository, target).ok_or_else(|| {
                Error::Pull(format!(
                    "{}/{}:{target}: manifest not found in this server's registry",
                    r.registry, r.repository
                ))
            })?;
            return Self::check_manifest(target, &bytes);
        }
        let resp = self.client.get(r, &format!("manifests/{target}"), MANIFEST_TYPES, creds).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let what = if status.as_u16() == 404 { "not found".to_owned() } else { format!("HTTP {status}") };
            return Err(Error::Pull(format!(
                "{}/{}:{target}: manifest {what} {}",
                r.registry,
                r.repository,
                body.chars().take(200).collect::<String>()
            )));
        }
        let bytes = resp.bytes().await.map_err(|e| Error::Pull(format!("reading the manifest: {e}")))?;
        Self::check_manifest(target, &bytes)
    }

    fn check_manifest(target: &str, bytes: &[u8]) -> Result<(String, Manifest, Vec<u8>), Error> {
        if bytes.len() > 4 << 20 {
            return Err(Error::Pull("the manifest is larger than 4 MiB".into()));
        }
        let digest = format!("sha256:{}", sha256_hex(bytes));
        if target.starts_with("sha256:") && target != digest {
            return Err(Error::Pull(format!("manifest digest mismatch: asked for {target}, got {digest}")));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::Pull(format!("the manifest is not valid JSON: {e}")))?;
        if m.schema_version != 2 {
            return Err(Error::Pull(format!(
                "unsupported manifest schema version {} (only version 2 is supported)",
                m.schema_version
            )));
        }
        Ok((digest, m, bytes.to_vec()))
    }

    async fn pull_uncached(self: &Arc<Self>, image: &str, creds: Option<&Credentials>) -> Result<Image, Error> {
        let r = Reference::parse(image)?;
        let (top_digest, top, top_bytes) = self.fetch_manifest(&r, r.target(), creds).await?;
        self.write_blob(&top_digest, &top_bytes)?;
        let manifest = match &top.manifests {
            Some(list) => {
                let d = choose_platform(list)?;
                let (digest, m, bytes) = self.fetch_manifest(&r, &d, creds).await?;
                self.write_blob(&digest, &bytes)?;
                m
            }
            None => top,
        };
        if manifest.media_type.as_deref().is_some_and(|t| t.contains("schema1") || t.contains("signed")) {
            return Err(Error::Pull("Docker schema 1 manifests are not supported".into()));
        }
        let config_desc = manifest.config.as_ref().ok_or_else(|| Error::Pull("the manifest has no config".into()))?;
        let config_bytes = self.fetch_small_blob(&r, config_desc, creds).await?;
        let config: ConfigBlob = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::Pull(format!("the image config is not valid JSON: {e}")))?;
        self.write_blob(&config_desc.digest, &config_bytes)?;
        let layers = manifest.layers.unwrap_or_default();
        let fetches = layers.iter().map(|l| self.layer(&r, l, creds.cloned()));
        let paths = futures_util::future::try_join_all(fetches).await?;
        // Record the tag only once everything is here.
        if r.digest.is_none() {
            let p = self.ref_path(&r);
            std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| Error::Io(e.to_string()))?;
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &top_digest)
                .and_then(|_| std::fs::rename(&tmp, &p))
                .map_err(|e| Error::Io(e.to_string()))?;
        }
        Ok(Image {
            reference: image.to_owned(),
            digest: top_digest,
            config: config.config.unwrap_or_default(),
            layers: paths,
        })
    }

    async fn fetch_small_blob(
        &self,
        r: &Reference,
        d: &Descriptor,
        creds: Option<&Credentials>,
    ) -> Result<Vec<u8>, Error> {
        if let Ok(data) = std::fs::read(self.blob_path(&d.digest)?) {
            return Ok(data);
        }
        if let Some(local) = self.local_for(r) {
            let path = local
                .blob_path(&d.digest)
                .ok_or_else(|| Error::Pull(format!("blob {} is not in this server's registry", d.digest)))?;
            return std::fs::read(&path).map_err(|e| Error::Pull(format!("blob {}: {e}", d.digest)));
        }
        let resp = self.client.get(r, &format!("blobs/{}", d.digest), &[], creds).await?;
        if !resp.status().is_success() {
            return Err(Error::Pull(format!("blob {}: HTTP {}", d.digest, resp.status())));
        }
        let data = resp.bytes().await.map_err(|e| Error::Pull(format!("reading blob {}: {e}", d.digest)))?;
        if data.len() > 16 << 20 {
            return Err(Error::Pull(format!("blob {} is larger than 16 MiB", d.digest)));
        }
        let got = format!("sha256:{}", sha256_hex(&data));
        if got != d.digest {
            return Err(Error::Pull(format!("blob digest mismatch: expected {}, got {got}", d.digest)));
        }
        Ok(data.to_vec())
    }

    /// One layer, unpacked; shared by every image (and every concurrent pull) that uses it.
    fn layer(self: &Arc<Self>, r: &Reference, d: &Descriptor, creds: Option<Credentials>) -> LayerFuture {
        let digest = d.digest.clone();
        let mut pulls = self.layer_pulls.lock().unwrap();
        pulls
            .entry(digest.clone())
            .or_insert_with(|| {
                let me = self.clone();
                let r = r.clone();
                let (media, size) = (d.media_type.clone(), d.size);
                async move {
                    let out = me.fetch_layer(&r, &digest, &media, size, creds.as_ref()).await;
                    me.layer_pulls.lock().unwrap().remove(&digest);
                    out
                }
                .boxed()
                .shared()
            })
            .clone()
    }

    async fn fetch_layer(
        &self,
        r: &Reference,
        digest: &str,
        media: &str,
        size: u64,
        creds: Option<&Credentials>,
    ) -> Result<PathBuf, Error> {
        let dest = self.layer_path(digest)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let hex = digest_hex(digest)?.to_owned();
        // From the local registry: unpacked straight from its verified blob.
        let local_blob = match self.local_for(r) {
            Some(local) => Some(
                local
                    .blob_path(digest)
                    .ok_or_else(|| Error::Pull(format!("layer {digest} is not in this server's registry")))?,
            ),
            None => None,
        };
        let (tmp_file, owned) = match local_blob {
            Some(p) => (p, false),
            None => (self.download_layer(r, digest, &hex, size, creds).await?, true),
        };
        let limits = self.limits.clone();
        let media = media.to_owned();
        let layers_dir = self.root.join("layers");
        let dest2 = dest.clone();
        let out = tokio::task::spawn_blocking(move || -> Result<PathBuf, Error> {
            let work = layers_dir.join(format!("{hex}.tmp-{}", uuid_like()));
            std::fs::create_dir(&work).map_err(|e| Error::Io(format!("{}: {e}", work.display())))?;
            let file = std::fs::File::open(&tmp_file).map_err(|e| Error::Io(e.to_string()))?;
            let res = decompress(std::io::BufReader::with_capacity(256 << 10, file), &media)
                .and_then(|reader| unpack::unpack(reader, &work, &limits));
            if owned {
                let _ = std::fs::remove_file(&tmp_file);
            }
            match res {
                Ok(stats) => {
                    if !stats.skipped.is_empty() {
                        tracing::warn!(layer = %hex, skipped = ?stats.skipped, "entries of the layer were not unpacked");
                    }
                    match std::fs::rename(&work, &dest2) {
                        Ok(()) => Ok(dest2),
                        // Another process finished the same layer first.
                        Err(_) if dest2.is_dir() => {
                            let _ = std::fs::remove_dir_all(&work);
                            Ok(dest2)
                        }
                        Err(e) => Err(Error::Io(format!("{}: {e}", dest2.display()))),
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&work);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| Error::Io(format!("unpack task: {e}")))?;
        out
    }

    /// Downloads a layer blob into `tmp/`, verifying its digest and size.
    async fn download_layer(
        &self,
        r: &Reference,
        digest: &str,
        hex: &str,
        size: u64,
        creds: Option<&Credentials>,
    ) -> Result<PathBuf, Error> {
        let tmp_file = self.root.join("tmp").join(format!("{hex}.{}", uuid_like()));
        let resp = self.client.get(r, &format!("blobs/{digest}"), &[], creds).await?;
        if !resp.status().is_success() {
            return Err(Error::Pull(format!("layer {digest}: HTTP {}", resp.status())));
        }
        let mut file =
            tokio::fs::File::create(&tmp_file).await.map_err(|e| Error::Io(format!("{}: {e}", tmp_file.display())))?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let mut stream = resp.bytes_stream();
        let result: Result<(), Error> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| Error::Pull(format!("downloading layer {digest}: {e}")))?;
                got += chunk.len() as u64;
                if size > 0 && got > size {
                    return Err(Error::Pull(format!("layer {digest} is larger than its declared {size} bytes")));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| Error::Io(e.to_string()))?;
            }
            file.flush().await.map_err(|e| Error::Io(e.to_string()))?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize_reset()));
            if actual != digest {
                return Err(Error::Pull(format!("layer digest mismatch: expected {digest}, got {actual}")));
            }
            if size > 0 && got != size {
                return Err(Error::Pull(format!("layer {digest}: got {got} bytes, expected {size}")));
            }
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp_file);
            return Err(e);
        }
        Ok(tmp_file)
    }
}

/// A unique-enough suffix for temporary names.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Chooses this machine's platform from an index or manifest list.
fn choose_platform(list: &[Descriptor]) -> Result<String, Error> {
    let arch = host_arch();
    list.iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
        .min_by_key(|d| d.platform.as_ref().and_then(|p| p.variant.clone()).unwrap_or_default())
        .map(|d| d.digest.clone())
        .ok_or_else(|| Error::Pull(format!("the image has no linux/{arch} variant")))
}

/// Wraps a layer stream in the right decompressor: by media type, confirmed by magic bytes.
pub fn decompress<'a, R: std::io::BufRead + Send + 'a>(
    mut r: R,
    media_type: &str,
) -> Result<Box<dyn std::io::Read + Send + 'a>, Error> {
    let head = r.fill_buf().map_err(|e| Error::Unpack(e.to_string()))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if gzip || (media_type.ends_with("gzip") && !zstd) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if zstd || media_type.ends_with("zstd") {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| Error::Unpack(e.to_string()))?))
    } else {
        Ok(Box::new(r))
    }
}

#[cfg(test)]
mod tests;
