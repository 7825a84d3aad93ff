//! `spec.tls` of our Ingresses → the certificate table, and the hosts that redirect to HTTPS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::BuildConfig;
use super::class::OurIngress;
use crate::snapshot::certs::{CertEntry, CertTable, TlsCert};
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::host;
use crate::source::{Kind, ObjectKey};
use crate::store::{NsName, ObjectStore};

/// Secrets parsed by a build, each with the object it was parsed from: a build parses a Secret
/// once, and not at all when the previous build parsed an equal one.
pub(super) type ParsedSecrets = HashMap<NsName, (Arc<Secret>, Result<TlsCert, String>)>;

/// The Secrets parsed before, and those of this build.
struct Parsed<'a> {
    previous: &'a ParsedSecrets,
    now: ParsedSecrets,
}

/// The namespace that owns each host pattern with routes (that of its oldest rule).
pub(super) type Owners<'a> = HashMap<String, &'a str>;

/// Builds the certificate table: for each host of each `spec.tls` entry, in the order of
/// `ours` (oldest Ingress first). A host that has routes takes certificates only from its
/// owner's namespace: another namespace's entry for it (or a wildcard that would cover it) is
/// not served for it. Returns the Secrets it parsed, for the next build.
pub(super) fn cert_table(
    store: &ObjectStore,
    config: &BuildConfig,
    (ours, owners): (&[&OurIngress<'_>], &Owners<'_>),
    previous: &ParsedSecrets,
    diagnostics: &mut Vec<Diagnostic>,
) -> (CertTable, ParsedSecrets) {
    let mut parsed = Parsed {
        previous,
        now: ParsedSecrets::new(),
    };
    let fallback = || CertTable::new(config.fallback_certificate.clone());
    let mut table = match &config.default_certificate {
        None => fallback(),
        Some((ns, name)) => {
            let key = ObjectKey::new(Kind::Secret, ns, name);
            match secret_cert(store, &mut parsed, ns, name) {
                Ok(cert) => CertTable::with_default_entry(CertEntry { secret: key, cert }),
                Err(reason) => {
                    let reason = format!(
                        "--default-ssl-certificate: {reason}; using a self-signed certificate"
                    );
                    diagnostics.push(Diagnostic::error(&key, "", reason));
                    fallback()
                }
            }
        }
    };
    for our in ours {
        add_ingress_certs(store, (our, owners), &mut parsed, &mut table, diagnostics);
    }
    // A host a TLS section of its own namespace names has a certificate in ingress-nginx's
    // sense whatever is served (the default one when the Secret is unnamed or missing), and
    // so gets HSTS there; a tenant's TLS entry never does it for another namespace's host.
    for our in ours {
        for tls in tls_entries(our) {
            for host in hosts_of(our, tls) {
                if owners.get(&host).is_some_and(|o| *o == our.namespace) {
                    table.list(&host);
                }
            }
        }
    }
    // A wildcard from one namespace must not cover a host another namespace owns: such a
    // host gets the default certificate (or its owner's own, installed above).
    for (host, owner) in owners {
        if host.starts_with("*.") || table.entry(host).is_some() {
            continue;
        }
        let Some(suffix) = host::wildcard_suffix(host) else {
            continue;
        };
        if table
            .entry(&format!("*.{suffix}"))
            .is_some_and(|e| e.secret.namespace != *owner)
        {
            table.pin_default(host);
        }
    }
    (table, parsed.now)
}

fn add_ingress_certs(
    store: &ObjectStore,
    (our, owners): (&OurIngress<'_>, &Owners<'_>),
    parsed: &mut Parsed<'_>,
    table: &mut CertTable,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let (ns, key) = (our.namespace, our.key());
    for (i, tls) in tls_entries(our).enumerate() {
        let field = format!("spec.tls[{i}]");
        let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            let reason = "no secretName: these hosts get the default certificate";
            diagnostics.push(Diagnostic::warning(
                &key,
                format!("{field}.secretName"),
                reason,
            ));
            continue;
        };
        let cert = match secret_cert(store, parsed, ns, secret) {
            Ok(cert) => cert,
            Err(reason) => {
                let reason = format!(
                    "Secret {ns}/{secret}: {reason}; these hosts get the default certificate"
                );
                diagnostics.push(Diagnostic::error(
                    &key,
                    format!("{field}.secretName"),
                    reason,
                ));
                continue;
            }
        };
        let secret_key = ObjectKey::new(Kind::Secret, ns, secret);
        for (j, h) in hosts_of(our, tls).into_iter().enumerate() {
            let field = format!("{field}.hosts[{j}]");
            if let Some(owner) = owners.get(&h).filter(|o| **o != ns) {
                let reason = format!(
                    "host {h} belongs to namespace {owner} (its oldest rule); the certificate of Secret {ns}/{secret} is not served for it"
                );
                diagnostics.push(Diagnostic::warning(&key, field, reason));
                continue;
            }
            add_host_cert(&key, &field, &h, &secret_key, &cert, table, diagnostics);
        }
    }
}

