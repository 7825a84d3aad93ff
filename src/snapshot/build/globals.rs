//! ingress-nginx's controller ConfigMap (`--configmap NAMESPACE/NAME`): the global settings
//! every route starts from, with ingress-nginx's keys and defaults; an Ingress's annotations
//! override them. Read in the build like any other object, so a change to the ConfigMap is a
//! new snapshot (no restart). Without `--configmap`, or while the ConfigMap does not exist,
//! ingress-nginx's defaults apply.

use std::collections::BTreeMap;
use std::time::Duration;

use super::annotations::values;
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::routes::{NextUpstream, RouteTimeouts};
use crate::source::{Kind, ObjectKey};
use crate::store::ObjectStore;

/// ingress-nginx's default `proxy-body-size`: 1 MiB.
pub const DEFAULT_BODY_LIMIT: u64 = 1 << 20;

/// The global settings of a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Globals {
    /// `proxy-body-size` (default `1m`; `0`: no limit).
    pub body_limit: Option<u64>,
    /// `ssl-redirect` (default true): hosts with TLS redirect plain HTTP.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect` (default false): every host redirects plain HTTP.
    pub force_ssl_redirect: bool,
    /// `http-redirect-code` (default 308; 301, 302, 307 or 308): the HTTPS redirect's status.
    pub http_redirect_code: u16,
    /// `preserve-trailing-slash` (default false).
    pub preserve_trailing_slash: bool,
    /// `proxy-connect-timeout`, `proxy-send-timeout`, `proxy-read-timeout` (default: the
    /// command line's).
    pub timeouts: RouteTimeouts,
    /// `allow-snippet-annotations` (default false).
    pub allow_snippet_annotations: bool,
    /// `annotations-risk-level` (default `High`).
    pub annotations_risk_level: RiskLevel,
    /// `custom-http-errors`: responses with these statuses come from the default backend.
    pub custom_http_errors: Option<Box<[u16]>>,
    /// `proxy-next-upstream`, `-tries`, `-timeout` (default `error timeout`, 3, 0).
    pub next_upstream: NextUpstream,
}

/// ingress-nginx's annotation risk levels, lowest first: annotations riskier than the
/// configured level are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskLevel {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High (the default).
    High,
    /// Critical (snippets need it).
    Critical,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            body_limit: Some(DEFAULT_BODY_LIMIT),
            ssl_redirect: true,
            force_ssl_redirect: false,
            http_redirect_code: 308,
            preserve_trailing_slash: false,
            timeouts: RouteTimeouts::default(),
            allow_snippet_annotations: false,
            annotations_risk_level: RiskLevel::High,
            custom_http_errors: None,
            next_upstream: NextUpstream::DEFAULT,
        }
    }
}

/// How Portico treats a ConfigMap key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySupport {
    /// Read, with ingress-nginx's semantics.
    Honoured,
    /// Known from ingress-nginx and not supported yet: a warning.
    NotYet,
}

/// The ConfigMap keys Portico reads, sorted.
pub const KEYS: &[(&str, KeySupport)] = &[
    ("add-headers", KeySupport::NotYet),
    ("allow-snippet-annotations", KeySupport::Honoured),
    ("annotations-risk-level", KeySupport::Honoured),
    ("client-body-timeout", KeySupport::NotYet),
    ("client-header-timeout", KeySupport::NotYet),
    ("custom-http-errors", KeySupport::Honoured),
    ("force-ssl-redirect", KeySupport::Honoured),
    ("http-redirect-code", KeySupport::Honoured),
    ("keep-alive", KeySupport::NotYet),
    ("keep-alive-requests", KeySupport::NotYet),
    ("load-balance", KeySupport::NotYet),
    ("preserve-trailing-slash", KeySupport::Honoured),
    ("proxy-body-size", KeySupport::Honoured),
    ("proxy-connect-timeout", KeySupport::Honoured),
    ("proxy-next-upstream", KeySupport::Honoured),
    ("proxy-next-upstream-timeout", KeySupport::Honoured),
    ("proxy-next-upstream-tries", KeySupport::Honoured),
    ("proxy-read-timeout", KeySupport::Honoured),
    ("proxy-send-timeout", KeySupport::Honoured),
    ("proxy-set-headers", KeySupport::NotYet),
    ("server-tokens", KeySupport::NotYet),
    ("ssl-redirect", KeySupport::Honoured),
    ("upstream-keepalive-connections", KeySupport::NotYet),
    ("upstream-keepalive-requests", KeySupport::NotYet),
    ("upstream-keepalive-time", KeySupport::NotYet),
    ("upstream-keepalive-timeout", KeySupport::NotYet),
];

