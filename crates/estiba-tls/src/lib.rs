//! TLS material and rustls configurations that estiba's listeners and clients share (ring as
//! the crypto provider everywhere):
//!
//! - [`load_certified_key`]: a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1
//!   or SEC1), for the server's listener (`estiba server --tls-cert/--tls-key`) and the load
//!   balancers' HTTPS and TLS listeners;
//! - [`server_config`]: a server configuration offering the given ALPN protocols;
//! - [`trust_roots`] and [`client_config`]: what a client trusts, a CA file (PEM) or, without
//!   one, the system's roots (`rustls-native-certs`: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or the
//!   distribution's bundle), and a client configuration that verifies servers against them.
//!
//! May not: open sockets or keep state; it reads only the files it is given (and the system's
//! trust store when asked for it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("no trusted CA certificates: the system has none ({0}); give a CA file (PEM)")]
    NoRoots(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::File { path: path.to_owned(), message: message.to_string() }
}

/// The crypto provider of every configuration made here.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| file_error(path, e))
}

/// The certificates of a PEM file, in order (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &read(path)?[..]).collect::<Result<_, _>>().map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file"));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    rustls_pemfile::private_key(&mut &read(path)?[..])
        .map_err(|e| file_error(path, e))?
        .ok_or_else(|| file_error(path, "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file"))
}

/// A certificate chain (leaf first) and its private key, from PEM files.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    Ok((load_certs(cert_path)?, load_key(key_path)?))
}

/// A server configuration for `chain` and `key` (checked to belong together), offering `alpn`
/// (e.g. `h2`, `http/1.1`).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("the certificate and key do not make a server identity: {e}")))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The certificates a client trusts: those of `ca_file` (PEM), or the system's roots.
pub fn trust_roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, Error> {
    if let Some(path) = ca_file {
        return load_certs(path);
    }
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = if found.errors.is_empty() {
            "no certificate in SSL_CERT_FILE, SSL_CERT_DIR or the distribution's bundle".to_string()
        } else {
            found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        };
        return Err(Error::NoRoots(why));
    }
    for e in &found.errors {
        tracing::debug!(error = %e, "a system trust root could not be read");
    }
    Ok(found.certs)
}

/// A client configuration that verifies servers against `roots`, offering `alpn`.
pub fn client_config(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut store = rustls::RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(roots.iter().cloned());
    if added == 0 {
        return Err(Error::Config(format!("none of the {ignored} CA certificates is usable as a trust anchor")));
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_pem_pair_makes_a_server_config_and_its_ca_a_client_config() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &c.cert.pem());
        let key = write(dir.path(), "key.pem", &c.signing_key.serialize_pem());
        let (chain, k) = load_certified_key(&cert, &key).unwrap();
        assert_eq!(chain.len(), 1);
        let cfg = server_config(chain, k, &[b"http/1.1"]).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let roots = trust_roots(Some(&cert)).unwrap();
        assert!(client_config(&roots, &[]).is_ok());
    }

    #[test]
    fn without_a_ca_file_or_system_roots_the_error_says_to_give_one() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "empty.pem", "");
        // rustls-native-certs reads only SSL_CERT_FILE when it is set (no other test here
        // reads the system's roots).
        std::env::set_var("SSL_CERT_FILE", &empty);
        std::env::remove_var("SSL_CERT_DIR");
        let e = trust_roots(None).unwrap_err().to_string();
        std::env::remove_var("SSL_CERT_FILE");
        assert!(e.contains("no trusted CA certificates") && e.contains("give a CA file"), "{e}");
    }

    #[test]
    fn missing_or_wrong_files_say_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &c.cert.pem());
        let key = write(dir.path(), "key.pem", &c.signing_key.serialize_pem());
        let junk = write(dir.path(), "junk.pem", "not a pem file\n");

        let e = load_certified_key(&dir.path().join("nope.pem"), &key).unwrap_err().to_string();
        assert!(e.contains("nope.pem") && e.contains("No such file"), "{e}");
        let e = load_certified_key(&junk, &key).unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("no PEM certificate"), "{e}");
        // A key file given as the certificate, and a certificate as the key.
        let e = load_certified_key(&key, &key).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = load_certified_key(&cert, &cert).unwrap_err().to_string();
        assert!(e.contains("no PEM private key"), "{e}");
        // A key of another certificate.
        let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
        let other_key = write(dir.path(), "other.pem", &other.signing_key.serialize_pem());
        let (chain, k) = load_certified_key(&cert, &other_key).unwrap();
        let e = server_config(chain, k, &[]).unwrap_err().to_string();
        assert!(e.contains("do not make a server identity"), "{e}");
        assert!(trust_roots(Some(&junk)).is_err());
    }
}
