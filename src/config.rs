//! Command-line flags (and their environment variables), parsed and validated once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// An echo backend for demos and tests: answers every request with JSON describing it.
    Echo(crate::echo::EchoArgs),
    /// Explain how a URL is served: Ingress rule → Service port → ClusterIP/NodePort →
    /// scheduler → endpoints.
    Explain(ExplainArgs),
    /// Print the service table the way `ipvsadm -Ln` or `iptables-save -t nat` shows
    /// kube-proxy's.
    Services(ServicesArgs),
    /// The myblog demo in one command: two echo backends and Portico on examples/myblog, on
    /// ports that need no root (HTTP 8080, HTTPS 8443).
    Demo(DemoArgs),
}

/// Flags of `portico explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The manifests directory.
    #[arg(long, value_name = "DIR", required = true)]
    pub manifests: PathBuf,
    /// How Ingresses become routes.
    #[command(flatten)]
    pub build: BuildArgs,
    /// The node's addresses (NodePort URLs).
    #[arg(long = "node-address", value_name = "IP", default_values = ["127.0.0.1"])]
    pub node_addresses: Vec<std::net::IpAddr>,
    /// `https://host/path`, `http://CLUSTER-IP:PORT/`, `tcp://NODE:NODEPORT`, `udp://…`.
    pub url: String,
}

/// Flags of `portico services`.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// The manifests directory.
    #[arg(long, value_name = "DIR", required = true)]
    pub manifests: PathBuf,
    /// How Ingresses become routes.
    #[command(flatten)]
    pub build: BuildArgs,
    /// The output format.
    #[arg(long, value_enum, default_value_t = ServicesFormat::Ipvsadm)]
    pub format: ServicesFormat,
    /// The node's addresses (NodePort virtual servers in the ipvsadm format).
    #[arg(long = "node-address", value_name = "IP", default_values = ["127.0.0.1"])]
    pub node_addresses: Vec<std::net::IpAddr>,
}

/// How `portico services` prints the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServicesFormat {
    /// Like `ipvsadm -Ln`.
    Ipvsadm,
    /// Like `iptables-save -t nat` of kube-proxy's iptables mode.
    Iptables,
}

/// Flags of `portico demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The manifests to serve.
    #[arg(long, value_name = "DIR", default_value = "examples/myblog")]
    pub manifests: PathBuf,
    /// Addresses of the echo backends (the endpoints in the manifests).
    #[arg(long = "backend", value_name = "ADDR", default_values = ["127.0.0.1:8002", "127.0.0.2:8002"])]
    pub backends: Vec<SocketAddr>,
    /// Plain HTTP listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// HTTPS listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub https_addr: SocketAddr,
    /// Admin listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10254")]
    pub admin_addr: SocketAddr,
    /// ClusterIPs come from this loopback range, so they can be served without root.
    #[arg(long, value_name = "CIDR", default_value = "127.10.0.0/16")]
    pub demo_service_cidr: ipnet::IpNet,
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
    /// Listeners, timeouts and limits of the proxy.
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// The L4 service dataplane's listeners.
    #[command(flatten)]
    pub l4: L4Args,
    /// Worker threads of the async runtime (default: one per CPU; 1 runs everything on one
    /// thread).
    #[arg(long, value_name = "N", env = "PORTICO_THREADS", global = true)]
    pub threads: Option<usize>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PORTICO_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
}

/// Flags of `portico check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The manifests directory to check.
    #[arg(long, value_name = "DIR", required_unless_present = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Check what a live cluster holds instead (read-only: one list of each kind Portico
    /// reads, nothing written).
    #[arg(long, value_name = "FILE", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    pub kube_context: Option<String>,
    /// `text` (default) or `json` (for CI: routes, problems, and the migration report).
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// How Ingresses become routes.
    #[command(flatten)]
    pub build: BuildArgs,
}

/// What `portico check` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// For people.
    Text,
    /// One JSON object.
    Json,
}

/// Where the objects come from.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Read Kubernetes objects from the YAML/JSON manifests in DIR (recursively) and follow
    /// changes: the embedded mode, no cluster needed. Without it Portico watches the
    /// Kubernetes API.
    #[arg(long, value_name = "DIR", env = "PORTICO_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// A manifest file larger than this (`16m`, `512k`, bytes) is not read: it is reported,
    /// and keeps the objects of its last good read.
    #[arg(long, value_name = "BYTES", default_value = "16m", value_parser = parse_size)]
    pub manifests_max_file_bytes: usize,
    /// The Kubernetes API source.
    #[command(flatten)]
    pub kube: crate::source::kubernetes::KubeArgs,
}

