//! Image references as Docker and ECS write them: `busybox`, `library/busybox:1.36`,
//! `127.0.0.1:5000/team/app@sha256:...`, `public.ecr.aws/nginx/nginx:latest`.

use std::fmt;

use crate::Error;

/// Docker Hub's registry host, where references without a registry go.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]` of the registry.
    pub registry: String,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` when the reference pins a digest.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Reference(format!("invalid image reference '{s}': {why}"));
        if s.is_empty() || s.len() > 1024 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it is empty, too long, or holds spaces"));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let hex = d.strip_prefix("sha256:").ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                    return Err(bad("the digest is not sha256:<64 lowercase hex>"));
                }
                (n, Some(d.to_owned()))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(name[last_slash + i + 1..].to_owned())),
            None => (name, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("the tag may hold letters, digits, '_', '.' and '-' (at most 128)"));
            }
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), path.to_owned()),
        };
        let registry =
            if registry == "docker.io" || registry == "index.docker.io" { DOCKER_HUB.to_owned() } else { registry };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if repository.len() > 255 || !repository.split('/').all(component_ok) {
            return Err(bad("the repository path holds lowercase letters, digits and separators"));
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn target(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// Whether the registry speaks plain HTTP: loopback hosts, and those listed by the
    /// operator (see `Puller::insecure`).
    pub fn is_loopback(&self) -> bool {
        let host = self.registry.rsplit_once(':').map_or(self.registry.as_str(), |(h, _)| h);
        host == "localhost" || host == "127.0.0.1" || host == "[::1]" || host.starts_with("127.")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    #[test]
    fn docker_rules() {
        assert_eq!(p("busybox"), (DOCKER_HUB.into(), "library/busybox".into(), Some("latest".into()), None));
        assert_eq!(p("nginx:1.25"), (DOCKER_HUB.into(), "library/nginx".into(), Some("1.25".into()), None));
        assert_eq!(p("team/app"), (DOCKER_HUB.into(), "team/app".into(), Some("latest".into()), None));
        assert_eq!(p("docker.io/library/redis:7"), (DOCKER_HUB.into(), "library/redis".into(), Some("7".into()), None));
        assert_eq!(p("127.0.0.1:5000/a/b:v1"), ("127.0.0.1:5000".into(), "a/b".into(), Some("v1".into()), None));
        assert_eq!(p("localhost/app"), ("localhost".into(), "app".into(), Some("latest".into()), None));
        assert_eq!(
            p("public.ecr.aws/nginx/nginx:latest"),
            ("public.ecr.aws".into(), "nginx/nginx".into(), Some("latest".into()), None)
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(p(&format!("reg.io:443/x@{d}")), ("reg.io:443".into(), "x".into(), None, Some(d.clone())));
        assert_eq!(p(&format!("x:t@{d}")).2, Some("t".into()));
        assert!(Reference::parse("127.0.0.1:5000/a").unwrap().is_loopback());
        assert!(!Reference::parse("busybox").unwrap().is_loopback());
        assert_eq!(Reference::parse("busybox").unwrap().to_string(), "registry-1.docker.io/library/busybox:latest");
    }

    #[test]
    fn rejects() {
        for bad in ["", "UPPER/case", "a b", "x@sha256:123", "x:bad tag", "x:-t", "a//b", "x@md5:abc", "-x"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
