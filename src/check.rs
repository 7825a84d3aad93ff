//! `portico check --manifests DIR`: build once, print the route table, the certificates and
//! every problem; a linter for users' own CI.

use std::fmt::Write;

use serde::Serialize;

use crate::snapshot::table::{RouteRow, route_rows};
use crate::snapshot::{Built, Severity};
use crate::source::ObjectKey;
use crate::source::manifests::ManifestProblem;

/// The outcome of a check.
#[derive(Debug)]
pub struct Report {
    /// The text to print.
    pub text: String,
    /// Errors found (build errors and unreadable manifests): the exit status is 1 when > 0.
    pub errors: usize,
}

/// One ingress-nginx annotation of an Ingress Portico serves, and what Portico makes of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Migrated {
    /// The annotation's name without the prefix.
    pub annotation: String,
    /// Its value.
    pub value: String,
    /// `honoured`, `honoured, differs`, `accepted, no effect`, `fails closed`, `not yet`,
    /// `obsolete` or `unknown`; `invalid` (a warning: the value is not used) or `error` (the
    /// Ingress's paths answer 503, or it is left out) when its value could not be honoured;
    /// `ignored on a canary` for what ingress-nginx ignores there.
    pub status: &'static str,
    /// The difference, the reason, or what replaced it.
    pub note: String,
}

/// The migration report of one Ingress: its ingress-nginx annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MigrationEntry {
    /// `namespace/name`.
    pub ingress: String,
    /// Its annotations under `nginx.ingress.kubernetes.io/`, by name.
    pub annotations: Vec<Migrated>,
}

/// What Portico makes of the ingress-nginx annotations of the Ingresses it serves (those
/// without any are left out), with what the build said about each (`diagnostics`).
pub fn migration(
    store: &crate::store::ObjectStore,
    ours: &[ObjectKey],
    diagnostics: &[crate::snapshot::Diagnostic],
) -> Vec<MigrationEntry> {
    use crate::snapshot::annotations::{NGINX, Support, support};
    use crate::snapshot::diagnostics::Severity;
    let mut out = Vec::new();
    for key in ours {
        let Some(ingress) = store
            .ingresses
            .get(&(key.namespace.clone(), key.name.clone()))
        else {
            continue;
        };
        let canary = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&format!("{NGINX}canary")))
            .is_some_and(|v| v.trim() == "true");
        // What counts on a canary Ingress: its own rules, and its affinity (the legacy
        // behaviour keeps it).
        let counts_on_canary = |name: &str| {
            name.starts_with("canary")
                || name.starts_with("affinity")
                || name.starts_with("session-cookie-")
                || name == "load-balance"
                || name == "upstream-hash-by"
        };
        let said = |name: &str| {
            let field = format!("metadata.annotations[{NGINX}{name}]");
            diagnostics
                .iter()
                .filter(|d| d.object == *key && d.field == field)
                .max_by_key(|d| d.severity == Severity::Error)
        };
        let annotations: Vec<Migrated> = ingress
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.strip_prefix(NGINX)?, v)))
            .map(|(name, value)| {
                let (status, note) = match support(name) {
                    Some(Support::Honoured) => ("honoured", String::new()),
                    Some(Support::Differs(d)) => ("honoured, differs", d.to_string()),
                    Some(Support::Accepted(why)) => ("accepted, no effect", why.to_string()),
                    Some(Support::FailsClosed) => (
                        "fails closed",
                        "guards access and is not implemented yet: every path of the Ingress answers 503".to_string(),
                    ),
                    Some(Support::Unsupported) => ("not yet", "ignored, with a warning".to_string()),
                    Some(Support::Obsolete(why)) => ("obsolete", why.to_string()),
                    None => ("unknown", "not an ingress-nginx annotation; ignored".to_string()),
                };
                let honoured = matches!(status, "honoured" | "honoured, differs");
                // Above the ConfigMap's annotations-risk-level: refused whatever its support.
                let field = format!("metadata.annotations[{NGINX}{name}]");
                let too_risky = diagnostics.iter().find(|d| {
                    d.object == *key
                        && d.field == field
                        && d.severity == Severity::Error
                        && d.reason.contains("annotations-risk-level")
                });
                let (status, note) = match said(name) {
                    _ if too_risky.is_some() => {
                        ("error", too_risky.map(|d| d.reason.clone()).unwrap_or_default())
                    }
                    Some(d) if honoured && d.severity == Severity::Error => ("error", d.reason.clone()),
                    Some(d) if honoured => ("invalid", d.reason.clone()),
                    _ if honoured && canary && !counts_on_canary(name) => (
                        "ignored on a canary",
                        "ingress-nginx ignores it on a canary Ingress: the primary's applies".to_string(),
                    ),
                    _ => (status, note),
                };
                Migrated {
                    annotation: name.to_string(),
                    value: value.clone(),
                    status,
                    note,
                }
            })
            .collect();
        if !annotations.is_empty() {
            out.push(MigrationEntry {
                ingress: format!("{}/{}", key.namespace, key.name),
                annotations,
            });
        }
    }
    out
}

