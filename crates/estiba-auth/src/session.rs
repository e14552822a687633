//! Temporary credentials estiba issues itself (STS AssumeRole, task roles), without storing
//! them: every server holding the same root key verifies them alone.
//!
//! - The access key id is `ASIA` and 16 random base-32 characters.
//! - The session token is the session's claims (account, role ARN, session name, access key
//!   id, expiry, optional session policy) as JSON, sealed with AES-256-GCM under a key derived
//!   from the root key: `v1.` + base64url(nonce ‖ ciphertext ‖ tag). It cannot be forged or
//!   altered without the key, and it names the one access key it belongs to.
//! - The secret access key is derived: HMAC-SHA256 of the access key id under a second key
//!   derived from the root key, so nothing needs remembering between issue and use.
//!
//! A request signed with such keys is verified by opening the token, checking that it names the
//! request's access key, checking the expiry (`ExpiredToken`), recomputing the secret and
//! checking the signature ([`crate::Keyring::verify_with`]).
//!
//! May not: read the clock (callers pass `now`), store anything, or log key material. Issued
//! keys cannot be revoked before their expiry (short of changing the root key, which revokes
//! them all).

use base64::Engine;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};
use sha2::Sha256;

const TOKEN_PREFIX: &str = "v1.";
const AAD: &[u8] = b"estiba sts session v1";
const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// What a session token says about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account the session acts in (the role's).
    pub account: String,
    pub role_arn: String,
    pub session_name: String,
    pub access_key: String,
    /// Unix seconds after which the keys are refused with `ExpiredToken`.
    pub expires: i64,
    /// The session policy given to AssumeRole, as JSON text.
    pub policy: Option<String>,
}

impl Session {
    /// The role's name: the last segment of `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
    pub fn role_name(&self) -> &str {
        role_name(&self.role_arn).unwrap_or(&self.role_arn)
    }
}

/// The name of a role ARN (`arn:aws:iam::ACCOUNT:role/[PATH/]NAME`), `None` when it is not one.
pub fn role_name(arn: &str) -> Option<&str> {
    let (account, resource) = role_parts(arn)?;
    let _ = account;
    resource.rsplit('/').next().filter(|n| !n.is_empty())
}

/// A role as ECS takes it (an ARN, or a short name such as `app` or `path/app` in `account`),
/// as an ARN.
pub fn role_arn(role: &str, account: &str) -> String {
    if role.starts_with("arn:") {
        role.to_owned()
    } else {
        format!("arn:aws:iam::{account}:role/{role}")
    }
}

/// The account of a role ARN.
pub fn role_account(arn: &str) -> Option<&str> {
    role_parts(arn).map(|(a, _)| a)
}

fn role_parts(arn: &str) -> Option<(&str, &str)> {
    let mut p = arn.splitn(6, ':');
    let (a, partition, service, region, account, resource) =
        (p.next()?, p.next()?, p.next()?, p.next()?, p.next()?, p.next()?);
    let ok = a == "arn"
        && partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit());
    let rest = resource.strip_prefix("role/")?;
    (ok && !rest.is_empty()).then_some((account, resource))
}

/// A stable unique id for a role (`AROA` + 17 base-32 characters), from its account and name.
pub fn role_id(account: &str, name: &str) -> String {
    use sha2::Digest;
    let h = Sha256::digest(format!("role {account}/{name}").as_bytes());
    let tail: String = h.iter().take(17).map(|b| B32[(*b & 31) as usize] as char).collect();
    format!("AROA{tail}")
}

/// Keys issued for a session.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub access_key: String,
    pub secret: String,
    pub token: String,
    pub expires: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("access_key", &self.access_key).field("expires", &self.expires).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no randomness available")]
    Random,
}