/// The global settings: from the ConfigMap `config.configmap` names when there is one,
/// ingress-nginx's defaults otherwise. A key with an invalid value keeps its default, with a
/// warning naming the key, the value and the reason (ingress-nginx logs and does the same).
pub fn read(
    store: &ObjectStore,
    configmap: Option<&(String, String)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Globals {
    let Some((ns, name)) = configmap else {
        return Globals::default();
    };
    let key = ObjectKey::new(Kind::ConfigMap, ns.as_str(), name.as_str());
    let Some(map) = store.config_maps.get(&(ns.clone(), name.clone())) else {
        let reason = "the ConfigMap named by --configmap does not exist; ingress-nginx's defaults apply (proxy-body-size 1m among them)";
        diagnostics.push(Diagnostic::warning(&key, "metadata.name", reason));
        return Globals::default();
    };
    let empty = BTreeMap::new();
    parse(&key, map.data.as_ref().unwrap_or(&empty), diagnostics)
}

/// Reads the keys of a ConfigMap's `data`.
pub fn parse(
    key: &ObjectKey,
    data: &BTreeMap<String, String>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Globals {
    let mut g = Globals::default();
    let mut warn = |name: &str, reason: String| {
        diagnostics.push(Diagnostic::warning(key, format!("data.{name}"), reason));
    };
    for (name, raw) in data {
        let value = raw.trim();
        let support = KEYS
            .binary_search_by(|(k, _)| (*k).cmp(name.as_str()))
            .ok()
            .map(|i| KEYS[i].1);
        match support {
            None => {
                let reason = "not a ConfigMap key Portico reads; ignored".to_string();
                warn(name, reason);
                continue;
            }
            Some(KeySupport::NotYet) => {
                warn(name, "not supported by Portico yet; ignored".to_string());
                continue;
            }
            Some(KeySupport::Honoured) => {}
        }
        let bad = |why: &str| format!("{value:?} {why}; using the default");
        match name.as_str() {
            "proxy-body-size" => match values::parse_size(value) {
                Ok(0) => g.body_limit = None,
                Ok(n) => g.body_limit = Some(n),
                Err(why) => warn(name, bad(why)),
            },
            "ssl-redirect"
            | "force-ssl-redirect"
            | "preserve-trailing-slash"
            | "allow-snippet-annotations" => match values::parse_bool(value) {
                Some(b) => match name.as_str() {
                    "ssl-redirect" => g.ssl_redirect = b,
                    "force-ssl-redirect" => g.force_ssl_redirect = b,
                    "preserve-trailing-slash" => g.preserve_trailing_slash = b,
                    _ => g.allow_snippet_annotations = b,
                },
                None => warn(name, bad("is not a boolean (\"true\" or \"false\")")),
            },
            "http-redirect-code" => match value.parse::<u16>() {
                Ok(code @ (301 | 302 | 307 | 308)) => g.http_redirect_code = code,
                _ => warn(name, bad("is not 301, 302, 307 or 308")),
            },
            "proxy-connect-timeout" | "proxy-send-timeout" | "proxy-read-timeout" => {
                match values::parse_seconds(value) {
                    Some(s) => {
                        let d = Some(Duration::from_secs(s));
                        match name.as_str() {
                            "proxy-connect-timeout" => g.timeouts.connect = d,
                            "proxy-send-timeout" => g.timeouts.send = d,
                            _ => g.timeouts.read = d,
                        }
                    }
                    None => warn(
                        name,
                        bad("is not a timeout in whole seconds (as \"60\", no unit)"),
                    ),
                }
            }
            "custom-http-errors" => match values::parse_codes(value) {
                Ok(codes) => g.custom_http_errors = Some(codes),
                Err(why) => warn(name, format!("{value:?} {why}; ignored")),
            },
            "proxy-next-upstream" | "proxy-next-upstream-tries" | "proxy-next-upstream-timeout" => {
                let next = &mut g.next_upstream;
                let read = match name.as_str() {
                    "proxy-next-upstream" => next.set_conditions(value),
                    "proxy-next-upstream-tries" => next.set_tries(value),
                    _ => next.set_within(value),
                };
                if let Err(why) = read {
                    warn(name, bad(&why));
                }
            }
            "annotations-risk-level" => match value {
                "Low" => g.annotations_risk_level = RiskLevel::Low,
                "Medium" => g.annotations_risk_level = RiskLevel::Medium,
                "High" => g.annotations_risk_level = RiskLevel::High,
                "Critical" => g.annotations_risk_level = RiskLevel::Critical,
                _ => warn(name, bad("is not Low, Medium, High or Critical")),
            },
            _ => {}
        }
    }
    g
}

#[cfg(test)]
mod tests;
