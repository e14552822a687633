//! AWS Signature Version 4, verified: the `Authorization` header form and presigned query
//! strings, with the canonical request built exactly as AWS builds it for services other than
//! S3 (normalized, double-encoded path; decoded, re-encoded and sorted query; trimmed header
//! values of the `SignedHeaders` only; the body's SHA-256), the 15-minute clock skew rule and
//! `X-Amz-Expires`.
//!
//! Hand-written on `hmac`/`sha2` rather than on the `aws-sigv4` crate: that crate only signs
//! (a verifier would re-sign with it and compare), and re-signing allocates a header map and
//! strings and derives the signing key again on every call, with traps (it overwrites
//! `x-amz-date`, adds `host`, signs every header it is given). Here one SHA-256 of the
//! canonical request and one HMAC (the signing key is cached by [`crate::Keyring`]) are
//! enough, and the compare is constant-time. `aws-sigv4` stays a dev-dependency: the tests sign
//! with it and check that this module accepts what it signs.

use std::borrow::Cow;
use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::time::{amz_date, parse_amz_date};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's time may be from the server's, either way (AWS's 15 minutes).
pub const MAX_SKEW: i64 = 15 * 60;
/// The longest `X-Amz-Expires` of a presigned request (7 days).
pub const MAX_EXPIRES: i64 = 604_800;
/// The algorithm name in the header and presigned query.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an HTTP request a signature covers. `path` and `query` are as received (still
/// percent-encoded); `body_sha256` is the hash of the body bytes as sent (before any
/// `Content-Encoding` is undone).
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body_sha256: [u8; 32],
}

/// Why a request's authentication is refused. Each maps to a code per protocol family with
/// [`AuthError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization` header nor a presigned query.
    #[error("Missing Authentication Token")]
    Missing,
    /// A malformed `Authorization` header or presigned query.
    #[error("{0}")]
    Incomplete(String),
    /// The access key is not known (or its session token does not match).
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The signature is not the one the secret key gives (or the scope is inconsistent).
    #[error("{0}")]
    BadSignature(String),
    /// The request's time is more than 15 minutes past, or a presigned URL has expired.
    #[error("{0}")]
    Expired(String),
    /// The request's time is more than 15 minutes ahead.
    #[error("{0}")]
    NotYetCurrent(String),
    /// Temporary credentials past their expiry.
    #[error("The security token included in the request is expired")]
    ExpiredToken,
}

/// The protocol families whose authentication error codes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// AWS JSON 1.0/1.1 and RPC v2 CBOR.
    Json,
    /// AWS Query (STS, ELBv2, CloudWatch's Query form).
    Query,
    /// EC2's Query dialect.
    Ec2,
}

/// A refusal in one family's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

/// The message AWS gives for a signature that does not match.
pub const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

impl AuthError {
    /// The code, HTTP status and message AWS answers with, per protocol family (see
    /// /work/issue21-research.md §1.1 for the observed responses).
    pub fn code(&self, f: Family) -> Code {
        use Family::*;
        let msg = self.to_string();
        let (code, status, message) = match (self, f) {
            (AuthError::Missing, Json) => ("MissingAuthenticationTokenException", 400, msg),
            (AuthError::Missing, _) => {
                ("MissingAuthenticationToken", 403, "Request is missing Authentication Token".into())
            }
            (AuthError::Incomplete(_), Json) => ("IncompleteSignatureException", 400, msg),
            (AuthError::Incomplete(_), _) => ("IncompleteSignature", 400, msg),
            (AuthError::UnknownKey, Json) => ("UnrecognizedClientException", 400, msg),
            (AuthError::UnknownKey, Query) => {
                ("InvalidClientTokenId", 403, "The security token included in the request is invalid".into())
            }
            (AuthError::UnknownKey, Ec2) => {
                ("AuthFailure", 401, "AWS was not able to validate the provided access credentials".into())
            }
            (AuthError::BadSignature(_), Json) => ("InvalidSignatureException", 400, msg),
            (AuthError::BadSignature(_), _) => ("SignatureDoesNotMatch", 403, msg),
            (AuthError::Expired(_) | AuthError::NotYetCurrent(_), Json) => ("InvalidSignatureException", 400, msg),
            (AuthError::Expired(_) | AuthError::NotYetCurrent(_), Query) => ("SignatureDoesNotMatch", 403, msg),
            (AuthError::Expired(_) | AuthError::NotYetCurrent(_), Ec2) => {
                ("RequestExpired", 400, "Request has expired.".into())
            }
            (AuthError::ExpiredToken, Json) => ("ExpiredTokenException", 400, msg),
            (AuthError::ExpiredToken, Query) => ("ExpiredToken", 403, msg),
            (AuthError::ExpiredToken, Ec2) => ("RequestExpired", 400, "Request has expired.".into()),
        };
        Code { code, status, message }
    }
}