/// Issues and opens temporary credentials under one root key.
pub struct Issuer {
    seal: LessSafeKey,
    derive: [u8; 32],
    rng: SystemRandom,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issuer(..)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

impl Issuer {
    /// An issuer whose keys derive from `root` (32 secret bytes, the same on every server).
    pub fn new(root: &[u8; 32]) -> Issuer {
        let seal = hmac(root, b"estiba session token key");
        let derive = hmac(root, b"estiba session secret key");
        let seal = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &seal).expect("a 32-byte key"));
        Issuer { seal, derive, rng: SystemRandom::new() }
    }

    /// The secret access key of an issued access key id.
    pub fn secret_for(&self, access_key: &str) -> String {
        let mac = hmac(&self.derive, access_key.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(&mac[..30])
    }

    /// Issues keys for a session in `account` as `role_arn`, valid until `expires`.
    pub fn issue(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
        policy: Option<&str>,
        expires: i64,
    ) -> Result<Issued, SessionError> {
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw).map_err(|_| SessionError::Random)?;
        let access_key = format!("ASIA{}", raw.iter().map(|b| B32[(*b & 31) as usize] as char).collect::<String>());
        let claims = json!({
            "a": account,
            "r": role_arn,
            "s": session_name,
            "k": access_key,
            "e": expires,
            "p": policy,
        });
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SessionError::Random)?;
        let mut buf = serde_json::to_vec(&claims).expect("JSON");
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut buf)
            .map_err(|_| SessionError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out));
        Ok(Issued { secret: self.secret_for(&access_key), access_key, token, expires })
    }

    /// The session a token seals, if it was sealed by this issuer's root key.
    pub fn open(&self, token: &str) -> Option<Session> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.strip_prefix(TOKEN_PREFIX)?).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self.seal.open_in_place(nonce, Aad::from(AAD), &mut buf).ok()?;
        let v: Value = serde_json::from_slice(plain).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Session {
            account: s("a")?,
            role_arn: s("r")?,
            session_name: s("s")?,
            access_key: s("k")?,
            expires: v.get("e")?.as_i64()?,
            policy: s("p"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_role_names_become_arns() {
        assert_eq!(role_arn("app", "111111111111"), "arn:aws:iam::111111111111:role/app");
        assert_eq!(role_arn("arn:aws:iam::2:role/x", "1"), "arn:aws:iam::2:role/x");
    }

    #[test]
    fn issued_tokens_open_only_under_their_root_key() {
        let i = Issuer::new(&[7; 32]);
        let k = i.issue("111111111111", "arn:aws:iam::111111111111:role/app", "s1", Some("{}"), 1000).unwrap();
        assert!(k.access_key.starts_with("ASIA") && k.access_key.len() == 20);
        assert_eq!(k.secret, i.secret_for(&k.access_key));
        assert_eq!(k.secret.len(), 40);
        let s = i.open(&k.token).unwrap();
        assert_eq!(
            s,
            Session {
                account: "111111111111".into(),
                role_arn: "arn:aws:iam::111111111111:role/app".into(),
                session_name: "s1".into(),
                access_key: k.access_key.clone(),
                expires: 1000,
                policy: Some("{}".into()),
            }
        );
        assert_eq!(s.role_name(), "app");
        // Another root key neither opens the token nor derives the same secret.
        let other = Issuer::new(&[8; 32]);
        assert!(other.open(&k.token).is_none());
        assert_ne!(other.secret_for(&k.access_key), k.secret);
        // A token with one byte changed does not open.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&k.token[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let forged = format!("v1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
        assert!(i.open(&forged).is_none());
        assert!(i.open("garbage").is_none() && i.open("v1.").is_none());
        // Two issues differ.
        let k2 = i.issue("111111111111", "arn:aws:iam::111111111111:role/app", "s1", None, 1000).unwrap();
        assert_ne!(k2.access_key, k.access_key);
        assert_eq!(i.open(&k2.token).unwrap().policy, None);
    }

    #[test]
    fn role_arns() {
        assert_eq!(role_name("arn:aws:iam::123456789012:role/app"), Some("app"));
        assert_eq!(role_name("arn:aws:iam::123456789012:role/path/to/app"), Some("app"));
        assert_eq!(role_account("arn:aws:iam::123456789012:role/app"), Some("123456789012"));
        assert_eq!(role_name("arn:aws:iam::123456789012:user/app"), None);
        assert_eq!(role_name("arn:aws:iam::12345:role/app"), None);
        assert_eq!(role_name("arn:aws:s3:::bucket"), None);
        assert_eq!(role_name("arn:aws:iam::123456789012:role/"), None);
        let id = role_id("123456789012", "app");
        assert!(id.starts_with("AROA") && id.len() == 21);
        assert_ne!(id, role_id("123456789012", "other"));
    }
}
