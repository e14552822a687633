//! The web console's files: hand-written HTML, CSS and JavaScript modules (in `console/` beside
//! `src/`), embedded in the binary and served on the API listener (`GET /` and
//! `GET /_estiba/console/<file>`) with their content types, an ETag and `Cache-Control:
//! no-cache`, so a browser revalidates and gets `304 Not Modified` when nothing changed.
//! With `--console-dir` the same files are read from that directory on each request instead
//! (for working on the console without rebuilding).
//!
//! The console is a client of the public AWS APIs only: this module serves files and fills
//! the page's account, region and API list in; it may not answer API calls, read the store or
//! expose anything the APIs do not.

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use hyper::{HeaderMap, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::body::{self, Body};
use crate::Server;

/// Where the console's assets are served from: under `/_estiba/`, a prefix no AWS API (nor an
/// S3 bucket name) can take, so they never shadow an API route.
pub const ASSET_PREFIX: &str = "/_estiba/console/";

/// The embedded files: path under [`ASSET_PREFIX`], content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("style.css", "text/css; charset=utf-8", include_bytes!("../console/style.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../console/favicon.svg")),
    ("js/app.js", JS, include_bytes!("../console/js/app.js")),
    ("js/api.js", JS, include_bytes!("../console/js/api.js")),
    ("js/sigv4.js", JS, include_bytes!("../console/js/sigv4.js")),
    ("js/ui.js", JS, include_bytes!("../console/js/ui.js")),
    ("js/watch.js", JS, include_bytes!("../console/js/watch.js")),
    ("js/pages/sign-in.js", JS, include_bytes!("../console/js/pages/sign-in.js")),
    ("js/pages/clusters.js", JS, include_bytes!("../console/js/pages/clusters.js")),
    ("js/pages/cluster-create.js", JS, include_bytes!("../console/js/pages/cluster-create.js")),
    ("js/pages/cluster.js", JS, include_bytes!("../console/js/pages/cluster.js")),
    ("js/pages/taskdefs.js", JS, include_bytes!("../console/js/pages/taskdefs.js")),
    ("js/pages/taskdef.js", JS, include_bytes!("../console/js/pages/taskdef.js")),
    ("js/pages/taskdef-editor.js", JS, include_bytes!("../console/js/pages/taskdef-editor.js")),
    ("js/pages/taskdef-form.js", JS, include_bytes!("../console/js/pages/taskdef-form.js")),
    ("js/pages/deploy-form.js", JS, include_bytes!("../console/js/pages/deploy-form.js")),
    ("js/pages/deploy-options.js", JS, include_bytes!("../console/js/pages/deploy-options.js")),
    ("js/pages/service.js", JS, include_bytes!("../console/js/pages/service.js")),
    ("js/pages/service-update.js", JS, include_bytes!("../console/js/pages/service-update.js")),
    ("js/pages/task.js", JS, include_bytes!("../console/js/pages/task.js")),
    ("js/pages/repositories.js", JS, include_bytes!("../console/js/pages/repositories.js")),
    ("js/pages/load-balancers.js", JS, include_bytes!("../console/js/pages/load-balancers.js")),
    ("js/pages/namespaces.js", JS, include_bytes!("../console/js/pages/namespaces.js")),
    ("js/pages/log-groups.js", JS, include_bytes!("../console/js/pages/log-groups.js")),
    ("js/pages/alarms.js", JS, include_bytes!("../console/js/pages/alarms.js")),
    ("js/pages/scaling-policies.js", JS, include_bytes!("../console/js/pages/scaling-policies.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The page's template; `{{account}}`, `{{region}}`, `{{auth}}` (`sigv4` when requests are
/// verified, so the console signs in and signs its calls) and `{{apis}}` are filled in per server.
const INDEX: &str = include_str!("../console/index.html");

/// The console's page, `GET /`.
pub fn index(server: &Server, headers: &HeaderMap) -> Response<Body> {
    // Rendered per request (a few KB): the account and region are this server's configuration.
    let template = from_dir(server.config.console_dir.as_deref(), "index.html").and_then(|b| String::from_utf8(b).ok());
    let auth = if server.credentials.is_some() { "sigv4" } else { "none" };
    let page =
        render(template.as_deref().unwrap_or(INDEX), &server.config.account_id, &server.config.default_region, auth);
    let etag = etag_of(page.as_bytes());
    serve(headers, Bytes::from(page), "text/html; charset=utf-8", &etag)
}

/// An asset, `GET /_estiba/console/<path>`; `None` when there is no such file.
pub fn asset(dir: Option<&Path>, path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| ASSETS.iter().map(|(_, _, b)| etag_of(b)).collect());
    let i = ASSETS.iter().position(|(p, _, _)| *p == path)?;
    let (_, content_type, bytes) = ASSETS[i];
    if let Some(b) = from_dir(dir, path) {
        let etag = etag_of(&b);
        return Some(serve(headers, Bytes::from(b), content_type, &etag));
    }
    Some(serve(headers, Bytes::from_static(bytes), content_type, &etags[i]))
}

/// A file of `--console-dir`, when one is given and holds it (only names of [`ASSETS`] and
/// `index.html` come here, never a path from the request as such).
fn from_dir(dir: Option<&Path>, path: &str) -> Option<Vec<u8>> {
    let dir = dir?;
    match std::fs::read(dir.join(path)) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(path, dir = %dir.display(), error = %e, "console file not in --console-dir; serving the built-in one");
            None
        }
    }
}

