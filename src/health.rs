//! Active health checks (`portico.dev/health-check-*` on a Service): one checker task per
//! checked endpoint, process-wide, however many routes use it. The checkers follow the
//! snapshot (started for new endpoints or settings, stopped for gone ones) and carry on across
//! snapshots that leave an endpoint's settings alone. A checker's verdict lives in the
//! endpoint's runtime state (`EndpointLoad::healthy`), which the schedulers read: an endpoint
//! failing its checks takes no new requests or connections while another passes; when every
//! endpoint of a port fails, all of them take traffic (fail open, as Envoy's panic mode), and
//! a warning and `portico_health_panic` say so.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::metrics::{EndpointLabels, Metrics};
use crate::snapshot::services::health::{CheckPort, HealthCheck};
use crate::snapshot::services::state::EndpointLoad;
use crate::snapshot::{Snapshot, SnapshotHandle};

/// A checked endpoint: its Service port, address, the address checked, settings.
type CheckKey = (String, SocketAddr, SocketAddr, Arc<HealthCheck>);

/// A running checker, and the runtime state it judges.
struct Running {
    task: AbortHandle,
    load: Arc<EndpointLoad>,
}

/// How often panic mode and the health gauges are looked at.
const EVALUATE: Duration = Duration::from_secs(1);

