//! TLS to PostgreSQL and Redis, with rustls (the `ring` provider).
//!
//! PostgreSQL URLs take libpq's `sslmode` and `sslrootcert`:
//! - `disable`, `prefer` (the default; Berth then connects without TLS), `allow`: no TLS;
//! - `require`: encrypted, the server's certificate not checked (libpq's meaning);
//! - `verify-ca`: encrypted, the certificate must chain to a trusted root;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.
//!
//! Trusted roots are `sslrootcert` (a PEM file) when given, else the system's. Redis takes `rediss://`
//! (verified against the system's roots, or the PEM file in Berth's own `ca=PATH` parameter).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::StoreError;

/// How a PostgreSQL connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Off,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: Option<&str>) -> Result<SslMode, StoreError> {
        match value.unwrap_or("prefer") {
            "disable" | "allow" | "prefer" => Ok(SslMode::Off),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(StoreError::Config(format!(
                "sslmode `{other}`: use disable, prefer, require, verify-ca or verify-full"
            ))),
        }
    }
}

/// The crypto provider every TLS connection uses; also installed as the process default (the Redis client
/// looks for it there).
pub fn provider() -> Arc<CryptoProvider> {
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.clone().install_default();
    Arc::new(provider)
}

/// Trusted roots: the certificates of a PEM file, or the system's.
pub fn roots(pem_file: Option<&str>) -> Result<RootCertStore, StoreError> {
    match pem_file {
        Some(path) => pem_roots(path).map_err(|e| StoreError::Config(format!("sslrootcert {path}: {e}"))),
        None => {
            let mut store = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
            Ok(store)
        }
    }
}

/// The certificates of a PEM file as trusted roots; a file that does not read, or holds no certificate,
/// is an error (the caller names the setting).
pub fn pem_roots(path: &str) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| e.to_string())?;
    }
    Ok(store)
}

/// The rustls client configuration of an `sslmode` (`None`: no TLS).
pub fn client_config(mode: SslMode, root_file: Option<&str>) -> Result<Option<ClientConfig>, StoreError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("tls: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Off => return Ok(None),
        SslMode::Require => Arc::new(AnyCertificate(provider.signature_verification_algorithms)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_file)?), provider)
                .build()
                .map_err(|e| StoreError::Config(format!("tls: {e}")))?;
            if mode == SslMode::VerifyCa { Arc::new(AnyName(webpki)) } else { webpki }
        }
    };
    Ok(Some(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()))
}

/// `sslmode=require`: the connection is encrypted, whoever the server is (the handshake's signatures are
/// still checked).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must reach a trusted root; the name in the certificate is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
