//! Listener rules compiled once per table: wildcard patterns (`*`, `?`) pre-lowered where the
//! match is case-insensitive, CIDRs parsed; matching a request allocates nothing.

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName};
use hyper::http::request::Parts;
use ipnet::IpNet;

use crate::table::Condition;

/// A pattern with ALB's wildcards: `*` any run of characters, `?` exactly one.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    pat: Box<[u8]>,
    /// Lowercased pattern and ASCII-lowercased subject.
    fold: bool,
    plain: bool,
}

impl Pattern {
    pub(crate) fn new(p: &str, fold: bool) -> Pattern {
        let pat: Box<[u8]> = if fold { p.to_ascii_lowercase().into_bytes().into() } else { p.as_bytes().into() };
        let plain = !pat.iter().any(|&c| c == b'*' || c == b'?');
        Pattern { pat, fold, plain }
    }

    pub(crate) fn matches(&self, s: &[u8]) -> bool {
        let eq = |p: u8, c: u8| if self.fold { p == c.to_ascii_lowercase() } else { p == c };
        if self.plain {
            return self.pat.len() == s.len() && self.pat.iter().zip(s).all(|(&p, &c)| eq(p, c));
        }
        // Greedy with one backtrack point (the last `*`): linear in practice, O(n·m) at worst.
        let (p, mut pi, mut si) = (&self.pat, 0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], s[si]))) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

fn any(pats: &[Pattern], s: &[u8]) -> bool {
    pats.iter().any(|p| p.matches(s))
}

#[derive(Debug)]
pub(crate) enum Matcher {
    Path(Vec<Pattern>),
    Host(Vec<Pattern>),
    Header {
        name: HeaderName,
        values: Vec<Pattern>,
    },
    Method(Vec<hyper::Method>),
    Query(Vec<(Option<Pattern>, Pattern)>),
    Source(Vec<IpNet>),
    /// A condition that cannot match (an invalid header name or CIDR in the table).
    Never,
}

/// What a request offers the matchers: a hyper request's parts, or a raw HTTP/1.1 head (the
/// clear-text fast path, `h1`).
pub(crate) struct Subject<'a> {
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub query: &'a str,
    /// The Host header, else the URI's authority (HTTP/2); with its port.
    pub host: &'a [u8],
    pub headers: Headers<'a>,
    pub client: IpAddr,
}

/// A request's headers, either way.
#[derive(Clone, Copy)]
pub(crate) enum Headers<'a> {
    Map(&'a HeaderMap),
    Raw(&'a [httparse::Header<'a>]),
}

impl<'a> Headers<'a> {
    /// The first value of header `name` (in order) for which `f` gives something.
    pub(crate) fn find_map<T>(self, name: &HeaderName, mut f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T> {
        match self {
            Headers::Map(h) => h.get_all(name).iter().find_map(|v| f(v.as_bytes())),
            Headers::Raw(h) => h.iter().filter(|h| h.name.eq_ignore_ascii_case(name.as_str())).find_map(|h| f(h.value)),
        }
    }
}

impl<'a> Subject<'a> {
    pub(crate) fn of(parts: &'a Parts, client: IpAddr) -> Subject<'a> {
        Subject {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            host: parts
                .headers
                .get(hyper::header::HOST)
                .map(|v| v.as_bytes())
                .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
                .unwrap_or(b""),
            headers: Headers::Map(&parts.headers),
            client,
        }
    }

    /// The host without its port.
    fn host(&self) -> &'a [u8] {
        strip_port(self.host)
    }
}

pub(crate) fn strip_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        // [v6]:port
        return match h.iter().position(|&c| c == b']') {
            Some(i) => &h[..=i],
            None => h,
        };
    }
    match h.iter().rposition(|&c| c == b':') {
        Some(i) if h[i + 1..].iter().all(u8::is_ascii_digit) => &h[..i],
        _ => h,
    }
}

impl Matcher {
    pub(crate) fn compile(c: &Condition) -> Matcher {
        let pats = |v: &[String], fold: bool| v.iter().map(|p| Pattern::new(p, fold)).collect();
        match c {
            Condition::PathPattern(v) => Matcher::Path(pats(v, false)),
            Condition::HostHeader(v) => Matcher::Host(pats(v, true)),
            Condition::HttpHeader { name, values } => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Matcher::Header { name, values: pats(values, true) },
                Err(_) => Matcher::Never,
            },
            Condition::HttpRequestMethod(v) => {
                Matcher::Method(v.iter().filter_map(|m| hyper::Method::from_bytes(m.as_bytes()).ok()).collect())
            }
            Condition::QueryString(v) => Matcher::Query(
                v.iter()
                    .map(|(k, val)| (k.as_deref().map(|k| Pattern::new(k, true)), Pattern::new(val, true)))
                    .collect(),
            ),
            Condition::SourceIp(v) => {
                let nets: Vec<IpNet> = v
                    .iter()
                    .filter_map(|c| c.parse::<IpNet>().or_else(|_| c.parse::<IpAddr>().map(IpNet::from)).ok())
                    .collect();
                if nets.is_empty() {
                    Matcher::Never
                } else {
                    Matcher::Source(nets)
                }
            }
        }
    }

    pub(crate) fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Matcher::Path(p) => any(p, s.path.as_bytes()),
            Matcher::Host(p) => any(p, s.host()),
            Matcher::Header { name, values } => s.headers.find_map(name, |v| any(values, v).then_some(())).is_some(),
            Matcher::Method(m) => m.iter().any(|m| m.as_str() == s.method),
            Matcher::Query(pairs) => s.query.split('&').filter(|kv| !kv.is_empty()).any(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                pairs
                    .iter()
                    .any(|(pk, pv)| pk.as_ref().is_none_or(|pk| pk.matches(k.as_bytes())) && pv.matches(v.as_bytes()))
            }),
            Matcher::Source(nets) => {
                let ip = match s.client {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(s.client),
                    v4 => v4,
                };
                nets.iter().any(|n| n.contains(&ip))
            }
            Matcher::Never => false,
        }
    }
}

