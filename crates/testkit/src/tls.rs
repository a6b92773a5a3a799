//! The TLS test receivers' side: the server certificate `scripts/test` made for `localhost` and `127.0.0.1`,
//! signed by the test CA (`BERTH_TEST_TLS_CA`, beside it in the same directory).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The test CA's certificate.
pub fn ca() -> CertificateDer<'static> {
    CertificateDer::from_pem_file(crate::stores::tls_ca()).expect("the test CA's PEM file")
}

/// A server configuration with the test server's certificate and key, offering `alpn` (none: no ALPN).
pub fn server_config(alpn: &[&[u8]]) -> rustls::ServerConfig {
    let ca = crate::stores::tls_ca();
    let dir = std::path::Path::new(&ca).parent().expect("the test CA's directory").to_path_buf();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem beside the test CA")
        .collect::<Result<_, _>>()
        .expect("the server's certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key beside the test CA");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the server's certificate and key");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