fn add_host_cert(
    ingress: &ObjectKey,
    field: &str,
    host: &str,
    secret: &ObjectKey,
    cert: &TlsCert,
    table: &mut CertTable,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Err(reason) = host::validate_rule_host(host) {
        diagnostics.push(Diagnostic::error(
            ingress,
            field,
            format!("host {host:?} {reason}"),
        ));
        return;
    }
    if !cert.covers(host) {
        let reason = format!(
            "the certificate of Secret {}/{} (names {:?}) does not cover {host}; it gets the default certificate",
            secret.namespace, secret.name, cert.names
        );
        diagnostics.push(Diagnostic::error(ingress, field, reason));
        return;
    }
    let entry = CertEntry {
        secret: secret.clone(),
        cert: cert.clone(),
    };
    if !table.insert(host, entry)
        && let Some(older) = table.entry(host).filter(|e| e.secret != *secret)
    {
        let reason = format!(
            "host {host} already has the certificate of Secret {}/{} from an Ingress that takes precedence; ignored",
            older.secret.namespace, older.secret.name
        );
        diagnostics.push(Diagnostic::warning(ingress, field, reason));
    }
}

fn secret_cert(
    store: &ObjectStore,
    parsed: &mut Parsed<'_>,
    ns: &str,
    name: &str,
) -> Result<TlsCert, String> {
    let key = (ns.to_string(), name.to_string());
    let Some(secret) = store.secrets.get(&key) else {
        return Err("not found".to_string());
    };
    if let Some((_, result)) = parsed.now.get(&key) {
        return result.clone();
    }
    // Parsing is a function of the Secret alone: an equal Secret gives the same result.
    let result = match parsed.previous.get(&key) {
        Some((before, result)) if Arc::ptr_eq(before, secret) || **before == **secret => {
            result.clone()
        }
        // The error texts quote nothing of the Secret; scrubbed all the same.
        _ => TlsCert::from_secret(secret)
            .map_err(|e| crate::redact::scrub(&e.to_string()).into_owned()),
    };
    parsed.now.insert(key, (Arc::clone(secret), result.clone()));
    result
}

/// Whether the Ingress has `spec.tls` entries.
pub(super) fn has_tls_entries(our: &OurIngress<'_>) -> bool {
    tls_entries(our).next().is_some()
}

fn tls_entries<'a>(
    our: &OurIngress<'a>,
) -> impl Iterator<Item = &'a k8s_openapi::api::networking::v1::IngressTLS> + use<'a> {
    let ingress = our.ingress;
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.tls.as_deref())
        .unwrap_or_default()
        .iter()
}

/// The hosts of a `spec.tls` entry (lower-cased); an entry without hosts covers the hosts of
/// the Ingress's rules.
fn hosts_of(
    our: &OurIngress<'_>,
    tls: &k8s_openapi::api::networking::v1::IngressTLS,
) -> Vec<String> {
    match tls.hosts.as_deref() {
        Some(hosts) if !hosts.is_empty() => hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        _ => {
            let rules = our
                .ingress
                .spec
                .as_ref()
                .and_then(|s| s.rules.as_deref())
                .unwrap_or_default();
            let mut hosts: Vec<String> = rules
                .iter()
                .filter_map(|r| r.host.as_deref())
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase())
                .collect();
            hosts.dedup();
            hosts
        }
    }
}

/// The host patterns listed under `spec.tls`, by the namespace of the Ingress listing them.
pub(super) type TlsHosts = HashMap<String, HashSet<String>>;

/// Every host pattern some Ingress of ours lists under `spec.tls`, by namespace.
pub(super) fn tls_hosts(ours: &[&OurIngress<'_>]) -> TlsHosts {
    let mut hosts = TlsHosts::new();
    for our in ours {
        let listed = hosts.entry(our.namespace.to_string()).or_default();
        listed.extend(tls_entries(our).flat_map(|tls| hosts_of(our, tls)));
    }
    hosts
}
