//! Client certificates: ingress-nginx's `auth-tls-*` annotations, per host (nginx's
//! `ssl_verify_client` lives in the server block). The handshake of a host that asks for
//! certificates requests one (naming the CA) and accepts whatever chain comes, checking only
//! that the client holds its key; the chain is verified against the host's `ca.crt` when a
//! request arrives, so that a missing or failed certificate is an HTTP 400 as nginx gives it,
//! not a handshake failure, and the endpoint learns the result (`ssl-client-verify`,
//! `ssl-client-subject-dn`, `ssl-client-issuer-dn`, `ssl-client-cert`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::DistinguishedName;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Serialize;

/// `auth-tls-verify-client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// A certificate signed by the CA is required (400 otherwise). The default.
    On,
    /// No certificate is asked for.
    Off,
    /// A certificate is asked for; one that is sent must verify (400 otherwise).
    Optional,
    /// A certificate is asked for and not required to verify (the endpoint reads the result).
    OptionalNoCa,
}

impl Verify {
    /// The value as ingress-nginx reads it (anything else is `on`, its default).
    pub fn parse(value: &str) -> Option<Verify> {
        Some(match value {
            "on" => Verify::On,
            "off" => Verify::Off,
            "optional" => Verify::Optional,
            "optional_no_ca" => Verify::OptionalNoCa,
            _ => return None,
        })
    }
}

/// One host's client-certificate settings.
pub struct ClientAuth {
    /// The Secret (`namespace/name`) the CA came from.
    pub source: Box<str>,
    /// `auth-tls-verify-client`.
    pub verify: Verify,
    /// `auth-tls-verify-depth` (default 1): the most intermediate CA certificates between the
    /// client's own and the trusted CA (OpenSSL's depth, which counts neither).
    pub depth: u8,
    /// `auth-tls-pass-certificate-to-upstream`: the client's certificate goes upstream as
    /// `ssl-client-cert` (URL-encoded PEM).
    pub pass_certificate: bool,
    /// `auth-tls-error-page`: where a failed or missing certificate is redirected (302)
    /// instead of 400.
    pub error_page: Option<Box<str>>,
    /// `auth-tls-match-cn`: the subject DN must match this regex (403 otherwise).
    pub match_cn: Option<regex::Regex>,
    /// The CA certificates of `ca.crt`, as trust anchors.
    anchors: Vec<TrustAnchor<'static>>,
    /// Their subjects, named to the client in the handshake.
    pub subjects: Vec<DistinguishedName>,
    /// A digest of `ca.crt` (equality).
    digest: [u8; 32],
    /// The handshake configuration of this host, made once by the listener.
    pub tls: OnceLock<Arc<rustls::ServerConfig>>,
    /// The Ingress's `auth-tls-*` could not be honoured (a missing or unusable CA Secret, an
    /// invalid value): every request to the host is refused, 403, as ingress-nginx's server
    /// `return 403` for an `AuthTLSError`.
    pub denied: bool,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("source", &self.source)
            .field("verify", &self.verify)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.verify == other.verify
            && self.depth == other.depth
            && self.pass_certificate == other.pass_certificate
            && self.error_page == other.error_page
            && self.match_cn.as_ref().map(regex::Regex::as_str)
                == other.match_cn.as_ref().map(regex::Regex::as_str)
            && self.digest == other.digest
            && self.denied == other.denied
    }
}

impl Eq for ClientAuth {}

impl Serialize for ClientAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ClientAuth", 7)?;
        st.serialize_field("secret", &*self.source)?;
        st.serialize_field("denied", &self.denied)?;
        st.serialize_field("verify", &self.verify)?;
        st.serialize_field("depth", &self.depth)?;
        st.serialize_field("pass_certificate", &self.pass_certificate)?;
        st.serialize_field("error_page", &self.error_page)?;
        st.serialize_field(
            "match_cn",
            &self.match_cn.as_ref().map(regex::Regex::as_str),
        )?;
        st.end()
    }
}