/// What a request's signature claims, read from its `Authorization` header or presigned query:
/// borrowed from the header (every signed request pays for this), copied when a presigned
/// query had to be percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The whole credential as sent (`KEY/YYYYMMDD/REGION/SERVICE/aws4_request`): one day's
    /// signing key is cached under it.
    pub credential: Cow<'a, str>,
    pub access_key: Cow<'a, str>,
    /// The credential scope's date (`YYYYMMDD`), region and service.
    pub date: Cow<'a, str>,
    pub region: Cow<'a, str>,
    pub service: Cow<'a, str>,
    /// `host;x-amz-date;...` as sent.
    pub signed_headers: Cow<'a, str>,
    /// Lowercase hex, as sent.
    pub signature: Cow<'a, str>,
    /// `X-Amz-Date` as sent, and in Unix seconds.
    pub amz_date: Cow<'a, str>,
    pub time: i64,
    /// `X-Amz-Expires` of a presigned request; `None` for a header signature.
    pub expires: Option<i64>,
    pub security_token: Option<Cow<'a, str>>,
}

impl Parsed<'_> {
    pub fn presigned(&self) -> bool {
        self.expires.is_some()
    }
}

// The headers read by name, as `HeaderName`s made at compile time: a lookup by `&str`
// parses and lower-cases the name on every request.
const X_AMZ_DATE: http::HeaderName = http::HeaderName::from_static("x-amz-date");
const X_AMZ_SECURITY_TOKEN: http::HeaderName = http::HeaderName::from_static("x-amz-security-token");
const X_AMZ_CONTENT_SHA256: http::HeaderName = http::HeaderName::from_static("x-amz-content-sha256");

fn header<'h>(headers: &'h http::HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a query string carries a presigned signature.
fn presigned_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p.starts_with("X-Amz-Algorithm=") || p.starts_with("X-Amz-Signature=")))
}

/// Reads what a request's signature claims; checks only its form.
pub fn parse<'a>(req: &SignedRequest<'a>) -> Result<Parsed<'a>, AuthError> {
    parse_parts(req.headers, req.query)
}

/// [`parse`] from the request's headers and query alone (before its body is read).
pub fn parse_parts<'a>(headers: &'a http::HeaderMap, query: Option<&'a str>) -> Result<Parsed<'a>, AuthError> {
    let auth = header(headers, &http::header::AUTHORIZATION);
    match (auth, presigned_query(query)) {
        (Some(_), true) => Err(AuthError::Incomplete(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header \
             should be specified"
                .into(),
        )),
        (Some(a), false) => parse_header(a, headers),
        (None, true) => parse_presigned(query.unwrap_or("")),
        (None, false) => Err(AuthError::Missing),
    }
}

