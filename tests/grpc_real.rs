//! gRPC through Portico with a real gRPC stack on both sides (grpcio, from PyPI; `.ci/run`
//! installs it): `backend-protocol: GRPC` to a grpcio server, a grpcio client through the HTTP
//! listener (h2c prior knowledge) and through the HTTPS listener (ALPN h2). Unary, server, client and bidirectional streaming,
//! trailing metadata (`-bin` too), a status with details, a 4 MiB message, 1,000 concurrent
//! calls on one connection, a client's cancellation reaching the server, a deadline, and
//! RESOURCE_EXHAUSTED over the route's `proxy-body-size`, UNAVAILABLE for a Service without
//! endpoints; a bidirectional call kept open through configuration swaps and a graceful
//! shutdown; gRPC health checks. `tests/grpc/peer.py` holds both peers.
//!
//! Without grpcio the test says so and passes, unless `PORTICO_REQUIRE_GRPCIO` is set (as
//! `.ci/run` sets it): then it fails.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::Env;
use support::client::{self, get};
use support::manifests::{class, endpoints, ingress_full, nginx_ingress, prefix, service};
use support::pki;
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
        timeout(LIMIT, real_grpc(false)).await.expect("bounded");
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

/// An Ingress in `shop` routing `host` to `service` over gRPC, with these ingress-nginx
/// annotations, and a TLS entry for the host when `secret` names one.
fn grpc_ingress(
    name: &str,
    host: &str,
    service: &str,
    extra: &[(&str, &str)],
    secret: Option<&str>,
) -> String {
    let annotations = [("backend-protocol", "GRPC")]
        .iter()
        .chain(extra)
        .map(|(k, v)| format!("nginx.ingress.kubernetes.io/{k}: {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tls: Vec<(&[&str], &str)> = match secret {
        Some(secret) => vec![(std::slice::from_ref(&host), secret)],
        None => Vec::new(),
    };
    ingress_full(
        "shop",
        name,
        &[(host, vec![prefix("/", service, 80)])],
        &tls,
        &annotations,
        None,
    )
}

/// Every scenario of `peer.py client`, through the HTTP listener (h2c prior knowledge) or,
/// with `tls`, the HTTPS listener (ALPN h2, the hosts' certificate signed by a test CA).
async fn real_grpc(tls: bool) {
    let (server, upstream) = grpc_server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    let hosts = ["g.example", "small.example", "none.example"];
    let mut secret_yaml = String::new();
    if tls {
        let ca = pki::ca("grpc test CA");
        let (crt, key) = pki::cert(&ca, "g.example", &hosts);
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let indent = |pem: &str| {
            pem.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        secret_yaml = format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: grpc-tls, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&crt),
            indent(&key)
        );
    }
    let secret = tls.then_some("grpc-tls");
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "grpc", 80)
                + &endpoints("shop", "grpc", &[upstream], &[])
                + "---\n"
                + &service("shop", "empty", 80)
                + &secret_yaml,
        ),
        (
            "ing.yaml",
            // ingress-nginx's default proxy-body-size (1m) applies to gRPC too: gRPC
            // services that send large messages raise it, as this one does.
            grpc_ingress(
                "grpc",
                "g.example",
                "grpc",
                &[("proxy-body-size", "8m")],
                secret,
            ) + "---\n"
                + &grpc_ingress("small", "small.example", "grpc", &[], secret)
                + "---\n"
                + &grpc_ingress("none", "none.example", "empty", &[], secret),
        ),
    ];
    let env = Env::start(&files).await;
    let portico = if tls { env.https() } else { env.http() }.to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new("python3");
        command.arg(peer()).arg("client").arg(portico);
        if tls {
            command.arg(&ca_file);
        }
        command.output().expect("python3")
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
    drop(dir);
    env.shutdown().await;
}

#[tokio::test]
async fn a_real_grpc_client_over_tls_through_portico() {
    if grpcio_or_skip() {
        timeout(LIMIT, real_grpc(true)).await.expect("bounded");
    }
}

/// A bidirectional call kept open survives configuration changes (the snapshot swaps under
/// it) and a graceful shutdown, which waits for it: the call goes on while Portico drains and
/// ends with OK, as a WebSocket does.
#[tokio::test]
async fn a_long_call_survives_swaps_and_is_drained_on_shutdown() {
    if grpcio_or_skip() {
        timeout(LIMIT, long_call()).await.expect("bounded");
    }
}

/// A `peer.py long` client: lines to its stdin, lines from its stdout.
struct LongCall {
    child: Killed,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl LongCall {
    /// Sends `line` and returns the client's answer (blocking: runs off the runtime).
    async fn say(mut self, line: &str) -> (LongCall, String) {
        let line = line.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            writeln!(self.stdin, "{line}").unwrap();
            self.stdin.flush().unwrap();
            let mut answer = String::new();
            self.stdout.read_line(&mut answer).unwrap();
            (self, answer.trim().to_string())
        })
        .await
        .unwrap()
    }
}

async fn long_call() {
    let (server, upstream) = grpc_server(&[]);
    let files = [
        ("class.yaml", class()),
        (
            "svc.yaml",
            service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[upstream], &[]),
        ),
        (
            "ing.yaml",
            grpc_ingress("grpc", "g.example", "grpc", &[], None),
        ),
    ];
    let env = Env::start(&files).await;
    let mut child = Command::new("python3")
        .arg(peer())
        .arg("long")
        .arg(env.http().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let call = LongCall {
        child: Killed(child),
        stdin,
        stdout,
    };
    let (call, answer) = call.say("send one").await;
    assert_eq!(answer, "echo one");
    // Configuration changes: another route comes, the Service's endpoints change.
    for (i, host) in ["other.example", "third.example"].iter().enumerate() {
        let before = env.generation();
        env.apply(
            &format!("more-{i}.yaml"),
            &grpc_ingress(&format!("more-{i}"), host, "grpc", &[], None),
        )
        .await;
        env.wait_for("the swap", |s| s.generation > before).await;
    }
    let (call, answer) = call.say("send two").await;
    assert_eq!(answer, "echo two", "the call survived the swaps");
    // A graceful shutdown waits for the call, which goes on meanwhile.
    let shutdown = tokio::spawn(env.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the open call");
    let (call, answer) = call.say("send three").await;
    assert_eq!(
        answer, "echo three",
        "the call goes on while Portico drains"
    );
    let (call, answer) = call.say("end").await;
    assert_eq!(answer, "ok", "the call ends with OK");
    timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("shutdown ends once the call has")
        .unwrap();
    drop(call.child);
    drop(server);
}
