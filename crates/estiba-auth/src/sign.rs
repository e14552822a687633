//! Signing a request with Signature Version 4 (header form), for estiba's own clients
//! (`estiba exec`): the same canonical request [`crate::sigv4`] verifies.
//!
//! May not: read credentials or the clock (the caller passes them).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Credentials to sign with (a session token for temporary ones).
#[derive(Clone, Debug)]
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    pub region: String,
    pub service: String,
}

impl Signer {
    /// The headers to add to a request of `method` to `host` + `path` (no query) with
    /// `headers` (lowercase names) and `body`, signed at Unix time `now`: `x-amz-date`,
    /// `x-amz-security-token` when there is a session token, and `authorization`.
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        now: i64,
    ) -> Vec<(String, String)> {
        let amz_date = crate::amz_date(now);
        let date = &amz_date[..8];
        let mut signed: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned())).collect();
        signed.push(("host".into(), host.to_owned()));
        signed.push(("x-amz-date".into(), amz_date.clone()));
        let mut added = vec![("x-amz-date".to_owned(), amz_date.clone())];
        if let Some(t) = &self.session_token {
            signed.push(("x-amz-security-token".into(), t.clone()));
            added.push(("x-amz-security-token".into(), t.clone()));
        }
        signed.sort();
        let names: Vec<&str> = signed.iter().map(|(k, _)| k.as_str()).collect();
        let signed_headers = names.join(";");
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let canonical =
            format!("{method}\n{path}\n\n{canonical_headers}\n{signed_headers}\n{}", hex::encode(Sha256::digest(body)));
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let sts =
            format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
        let key = crate::sigv4::signing_key(&self.secret_key, date, &self.region, &self.service);
        let mut m = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        m.update(sts.as_bytes());
        let signature = hex::encode(m.finalize().into_bytes());
        added.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access_key
            ),
        ));
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::{check_signature, parse, signing_key, SignedRequest, SigningKey};

    #[test]
    fn what_it_signs_the_verifier_accepts() {
        let s = Signer {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("tok".into()),
            region: "us-east-1".into(),
            service: "ecs".into(),
        };
        let body = br#"{"cluster":"c"}"#;
        let base = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "X.Y")];
        let added = s.sign("POST", "127.0.0.1:4566", "/", &base, body, 1_700_000_000);
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "127.0.0.1:4566".parse().unwrap());
        for (k, v) in base.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(added) {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: None,
            headers: &headers,
            body_sha256: Sha256::digest(body).into(),
        };
        let p = parse(&req).unwrap();
        let key = signing_key(&s.secret_key, &p.date, &p.region, &p.service);
        check_signature(&SigningKey::new(&key), &req, &p).unwrap();
        let other = signing_key("another", &p.date, &p.region, &p.service);
        assert!(check_signature(&SigningKey::new(&other), &req, &p).is_err());
    }
}
