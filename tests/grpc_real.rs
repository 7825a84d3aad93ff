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

#[tokio::test]
async fn a_real_grpc_client_and_server_through_portico() {
    if !has_grpcio() {
        assert!(
            std::env::var_os("PORTICO_REQUIRE_GRPCIO").is_none(),
            "grpcio is required (pip install grpcio)"
        );
        eprintln!("SKIPPED: python3 with grpcio is not installed (pip install grpcio)");
        return;
    }
    timeout(LIMIT, real_grpc()).await.expect("bounded");
}

async fn real_grpc() {
    let mut server = Command::new("python3")
        .arg(peer())
        .arg("server")
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
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
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
