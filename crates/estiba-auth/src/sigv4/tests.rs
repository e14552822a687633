//! The verifier against AWS's published signing test suite (`testdata/v4`) and against the
//! `aws-sigv4` crate as a signing oracle, plus property tests of the parser.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::credentials::{Access, Credential, Keyring};

/// A request as received: method, path, query, headers, body.
struct Raw {
    method: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn signed(&self) -> SignedRequest<'_> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            body_sha256: Sha256::digest(&self.body).into(),
        }
    }
}

/// Reads one of the suite's `*-signed-request.txt` files (folded header lines are joined
/// with a space, as the suite's canonical requests have them).
fn read_request(text: &str) -> Raw {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap().to_owned();
    let target = first[method.len() + 1..first.rfind(" HTTP/").unwrap()].to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target, None),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            let last = pairs.last_mut().unwrap();
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (k, v) = line.split_once(':').unwrap();
            pairs.push((k.to_owned(), v.to_owned()));
        }
    }
    let mut headers = http::HeaderMap::new();
    for (k, v) in pairs {
        headers.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(&v).unwrap());
    }
    Raw { method, path, query, headers, body: body.as_bytes().to_vec() }
}

fn credential(ak: &str, sk: &str, token: Option<&str>) -> Credential {
    Credential {
        access_key: ak.into(),
        secret: sk.into(),
        account: "111111111111".into(),
        user: "test".into(),
        session_token: token.map(str::to_owned),
        expires: None,
        access: Access::Full,
        role: None,
    }
}

#[test]
fn aws_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/v4");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let ctx: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("context.json")).unwrap()).unwrap();
        let c = &ctx["credentials"];
        let token = c["token"].as_str();
        let keys = Keyring::new([credential(
            c["access_key_id"].as_str().unwrap(),
            c["secret_access_key"].as_str().unwrap(),
            token,
        )]);
        let now = crate::time::parse_rfc3339(ctx["timestamp"].as_str().unwrap()).unwrap();
        for form in ["header", "query"] {
            let text = std::fs::read_to_string(case.join(format!("{form}-signed-request.txt"))).unwrap();
            let mut raw = read_request(&text);
            // A token added to the query after signing changes the canonical query: AWS refuses
            // that, so the presigned form of `post-sts-header-after` is not a valid request.
            if form == "query" && ctx["omit_session_token"].as_bool() == Some(true) {
                assert!(matches!(keys.verify(&raw.signed(), now), Err(AuthError::BadSignature(_))), "{name}");
                continue;
            }
            if let Some(t) = token.filter(|_| form == "header" && !raw.headers.contains_key("x-amz-security-token")) {
                raw.headers.insert("x-amz-security-token", t.parse().unwrap());
            }
            let r = keys.verify(&raw.signed(), now);
            assert!(r.is_ok(), "{name} ({form}): {r:?}");
            cases += 1;
            // Any change to what is signed is caught.
            let mut other = raw.signed();
            other.method = if raw.method == "GET" { "POST" } else { "GET" };
            assert!(matches!(keys.verify(&other, now), Err(AuthError::BadSignature(_))), "{name} ({form})");
            let mut other = raw.signed();
            other.body_sha256[0] ^= 1;
            assert!(keys.verify(&other, now).is_err(), "{name} ({form}) body");
            if form == "header" {
                assert!(matches!(keys.verify(&raw.signed(), now + 901), Err(AuthError::Expired(_))));
                assert!(matches!(keys.verify(&raw.signed(), now - 901), Err(AuthError::NotYetCurrent(_))));
            } else {
                assert!(keys.verify(&raw.signed(), now + 3600).is_ok(), "{name}: valid until X-Amz-Expires");
                assert!(matches!(keys.verify(&raw.signed(), now + 3601), Err(AuthError::Expired(_))));
            }
            let wrong = Keyring::new([credential(c["access_key_id"].as_str().unwrap(), "other", token)]);
            assert!(matches!(wrong.verify(&raw.signed(), now), Err(AuthError::BadSignature(_))), "{name}");
            assert_eq!(Keyring::default().verify(&raw.signed(), now).unwrap_err(), AuthError::UnknownKey);
        }
    }
    assert!(cases >= 60, "only {cases} suite requests found");
}

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const NOW: u64 = 1_764_680_000;