// === impl SourceArgs ===

impl SourceArgs {
    /// How the manifests directory is read.
    pub fn manifest_options(&self) -> crate::source::manifests::ManifestOptions {
        crate::source::manifests::ManifestOptions {
            max_file_bytes: self.manifests_max_file_bytes as u64,
        }
    }
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
    /// Route to ExternalName Services (never to the node itself: loopback, link-local and
    /// the node's own addresses are refused with 502). `--allow-external-name-services=false`
    /// turns them off: their routes answer 503, with an error on the Ingress.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          env = "PORTICO_ALLOW_EXTERNAL_NAME_SERVICES")]
    pub allow_external_name_services: bool,
    /// The service table: schedulers and allocation.
    #[command(flatten)]
    pub services: ServiceArgs,
    /// Who may add paths to a host: `shared` (any namespace, as the Ingress API and
    /// ingress-nginx allow) or `namespace` (for multi-tenant clusters: the first namespace to
    /// claim a host, that of its oldest Ingress, owns all of its paths; other namespaces'
    /// rules for it are refused with an error).
    #[arg(long, value_enum, default_value_t = crate::snapshot::HostOwnership::Shared)]
    pub host_ownership: crate::snapshot::HostOwnership,
    /// ingress-nginx's controller ConfigMap (global settings such as proxy-body-size and the
    /// proxy timeouts), read from the manifests directory or watched in the cluster; a change
    /// applies without restart. Without it, ingress-nginx's defaults apply.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_namespaced_name,
          env = "PORTICO_CONFIGMAP")]
    pub configmap: Option<(String, String)>,
    /// Serve the IngressClasses whose `spec.controller` is this (repeatable, or a comma
    /// list). `--controller-class k8s.io/ingress-nginx` serves ingress-nginx's classes, to run
    /// Portico beside ingress-nginx on a few nodes before switching: then also pass
    /// `--update-status=false`, or both controllers write the Ingresses' status.
    #[arg(long = "controller-class", value_name = "CONTROLLER", value_delimiter = ',',
          default_value = crate::snapshot::CONTROLLER_NAME)]
    pub controller_classes: Vec<String>,
}

/// Schedulers and, in the embedded mode, ClusterIP/NodePort allocation.
#[derive(Clone, Debug, Args)]
pub struct ServiceArgs {
    /// The scheduler of Services without a `portico.dev/load-balancer` annotation: rr, wrr,
    /// lc, wlc, sh, random or p2c.
    #[arg(long = "load-balancer", value_name = "SCHEDULER", default_value = "rr")]
    pub default_scheduler: crate::snapshot::services::Scheduler,
    /// Where Services without a clusterIP get one (embedded mode only).
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    pub service_cidr: ipnet::IpNet,
    /// Where NodePort and LoadBalancer Services without a nodePort get one (embedded mode only).
    #[arg(long, value_name = "FIRST-LAST", default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: (u16, u16),
}

// === impl ServiceArgs ===

impl ServiceArgs {
    /// The service options; `allocate` in the embedded mode, where no API server does.
    pub fn options(&self, allocate: bool) -> crate::snapshot::services::ServiceOptions {
        let (first, last) = self.service_node_port_range;
        crate::snapshot::services::ServiceOptions {
            default_scheduler: self.default_scheduler,
            allocation: allocate.then_some(crate::snapshot::services::AllocConfig {
                service_cidr: self.service_cidr,
                node_ports: first..=last,
            }),
        }
    }
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let parsed = s
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((a, b)) if a > 0 && a <= b => Ok((a, b)),
        _ => Err(format!("{s:?} is not a port range like 30000-32767")),
    }
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
            // Manifests are the embedded mode: nobody else allocates ClusterIPs and NodePorts.
            services: self.services.options(true),
            host_ownership: self.host_ownership,
            allow_external_names: self.allow_external_name_services,
            configmap: self.configmap.clone(),
            controller_classes: self.controller_classes.clone(),
        }
    }
}

