//! The rustls server configuration: certificates come from the current snapshot (no lock),
//! ALPN h2 and http/1.1, TLS 1.2 and 1.3, session resumption by cache and tickets.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::snapshot::SnapshotHandle;
use crate::snapshot::client_auth::ClientAuth;

/// Asks for a client certificate naming the host's CAs, never requires one, and takes any
/// chain: the chain is verified per request against the request's host (`ClientAuth::check`),
/// so that a missing or failed certificate is an HTTP 400 as nginx's, not a handshake
/// failure. The handshake signature is checked: the client must hold the certificate's key.
#[derive(Debug)]
pub struct DeferredClientCerts {
    subjects: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl DeferredClientCerts {
    /// Asks for a client certificate naming no CA: what the echo backend uses to tell a test
    /// which certificate came (it takes any).
    pub fn any(provider: &rustls::crypto::CryptoProvider) -> DeferredClientCerts {
        DeferredClientCerts {
            subjects: Vec::new(),
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for DeferredClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

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
    configured(snapshot, None)
}

/// The configuration of a host that asks for client certificates (`auth-tls-secret`): as
/// [`server_config`], with a certificate requested (naming the CA) but not required.
pub fn client_auth_config(
    snapshot: SnapshotHandle,
    auth: &ClientAuth,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = rustls::crypto::ring::default_provider();
    let verifier = DeferredClientCerts {
        subjects: auth.subjects.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    configured(snapshot, Some(Arc::new(verifier)))
}

fn configured(
    snapshot: SnapshotHandle,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SnapshotCerts(snapshot)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
