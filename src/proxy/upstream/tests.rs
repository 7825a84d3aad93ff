use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

/// An upstream on loopback that counts the connections it accepted. `/close` answers with
/// `Connection: close`, `/empty` with 204, `/big` with 1 MiB; anything else with "ok".
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(|req: Request<Incoming>| async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    match req.uri().path() {
                        "/close" => {
                            response
                                .headers_mut()
                                .insert(http::header::CONNECTION, "close".parse().unwrap());
                        }
                        "/empty" => {
                            *response.status_mut() = http::StatusCode::NO_CONTENT;
                            *response.body_mut() = Full::new(Bytes::new());
                        }
                        "/big" => *response.body_mut() = Full::new(Bytes::from(vec![7u8; 1 << 20])),
                        _ => {}
                    }
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Upstream { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn pool(idle_timeout: Duration) -> Arc<UpstreamPool> {
    UpstreamPool::new(PoolConfig {
        connect_timeout: Duration::from_secs(2),
        idle_timeout,
        max_idle_per_target: 8,
        read_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(60),
        client_body_timeout: Duration::from_secs(60),
    })
}

/// A request with an empty `Incoming` body: the pool sends `Incoming`, which only hyper
/// makes, so the body is taken from a request to a throwaway server.
async fn request(path: &str) -> Request<Incoming> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(move |req: Request<Incoming>| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(req);
            }
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "upstream.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let responding = tokio::spawn(async move { sender.send_request(req).await });
    let mut got = rx.await.unwrap();
    *got.uri_mut() = path.parse().unwrap();
    drop((responding, server));
    got
}

/// Sends a GET for `path` on `pooled`, as from a client on loopback.
async fn send(pooled: Pooled, path: &str) -> Result<Response<UpstreamBody>, SendError> {
    let conn = crate::proxy::headers::ConnHeaders::new(
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
        false,
        false,
    );
    let fwd = Forwarding {
        conn: &conn,
        host: None,
        upstream_host: None,
        path: None,
        rewritten: None,
        set: &[],
        request_id: None,
        upgrade: false,
        client: None,
        full_forwarded_for: false,
        original_from: None,
    };
    let (parts, _) = request(path).await.into_parts();
    pooled
        .prepare(&parts, RequestBody::Empty, &fwd)
        .send()
        .await
}

async fn get(pool: &Arc<UpstreamPool>, up: &Upstream, path: &str) -> (bool, Bytes) {
    let pooled = pool.checkout(&Target::Addr(up.addr)).await.unwrap();
    let reused = pooled.reused;
    let response = send(pooled, path).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (reused, body)
}

#[tokio::test]
async fn a_connection_is_reused_once_its_response_was_read() {
    let up = Upstream::start().await;
    let pool = pool(Duration::from_secs(60));
    assert_eq!(
        get(&pool, &up, "/").await,
        (false, Bytes::from_static(b"ok"))
    );
    assert_eq!(pool.idle_count(), 1);
    for _ in 0..5 {
        assert_eq!(
            get(&pool, &up, "/").await,
            (true, Bytes::from_static(b"ok"))
        );
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_response_without_a_body_gives_its_connection_back_at_once() {
    let up = Upstream::start().await;
    let pool = pool(Duration::from_secs(60));
    let pooled = pool.checkout(&Target::Addr(up.addr)).await.unwrap();
    let response = send(pooled, "/empty").await.unwrap();
    assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
    assert_eq!(pool.idle_count(), 1, "back before the body is polled");
    drop(response);
    assert!(get(&pool, &up, "/").await.0, "reused");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_the_connection() {
    let up = Upstream::start().await;
    let pool = pool(Duration::from_secs(60));
    let pooled = pool.checkout(&Target::Addr(up.addr)).await.unwrap();
    let mut body = send(pooled, "/big").await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(
        first.data_ref().is_some_and(|d| d.len() < 1 << 20),
        "read a part"
    );
    drop(body);
    assert_eq!(pool.idle_count(), 0);
    assert_eq!(
        get(&pool, &up, "/").await,
        (false, Bytes::from_static(b"ok"))
    );
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn connections_the_upstream_closes_are_not_reused() {
    let up = Upstream::start().await;
    let pool = pool(Duration::from_secs(60));
    assert_eq!(
        get(&pool, &up, "/close").await,
        (false, Bytes::from_static(b"ok"))
    );
    assert_eq!(
        get(&pool, &up, "/").await,
        (false, Bytes::from_static(b"ok"))
    );
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn idle_connections_expire() {
    let up = Upstream::start().await;
    let pool = pool(Duration::from_millis(50));
    get(&pool, &up, "/").await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        get(&pool, &up, "/").await,
        (false, Bytes::from_static(b"ok"))
    );
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_an_io_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let pool = pool(Duration::from_secs(60));
    let error = pool.checkout(&Target::Addr(closed)).await.unwrap_err();
    assert!(matches!(error, ConnectError::Io(_)), "{error}");
}

#[tokio::test]
async fn targets_have_separate_idle_lists() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let pool = pool(Duration::from_secs(60));
    get(&pool, &a, "/").await;
    assert!(!get(&pool, &b, "/").await.0, "a's connection is not b's");
    assert!(get(&pool, &a, "/").await.0);
    assert!(get(&pool, &b, "/").await.0);
    assert_eq!((a.accepted(), b.accepted()), (1, 1));
}
