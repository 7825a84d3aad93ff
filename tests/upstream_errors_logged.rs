//! An endpoint's failure is a clear status for the client and a log line naming the endpoint
//! and the reason (issue: backends, §7), at the default level: the binary's own JSON log.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use support::client::{self, get};
use support::manifests::{class, endpoints, nginx_ingress, service};

const PATIENCE: Duration = Duration::from_secs(30);

/// Kills Portico when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next JSON log line whose message is `message` (bounded).
fn next_logged(lines: &Receiver<String>, message: &str) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {message:?} line"));
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == message
        {
            return v;
        }
    }
}

#[tokio::test]
async fn an_endpoints_failure_is_logged_with_its_reason() {
    // An HTTP/1.1 server where the route says HTTP/2 (GRPC).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wrong = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().take(20).flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), class()).unwrap();
    std::fs::write(
        dir.path().join("svc.yaml"),
        service("shop", "grpc", 80) + &endpoints("shop", "grpc", &[wrong], &[]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ing.yaml"),
        nginx_ingress(
            "grpc",
            "g.example",
            "/",
            "grpc",
            &[("backend-protocol", "GRPC")],
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["--manifests", dir.path().to_str().unwrap()])
        .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0", "--access-log", "false"])
        .args(["--log-format", "json", "--threads", "1"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portico");
    let stderr = child.stderr.take().unwrap();
    let _portico = Killed(child);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = next_logged(&lines, "listening");
    let http: SocketAddr = listening["http"]
        .as_str()
        .unwrap()
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .unwrap();
    let reply = client::h1(http, get("g.example", "/x")).await;
    assert_eq!(reply.status, 502);
    let failed = next_logged(&lines, "request to the endpoint failed");
    assert_eq!(failed["upstream"], wrong.to_string(), "{failed}");
    assert_eq!(failed["path"], "/x", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("upstream failed: "), "{failed}");
}
