//! TLS to a backend's endpoints: `backend-protocol: HTTPS` (or `AUTO_HTTP` for HTTPS clients,
//! the legacy `secure-backends`, a Service port's `appProtocol: https`) and ingress-nginx's
//! `proxy-ssl-*` annotations, as settings the proxy's upstream pool connects with.
//!
//! As in ingress-nginx, the endpoint's certificate is not verified unless `proxy-ssl-verify:
//! "on"` with a `ca.crt` in `proxy-ssl-secret`; the name verified (and sent as SNI with
//! `proxy-ssl-server-name: "on"`) is `proxy-ssl-name`, else `<service>.<namespace>.svc`. The
//! settings are an identity in the pool: a connection made under one set of settings never
//! carries a request made under another (see [`UpstreamTls::digest`]).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use serde::Serialize;

/// TLS versions an endpoint may be spoken to with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Versions {
    /// TLS 1.2.
    pub tls12: bool,
    /// TLS 1.3.
    pub tls13: bool,
}

impl Versions {
    /// nginx's default `proxy_ssl_protocols` (TLSv1.2 TLSv1.3), Portico's without a
    /// `proxy-ssl-secret`.
    pub const BOTH: Versions = Versions {
        tls12: true,
        tls13: true,
    };

    /// `proxy-ssl-protocols` (the protocols separated by spaces, as nginx's directive). rustls
    /// speaks only TLS 1.2 and 1.3: the older ones named are left out, and said so in the
    /// second value. `None` when the value is not a list of protocol names (ingress-nginx then
    /// uses its default).
    pub fn parse(value: &str) -> Option<(Versions, Vec<&str>)> {
        let mut versions = Versions {
            tls12: false,
            tls13: false,
        };
        let mut dropped = Vec::new();
        for word in value.split_ascii_whitespace() {
            match word {
                "TLSv1.2" => versions.tls12 = true,
                "TLSv1.3" => versions.tls13 = true,
                "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => dropped.push(word),
                _ => return None,
            }
        }
        Some((versions, dropped))
    }

    /// Whether any version is left.
    pub fn any(self) -> bool {
        self.tls12 || self.tls13
    }
}

/// How an endpoint's certificate is verified (`proxy-ssl-verify: "on"`).
pub struct Verify {
    /// The CAs of `ca.crt`.
    anchors: Vec<TrustAnchor<'static>>,
    /// `proxy-ssl-verify-depth` (default 1): the most intermediate CA certificates between
    /// the endpoint's own and the trusted CA (OpenSSL's depth, which counts neither).
    pub depth: u8,
}

/// TLS settings for a backend's endpoints.
pub struct UpstreamTls {
    /// The Secret the settings came from (`namespace/name`), if any.
    pub secret: Option<Box<str>>,
    /// Verification of the endpoint's certificate; `None`: any certificate is taken (the
    /// handshake signature is still checked).
    pub verify: Option<Verify>,
    /// The name the certificate is verified for, and sent as SNI when `sni`.
    pub name: Box<str>,
    /// `proxy-ssl-server-name: "on"`: the name goes in the ClientHello (SNI).
    pub sni: bool,
    /// The versions offered.
    pub versions: Versions,
    /// `tls.crt`/`tls.key` of the Secret: the certificate Portico shows an endpoint that asks
    /// for one.
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// SHA-256 over every setting above but the name (and the key material).
    base: [u8; 32],
    /// SHA-256 over `base` and the name: two settings are the same exactly when their digests
    /// are.
    digest: [u8; 32],
}

/// What [`UpstreamTls::new`] reads from a `proxy-ssl-secret`.
#[derive(Default)]
pub struct SecretTls<'a> {
    /// `namespace/name`.
    pub source: &'a str,
    /// `ca.crt` (PEM).
    pub ca: Option<&'a [u8]>,
    /// `tls.crt` (PEM).
    pub cert: Option<&'a [u8]>,
    /// `tls.key` (PEM).
    pub key: Option<&'a [u8]>,
}

/// CA certificates read from one `ca.crt`, at most.
const MAX_CAS: usize = 100;