/// The migration report as text.
fn render_migration(entries: &[MigrationEntry]) -> String {
    let mut text = String::new();
    if entries.is_empty() {
        return text;
    }
    text.push_str("\nMigration from ingress-nginx (nginx.ingress.kubernetes.io/ annotations):\n");
    for e in entries {
        let _ = writeln!(text, "  Ingress {}", e.ingress);
        for a in &e.annotations {
            let note = if a.note.is_empty() {
                String::new()
            } else {
                format!(": {}", a.note)
            };
            let _ = writeln!(
                text,
                "    {} = {:?}: {}{note}",
                a.annotation, a.value, a.status
            );
        }
    }
    text
}

/// Renders the result of a build of the manifests.
pub fn report(built: &Built, problems: &[ManifestProblem]) -> Report {
    let mut text = String::new();
    let rows = route_rows(&built.snapshot);
    if rows.is_empty() {
        text.push_str("No routes: every request gets the built-in 404.\n");
    } else {
        text.push_str(&render_rows(&rows));
    }
    let mut errors = 0;
    let mut warnings = 0;
    if !problems.is_empty() || !built.diagnostics.is_empty() {
        text.push_str("\nProblems:\n");
    }
    for p in problems {
        let severity = if p.is_error() { "error" } else { "warning" };
        let _ = writeln!(text, "  {severity}: {p}");
        if p.is_error() {
            errors += 1
        } else {
            warnings += 1
        }
    }
    for d in &built.diagnostics {
        let _ = writeln!(text, "  {d}");
        match d.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
    }
    let _ = writeln!(
        text,
        "\n{} routes, {} service ports, {} certificates; {errors} errors, {warnings} warnings",
        rows.len(),
        built.snapshot.services.len(),
        built.snapshot.certs.entries().count(),
    );
    Report { text, errors }
}

