//! One Ingress → its compiled routes (candidates per host), default backend and diagnostics.
//!
//! A [`Compiled`] Ingress depends on the Ingress itself, on how its backends resolved
//! ([`Lookup`]s) and on the TLS hosts (the redirect flag): [`Compiled::still_valid`] checks
//! exactly those, so the next build can reuse it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::annotations;
use super::globals::Globals;
use crate::snapshot::client_auth::ClientAuth;
use crate::snapshot::diagnostics::Diagnostic;
use crate::snapshot::external_auth::{self, AuthHost, AuthSpec, ExternalAuth};
use crate::snapshot::host;
use crate::snapshot::routes::{
    Backend, Candidate, HostPattern, IngressRef, PathType, Policy, PortRef, Redirect, Route,
    RouteLabels, Upstream, UrlPart, UrlTemplate, UrlVar,
};
use crate::snapshot::services::{FindError, ServiceTable, ServiceType};
use crate::snapshot::upstream_tls::{BackendTls, UpstreamTls};
use crate::source::ObjectKey;
use crate::store::ObjectStore;
use annotations::BackendProtocol;
use http::HeaderValue;

/// What every Ingress of a build shares.
pub(super) struct Context<'a> {
    pub store: &'a ObjectStore,
    pub services: &'a ServiceTable,
    pub tls_hosts: &'a super::tls::TlsHosts,
    /// Whether ExternalName Services may be routed to (`BuildConfig::allow_external_names`).
    pub allow_external_names: bool,
    /// The ConfigMap's global settings.
    pub globals: &'a Globals,
}

/// One Ingress of ours, compiled: what it offers the route table, and its own diagnostics.
#[derive(Debug)]
pub(super) struct Compiled {
    pub key: ObjectKey,
    /// The Ingress it was compiled from.
    pub ingress: Arc<Ingress>,
    /// Every path, with its rule's host pattern; `age.0` is 0 (the host sets it).
    pub paths: Vec<(HostPattern, Candidate)>,
    /// The distinct host patterns of `paths`, sorted.
    pub hosts: Vec<HostPattern>,
    /// `spec.defaultBackend`, resolved: the default route of the hosts this Ingress is the
    /// oldest of, and the catch-all when it has no rules.
    pub default_backend: Option<Arc<Route>>,
    /// `spec.rules` is empty: a `spec.defaultBackend` then serves the hosts no rule names
    /// (ingress-nginx's catch-all server).
    pub no_rules: bool,
    /// Whether its TLS hosts redirect plain HTTP (`ssl-redirect`).
    redirect: bool,
    /// Whether every host redirects plain HTTP (`force-ssl-redirect`).
    force_redirect: bool,
    /// `Context::allow_external_names` when it was compiled (its lookups depend on it).
    allow_external_names: bool,
    /// The global settings it was compiled with (its policies start from them).
    globals: Globals,
    /// Every Service lookup made, in order: what the result depended on.
    lookups: Vec<Lookup>,
    /// The Secrets `auth-secret` and `auth-tls-secret` named, and what the store had under
    /// those names (`None`: no such Secret): a change to one compiles the Ingress again.
    auth_secrets: Vec<(crate::store::NsName, Option<Arc<Secret>>)>,
    /// `auth-tls-secret` and its companions: the client certificates its hosts ask for.
    pub client_auth: Option<Arc<ClientAuth>>,
    /// `server-alias`: (a host of its rules, another name for that host's whole server), as
    /// ingress-nginx adds the names to the host's `server_name`; judged among Ingresses later.
    pub aliases: Vec<(HostPattern, Box<str>)>,
    /// Problems of this Ingress alone (precedence among Ingresses is judged later).
    pub diagnostics: Vec<Diagnostic>,
}

/// One backend resolution: the Service port named, and what it gave.
#[derive(Debug, PartialEq)]
struct Lookup {
    /// `None`: the Ingress's own namespace.
    namespace: Option<Arc<str>>,
    service: Arc<str>,
    port: PortRef,
    upstream: Upstream,
    error: Option<String>,
    /// The Service port's `appProtocol` (it may choose the protocol to the endpoints).
    app_protocol: Option<Box<str>>,
}

// === impl Compiled ===

impl Compiled {
    /// Compiles one Ingress of ours.
    pub fn new(cx: &Context<'_>, key: ObjectKey, ingress: &Arc<Ingress>) -> Compiled {
        let mut c = Compiled {
            key,
            ingress: Arc::clone(ingress),
            paths: Vec::new(),
            hosts: Vec::new(),
            default_backend: None,
            no_rules: false,
            redirect: true,
            force_redirect: false,
            allow_external_names: cx.allow_external_names,
            globals: cx.globals.clone(),
            lookups: Vec::new(),
            auth_secrets: Vec::new(),
            client_auth: None,
            aliases: Vec::new(),
            diagnostics: Vec::new(),
        };
        c.compile(cx);
        let mut hosts: Vec<HostPattern> = c.paths.iter().map(|(h, _)| h.clone()).collect();
        hosts.sort();
        hosts.dedup();
        c.hosts = hosts;
        c
    }

