//! The echo backend for demos and tests (`portico echo`): answers every request with JSON
//! describing it, serves a small blog index page, echoes WebSocket messages, and has knobs
//! (`?status=`, `?delay_ms=`, `?bytes=`, `?chunked=1`) to provoke what a proxy must handle.
//!
//! HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one port. Request bodies are counted as they
//! stream in and never buffered; `?bytes=N` bodies are streamed from a static chunk.
//!
//! With `--tls-cert` and `--tls-key` it speaks TLS instead (ALPN h2 and http/1.1), asks for a
//! client certificate without requiring one, and says what the handshake was in response
//! fields: `x-echo-tls-sni`, `-alpn`, `-version`, `-resumed` and `-client` (the client
//! certificate's subject, or `none`): the HTTPS backend of demos and tests.

mod body;
mod handler;
mod websocket;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use handler::Backend;

/// `portico echo`: run the echo backend.
#[derive(clap::Args, Debug, Clone)]
pub struct EchoArgs {
    /// Address to listen on (repeatable).
    #[arg(long, required = true)]
    pub listen: Vec<SocketAddr>,
    /// The name this backend reports (`service` in the JSON, `x-echo-service` header).
    #[arg(long, default_value = "echo")]
    pub name: String,
    /// Speak TLS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Binds every address of `args` and serves them until SIGINT or SIGTERM.
pub async fn run(args: EchoArgs) -> io::Result<()> {
    let mut signals = crate::run::ShutdownSignals::install();
    let mut listeners = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("echo: cannot listen on {addr}: {e}")))?;
        info!(%addr, name = %args.name, "echo listening");
        listeners.push(listener);
    }
    let name: Arc<str> = Arc::from(args.name);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("echo: cannot read {}: {e}", path.display()),
                    )
                })
            };
            Some(tls_config(&read(cert)?, &read(key)?)?)
        }
        _ => None,
    };
    // Dropping the sender (after a signal) tells every server to stop.
    let (stop, stopped) = watch::channel(());
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let mut stopped = stopped.clone();
            let shutdown = async move { while stopped.changed().await.is_ok() {} };
            match &tls {
                Some(config) => {
                    tokio::spawn(serve_tls(listener, name.clone(), config.clone(), shutdown))
                }
                None => tokio::spawn(serve(listener, name.clone(), shutdown)),
            }
        })
        .collect();
    signals.recv().await;
    info!("echo shutting down");
    drop(stop);
    for server in servers {
        server.await.map_err(io::Error::other)??;
    }
    Ok(())
}

/// Serves the echo backend on `listener` until `shutdown` resolves, then lets open
/// connections finish (for a few seconds).
pub async fn serve(
    listener: TcpListener,
    name: Arc<str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let backend = Arc::new(backend(name));
    let builder = auto::Builder::new(TokioExecutor::new());
    crate::serve::accept_loop(listener, "echo", shutdown, |stream, peer| {
        let backend = backend.clone();
        let service = service_fn(move |req| handler::handle(backend.clone(), peer, req));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        (conn.into_owned(), ())
    })
    .await;
    Ok(())
}

/// A TLS server configuration for the echo backend from a PEM chain and key: ALPN h2 and
/// http/1.1, a client certificate asked for (any is taken) but not required.
pub fn tls_config(cert: &[u8], key: &[u8]) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("echo: the certificate is not PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| invalid(format!("echo: the key is not PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = crate::proxy::tls::DeferredClientCerts::any(&provider);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("echo: the certificate or key is unusable: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the echo backend over TLS on `listener` until `shutdown` resolves (open
/// connections run on until their clients close them).
pub async fn serve_tls(
    listener: TcpListener,
    name: Arc<str>,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let backend = Arc::new(backend(name));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (backend, acceptor, builder) = (backend.clone(), acceptor.clone(), builder.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let fields = Arc::new(handshake_fields(stream.get_ref().1));
            let service = service_fn(move |req| {
                let (backend, fields) = (backend.clone(), fields.clone());
                async move {
                    let mut response = handler::handle(backend, peer, req).await?;
                    for (name, value) in fields.iter() {
                        response.headers_mut().insert(*name, value.clone());
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
    Ok(())
}

/// What a TLS handshake was, as response fields.
fn handshake_fields(session: &rustls::ServerConnection) -> Vec<(&'static str, HeaderValue)> {
    let text = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("?"));
    let client = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::snapshot::client_auth::CertNames::of(leaf))
        .map_or_else(|| "none".to_string(), |names| names.subject);
    vec![
        (
            "x-echo-tls-sni",
            text(session.server_name().unwrap_or("none")),
        ),
        (
            "x-echo-tls-alpn",
            text(&String::from_utf8_lossy(
                session.alpn_protocol().unwrap_or(b"none"),
            )),
        ),
        (
            "x-echo-tls-version",
            text(
                &session
                    .protocol_version()
                    .map_or("none".to_string(), |v| format!("{v:?}")),
            ),
        ),
        (
            "x-echo-tls-resumed",
            text(&(session.handshake_kind() == Some(rustls::HandshakeKind::Resumed)).to_string()),
        ),
        ("x-echo-tls-client", text(&client)),
    ]
}

fn backend(name: Arc<str>) -> Backend {
    let header = HeaderValue::from_bytes(name.as_bytes()).ok();
    if header.is_none() {
        warn!(%name, "echo name is not a valid header value; x-echo-service is left out");
    }
    Backend { name, header }
}

#[cfg(test)]
mod tests;
