//! Manifests as YAML text, written the way users write them.

use std::net::SocketAddr;

/// Our IngressClass.
pub fn class() -> String {
    "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\nspec: {controller: portico.dev/ingress-controller}\n".into()
}

/// A Service `name` in `ns` with one port `port` → targetPort `port`, selector-less.
pub fn service(ns: &str, name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{port: {port}}}]\n"
    )
}

/// One EndpointSlice per backend (their ports differ), all ready unless listed in `not_ready`.
pub fn endpoints(
    ns: &str,
    service: &str,
    backends: &[SocketAddr],
    not_ready: &[SocketAddr],
) -> String {
    let mut out = String::new();
    for (i, addr) in backends.iter().chain(not_ready).enumerate() {
        let ready = i < backends.len();
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-{i}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{port: {}}}]\nendpoints:\n  - addresses: [\"{}\"]\n    conditions: {{ready: {ready}}}\n",
            addr.port(),
            addr.ip()
        ));
    }
    out
}

/// A path of an Ingress rule.
pub struct Path<'a> {
    pub path: &'a str,
    pub path_type: &'a str,
    pub service: &'a str,
    pub port: u16,
}

pub fn prefix<'a>(path: &'a str, service: &'a str, port: u16) -> Path<'a> {
    Path {
        path,
        path_type: "Prefix",
        service,
        port,
    }
}

pub fn exact<'a>(path: &'a str, service: &'a str, port: u16) -> Path<'a> {
    Path {
        path,
        path_type: "Exact",
        service,
        port,
    }
}

/// An Ingress of class portico; `host` "" means a host-less rule.
pub fn ingress(ns: &str, name: &str, rules: &[(&str, Vec<Path<'_>>)]) -> String {
    ingress_full(ns, name, rules, &[], "", None)
}

/// An Ingress with TLS entries (hosts, secret), annotations (YAML lines) and a default backend.
pub fn ingress_full(
    ns: &str,
    name: &str,
    rules: &[(&str, Vec<Path<'_>>)],
    tls: &[(&[&str], &str)],
    annotations: &str,
    default_backend: Option<(&str, u16)>,
) -> String {
    let mut y = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    );
    if !annotations.is_empty() {
        y.push_str(&format!("  annotations: {{{annotations}}}\n"));
    }
    y.push_str("spec:\n  ingressClassName: portico\n");
    if let Some((svc, port)) = default_backend {
        y.push_str(&format!(
            "  defaultBackend: {{service: {{name: {svc}, port: {{number: {port}}}}}}}\n"
        ));
    }
    if !tls.is_empty() {
        y.push_str("  tls:\n");
        for (hosts, secret) in tls {
            y.push_str(&format!(
                "    - hosts: {hosts:?}\n      secretName: {secret}\n"
            ));
        }
    }
    y.push_str("  rules:\n");
    for (host, paths) in rules {
        if host.is_empty() {
            y.push_str("    - http:\n        paths:\n");
        } else {
            y.push_str(&format!(
                "    - host: \"{host}\"\n      http:\n        paths:\n"
            ));
        }
        for p in paths {
            y.push_str(&format!(
                "          - path: \"{}\"\n            pathType: {}\n            backend: {{service: {{name: {}, port: {{number: {}}}}}}}\n",
                p.path, p.path_type, p.service, p.port
            ));
        }
    }
    y
}

/// A kubernetes.io/tls Secret with a fresh self-signed certificate for `names`; returns the
/// manifest and the certificate's DER.
pub fn tls_secret(ns: &str, name: &str, names: &[&str]) -> (String, Vec<u8>) {
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert.cert.pem()),
        indent(cert.signing_key.serialize_pem())
    );
    (yaml, cert.cert.der().to_vec())
}

/// Like [`tls_secret`], valid from `not_before` to `not_after` (Unix seconds).
pub fn tls_secret_valid(
    ns: &str,
    name: &str,
    names: &[&str],
    (not_before, not_after): (i64, i64),
) -> (String, Vec<u8>) {
    use x509_parser::time::ASN1Time;
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.not_before = ASN1Time::from_timestamp(not_before).unwrap().to_datetime();
    params.not_after = ASN1Time::from_timestamp(not_after).unwrap().to_datetime();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert.pem()),
        indent(key.serialize_pem())
    );
    (yaml, cert.der().to_vec())
}

/// The controller ConfigMap the tests pass as `--configmap ingress/portico`, with `data`
/// given as YAML flow-mapping entries (`key: "value", …`).
pub fn controller_configmap(data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\n  namespace: ingress\ndata: {{{data}}}\n"
    )
}

/// An Ingress in `shop` with one Prefix path on `host` to `service` port 80, and these
/// ingress-nginx annotations (names without the prefix).
pub fn nginx_ingress(
    name: &str,
    host: &str,
    path: &str,
    service: &str,
    annotations: &[(&str, &str)],
) -> String {
    let annotations = annotations
        .iter()
        .map(|(k, v)| format!("nginx.ingress.kubernetes.io/{k}: {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    ingress_full(
        "shop",
        name,
        &[(host, vec![prefix(path, service, 80)])],
        &[],
        &annotations,
        None,
    )
}

/// An Opaque Secret with these string keys.
pub fn opaque_secret(ns: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\ntype: Opaque\nstringData:\n"
    );
    for (k, v) in data {
        y.push_str(&format!("  {k}: {v:?}\n"));
    }
    y
}