    /// Whether compiling `ingress` now would give this again: the same Ingress, every backend
    /// resolving as before (certain when the service table and the ExternalName option are
    /// unchanged), and (when the TLS hosts changed) the same redirect flags.
    pub fn still_valid(&self, cx: &Context<'_>, ingress: &Arc<Ingress>, tls_changed: bool) -> bool {
        let ns = self.key.namespace.as_str();
        self.allow_external_names == cx.allow_external_names
            && self.globals == *cx.globals
            && (Arc::ptr_eq(&self.ingress, ingress) || *self.ingress == **ingress)
            && (cx.services.unchanged()
                || self.lookups.iter().all(|l| {
                    let ns = l.namespace.as_deref().unwrap_or(ns);
                    let (upstream, error) = lookup(cx, ns, &l.service, &l.port);
                    upstream == l.upstream
                        && error == l.error
                        && app_protocol(cx, &upstream) == l.app_protocol
                }))
            && self.auth_secrets.iter().all(|(key, had)| {
                let now = cx.store.secrets.get(key);
                match (had, now) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                }
            })
            && (!tls_changed
                || self.paths.iter().all(|(_, c)| {
                    let exempt =
                        c.route.path.as_deref().is_some_and(|p| {
                            starts_with_any(p, &cx.globals.no_tls_redirect_locations)
                        });
                    c.route.ssl_redirect
                        == (self.ssl_redirect(cx, c.route.host.as_deref()) && !exempt)
                }))
    }

    /// (namespace, name), the order of the store.
    pub fn name(&self) -> (&str, &str) {
        (&self.key.namespace, &self.key.name)
    }

    /// The precedence among Ingresses: oldest first (creationTimestamp; none counts as
    /// newest), then namespace/name.
    pub fn precedence(&self) -> impl Ord + '_ {
        let created = self.ingress.metadata.creation_timestamp.as_ref();
        (created.is_none(), created.map(|t| t.0), &self.key)
    }

    /// A route redirects when an Ingress of its own namespace lists its host under
    /// `spec.tls`: another namespace's TLS entry never changes this one's site.
    fn ssl_redirect(&self, cx: &Context<'_>, host: Option<&str>) -> bool {
        let ours = cx.tls_hosts.get(self.key.namespace.as_str());
        self.force_redirect
            || self.redirect && host.is_some_and(|h| ours.is_some_and(|t| has_tls(t, h)))
    }

    fn compile(&mut self, cx: &Context<'_>) {
        let ingress = Arc::clone(&self.ingress);
        let Some(spec) = ingress.spec.as_ref() else {
            return;
        };
        let iref = IngressRef {
            namespace: self.key.namespace.as_str().into(),
            name: self.key.name.as_str().into(),
        };
        let annotations = ingress.metadata.annotations.as_ref();
        let parsed = annotations::parse(&self.key, annotations, cx.globals, &mut self.diagnostics);
        if parsed.left_out {
            return;
        }
        self.redirect = parsed.ssl_redirect;
        self.force_redirect = parsed.force_ssl_redirect;
        let mut policy = parsed.policy;
        let protocol = parsed.protocol;
        // A canary's own `load-balance` counts (ingress-nginx honours it there, as
        // `upstream-hash-by` and the affinity annotations).
        let balance = parsed.balance;
        // A canary is spoken to as its primary (the primary's settings are copied when it
        // attaches), and ingress-nginx ignores its proxy-ssl annotations.
        let tls = if parsed.canary.is_some() {
            None
        } else {
            match self.upstream_tls(cx, annotations) {
                Ok(tls) => Some(tls),
                Err(()) => {
                    let mut p = policy.as_deref().cloned().unwrap_or_default();
                    p.deny = Some(503);
                    policy = Some(Arc::new(p));
                    None
                }
            }
        };
        match self.basic_auth(cx, annotations) {
            Ok(None) => {}
            Ok(Some(auth)) => {
                let mut p = policy.as_deref().cloned().unwrap_or_default();
                p.basic_auth = Some(auth);
                policy = Some(Arc::new(p));
            }
            Err(()) => {
                let mut p = policy.as_deref().cloned().unwrap_or_default();
                p.deny = Some(503);
                policy = Some(Arc::new(p));
            }
        }
        match self.client_auth(cx, annotations) {
            Ok(auth) => self.client_auth = auth,
            Err(()) => {
                // Client certificates are a server setting in nginx: the whole host is
                // refused (403), the other Ingresses' paths too, never served unverified.
                let source = format!("{}/{}", self.key.namespace, self.key.name);
                self.client_auth = Some(Arc::new(ClientAuth::denied(&source)));
                let mut p = policy.as_deref().cloned().unwrap_or_default();
                p.deny = Some(503);
                policy = Some(Arc::new(p));
            }
        }
        // External authentication: the Ingress's `auth-url`, else the ConfigMap's
        // `global-auth-url` unless `enable-global-auth: "false"`.
        let auth = match parsed.external_auth {
            Some(auth) => Some(auth.map(|spec| (spec, "auth-url"))),
            None if parsed.global_auth => cx
                .globals
                .global_auth
                .clone()
                .map(|spec| Ok((spec, "global-auth-url"))),
            None => None,
        };
        if let Some(auth) = auth {
            let resolved = auth.and_then(|(spec, from)| self.external_auth(cx, &spec, from));
            let mut p = policy.as_deref().cloned().unwrap_or_default();
            match resolved {
                Ok(auth) => p.external_auth = Some(Arc::new(auth)),
                Err(()) => p.deny = Some(503),
            }
            policy = Some(Arc::new(p));
        }
        if let Some(fallback) = self.fallback(cx, annotations) {
            let mut p = policy.as_deref().cloned().unwrap_or_default();
            p.fallback = Some(fallback);
            policy = Some(Arc::new(p));
        }
        let parsed_canary = parsed.canary;
        let parsed_aliases = parsed.aliases;
        let parsed_server_snippet = parsed.server_snippet;
        let parsed_www = parsed.from_to_www;
        let regex = policy
            .as_deref()
            .is_some_and(|p| p.use_regex || p.rewrite.is_some());
        if let Some(b) = spec
            .default_backend
            .as_ref()
            .filter(|_| parsed_canary.is_none())
        {
            let mut backend = self.resolve_backend(cx, b, "spec.defaultBackend");
            backend.balance = balance;
            if let Some(tls) = &tls {
                (backend.tls, backend.http2) =
                    self.backend_tls(cx, protocol, tls, &backend, "spec.defaultBackend");
            }
            self.default_backend = Some(Arc::new(Route {
                host: None,
                path: None,
                path_type: None,
                ingress: iref.clone(),
                labels: RouteLabels::new(&iref, &backend),
                backend,
                ssl_redirect: self.force_redirect,
                policy: policy.clone(),
                regex: None,
                canary: None,
            }));
        }
        self.no_rules = spec.rules.as_ref().is_none_or(|r| r.is_empty());
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.as_deref();
            let Some(pattern) = host_pattern(&self.key, ri, host, &mut self.diagnostics) else {
                continue;
            };
            let host: Option<Box<str>> = match &pattern {
                HostPattern::Any => None,
                HostPattern::Exact(h) => Some(Box::from(&**h)),
                HostPattern::Wildcard(s) => Some(format!("*.{s}").into()),
            };
            let ssl_redirect = self.ssl_redirect(cx, host.as_deref());
            for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("spec.rules[{ri}].http.paths[{pi}]");
                let path = p.path.as_deref();
                let Some((path, path_type)) = path_of(
                    &self.key,
                    &field,
                    (path, &p.path_type, regex),
                    &mut self.diagnostics,
                ) else {
                    continue;
                };
                let backend_field = format!("{field}.backend");
                let mut backend = self.resolve_backend(cx, &p.backend, &backend_field);
                backend.balance = balance;
                if let Some(tls) = &tls {
                    (backend.tls, backend.http2) =
                        self.backend_tls(cx, protocol, tls, &backend, &backend_field);
                }
                let path_policy = route_policy(policy.as_ref(), &path);
                // ingress-nginx's `no-auth-locations` (an ACME solver's path, by default):
                // no basic or external authentication there.
                let path_policy = match path_policy {
                    Some(p)
                        if (p.basic_auth.is_some() || p.external_auth.is_some())
                            && starts_with_any(&path, &cx.globals.no_auth_locations) =>
                    {
                        let mut p = Policy::clone(&p);
                        p.basic_auth = None;
                        p.external_auth = None;
                        (p != Policy::default()).then(|| Arc::new(p))
                    }
                    other => other,
                };
                // …and `no-tls-redirect-locations`: never redirected to HTTPS there.
                let ssl_redirect =
                    ssl_redirect && !starts_with_any(&path, &cx.globals.no_tls_redirect_locations);
                let route = Route {
                    host: host.clone(),
                    path: Some(path),
                    path_type: Some(path_type),
                    ingress: iref.clone(),
                    labels: RouteLabels::new(&iref, &backend),
                    backend,
                    ssl_redirect,
                    policy: path_policy,
                    regex: None,
                    canary: None,
                };
                let candidate = Candidate {
                    route,
                    canary: parsed_canary.clone(),
                    secondary: false,
                    server_snippet: parsed_server_snippet.clone(),
                    default_backend: self.default_backend.clone(),
                    age: (0, ri, pi),
                    object: self.key.clone(),
                    field,
                };
                self.paths.push((pattern.clone(), candidate));
            }
            // A canary's aliases count for nothing, as ingress-nginx skips canaries there.
            if parsed_canary.is_none() && pattern != HostPattern::Any {
                for alias in &parsed_aliases {
                    if !self
                        .aliases
                        .iter()
                        .any(|(h, a)| *h == pattern && a == alias)
                    {
                        self.aliases.push((pattern.clone(), alias.clone()));
                    }
                }
            }
            if let HostPattern::Exact(name) = &pattern {
                self.www_twin(cx, (ri, name), parsed_www);
            }
        }
    }

    /// `from-to-www-redirect`: the www twin of the rule's host (or the apex of a www host)
    /// redirects to it; a candidate that gives way to any rule naming the twin.
    fn www_twin(&mut self, cx: &Context<'_>, (ri, name): (usize, &str), www: bool) {
        let first = self.paths.len()
            - self
                .paths
                .iter()
                .rev()
                .take_while(|(_, c)| c.age.1 == ri)
                .count();
        let rule_paths = &self.paths[first..];
        let Some((_, c)) = rule_paths.first().filter(|_| www) else {
            return;
        };
        let twin = match name.strip_prefix("www.") {
            Some(apex) => apex.to_string(),
            None => format!("www.{name}"),
        };
        // As ingress-nginx's redirect server: the scheme the client used (a trusted peer's
        // X-Forwarded-Proto), the request URI without its last '/'.
        let url = UrlTemplate(Box::new([
            UrlPart::Var(UrlVar::PassScheme),
            UrlPart::Literal(format!("://{name}").into()),
            UrlPart::Var(UrlVar::HostPort),
            UrlPart::Var(UrlVar::RequestUriTrimmed),
        ]));
        let policy = Policy {
            redirect: Some(Redirect {
                code: cx.globals.http_redirect_code,
                url,
            }),
            ..Policy::default()
        };
        let mut c = c.clone();
        c.route.host = Some(twin.clone().into());
        c.route.path = Some("/".into());
        c.route.path_type = Some(PathType::Prefix);
        c.route.policy = Some(Arc::new(policy));
        c.route.ssl_redirect = false;
        c.route.canary = None;
        c.secondary = true;
        c.server_snippet = None;
        c.default_backend = None;
        c.field = format!(
            "metadata.annotations[{}from-to-www-redirect]",
            annotations::NGINX
        );
        self.paths
            .push((HostPattern::Exact(Arc::from(twin.as_str())), c));
    }

    /// The Secret an annotation names (`name` or `namespace/name`), of the Ingress's own
    /// namespace only (`rule` says so when another is named), recorded as a dependency of the
    /// compilation (a change to it compiles the Ingress again, its appearance too).
    fn own_secret(
        &mut self,
        cx: &Context<'_>,
        reference: &str,
        rule: &str,
    ) -> Result<(Arc<Secret>, String, String), String> {
        let own = self.key.namespace.clone();
        let (ns, name) = match reference.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (own.clone(), reference.to_string()),
        };
        if ns != own {
            return Err(format!(
                "names a Secret of another namespace ({ns}); {rule}"
            ));
        }
        let key = (ns.clone(), name.clone());
        let secret = cx.store.secrets.get(&key).cloned();
        self.auth_secrets.push((key, secret.clone()));
        match secret {
            Some(secret) => Ok((secret, ns, name)),
            None => Err(format!("the Secret {ns}/{name} does not exist")),
        }
    }

    /// An error on an annotation that denies every path of the Ingress (503).
    fn deny<T>(&mut self, name: &str, reason: String) -> Result<T, ()> {
        let field = format!("metadata.annotations[{}{name}]", annotations::NGINX);
        let reason = format!("{reason}: every path of this Ingress answers 503");
        self.diagnostics
            .push(Diagnostic::error(&self.key, field, reason));
        Err(())
    }

    /// `auth-type: basic` with `auth-secret` (`name` or `namespace/name`, the Ingress's own
    /// namespace only), `auth-secret-type` and `auth-realm`: the users of the Secret.
    /// `Ok(None)` without `auth-type`; `Err` when the location is denied (503, as
    /// ingress-nginx: a missing or unreadable Secret, an unknown type), with an error.
    fn basic_auth(
        &mut self,
        cx: &Context<'_>,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<Option<Arc<crate::snapshot::basic_auth::BasicAuth>>, ()> {
        use crate::snapshot::basic_auth::{BasicAuth, SecretType};
        let get = |name: &str| annotation(annotations, name);
        let Some(kind) = get("auth-type") else {
            // As ingress-nginx: no auth-type, no authentication. Said aloud, as it is the
            // usual slip that publishes what the Secret was meant to guard.
            if get("auth-secret").is_some_and(|s| !s.is_empty()) && get("auth-url").is_none() {
                let field = format!("metadata.annotations[{}auth-secret]", annotations::NGINX);
                let reason = "without auth-type no authentication is asked (as ingress-nginx): set auth-type: basic".to_string();
                self.diagnostics
                    .push(Diagnostic::warning(&self.key, field, reason));
            }
            return Ok(None);
        };
        let deny = |this: &mut Self, name: &str, reason: String| this.deny(name, reason);
        match kind.as_str() {
            "basic" => {}
            "digest" => {
                let why = "digest authentication is not implemented by Portico";
                return deny(self, "auth-type", why.to_string());
            }
            other => {
                let shown = crate::redact::short_value(other);
                return deny(self, "auth-type", format!("{shown} is not basic or digest"));
            }
        }
        let Some(reference) = get("auth-secret").filter(|s| !s.is_empty()) else {
            let why = "auth-type: basic needs auth-secret".to_string();
            return deny(self, "auth-secret", why);
        };
        let rule = format!(
            "an Ingress's auth Secret must be in its own namespace ({}), as ingress-nginx requires by default",
            self.key.namespace
        );
        let (secret, ns, name) = match self.own_secret(cx, &reference, &rule) {
            Ok(found) => found,
            Err(why) => return deny(self, "auth-secret", why),
        };
        let kind = match get("auth-secret-type").as_deref() {
            None | Some("" | "auth-file") => SecretType::File,
            Some("auth-map") => SecretType::Map,
            Some(other) => {
                let shown = crate::redact::short_value(other);
                let why = format!("{shown} is not auth-file or auth-map");
                return deny(self, "auth-secret-type", why);
            }
        };
        let realm = get("auth-realm").unwrap_or_default();
        // `stringData` wins over `data`, as the API server merges them.
        let mut data: std::collections::BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        let source = format!("{ns}/{name}");
        let mut warnings = Vec::new();
        let built = BasicAuth::new(&source, &realm, kind, &data, &mut warnings);
        let field = format!("metadata.annotations[{}auth-secret]", annotations::NGINX);
        for w in warnings {
            let reason = format!("the Secret {source}, {w}");
            self.diagnostics
                .push(Diagnostic::warning(&self.key, field.clone(), reason));
        }
        match built {
            Ok(auth) => Ok(Some(Arc::new(auth))),
            Err(why) => deny(self, "auth-secret", why),
        }
    }

    /// `auth-tls-secret` (`namespace/name` or `name`, the Ingress's own namespace, key
    /// `ca.crt`) with `auth-tls-verify-client`, `-verify-depth`,
    /// `-pass-certificate-to-upstream`, `-error-page` and `-match-cn`. `Err`: the Secret is
    /// missing or unusable, or a value is invalid; the Ingress's paths answer 503.
    fn client_auth(
        &mut self,
        cx: &Context<'_>,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<Option<Arc<ClientAuth>>, ()> {
        use crate::snapshot::client_auth::Verify;
        let get = |name: &str| annotation(annotations, name);
        let Some(reference) = get("auth-tls-secret").filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let deny = |this: &mut Self, name: &str, reason: String| {
            let field = format!("metadata.annotations[{}{name}]", annotations::NGINX);
            let reason = format!(
                "{reason}: every request to this Ingress's hosts, other Ingresses' paths included, is refused (403, as ingress-nginx)"
            );
            this.diagnostics
                .push(Diagnostic::error(&this.key, field, reason));
            Err(())
        };
        let warn = |this: &mut Self, name: &str, reason: String| {
            let field = format!("metadata.annotations[{}{name}]", annotations::NGINX);
            this.diagnostics
                .push(Diagnostic::warning(&this.key, field, reason));
        };
        let rule = format!(
            "the CA Secret must be in the Ingress's own namespace ({})",
            self.key.namespace
        );
        let (secret, ns, name) = match self.own_secret(cx, &reference, &rule) {
            Ok(found) => found,
            Err(why) => return deny(self, "auth-tls-secret", why),
        };
        let ca = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("ca.crt"))
                    .map(|v| v.0.clone())
            });
        let Some(ca) = ca else {
            return deny(
                self,
                "auth-tls-secret",
                format!("the Secret {ns}/{name} has no key ca.crt"),
            );
        };
        if secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key("ca.crl"))
        {
            warn(
                self,
                "auth-tls-secret",
                format!(
                    "the Secret {ns}/{name} has a ca.crl, which Portico does not read yet: revoked certificates are not refused"
                ),
            );
        }
        let verify = match get("auth-tls-verify-client").as_deref() {
            None | Some("") => Verify::On,
            Some(v) => Verify::parse(v).unwrap_or_else(|| {
                warn(
                    self,
                    "auth-tls-verify-client",
                    format!("{v:?} is not on, off, optional or optional_no_ca; using on"),
                );
                Verify::On
            }),
        };
        let depth = match get("auth-tls-verify-depth").as_deref() {
            None | Some("") => 1,
            Some(v) => match v.parse::<u8>() {
                Ok(d) if d > 0 => d,
                _ => {
                    warn(
                        self,
                        "auth-tls-verify-depth",
                        format!("{v:?} is not a depth from 1 to 255; using 1"),
                    );
                    1
                }
            },
        };
        let pass = match get("auth-tls-pass-certificate-to-upstream").as_deref() {
            None | Some("") => false,
            Some(v) => annotations::values::parse_bool(v).unwrap_or_else(|| {
                warn(
                    self,
                    "auth-tls-pass-certificate-to-upstream",
                    format!("{v:?} is not a boolean; using false"),
                );
                false
            }),
        };
        let error_page = match get("auth-tls-error-page").filter(|p| !p.is_empty()) {
            None => None,
            Some(page)
                if HeaderValue::from_str(&page).is_ok() && !page.bytes().any(|b| b == b' ') =>
            {
                Some(page.into_boxed_str())
            }
            Some(page) => {
                let shown = crate::redact::short_value(&page);
                return deny(self, "auth-tls-error-page", format!("{shown} is not a URL"));
            }
        };
        let match_cn = get("auth-tls-match-cn");
        let source = format!("{ns}/{name}");
        match ClientAuth::new(
            &source,
            &ca,
            (verify, depth, pass),
            error_page,
            match_cn.as_deref(),
        ) {
            Ok(auth) => Ok(Some(Arc::new(auth))),
            Err(why) => deny(
                self,
                "auth-tls-secret",
                format!("the Secret {source}: {why}"),
            ),
        }
    }

    /// `proxy-ssl-secret` (the Ingress's own namespace: `ca.crt`, and `tls.crt`/`tls.key` as
    /// the certificate shown to endpoints) with `proxy-ssl-verify`, `-verify-depth`, `-name`,
    /// `-server-name`, `-protocols` and `-ciphers`, read as ingress-nginx reads them: without
    /// the Secret the others are ignored (a warning), and verification, depth and protocols
    /// need its `ca.crt`. The settings are for the name `""` ([`UpstreamTls::renamed`] gives
    /// each backend its own). `Err`: a missing or unusable Secret, or verification asked
    /// without a CA to verify with; the Ingress's paths answer 503 (as ingress-nginx denies
    /// the location).
    fn upstream_tls(
        &mut self,
        cx: &Context<'_>,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(UpstreamTls, Option<Box<str>>), ()> {
        use crate::snapshot::upstream_tls::{SecretTls, Versions};
        let get = |name: &str| annotation(annotations, name).filter(|v| !v.is_empty());
        let warn = |this: &mut Self, name: &str, reason: String| {
            let field = format!("metadata.annotations[{}{name}]", annotations::NGINX);
            this.diagnostics
                .push(Diagnostic::warning(&this.key, field, reason));
        };
        const OTHERS: [&str; 6] = [
            "proxy-ssl-verify",
            "proxy-ssl-verify-depth",
            "proxy-ssl-name",
            "proxy-ssl-server-name",
            "proxy-ssl-protocols",
            "proxy-ssl-ciphers",
        ];
        let Some(reference) = get("proxy-ssl-secret") else {
            if get("proxy-ssl-verify").as_deref() == Some("on") {
                return self.deny(
                    "proxy-ssl-verify",
                    "verification needs proxy-ssl-secret with a ca.crt to verify with (ingress-nginx would silently not verify)".to_string(),
                );
            }
            for name in OTHERS {
                if get(name).is_some() {
                    let reason =
                        "ignored without proxy-ssl-secret, as in ingress-nginx".to_string();
                    warn(self, name, reason);
                }
            }
            return Ok((UpstreamTls::plain(""), None));
        };
        let rule = format!(
            "the proxy-ssl Secret must be in the Ingress's own namespace ({}), as ingress-nginx requires",
            self.key.namespace
        );
        let (secret, ns, name) = match self.own_secret(cx, &reference, &rule) {
            Ok(found) => found,
            Err(why) => return self.deny("proxy-ssl-secret", why),
        };
        let (ca, cert, key) = (
            secret_value(&secret, "ca.crt"),
            secret_value(&secret, "tls.crt"),
            secret_value(&secret, "tls.key"),
        );
        let verify = match get("proxy-ssl-verify").as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(v) => {
                let shown = crate::redact::short_value(v);
                warn(
                    self,
                    "proxy-ssl-verify",
                    format!("{shown} is not on or off; using off, as ingress-nginx"),
                );
                false
            }
        };
        let depth = match get("proxy-ssl-verify-depth").as_deref() {
            None => 1,
            Some(v) => match v.parse::<u32>() {
                Ok(d) if d > 0 => u8::try_from(d).unwrap_or(u8::MAX),
                _ => {
                    let shown = crate::redact::short_value(v);
                    let reason = format!("{shown} is not a depth above 0; using 1");
                    warn(self, "proxy-ssl-verify-depth", reason);
                    1
                }
            },
        };
        // ingress-nginx's default with a CA ("TLSv1 TLSv1.1 TLSv1.2"); nginx's own
        // (TLSv1.2 TLSv1.3) without one, as the protocols are set only with a CA.
        const DEFAULT_WITH_CA: Versions = Versions {
            tls12: true,
            tls13: false,
        };
        let versions = match (&ca, get("proxy-ssl-protocols")) {
            (None, Some(_)) => {
                let reason = "applies only with a ca.crt in proxy-ssl-secret, as in ingress-nginx; TLS 1.2 and 1.3 are offered".to_string();
                warn(self, "proxy-ssl-protocols", reason);
                Versions::BOTH
            }
            (None, None) => Versions::BOTH,
            (Some(_), None) => DEFAULT_WITH_CA,
            (Some(_), Some(v)) => match Versions::parse(&v) {
                None => {
                    let shown = crate::redact::short_value(&v);
                    let reason = format!(
                        "{shown} is not a list of SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3; using ingress-nginx's default (TLS 1.2 of it)"
                    );
                    warn(self, "proxy-ssl-protocols", reason);
                    DEFAULT_WITH_CA
                }
                Some((versions, dropped)) => {
                    if !dropped.is_empty() {
                        let reason = format!(
                            "{} are not offered (Portico speaks TLS 1.2 and 1.3 only){}",
                            dropped.join(", "),
                            if versions.any() {
                                ""
                            } else {
                                "; TLS 1.2 is offered instead"
                            }
                        );
                        warn(self, "proxy-ssl-protocols", reason);
                    }
                    if versions.any() {
                        versions
                    } else {
                        DEFAULT_WITH_CA
                    }
                }
            },
        };
        let sni = match get("proxy-ssl-server-name").as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(v) => {
                let shown = crate::redact::short_value(v);
                let reason = format!("{shown} is not on or off; using off, as ingress-nginx");
                warn(self, "proxy-ssl-server-name", reason);
                false
            }
        };
        let tls_name = match get("proxy-ssl-name") {
            None => None,
            Some(n) if rustls_pki_types::ServerName::try_from(n.as_str()).is_ok() => {
                Some(n.to_ascii_lowercase().into_boxed_str())
            }
            Some(n) => {
                let shown = crate::redact::short_value(&n);
                let reason =
                    format!("{shown} is not a DNS name or an address; the Service's name is used");
                warn(self, "proxy-ssl-name", reason);
                None
            }
        };
        if let Some(c) = get("proxy-ssl-ciphers").filter(|c| c != "DEFAULT") {
            let shown = crate::redact::short_value(&c);
            let reason = format!(
                "{shown}: Portico offers rustls's cipher suites (modern AEAD suites only) whatever this says"
            );
            warn(self, "proxy-ssl-ciphers", reason);
        }
        let source = format!("{ns}/{name}");
        let secret = SecretTls {
            source: &source,
            ca: ca.as_deref(),
            cert: cert.as_deref(),
            key: key.as_deref(),
        };
        let verify = verify.then_some(depth);
        match UpstreamTls::new(Some(secret), verify, "", sni, versions) {
            Ok(tls) => Ok((tls, tls_name)),
            Err(why) => self.deny("proxy-ssl-secret", format!("the Secret {source}: {why}")),
        }
    }

    /// TLS and HTTP/2 to a backend's endpoints: as `backend-protocol` says, else as its
    /// Service port's `appProtocol` (`https`, `kubernetes.io/wss`: TLS; `kubernetes.io/h2c`:
    /// HTTP/2 in clear text); `None`: clear text.
    fn backend_tls(
        &mut self,
        cx: &Context<'_>,
        protocol: BackendProtocol,
        settings: &(UpstreamTls, Option<Box<str>>),
        backend: &Backend,
        _field: &str,
    ) -> (Option<BackendTls>, bool) {
        let (auto, http2) = match protocol {
            BackendProtocol::Http => return (None, false),
            BackendProtocol::Grpc => return (None, true),
            BackendProtocol::Https => (false, false),
            BackendProtocol::AutoHttp => (true, false),
            BackendProtocol::Grpcs => (false, true),
            BackendProtocol::Unset => {
                let app = match &backend.upstream {
                    Upstream::Service(id) => {
                        cx.services.get(*id).and_then(|p| p.app_protocol.as_deref())
                    }
                    _ => None,
                };
                match app {
                    Some("https" | "kubernetes.io/wss") => (false, false),
                    Some("kubernetes.io/h2c") => return (None, true),
                    _ => return (None, false),
                }
            }
        };
        let (base, name) = settings;
        let name = match name {
            Some(name) => name.to_string(),
            None => format!("{}.{}.svc", backend.service, self.key.namespace),
        };
        let tls = BackendTls {
            settings: Arc::new(base.renamed(&name)),
            auto,
        };
        (Some(tls), http2)
    }

    /// Resolves an external-auth configuration: a host naming a cluster Service becomes that
    /// Service's backend (any namespace, as a DNS name reaches it; the lookup is recorded so a
    /// change of the Service recompiles the Ingress). `https://` is spoken as ingress-nginx's
    /// auth location speaks it: TLS with the URL's host as SNI (`proxy_ssl_server_name on`),
    /// the certificate not verified (nginx's default).
    fn external_auth(
        &mut self,
        cx: &Context<'_>,
        spec: &Arc<AuthSpec>,
        from: &'static str,
    ) -> Result<ExternalAuth, ()> {
        let field = if from == "auth-url" {
            format!("metadata.annotations[{}auth-url]", annotations::NGINX)
        } else {
            "data.global-auth-url (the controller ConfigMap)".to_string()
        };
        let url = &spec.parsed;
        let mut service = None;
        if let AuthHost::Literal(host) = &url.host
            && let Some((name, ns)) = external_auth::cluster_service(host)
        {
            let port = PortRef::Number(url.port);
            let (upstream, error) = lookup(cx, ns, name, &port);
            if let Some(reason) = &error {
                let reason = format!("the auth service {ns}/{name}: {reason}");
                self.error(field.clone(), reason);
            }
            let name: Arc<str> = name.into();
            self.lookups.push(Lookup {
                namespace: Some(ns.into()),
                service: Arc::clone(&name),
                port: port.clone(),
                app_protocol: app_protocol(cx, &upstream),
                upstream: upstream.clone(),
                error,
            });
            service = Some(Backend {
                service: name,
                port,
                upstream,
                tls: url.tls.then(|| BackendTls {
                    settings: Arc::new(external_auth::auth_tls(host)),
                    auto: false,
                }),
                balance: None,
                http2: false,
            });
        } else if let AuthHost::Literal(host) = &url.host
            && let Some(refusal) = crate::egress::literal_refusal(host)
        {
            let reason = format!(
                "{:?} names {host:?}, {refusal}: Portico does not connect there; requests get 500",
                spec.url
            );
            self.diagnostics
                .push(Diagnostic::warning(&self.key, field, reason));
        }
        let timeouts = cx.globals.timeouts;
        Ok(ExternalAuth {
            spec: Arc::clone(spec),
            service,
            connect_timeout: timeouts.connect.unwrap_or(DEFAULT_AUTH_CONNECT),
            read_timeout: timeouts.read.unwrap_or(DEFAULT_AUTH_READ),
            namespace: (from == "auth-url").then(|| Arc::from(self.key.namespace.as_str())),
            scope: format!(
                "{}/{} {from} {}",
                self.key.namespace, self.key.name, spec.url
            )
            .into(),
        })
    }

    /// `default-backend`: a Service of the Ingress's namespace, its first port.
    fn fallback(
        &mut self,
        cx: &Context<'_>,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Option<Backend> {
        let key = format!("{}default-backend", annotations::NGINX);
        let name = annotations?.get(&key)?.trim();
        if name.is_empty() {
            return None;
        }
        let field = format!("metadata.annotations[{key}]");
        let ns = self.key.namespace.clone();
        let service = cx.store.services.get(&(ns, name.to_string()));
        let port = service.and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port));
        // A missing Service is resolved all the same: the lookup is recorded (so the Ingress
        // is compiled again when the Service appears) and names the problem.
        let port = port.unwrap_or(80);
        let backend = IngressBackend {
            service: Some(k8s_openapi::api::networking::v1::IngressServiceBackend {
                name: name.to_string(),
                port: Some(k8s_openapi::api::networking::v1::ServiceBackendPort {
                    number: Some(port),
                    name: None,
                }),
            }),
            resource: None,
        };
        Some(self.resolve_backend(cx, &backend, &field))
    }

    /// Resolves a backend to an upstream; what cannot be resolved is a diagnostic and a 503.
    fn resolve_backend(
        &mut self,
        cx: &Context<'_>,
        backend: &IngressBackend,
        field: &str,
    ) -> Backend {
        let unavailable = |service: &str, port| Backend {
            service: Arc::from(service),
            port,
            upstream: Upstream::Unavailable,
            tls: None,
            balance: None,
            http2: false,
        };
        let Some(svc) = &backend.service else {
            let reason = "resource backends are not supported; requests get 503";
            self.error(format!("{field}.resource"), reason.to_string());
            return unavailable("", PortRef::Number(0));
        };
        let port = match port_ref(svc.port.as_ref()) {
            Ok(port) => port,
            Err((suffix, reason)) => {
                self.error(format!("{field}.service.port{suffix}"), reason.to_string());
                return unavailable(&svc.name, PortRef::Number(0));
            }
        };
        let service: Arc<str> = Arc::from(svc.name.as_str());
        let (upstream, error) = lookup(cx, &self.key.namespace, &service, &port);
        if let Some(reason) = &error {
            self.error(format!("{field}.service"), reason.clone());
        }
        // A function of the upstream alone, so a reused compilation (same lookups) has it too.
        if let Upstream::External { host, .. } = &upstream
            && let Some(refusal) = crate::egress::literal_refusal(host)
        {
            let reason = format!(
                "ExternalName Service {}/{service} names {host:?}, {refusal}: Portico does not connect there; requests get 502",
                self.key.namespace
            );
            let warning = Diagnostic::warning(&self.key, format!("{field}.service"), reason);
            self.diagnostics.push(warning);
        }
        self.lookups.push(Lookup {
            namespace: None,
            service: Arc::clone(&service),
            port: port.clone(),
            app_protocol: app_protocol(cx, &upstream),
            upstream: upstream.clone(),
            error,
        });
        Backend {
            service,
            port,
            upstream,
            tls: None,
            balance: None,
            http2: false,
        }
    }

    fn error(&mut self, field: String, reason: String) {
        self.diagnostics
            .push(Diagnostic::error(&self.key, field, reason));
    }
}

