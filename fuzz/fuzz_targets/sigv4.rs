//! Feeds an HTTP request, written as text (`METHOD /path?query HTTP/1.1`, `Name:value` header
//! lines, a blank line, the body), to SigV4 verification: `sigv4::parse` (header and presigned
//! forms), `pairs`, the canonical request, the time checks and the signature check with a
//! known key, and to estiba-api's `CredentialScope::parse`.
//! Invariants: no panic; a request whose signature parses is on time at its own `X-Amz-Date`;
//! its date prints back to itself.
//! The seeds are AWS's SigV4 test suite (crates/estiba-auth/testdata/v4), signed with the key
//! below: they verify, and mutations of them reach every step after the parse.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use estiba_auth::sigv4::{self, Family, SignedRequest};
use estiba_auth::Keyring;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

static KEYRING: LazyLock<Keyring> = LazyLock::new(|| {
    let file = "[suite]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\naccount = 000000000000\n";
    Keyring::parse(file, Path::new("/nonexistent")).expect("the suite's key")
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or("").splitn(3, ' ');
    let method = request_line.next().unwrap_or("");
    let target = request_line.next().unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            headers.append(name, value);
        }
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let _ = estiba_api::CredentialScope::parse(auth).map(|s| s.account_from_access_key());
    }
    for (k, v) in sigv4::pairs(query.unwrap_or("")) {
        std::hint::black_box((k, v));
    }
    let req =
        SignedRequest { method, path, query, headers: &headers, body_sha256: Sha256::digest(body.as_bytes()).into() };
    match sigv4::parse(&req) {
        Ok(p) => {
            assert_eq!(sigv4::check_time(&p, p.time), Ok(()), "a request is on time at its own date");
            assert_eq!(estiba_auth::parse_amz_date(&estiba_auth::amz_date(p.time)), Some(p.time));
            let mut canonical = String::new();
            std::hint::black_box(sigv4::canonical_request(&req, &p, &mut canonical).is_ok());
            std::hint::black_box(sigv4::check_signature(&sigv4::SigningKey::new(&[0; 32]), &req, &p).is_err());
            if let Err(e) = KEYRING.verify_parsed(&req, &p, p.time, None) {
                for f in [Family::Json, Family::Query, Family::Ec2] {
                    std::hint::black_box(e.code(f));
                }
            }
        }
        Err(e) => {
            for f in [Family::Json, Family::Query, Family::Ec2] {
                std::hint::black_box(e.code(f));
            }
        }
    }
});
