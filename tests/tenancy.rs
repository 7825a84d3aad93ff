//! One tenant's objects cannot reach another tenant's site: a `spec.tls` entry changes only
//! its own namespace's routes (redirect) and is not served for a host another namespace owns
//! (SNI), and with `--host-ownership=namespace` no namespace can add paths to another's host.
//! Without creation timestamps (manifests), the older Ingress is the one whose namespace/name
//! sorts first: the victim's namespace is `a-shop`, the attacker's `z-attacker`.

mod support;

use support::client::{self, get, tls_config, tls_connect};
use support::manifests::{class, endpoints, ingress, ingress_full, prefix, service, tls_secret};
use support::{Backend, Env};

/// The victim's plain-HTTP site `shop.test` (no TLS), served by `shop`.
fn victim(shop: &Backend) -> Vec<(&'static str, String)> {
    vec![
        ("class.yaml", class()),
        ("shop-svc.yaml", service("a-shop", "shop", 80)),
        (
            "shop-eps.yaml",
            endpoints("a-shop", "shop", &[shop.addr], &[]),
        ),
        (
            "shop-ing.yaml",
            ingress(
                "a-shop",
                "site",
                &[("shop.test", vec![prefix("/", "shop", 80)])],
            ),
        ),
    ]
}

/// Another namespace lists `shop.test` (or `*.test`) under `spec.tls`, with a certificate of
/// its own and no rules for it: the victim's plain-HTTP site is not redirected, and the
/// attacker's certificate is not served for the victim's host.
#[tokio::test]
async fn a_tls_entry_in_another_namespace_changes_nothing_of_a_site() {
    for listed in ["shop.test", "*.test"] {
        let shop = Backend::start("shop").await;
        let evil = Backend::start("evil").await;
        let (secret, evil_der) = tls_secret("z-attacker", "stolen", &[listed]);
        let mut files = victim(&shop);
        files.extend([
            ("evil-secret.yaml", secret),
            ("evil-svc.yaml", service("z-attacker", "evil", 80)),
            (
                "evil-eps.yaml",
                endpoints("z-attacker", "evil", &[evil.addr], &[]),
            ),
            (
                "evil-ing.yaml",
                ingress_full(
                    "z-attacker",
                    "grab",
                    &[("evil.test", vec![prefix("/", "evil", 80)])],
                    &[(&[listed], "stolen")],
                    "",
                    None,
                ),
            ),
        ]);
        let env = Env::start(&files).await;
        let reply = client::h1(env.http(), get("shop.test", "/")).await;
        assert_eq!(
            reply.status, 200,
            "{listed}: the victim's site was redirected"
        );
        assert_eq!(reply.served_by(), "shop");
        let (_, tls) = tls_connect(env.https(), Some("shop.test"), tls_config(&["http/1.1"])).await;
        assert_ne!(
            tls.cert, evil_der,
            "{listed}: the attacker's certificate was served for the victim's host"
        );
        // The attacker's own host still gets its certificate and its redirect.
        if listed == "*.test" {
            let (_, tls) =
                tls_connect(env.https(), Some("evil.test"), tls_config(&["http/1.1"])).await;
            assert_eq!(tls.cert, evil_der);
            let reply = client::h1(env.http(), get("evil.test", "/")).await;
            assert_eq!(reply.status, 308);
        }
    }
}

/// Within one namespace TLS stays host-wide, as ingress-nginx users expect: one Ingress with
/// `spec.tls`, another with more paths for the same host, both redirect.
#[tokio::test]
async fn within_a_namespace_tls_is_host_wide() {
    let shop = Backend::start("shop").await;
    let (secret, der) = tls_secret("a-shop", "shop-tls", &["shop.test"]);
    let mut files = victim(&shop);
    files.extend([
        ("shop-secret.yaml", secret),
        (
            "shop-tls.yaml",
            ingress_full(
                "a-shop",
                "tls",
                &[("shop.test", vec![prefix("/secure", "shop", 80)])],
                &[(&["shop.test"], "shop-tls")],
                "",
                None,
            ),
        ),
    ]);
    let env = Env::start(&files).await;
    for path in ["/", "/secure"] {
        let reply = client::h1(env.http(), get("shop.test", path)).await;
        assert_eq!(reply.status, 308, "{path}");
    }
    let (_, tls) = tls_connect(env.https(), Some("shop.test"), tls_config(&["http/1.1"])).await;
    assert_eq!(tls.cert, der);
}

/// By default (as the Ingress API allows) another namespace may add paths to a host; with
/// `--host-ownership=namespace` the owner's namespace alone may, and the attacker's path is
/// refused (the request goes to the owner's routes).
#[tokio::test]
async fn host_ownership_by_namespace_refuses_other_namespaces_paths() {
    for (flags, login_served_by) in [
        (&[][..], "evil"),
        (&["--host-ownership", "namespace"][..], "shop"),
    ] {
        let shop = Backend::start("shop").await;
        let evil = Backend::start("evil").await;
        let mut files = victim(&shop);
        files.extend([
            ("evil-svc.yaml", service("z-attacker", "evil", 80)),
            (
                "evil-eps.yaml",
                endpoints("z-attacker", "evil", &[evil.addr], &[]),
            ),
            (
                "evil-ing.yaml",
                ingress(
                    "z-attacker",
                    "login",
                    &[("shop.test", vec![prefix("/login", "evil", 80)])],
                ),
            ),
        ]);
        let files: Vec<(&str, String)> = files;
        let env = Env::start_with(&files, flags).await;
        let reply = client::h1(env.http(), get("shop.test", "/login")).await;
        assert_eq!(reply.status, 200, "{flags:?}");
        assert_eq!(reply.served_by(), login_served_by, "{flags:?}");
    }
}