/// Signs `raw` with `aws-sigv4` (headers or presigned query), as an SDK would.
fn oracle_sign(raw: &mut Raw, service: &str, presign: bool, token: Option<&str>, at: u64) {
    oracle_sign_as(raw, service, presign, (AK, SK), token, at)
}

fn oracle_sign_as(raw: &mut Raw, service: &str, presign: bool, key: (&str, &str), token: Option<&str>, at: u64) {
    let creds = aws_credential_types::Credentials::new(key.0, key.1, token.map(str::to_owned), None, "test");
    let identity = creds.into();
    let mut settings = SigningSettings::default();
    if presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(900));
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-3")
        .name(service)
        .time(UNIX_EPOCH + Duration::from_secs(at))
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let uri = match &raw.query {
        Some(q) => format!("http://127.0.0.1:4566{}?{q}", raw.path),
        None => format!("http://127.0.0.1:4566{}", raw.path),
    };
    let headers: Vec<(String, String)> =
        raw.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
    let req = SignableRequest::new(
        &raw.method,
        uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&raw.body),
    )
    .unwrap();
    let (instructions, _sig) = sign(req, &params).unwrap().into_parts();
    let (hs, qs) = instructions.into_parts();
    for h in hs {
        raw.headers.insert(http::HeaderName::from_static(h.name()), h.value().parse().unwrap());
    }
    if !qs.is_empty() {
        let mut q = raw.query.clone().unwrap_or_default();
        for (k, v) in qs {
            if !q.is_empty() {
                q.push('&');
            }
            let mut ev = String::new();
            encode_into(&mut ev, v.as_bytes(), false);
            q.push_str(&format!("{k}={ev}"));
        }
        raw.query = Some(q);
    }
}

fn json_request(body: &str) -> Raw {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "127.0.0.1:4566".parse().unwrap());
    headers.insert("content-type", "application/x-amz-json-1.1".parse().unwrap());
    headers.insert("x-amz-target", "AmazonEC2ContainerServiceV20141113.ListClusters".parse().unwrap());
    headers.insert("user-agent", "Boto3/1.43  Python/3.11".parse().unwrap());
    Raw { method: "POST".into(), path: "/".into(), query: None, headers, body: body.as_bytes().to_vec() }
}

fn keys(token: Option<&str>) -> Keyring {
    Keyring::new([credential(AK, SK, token)])
}

