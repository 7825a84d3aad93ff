//! `portico check --manifests DIR`: build once, print the route table, the certificates and
//! every problem; a linter for users' own CI.

use std::fmt::Write;

use crate::snapshot::table::{RouteRow, route_rows};
use crate::snapshot::{Built, Severity};
use crate::source::manifests::ManifestProblem;

/// The outcome of a check.
#[derive(Debug)]
pub struct Report {
    /// The text to print.
    pub text: String,
    /// Errors found (build errors and unreadable manifests): the exit status is 1 when > 0.
    pub errors: usize,
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
    let (objects, problems) = crate::source::manifests::load_dir(manifests)?;
    let fallback =
        crate::snapshot::certs::TlsCert::self_signed(&[crate::run::DEFAULT_CERT_NAME])?.key;
    let store = crate::store::ObjectStore::from_objects(objects);
    let mut built = crate::snapshot::build(&store, &build.build_config(fallback));
    // Certificates out of (or near the end of) their validity period, judged now, as the
    // controller judges them after each build.
    use crate::snapshot::certs::expiry;
    let served = expiry::served(&built.snapshot.certs);
    built
        .diagnostics
        .extend(expiry::diagnostics(&served, expiry::unix_now()));
    built.diagnostics.sort();
    Ok((built, problems))
}

/// Runs `portico check`: prints the report and returns the exit status.
pub fn run(args: &crate::config::CheckArgs) -> Result<std::process::ExitCode, CheckError> {
    let (built, problems) = load_and_build(&args.manifests, &args.build)?;
    let report = report(&built, &problems);
    print!("{}", report.text);
    Ok(exit_code(report.errors == 0))
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
}