/// With `--host-ownership=namespace`, another namespace's Ingress that names the victim's
/// host changes nothing of it through the host-wide annotations either: its
/// `auth-tls-secret` does not make the victim's host ask for client certificates (every
/// client without one would get 400), its `server-alias` does not make the victim's site
/// answer under another name, and its `server-snippet` does not touch the victim's answers.
#[tokio::test]
async fn host_wide_annotations_of_another_namespace_change_nothing_of_a_site() {
    let shop = Backend::start("shop").await;
    let evil = Backend::start("evil").await;
    let ca = support::pki::ca("attacker-ca");
    let indent: String = ca.pem.lines().map(|l| format!("    {l}\n")).collect();
    let ca_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ca, namespace: z-attacker}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{indent}"
    );
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: portico, namespace: ingress}\ndata: {allow-snippet-annotations: \"true\", annotations-risk-level: Critical}\n";
    let n = "nginx.ingress.kubernetes.io";
    let mut files = victim(&shop);
    files.extend([
        ("cm.yaml", cm.to_string()),
        ("evil-ca.yaml", ca_secret),
        ("evil-svc.yaml", service("z-attacker", "evil", 80)),
        (
            "evil-eps.yaml",
            endpoints("z-attacker", "evil", &[evil.addr], &[]),
        ),
        (
            "evil-ing.yaml",
            ingress_full(
                "z-attacker",
                "hostwide",
                &[("shop.test", vec![prefix("/login", "evil", 80)])],
                &[],
                &format!(
                    "{n}/auth-tls-secret: z-attacker/ca, {n}/server-alias: alias.test, {n}/server-snippet: {:?}",
                    "more_set_headers 'X-Evil: yes';"
                ),
                None,
            ),
        ),
    ]);
    let flags = [
        "--host-ownership",
        "namespace",
        "--configmap",
        "ingress/portico",
    ];
    let env = Env::start_with(&files, &flags).await;
    let (reply, _) = client::https(
        env.https(),
        Some("shop.test"),
        &["http/1.1"],
        "shop.test",
        "/",
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "the victim's host asked for a client certificate"
    );
    assert_eq!(reply.served_by(), "shop");
    assert_eq!(reply.header("x-evil"), "");
    let reply = client::h1(env.http(), get("alias.test", "/")).await;
    assert_ne!(
        reply.served_by(),
        "shop",
        "the victim's site answered under the attacker's alias"
    );
}

/// Another namespace's `spec.defaultBackend` never gets the requests of a host it does not own:
/// the paths no rule of the victim's host takes are the victim's 404 (ingress-nginx gives them
/// the default backend of the host's oldest Ingress), whether the attacker's Ingress has rules
/// or is the catch-all for hosts no rule names. Before, the oldest default backend anywhere
/// took them, with the victim's cookies and credentials.
#[tokio::test]
async fn another_namespaces_default_backend_gets_nothing_of_a_site() {
    let shop = Backend::start("shop").await;
    let evil = Backend::start("evil").await;
    let default_backend = |name: &str, rules: bool| {
        let rules = if rules {
            ", rules: [{host: evil.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: evil, port: {number: 80}}}}]}}]"
        } else {
            ""
        };
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: a-attacker}}\nspec: {{ingressClassName: portico, defaultBackend: {{service: {{name: evil, port: {{number: 80}}}}}}{rules}}}\n"
        )
    };
    let files = vec![
        ("class.yaml", class()),
        ("shop-svc.yaml", service("z-shop", "shop", 80)),
        (
            "shop-eps.yaml",
            endpoints("z-shop", "shop", &[shop.addr], &[]),
        ),
        (
            "shop-ing.yaml",
            ingress(
                "z-shop",
                "site",
                &[("app.test", vec![prefix("/app", "shop", 80)])],
            ),
        ),
        ("evil-svc.yaml", service("a-attacker", "evil", 80)),
        (
            "evil-eps.yaml",
            endpoints("a-attacker", "evil", &[evil.addr], &[]),
        ),
        ("evil-ing.yaml", default_backend("with-rules", true)),
        ("evil-all.yaml", default_backend("catch-all", false)),
    ];
    let env = Env::start(&files).await;
    let reply = client::h1(env.http(), get("app.test", "/app/x")).await;
    assert_eq!(reply.served_by(), "shop");
    let reply = client::h1(env.http(), get("app.test", "/login")).await;
    assert_eq!(reply.status, 404, "served by {:?}", reply.served_by());
    // The catch-all still serves the hosts no rule names.
    let reply = client::h1(env.http(), get("unknown.test", "/")).await;
    assert_eq!(reply.served_by(), "evil");
}