#[test]
fn oracle_json_and_query() {
    let mut raw = json_request(r#"{"maxResults": 5}"#);
    oracle_sign(&mut raw, "ecs", false, None, NOW);
    let v = keys(None).verify(&raw.signed(), NOW as i64).unwrap();
    assert_eq!(
        (v.region.as_str(), v.service.as_str(), v.credential.account.as_str()),
        ("eu-west-3", "ecs", "111111111111")
    );
    // The signature's hex digits in upper case are the same signature; one digit short is none.
    let auth = raw.headers["authorization"].to_str().unwrap().to_owned();
    let (head, sig) = auth.split_once("Signature=").unwrap();
    for (changed, ok) in [(sig.to_uppercase(), true), (sig[1..].to_owned(), false)] {
        let mut r = json_request(r#"{"maxResults": 5}"#);
        r.headers = raw.headers.clone();
        r.headers.insert("authorization", format!("{head}Signature={changed}").parse().unwrap());
        match keys(None).verify(&r.signed(), NOW as i64) {
            Ok(_) => assert!(ok, "a 63-digit signature was accepted"),
            Err(e) => assert!(!ok && matches!(e, AuthError::BadSignature(_)), "{e:?}"),
        }
    }
    // A header the client did not sign may change; a signed one may not.
    raw.headers.insert("user-agent", "other".parse().unwrap());
    assert!(keys(None).verify(&raw.signed(), NOW as i64).is_ok());
    raw.headers.insert("x-amz-target", "AmazonEC2ContainerServiceV20141113.DeleteCluster".parse().unwrap());
    assert!(matches!(keys(None).verify(&raw.signed(), NOW as i64), Err(AuthError::BadSignature(_))));

    // A presigned STS GetCallerIdentity, as `generate_presigned_url` makes it.
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "127.0.0.1:4566".parse().unwrap());
    let mut raw = Raw {
        method: "GET".into(),
        path: "/".into(),
        query: Some("Action=GetCallerIdentity&Version=2011-06-15".into()),
        headers,
        body: vec![],
    };
    oracle_sign(&mut raw, "sts", true, Some("tok/en+="), NOW);
    assert!(raw.query.as_deref().unwrap().contains("X-Amz-Signature="));
    assert!(keys(Some("tok/en+=")).verify(&raw.signed(), NOW as i64 + 899).is_ok());
    assert!(matches!(keys(Some("tok/en+=")).verify(&raw.signed(), NOW as i64 + 901), Err(AuthError::Expired(_))));
    assert_eq!(keys(Some("other")).verify(&raw.signed(), NOW as i64).unwrap_err(), AuthError::UnknownKey);
    assert_eq!(keys(None).verify(&raw.signed(), NOW as i64).unwrap_err(), AuthError::UnknownKey);
    let mut expired = credential(AK, SK, Some("tok/en+="));
    expired.expires = Some(NOW as i64 - 1);
    assert_eq!(Keyring::new([expired]).verify(&raw.signed(), NOW as i64).unwrap_err(), AuthError::ExpiredToken);
}

#[test]
fn missing_and_malformed() {
    let raw = json_request("{}");
    assert_eq!(keys(None).verify(&raw.signed(), NOW as i64).unwrap_err(), AuthError::Missing);
    let mut raw = json_request("{}");
    raw.headers.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIA/20250101/us-east-1/ecs/aws4_request".parse().unwrap(),
    );
    let Err(AuthError::Incomplete(m)) = keys(None).verify(&raw.signed(), NOW as i64) else { panic!() };
    assert!(m.contains("requires 'Signature' parameter") && m.contains("'X-Amz-Date'"), "{m}");
    raw.headers.insert("authorization", "AWS AKIA:abc".parse().unwrap());
    assert!(matches!(keys(None).verify(&raw.signed(), NOW as i64), Err(AuthError::Incomplete(_))));
}

#[test]
fn error_codes_per_family() {
    let c = |e: AuthError, f| {
        let c = e.code(f);
        (c.code, c.status)
    };
    assert_eq!(c(AuthError::Missing, Family::Json), ("MissingAuthenticationTokenException", 400));
    assert_eq!(c(AuthError::Missing, Family::Query), ("MissingAuthenticationToken", 403));
    assert_eq!(c(AuthError::UnknownKey, Family::Json), ("UnrecognizedClientException", 400));
    assert_eq!(c(AuthError::UnknownKey, Family::Query), ("InvalidClientTokenId", 403));
    assert_eq!(c(AuthError::UnknownKey, Family::Ec2), ("AuthFailure", 401));
    assert_eq!(c(AuthError::BadSignature(MISMATCH.into()), Family::Json), ("InvalidSignatureException", 400));
    assert_eq!(c(AuthError::BadSignature(MISMATCH.into()), Family::Query), ("SignatureDoesNotMatch", 403));
    assert_eq!(c(AuthError::Expired(String::new()), Family::Ec2), ("RequestExpired", 400));
    assert_eq!(c(AuthError::ExpiredToken, Family::Json), ("ExpiredTokenException", 400));
    assert_eq!(c(AuthError::ExpiredToken, Family::Query), ("ExpiredToken", 403));
    let p = Parsed {
        credential: format!("{AK}/20150830/r/s/aws4_request").into(),
        access_key: AK.into(),
        date: "20150830".into(),
        region: "r".into(),
        service: "s".into(),
        signed_headers: "host".into(),
        signature: "".into(),
        amz_date: "20150830T123600Z".into(),
        time: 1440938160,
        expires: None,
        security_token: None,
    };
    assert_eq!(
        check_time(&p, 1440938160 + 3600).unwrap_err().to_string(),
        "Signature expired: 20150830T123600Z is now earlier than 20150830T132100Z (20150830T133600Z - 15 min.)"
    );
    assert_eq!(
        check_time(&p, 1440938160 - 3600).unwrap_err().to_string(),
        "Signature not yet current: 20150830T123600Z is still later than 20150830T115100Z (20150830T113600Z + 15 min.)"
    );
}