/// The most of a check's response read (its status line is all that counts).
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Runs the checkers until `stop` turns true.
pub async fn run(snapshot: SnapshotHandle, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut running: HashMap<CheckKey, Running> = HashMap::new();
    let mut panicking: HashSet<String> = HashSet::new();
    let mut generation = 0;
    let mut evaluate = tokio::time::interval(EVALUATE);
    loop {
        let current = snapshot.load_full();
        if current.generation != generation {
            generation = current.generation;
            reconcile(&current, &metrics, &mut running);
        }
        tokio::select! {
            _ = snapshot.wait_for(generation + 1) => {}
            _ = evaluate.tick() => report(&current, &metrics, &mut panicking),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, r) in running {
        r.task.abort();
    }
}

/// `namespace/name:port` of a Service port.
fn port_name(port: &crate::snapshot::services::ServicePort) -> String {
    format!("{}/{}:{}", port.namespace, port.service, port.port)
}

/// Starts the checkers the snapshot asks for and stops the others (their endpoints count as
/// healthy again: nothing judges them any more).
fn reconcile(
    snapshot: &Snapshot,
    metrics: &Arc<Metrics>,
    running: &mut HashMap<CheckKey, Running>,
) {
    let mut wanted: HashMap<CheckKey, Arc<EndpointLoad>> = HashMap::new();
    for (_, port) in snapshot.services.iter() {
        let Some(check) = &port.health else { continue };
        let name = port_name(port);
        for e in port.endpoints.iter() {
            let Some(target) = check_target(snapshot, port, e.addr, check) else {
                debug!(service = %name, endpoint = %e.addr, "no port of the health-check port's name on this endpoint: not checked");
                continue;
            };
            wanted.insert(
                (name.clone(), e.addr, target, Arc::clone(check)),
                Arc::clone(&e.load.0),
            );
        }
    }
    running.retain(|key, r| {
        let keep = wanted
            .get(key)
            .is_some_and(|load| Arc::ptr_eq(load, &r.load));
        if !keep {
            r.task.abort();
            r.load.set_healthy(true);
            let labels = EndpointLabels {
                service: key.0.clone(),
                endpoint: key.1.to_string(),
            };
            metrics.endpoint_health(&labels, None);
        }
        keep
    });
    for (key, load) in wanted {
        if running.contains_key(&key) {
            continue;
        }
        let (service, addr, target, check) = key.clone();
        let task = tokio::spawn(checker(
            service,
            addr,
            target,
            check,
            Arc::clone(&load),
            Arc::clone(metrics),
        ));
        running.insert(
            key,
            Running {
                task: task.abort_handle(),
                load,
            },
        );
    }
}

/// The address an endpoint is checked on: its own, another port number on its IP, or the
/// port of that IP behind the Service's port of the given name (`None` when that port has no
/// endpoint at this IP).
fn check_target(
    snapshot: &Snapshot,
    port: &crate::snapshot::services::ServicePort,
    addr: SocketAddr,
    check: &HealthCheck,
) -> Option<SocketAddr> {
    match &check.port {
        None => Some(addr),
        Some(CheckPort::Number(n)) => Some(SocketAddr::new(addr.ip(), *n)),
        Some(CheckPort::Name(wanted)) => snapshot
            .services
            .iter()
            .map(|(_, p)| p)
            .filter(|p| {
                p.namespace == port.namespace
                    && p.service == port.service
                    && p.name.as_deref() == Some(&**wanted)
            })
            .flat_map(|p| p.endpoints.iter())
            .find(|e| e.addr.ip() == addr.ip())
            .map(|e| e.addr),
    }
}

/// Sets the health gauges, and says when a port enters or leaves panic mode.
fn report(snapshot: &Snapshot, metrics: &Metrics, panicking: &mut HashSet<String>) {
    let mut seen = HashSet::new();
    for (_, port) in snapshot.services.iter() {
        if !port.judged() {
            continue;
        }
        let name = port_name(port);
        let ready = port.ready_endpoints();
        for e in ready {
            let labels = EndpointLabels {
                service: name.clone(),
                endpoint: e.addr.to_string(),
            };
            metrics.endpoint_health(&labels, Some(e.load.healthy()));
        }
        let panic = !ready.is_empty() && ready.iter().all(|e| !e.load.healthy());
        let labels = EndpointLabels {
            service: name.clone(),
            endpoint: String::new(),
        };
        metrics.health_panic(&labels, Some(panic));
        if panic && panicking.insert(name.clone()) {
            warn!(service = %name, endpoints = ready.len(), "every endpoint is unhealthy (health checks or max-fails): sending to all of them (panic mode)");
        } else if !panic && panicking.remove(&name) {
            info!(service = %name, "an endpoint is healthy again: panic mode over");
        }
        seen.insert(name);
    }
    panicking.retain(|name| seen.contains(name));
}

/// Checks one endpoint for as long as it runs: a first check after a random part of the
/// interval (1,000 endpoints do not fire together), then every interval ±10 %.
async fn checker(
    service: String,
    addr: SocketAddr,
    target: SocketAddr,
    check: Arc<HealthCheck>,
    load: Arc<EndpointLoad>,
    metrics: Arc<Metrics>,
) {
    let tls: Option<tokio_rustls::TlsConnector> = if check.tls {
        let settings = Arc::new(crate::snapshot::upstream_tls::UpstreamTls::plain(""));
        let alpn: &[&[u8]] = if check.http2 {
            &[b"h2"]
        } else {
            &[b"http/1.1"]
        };
        let config = settings.client_config(alpn);
        config
            .ok()
            .map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
    } else {
        None
    };
    let random = || crate::l4::scheduler::random_below(1_000_000) as f64 / 1_000_000.0;
    tokio::time::sleep(check.interval.mul_f64(random())).await;
    let (mut passed, mut failed) = (0u32, 0u32);
    loop {
        let outcome =
            tokio::time::timeout(check.timeout, probe(target, &check, tls.as_ref())).await;
        let verdict = match outcome {
            Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("status {status}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        };
        metrics.health_check(verdict.is_ok());
        match verdict {
            Ok(()) => {
                (passed, failed) = (passed.saturating_add(1), 0);
                if !load.passes_checks() && passed >= check.healthy_threshold {
                    load.set_healthy(true);
                    info!(%service, endpoint = %addr, "endpoint passes its health checks again");
                }
            }
            Err(reason) => {
                (passed, failed) = (0, failed.saturating_add(1));
                if load.passes_checks() && failed >= check.unhealthy_threshold {
                    load.set_healthy(false);
                    warn!(%service, endpoint = %addr, %reason, "endpoint fails its health checks: no new traffic while another passes");
                }
            }
        }
        tokio::time::sleep(check.interval.mul_f64(0.9 + 0.2 * random())).await;
    }
}

/// One check: `GET path` (HTTP/1.1, `Connection: close`, or HTTP/2), or a gRPC
/// `grpc.health.v1.Health/Check`; the status of the answer (a gRPC check answers 200 when the
/// service is SERVING, an error saying what it is otherwise).
async fn probe(
    target: SocketAddr,
    check: &HealthCheck,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> std::io::Result<u16> {
    let stream = TcpStream::connect(target).await?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {target}\r\nuser-agent: portico-health-check\r\nconnection: close\r\n\r\n",
        check.path
    );
    match tls {
        None if check.http2 => probe_h2(stream, target, check).await,
        None => exchange(stream, request.as_bytes()).await,
        Some(connector) => {
            let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
            let stream = connector.connect(name, stream).await?;
            if check.http2 {
                probe_h2(stream, target, check).await
            } else {
                exchange(stream, request.as_bytes()).await
            }
        }
    }
}

/// The most of a gRPC health answer read.
const MAX_GRPC_ANSWER: usize = 16 * 1024;

/// One check over HTTP/2 (prior knowledge in clear text, or after ALPN `h2`): a GET of the
/// path, or the gRPC health protocol.
async fn probe_h2<T>(stream: T, target: SocketAddr, check: &HealthCheck) -> std::io::Result<u16>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full, Limited};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    let driver = tokio::spawn(connection);
    let scheme = if check.tls { "https" } else { "http" };
    let request = match &check.grpc {
        None => http::Request::get(format!("{scheme}://{target}{}", check.path))
            .header(http::header::USER_AGENT, "portico-health-check")
            .body(Full::new(bytes::Bytes::new())),
        Some(service) => {
            http::Request::post(format!("{scheme}://{target}/grpc.health.v1.Health/Check"))
                .header(http::header::USER_AGENT, "portico-health-check")
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
                .body(Full::new(grpc_health_request(service).into()))
        }
    }
    .map_err(std::io::Error::other)?;
    let answered = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        if check.grpc.is_none() {
            return Ok(status);
        }
        if status != 200 {
            return Err(std::io::Error::other(format!(
                "gRPC health answer with HTTP status {status}"
            )));
        }
        let (head, body) = response.into_parts();
        let collected = Limited::new(body, MAX_GRPC_ANSWER)
            .collect()
            .await
            .map_err(|e| std::io::Error::other(format!("gRPC health answer: {e}")))?;
        let trailers = collected.trailers().cloned();
        let grpc_status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        match grpc_status.as_deref() {
            Some(b"0") => {}
            Some(code) => {
                return Err(std::io::Error::other(format!(
                    "gRPC health answer with grpc-status {}",
                    String::from_utf8_lossy(code)
                )));
            }
            None => {
                return Err(std::io::Error::other(
                    "gRPC health answer without grpc-status",
                ));
            }
        }
        match grpc_serving_status(&collected.to_bytes()) {
            Some(1) => Ok(200),
            Some(other) => Err(std::io::Error::other(format!(
                "gRPC health status {} ({other})",
                match other {
                    0 => "UNKNOWN",
                    2 => "NOT_SERVING",
                    3 => "SERVICE_UNKNOWN",
                    _ => "not SERVING",
                }
            ))),
            None => Err(std::io::Error::other(
                "gRPC health answer is not one HealthCheckResponse message",
            )),
        }
    }
    .await;
    driver.abort();
    answered
}

