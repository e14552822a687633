//! The puller against a small registry served from the test itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use super::*;

#[derive(Default)]
struct FakeRegistry {
    /// path → (content type, body)
    objects: Mutex<HashMap<String, (String, Vec<u8>)>>,
    hits: Mutex<HashMap<String, usize>>,
    bearer: bool,
    tokens_issued: AtomicUsize,
    /// Serve this body for blobs instead of the stored one (to corrupt a download).
    corrupt: Mutex<Option<String>>,
    /// Answer this many requests with 503 before serving.
    unavailable: AtomicUsize,
}

impl FakeRegistry {
    fn put(&self, path: &str, ctype: &str, body: Vec<u8>) {
        self.objects.lock().unwrap().insert(path.to_owned(), (ctype.to_owned(), body));
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn handle(&self, req: &Request<hyper::body::Incoming>, port: u16) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        if path == "/token" {
            self.tokens_issued.fetch_add(1, Ordering::SeqCst);
            return Response::new(Full::new(Bytes::from_static(br#"{"token":"t0k3n"}"#)));
        }
        if self.bearer && req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer t0k3n") {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(
                "www-authenticate",
                format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:app:pull""#)
                    .parse()
                    .unwrap(),
            );
            return r;
        }
        *self.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        if self.unavailable.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
        let found = self.objects.lock().unwrap().get(&path).cloned();
        match found {
            Some((ctype, mut body)) => {
                if path.contains("/blobs/") && self.corrupt.lock().unwrap().as_deref() == Some(path.as_str()) {
                    body.push(b'!');
                }
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert("content-type", ctype.parse().unwrap());
                r
            }
            None => {
                let mut r =
                    Response::new(Full::new(Bytes::from_static(br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#)));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        }
    }
}

async fn serve(reg: Arc<FakeRegistry>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let reg = reg.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let reg = reg.clone();
                    async move { Ok::<_, Infallible>(reg.handle(&req, port)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    let plain = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    (gz.finish().unwrap(), plain)
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// Publishes an image with `layers`; returns the manifest digest.
fn publish(reg: &FakeRegistry, repo: &str, tag: &str, layers: &[Vec<u8>], cmd: &str) -> (String, Vec<u8>) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["{cmd}"],"Env":["A=1"],"WorkingDir":"/w"}}}}"#
    )
    .into_bytes();
    reg.put(&format!("/v2/{repo}/blobs/{}", digest(&config)), "application/octet-stream", config.clone());
    let mut descs = Vec::new();
    for l in layers {
        reg.put(&format!("/v2/{repo}/blobs/{}", digest(l)), "application/octet-stream", l.clone());
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(l), "size": l.len()}));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let d = digest(&manifest);
    reg.put(&format!("/v2/{repo}/manifests/{tag}"), "application/vnd.oci.image.manifest.v1+json", manifest.clone());
    reg.put(&format!("/v2/{repo}/manifests/{d}"), "application/vnd.oci.image.manifest.v1+json", manifest.clone());
    (d, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_verifies_and_coalesces() {
    let reg = Arc::new(FakeRegistry::default());
    let (l1, _) = layer(&[("bin/app", b"binary")]);
    let (l2, _) = layer(&[("etc/conf", b"conf")]);
    let (manifest_digest, _) = publish(&reg, "app", "v1", &[l1.clone(), l2.clone()], "run");
    let port = serve(reg.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path(), vec![]).unwrap();
    let image = format!("127.0.0.1:{port}/app:v1");

    let pulls = (0..8).map(|_| {
        let s = store.clone();
        let i = image.clone();
        tokio::spawn(async move { s.pull(&i, None).await })
    });
    for p in pulls {
        let img = p.await.unwrap().unwrap();
        assert_eq!(img.digest, manifest_digest);
        assert_eq!(img.config.cmd.as_deref(), Some(&["run".to_owned()][..]));
        assert_eq!(img.config.working_dir.as_deref(), Some("/w"));
        assert_eq!(std::fs::read(img.layers[0].join("bin/app")).unwrap(), b"binary");
        assert_eq!(std::fs::read(img.layers[1].join("etc/conf")).unwrap(), b"conf");
    }
    assert_eq!(reg.hits(&format!("/v2/app/blobs/{}", digest(&l1))), 1, "concurrent pulls share one download");
    assert_eq!(reg.hits(&format!("/v2/app/blobs/{}", digest(&l2))), 1);

    // A second image sharing a layer downloads only what it lacks.
    let (l3, _) = layer(&[("other", b"x")]);
    publish(&reg, "app", "v2", &[l1.clone(), l3.clone()], "run2");
    store.pull(&format!("127.0.0.1:{port}/app:v2"), None).await.unwrap();
    assert_eq!(reg.hits(&format!("/v2/app/blobs/{}", digest(&l1))), 1, "layers are shared between images");

    // A cached image needs no registry call at all.
    let before: usize = reg.hits.lock().unwrap().values().sum();
    store.pull(&image, None).await.unwrap();
    assert_eq!(reg.hits.lock().unwrap().values().sum::<usize>(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_and_missing_images_fail_cleanly() {
    let reg = Arc::new(FakeRegistry::default());
    let (l1, _) = layer(&[("f", b"data")]);
    publish(&reg, "app", "v1", std::slice::from_ref(&l1), "x");
    *reg.corrupt.lock().unwrap() = Some(format!("/v2/app/blobs/{}", digest(&l1)));
    let port = serve(reg.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path(), vec![]).unwrap();
    let e = store.pull(&format!("127.0.0.1:{port}/app:v1"), None).await.unwrap_err().to_string();
    assert!(e.contains("larger than its declared") || e.contains("digest mismatch"), "{e}");
    let layer_dirs: Vec<_> = std::fs::read_dir(dir.path().join("layers")).unwrap().collect();
    assert!(layer_dirs.is_empty(), "nothing half-unpacked is kept");
    assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());
    let e = store.pull(&format!("127.0.0.1:{port}/app:nope"), None).await.unwrap_err().to_string();
    assert!(e.contains("not found"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_indexes() {
    let reg = Arc::new(FakeRegistry { bearer: true, ..Default::default() });
    let (l1, _) = layer(&[("f", b"amd64")]);
    let (l2, _) = layer(&[("f", b"arm64")]);
    let (amd, amd_m) = publish(&reg, "app", "amd", &[l1], "x");
    let (arm, arm_m) = publish(&reg, "app", "arm", &[l2], "x");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_m.len(), "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": amd_m.len(), "platform": {"os": "linux", "architecture": host_arch()}},
        ]
    }))
    .unwrap();
    reg.put("/v2/app/manifests/multi", "application/vnd.oci.image.index.v1+json", index.clone());
    let port = serve(reg.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path(), vec![]).unwrap();
    let img = store.pull(&format!("127.0.0.1:{port}/app:multi"), None).await.unwrap();
    assert_eq!(img.digest, digest(&index), "the image digest is the index's");
    assert_eq!(std::fs::read(img.layers[0].join("f")).unwrap(), b"amd64", "this machine's platform was chosen");
    assert!(reg.tokens_issued.load(Ordering::SeqCst) >= 1);
    // A digest reference is checked against what the registry serves.
    let pinned = format!("127.0.0.1:{port}/app@{amd}");
    assert_eq!(store.pull(&pinned, None).await.unwrap().digest, amd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_counted() {
    let reg = Arc::new(FakeRegistry::default());
    let (l1, _) = layer(&[("a", b"a")]);
    publish(&reg, "app", "v1", &[l1], "run");
    let port = serve(reg.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path(), vec![]).unwrap();
    // Two 503s, then the registry answers: the pull succeeds.
    reg.unavailable.store(2, Ordering::SeqCst);
    store.pull(&format!("127.0.0.1:{port}/app:v1"), None).await.unwrap();
    assert_eq!(reg.hits("/v2/app/manifests/v1"), 3, "asked three times");
    // Always 503: it gives up after the retries, and says how many.
    reg.unavailable.store(usize::MAX, Ordering::SeqCst);
    let e = store.pull(&format!("127.0.0.1:{port}/app:v2"), None).await.unwrap_err();
    assert_eq!(e.retries(), 3, "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    // A 404 is not retried.
    reg.unavailable.store(0, Ordering::SeqCst);
    let before = reg.hits("/v2/app/manifests/nope");
    let e = store.pull(&format!("127.0.0.1:{port}/app:nope"), None).await.unwrap_err();
    assert_eq!((e.retries(), reg.hits("/v2/app/manifests/nope") - before), (0, 1), "{e}");
}
