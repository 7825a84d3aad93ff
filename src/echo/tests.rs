//! The echo backend over real sockets on 127.0.0.1, port 0.

use std::time::Duration;
use std::time::Instant;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::body::Payload;
use super::handler::Knobs;
use super::websocket::WsConn;
use super::*;

/// Every test finishes within this.
const LIMIT: Duration = Duration::from_secs(30);

/// A running echo server named `backend-a`.
struct Echo {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, Arc::from("backend-a"), shutdown));
        Echo { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("serve");
    }

    /// Sends one request over a fresh HTTP/1.1 connection.
    async fn http1(&self, req: Request<Payload>) -> Response<Incoming> {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("response")
    }

    async fn get(&self, path: &str) -> Response<Incoming> {
        self.http1(get(path)).await
    }
}

fn get(path: &str) -> Request<Payload> {
    Request::get(path)
        .header(HOST, "example.test")
        .body(Payload::empty())
        .expect("request")
}

async fn json(response: Response<Incoming>) -> (String, Value) {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    let value = serde_json::from_str(&text).expect("json");
    (text, value)
}

/// Reads a body to its end, counting bytes, without keeping them.
async fn count(response: Response<Incoming>) -> u64 {
    let mut body = response.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("frame").data_ref() {
            n += data.len() as u64;
        }
    }
    n
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn http1_json_fields() {
    bounded(async {
        let echo = Echo::start().await;
        let req = Request::post("/a%2Fb?x=1&y")
            .header(HOST, "example.test")
            .header("zeta", "last-name-first")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .header("alpha", "a")
            .body(Payload::full("hello"))
            .expect("request");
        let response = echo.http1(req).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-echo-service"], "backend-a");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let (text, v) = json(response).await;
        assert_eq!(v["service"], "backend-a");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/a%2Fb?x=1&y");
        assert_eq!(v["host"], "example.test");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["body_length"], 5);
        assert_eq!(v["headers"]["x-multi"], serde_json::json!(["1", "2"]));
        assert_eq!(v["headers"]["alpha"], "a");
        assert!(
            text.find("\"zeta\"") < text.find("\"alpha\""),
            "order kept: {text}"
        );
        let remote: SocketAddr = v["remote"].as_str().expect("remote").parse().expect("addr");
        assert_eq!(remote.ip(), echo.addr.ip());
        echo.stop().await;
    })
    .await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    bounded(async {
        let echo = Echo::start().await;
        let stream = TcpStream::connect(echo.addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get("http://example.test/h2/path?q=1")
            .body(Payload::empty())
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.headers()["x-echo-service"], "backend-a");
        let (_, v) = json(response).await;
        assert_eq!(v["protocol"], "HTTP/2");
        assert_eq!(v["host"], "example.test");
        assert_eq!(v["path"], "/h2/path?q=1");
        assert_eq!(v["body_length"], 0);
        drop(sender);
        echo.stop().await;
    })
    .await;
}

#[tokio::test]
async fn streamed_upload_is_counted() {
    bounded(async {
        let echo = Echo::start().await;
        const LEN: u64 = 64 * 1024 * 1024;
        for sized in [true, false] {
            let req = Request::put("/upload")
                .header(HOST, "example.test")
                .body(Payload::filler(LEN, sized))
                .expect("request");
            let (_, v) = json(echo.http1(req).await).await;
            assert_eq!(v["body_length"], LEN, "sized: {sized}");
        }
        echo.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bytes_download() {
    bounded(async {
        let echo = Echo::start().await;
        let response = echo.get("/?bytes=1000001").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_LENGTH], "1000001");
        assert_eq!(count(response).await, 1_000_001);

        let response = echo.get("/?bytes=200000&chunked=1").await;
        assert!(response.headers().get(CONTENT_LENGTH).is_none());
        assert_eq!(response.headers()[TRANSFER_ENCODING], "chunked");
        assert_eq!(count(response).await, 200_000);

        let response = echo.get("/?bytes=0").await;
        assert_eq!(response.headers()[CONTENT_LENGTH], "0");
        assert_eq!(count(response).await, 0);
        echo.stop().await;
    })
    .await;
}

#[tokio::test]
async fn status_and_delay_knobs() {
    bounded(async {
        let echo = Echo::start().await;
        let started = Instant::now();
        let response = echo.get("/slow?status=503&delay_ms=200").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() >= Duration::from_millis(200));
        let (_, v) = json(response).await;
        assert_eq!(v["path"], "/slow?status=503&delay_ms=200");

        let response = echo.get("/?status=418&bytes=10").await;
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(count(response).await, 10);

        for bad in ["/?status=abc", "/?status=101", "/?delay_ms=-1", "/?bytes=x"] {
            let response = echo.get(bad).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        echo.stop().await;
    })
    .await;
}

#[test]
fn knobs_parse() {
    let knobs =
        Knobs::parse(Some("a=1&status=201&delay_ms=999999&bytes=7&chunked=1&y")).expect("knobs");
    assert_eq!(
        knobs,
        Knobs {
            status: Some(StatusCode::CREATED),
            delay: Some(Duration::from_secs(60)),
            bytes: Some(7),
            chunked: true,
        }
    );
    assert_eq!(Knobs::parse(None), Ok(Knobs::default()));
    assert_eq!(Knobs::parse(Some("chunked=0")), Ok(Knobs::default()));
    assert_eq!(Knobs::parse(Some("status=600")), Err("status"));
    assert_eq!(Knobs::parse(Some("bytes=")), Err("bytes"));
}

#[tokio::test]
async fn blog_index_page() {
    bounded(async {
        let echo = Echo::start().await;
        let response = echo.get("/blog/index/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let page = String::from_utf8_lossy(&bytes);
        assert!(page.contains("<title>myblog</title>"), "{page}");
        assert!(page.contains("href=\"/blog/posts/"), "{page}");
        assert!(page.contains("backend-a"), "{page}");
        echo.stop().await;
    })
    .await;
}

#[tokio::test]
async fn websocket_echo_round_trip() {
    bounded(async {
        let echo = Echo::start().await;
        let stream = TcpStream::connect(echo.addr).await.expect("connect");
        let url = format!("ws://{}/chat", echo.addr);
        let (ws, response) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("websocket handshake");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()["x-echo-service"], "backend-a");
        let mut ws = WsConn::new(ws.into_inner(), Role::Client);
        ws.send(Message::text("hello")).await.expect("send");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("hello")));
        let blob = vec![7u8; 100_000];
        ws.send(Message::binary(blob.clone())).await.expect("send");
        assert_eq!(ws.recv().await.expect("recv"), Some(Message::binary(blob)));
        ws.send(Message::Close(None)).await.expect("close");
        let reply = ws.recv().await.expect("close reply");
        assert!(matches!(reply, Some(Message::Close(_))), "{reply:?}");
        assert_eq!(ws.recv().await.expect("closed"), None);
        echo.stop().await;
    })
    .await;
}

#[tokio::test]
async fn run_names_a_taken_address() {
    bounded(async {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let args = EchoArgs {
            listen: vec![addr],
            name: "echo".to_string(),
            tls_cert: None,
            tls_key: None,
        };
        let error = run(args).await.expect_err("address in use");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    })
    .await;
}