/// A Secret's value under `key` (`stringData` wins over `data`, as the API server merges them).
fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    let text = secret.string_data.as_ref().and_then(|d| d.get(key));
    match text {
        Some(v) => Some(v.as_bytes().to_vec()),
        None => secret.data.as_ref()?.get(key).map(|v| v.0.clone()),
    }
}

/// The trimmed value of an ingress-nginx annotation (`name` without the prefix).
fn annotation(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    name: &str,
) -> Option<String> {
    annotations
        .and_then(|a| a.get(&format!("{}{name}", annotations::NGINX)))
        .map(|v| v.trim().to_string())
}

/// ingress-nginx's `proxy-connect-timeout` default, for the auth request.
const DEFAULT_AUTH_CONNECT: std::time::Duration = std::time::Duration::from_secs(5);
/// ingress-nginx's `proxy-read-timeout` default, for the auth request.
const DEFAULT_AUTH_READ: std::time::Duration = std::time::Duration::from_secs(60);

/// The Service port a backend names, or the field suffix and reason it is unusable.
fn port_ref(
    port: Option<&k8s_openapi::api::networking::v1::ServiceBackendPort>,
) -> Result<PortRef, (&'static str, &'static str)> {
    match port {
        Some(p) if p.number.is_some() => p
            .number
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .map(PortRef::Number)
            .ok_or((".number", "port number out of range; requests get 503")),
        Some(p) if p.name.as_deref().is_some_and(|n| !n.is_empty()) => {
            Ok(PortRef::Name(p.name.as_deref().unwrap_or_default().into()))
        }
        _ => Err(("", "needs a port number or name; requests get 503")),
    }
}

