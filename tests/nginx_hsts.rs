//! HSTS from the ConfigMap (issue: ingress-nginx compatibility II, browsers): `hsts` (on by
//! default), `hsts-max-age` (31536000), `hsts-include-subdomains` (true), `hsts-preload`
//! (false), on HTTPS responses for hosts with a certificate of their own or named by a TLS
//! section of their own namespace, replacing the endpoint's field, as ingress-nginx's e2e
//! tests (`test/e2e/settings/tls.go`) expect.

mod support;

use std::time::Duration;

use support::Env;
use support::client::{get, h1, https};
use support::manifests::{class, endpoints, ingress_full, prefix, service, tls_secret};
use support::raw::Upstream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);
const STS: &str = "strict-transport-security";

fn configmap(data: &str) -> String {
    support::manifests::controller_configmap(data)
}

#[tokio::test]
async fn hsts_is_sent_on_https_for_hosts_with_a_certificate() {
    timeout(LIMIT, hsts()).await.expect("bounded");
}

async fn hsts() {
    // The endpoint sends its own Strict-Transport-Security: ingress-nginx's replaces it.
    let upstream = Upstream::start(|conn| {
        conn.serve(|_| {
            b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: 2\r\n\r\nok"
                .to_vec()
        })
    })
    .await;
    let (secret, _) = tls_secret("shop", "cert", &["a.example"]);
    let ing = ingress_full(
        "shop",
        "web",
        &[
            ("a.example", vec![prefix("/", "web", 80)]),
            ("b.example", vec![prefix("/", "web", 80)]),
            ("c.example", vec![prefix("/", "web", 80)]),
        ],
        &[(&["a.example"], "cert"), (&["c.example"], "")],
        "",
        None,
    );
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[upstream.addr], &[]),
        ),
        ("secret.yaml", secret),
        ("ing.yaml", ing),
        // Another namespace's TLS section naming shop's b.example changes nothing for it.
        (
            "other.yaml",
            service("other", "web", 80)
                + &endpoints("other", "web", &[upstream.addr], &[])
                + "---\n"
                + &ingress_full(
                    "other",
                    "claims",
                    &[("x.example", vec![prefix("/", "web", 80)])],
                    &[(&["b.example"], "")],
                    "",
                    None,
                ),
        ),
        ("configmap.yaml", configmap("ssl-redirect: \"false\"")),
    ];
    let env = Env::start_with(&files, &["--configmap", "ingress/portico"]).await;
    let sts = |headers: &http::HeaderMap| -> Vec<String> {
        headers
            .get_all(STS)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    // The defaults, over HTTP/1.1 and HTTP/2; the endpoint's value replaced, not added to.
    for alpn in [&["http/1.1"][..], &["h2"]] {
        let (reply, _) = https(env.https(), Some("a.example"), alpn, "a.example", "/").await;
        assert_eq!(reply.status, http::StatusCode::OK);
        assert_eq!(
            sts(&reply.headers),
            ["max-age=31536000; includeSubDomains"],
            "{alpn:?}"
        );
    }
    // Plain HTTP: Portico adds nothing (the endpoint's field passes as it is).
    let reply = h1(env.http(), get("a.example", "/")).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(sts(&reply.headers), ["max-age=5"]);
    // HTTPS for a host without a certificate of its own (the default one is served): the
    // same.
    let (reply, _) = https(
        env.https(),
        Some("b.example"),
        &["http/1.1"],
        "b.example",
        "/",
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(sts(&reply.headers), ["max-age=5"]);
    // A host a TLS section names without a Secret is served the default certificate and,
    // as in ingress-nginx (its server has a certificate, the default one), gets HSTS: with a
    // wildcard `--default-ssl-certificate` that is how many sites run.
    let (reply, _) = https(
        env.https(),
        Some("c.example"),
        &["http/1.1"],
        "c.example",
        "/",
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(sts(&reply.headers), ["max-age=31536000; includeSubDomains"]);
    // max-age, includeSubDomains off, preload on: ingress-nginx's e2e values.
    env.apply(
        "configmap.yaml",
        &configmap(
            "ssl-redirect: \"false\", hsts-max-age: \"86400\", hsts-include-subdomains: \"false\", hsts-preload: \"true\"",
        ),
    )
    .await;
    let (reply, _) = https(
        env.https(),
        Some("a.example"),
        &["http/1.1"],
        "a.example",
        "/",
    )
    .await;
    assert_eq!(sts(&reply.headers), ["max-age=86400; preload"]);
    // Off: the endpoint's own field passes.
    env.apply(
        "configmap.yaml",
        &configmap("ssl-redirect: \"false\", hsts: \"false\""),
    )
    .await;
    let (reply, _) = https(
        env.https(),
        Some("a.example"),
        &["http/1.1"],
        "a.example",
        "/",
    )
    .await;
    assert_eq!(sts(&reply.headers), ["max-age=5"]);
    env.shutdown().await;
}