/// A rule's conditions: all must match.
pub(crate) fn all_match(conds: &[Matcher], s: &Subject<'_>) -> bool {
    conds.iter().all(|c| c.matches(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(req: hyper::Request<()>) -> Parts {
        req.into_parts().0
    }

    fn m(c: Condition, req: hyper::Request<()>, client: &str) -> bool {
        let parts = subject(req);
        Matcher::compile(&c).matches(&Subject::of(&parts, client.parse().unwrap()))
    }

    fn get(uri: &str) -> hyper::Request<()> {
        hyper::Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn wildcards() {
        let p = |p: &str, s: &str| Pattern::new(p, false).matches(s.as_bytes());
        assert!(p("/api/*", "/api/v1/x"));
        assert!(p("/api/*", "/api/"));
        assert!(!p("/api/*", "/api"));
        assert!(p("*.png", "/a/b.png"));
        assert!(!p("*.png", "/a/b.png.txt"));
        assert!(p("/a?c", "/abc"));
        assert!(!p("/a?c", "/ac"));
        assert!(p("*a*b*c", "xxaxxbyyc"));
        assert!(!p("*a*b*c", "xxaxxcyyb"));
        assert!(p("*", ""));
        assert!(p("/exact", "/exact"));
        assert!(!p("/exact", "/Exact"));
        assert!(Pattern::new("*.EXAMPLE.com", true).matches(b"api.example.COM"));
    }

    #[test]
    fn path_is_case_sensitive_and_ignores_the_query() {
        let c = || Condition::PathPattern(vec!["/img/*".into(), "/favicon.ico".into()]);
        assert!(m(c(), get("/img/a.png?x=1"), "127.0.0.1"));
        assert!(m(c(), get("/favicon.ico"), "127.0.0.1"));
        assert!(!m(c(), get("/IMG/a.png"), "127.0.0.1"));
        assert!(!m(c(), get("/other?p=/img/x"), "127.0.0.1"));
    }

    #[test]
    fn host_header_is_case_insensitive_without_port() {
        let c = || Condition::HostHeader(vec!["*.example.com".into()]);
        let with_host = |h: &str| hyper::Request::get("/").header("host", h).body(()).unwrap();
        assert!(m(c(), with_host("API.Example.com:8080"), "127.0.0.1"));
        assert!(!m(c(), with_host("example.com"), "127.0.0.1"));
        // HTTP/2: the authority.
        assert!(m(c(), get("http://www.example.com/"), "127.0.0.1"));
    }

    #[test]
    fn http_header_any_value() {
        let c =
            || Condition::HttpHeader { name: "User-Agent".into(), values: vec!["*mobile*".into(), "curl/?.*".into()] };
        let ua = |v: &str| hyper::Request::get("/").header("user-agent", v).body(()).unwrap();
        assert!(m(c(), ua("Some Mobile Safari"), "127.0.0.1"));
        assert!(m(c(), ua("curl/8.1"), "127.0.0.1"));
        assert!(!m(c(), ua("Firefox"), "127.0.0.1"));
        assert!(!m(c(), get("/"), "127.0.0.1"));
    }

    #[test]
    fn method_is_exact() {
        let c = || Condition::HttpRequestMethod(vec!["POST".into(), "PUT".into()]);
        assert!(m(c(), hyper::Request::post("/").body(()).unwrap(), "127.0.0.1"));
        assert!(!m(c(), get("/"), "127.0.0.1"));
        assert!(!m(
            Condition::HttpRequestMethod(vec!["post".into()]),
            hyper::Request::post("/").body(()).unwrap(),
            "127.0.0.1"
        ));
    }

    #[test]
    fn query_string_pairs() {
        let c = || Condition::QueryString(vec![(Some("version".into()), "v?".into()), (None, "*example*".into())]);
        assert!(m(c(), get("/?a=1&version=V2"), "127.0.0.1"));
        assert!(m(c(), get("/?q=an-example-value"), "127.0.0.1"));
        assert!(!m(c(), get("/?version=v10"), "127.0.0.1"));
        assert!(!m(c(), get("/"), "127.0.0.1"));
    }

    #[test]
    fn source_ip_cidrs() {
        let c = || Condition::SourceIp(vec!["10.0.0.0/8".into(), "192.168.1.7/32".into()]);
        assert!(m(c(), get("/"), "10.1.2.3"));
        assert!(m(c(), get("/"), "192.168.1.7"));
        assert!(m(c(), get("/"), "::ffff:10.0.0.1"));
        assert!(!m(c(), get("/"), "192.168.1.8"));
        assert!(!m(Condition::SourceIp(vec!["garbage".into()]), get("/"), "10.1.2.3"));
    }

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port(b"a.b:80"), b"a.b");
        assert_eq!(strip_port(b"a.b"), b"a.b");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
    }
}