/// Resolves a Service port of namespace `ns`: the upstream, and why it is unavailable.
fn lookup(cx: &Context<'_>, ns: &str, name: &str, port: &PortRef) -> (Upstream, Option<String>) {
    let found = cx.services.find(ns, name, port);
    let upstream = match &found {
        Ok(id) => match cx.services.get(*id) {
            Some(sp) if sp.service_type == ServiceType::ExternalName => {
                external(sp.external_name.as_deref(), sp.port)
            }
            _ => Upstream::Service(*id),
        },
        Err(FindError::NoPort(..)) if is_external_name(cx.store, ns, name) => match port {
            // An ExternalName Service needs no ports: connect to the number the Ingress names.
            PortRef::Number(n) => external(external_name(cx.store, ns, name), *n),
            PortRef::Name(_) => Upstream::Unavailable,
        },
        Err(_) => Upstream::Unavailable,
    };
    if matches!(upstream, Upstream::External { .. }) && !cx.allow_external_names {
        let reason = format!(
            "Service {ns}/{name} is of type ExternalName, and ExternalName Services are disabled (--allow-external-name-services=false); requests get 503"
        );
        return (Upstream::Unavailable, Some(reason));
    }
    if upstream != Upstream::Unavailable {
        return (upstream, None);
    }
    let reason = match found {
        Err(e) => format!("{e}; requests get 503"),
        Ok(_) => "ExternalName Service without externalName; requests get 503".to_string(),
    };
    (upstream, Some(reason))
}

