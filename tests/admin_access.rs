//! The admin listener of a running Portico: `/debug/*` only for loopback clients with a local
//! Host (or with `--admin-token-file`'s token); probes and metrics for everyone.

mod support;

use clap::Parser;
use http::StatusCode;
use support::Env;
use support::client::{self, get};
use support::manifests::class;

#[tokio::test]
async fn debug_endpoints_check_the_host_and_probes_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let flags = ["--admin-token-file", token.to_str().unwrap()];
    let env = Env::start_with(&[("class.yaml", class())], &flags).await;
    let admin = env.admin();
    let reply = client::h1(admin, get("evil.example", "/debug/snapshot")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(&reply.body[..], b"forbidden\n");
    let local = format!("localhost:{}", admin.port());
    let reply = client::h1(admin, get(&local, "/debug/snapshot")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["generation"].as_u64().is_some());
    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = client::h1(admin, get("evil.example", path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn an_empty_admin_token_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, " \n").unwrap();
    let mut argv = vec!["portico", "--manifests", dir.path().to_str().unwrap()];
    argv.extend(support::LOOPBACK_LISTENERS);
    argv.extend(["--admin-token-file", token.to_str().unwrap()]);
    let cli = portico::config::Cli::try_parse_from(argv).unwrap();
    let err = portico::run::start(&cli.run).await.unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("token"), "{err}");
}