fn parse_header<'a>(auth: &'a str, headers: &'a http::HeaderMap) -> Result<Parsed<'a>, AuthError> {
    let (alg, rest) = auth.trim().split_once(' ').unwrap_or((auth.trim(), ""));
    if alg != ALGORITHM {
        return Err(AuthError::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{alg}'. Supported: '{ALGORITHM}'. Authorization={auth}"
        )));
    }
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let amz = header(headers, &X_AMZ_DATE);
    let mut missing = String::new();
    for (what, absent) in [
        ("'Credential' parameter", cred.is_none()),
        ("'Signature' parameter", sig.is_none()),
        ("'SignedHeaders' parameter", signed.is_none()),
    ] {
        if absent {
            let _ = write!(missing, "Authorization header requires {what}. ");
        }
    }
    if amz.is_none() {
        missing.push_str("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ");
    }
    if !missing.is_empty() {
        return Err(AuthError::Incomplete(format!("{missing}Authorization={auth}")));
    }
    let token = header(headers, &X_AMZ_SECURITY_TOKEN).map(Cow::Borrowed);
    let b = |v: Option<&'a str>| Cow::Borrowed(v.unwrap_or(""));
    build(b(cred), b(signed), b(sig), b(amz), None, token)
}

fn parse_presigned(query: &str) -> Result<Parsed<'static>, AuthError> {
    let (mut alg, mut cred, mut date, mut signed, mut sig, mut expires, mut token) =
        (None, None, None, None, None, None, None);
    for (k, v) in pairs(query) {
        let slot = match k.as_str() {
            "X-Amz-Algorithm" => &mut alg,
            "X-Amz-Credential" => &mut cred,
            "X-Amz-Date" => &mut date,
            "X-Amz-SignedHeaders" => &mut signed,
            "X-Amz-Signature" => &mut sig,
            "X-Amz-Expires" => &mut expires,
            "X-Amz-Security-Token" => &mut token,
            _ => continue,
        };
        *slot = Some(v);
    }
    let mut missing = Vec::new();
    for (name, v) in [
        ("X-Amz-Algorithm", &alg),
        ("X-Amz-Credential", &cred),
        ("X-Amz-Signature", &sig),
        ("X-Amz-SignedHeaders", &signed),
        ("X-Amz-Date", &date),
    ] {
        if v.is_none() {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return Err(AuthError::Incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", ")
        )));
    }
    if alg.as_deref() != Some(ALGORITHM) {
        return Err(AuthError::Incomplete(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\", not \"{}\"",
            alg.unwrap_or_default()
        )));
    }
    // STS ignores X-Amz-Expires and allows 15 minutes; other services honour it. Without one,
    // 15 minutes.
    let expires = match expires {
        None => MAX_SKEW,
        Some(e) => match e.parse::<i64>() {
            Ok(n) if (1..=MAX_EXPIRES).contains(&n) => n,
            Ok(n) if n > MAX_EXPIRES => {
                return Err(AuthError::Incomplete(
                    "X-Amz-Expires must be less than a week (in seconds) that is 604800".into(),
                ))
            }
            _ => return Err(AuthError::Incomplete("X-Amz-Expires should be a number between 1 and 604800".into())),
        },
    };
    let o = |v: Option<String>| Cow::Owned(v.unwrap_or_default());
    build(o(cred), o(signed), o(sig), o(date), Some(expires), token.map(Cow::Owned))
}

