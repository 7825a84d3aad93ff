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