impl UpstreamTls {
    /// Settings from the annotations' values: `secret` (none without `proxy-ssl-secret`),
    /// whether to verify and how deep, the name, SNI and versions. An error says why the
    /// Secret cannot serve.
    pub fn new(
        secret: Option<SecretTls<'_>>,
        verify: Option<u8>,
        name: &str,
        sni: bool,
        versions: Versions,
    ) -> Result<UpstreamTls, String> {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut feed = |part: &[u8]| {
            hash.update(&(part.len() as u64).to_be_bytes());
            hash.update(part);
        };
        let mut anchors = Vec::new();
        let mut identity = None;
        if let Some(s) = &secret {
            feed(s.source.as_bytes());
            if let Some(ca) = s.ca {
                feed(ca);
                for item in rustls_pki_types::pem::PemObject::pem_slice_iter(ca) {
                    let der: CertificateDer<'static> =
                        item.map_err(|e| format!("ca.crt is not PEM: {e}"))?;
                    let anchor = webpki::anchor_from_trusted_cert(&der)
                        .map_err(|e| {
                            format!("ca.crt holds a certificate that cannot be a CA ({e:?})")
                        })?
                        .to_owned();
                    anchors.push(anchor);
                    if anchors.len() > MAX_CAS {
                        return Err(format!("ca.crt holds more than {MAX_CAS} certificates"));
                    }
                }
                if anchors.is_empty() {
                    return Err("ca.crt holds no certificate".to_string());
                }
            }
            match (s.cert, s.key) {
                (Some(cert), Some(key)) => {
                    feed(cert);
                    feed(key);
                    identity = Some(identity_of(cert, key)?);
                }
                (None, None) => {}
                _ => return Err("has only one of tls.crt and tls.key".to_string()),
            }
            if s.ca.is_none() && identity.is_none() {
                return Err("holds neither ca.crt nor tls.crt and tls.key".to_string());
            }
        }
        let verify = match verify {
            None => None,
            Some(_) if anchors.is_empty() => {
                return Err(
                    "proxy-ssl-verify is on, and the Secret has no ca.crt to verify with"
                        .to_string(),
                );
            }
            Some(depth) => Some(Verify { anchors, depth }),
        };
        feed(&[
            u8::from(verify.is_some()),
            verify.as_ref().map_or(0, |v| v.depth),
            u8::from(sni),
            u8::from(versions.tls12),
            u8::from(versions.tls13),
        ]);
        let mut base = [0u8; 32];
        base.copy_from_slice(hash.finish().as_ref());
        Ok(UpstreamTls {
            secret: secret.map(|s| s.source.into()),
            verify,
            name: name.into(),
            sni,
            versions,
            identity,
            base,
            digest: named(&base, name),
        })
    }

    /// Settings without a Secret for `name` (no verification, no SNI, TLS 1.2 and 1.3): what
    /// `backend-protocol: HTTPS` alone asks.
    pub fn plain(name: &str) -> UpstreamTls {
        UpstreamTls::new(None, None, name, false, Versions::BOTH)
            .expect("settings without a Secret are always valid")
    }

    /// The same settings for another name (each backend Service verifies its own).
    pub fn renamed(&self, name: &str) -> UpstreamTls {
        UpstreamTls {
            secret: self.secret.clone(),
            verify: self.verify.as_ref().map(|v| Verify {
                anchors: v.anchors.clone(),
                depth: v.depth,
            }),
            name: name.into(),
            sni: self.sni,
            versions: self.versions,
            identity: self
                .identity
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
            base: self.base,
            digest: named(&self.base, name),
        }
    }

