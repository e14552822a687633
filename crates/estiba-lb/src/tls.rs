//! TLS for Https and Tls listeners (rustls, ring), and the client side of HTTPS health checks
//! (which, like ELB's, do not verify the target's certificate).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::table::Certificate;
use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration for `cert`, offering `alpn` (e.g. `h2`, `http/1.1`).
pub(crate) fn server_config(cert: &Certificate, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, Error> {
    let (chain, key) = match cert {
        Certificate::SelfSigned => self_signed()?,
        Certificate::Pem { cert_path, key_path } => {
            let read =
                |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::Certificate(format!("{}: {e}", p.display())));
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert_path)?[..])
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Certificate(format!("{}: {e}", cert_path.display())))?;
            let key = rustls_pemfile::private_key(&mut &read(key_path)?[..])
                .map_err(|e| Error::Certificate(format!("{}: {e}", key_path.display())))?
                .ok_or_else(|| Error::Certificate(format!("{}: no private key", key_path.display())))?;
            (certs, key)
        }
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// One self-signed certificate per process (generating a key takes milliseconds).
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    static CERT: OnceLock<Result<(CertificateDer<'static>, Vec<u8>), String>> = OnceLock::new();
    let got = CERT.get_or_init(|| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).map_err(|e| e.to_string())?;
        Ok((c.cert.der().clone(), c.signing_key.serialize_der()))
    });
    match got {
        Ok((c, k)) => Ok((vec![c.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.clone())))),
        Err(e) => Err(Error::Certificate(e.clone())),
    }
}

/// A client that accepts any certificate (health checks; tests).
pub(crate) fn insecure_client() -> Arc<rustls::ClientConfig> {
    static CFG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
            .with_no_client_auth();
        Arc::new(cfg)
    })
    .clone()
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