/// Paths, queries and header values an SDK may send.
fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9._~-]{1,8}|%2F|%20|%C3%A9", 0..4).prop_map(|segs| format!("/{}", segs.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever `aws-sigv4` signs (header or presigned), the verifier accepts; and a change to
    /// the body is refused.
    #[test]
    fn oracle_agrees(
        path in path_strategy(),
        query in prop::collection::vec(("[a-zA-Z0-9_.~-]{1,6}", "[a-zA-Z0-9 /+=_.~-]{0,8}"), 0..4),
        hv in "[ -~]{0,20}",
        body in prop::collection::vec(any::<u8>(), 0..64),
        presign in any::<bool>(),
    ) {
        let q: Vec<String> = query.iter().map(|(k, v)| {
            let mut ev = String::new();
            encode_into(&mut ev, v.as_bytes(), false);
            format!("{k}={ev}")
        }).collect();
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "127.0.0.1:4566".parse().unwrap());
        headers.insert("x-custom", http::HeaderValue::from_str(&hv).unwrap());
        let mut raw = Raw {
            method: "POST".into(),
            path,
            query: (!q.is_empty()).then(|| q.join("&")),
            headers,
            body,
        };
        oracle_sign(&mut raw, "monitoring", presign, None, NOW);
        let k = keys(None);
        prop_assert!(k.verify(&raw.signed(), NOW as i64).is_ok(), "{:?} {:?}", raw.path, raw.query);
        let mut other = raw.signed();
        other.body_sha256[31] ^= 0x80;
        prop_assert!(k.verify(&other, NOW as i64).is_err());
    }

    /// The parser never panics, whatever the header or query.
    #[test]
    fn parser_total(auth in "\\PC{0,200}", query in "[ -~]{0,200}", date in "[0-9TZ]{0,18}") {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&auth) {
            headers.insert("authorization", v);
        }
        if let Ok(v) = http::HeaderValue::from_str(&date) {
            headers.insert("x-amz-date", v);
        }
        headers.insert("host", "h".parse().unwrap());
        let req = SignedRequest { method: "GET", path: "/", query: Some(&query), headers: &headers, body_sha256: [0; 32] };
        let _ = keys(None).verify(&req, NOW as i64);
        let req = SignedRequest { method: "GET", path: &query, query: None, headers: &headers, body_sha256: [0; 32] };
        let _ = keys(None).verify(&req, NOW as i64);
        let prefixed = format!("AWS4-HMAC-SHA256 Credential={auth}, SignedHeaders=host, Signature={date}");
        if let Ok(v) = http::HeaderValue::from_str(&prefixed) {
            headers.insert("authorization", v);
            let req = SignedRequest { method: "GET", path: "/", query: None, headers: &headers, body_sha256: [0; 32] };
            let _ = keys(None).verify(&req, NOW as i64);
        }
    }
}

/// Verification cost per request (a botocore-like ECS call, signing key cached). Run with
/// `cargo test -p estiba-auth --release -- --ignored bench_verify --nocapture`.
#[test]
#[ignore]
fn bench_verify() {
    let mut raw = json_request(r#"{"clusters": ["default"], "include": ["TAGS"]}"#);
    raw.headers.insert("content-length", "44".parse().unwrap());
    oracle_sign(&mut raw, "ecs", false, None, NOW);
    let k = keys(None);
    let body = raw.body.clone();
    for _ in 0..1000 {
        k.verify(&raw.signed(), NOW as i64).unwrap();
    }
    let n = 100_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        // The body hash is part of the cost: the front door hashes every body it verifies.
        let mut r = raw.signed();
        r.body_sha256 = Sha256::digest(&body).into();
        std::hint::black_box(k.verify(&r, NOW as i64).unwrap());
    }
    let per = t.elapsed() / n;
    println!("sigv4 verify (cached signing key, {} byte body): {per:?} per request", body.len());
}

