//! ExternalName Services must not reach the node: a tenant's `externalName: localhost` (or a
//! loopback address in any spelling) behind an Ingress would publish Portico's own admin
//! listener and every port of a hostNetwork node. Such requests get 502 and the target gets
//! not even a TCP connection; `--allow-external-name-services=false` turns ExternalName
//! backends off (503 and an error diagnostic).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::client::{self, get};
use support::manifests::{class, ingress, prefix};
use support::{Backend, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A listener on 127.0.0.1 that counts the connections it accepts and answers each with a
/// 200 (what a service on the node would do for the attacker).
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Counting {
    async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = [0u8; 1024];
                    let _ = stream.read(&mut head).await;
                    let ok =
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecret";
                    let _ = stream.write_all(ok).await;
                });
            }
        });
        Counting { addr, accepted }
    }
}

/// An ExternalName Service without ports.
fn external_name(ns: &str, name: &str, external: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{type: ExternalName, externalName: \"{external}\"}}\n"
    )
}

/// The names of the loopback spellings tried, with their Services.
const LOOPBACK_NAMES: [(&str, &str); 5] = [
    ("localhost", "by-name"),
    ("127.0.0.1", "by-ip"),
    // getaddrinfo reads inet_aton's short forms: "127.1" is 127.0.0.1, "0" is 0.0.0.0
    // (which Linux connects to the host itself). No IP parser of the build sees them.
    ("127.1", "short-form"),
    ("0", "zero"),
    ("::ffff:127.0.0.1", "mapped"),
];

fn manifests(port: u16) -> Vec<(&'static str, String)> {
    let mut services = String::new();
    for (external, service) in LOOPBACK_NAMES {
        services.push_str(&external_name("tenant", service, external));
        services.push_str("---\n");
    }
    let hosts = LOOPBACK_NAMES.map(|(_, service)| format!("{service}.test"));
    let rules: Vec<(&str, Vec<_>)> = hosts
        .iter()
        .zip(LOOPBACK_NAMES)
        .map(|(host, (_, service))| (host.as_str(), vec![prefix("/", service, port)]))
        .collect();
    vec![
        ("class.yaml", class()),
        ("svc.yaml", services),
        ("ing.yaml", ingress("tenant", "web", &rules)),
    ]
}

/// The admin's metrics text.
async fn metrics(env: &Env) -> String {
    let reply = client::h1(env.admin(), get("localhost", "/metrics")).await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test]
async fn external_names_that_resolve_to_loopback_get_502_and_reach_nothing() {
    let target = Counting::start().await;
    let env = Env::start(&manifests(target.addr.port())).await;
    for (external, service) in LOOPBACK_NAMES {
        let reply = client::h1(env.http(), get(&format!("{service}.test"), "/")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "externalName {external}: {reply:?}"
        );
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains("ExternalName"), "a clear message: {body}");
    }
    // Let a connection that got through be counted before looking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        target.accepted.load(Ordering::SeqCst),
        0,
        "the loopback target got connections"
    );
    let text = metrics(&env).await;
    let refused = format!(
        "portico_external_name_refused_total {}",
        LOOPBACK_NAMES.len()
    );
    assert!(text.contains(&refused), "{text}");
    env.shutdown().await;
}

#[tokio::test]
async fn external_name_localhost_does_not_publish_the_admin_listener() {
    let env = Env::start(&[("class.yaml", class())]).await;
    let admin = env.admin().port();
    let rules = [("admin.test", vec![prefix("/", "sneaky", admin)])];
    let files = external_name("tenant", "sneaky", "localhost")
        + "---\n"
        + &ingress("tenant", "web", &rules);
    env.apply("tenant.yaml", &files).await;
    let reply = client::h1(env.http(), get("admin.test", "/debug/snapshot")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("routes"),
        "the snapshot leaked: {reply:?}"
    );
    // The build warns about it: the Service names a loopback host.
    let debug = client::h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let warned = debug["diagnostics"].as_array().unwrap().iter().any(|d| {
        d["severity"] == "warning"
            && d["object"]["kind"] == "Ingress"
            && d["object"]["name"] == "web"
            && d["reason"].as_str().unwrap_or("").contains("tenant/sneaky")
    });
    assert!(warned, "{debug}");
    env.shutdown().await;
}

#[tokio::test]
async fn a_normal_backend_still_answers_beside_a_refused_external_name() {
    // The refusal is per destination: Service endpoints on loopback (the tests' backends) are
    // the cluster's own and keep working.
    let backend = Backend::start("ok").await;
    let rules = [("ok.test", vec![prefix("/", "ok", 80)])];
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            support::manifests::service("tenant", "ok", 80)
                + &support::manifests::endpoints("tenant", "ok", &[backend.addr], &[]),
        ),
        ("ing.yaml", ingress("tenant", "ok", &rules)),
    ];
    let env = Env::start(&files).await;
    let reply = client::h1(env.http(), get("ok.test", "/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    env.shutdown().await;
}

#[tokio::test]
async fn external_names_can_be_turned_off() {
    let target = Counting::start().await;
    let files = manifests(target.addr.port());
    let env = Env::start_with(&files, &["--allow-external-name-services=false"]).await;
    let reply = client::h1(env.http(), get("by-name.test", "/")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let debug = client::h1(env.admin(), get("localhost", "/debug/snapshot"))
        .await
        .json();
    let disabled = debug["diagnostics"].as_array().unwrap().iter().any(|d| {
        d["severity"] == "error"
            && d["object"]["kind"] == "Ingress"
            && d["object"]["name"] == "web"
            && d["reason"]
                .as_str()
                .unwrap_or("")
                .contains("ExternalName Services are disabled")
    });
    assert!(disabled, "{debug}");
    assert_eq!(target.accepted.load(Ordering::SeqCst), 0);
    env.shutdown().await;
}