/// The `appProtocol` of the Service port an upstream is.
fn app_protocol(cx: &Context<'_>, upstream: &Upstream) -> Option<Box<str>> {
    match upstream {
        Upstream::Service(id) => cx.services.get(*id)?.app_protocol.clone(),
        _ => None,
    }
}

/// The catch-all default backend: that of the first Ingress (in precedence order) declaring
/// one with no rules (ingress-nginx's catch-all server); the others get a warning.
pub(super) fn default_backend<'a>(
    by_precedence: impl IntoIterator<Item = &'a Compiled>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Route> {
    let mut chosen: Option<&Route> = None;
    for c in by_precedence {
        let Some(route) = c.default_backend.as_deref() else {
            continue;
        };
        match chosen {
            None => chosen = Some(route),
            Some(older) => {
                let reason = format!(
                    "a default backend is already set by Ingress {}/{}, which takes precedence (older, or first by namespace/name); ignored",
                    older.ingress.namespace, older.ingress.name
                );
                diagnostics.push(Diagnostic::warning(&c.key, "spec.defaultBackend", reason));
            }
        }
    }
    chosen.cloned()
}

fn has_tls(tls_hosts: &std::collections::HashSet<String>, host: &str) -> bool {
    tls_hosts.contains(host)
        || host::wildcard_suffix(host)
            .is_some_and(|s| !host.starts_with("*.") && tls_hosts.contains(&format!("*.{s}")))
}