/// Listeners, timeouts and limits of the proxy.
#[derive(Clone, Debug, Args)]
pub struct ProxyArgs {
    /// Plain HTTP listener (repeat for several, e.g. IPv4 and IPv6).
    #[arg(long = "http-addr", value_name = "ADDR", default_values = ["0.0.0.0:80"])]
    pub http_addrs: Vec<SocketAddr>,
    /// HTTPS listener (repeatable).
    #[arg(long = "https-addr", value_name = "ADDR", default_values = ["0.0.0.0:443"])]
    pub https_addrs: Vec<SocketAddr>,
    /// Admin listener: /healthz, /readyz, /metrics (open to all), /debug/* (loopback
    /// clients, or with the admin token).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10254")]
    pub admin_addr: SocketAddr,
    /// A file holding a token (white space around it trimmed) that lets clients other than
    /// loopback read the admin's /debug/* with `Authorization: Bearer <token>`. Read at start.
    #[arg(long, value_name = "PATH", env = "PORTICO_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Connecting to an endpoint (nginx `proxy_connect_timeout`); past it the client gets
    /// 504.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub proxy_connect_timeout: Duration,
    /// The longest wait between two successful writes of a request to an endpoint (nginx
    /// `proxy_send_timeout`): a slow but progressing upload is never cut.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub proxy_send_timeout: Duration,
    /// The longest wait between two reads from an endpoint, response head or body (nginx
    /// `proxy_read_timeout`): before the head the client gets 504; a body that stalls for
    /// longer is cut and the client connection closed (at most a quarter later for the head).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub proxy_read_timeout: Duration,
    /// The longest wait between two reads of a request body from the client (nginx
    /// `client_body_timeout`); past it the client gets 408.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub client_body_timeout: Duration,
    /// A client that reads nothing of its response for this long is closed, releasing its
    /// upstream connection (nginx `send_timeout`).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub send_timeout: Duration,
    /// Request bodies up to this size are read whole before an upstream connection is taken
    /// (nginx `proxy_request_buffering on`), so a slow client costs a buffer, not a backend
    /// connection; a larger body is streamed once it outgrows the buffer (no temporary files).
    #[arg(long, value_name = "BYTES", default_value = "64k", value_parser = parse_size)]
    pub client_body_buffer_size: usize,
    /// Keep request header fields whose names contain `_` (nginx `underscores_in_headers`;
    /// off: they are dropped, as CGI/WSGI/PHP backends read `X_Forwarded_For` as
    /// `X-Forwarded-For`).
    #[arg(long)]
    pub enable_underscores_in_headers: bool,
    /// Deprecated alias of `--proxy-connect-timeout` (kept for one release).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub upstream_connect_timeout: Option<Duration>,
    /// Deprecated alias of `--proxy-read-timeout` (kept for one release).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub upstream_response_timeout: Option<Duration>,
    /// Idle pooled upstream connections are closed after this.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// A connection's first request head must be complete within this (the ConfigMap's
    /// `client-header-timeout` overrides it; the idle time between keep-alive requests is its
    /// `keep-alive`, 75 s by default).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub client_header_timeout: Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Largest request head accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Most request headers accepted.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_headers: usize,
    /// Client connections open at once, the HTTP and HTTPS listeners together; past it a new
    /// connection is accepted and closed at once (open ones, the admin listener and upstream
    /// connections are not affected). Default: `(soft − reserve) / 2` of the file descriptor
    /// limit (after raising it to the hard limit), `reserve = min(128, soft / 2)` kept for
    /// listeners, admin, watchers and DNS, the other half for upstream connections: 448 at
    /// 1024 descriptors, 524224 at 1048576; no limit when the descriptor limit is unknown.
    #[arg(long, value_name = "N", env = "PORTICO_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// One log line per request (target `portico::access`); `--access-log false` turns it off.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
}

// === impl ProxyArgs ===

impl ProxyArgs {
    /// The proxy configuration these flags describe.
    pub fn proxy_config(&self) -> crate::proxy::ProxyConfig {
        crate::proxy::ProxyConfig {
            connect_timeout: self.connect_timeout(),
            read_timeout: self
                .upstream_response_timeout
                .unwrap_or(self.proxy_read_timeout),
            send_timeout: self.proxy_send_timeout,
            client_body_timeout: self.client_body_timeout,
            client_send_timeout: self.send_timeout,
            client_body_buffer_size: self.client_body_buffer_size,
            underscores_in_headers: self.enable_underscores_in_headers,
            client_header_timeout: self.client_header_timeout,
            upstream_idle_timeout: self.upstream_idle_timeout,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            https_port: self.https_addrs.first().map_or(443, |a| a.port()),
            access_log: self.access_log,
            max_connections: match self.max_connections {
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => crate::resources::default_max_connections(),
            },
            ..crate::proxy::ProxyConfig::default()
        }
    }

    /// The connect timeout (`--proxy-connect-timeout`, or its deprecated alias).
    pub fn connect_timeout(&self) -> Duration {
        self.upstream_connect_timeout
            .unwrap_or(self.proxy_connect_timeout)
    }

