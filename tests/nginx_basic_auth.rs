//! Basic authentication (issue: ingress-nginx compatibility II, authentication) over real
//! sockets, with ingress-nginx's statuses (its e2e `test/e2e/annotations/auth.go`): 401 with
//! `WWW-Authenticate: Basic realm="<auth-realm>"` without or with wrong credentials, 200 with
//! right ones (and the endpoint never sees Authorization), 503 when the Secret cannot serve,
//! 500 for a user whose stored password cannot be checked; a Secret's change applies at once;
//! a refused address never reaches the check.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::Env;
use support::client::Reply;
use support::manifests::{class, endpoints, service};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(90);

fn ing(name: &str, path: &str, annotations: &[(&str, &str)]) -> String {
    support::manifests::nginx_ingress(name, "a.example", path, "web", annotations)
}

fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> String {
    support::manifests::opaque_secret(ns, name, data)
}

fn basic(user: &str, password: &str) -> String {
    let v = data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes());
    format!("Basic {v}")
}

/// A plain-HTTP GET of `path` on a.example from `from`, with these fields.
async fn get(env: &Env, from: &str, path: &str, fields: &[(&str, &str)]) -> Reply {
    support::client::get_from(env.http(), from, "a.example", path, fields).await
}

#[tokio::test]
async fn basic_auth_answers_as_ingress_nginx() {
    timeout(LIMIT, basic_auth()).await.expect("bounded");
}

async fn basic_auth() {
    let web = support::Backend::start("web").await;
    let bcrypt = bcrypt::hash("bar", 4).unwrap();
    let users =
        format!("foo:{bcrypt}\napr:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\nold:abJnggxhB/yWI\n");
    let auth = |realm: &'static str| {
        vec![
            ("auth-type", "basic"),
            ("auth-secret", "users"),
            ("auth-realm", realm),
        ]
    };
    let files = vec![
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "web", 80) + &endpoints("shop", "web", &[web.addr], &[]),
        ),
        ("users.yaml", secret("shop", "users", &[("auth", &users)])),
        (
            "map.yaml",
            secret(
                "shop",
                "map",
                &[
                    ("mia", "{PLAIN}pw"),
                    ("max", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="),
                ],
            ),
        ),
        ("other.yaml", secret("other", "users", &[("auth", &users)])),
        ("open.yaml", ing("open", "/", &[])),
        ("auth.yaml", ing("auth", "/auth", &auth("test auth"))),
        (
            "mapped.yaml",
            ing(
                "mapped",
                "/map",
                &[
                    ("auth-type", "basic"),
                    ("auth-secret", "shop/map"),
                    ("auth-secret-type", "auth-map"),
                ],
            ),
        ),
        (
            "missing.yaml",
            ing(
                "missing",
                "/missing",
                &[("auth-type", "basic"), ("auth-secret", "nope")],
            ),
        ),
        (
            "cross.yaml",
            ing(
                "cross",
                "/cross",
                &[("auth-type", "basic"), ("auth-secret", "other/users")],
            ),
        ),
        (
            "digest.yaml",
            ing(
                "digest",
                "/digest",
                &[("auth-type", "digest"), ("auth-secret", "users")],
            ),
        ),
        (
            "guarded.yaml",
            ing(
                "guarded",
                "/guarded",
                &[
                    ("auth-type", "basic"),
                    ("auth-secret", "users"),
                    ("whitelist-source-range", "127.0.0.2"),
                ],
            ),
        ),
    ];
    let env = Env::start(&files).await;
    let good = basic("foo", "bar");
    // No credentials, wrong ones, an unknown user: 401 with the realm.
    for fields in [
        vec![],
        vec![("authorization", basic("foo", "wrong"))],
        vec![("authorization", basic("nobody", "bar"))],
        vec![("authorization", "Basic !!!".to_string())],
        vec![("authorization", "Bearer abc".to_string())],
    ] {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = get(&env, "127.0.0.1", "/auth", &fields).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{fields:?}");
        assert_eq!(
            reply.header("www-authenticate"),
            "Basic realm=\"test auth\""
        );
        assert_eq!(reply.served_by(), "", "never forwarded");
    }
    // Right ones (bcrypt, then apr1): 200, and the endpoint never sees Authorization.
    for value in [good.clone(), good.clone(), basic("apr", "password")] {
        let reply = get(&env, "127.0.0.1", "/auth", &[("authorization", &value)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{value}");
        let seen = &reply.json()["headers"];
        assert!(seen.get("authorization").is_none(), "{seen}");
    }
    // Two Authorization fields: 400, as nginx.
    let reply = get(
        &env,
        "127.0.0.1",
        "/auth",
        &[("authorization", &good), ("authorization", &good)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // A stored password Portico cannot check (DES crypt): 500, as nginx when crypt() fails.
    let reply = get(
        &env,
        "127.0.0.1",
        "/auth",
        &[("authorization", &basic("old", "x"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // auth-map.
    for (user, pw, want) in [
        ("mia", "pw", StatusCode::OK),
        ("max", "secret", StatusCode::OK),
        ("mia", "no", StatusCode::UNAUTHORIZED),
    ] {
        let reply = get(
            &env,
            "127.0.0.1",
            "/map",
            &[("authorization", &basic(user, pw))],
        )
        .await;
        assert_eq!(reply.status, want, "{user}");
    }
    // A Secret that does not exist, one of another namespace, digest: 503.
    for path in ["/missing", "/cross", "/digest"] {
        let reply = get(&env, "127.0.0.1", path, &[("authorization", &good)]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    // Addresses first: a refused client gets 403 and never reaches the check.
    let reply = get(&env, "127.0.0.1", "/guarded", &[("authorization", &good)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = get(&env, "127.0.0.2", "/guarded", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = get(&env, "127.0.0.2", "/guarded", &[("authorization", &good)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The path without auth is untouched, Authorization included.
    let reply = get(&env, "127.0.0.1", "/", &[("authorization", &good)]).await;
    assert_eq!(reply.json()["headers"]["authorization"], good.as_str());
    // A changed Secret applies at once: the cached credentials do not outlive it.
    let rotated = format!("foo:{}\n", bcrypt::hash("new", 4).unwrap());
    env.apply(
        "users.yaml",
        &secret("shop", "users", &[("auth", &rotated)]),
    )
    .await;
    let reply = get(&env, "127.0.0.1", "/auth", &[("authorization", &good)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = get(
        &env,
        "127.0.0.1",
        "/auth",
        &[("authorization", &basic("foo", "new"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // The Secret deleted: 503, never open.
    env.remove("users.yaml").await;
    let reply = get(
        &env,
        "127.0.0.1",
        "/auth",
        &[("authorization", &basic("foo", "new"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    env.shutdown().await;
}
