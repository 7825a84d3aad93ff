//! The echo backend for demos and tests (`portico echo`): answers every request with JSON
//! describing it, serves a small blog index page, echoes WebSocket messages, and has knobs
//! (`?status=`, `?delay_ms=`, `?bytes=`, `?chunked=1`) to provoke what a proxy must handle.
//!
//! HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one port. Request bodies are counted as they
//! stream in and never buffered; `?bytes=N` bodies are streamed from a static chunk.

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
    // Dropping the sender (after a signal) tells every server to stop.
    let (stop, stopped) = watch::channel(());
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let mut stopped = stopped.clone();
            let shutdown = async move { while stopped.changed().await.is_ok() {} };
            tokio::spawn(serve(listener, name.clone(), shutdown))
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

fn backend(name: Arc<str>) -> Backend {
    let header = HeaderValue::from_bytes(name.as_bytes()).ok();
    if header.is_none() {
        warn!(%name, "echo name is not a valid header value; x-echo-service is left out");
    }
    Backend { name, header }
}

#[cfg(test)]
mod tests;
