//! TLS for Https and Tls listeners (rustls, ring), and the client side of HTTPS health checks
//! (which, like ELB's, do not verify the target's certificate).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::table::Certificate;
use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    estiba_tls::provider()
}

/// A server configuration for `cert`, offering `alpn` (e.g. `h2`, `http/1.1`).
pub(crate) fn server_config(cert: &Certificate, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, Error> {
    let cert_error = |e: estiba_tls::Error| Error::Certificate(e.to_string());
    let (chain, key) = match cert {
        Certificate::SelfSigned => self_signed()?,
        Certificate::Pem { cert_path, key_path } => {
            estiba_tls::load_certified_key(cert_path, key_path).map_err(cert_error)?
        }
    };
    estiba_tls::server_config(chain, key, alpn).map_err(cert_error)
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
