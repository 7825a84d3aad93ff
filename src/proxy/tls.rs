//! The rustls server configuration: certificates come from the current snapshot (no lock),
//! ALPN h2 and http/1.1, TLS 1.2 and 1.3, session resumption by cache and tickets.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use crate::snapshot::SnapshotHandle;

/// Sessions kept for resumption by id (TLS 1.2) in memory.
const SESSION_CACHE: usize = 16 * 1024;

/// Resolves the certificate for a ClientHello from the current snapshot.
#[derive(Debug)]
pub struct SnapshotCerts(pub SnapshotHandle);

impl ResolvesServerCert for SnapshotCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI (or an unknown one) gets the default certificate.
        Some(self.0.load().certs.resolve(hello.server_name()).clone())
    }
}

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration")]
pub struct TlsConfigError(#[from] rustls::Error);

/// The server configuration for the HTTPS listeners.
pub fn server_config(snapshot: SnapshotHandle) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SnapshotCerts(snapshot)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