#[test]
fn issued_session_keys() {
    use crate::session::Issuer;
    let issuer = Issuer::new(&[3; 32]);
    let role = "arn:aws:iam::222222222222:role/app";
    let k = issuer.issue("222222222222", role, "sess", None, NOW as i64 + 3600).unwrap();
    let file = "[role app]\naccount = 222222222222\npolicy = {\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"logs:*\",\"Resource\":\"*\"}}\n";
    let keys = Keyring::parse(file, std::path::Path::new(".")).unwrap();
    let mut raw = json_request("{}");
    oracle_sign_as(&mut raw, "ecs", false, (&k.access_key, &k.secret), Some(&k.token), NOW);
    let v = keys.verify_with(&raw.signed(), NOW as i64, Some(&issuer)).unwrap();
    let c = &v.credential;
    assert_eq!(c.account, "222222222222");
    assert_eq!(c.arn(), "arn:aws:sts::222222222222:assumed-role/app/sess");
    assert!(c.user_id().starts_with("AROA") && c.user_id().ends_with(":sess"));
    // The declared role's policy applies.
    assert_eq!(c.decide("logs", "CreateLogGroup", "*"), crate::Decision::Allow);
    assert_eq!(c.decide("ecs", "ListClusters", "*"), crate::Decision::ImplicitDeny);
    // Without the issuer (or with another root key) the key is unknown.
    assert_eq!(keys.verify(&raw.signed(), NOW as i64).unwrap_err(), AuthError::UnknownKey);
    let other = Issuer::new(&[4; 32]);
    assert_eq!(keys.verify_with(&raw.signed(), NOW as i64, Some(&other)).unwrap_err(), AuthError::UnknownKey);
    // Past the expiry: ExpiredToken (the request itself is fresh).
    let mut late = json_request("{}");
    oracle_sign_as(&mut late, "ecs", false, (&k.access_key, &k.secret), Some(&k.token), NOW + 3600);
    assert_eq!(
        keys.verify_with(&late.signed(), NOW as i64 + 3600, Some(&issuer)).unwrap_err(),
        AuthError::ExpiredToken
    );
    // Another session's token with this access key: unknown.
    let k2 = issuer.issue("222222222222", role, "sess", None, NOW as i64 + 3600).unwrap();
    let mut swapped = json_request("{}");
    oracle_sign_as(&mut swapped, "ecs", false, (&k.access_key, &k.secret), Some(&k2.token), NOW);
    assert_eq!(keys.verify_with(&swapped.signed(), NOW as i64, Some(&issuer)).unwrap_err(), AuthError::UnknownKey);
    // No token at all: unknown.
    let mut bare = json_request("{}");
    oracle_sign_as(&mut bare, "ecs", false, (&k.access_key, &k.secret), None, NOW);
    assert_eq!(keys.verify_with(&bare.signed(), NOW as i64, Some(&issuer)).unwrap_err(), AuthError::UnknownKey);
    // A wrong secret: bad signature.
    let mut wrong = json_request("{}");
    oracle_sign_as(&mut wrong, "ecs", false, (&k.access_key, "nope"), Some(&k.token), NOW);
    assert!(matches!(keys.verify_with(&wrong.signed(), NOW as i64, Some(&issuer)), Err(AuthError::BadSignature(_))));
    // A role the file does not declare (or no longer does) allows nothing, whatever the
    // session policy allows.
    let k3 = issuer
        .issue(
            "222222222222",
            "arn:aws:iam::222222222222:role/free",
            "s",
            Some(r#"{"Statement":{"Effect":"Allow","Action":"ecs:List*","Resource":"*"}}"#),
            NOW as i64 + 60,
        )
        .unwrap();
    let mut raw3 = json_request("{}");
    oracle_sign_as(&mut raw3, "ecs", false, (&k3.access_key, &k3.secret), Some(&k3.token), NOW);
    let c3 = keys.verify_with(&raw3.signed(), NOW as i64, Some(&issuer)).unwrap().credential;
    assert_eq!(c3.decide("ecs", "ListClusters", "*"), crate::Decision::ImplicitDeny);
    assert_eq!(c3.decide("ecs", "CreateCluster", "*"), crate::Decision::ImplicitDeny);
    assert!(c3
        .denied_message("ecs", "ListClusters", "*", crate::Decision::ImplicitDeny)
        .ends_with("because no identity-based policy allows the ecs:ListClusters action"));
    // The role's own policy refuses: identity-based.
    assert!(c
        .denied_message("ecs", "ListClusters", "*", crate::Decision::ImplicitDeny)
        .ends_with("because no identity-based policy allows the ecs:ListClusters action"));
}