/// A gRPC `HealthCheckRequest { service }`, framed (uncompressed, 5-byte prefix).
fn grpc_health_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            message.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        message.push(n as u8);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

/// The `status` of a framed gRPC `HealthCheckResponse` (0 when absent, as protobuf's default);
/// `None` unless `body` is exactly one uncompressed message that parses.
fn grpc_serving_status(body: &[u8]) -> Option<u64> {
    let (&flag, rest) = body.split_first()?;
    let (len, message) = rest.split_first_chunk::<4>()?;
    if flag != 0 || u32::from_be_bytes(*len) as usize != message.len() {
        return None;
    }
    let mut status = 0;
    let mut at = message;
    while !at.is_empty() {
        let tag = varint(&mut at)?;
        match (tag >> 3, tag & 7) {
            (0, _) => return None,
            (1, 0) => status = varint(&mut at)?,
            (_, 0) => {
                varint(&mut at)?;
            }
            (_, 1) => at = at.get(8..)?,
            (_, 2) => {
                let n = usize::try_from(varint(&mut at)?).ok()?;
                at = at.get(n..)?;
            }
            (_, 5) => at = at.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// A protobuf varint (at most 10 bytes), taken off the front of `at`.
fn varint(at: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = at.split_first()?;
        *at = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Writes `request`, reads the response head, returns its status.
async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &[u8],
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return Ok(response.code.unwrap_or(0)),
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {}
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not an HTTP response",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    #[test]
    fn grpc_health_messages() {
        assert_eq!(grpc_health_request(""), [0, 0, 0, 0, 0]);
        assert_eq!(
            grpc_health_request("a.B"),
            [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let long = "x".repeat(200);
        let request = grpc_health_request(&long);
        assert_eq!(&request[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(request.len(), 5 + 3 + 200);
        assert_eq!(grpc_serving_status(&framed(&[0x08, 1])), Some(1));
        assert_eq!(grpc_serving_status(&framed(&[0x08, 2])), Some(2));
        assert_eq!(
            grpc_serving_status(&framed(&[])),
            Some(0),
            "default UNKNOWN"
        );
        // Unknown fields of every wire type are skipped.
        let message = [
            0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x22, 2, b'h', b'i', 0x2d, 1, 2, 3, 4,
            0x08, 1,
        ];
        assert_eq!(grpc_serving_status(&framed(&message)), Some(1));
    }

    #[test]
    fn hostile_grpc_health_answers() {
        assert_eq!(grpc_serving_status(&[]), None);
        assert_eq!(grpc_serving_status(&[0, 0, 0]), None);
        assert_eq!(
            grpc_serving_status(&[1, 0, 0, 0, 2, 0x08, 1]),
            None,
            "compressed"
        );
        assert_eq!(
            grpc_serving_status(&[0, 0, 0, 0, 9, 0x08, 1]),
            None,
            "short"
        );
        let mut two = framed(&[0x08, 1]);
        two.extend(framed(&[0x08, 2]));
        assert_eq!(grpc_serving_status(&two), None, "two messages");
        assert_eq!(
            grpc_serving_status(&framed(&[0x08])),
            None,
            "truncated varint"
        );
        assert_eq!(
            grpc_serving_status(&framed(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1
            ])),
            None,
            "11-byte varint"
        );
        assert_eq!(
            grpc_serving_status(&framed(&[0x22, 0xff, 0xff, 0xff, 0xff, 0x0f])),
            None,
            "length past the end"
        );
        assert_eq!(
            grpc_serving_status(&framed(&[0x0b, 1])),
            None,
            "group wire type"
        );
        assert_eq!(grpc_serving_status(&framed(&[0x00, 1])), None, "field 0");
    }

    proptest! {
        #[test]
        fn any_answer_is_read_without_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = grpc_serving_status(&body);
            let _ = grpc_serving_status(&framed(&body));
        }

        #[test]
        fn status_round_trips(status in 0u64..1_000_000, skip in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut message = vec![0x12];
            message.push(skip.len() as u8);
            message.extend_from_slice(&skip);
            message.push(0x08);
            let mut n = status;
            while n >= 0x80 { message.push((n as u8 & 0x7f) | 0x80); n >>= 7; }
            message.push(n as u8);
            prop_assert_eq!(grpc_serving_status(&framed(&message)), Some(status));
        }
    }
}