/// The longest `auth-tls-match-cn` accepted, and the regex size limit.
const MAX_MATCH_CN: usize = 1024;

/// The most CA certificates read from one `ca.crt`.
const MAX_CAS: usize = 256;

/// What a request's certificate came to (nginx's `$ssl_client_verify`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Verified against the CA.
    Success,
    /// No certificate (or a plain-HTTP request).
    None,
    /// Sent and not verified, for this reason.
    Failed(String),
}

impl Verification {
    /// The `ssl-client-verify` value.
    pub fn value(&self) -> String {
        match self {
            Verification::Success => "SUCCESS".to_string(),
            Verification::None => "NONE".to_string(),
            Verification::Failed(why) => format!("FAILED:{why}"),
        }
    }
}

impl ClientAuth {
    /// Reads `ca.crt` (PEM, one or more CA certificates) and the settings; an error says why.
    pub fn new(
        source: &str,
        ca_pem: &[u8],
        settings: (Verify, u8, bool),
        error_page: Option<Box<str>>,
        match_cn: Option<&str>,
    ) -> Result<ClientAuth, String> {
        let (verify, depth, pass_certificate) = settings;
        let mut anchors = Vec::new();
        let mut subjects = Vec::new();
        for item in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem) {
            let der: CertificateDer<'static> =
                item.map_err(|e| format!("ca.crt is not PEM: {e}"))?;
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| format!("ca.crt holds a certificate that cannot be a CA ({e:?})"))?
                .to_owned();
            // webpki's subject is the Name's contents; the CertificateRequest's list holds
            // whole Names (a DER SEQUENCE each), or OpenSSL clients abort the handshake.
            subjects.push(DistinguishedName::in_sequence(anchor.subject.as_ref()));
            anchors.push(anchor);
            if anchors.len() > MAX_CAS {
                return Err(format!("ca.crt holds more than {MAX_CAS} certificates"));
            }
        }
        if anchors.is_empty() {
            return Err("ca.crt holds no certificate".to_string());
        }
        let match_cn = match match_cn.map(str::trim).filter(|m| !m.is_empty()) {
            None => None,
            Some(m) if m.len() > MAX_MATCH_CN => {
                return Err(format!(
                    "auth-tls-match-cn is longer than {MAX_MATCH_CN} bytes"
                ));
            }
            Some(m) => Some(
                regex::RegexBuilder::new(m)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("auth-tls-match-cn {m:?} is not a regex: {e}"))?,
            ),
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, ca_pem);
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        Ok(ClientAuth {
            source: source.into(),
            verify,
            depth,
            pass_certificate,
            error_page,
            match_cn,
            anchors,
            subjects,
            digest: d,
            tls: OnceLock::new(),
            denied: false,
        })
    }

    /// The settings of a host whose `auth-tls-*` (from the Ingress `source`) could not be
    /// honoured: no certificate asked, every request refused.
    pub fn denied(source: &str) -> ClientAuth {
        ClientAuth {
            source: source.into(),
            verify: Verify::Off,
            depth: 0,
            pass_certificate: false,
            error_page: None,
            match_cn: None,
            anchors: Vec::new(),
            subjects: Vec::new(),
            digest: [0; 32],
            tls: OnceLock::new(),
            denied: true,
        }
    }

    /// Verifies a client's chain (leaf first) against the CA, within the depth.
    pub fn check(&self, chain: Option<&[CertificateDer<'static>]>) -> Verification {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Verification::None;
        };
        let cert = match webpki::EndEntityCert::try_from(leaf) {
            Ok(cert) => cert,
            Err(e) => return Verification::Failed(format!("unreadable certificate ({e:?})")),
        };
        let depth = usize::from(self.depth);
        let within = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() <= depth {
                Ok(())
            } else {
                Err(webpki::Error::MaximumPathDepthExceeded)
            }
        };
        let verified = cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            Some(&within),
        );
        match verified {
            Ok(_) => Verification::Success,
            Err(e) => Verification::Failed(reason(&e).to_string()),
        }
    }
}