    /// One line per deprecated flag in use, naming its replacement (for the log at start).
    pub fn deprecations(&self) -> Vec<&'static str> {
        let mut used = Vec::new();
        if self.upstream_connect_timeout.is_some() {
            used.push("--upstream-connect-timeout is deprecated: use --proxy-connect-timeout");
        }
        if self.upstream_response_timeout.is_some() {
            used.push("--upstream-response-timeout is deprecated: use --proxy-read-timeout");
        }
        used
    }
}

/// The L4 service dataplane's listeners.
#[derive(Clone, Debug, Args)]
pub struct L4Args {
    /// Serve each NodePort on the node's addresses (default: on with --manifests; with a
    /// cluster kube-proxy already does).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub proxy_nodeports: Option<bool>,
    /// Serve each ClusterIP:port that is an address of this node (default: off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub proxy_cluster_ips: Option<bool>,
    /// The node's addresses NodePorts are bound on (repeatable).
    #[arg(long = "node-address", value_name = "IP", default_values = ["0.0.0.0"])]
    pub node_addresses: Vec<std::net::IpAddr>,
    /// A UDP flow with no traffic for this long is forgotten.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub udp_idle_timeout: Duration,
    /// The most UDP flows open at once, every UDP NodePort and ClusterIP together (each holds
    /// a socket); at most half the open-file limit. A new client beyond it takes the place of
    /// its listener's least recently used flow.
    #[arg(long, value_name = "N", default_value_t = crate::l4::UdpFlows::DEFAULT_MAX)]
    pub udp_max_flows: usize,
}

// === impl L4Args ===

impl L4Args {
    /// The L4 configuration; `embedded` is the manifests mode (NodePorts on by default);
    /// `udp_metrics` count the UDP flows.
    pub fn config(
        &self,
        embedded: bool,
        connect_timeout: Duration,
        udp_metrics: crate::metrics::UdpFlowMetrics,
    ) -> crate::l4::L4Config {
        crate::l4::L4Config {
            node_ports: self.proxy_nodeports.unwrap_or(embedded),
            cluster_ips: self.proxy_cluster_ips.unwrap_or(false),
            node_addresses: self.node_addresses.clone(),
            connect_timeout,
            udp_idle_timeout: self.udp_idle_timeout,
            udp_flows: crate::l4::UdpFlows::new(self.udp_max_flows, udp_metrics),
            // Set by the run: shared with the proxy's listeners.
            connections: None,
        }
    }
}

/// `500ms`, `5s`, `2m`, or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 5s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unit must be ms, s or m")),
    }
}

/// A size in bytes with nginx's suffixes: `8192`, `64k`, `1m`, `1g` (either case).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (number, shift) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    number
        .parse::<usize>()
        .ok()
        .filter(|_| !number.starts_with('+'))
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size like 8192, 64k or 1m"))
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
        assert_eq!(cli.run.source.manifests_max_file_bytes, 16 << 20);
        assert_eq!(cli.run.l4.udp_max_flows, crate::l4::UdpFlows::DEFAULT_MAX);
        let limited = ["portico", "--manifests-max-file-bytes", "512k"];
        let limited = Cli::try_parse_from(limited).unwrap().run.source;
        assert_eq!(limited.manifest_options().max_file_bytes, 512 << 10);
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

    #[test]
    fn hardening_flags_parse() {
        let cli = Cli::try_parse_from(["portico"]).unwrap();
        assert!(cli.run.build.allow_external_name_services);
        assert_eq!(cli.run.proxy.max_connections, None);
        assert_eq!(cli.run.proxy.admin_token_file, None);
        let cli = Cli::try_parse_from([
            "portico",
            "--allow-external-name-services=false",
            "--max-connections",
            "4",
            "--admin-token-file",
            "/run/token",
        ])
        .unwrap();
        assert!(!cli.run.build.allow_external_name_services);
        assert_eq!(cli.run.proxy.proxy_config().max_connections, 4);
        assert_eq!(
            cli.run.proxy.admin_token_file.as_deref(),
            Some(std::path::Path::new("/run/token"))
        );
        assert!(!cli.run.build.build_config(fallback()).allow_external_names);
        assert!(Cli::try_parse_from(["portico", "--max-connections", "0"]).is_err());
    }

    fn fallback() -> std::sync::Arc<rustls::sign::CertifiedKey> {
        crate::snapshot::certs::TlsCert::self_signed(&["x"])
            .unwrap()
            .key
    }
}
