//! Image manifests and indexes: which media types are accepted, and what they point at.

use serde::Deserialize;

use crate::{Code, Digest, RegistryError};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// OCI's empty config, which artifacts use.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Larger manifests are refused (the limit the reference registry and ECR apply).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The media types a manifest may be pushed with.
pub const ACCEPTED: &[&str] = &[DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX];

/// A content descriptor.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A checked manifest or index.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub media_type: String,
    /// `artifactType`, or for an image manifest whose config is not an image config, the
    /// config's media type (as the referrers API reports it).
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// For an index: the manifests it lists.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }

    /// The blobs an image manifest needs (config and layers); nothing for an index.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter())
    }

    /// The size of the image: config and layers (what ECR reports as `imageSizeInBytes`).
    pub fn image_size(&self) -> i64 {
        self.blobs().map(|d| d.size.max(0)).sum()
    }

    /// Parses and checks `body`, pushed with `content_type` (the `Content-Type` header).
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, RegistryError> {
        let invalid = |m: String| RegistryError::new(Code::ManifestInvalid, m);
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::new(
                Code::SizeInvalid,
                format!("the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} are accepted", body.len()),
            ));
        }
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| invalid(format!("the manifest is not valid JSON: {e}")))?;
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
        if let Some(t) = header.filter(|t| DOCKER_SCHEMA1.contains(t)) {
            return Err(RegistryError::new(
                Code::ManifestInvalid,
                format!("{t} (Docker image manifest schema 1) is not supported; push schema 2 or OCI"),
            ));
        }
        if raw.schema_version != Some(2) {
            return Err(invalid(format!(
                "schemaVersion must be 2 (got {})",
                raw.schema_version.map_or("none".into(), |v| v.to_string())
            )));
        }
        let media_type = match (header, raw.media_type.as_deref()) {
            (Some(h), Some(m)) if h != m => {
                return Err(invalid(format!("the Content-Type {h} does not match the manifest's mediaType {m}")))
            }
            (Some(h), _) => h.to_owned(),
            (None, Some(m)) => m.to_owned(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        if !ACCEPTED.contains(&media_type.as_str()) {
            return Err(invalid(format!(
                "unsupported manifest media type {media_type}; accepted: {}",
                ACCEPTED.join(", ")
            )));
        }
        let index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
        let check = |d: &Descriptor, what: &str| -> Result<(), RegistryError> {
            Digest::parse(&d.digest).map_err(|e| invalid(format!("{what}: {}", e.message)))?;
            if d.size < 0 {
                return Err(invalid(format!("{what}: size must not be negative")));
            }
            if d.media_type.is_empty() {
                return Err(invalid(format!("{what}: mediaType is required")));
            }
            Ok(())
        };
        let (config, layers, manifests) = if index {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index holds manifests, not config or layers".into()));
            }
            let manifests = raw.manifests.ok_or_else(|| invalid("an index needs a manifests array".into()))?;
            for (i, d) in manifests.iter().enumerate() {
                check(d, &format!("manifests[{i}]"))?;
            }
            (None, Vec::new(), manifests)
        } else {
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest holds config and layers, not manifests".into()));
            }
            let config = raw.config.ok_or_else(|| invalid("an image manifest needs a config descriptor".into()))?;
            check(&config, "config")?;
            let layers = raw.layers.unwrap_or_default();
            if media_type == DOCKER_MANIFEST && layers.is_empty() {
                return Err(invalid("a Docker image manifest needs at least one layer".into()));
            }
            for (i, d) in layers.iter().enumerate() {
                check(d, &format!("layers[{i}]"))?;
            }
            (Some(config), layers, Vec::new())
        };
        if let Some(s) = &raw.subject {
            check(s, "subject")?;
        }
        let artifact_type = raw.artifact_type.clone().or_else(|| {
            config.as_ref().map(|c| c.media_type.clone()).filter(|t| {
                t != "application/vnd.oci.image.config.v1+json"
                    && t != "application/vnd.docker.container.image.v1+json"
                    && !index
            })
        });
        Ok(Manifest {
            media_type,
            artifact_type,
            config,
            layers,
            manifests,
            subject: raw.subject,
            annotations: raw.annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: &str) -> String {
        Digest::of(n.as_bytes()).to_string()
    }

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d("c"), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d("l"), "size": 10}],
        });
        if let Some(t) = media_type {
            v["mediaType"] = t.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn image_manifests() {
        let m = Manifest::parse(&image(Some(OCI_MANIFEST)), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.image_size(), 12);
        assert_eq!(m.blobs().count(), 2);
        assert!(m.artifact_type.is_none());
        // The media type comes from the body when the header says nothing useful.
        assert_eq!(Manifest::parse(&image(None), None).unwrap().media_type, OCI_MANIFEST);
        assert_eq!(
            Manifest::parse(&image(Some(OCI_MANIFEST)), Some("application/json")).unwrap().media_type,
            OCI_MANIFEST
        );
    }

    #[test]
    fn indexes_and_artifacts() {
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d("m"), "size": 100, "platform": {"os": "linux", "architecture": "amd64"}}]});
        let m = Manifest::parse(&serde_json::to_vec(&idx).unwrap(), Some(OCI_INDEX)).unwrap();
        assert!(m.is_index());
        assert_eq!(m.manifests.len(), 1);
        let art = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": OCI_EMPTY, "digest": d("{}"), "size": 2}, "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d("m"), "size": 100}});
        let m = Manifest::parse(&serde_json::to_vec(&art).unwrap(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.example.sbom"));
        assert_eq!(m.subject.unwrap().digest, d("m"));
    }

    #[test]
    fn refuses_what_is_wrong() {
        let cases: Vec<(Vec<u8>, Option<&str>, Code)> = vec![
            (b"not json".to_vec(), None, Code::ManifestInvalid),
            (image(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST), Code::ManifestInvalid),
            (image(Some("application/vnd.example")), None, Code::ManifestInvalid),
            (br#"{"schemaVersion":1,"name":"x"}"#.to_vec(), Some(DOCKER_SCHEMA1[1]), Code::ManifestInvalid),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#.to_vec(),
                None,
                Code::ManifestInvalid,
            ),
            (
                br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1}}"#.to_vec(),
                None,
                Code::ManifestInvalid,
            ),
            (vec![b' '; MAX_MANIFEST_BYTES + 1], None, Code::SizeInvalid),
        ];
        for (body, ct, code) in cases {
            let e = Manifest::parse(&body, ct).unwrap_err();
            assert_eq!(e.code, code, "{}", e.message);
        }
    }
}