fn build<'a>(
    cred: Cow<'a, str>,
    signed: Cow<'a, str>,
    sig: Cow<'a, str>,
    amz: Cow<'a, str>,
    expires: Option<i64>,
    token: Option<Cow<'a, str>>,
) -> Result<Parsed<'a>, AuthError> {
    // Where each of the five parts lies in `cred`, to borrow it from there (or copy it when
    // `cred` is owned).
    let mut at = [(0, 0); 5];
    let (mut n, mut start) = (0, 0);
    for part in cred.split('/') {
        if let Some(slot) = at.get_mut(n) {
            *slot = (start, start + part.len());
        }
        start += part.len() + 1;
        n += 1;
    }
    let [key, date, region, service, term] = at.map(|(a, b)| &cred[a..b]);
    if n != at.len() {
        return Err(AuthError::Incomplete(format!(
            "Credential should be scoped to a valid region, service and terminator: \
             'ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request', not '{cred}'."
        )));
    };
    if term != "aws4_request" {
        return Err(AuthError::Incomplete(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{term}'."
        )));
    }
    if key.is_empty() || region.is_empty() || service.is_empty() {
        return Err(AuthError::Incomplete(format!("Credential should not have empty parts: '{cred}'.")));
    }
    let Some(time) = parse_amz_date(&amz) else {
        return Err(AuthError::Incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{amz}'. See http://en.wikipedia.org/wiki/ISO_8601"
        )));
    };
    if date != &amz[..8] {
        return Err(AuthError::BadSignature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
             '{date}' != '{}', from '{amz}'.",
            &amz[..8]
        )));
    }
    // One pass over the list: no empty name, no upper case, and `host` among the names.
    let (mut lowercase, mut host) = (true, false);
    for h in signed.split(';') {
        lowercase &= !h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase());
        host |= h == "host";
    }
    if !lowercase {
        return Err(AuthError::Incomplete(format!(
            "SignedHeaders must be a list of lowercase header names: '{signed}'."
        )));
    }
    if !host {
        return Err(AuthError::BadSignature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let piece = |(a, b): (usize, usize)| match &cred {
        Cow::Borrowed(c) => Cow::Borrowed(&c[a..b]),
        Cow::Owned(c) => Cow::Owned(c[a..b].to_owned()),
    };
    Ok(Parsed {
        access_key: piece(at[0]),
        date: piece(at[1]),
        region: piece(at[2]),
        service: piece(at[3]),
        credential: cred,
        signed_headers: signed,
        signature: sig,
        amz_date: amz,
        time,
        expires,
        security_token: token,
    })
}

/// Checks the request's time against `now`: within 15 minutes either way for a header
/// signature; not ahead by more than 15 minutes and not past `X-Amz-Expires` when presigned.
pub fn check_time(p: &Parsed, now: i64) -> Result<(), AuthError> {
    if p.time > now + MAX_SKEW {
        return Err(AuthError::NotYetCurrent(format!(
            "Signature not yet current: {} is still later than {} ({} + 15 min.)",
            p.amz_date,
            amz_date(now + MAX_SKEW),
            amz_date(now)
        )));
    }
    let limit = p.expires.unwrap_or(MAX_SKEW);
    if p.time < now - limit {
        let shown = match p.expires {
            None => "15 min.".to_owned(),
            Some(e) => format!("{e} sec."),
        };
        return Err(AuthError::Expired(format!(
            "Signature expired: {} is now earlier than {} ({} - {shown})",
            p.amz_date,
            amz_date(now - limit),
            amz_date(now)
        )));
    }
    Ok(())
}

/// The key a secret derives for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    k = hmac(&k, region.as_bytes());
    k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Characters SigV4 leaves unencoded: `A-Z a-z 0-9 - _ . ~`.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn encode_into(out: &mut String, s: &[u8], keep_slash: bool) {
    for &b in s {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a query key or value (`+` is a space, as form encoding has it); bytes
/// that are not valid UTF-8 are kept as they are.
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// A query string's pairs, decoded (a key without `=` has an empty value).
pub fn pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (String::from_utf8_lossy(&decode(k)).into_owned(), String::from_utf8_lossy(&decode(v)).into_owned())
    })
}

/// The path with `.`, `..` and empty segments removed, as AWS normalizes it for non-S3 services.
fn normalize_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.is_empty() {
        return "/".into();
    }
    if path.starts_with('/') && !path.contains("/.") && !path.contains("//") {
        return path.into();
    }
    let mut segs: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    out.push_str(&segs.join("/"));
    if (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..")) && !out.ends_with('/') {
        out.push('/');
    }
    out.into()
}

/// Appends a header value trimmed, with inner runs of spaces made one.
fn push_trimmed(out: &mut String, v: &[u8]) {
    // Nearly every value is ASCII: checked as UTF-8 once, not walked in chunks.
    let s = match std::str::from_utf8(v) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v),
    };
    let mut first = true;
    for w in s.split_ascii_whitespace() {
        if !first {
            out.push(' ');
        }
        out.push_str(w);
        first = false;
    }
}

