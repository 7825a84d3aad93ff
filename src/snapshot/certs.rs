//! TLS certificates by SNI: exact host, then `*.` wildcard, then the default certificate.
//!
//! Secrets are parsed into rustls [`CertifiedKey`]s once per build; the lookup reads the
//! snapshot and takes no lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::host::{self, MAX_HOST};
use crate::source::ObjectKey;

pub mod expiry;

/// The Secret type that holds a TLS certificate.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Why a Secret gave no usable certificate. The texts never quote the Secret's data: parser
/// errors are described in words of our own, and what a library says is scrubbed
/// ([`crate::redact`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The Secret is not of type `kubernetes.io/tls` (the type as shown: scrubbed, shortened,
    /// unquoted so that a scrub of the whole message leaves it).
    #[error("the Secret's type is {0}, not kubernetes.io/tls")]
    WrongType(String),
    /// A key is missing from the Secret's data.
    #[error("data[{0}] is missing")]
    Missing(&'static str),
    /// `tls.crt` holds no PEM certificate.
    #[error("tls.crt holds no PEM CERTIFICATE block")]
    NoCertificate,
    /// The leaf certificate does not parse.
    #[error("tls.crt: {0}")]
    BadCertificate(String),
    /// `tls.key` holds no usable key.
    #[error("tls.key: {0}")]
    BadKey(String),
}

/// What is wrong with a PEM text, in words that quote none of it (the parser's own message
/// quotes the line it could not read, or the END line it missed).
fn pem_problem(error: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        Error::Base64Decode(_) => "a PEM block is not valid base64",
        Error::NoItemsFound => "no PEM block of the expected kind",
        Error::SectionTooLarge => "a PEM block is too large",
        _ => "not valid PEM",
    }
}

/// A parsed certificate and key, with the names the leaf certificate is valid for.
#[derive(Clone, Debug)]
pub struct TlsCert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf: subjectAltName dNSNames, or the subject CNs when there are none.
    pub names: Vec<String>,
    /// The leaf's notBefore, as Unix seconds.
    pub not_before: i64,
    /// The leaf's notAfter, as Unix seconds.
    pub not_after: i64,
}

// === impl TlsCert ===

impl TlsCert {
    /// Parses the `tls.crt`/`tls.key` of a `kubernetes.io/tls` Secret (`stringData` wins over
    /// `data`, as the API server merges them).
    pub fn from_secret(secret: &Secret) -> Result<TlsCert, CertError> {
        let type_ = secret.type_.as_deref().unwrap_or("Opaque");
        if type_ != TLS_SECRET_TYPE {
            let shown = match type_ {
                "" => "empty".to_string(),
                t => crate::redact::short_value(t),
            };
            return Err(CertError::WrongType(shown));
        }
        let get = |k: &'static str| {
            let string = secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|s| s.as_bytes());
            let data = secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.as_slice());
            string.or(data).ok_or(CertError::Missing(k))
        };
        TlsCert::from_pem(get("tls.crt")?, get("tls.key")?)
    }

    /// Parses a PEM certificate chain (leaf first) and a PKCS#1, PKCS#8 or SEC1 private key,
    /// and checks that they belong together.
    pub fn from_pem(crt: &[u8], key: &[u8]) -> Result<TlsCert, CertError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::BadCertificate(pem_problem(&e).into()))?;
        if chain.is_empty() {
            return Err(CertError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertError::BadKey(
                "holds no private key (a PKCS#1, PKCS#8 or SEC1 PEM block)".into(),
            ),
            e => CertError::BadKey(pem_problem(&e).into()),
        })?;
        TlsCert::from_der(chain, key)
    }

    /// Builds from DER.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsCert, CertError> {
        let leaf = chain.first().ok_or(CertError::NoCertificate)?;
        let (names, (not_before, not_after)) = leaf_names(leaf)?;
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                CertError::BadKey("does not match the certificate in tls.crt".into())
            }
            e => CertError::BadKey(crate::redact::scrub(&e.to_string()).into_owned()),
        })?;
        Ok(TlsCert {
            key: Arc::new(key),
            names,
            not_before,
            not_after,
        })
    }

    /// A fresh self-signed certificate (ECDSA P-256) for these names.
    pub fn self_signed(names: &[&str]) -> Result<TlsCert, CertError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| CertError::BadCertificate(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        TlsCert::from_der(vec![generated.cert.der().clone()], key)
    }

    /// Whether the certificate is valid for a host pattern (`foo.com` or `*.foo.com`).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| host::name_covers(n, host))
    }
}

/// The names of the leaf and its validity period (notBefore, notAfter as Unix seconds).
fn leaf_names(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, (i64, i64)), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        let e = crate::redact::scrub(&e.to_string()).into_owned();
        CertError::BadCertificate(format!("the leaf certificate does not parse: {e}"))
    })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Legacy certificates (like `openssl req -subj "/CN=*.example.com"`) carry the name in
        // the subject CN only.
        let cns = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok());
        names.extend(cns.map(str::to_ascii_lowercase));
    }
    let validity = cert.validity();
    let period = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    Ok((names, period))
}