fn host_pattern(
    key: &ObjectKey,
    ri: usize,
    host: Option<&str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<HostPattern> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Some(HostPattern::Any);
    };
    let host = host.to_ascii_lowercase();
    if let Err(reason) = host::validate_rule_host(&host) {
        diagnostics.push(Diagnostic::error(
            key,
            format!("spec.rules[{ri}].host"),
            format!("host {host:?} {reason}; rule ignored"),
        ));
        return None;
    }
    Some(match host.strip_prefix("*.") {
        Some(suffix) => HostPattern::Wildcard(suffix.into()),
        None => HostPattern::Exact(host.into()),
    })
}

/// Sequences the Kubernetes API rejects in Exact and Prefix paths (and that would make
/// element-wise matching ambiguous); Portico applies them to every path type.
const INVALID_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
const INVALID_SUFFIXES: [&str; 2] = ["/..", "/."];

/// The policy of one path: the Ingress's, without a rewrite whose target is the path itself
/// (ingress-nginx adds no rewrite then, and such a path does not put the host in regex mode).
/// Whether `path` (an Ingress path) starts with one of `locations` (ingress-nginx's
/// `isLocationInLocationList`).
fn starts_with_any(path: &str, locations: &[Box<str>]) -> bool {
    locations.iter().any(|l| path.starts_with(&**l))
}

