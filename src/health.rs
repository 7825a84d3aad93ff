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
use tracing::{info, warn};

use crate::metrics::{EndpointLabels, Metrics};
use crate::snapshot::services::health::HealthCheck;
use crate::snapshot::services::state::EndpointLoad;
use crate::snapshot::{Snapshot, SnapshotHandle};

/// A checked endpoint: its Service port, address, settings.
type CheckKey = (String, SocketAddr, Arc<HealthCheck>);

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
            wanted.insert(
                (name.clone(), e.addr, Arc::clone(check)),
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
        let (service, addr, check) = key.clone();
        let task = tokio::spawn(checker(
            service,
            addr,
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

/// Sets the health gauges, and says when a port enters or leaves panic mode.
fn report(snapshot: &Snapshot, metrics: &Metrics, panicking: &mut HashSet<String>) {
    let mut seen = HashSet::new();
    for (_, port) in snapshot.services.iter() {
        if port.health.is_none() {
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
            warn!(service = %name, endpoints = ready.len(), "every endpoint fails its health checks: sending to all of them (panic mode)");
        } else if !panic && panicking.remove(&name) {
            info!(service = %name, "an endpoint passes its health checks again: panic mode over");
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
    check: Arc<HealthCheck>,
    load: Arc<EndpointLoad>,
    metrics: Arc<Metrics>,
) {
    let target = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    let tls: Option<tokio_rustls::TlsConnector> = if check.tls {
        let settings = Arc::new(crate::snapshot::upstream_tls::UpstreamTls::plain(""));
        let config = settings.client_config(&[b"http/1.1"]);
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
                if !load.healthy() && passed >= check.healthy_threshold {
                    load.set_healthy(true);
                    info!(%service, endpoint = %addr, "endpoint passes its health checks again");
                }
            }
            Err(reason) => {
                (passed, failed) = (0, failed.saturating_add(1));
                if load.healthy() && failed >= check.unhealthy_threshold {
                    load.set_healthy(false);
                    warn!(%service, endpoint = %addr, %reason, "endpoint fails its health checks: no new traffic while another passes");
                }
            }
        }
        tokio::time::sleep(check.interval.mul_f64(0.9 + 0.2 * random())).await;
    }
}

/// One check: `GET path` (HTTP/1.1, `Connection: close`), the status of the answer.
async fn probe(
    target: SocketAddr,
    check: &HealthCheck,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> std::io::Result<u16> {
    let stream = TcpStream::connect(target).await?;
    let _ = stream.set_nodelay(true);
    if check.http2 {
        return probe_h2(stream, target, check).await;
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {target}\r\nuser-agent: portico-health-check\r\nconnection: close\r\n\r\n",
        check.path
    );
    match tls {
        None => exchange(stream, request.as_bytes()).await,
        Some(connector) => {
            let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
            let stream = connector.connect(name, stream).await?;
            exchange(stream, request.as_bytes()).await
        }
    }
}

/// One check over HTTP/2 in clear text (prior knowledge).
async fn probe_h2(
    stream: TcpStream,
    target: SocketAddr,
    check: &HealthCheck,
) -> std::io::Result<u16> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{target}{}", check.path))
        .header(http::header::USER_AGENT, "portico-health-check")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(std::io::Error::other)?;
    let answered = sender.send_request(request).await;
    driver.abort();
    Ok(answered.map_err(std::io::Error::other)?.status().as_u16())
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
