//! An endpoint's failure is a clear status for the client and a log line naming the endpoint
//! and the reason (issue: backends, §7), at the default level: the binary's own JSON log.

mod support;

use std::time::Duration;

use support::child::Child;
use support::client::{self, get};
use support::manifests::{class, endpoints, nginx_ingress, service};

const PATIENCE: Duration = Duration::from_secs(30);

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
    let mut portico = Child::spawn_default_log(&[
        "--manifests",
        dir.path().to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--https-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--access-log",
        "false",
        "--threads",
        "1",
    ]);
    let (http, _, _) = portico.listening(PATIENCE);
    let reply = client::h1(http, get("g.example", "/x")).await;
    assert_eq!(reply.status, 502);
    let failed = portico.wait_for("the endpoint's failure", PATIENCE, |v| {
        v["message"] == "request to the endpoint failed"
    });
    assert_eq!(failed["upstream"], wrong.to_string(), "{failed}");
    assert_eq!(failed["path"], "/x", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("upstream failed: "), "{failed}");
}
