//! Content digests. Only `sha256` is accepted: it is what every client pushes, and what ECR
//! supports.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::{Code, RegistryError};

/// A checked `sha256:<64 lowercase hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, RegistryError> {
        let invalid = |why: &str| RegistryError::new(Code::DigestInvalid, format!("invalid digest {s:?}: {why}"));
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(invalid("expected <algorithm>:<hex>"));
        };
        if alg != "sha256" {
            return Err(invalid("only sha256 digests are supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("a sha256 digest has 64 lowercase hex digits"));
        }
        Ok(Digest(s.to_owned()))
    }

    pub fn of(data: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    pub(crate) fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// Whether `s` looks like a digest rather than a tag (tags cannot hold `:`).
    pub fn is_digest_like(s: &str) -> bool {
        s.contains(':')
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let d = Digest::of(b"");
        assert_eq!(d.as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        for bad in ["", "sha256", "sha256:abc", "md5:e3b0", &d.as_str().to_uppercase(), "sha256:../../etc/passwd"] {
            assert_eq!(Digest::parse(bad).unwrap_err().code, Code::DigestInvalid, "{bad}");
        }
    }
}
