//! Label types of the metrics: cheap to build per request (`Arc<str>` clones and enums, no
//! formatting), encoded only when scraped.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// The labels of `portico_requests_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/name` of the Ingress that routed the request; empty when none did.
    pub ingress: Arc<str>,
    /// `namespace/name:port` of the backend Service port; empty when there was none.
    pub service: Arc<str>,
    /// The request method, as a class.
    pub method: MethodClass,
    /// The response status, as a class.
    pub status: StatusClass,
}

/// A request method, with the unregistered ones folded into `OTHER` (bounded cardinality).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodClass {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// OPTIONS
    Options,
    /// CONNECT
    Connect,
    /// TRACE
    Trace,
    /// Any extension method.
    Other,
}

// === impl MethodClass ===

impl MethodClass {
    /// The class of `method`.
    pub fn of(method: &http::Method) -> Self {
        match method.as_str() {
            "GET" => MethodClass::Get,
            "HEAD" => MethodClass::Head,
            "POST" => MethodClass::Post,
            "PUT" => MethodClass::Put,
            "DELETE" => MethodClass::Delete,
            "PATCH" => MethodClass::Patch,
            "OPTIONS" => MethodClass::Options,
            "CONNECT" => MethodClass::Connect,
            "TRACE" => MethodClass::Trace,
            _ => MethodClass::Other,
        }
    }

    /// The label value: the method name in upper case, or `OTHER`.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodClass::Get => "GET",
            MethodClass::Head => "HEAD",
            MethodClass::Post => "POST",
            MethodClass::Put => "PUT",
            MethodClass::Delete => "DELETE",
            MethodClass::Patch => "PATCH",
            MethodClass::Options => "OPTIONS",
            MethodClass::Connect => "CONNECT",
            MethodClass::Trace => "TRACE",
            MethodClass::Other => "OTHER",
        }
    }
}

impl EncodeLabelValue for MethodClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// A response status class: `1xx` to `5xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx
    Informational,
    /// 2xx
    Success,
    /// 3xx
    Redirection,
    /// 4xx
    ClientError,
    /// 5xx (and the unassigned 6xx to 9xx, which no proxy should produce)
    ServerError,
}

// === impl StatusClass ===

impl StatusClass {
    /// The class of `status`.
    pub fn of(status: http::StatusCode) -> Self {
        match status.as_u16() {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    /// The label value, `1xx` to `5xx`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// The plain-HTTP proxy listener.
    Http,
    /// The HTTPS proxy listener.
    Https,
    /// The admin listener.
    Admin,
}

// === impl ListenerKind ===

impl ListenerKind {
    /// Every listener, in label order.
    pub const ALL: [ListenerKind; 3] =
        [ListenerKind::Http, ListenerKind::Https, ListenerKind::Admin];

    /// The label value: `http`, `https` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::Admin => "admin",
        }
    }

    /// The position in [`ListenerKind::ALL`].
    pub(super) fn index(self) -> usize {
        match self {
            ListenerKind::Http => 0,
            ListenerKind::Https => 1,
            ListenerKind::Admin => 2,
        }
    }
}

impl EncodeLabelValue for ListenerKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// The labels of `portico_open_connections`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ListenerLabels {
    pub(super) listener: ListenerKind,
}

/// The labels of `portico_config_diagnostics`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct SeverityLabels {
    pub(super) severity: &'static str,
}

/// The labels of `portico_certificate_expiry_timestamp_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CertLabels {
    /// The namespace of the Secret the certificate came from.
    pub(super) secret_namespace: String,
    /// The Secret's name.
    pub(super) secret_name: String,
    /// The host pattern it is served for; `*` for the default certificate.
    pub(super) host: String,
}

/// The labels of `portico_endpoint_healthy` and `portico_health_panic`: a Service port
/// (`namespace/name:port`) and, for the first, one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `namespace/name:port` of the Service port.
    pub service: String,
    /// The endpoint's address; empty for a whole port.
    pub endpoint: String,
}

/// The labels of `portico_health_checks_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CheckLabels {
    /// `passed` or `failed`.
    pub(super) result: &'static str,
}