fn route_policy(policy: Option<&Arc<Policy>>, path: &str) -> Option<Arc<Policy>> {
    let p = policy?;
    match &p.rewrite {
        Some(r) if r.target.is_literal(path) => {
            let mut p = Policy::clone(p);
            p.rewrite = None;
            (p != Policy::default()).then(|| Arc::new(p))
        }
        _ => Some(Arc::clone(p)),
    }
}

/// The path and type of a path entry; `regex`: the Ingress asks for regex paths (`use-regex`
/// or `rewrite-target`), where '?', '//' and the like are regex syntax, not errors.
fn path_of(
    key: &ObjectKey,
    field: &str,
    (path, path_type, regex): (Option<&str>, &str, bool),
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Box<str>, PathType)> {
    let path_type = match path_type {
        "Exact" => PathType::Exact,
        "Prefix" => PathType::Prefix,
        "ImplementationSpecific" => PathType::ImplementationSpecific,
        other => {
            let reason = format!(
                "unknown pathType {other:?} (Exact, Prefix or ImplementationSpecific); path ignored"
            );
            diagnostics.push(Diagnostic::error(key, format!("{field}.pathType"), reason));
            return None;
        }
    };
    let path = match path.filter(|p| !p.is_empty()) {
        Some(p) => p,
        None if path_type == PathType::ImplementationSpecific => "/",
        None => {
            diagnostics.push(Diagnostic::error(
                key,
                format!("{field}.path"),
                "path is required; path ignored",
            ));
            return None;
        }
    };
    if let Err(reason) = validate_path(path, regex) {
        diagnostics.push(Diagnostic::error(
            key,
            format!("{field}.path"),
            format!("{path:?} {reason}; path ignored"),
        ));
        return None;
    }
    if path_type == PathType::ImplementationSpecific
        && !regex
        && path.contains(['(', ')', '[', ']', '$', '^', '*', '|', '+'])
    {
        let reason = format!(
            "{path:?} looks like a regular expression; ImplementationSpecific paths are matched as Prefix"
        );
        diagnostics.push(Diagnostic::warning(key, format!("{field}.path"), reason));
    }
    Some((path.into(), path_type))
}

fn validate_path(path: &str, regex: bool) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be an absolute path (start with '/')");
    }
    if regex {
        if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("must not contain spaces or control characters");
        }
        return Ok(());
    }
    if INVALID_SEQUENCES.iter().any(|s| path.contains(s))
        || INVALID_SUFFIXES.iter().any(|s| path.ends_with(s))
    {
        return Err("must not contain '//', '/./', '/../' or '%2F', nor end in '/.' or '/..'");
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain '?', '#', spaces or control characters");
    }
    Ok(())
}

fn external(host: Option<&str>, port: u16) -> Upstream {
    match host {
        Some(h) if !h.is_empty() => Upstream::External {
            host: h.into(),
            port,
        },
        _ => Upstream::Unavailable,
    }
}

fn external_name<'a>(store: &'a ObjectStore, ns: &str, name: &str) -> Option<&'a str> {
    let svc = store.services.get(&(ns.to_string(), name.to_string()))?;
    svc.spec.as_ref()?.external_name.as_deref()
}

fn is_external_name(store: &ObjectStore, ns: &str, name: &str) -> bool {
    let svc = store.services.get(&(ns.to_string(), name.to_string()));
    svc.and_then(|s| s.spec.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("ExternalName")
}