fn render_rows(rows: &[RouteRow]) -> String {
    let header = ["HOST", "PATH", "TYPE", "BACKEND", "ENDPOINTS", "TLS"].map(String::from);
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let mut endpoints = if r.endpoints.is_empty() {
                "-".to_string()
            } else {
                r.endpoints.join(",")
            };
            if r.not_ready > 0 {
                let _ = write!(endpoints, " ({} not ready)", r.not_ready);
            }
            if let Some(why) = &r.unavailable {
                let _ = write!(endpoints, " [503: {why}]");
            }
            let tls = if r.ssl_redirect {
                format!("{} (redirect)", r.tls)
            } else {
                r.tls.clone()
            };
            [
                r.host.clone(),
                r.path.clone(),
                r.path_type.clone(),
                r.backend.clone(),
                endpoints,
                tls,
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Reads a manifests directory and builds it once.
pub fn load_and_build(
    manifests: &std::path::Path,
    build: &crate::config::BuildArgs,
) -> Result<(Built, Vec<ManifestProblem>), CheckError> {
    let (built, problems, _) = load_build_keep(manifests, build)?;
    Ok((built, problems))
}

/// [`load_and_build`], keeping the objects.
fn load_build_keep(
    manifests: &std::path::Path,
    build: &crate::config::BuildArgs,
) -> Result<(Built, Vec<ManifestProblem>, crate::store::ObjectStore), CheckError> {
    let (objects, problems) = crate::source::manifests::load_dir(manifests)?;
    let store = crate::store::ObjectStore::from_objects(objects);
    let built = build_once(&store, build)?;
    Ok((built, problems, store))
}

/// One build of `store`, with the certificates' validity judged now.
fn build_once(
    store: &crate::store::ObjectStore,
    build: &crate::config::BuildArgs,
) -> Result<Built, CheckError> {
    let fallback =
        crate::snapshot::certs::TlsCert::self_signed(&[crate::run::DEFAULT_CERT_NAME])?.key;
    let mut built = crate::snapshot::build(store, &build.build_config(fallback));
    // Certificates out of (or near the end of) their validity period, judged now, as the
    // controller judges them after each build.
    use crate::snapshot::certs::expiry;
    let served = expiry::served(&built.snapshot.certs);
    built
        .diagnostics
        .extend(expiry::diagnostics(&served, expiry::unix_now()));
    built.diagnostics.sort();
    Ok(built)
}

/// Runs `portico check`: prints the report and returns the exit status.
pub fn run(args: &crate::config::CheckArgs) -> Result<std::process::ExitCode, CheckError> {
    let (built, problems, store) = match (&args.manifests, &args.kubeconfig) {
        (Some(dir), _) => load_build_keep(dir, &args.build)?,
        (None, kubeconfig) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CheckError::Runtime)?;
            let listing = crate::source::kubernetes::list_once(
                kubeconfig.as_deref(),
                args.kube_context.as_deref(),
                args.build.configmap.as_ref(),
            );
            let objects = runtime.block_on(listing)?;
            let store = crate::store::ObjectStore::from_objects(objects);
            let built = build_once(&store, &args.build)?;
            (built, Vec::new(), store)
        }
    };
    let migration = migration(&store, &built.ingresses, &built.diagnostics);
    let report = report(&built, &problems);
    match args.format {
        crate::config::CheckFormat::Text => {
            print!("{}{}", report.text, render_migration(&migration));
        }
        crate::config::CheckFormat::Json => {
            let json = json_report(&built, &problems, &migration, report.errors);
            println!("{json:#}");
        }
    }
    Ok(exit_code(report.errors == 0))
}

/// The whole check as one JSON object.
pub fn json_report(
    built: &Built,
    problems: &[ManifestProblem],
    migration: &[MigrationEntry],
    errors: usize,
) -> serde_json::Value {
    let problems: Vec<serde_json::Value> = problems
        .iter()
        .map(|p| {
            let severity = if p.is_error() { "error" } else { "warning" };
            serde_json::json!({"severity": severity, "message": p.to_string()})
        })
        .collect();
    let warnings = problems.len() + built.diagnostics.len() - errors;
    serde_json::json!({
        "routes": route_rows(&built.snapshot),
        "problems": problems,
        "diagnostics": built.diagnostics,
        "migration": migration,
        "errors": errors,
        "warnings": warnings,
    })
}

/// Runs `portico explain`.
pub fn explain(args: &crate::config::ExplainArgs) -> Result<std::process::ExitCode, CheckError> {
    let (built, _) = load_and_build(&args.manifests, &args.build)?;
    let explained = crate::l4::explain::explain(&built.snapshot, &args.url, &args.node_addresses)?;
    print!("{explained}");
    Ok(exit_code(true))
}

/// Runs `portico services`.
pub fn services(args: &crate::config::ServicesArgs) -> Result<std::process::ExitCode, CheckError> {
    use crate::config::ServicesFormat;
    let (built, _) = load_and_build(&args.manifests, &args.build)?;
    let text = match args.format {
        ServicesFormat::Ipvsadm => {
            crate::l4::render::ipvsadm(&built.snapshot, &args.node_addresses)
        }
        ServicesFormat::Iptables => crate::l4::render::iptables(&built.snapshot),
    };
    print!("{text}");
    Ok(exit_code(true))
}

fn exit_code(ok: bool) -> std::process::ExitCode {
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Why `portico check` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The directory could not be read.
    #[error(transparent)]
    Manifests(#[from] crate::source::manifests::ManifestsError),
    /// The fallback certificate could not be made.
    #[error("cannot generate the default certificate")]
    Cert(#[from] crate::snapshot::certs::CertError),
    /// The URL to explain is not one.
    #[error(transparent)]
    Explain(#[from] crate::l4::explain::ExplainError),
    /// The cluster could not be read.
    #[error(transparent)]
    Kube(#[from] crate::source::kubernetes::KubeError),
    /// No runtime for the cluster's client.
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}