/// Writes the canonical request into `out`. Fails when a signed header is absent.
pub fn canonical_request(req: &SignedRequest, p: &Parsed, out: &mut String) -> Result<(), AuthError> {
    out.clear();
    out.push_str(req.method);
    out.push('\n');
    // The path as received is already percent-encoded once; encoding it again is the double
    // encoding every service but S3 signs.
    encode_into(out, normalize_path(req.path).as_bytes(), true);
    out.push('\n');
    if let Some(q) = req.query {
        let mut kv: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs(q) {
            if p.presigned() && k == "X-Amz-Signature" {
                continue;
            }
            let (mut ek, mut ev) = (String::with_capacity(k.len()), String::with_capacity(v.len()));
            encode_into(&mut ek, k.as_bytes(), false);
            encode_into(&mut ev, v.as_bytes(), false);
            kv.push((ek, ev));
        }
        kv.sort_unstable();
        for (i, (k, v)) in kv.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
    out.push('\n');
    for name in p.signed_headers.split(';') {
        // A scan of the few headers a request has, compared as they are (already lower
        // case): `get_all(&str)` would parse and hash each name first.
        let mut values = req.headers.iter().filter(|(k, _)| k.as_str() == name).map(|(_, v)| v).peekable();
        if values.peek().is_none() {
            return Err(AuthError::BadSignature(format!(
                "{MISMATCH} (the signed header '{name}' is not in the request)"
            )));
        }
        out.push_str(name);
        out.push(':');
        let mut first = true;
        for v in values {
            if !first {
                out.push(',');
            }
            push_trimmed(out, v.as_bytes());
            first = false;
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&p.signed_headers);
    out.push('\n');
    push_payload_hash(req, out)
}

/// Lowercase hex of a SHA-256 digest, on the stack: `hex::encode` builds its `String` a
/// character at a time, and a request's verification hex-encodes two digests.
fn hex32(digest: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    hex::encode_to_slice(digest, &mut out).expect("32 bytes are 64 hex digits");
    out
}

/// Appends the payload hash the client signed: `x-amz-content-sha256` when sent (it must then
/// be the body's), else the body's SHA-256. Unsigned and streaming payloads are S3's and refused.
fn push_payload_hash(req: &SignedRequest, out: &mut String) -> Result<(), AuthError> {
    let actual = hex32(&req.body_sha256);
    let actual = std::str::from_utf8(&actual).expect("hex digits are ASCII");
    match header(req.headers, &X_AMZ_CONTENT_SHA256) {
        None => {
            out.push_str(actual);
            Ok(())
        }
        Some(h) if h.eq_ignore_ascii_case(actual) => {
            out.push_str(h);
            Ok(())
        }
        Some(h) if h == "UNSIGNED-PAYLOAD" || h.starts_with("STREAMING-") => Err(AuthError::BadSignature(format!(
            "{MISMATCH} (x-amz-content-sha256: {h} is not accepted by this service; sign the payload)"
        ))),
        Some(_) => Err(AuthError::BadSignature(
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
        )),
    }
}

/// A day's signing key, ready to sign: the HMAC keyed once (its inner and outer pads hashed),
/// so a cached key costs no hashing before the message.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

/// Shows no key material.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    pub fn new(key: &[u8; 32]) -> Self {
        SigningKey(HmacSha256::new_from_slice(key).expect("HMAC takes any key length"))
    }
}

/// Checks the signature with the day's signing key, in constant time. The string to sign
/// (algorithm, date, scope, the canonical request's digest) goes into the HMAC piece by piece.
pub fn check_signature(key: &SigningKey, req: &SignedRequest, p: &Parsed) -> Result<(), AuthError> {
    let mut canonical = String::with_capacity(512);
    canonical_request(req, p, &mut canonical)?;
    let mut given = [0u8; 32];
    if hex::decode_to_slice(p.signature.as_bytes(), &mut given).is_err() {
        return Err(AuthError::BadSignature(MISMATCH.into()));
    }
    let mut m = key.0.clone();
    let scope = [ALGORITHM, "\n", &p.amz_date, "\n", &p.date, "/", &p.region, "/", &p.service, "/aws4_request\n"];
    scope.iter().for_each(|s| m.update(s.as_bytes()));
    m.update(&hex32(&Sha256::digest(canonical.as_bytes()).into()));
    m.verify_slice(&given).map_err(|_| AuthError::BadSignature(MISMATCH.into()))
}

#[cfg(test)]
mod tests;
