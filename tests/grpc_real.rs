//! gRPC through Portico with a real gRPC stack on both sides (grpcio, from PyPI; `.ci/run`
//! installs it): `backend-protocol: GRPC` to a grpcio server, a grpcio client through the HTTP
//! listener (h2c prior knowledge). Unary, server, client and bidirectional streaming,
//! trailing metadata (`-bin` too), a status with details, a 4 MiB message, 1,000 concurrent
//! calls on one connection, a client's cancellation reaching the server, a deadline, and
//! RESOURCE_EXHAUSTED over the route's `proxy-body-size`, UNAVAILABLE for a Service without
//! endpoints. `tests/grpc/peer.py` holds both peers.
//!
//! Without grpcio the test says so and passes, unless `PORTICO_REQUIRE_GRPCIO` is set (as
//! `.ci/run` sets it): then it fails.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::Env;
use support::client::{self, get};
use support::manifests::{class, endpoints, nginx_ingress, service};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(120);

/// Kills the grpcio server when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peer() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/peer.py")
}

fn has_grpcio() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the test can run: grpcio is there, or it is not required.
fn grpcio_or_skip() -> bool {
    if has_grpcio() {
        return true;
    }
    assert!(
        std::env::var_os("PORTICO_REQUIRE_GRPCIO").is_none(),
        "grpcio is required (pip install grpcio)"
    );
    eprintln!("SKIPPED: python3 with grpcio is not installed (pip install grpcio)");
    false
}

/// The grpcio server of `peer.py`, with this environment, and its address.
fn grpc_server(env: &[(&str, &std::ffi::OsStr)]) -> (Killed, std::net::SocketAddr) {
    let mut server = Command::new("python3")
        .arg(peer())
        .arg("server")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = server.stdout.take().unwrap();
    let server = Killed(server);
    let port: u16 = {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line.trim().parse().expect("the server's port")
    };
    (server, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn a_real_grpc_client_and_server_through_portico() {
    if grpcio_or_skip() {
        timeout(LIMIT, real_grpc()).await.expect("bounded");
    }
}

/// `portico.dev/health-check-grpc: "true"`: the endpoints are checked with the gRPC health
/// protocol (grpc.health.v1.Health/Check) against grpcio: SERVING passes; NOT_SERVING and an
/// unknown service (NOT_FOUND) fail; a service going NOT_SERVING then SERVING is followed.
#[tokio::test]
async fn grpc_health_checks_against_grpcio() {
    if grpcio_or_skip() {
        timeout(LIMIT, grpc_health()).await.expect("bounded");
    }
}

async fn grpc_health() {
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("cart-health");
    std::fs::write(&said, "NOT_SERVING").unwrap();
    let (server, upstream) = grpc_server(&[("PEER_HEALTH_FILE", said.as_os_str())]);
    let checked = |name: &str, grpc_service: Option<&str>| {
        let service_line = grpc_service
            .map(|s| format!("    portico.dev/health-check-grpc-service: {s}\n"))
            .unwrap_or_default();
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations:\n    portico.dev/health-check-path: /\n    portico.dev/health-check-grpc: \"true\"\n{service_line}    portico.dev/health-check-interval: 100ms\n    portico.dev/health-check-unhealthy-threshold: \"1\"\n    portico.dev/health-check-healthy-threshold: \"1\"\nspec:\n  ports: [{{port: 80}}]\n"
        ) + &endpoints("shop", name, &[upstream], &[])
    };
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            checked("whole", None)
                + &checked("cart", Some("shop.Cart"))
                + &checked("nope", Some("nope.Service")),
        ),
        (
            "ing.yaml",
            nginx_ingress(
                "w",
                "w.example",
                "/",
                "whole",
                &[("backend-protocol", "GRPC")],
            ),
        ),
    ];
    let env = Env::start(&files).await;
    let gauge = |service: &str, value: u8| {
        format!(
            "portico_endpoint_healthy{{service=\"shop/{service}:80\",endpoint=\"{upstream}\"}} {value}"
        )
    };
    until_metrics(
        &env,
        &[&gauge("whole", 1), &gauge("cart", 0), &gauge("nope", 0)],
    )
    .await;
    std::fs::write(&said, "SERVING").unwrap();
    until_metrics(
        &env,
        &[&gauge("whole", 1), &gauge("cart", 1), &gauge("nope", 0)],
    )
    .await;
    let text = metrics(&env).await;
    assert!(
        text.contains("portico_health_checks_total{result=\"passed\"}"),
        "{text}"
    );
    drop(server);
    env.shutdown().await;
}

async fn metrics(env: &Env) -> String {
    let reply = client::h1(env.admin(), get("localhost", "/metrics")).await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Waits (bounded) until the metrics show every line of `want`.
async fn until_metrics(env: &Env, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(env).await;
        if want.iter().all(|w| text.contains(w)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "want {want:?} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn real_grpc() {
    let (server, upstream) = grpc_server(&[]);
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "grpc", 80)
                + &endpoints("shop", "grpc", &[upstream], &[])
                + "---\n"
                + &service("shop", "empty", 80),
        ),
        (
            "ing.yaml",
            // ingress-nginx's default proxy-body-size (1m) applies to gRPC too: gRPC
            // services that send large messages raise it, as this one does.
            nginx_ingress(
                "grpc",
                "g.example",
                "/",
                "grpc",
                &[("backend-protocol", "GRPC"), ("proxy-body-size", "8m")],
            ) + "---\n"
                + &nginx_ingress(
                    "small",
                    "small.example",
                    "/",
                    "grpc",
                    &[("backend-protocol", "GRPC")],
                )
                + "---\n"
                + &nginx_ingress(
                    "none",
                    "none.example",
                    "/",
                    "empty",
                    &[("backend-protocol", "GRPC")],
                ),
        ),
    ];
    let env = Env::start(&files).await;
    let portico = env.http().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(peer())
            .arg("client")
            .arg(portico)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "client: {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    drop(server);
    env.shutdown().await;
}