/// A host's certificate and the Secret it came from.
#[derive(Clone, Debug)]
pub struct CertEntry {
    /// The Secret.
    pub secret: ObjectKey,
    /// The certificate.
    pub cert: TlsCert,
}

/// Certificates of a snapshot by host pattern.
#[derive(Clone, Debug)]
pub struct CertTable {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// The Secret and certificate of `default`, when it came from a Secret
    /// (`--default-ssl-certificate`).
    default_entry: Option<CertEntry>,
    /// host pattern → entry: the data the maps were built from.
    entries: BTreeMap<String, CertEntry>,
    /// Exact hosts that get the default certificate though a wildcard entry matches them
    /// (the wildcard is another namespace's).
    pinned: std::collections::BTreeSet<String>,
    /// Host patterns a TLS section of their owner's namespace names (exact names, and
    /// wildcards by suffix): configured whatever certificate they are served.
    listed: std::collections::BTreeSet<Box<str>>,
    listed_wildcard: std::collections::BTreeSet<Box<str>>,
}

impl PartialEq for CertTable {
    fn eq(&self, other: &Self) -> bool {
        let entry =
            |(h, e): (&String, &CertEntry)| (h.clone(), e.secret.clone(), e.cert.key.cert.clone());
        let default_secret = |t: &CertTable| t.default_entry.as_ref().map(|e| e.secret.clone());
        self.default.cert == other.default.cert
            && default_secret(self) == default_secret(other)
            && self.pinned == other.pinned
            && self.listed == other.listed
            && self.listed_wildcard == other.listed_wildcard
            && self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .map(entry)
                .eq(other.entries.iter().map(entry))
    }
}

// === impl CertTable ===

impl CertTable {
    /// A table with only a default certificate.
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        CertTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
            default_entry: None,
            entries: BTreeMap::new(),
            pinned: std::collections::BTreeSet::new(),
            listed: std::collections::BTreeSet::new(),
            listed_wildcard: std::collections::BTreeSet::new(),
        }
    }

    /// A table whose default certificate comes from a Secret.
    pub fn with_default_entry(entry: CertEntry) -> Self {
        CertTable {
            default_entry: Some(entry.clone()),
            ..CertTable::new(entry.cert.key)
        }
    }

    /// Serves the default certificate for an exact host that has no entry of its own, though
    /// a wildcard entry would match it.
    pub fn pin_default(&mut self, host: &str) {
        if !self.entries.contains_key(host) && self.pinned.insert(host.to_string()) {
            self.exact.insert(host.into(), self.default.clone());
        }
    }

    /// Installs a certificate for a host pattern unless one is there; false if taken.
    pub fn insert(&mut self, host: &str, entry: CertEntry) -> bool {
        if self.entries.contains_key(host) {
            return false;
        }
        let key = entry.cert.key.clone();
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.into(), key),
            None => self.exact.insert(host.into(), key),
        };
        self.entries.insert(host.to_string(), entry);
        true
    }

    /// The entry for a host pattern, if one was installed.
    pub fn entry(&self, host: &str) -> Option<&CertEntry> {
        self.entries.get(host)
    }

    /// Every host pattern with its entry, sorted.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &CertEntry)> {
        self.entries.iter().map(|(h, e)| (h.as_str(), e))
    }

    /// The certificate for a ClientHello's SNI: exact host, then wildcard, then the default.
    pub fn resolve(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let mut buf = [0u8; MAX_HOST];
        let host = sni.and_then(|s| host::normalize(s, &mut buf));
        let found = host.and_then(|h| {
            self.exact
                .get(h)
                .or_else(|| self.wildcard.get(host::wildcard_suffix(h)?))
        });
        found.unwrap_or(&self.default)
    }

    /// A host pattern (`name` or `*.suffix`) a TLS section of its owner's namespace names:
    /// [`Self::configured`] whatever certificate it is served.
    pub fn list(&mut self, pattern: &str) {
        match pattern.strip_prefix("*.") {
            Some(suffix) => self.listed_wildcard.insert(suffix.into()),
            None => self.listed.insert(pattern.into()),
        };
    }

    /// Whether the host has a certificate in ingress-nginx's sense (its server's, so HSTS
    /// goes with its HTTPS answers): one of its own is installed (exact or wildcard; not the
    /// default, nor the default pinned for it), or a TLS section of its namespace names it
    /// (then the default one may be what is served, as ingress-nginx does).
    pub fn configured(&self, host: &str) -> bool {
        let mut buf = [0u8; MAX_HOST];
        let Some(h) = host::normalize(host, &mut buf) else {
            return false;
        };
        let own = match self.exact.get(h) {
            Some(key) => !Arc::ptr_eq(key, &self.default),
            None => host::wildcard_suffix(h).is_some_and(|s| self.wildcard.contains_key(s)),
        };
        own || self.listed.contains(h)
            || host::wildcard_suffix(h).is_some_and(|s| self.listed_wildcard.contains(s))
    }

    /// The default certificate.
    pub fn default_cert(&self) -> &Arc<CertifiedKey> {
        &self.default
    }

    /// The Secret and certificate of the default certificate, when it came from a Secret.
    pub fn default_entry(&self) -> Option<&CertEntry> {
        self.default_entry.as_ref()
    }
}