/// OpenSSL's words for the usual failures (what nginx's `$ssl_client_verify` says).
fn reason(e: &webpki::Error) -> &'static str {
    match e {
        webpki::Error::CertExpired { .. } => "certificate has expired",
        webpki::Error::CertNotValidYet { .. } => "certificate is not yet valid",
        webpki::Error::UnknownIssuer => "unable to get local issuer certificate",
        webpki::Error::MaximumPathDepthExceeded => "certificate chain too long",
        webpki::Error::InvalidSignatureForPublicKey => "certificate signature failure",
        webpki::Error::RequiredEkuNotFoundContext(_) => "unsupported certificate purpose",
        _ => "certificate verify error",
    }
}

/// A certificate's subject and issuer as RFC 2253 text (nginx's `$ssl_client_s_dn` and
/// `$ssl_client_i_dn`), and the leaf as URL-encoded PEM (`$ssl_client_escaped_cert`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject DN.
    pub subject: String,
    /// The issuer DN.
    pub issuer: String,
}

impl CertNames {
    /// The names of a DER certificate (`None`: not parseable).
    pub fn of(der: &[u8]) -> Option<CertNames> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        Some(CertNames {
            subject: rfc2253(cert.subject()),
            issuer: rfc2253(cert.issuer()),
        })
    }
}

/// RFC 2253 as OpenSSL's `XN_FLAG_RFC2253` prints it: the last RDN first, `,` between RDNs,
/// `+` within one, short attribute names, `,+"\<>;` escaped with `\`, a leading `#` or space
/// and a trailing space escaped, and bytes outside printable ASCII as `\XX`.
pub fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match x509_parser::objects::oid2abbrev(atv.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&atv.attr_type().to_id_string()),
            }
            out.push('=');
            let raw: &[u8] = atv.into();
            let value = atv.as_str().map(str::as_bytes).unwrap_or(raw);
            escape_value(value, &mut out);
        }
    }
    out
}

fn escape_value(value: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let last = value.len().saturating_sub(1);
    for (i, &b) in value.iter().enumerate() {
        let special = b",+\"\\<>;".contains(&b)
            || (i == 0 && (b == b'#' || b == b' '))
            || (i == last && b == b' ');
        if special {
            out.push('\\');
            out.push(char::from(b));
        } else if (0x20..0x7f).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('\\');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// The leaf certificate as PEM, URL-encoded (nginx's `$ssl_client_escaped_cert`).
pub fn escaped_pem(der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 3 / 2);
    super::routes::escape_component(&pem, &mut out);
    out
}

/// The hosts that ask for client certificates, by name (lower-case; `*.suffix` for a
/// wildcard rule).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientAuthTable(pub HashMap<Box<str>, Arc<ClientAuth>>);

impl ClientAuthTable {
    /// `server-alias`: an alias asks what its host asks (nginx's `ssl_verify_client` is a
    /// setting of the server, whose `server_name` the alias joins).
    pub fn alias(
        &mut self,
        aliases: &std::collections::BTreeMap<Arc<str>, super::routes::HostPattern>,
    ) {
        for (alias, host) in aliases {
            if let Some(auth) = self.0.get(host.to_string().as_str()).cloned() {
                self.0.insert(Box::from(&**alias), auth);
            }
        }
    }

    /// Whether no host asks.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The settings of a host (`host` lower-case, without port): its own, else its
    /// wildcard's.
    pub fn get(&self, host: &str) -> Option<&Arc<ClientAuth>> {
        if self.0.is_empty() {
            return None;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(found) = self.0.get(host) {
            return Some(found);
        }
        let (_, parent) = host.split_once('.')?;
        self.0.get(format!("*.{parent}").as_str())
    }
}

#[cfg(test)]
mod tests;