    /// The settings' identity.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Whether a client certificate is shown to endpoints that ask.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The name a connection to an endpoint at `ip` is made for: the configured name with
    /// SNI, else the endpoint's address (no SNI is sent for an address, and resumed sessions
    /// are kept per endpoint). Verification always uses [`UpstreamTls::name`].
    pub fn server_name(&self, ip: std::net::IpAddr) -> ServerName<'static> {
        if self.sni
            && let Ok(name) = ServerName::try_from(self.name.to_string())
        {
            return name;
        }
        ServerName::IpAddress(ip.into())
    }

    /// The rustls client configuration of these settings (a new session cache: make it once
    /// per settings and keep it).
    pub fn client_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<ClientConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if self.versions.tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if self.versions.tls12 {
            versions.push(&rustls::version::TLS12);
        }
        let verifier = EndpointVerifier {
            tls: Arc::clone(self),
            algorithms: provider.signature_verification_algorithms,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = self.sni;
        Ok(config)
    }

    /// Verifies an endpoint's chain (leaf first) for the name, within the depth.
    fn check(
        &self,
        leaf: &CertificateDer<'_>,
        rest: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let Some(verify) = &self.verify else {
            return Ok(());
        };
        let invalid = |e: CertificateError| rustls::Error::InvalidCertificate(e);
        let cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|_| invalid(CertificateError::BadEncoding))?;
        let depth = usize::from(verify.depth);
        let within = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() <= depth {
                Ok(())
            } else {
                Err(webpki::Error::MaximumPathDepthExceeded)
            }
        };
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &verify.anchors,
            rest,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&within),
        )
        .map_err(|e| invalid(certificate_error(&e)))?;
        let name = ServerName::try_from(&*self.name)
            .map_err(|_| invalid(CertificateError::NotValidForName))?;
        cert.verify_is_valid_for_subject_name(&name)
            .map_err(|e| invalid(certificate_error(&e)))
    }
}

/// The digest of settings `base` for `name`.
fn named(base: &[u8; 32], name: &str) -> [u8; 32] {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    hash.update(base);
    hash.update(name.as_bytes());
    let mut digest = [0u8; 32];
    digest.copy_from_slice(hash.finish().as_ref());
    digest
}

/// rustls's word for a verification failure (the log line says why the endpoint got 502).
fn certificate_error(e: &webpki::Error) -> CertificateError {
    match e {
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertNotValidForName(_) => CertificateError::NotValidForName,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => {
            CertificateError::Other(rustls::OtherError(Arc::new(Reason(format!("{other:?}")))))
        }
    }
}

#[derive(Debug)]
struct Reason(String);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

/// A certificate chain and its key from PEM.
fn identity_of(
    cert: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    use rustls_pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|_| "tls.key holds no private key".to_string())?;
    rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| "tls.key is not a key Portico can sign with".to_string())?;
    Ok((chain, key))
}

/// Verifies an endpoint's certificate by [`UpstreamTls`] (or not at all), whatever name the
/// connection was made for: the configured name is the one verified.
struct EndpointVerifier {
    tls: Arc<UpstreamTls>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for EndpointVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointVerifier")
            .field("tls", &self.tls)
            .finish()
    }
}

impl ServerCertVerifier for EndpointVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.tls.check(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
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

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for UpstreamTls {}

impl Hash for UpstreamTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.digest[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("secret", &self.secret)
            .field("verify", &self.verify.as_ref().map(|v| v.depth))
            .field("name", &self.name)
            .field("sni", &self.sni)
            .field("versions", &self.versions)
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

/// What `/debug/snapshot` shows: never the key.
impl Serialize for UpstreamTls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("UpstreamTls", 6)?;
        out.serialize_field("secret", &self.secret)?;
        out.serialize_field("verify_depth", &self.verify.as_ref().map(|v| v.depth))?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("sni", &self.sni)?;
        out.serialize_field("versions", &self.versions)?;
        out.serialize_field("client_certificate", &self.identity.is_some())?;
        out.end()
    }
}

/// TLS to a backend: the settings, and whether only requests that came over HTTPS use it
/// (`AUTO_HTTP`: the endpoint is spoken to in the client's scheme).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendTls {
    /// The settings.
    pub settings: Arc<UpstreamTls>,
    /// `AUTO_HTTP`: TLS only for requests that came over TLS.
    pub auto: bool,
}

impl BackendTls {
    /// The settings a request uses (`client_tls`: it came over TLS); `None`: clear text.
    pub fn for_client(&self, client_tls: bool) -> Option<&Arc<UpstreamTls>> {
        (!self.auto || client_tls).then_some(&self.settings)
    }
}

#[cfg(test)]
mod tests;
