//! Command-line flags (and their environment variables), parsed and validated once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::snapshot::BuildConfig;

/// Portico: a Kubernetes ingress controller.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do; without a subcommand Portico runs the controller.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the controller.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the configuration of a manifests directory once, print the route table and every
    /// problem, and exit 1 when there are errors.
    Check(CheckArgs),
}

/// Flags of the controller.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the objects come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// How Ingresses become routes.
    #[command(flatten)]
    pub build: BuildArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PORTICO_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
}

/// Flags of `portico check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The manifests directory to check.
    #[arg(long, value_name = "DIR", required = true)]
    pub manifests: PathBuf,
    /// How Ingresses become routes.
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Where the objects come from.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Read Kubernetes objects from the YAML/JSON manifests in DIR (recursively) and follow
    /// changes: the embedded mode, no cluster needed.
    #[arg(long, value_name = "DIR", env = "PORTICO_MANIFESTS")]
    pub manifests: Option<PathBuf>,
}

/// How Ingresses become routes.
#[derive(Clone, Debug, Args)]
pub struct BuildArgs {
    /// Serve Ingresses whose deprecated `kubernetes.io/ingress.class` annotation names this class.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "portico",
        env = "PORTICO_INGRESS_CLASS"
    )]
    pub ingress_class: String,
    /// Also serve Ingresses that name no class at all.
    #[arg(long, env = "PORTICO_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,
    /// A `kubernetes.io/tls` Secret served to clients whose SNI matches no certificate
    /// (default: a self-signed certificate generated at start).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_namespaced_name)]
    pub default_ssl_certificate: Option<(String, String)>,
}

// === impl BuildArgs ===

impl BuildArgs {
    /// The build configuration these flags describe.
    pub fn build_config(
        &self,
        fallback: std::sync::Arc<rustls::sign::CertifiedKey>,
    ) -> BuildConfig {
        BuildConfig {
            ingress_class: self.ingress_class.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            default_certificate: self.default_ssl_certificate.clone(),
            fallback_certificate: fallback,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_namespaced_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "portico",
            "--manifests",
            "dir",
            "--ingress-class",
            "edge",
            "--watch-ingress-without-class",
            "--default-ssl-certificate",
            "ns/cert",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.run.source.manifests.as_deref(),
            Some(std::path::Path::new("dir"))
        );
        assert_eq!(cli.run.build.ingress_class, "edge");
        assert!(cli.run.build.watch_ingress_without_class);
        assert_eq!(
            cli.run.build.default_ssl_certificate,
            Some(("ns".into(), "cert".into()))
        );
        let check = Cli::try_parse_from(["portico", "check", "--manifests", "d"]).unwrap();
        assert!(
            matches!(check.command, Some(Command::Check(ref a)) if a.build.ingress_class == "portico")
        );
        assert!(Cli::try_parse_from(["portico", "--default-ssl-certificate", "nope"]).is_err());
        assert!(
            Cli::try_parse_from(["portico", "check"]).is_err(),
            "check needs --manifests"
        );
    }
}
