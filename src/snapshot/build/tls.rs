//! `spec.tls` of our Ingresses → the certificate table, and the hosts that redirect to HTTPS.

use std::collections::{HashMap, HashSet};

use super::BuildConfig;
use super::class::OurIngress;
use crate::snapshot::certs::{CertEntry, CertTable, TlsCert};
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::host;
use crate::source::{Kind, ObjectKey};
use crate::store::ObjectStore;

/// Parsed Secrets of one build, so each is parsed once.
type Parsed = HashMap<(String, String), Result<TlsCert, String>>;

/// Builds the certificate table: for each host of each `spec.tls` entry, oldest Ingress first.
pub(super) fn cert_table(
    store: &ObjectStore,
    config: &BuildConfig,
    ours: &[OurIngress<'_>],
    diagnostics: &mut Vec<Diagnostic>,
) -> CertTable {
    let mut parsed = Parsed::new();
    let default = match &config.default_certificate {
        None => config.fallback_certificate.clone(),
        Some((ns, name)) => match secret_cert(store, &mut parsed, ns, name) {
            Ok(cert) => cert.key,
            Err(reason) => {
                let key = ObjectKey::new(Kind::Secret, ns, name);
                let reason =
                    format!("--default-ssl-certificate: {reason}; using a self-signed certificate");
                diagnostics.push(Diagnostic::error(&key, "", reason));
                config.fallback_certificate.clone()
            }
        },
    };
    let mut table = CertTable::new(default);
    for our in ours {
        add_ingress_certs(store, our, &mut parsed, &mut table, diagnostics);
    }
    table
}

fn add_ingress_certs(
    store: &ObjectStore,
    our: &OurIngress<'_>,
    parsed: &mut Parsed,
    table: &mut CertTable,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let ns = our.key.namespace.as_str();
    for (i, tls) in tls_entries(our).enumerate() {
        let field = format!("spec.tls[{i}]");
        let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            let reason = "no secretName: these hosts get the default certificate";
            diagnostics.push(Diagnostic::warning(
                &our.key,
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
                    &our.key,
                    format!("{field}.secretName"),
                    reason,
                ));
                continue;
            }
        };
        let secret_key = ObjectKey::new(Kind::Secret, ns, secret);
        for (j, h) in hosts_of(our, tls).into_iter().enumerate() {
            let field = format!("{field}.hosts[{j}]");
            add_host_cert(&our.key, &field, &h, &secret_key, &cert, table, diagnostics);
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
    parsed: &mut Parsed,
    ns: &str,
    name: &str,
) -> Result<TlsCert, String> {
    let key = (ns.to_string(), name.to_string());
    parsed
        .entry(key)
        .or_insert_with_key(|key| match store.secrets.get(key) {
            None => Err("not found".to_string()),
            Some(secret) => TlsCert::from_secret(secret).map_err(|e| e.to_string()),
        })
        .clone()
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

/// Every host pattern some Ingress of ours lists under `spec.tls`.
pub(super) fn tls_hosts(ours: &[OurIngress<'_>]) -> HashSet<String> {
    ours.iter()
        .flat_map(|our| tls_entries(our).flat_map(move |tls| hosts_of(our, tls)))
        .collect()
}
