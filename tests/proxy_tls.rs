//! Certificates by SNI through the HTTPS listener, and session resumption.

mod support;

use support::client::{self, tls_config, tls_connect};
use support::manifests::{class, endpoints, ingress_full, prefix, service, tls_secret};
use support::{Backend, Env};

#[tokio::test]
async fn sni_selects_the_certificate_and_host_selects_the_route() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let (s1, cert1) = tls_secret("web", "one", &["one.com"]);
    let (s2, cert2) = tls_secret("web", "two", &["two.com"]);
    let (sw, certw) = tls_secret("web", "wild", &["*.w.com"]);
    let rules = [
        ("one.com", vec![prefix("/", "one", 80)]),
        ("two.com", vec![prefix("/", "two", 80)]),
        ("*.w.com", vec![prefix("/", "two", 80)]),
    ];
    let tls: [(&[&str], &str); 3] = [
        (&["one.com"], "one"),
        (&["two.com"], "two"),
        (&["*.w.com"], "wild"),
    ];
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            format!(
                "{}---\n{}",
                service("web", "one", 80),
                service("web", "two", 80)
            ),
        ),
        (
            "eps.yaml",
            endpoints("web", "one", &[one.addr], &[]) + &endpoints("web", "two", &[two.addr], &[]),
        ),
        ("secrets.yaml", format!("{s1}---\n{s2}---\n{sw}")),
        (
            "ing.yaml",
            ingress_full("web", "sites", &rules, &tls, "", None),
        ),
    ];
    let env = Env::start(&files).await;
    let default = {
        let (_, info) = tls_connect(env.https(), None, tls_config(&["http/1.1"])).await;
        info.cert
    };
    for cert in [&cert1, &cert2, &certw] {
        assert_ne!(&default, cert, "no SNI gets the default certificate");
    }
    for (sni, host, cert, backend) in [
        (Some("one.com"), "one.com", &cert1, "one"),
        (Some("two.com"), "two.com", &cert2, "two"),
        (Some("x.w.com"), "x.w.com", &certw, "two"),
        (Some("unknown.org"), "one.com", &default, "one"),
        (None, "two.com", &default, "two"),
        // SNI and Host differ: the certificate follows SNI, the route follows Host.
        (Some("one.com"), "two.com", &cert1, "two"),
    ] {
        for alpn in [&["h2"][..], &["http/1.1"][..]] {
            let (reply, info) = client::https(env.https(), sni, alpn, host, "/").await;
            assert_eq!(&info.cert, cert, "SNI {sni:?}");
            assert_eq!(reply.served_by(), backend, "SNI {sni:?} Host {host}");
        }
    }
}

#[tokio::test]
async fn sessions_resume() {
    let backend = Backend::start("r").await;
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("web", "r", 80) + &endpoints("web", "r", &[backend.addr], &[]),
        ),
        (
            "ing.yaml",
            ingress_full(
                "web",
                "r",
                &[("r.com", vec![prefix("/", "r", 80)])],
                &[],
                "",
                None,
            ),
        ),
    ];
    let env = Env::start(&files).await;
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client::tls_config_with(&["http/1.1"], &[versions]);
        let (stream, first) = tls_connect(env.https(), Some("r.com"), config.clone()).await;
        // TLS 1.3 tickets arrive after the handshake: make one request so they are read.
        let reply = client::h1_over(stream, client::get("r.com", "/")).await;
        assert_eq!(reply.served_by(), "r");
        assert!(!first.resumed);
        let (_, second) = tls_connect(env.https(), Some("r.com"), config).await;
        assert!(second.resumed, "{versions:?} session resumed");
    }
}