fn render(template: &str, account: &str, region: &str, auth: &str) -> String {
    let mut apis = String::new();
    for s in crate::services::SERVICES {
        let m = s.model();
        apis.push_str(&format!("<li>{} (<code>{}</code>)</li>", escape(m.title), escape(m.signing_name)));
    }
    template
        .replace("{{account}}", &escape(account))
        .replace("{{region}}", &escape(region))
        .replace("{{auth}}", auth)
        .replace("{{apis}}", &apis)
}

/// HTML-escapes text put into the page.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn etag_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// Whether an `If-None-Match` header names `etag` (or `*`).
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn serve(headers: &HeaderMap, bytes: Bytes, content_type: &'static str, etag: &str) -> Response<Body> {
    let mut resp = if matches(headers, etag) {
        let mut r = Response::new(body::full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        body::response(StatusCode::OK, bytes, content_type)
    };
    let h = resp.headers_mut();
    h.insert(ETAG, HeaderValue::from_str(etag).expect("hex etag"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_pages_import_is_embedded() {
        // A page importing a file that is not in ASSETS would 404 in the browser.
        for (path, _, bytes) in ASSETS.iter().filter(|(p, _, _)| p.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).unwrap();
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let spec = line.rsplit_once(" from ").map(|(_, s)| s).unwrap_or(line.trim_start_matches("import "));
                let spec = spec.trim().trim_end_matches(';').trim_matches(|c| c == '"' || c == '\'');
                let mut parts: Vec<&str> = if dir.is_empty() { vec![] } else { dir.split('/').collect() };
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(ASSETS.iter().any(|(p, _, _)| *p == target), "{path} imports {spec} ({target}), not embedded");
            }
        }
    }

    #[test]
    fn the_page_links_only_embedded_assets() {
        let page = render(INDEX, "123456789012", "eu-west-1", "sigv4");
        assert!(page.contains("123456789012") && page.contains("eu-west-1") && page.contains(r#"data-auth="sigv4""#));
        assert!(!page.contains("{{"), "every placeholder is filled in");
        for part in page.split(ASSET_PREFIX).skip(1) {
            let file = &part[..part.find('"').unwrap()];
            assert!(ASSETS.iter().any(|(p, _, _)| *p == file), "index.html links {file}, which is not embedded");
        }
    }

    #[test]
    fn a_matching_etag_is_not_modified_and_others_are_served() {
        let etag = etag_of(b"x");
        let mut h = HeaderMap::new();
        assert_eq!(serve(&h, Bytes::from_static(b"x"), JS, &etag).status(), StatusCode::OK);
        h.insert(IF_NONE_MATCH, HeaderValue::from_str(&format!("\"other\", W/{etag}")).unwrap());
        let r = serve(&h, Bytes::from_static(b"x"), JS, &etag);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], etag.as_str());
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve(&h, Bytes::from_static(b"x"), JS, &etag).status(), StatusCode::OK);
    }

    #[test]
    fn unknown_assets_are_none() {
        let h = HeaderMap::new();
        assert!(asset(None, "js/nope.js", &h).is_none());
        assert!(asset(None, "../Cargo.toml", &h).is_none());
        assert_eq!(asset(None, "js/app.js", &h).unwrap().headers()["content-type"], JS);
    }
}
